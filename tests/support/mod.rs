//! What the end-to-end tests of the root package share: [`spawn_system`], which starts targets
//! exactly as `shlyuz up` does (the same `System`, the same crates' `start`, the shipped default
//! directory, mutual TLS with one development PKI per test binary, SQLite files in a temporary
//! data directory), and the clients a participant uses to call through the gateway.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use shlyuz::config::ShlyuzConfig;
use shlyuz::system::System;
use shlyuz::target::Target;
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::gateway_client::{GatewayClient, GatewayClientSettings};
use shlyuz_kit::pki::{DevPki, SigningKey};

/// The development PKI of this test binary: generated once, shared by every test in it.
pub fn pki() -> &'static DevPki {
    static PKI: OnceLock<(tempfile::TempDir, DevPki)> = OnceLock::new();
    let (_dir, pki) = PKI.get_or_init(|| {
        shlyuz_kit::install_crypto_provider();
        let dir = tempfile::tempdir().expect("pki dir");
        let pki = DevPki::ensure(&dir.path().join("pki"), &PARTICIPANTS).expect("pki");
        (dir, pki)
    });
    pki
}

/// Targets serving in this test, started as `shlyuz up` starts them, over a temporary data
/// directory that holds their SQLite files, the default directory and notify's SMS log.
pub struct TestSystem {
    pub system: System,
    pub data_dir: tempfile::TempDir,
}

/// Starts `targets` with the test configuration (every listener on an ephemeral loopback port,
/// the rules fixture in the registry, notify's worker polling every 20 ms).
pub async fn spawn_system(targets: &[Target]) -> TestSystem {
    spawn_system_with(targets, |_| {}).await
}

/// [`spawn_system`] with `configure` applied to the test configuration first.
pub async fn spawn_system_with(
    targets: &[Target],
    configure: impl FnOnce(&mut ShlyuzConfig),
) -> TestSystem {
    spawn_system_with_clock(targets, None, configure).await
}

/// [`spawn_system_with`] handing `test_clock` to the targets that follow it, as
/// `shlyuz up --test-clock` does (they also serve its TestClockService).
pub async fn spawn_system_with_clock(
    targets: &[Target],
    test_clock: Option<&shlyuz_kit::clock::AdjustableClock>,
    configure: impl FnOnce(&mut ShlyuzConfig),
) -> TestSystem {
    spawn(targets, Vec::new(), test_clock, configure).await
}

/// [`spawn_system_with`], the targets named in `listeners` serving on the listener given: a
/// socket the test bound before (so no other program could take its port), e.g. one the gateway
/// already routes to while the target was down.
pub async fn spawn_system_on(
    targets: &[Target],
    listeners: Vec<(Target, tokio::net::TcpListener)>,
    configure: impl FnOnce(&mut ShlyuzConfig),
) -> TestSystem {
    spawn(targets, listeners, None, configure).await
}

async fn spawn(
    targets: &[Target],
    listeners: Vec<(Target, tokio::net::TcpListener)>,
    test_clock: Option<&shlyuz_kit::clock::AdjustableClock>,
    configure: impl FnOnce(&mut ShlyuzConfig),
) -> TestSystem {
    let pki = pki();
    let data_dir = tempfile::tempdir().expect("data dir");
    // The default directory names the participants' keys under `pki/` next to it.
    std::os::unix::fs::symlink(
        pki.ca_cert_path().parent().expect("the pki directory"),
        data_dir.path().join("pki"),
    )
    .expect("link the pki");
    let mut config = ShlyuzConfig {
        data_dir: data_dir.path().to_path_buf(),
        ..ShlyuzConfig::default()
    };
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().expect("an address");
    config.gateway.listen = loopback;
    config.registry.listen = loopback;
    config.notify.listen = loopback;
    config.intake.listen = loopback;
    config.housing.listen = loopback;
    config.registry.seed_if_empty = Some(shlyuz_registry::config::SeedConfig {
        population: 0,
        seed: 5,
        rules_fixture: true,
    });
    config.notify.sms.delivery.poll_interval_ms = 20;
    // Targets this test does not start are routed to a port where nothing listens.
    for target in Target::ALL {
        config
            .gateway
            .targets
            .insert(target.name().to_string(), "127.0.0.1:9".to_string());
    }
    configure(&mut config);
    let system = System::start_on(
        config,
        targets,
        listeners,
        pki,
        &shlyuz_kit::telemetry::MetricsRegistry::default(),
        test_clock,
    )
    .await
    .expect("start the targets");
    TestSystem { system, data_dir }
}

