//! The conformance suite on the registry services that ship, over the embedded tables on SQLite
//! and PostgreSQL, called over a real gRPC connection.

use shlyuz_kit::db::Database;

use crate::conformance::{self, Caller, LocalServer, SuiteData};
use crate::embedded::EmbeddedRegistry;
use crate::example;
use crate::fixtures;
use crate::population::generate;

/// Three records of every paged kind for one person, so every `List…` is walked page by page.
const PAGING_FIXTURE: &str = include_str!("conformance.toml");

shlyuz_kit::storage_test!(
    every_shipped_registry_method_conforms_on_the_embedded_tables,
    |database: Database| async move {
        database
            .migrate(&crate::MIGRATIONS)
            .await
            .expect("migrations");
        let registry = EmbeddedRegistry::new(database.clone());
        let population = generate(400, 11);
        registry
            .insert_population(&population)
            .await
            .expect("population");
        let mut tables = serde_json::to_value(&population).expect("json");
        for fixture in [fixtures::RULES_FIXTURE, PAGING_FIXTURE] {
            let fixture = fixtures::parse(fixture).expect("fixture");
            fixtures::load(&registry, &fixture).await.expect("fixture");
            let fixture_tables = serde_json::to_value(&fixture).expect("json");
            for (table, rows) in tables.as_object_mut().expect("tables") {
                if let (Some(all), Some(more)) =
                    (rows.as_array_mut(), fixture_tables[table].as_array())
                {
                    all.extend(more.iter().cloned());
                }
            }
        }
        let methods = conformance::registry_methods();
        let kinds: Vec<_> = methods.iter().map(conformance::Method::kind).collect();
        let unknown = conformance::unknown_iin(&tables);
        let data = SuiteData::pick(tables.as_object().expect("tables"), &kinds, &unknown)
            .expect("two persons with records of every kind");

        let server = LocalServer::start(crate::routes(database))
            .await
            .expect("serve");
        let report =
            conformance::run(&Caller::direct(server.channel.clone()), &methods, &data).await;
        report.assert_passed();
    }
);

shlyuz_kit::storage_test!(
    the_example_adapter_conforms_on_the_embedded_tables,
    |database: Database| async move {
        let (_, data) = example::prepare(&database).await.expect("example data");
        let source = example::source(database, None).expect("source");
        let server = LocalServer::start(example::VehicleRegistry::new(source).routes())
            .await
            .expect("serve");
        let report = conformance::run(
            &Caller::direct(server.channel.clone()),
            &example::methods(),
            &data,
        )
        .await;
        report.assert_passed();
    }
);

/// Services of the registry package that are not record look-ups (the suite does not apply).
const NOT_LOOK_UPS: [&str; 2] = ["ConsentService", "CertificateAuthorityService"];

#[test]
fn every_look_up_method_of_the_registry_protos_is_in_the_suite() {
    use prost::Message as _;
    let descriptors =
        prost_types::FileDescriptorSet::decode(shlyuz_proto::FILE_DESCRIPTOR_SET).expect("set");
    let mut in_protos = std::collections::BTreeSet::new();
    for file in &descriptors.file {
        if file.package() != "shlyuz.registry.v1" {
            continue;
        }
        for service in &file.service {
            if NOT_LOOK_UPS.contains(&service.name()) {
                continue;
            }
            for method in &service.method {
                in_protos.insert(format!(
                    "/shlyuz.registry.v1.{}/{}",
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    let in_suite: std::collections::BTreeSet<String> = conformance::registry_methods()
        .iter()
        .map(|method| method.path().to_string())
        .collect();
    assert!(
        !in_protos.is_empty(),
        "no registry service in the descriptor set"
    );
    assert_eq!(
        in_protos, in_suite,
        "every look-up method is described in conformance::registry_methods() (the guide, step 4)"
    );
}

shlyuz_kit::storage_test!(
    the_example_adapter_conforms_on_a_mock_upstream_and_maps_each_failure,
    |database: Database| async move {
        let directory = tempfile::tempdir().expect("dir");
        let (mock, file, data) = example::prepare_upstream(&database, directory.path())
            .await
            .expect("example data");
        let source = example::source(database, Some(&file)).expect("source");
        let server = LocalServer::start(example::VehicleRegistry::new(source).routes())
            .await
            .expect("serve");
        let caller = Caller::direct(server.channel.clone());
        let methods = example::methods();
        conformance::run(&caller, &methods, &data)
            .await
            .assert_passed();
        assert!(
            mock.requests("vehicles") > 0,
            "the suite was answered by the mock"
        );
        let upstream_kinds = [example::VEHICLES.spec().name];
        let fail =
            |failure: Option<conformance::UpstreamFailure>| mock.set_fault_for_all(failure.into());
        conformance::run_faults(&caller, &methods, &data, &upstream_kinds, &fail)
            .await
            .assert_passed();
    }
);
