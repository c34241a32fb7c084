//! `shlyuz up`: every target in one process, with a development PKI, SQLite files under the
//! data directory, and `endpoints.json` telling clients where everything is.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shlyuz_kit::client::{ClientSettings, connect};
use shlyuz_kit::clock::AdjustableClock;
use shlyuz_kit::pki::{DevPki, ParticipantFiles};
use shlyuz_kit::server::{READINESS_SERVICE, TlsFiles};
use shlyuz_kit::telemetry::{AdminServer, MetricsRegistry};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::ShlyuzConfig;
use crate::system::{System, participant_tls};
use crate::target::Target;

/// Participants outside Shlyuz that the development PKI also issues certificates for.
pub const EXTERNAL_PARTICIPANTS: [&str; 3] = ["jauynger-portal", "sdu", "ops"];

/// The name of the file `up` writes once every target is ready.
pub const ENDPOINTS_FILE: &str = "endpoints.json";

/// Where everything is, for clients, tests and `shlyuz demo`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoints {
    /// `host:port` of the gateway, the one address external participants call.
    pub gateway: String,
    /// `host:port` of the admin HTTP server (`/metrics`), when enabled.
    pub admin: Option<String>,
    /// PEM file of the CA that signs every participant certificate.
    pub ca_cert: PathBuf,
    /// Each target's own address (services are reached through the gateway; these are for ops).
    pub targets: BTreeMap<String, String>,
    /// Certificate, key and signing-key files of every participant.
    pub participants: BTreeMap<String, ParticipantFiles>,
    /// `host:port` serving shlyuz.testing.v1.TestClockService (housing's own address), only with
    /// `up --test-clock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_clock: Option<String>,
    /// The file the log SMS provider appends every sent SMS to (one JSON object per line), when
    /// notify uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_log: Option<PathBuf>,
}

impl Endpoints {
    /// Reads `endpoints.json` from a data directory.
    pub fn read(data_dir: &Path) -> anyhow::Result<Self> {
        Self::read_file(&data_dir.join(ENDPOINTS_FILE))
    }

    /// Reads an `endpoints.json` file.
    pub fn read_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {} (is `shlyuz up` running with that data directory?)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    /// The TLS files of `participant`, for a client.
    pub fn tls_files(&self, participant: &str) -> anyhow::Result<TlsFiles> {
        let files = self
            .participants
            .get(participant)
            .with_context(|| format!("no participant {participant:?} in endpoints.json"))?;
        Ok(TlsFiles {
            ca_cert: self.ca_cert.clone(),
            cert: files.tls_cert.clone(),
            key: files.tls_key.clone(),
        })
    }
}

