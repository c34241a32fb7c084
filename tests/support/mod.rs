//! What the end-to-end tests of the root package share: the default directory's participants and a
//! registry holding the rules fixture, served over mutual TLS like the `registry` target.

#![allow(dead_code)]

use std::net::SocketAddr;

use shlyuz_kit::db::testing::TestDatabase;
use shlyuz_kit::pki::{DevPki, SigningKey};
use shlyuz_kit::server::{GrpcServer, ServerSettings, Transport};
use shlyuz_kit::shutdown::ShutdownSignal;
use shlyuz_kit::telemetry::MetricsRegistry;
use shlyuz_registry::embedded::EmbeddedRegistry;
use shlyuz_registry::fixtures;

/// Every participant of the default directory, which names their keys under `pki/`.
pub const PARTICIPANTS: [&str; 8] = [
    "gateway",
    "registry",
    "notify",
    "intake",
    "housing",
    "jauynger-portal",
    "sdu",
    "ops",
];

/// The message-signing key of `participant`.
pub fn signing_key(pki: &DevPki, participant: &str) -> SigningKey {
    let files = pki.participant(participant).expect("participant");
    SigningKey::from_pem_file(&files.signing_key).expect("signing key")
}

/// A running registry: its address, its server task and its database (clean it up at the end).
pub struct TestRegistry {
    pub address: SocketAddr,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub database: TestDatabase,
}

/// Starts a registry with `population` synthetic persons (seed 5) and the rules fixture, serving
/// until `signal`; without a gateway, so its consent requests are refused `OTP_UNAVAILABLE`.
pub async fn start_registry(
    pki: &DevPki,
    metrics: &MetricsRegistry,
    population: usize,
    signal: ShutdownSignal,
) -> TestRegistry {
    start_registry_calling(pki, metrics, population, None, signal).await
}

/// [`start_registry`] calling notify (consent codes) through `gateway`.
pub async fn start_registry_calling(
    pki: &DevPki,
    metrics: &MetricsRegistry,
    population: usize,
    gateway: Option<shlyuz_kit::gateway_client::GatewayClient>,
    signal: ShutdownSignal,
) -> TestRegistry {
    let test_database = TestDatabase::sqlite().await;
    let database = test_database.database().clone();
    database
        .migrate(&shlyuz_registry::MIGRATIONS)
        .await
        .expect("registry migrations");
    let registry = EmbeddedRegistry::new(database.clone());
    if population > 0 {
        shlyuz_registry::population::seed_population(&registry, population, 5)
            .await
            .expect("seed");
    }
    let fixture = fixtures::parse(fixtures::RULES_FIXTURE).expect("fixture");
    fixtures::load(&registry, &fixture)
        .await
        .expect("load fixture");
    let server = GrpcServer::bind(
        ServerSettings::loopback(
            "registry",
            Transport::MutualTls(pki.tls_files("registry").expect("participant files")),
        ),
        metrics,
    )
    .await
    .expect("bind registry");
    let address = server.local_addr().expect("registry address");
    let source = std::sync::Arc::new(EmbeddedRegistry::new(database.clone()));
    let routes = shlyuz_registry::routes_with_source(database, source, gateway);
    let task = tokio::spawn(server.serve(routes, signal));
    TestRegistry {
        address,
        task,
        database: test_database,
    }
}

/// The gateway's listener, bound before the gateway starts so services can be given its address.
pub struct BoundGateway {
    server: GrpcServer,
    /// Where the gateway listens.
    pub address: SocketAddr,
}

/// A running gateway with the shipped default directory: its address, the handle to shut it down
/// (which flushes the message log), its server task and its database (clean it up at the end).
pub struct TestGateway {
    pub address: SocketAddr,
    pub gateway: shlyuz_gateway::Gateway,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub database: TestDatabase,
}

/// Binds the gateway's mutual-TLS listener on an ephemeral loopback port.
pub async fn bind_gateway(pki: &DevPki, metrics: &MetricsRegistry) -> BoundGateway {
    let server = GrpcServer::bind(
        ServerSettings::loopback(
            "gateway",
            Transport::MutualTls(pki.tls_files("gateway").expect("participant files")),
        ),
        metrics,
    )
    .await
    .expect("bind gateway");
    let address = server.local_addr().expect("gateway address");
    BoundGateway { server, address }
}

impl BoundGateway {
    /// Starts the gateway with the default directory (written into `directory_dir`, next to the
    /// `pki/` it names) routing `targets` by name; every other target goes to a closed port.
    pub async fn start(
        self,
        pki: &DevPki,
        metrics: &MetricsRegistry,
        directory_dir: &std::path::Path,
        targets: &[(&str, String)],
        signal: ShutdownSignal,
    ) -> TestGateway {
        let directory_file = directory_dir.join("gateway-directory.toml");
        std::fs::write(
            &directory_file,
            shlyuz_gateway::directory::DEFAULT_DIRECTORY,
        )
        .expect("write directory");
        let database = TestDatabase::sqlite().await;
        database
            .database()
            .migrate(&shlyuz_gateway::MIGRATIONS)
            .await
            .expect("gateway migrations");
        let gateway = shlyuz_gateway::Gateway::start(shlyuz_gateway::GatewayParts {
            database: database.database().clone(),
            directory_file,
            targets: shlyuz_gateway::directory::TargetResolver::partial(targets, "127.0.0.1:9"),
            signing_key: std::sync::Arc::new(signing_key(pki, "gateway")),
            consent: std::sync::Arc::new(shlyuz_gateway::consent::InMemoryConsents::default()),
            upstream_tls: Some(pki.tls_files("gateway").expect("participant files")),
            metrics: metrics.clone(),
            clock: shlyuz_kit::clock::system_clock(),
            settings: shlyuz_gateway::GatewaySettings::default(),
            shutdown: signal.clone(),
        })
        .await
        .expect("start gateway");
        let task = tokio::spawn(self.server.serve(gateway.routes(), signal));
        TestGateway {
            address: self.address,
            gateway,
            task,
            database,
        }
    }
}

/// A channel to the gateway at `address` with `participant`'s client certificate.
pub async fn gateway_channel(
    pki: &DevPki,
    address: SocketAddr,
    participant: &str,
) -> tonic::transport::Channel {
    shlyuz_kit::client::connect(&shlyuz_kit::client::ClientSettings {
        address: address.to_string(),
        tls: Some(pki.tls_files(participant).expect("participant files")),
        server_name: "gateway".to_string(),
        connect_timeout: std::time::Duration::from_secs(5),
    })
    .await
    .expect("connect to the gateway")
}
