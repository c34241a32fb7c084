//! The guide's example adapter (the vehicle registry of `shlyuz_registry::example`) behind a
//! real gateway: served with the registry's identity over mutual TLS, routed by a directory that
//! is the shipped one plus the adapter's route and rule — what docs/integrating-a-registry.md
//! has an adapter team write — and called by a participant with signed envelopes. It must pass
//! the same conformance suite as it does when called directly.

mod support;

use shlyuz::target::Target;
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::gateway_client::with_envelope;
use shlyuz_kit::server::{GrpcServer, ServerSettings, Transport};
use shlyuz_registry::conformance::{self, Caller};
use shlyuz_registry::example;
use support::TestSystem;

/// The purpose the example's rule allows.
const PURPOSE: &str = "HOUSING_ALLOCATION";
/// The participant the example's rule names.
const CALLER: &str = "housing";

/// Step 4 and 5 of the guide: the route and the rule, added to the shipped directory.
const VEHICLE_DIRECTORY: &str = r#"
[[services]]
name = "shlyuz.example.v1.VehicleRegistryService"
upstream = "target:vehicles"
upstream_server_name = "registry"
timeout_ms = 5000
personal_data = true
methods = ["ListVehicles", "BatchListVehicles"]
idempotent_methods = ["ListVehicles", "BatchListVehicles"]
breaker = { failure_threshold = 5, open_ms = 5000 }
retry = { max_attempts = 3, initial_backoff_ms = 50 }

[[rules]]
participant = "housing"
service = "shlyuz.example.v1.VehicleRegistryService"
methods = ["*"]
purposes = ["HOUSING_ALLOCATION"]
"#;

/// The example registry on `database` (the upstream file, when given, in front of its tables),
/// served as the registry participant, and a gateway routing to it.
async fn start(
    database: &shlyuz_kit::db::Database,
    upstream_file: Option<&std::path::Path>,
) -> (TestSystem, shlyuz_kit::shutdown::ShutdownTrigger) {
    let source = example::source(database.clone(), upstream_file).expect("the example's source");
    let server = GrpcServer::bind(
        ServerSettings::loopback(
            "vehicles",
            Transport::MutualTls(
                support::pki()
                    .tls_files("registry")
                    .expect("registry files"),
            ),
        ),
        &shlyuz_kit::telemetry::MetricsRegistry::default(),
    )
    .await
    .expect("bind the example registry");
    let address = server.local_addr().expect("address");
    let (stop, signal) = shlyuz_kit::shutdown::shutdown_channel();
    tokio::spawn(server.serve(example::VehicleRegistry::new(source).routes(), signal));
    let system = support::spawn_system_with(&[Target::Gateway], |config| {
        let directory = config.data_dir.join("directory-with-vehicles.toml");
        let text = format!(
            "{}\n{VEHICLE_DIRECTORY}",
            shlyuz_gateway::directory::DEFAULT_DIRECTORY
        );
        std::fs::write(&directory, text).expect("write the directory");
        config.gateway.directory_file = directory;
        config
            .gateway
            .targets
            .insert("vehicles".to_string(), address.to_string());
    })
    .await;
    (system, stop)
}

async fn conforms_through_the_gateway(test_database: shlyuz_kit::db::testing::TestDatabase) {
    let database = test_database.database().clone();
    let (_, data) = example::prepare(&database).await.expect("example data");
    let (system, _stop) = start(&database, None).await;
    let report = conformance::run(&through_gateway(&system), &example::methods(), &data).await;
    report.assert_passed();
    system.stop().await;
    test_database.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_adapter_conforms_through_the_gateway_on_sqlite() {
    conforms_through_the_gateway(shlyuz_kit::db::testing::TestDatabase::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_adapter_conforms_through_the_gateway_on_postgres() {
    let Some(database) = shlyuz_kit::db::testing::TestDatabase::postgres().await else {
        return;
    };
    conforms_through_the_gateway(database).await;
}

/// Calls through the gateway as [`CALLER`], an envelope naming the subjects for [`PURPOSE`].
fn through_gateway(system: &TestSystem) -> Caller {
    let client = system.client(CALLER);
    Caller::new(move |path, subjects, body| {
        let channel = client.signed_channel();
        Box::pin(async move {
            let envelope = EnvelopeBuilder {
                purpose: PURPOSE.to_string(),
                subject_iin: subjects.join(","),
                ..EnvelopeBuilder::default()
            };
            conformance::unary(channel, path, with_envelope(envelope, body)).await
        })
    })
}

/// The error table through the gateway: the example behind the gateway, its records from a mock
/// of the vehicle registry's API, each failure of that API reaching the caller as the registry
/// said it — the same status and reason as calling the registry directly (tests::conformance in
/// the registry crate), not retried into more calls and not closing the route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_of_an_external_registry_reaches_the_caller_through_the_gateway() {
    let test_database = shlyuz_kit::db::testing::TestDatabase::sqlite().await;
    let database = test_database.database().clone();
    let directory = tempfile::tempdir().expect("dir");
    let (mock, file, data) = example::prepare_upstream(&database, directory.path())
        .await
        .expect("example data");
    let (system, _stop) = start(&database, Some(&file)).await;
    let caller = through_gateway(&system);
    let methods = example::methods();
    conformance::run(&caller, &methods, &data)
        .await
        .assert_passed();

    let before = mock.requests("vehicles");
    let fail =
        |failure: Option<conformance::UpstreamFailure>| mock.set_fault_for_all(failure.into());
    conformance::run_faults(&caller, &methods, &data, &["vehicles"], &fail)
        .await
        .assert_passed();
    // Each failing call is the registry's own attempts and no more — the gateway retried none of
    // its reasoned answers: per method, slow, refused (read, then the connection dropped) and 5xx
    // 2 each (the registry's two attempts), 4xx 1 (not retried), partial, malformed and foreign 1
    // each, and 7 healthy calls after them.
    let made = mock.requests("vehicles") - before;
    assert_eq!(
        made,
        methods.len() * 17,
        "calls that reached the external registry"
    );
    system.stop().await;
    test_database.cleanup().await;
}