impl TestSystem {
    /// The gateway's address.
    pub fn gateway_address(&self) -> std::net::SocketAddr {
        self.system
            .address(Target::Gateway)
            .expect("the gateway runs")
    }

    /// A channel to the gateway with `participant`'s client certificate.
    pub async fn channel(&self, participant: &str) -> tonic::transport::Channel {
        shlyuz_kit::client::connect(&shlyuz_kit::client::ClientSettings {
            address: self.gateway_address().to_string(),
            tls: Some(pki().tls_files(participant).expect("participant files")),
            server_name: "gateway".to_string(),
            connect_timeout: Duration::from_secs(5),
        })
        .await
        .expect("connect to the gateway")
    }

    /// A gateway client calling and signing as `participant`.
    pub fn client(&self, participant: &str) -> GatewayClient {
        GatewayClient::connect_lazy(
            &GatewayClientSettings {
                address: self.gateway_address().to_string(),
                server_name: "gateway".to_string(),
                tls: Some(pki().tls_files(participant).expect("participant files")),
                connect_timeout: Duration::from_secs(5),
            },
            participant,
            Arc::new(signing_key(pki(), participant)),
        )
        .expect("gateway client")
    }

    /// `message` for `path`, signed by `participant`, about `subject`, for `purpose`.
    pub fn signed<M: prost::Message>(
        &self,
        participant: &str,
        path: &str,
        purpose: &str,
        subject: &str,
        message: M,
    ) -> tonic::Request<M> {
        let envelope = EnvelopeBuilder {
            purpose: purpose.to_string(),
            subject_iin: subject.to_string(),
            ..EnvelopeBuilder::default()
        };
        envelope.signed_request(&signing_key(pki(), participant), path, message)
    }

    /// The file notify's log provider appends every SMS it sends to.
    pub fn sms_log(&self) -> PathBuf {
        self.system
            .config
            .notify
            .sms
            .log_file_path(self.data_dir.path())
            .expect("the log provider writes a file")
    }

    /// Every SMS sent so far, one JSON object each (`to`, `text`, `notification_id`, …).
    pub fn sms(&self) -> Vec<serde_json::Value> {
        sms_lines(&self.sms_log())
    }

    /// Polls until notify has sent at least `count` SMS; all of them.
    pub async fn wait_for_sms(&self, count: usize) -> Vec<serde_json::Value> {
        for _ in 0..500 {
            let lines = self.sms();
            if lines.len() >= count {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("expected {count} SMS in {}", self.sms_log().display());
    }

    /// Stops every target (the gateway flushes its message log) and removes the data.
    pub async fn stop(self) {
        self.system
            .stop()
            .await
            .expect("every target stops cleanly");
    }
}

/// The SMS lines of a log provider's file.
pub fn sms_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("sms log line"))
        .collect()
}

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

/// The gateway and the registry, the registry's records of every kind `mock` serves coming from
/// it (`registry.upstream_file` is the mock's upstream file, written into the data directory) and
/// the others from the embedded tables with the rules fixture — as a deployment in front of an
/// external registry runs.
pub async fn spawn_registry_on_upstream(
    mock: &shlyuz_registry::testing::MockUpstream,
) -> TestSystem {
    spawn_system_with(&[Target::Gateway, Target::Registry], |config| {
        config.registry.upstream_file = mock.write_settings(&config.data_dir);
    })
    .await
}

/// `GetPerson(iin)` through the gateway as `participant`, for `purpose`, about `subject`.
pub async fn get_person(
    system: &TestSystem,
    participant: &str,
    purpose: &str,
    subject: &str,
    iin: &str,
) -> Result<shlyuz_proto::registry::v1::Person, tonic::Status> {
    use shlyuz_proto::registry::v1 as pb;
    let mut client = pb::person_registry_service_client::PersonRegistryServiceClient::new(
        system.channel(participant).await,
    );
    let request = system.signed(
        participant,
        "/shlyuz.registry.v1.PersonRegistryService/GetPerson",
        purpose,
        subject,
        pb::GetPersonRequest {
            iin: iin.to_string(),
        },
    );
    client
        .get_person(request)
        .await
        .map(|response| response.into_inner().person.unwrap_or_default())
}