/// Runs every target until SIGTERM/SIGINT, then drains them all. With `test_clock`, housing's
/// clock can be moved forward by the `ops` participant (see [`Endpoints::test_clock`]).
pub async fn run_up(config: ShlyuzConfig, test_clock: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let data_dir = config.data_dir.canonicalize().with_context(|| {
        format!(
            "cannot resolve data directory {}",
            config.data_dir.display()
        )
    })?;
    let mut config = ShlyuzConfig {
        data_dir: data_dir.clone(),
        ..config
    };
    // A stale file would point clients at ports that are no longer ours.
    let endpoints_path = data_dir.join(ENDPOINTS_FILE);
    if endpoints_path.exists() {
        std::fs::remove_file(&endpoints_path)
            .with_context(|| format!("cannot remove stale {}", endpoints_path.display()))?;
    }

    let mut participant_ids: Vec<&str> = Target::ALL.iter().map(|target| target.name()).collect();
    participant_ids.extend(EXTERNAL_PARTICIPANTS);
    let pki = DevPki::ensure(&data_dir.join("pki"), &participant_ids).context("development PKI")?;

    let metrics = MetricsRegistry::default();
    // The synthetic population plus the hand-picked people of the rules fixture, whom the demo,
    // the examples and the README use.
    config
        .registry
        .seed_if_empty
        .get_or_insert_with(shlyuz_registry::config::SeedConfig::up);
    let test_clock = test_clock.then(AdjustableClock::new);
    if test_clock.is_some() {
        tracing::warn!("TEST CLOCK enabled: ops may move housing's clock forward");
    }
    let admin = if config.telemetry.admin_listen.is_empty() {
        None
    } else {
        Some(AdminServer::bind(&config.telemetry.admin_listen, metrics.clone()).await?)
    };
    let admin_address = match &admin {
        Some(admin) => Some(admin.local_addr()?.to_string()),
        None => None,
    };
    let mut system =
        System::start(config, &Target::ALL, &pki, &metrics, test_clock.as_ref()).await?;
    system
        .trigger()
        .trigger_on_os_signals()
        .context("cannot install signal handlers")?;
    let mut admin_task = admin.map(|admin| tokio::spawn(admin.serve(system.shutdown())));
    let addresses = system.addresses.clone();
    let config = system.config.clone();

    let outcome = tokio::select! {
        ready = wait_until_ready(&pki, &addresses) => ready,
        Some(finished) = system.next_stopped() => Err(anyhow::anyhow!(
            "a target stopped during start-up: {}",
            match finished {
                Ok(()) => "stopped early".to_string(),
                Err(error) => format!("{error:#}"),
            }
        )),
    };
    if let Err(error) = outcome {
        let _ = system.stop().await;
        if let Some(task) = admin_task.take() {
            let _ = task.await;
        }
        return Err(error);
    }

    let endpoints = Endpoints {
        gateway: addresses
            .get(Target::Gateway.name())
            .map(|address| address.to_string())
            .unwrap_or_default(),
        admin: admin_address,
        ca_cert: pki.ca_cert_path().to_path_buf(),
        targets: addresses
            .iter()
            .map(|(name, address)| (name.clone(), address.to_string()))
            .collect(),
        participants: pki
            .participants()
            .iter()
            .map(|files| (files.id.clone(), files.clone()))
            .collect(),
        test_clock: test_clock
            .as_ref()
            .and_then(|_| addresses.get(Target::Housing.name()))
            .map(|address| address.to_string()),
        sms_log: config.notify.sms.log_file_path(&data_dir),
    };
    write_atomically(&endpoints_path, &serde_json::to_vec_pretty(&endpoints)?)?;
    print_welcome(&endpoints, &endpoints_path);
    tracing::info!(endpoints = %endpoints_path.display(), "shlyuz is up");

    let mut first_error = None;
    while let Some(result) = system.next_stopped().await {
        if let Err(error) = result {
            // One target down means the system is not whole: stop the others cleanly.
            system.trigger().trigger();
            first_error.get_or_insert(error);
        }
    }
    if let Some(task) = admin_task {
        match task.await {
            Ok(Err(error)) => tracing::error!(error = format!("{error:#}"), "admin server stopped"),
            Err(join_error) => tracing::error!(error = %join_error, "admin server panicked"),
            Ok(Ok(())) => {}
        }
    }
    let _ = std::fs::remove_file(&endpoints_path);
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Polls every target's readiness over mTLS, as the `ops` participant, until all are SERVING.
async fn wait_until_ready(
    pki: &DevPki,
    addresses: &BTreeMap<String, SocketAddr>,
) -> anyhow::Result<()> {
    let tls = participant_tls(pki, "ops")?;
    for (name, address) in addresses {
        let settings = ClientSettings {
            address: address.to_string(),
            tls: Some(tls.clone()),
            server_name: "localhost".to_string(),
            connect_timeout: Duration::from_secs(2),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let probe = async {
                let channel = connect(&settings).await?;
                let response = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: READINESS_SERVICE.to_string(),
                    })
                    .await?;
                anyhow::Ok(response.into_inner().status == ServingStatus::Serving as i32)
            };
            match probe.await {
                Ok(true) => break,
                Ok(false) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(false) => anyhow::bail!("{name} at {address} is not ready after 30 s"),
                Err(error) => {
                    return Err(error.context(format!("{name} at {address} is not reachable")));
                }
            }
        }
    }
    Ok(())
}

/// Writes `contents` to `path` through a temporary file and a rename, so a reader never sees half.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, contents)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))
}

fn print_welcome(endpoints: &Endpoints, endpoints_path: &Path) {
    let ops = endpoints.participants.get("ops");
    println!("Shlyuz is up. Endpoints: {}", endpoints_path.display());
    for (name, address) in &endpoints.targets {
        println!("  {name:<9} {address}");
    }
    if let Some(admin) = &endpoints.admin {
        println!("  metrics   http://{admin}/metrics");
    }
    if let Some(ops) = ops {
        println!();
        println!("Call the gateway with grpcurl as the `ops` participant:");
        println!(
            "  grpcurl -cacert {} -cert {} -key {} {} grpc.health.v1.Health/Check",
            endpoints.ca_cert.display(),
            ops.tls_cert.display(),
            ops.tls_key.display(),
            endpoints.gateway
        );
        println!(
            "  grpcurl -cacert {} -cert {} -key {} {} list",
            endpoints.ca_cert.display(),
            ops.tls_cert.display(),
            ops.tls_key.display(),
            endpoints.gateway
        );
    }
    println!();
    match &endpoints.test_clock {
        Some(address) => {
            println!("TEST CLOCK on: ops may move housing's clock forward at {address}.");
            println!(
                "Walk the seeds' scenarios: shlyuz demo --endpoints {}",
                endpoints_path.display()
            );
        }
        None => println!("`shlyuz demo` needs `shlyuz up --test-clock` (test stands only)."),
    }
    println!("Stop with Ctrl-C (SIGINT) or SIGTERM.");
}
