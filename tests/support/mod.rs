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
/// until `signal`.
pub async fn start_registry(
    pki: &DevPki,
    metrics: &MetricsRegistry,
    population: usize,
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
    let task = tokio::spawn(server.serve(shlyuz_registry::routes(database), signal));
    TestRegistry {
        address,
        task,
        database: test_database,
    }
}
