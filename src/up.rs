//! `shlyuz up`: every target in one process, with a development PKI, SQLite files under the
//! data directory, and `endpoints.json` telling clients where everything is.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shlyuz_gateway::directory::TargetResolver;
use shlyuz_kit::client::{ClientSettings, connect};
use shlyuz_kit::clock::AdjustableClock;
use shlyuz_kit::pki::{DevPki, ParticipantFiles};
use shlyuz_kit::server::{READINESS_SERVICE, TlsFiles};
use shlyuz_kit::shutdown::shutdown_channel;
use shlyuz_kit::telemetry::{AdminServer, MetricsRegistry};
use tokio::task::JoinSet;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::ShlyuzConfig;
use crate::target::Target;
use crate::targets::{TargetIdentity, build_service, prepare_target, serve_target};

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
    let (trigger, signal) = shutdown_channel();
    trigger
        .trigger_on_os_signals()
        .context("cannot install signal handlers")?;

    let mut prepared_targets = Vec::new();
    for target in Target::ALL {
        let identity = TargetIdentity {
            tls: Some(participant_tls(&pki, target.name())?),
            signing_key: pki
                .participant(target.name())
                .map(|files| files.signing_key.clone())
                .unwrap_or_default(),
        };
        prepared_targets.push(prepare_target(&config, target, identity, &metrics).await?);
    }
    // The synthetic population plus the hand-picked people of the rules fixture, whom the demo,
    // the examples and the README use.
    let fixture = shlyuz_registry::fixtures::parse(shlyuz_registry::fixtures::RULES_FIXTURE)?;
    for prepared in &prepared_targets {
        if prepared.target == Target::Registry {
            let seeded = shlyuz_registry::seed_if_empty(
                prepared.database.clone(),
                shlyuz_registry::UP_POPULATION,
                shlyuz_registry::UP_SEED,
                Some(&fixture),
            )
            .await
            .context("registry: synthetic population")?;
            if let Some(report) = seeded {
                tracing::info!(
                    persons = report.persons,
                    records = report.records,
                    elapsed_ms = report.elapsed.as_millis() as u64,
                    "registry seeded with the synthetic population"
                );
            }
        }
    }
    let mut addresses = BTreeMap::new();
    for prepared in &prepared_targets {
        addresses.insert(
            prepared.target.name().to_string(),
            prepared.server.local_addr()?,
        );
    }
    if let Some(gateway_address) = addresses.get(Target::Gateway.name()) {
        config.fill_gateway_address(&gateway_address.to_string());
    }
    let resolver = TargetResolver::new(
        addresses
            .iter()
            .map(|(name, address)| (name.clone(), address.to_string()))
            .collect(),
    );
    let admin = if config.telemetry.admin_listen.is_empty() {
        None
    } else {
        Some(AdminServer::bind(&config.telemetry.admin_listen, metrics.clone()).await?)
    };
    let admin_address = match &admin {
        Some(admin) => Some(admin.local_addr()?.to_string()),
        None => None,
    };

    let test_clock = test_clock.then(AdjustableClock::new);
    if test_clock.is_some() {
        tracing::warn!("TEST CLOCK enabled: ops may move housing's clock forward");
    }
    let mut tasks = JoinSet::new();
    for prepared in prepared_targets {
        let service = build_service(
            &config,
            &prepared,
            resolver.clone(),
            &metrics,
            signal.clone(),
            test_clock.as_ref(),
        )
        .await?;
        tasks.spawn(serve_target(prepared, service, signal.clone()));
    }
    if let Some(admin) = admin {
        let admin_signal = signal.clone();
        tasks.spawn(admin.serve(admin_signal));
    }

    let ready = wait_until_ready(&pki, &addresses);
    let outcome = tokio::select! {
        ready = ready => ready,
        Some(finished) = tasks.join_next() => Err(anyhow::anyhow!(
            "a target stopped during start-up: {}",
            describe_task_result(finished)
        )),
    };
    if let Err(error) = outcome {
        trigger.trigger();
        while tasks.join_next().await.is_some() {}
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
    while let Some(finished) = tasks.join_next().await {
        let failed = match finished {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error),
            Err(join_error) => Some(anyhow::anyhow!("task panicked: {join_error}")),
        };
        if let Some(error) = failed {
            // One target down means the system is not whole: stop the others cleanly.
            trigger.trigger();
            first_error.get_or_insert(error);
        }
    }
    let _ = std::fs::remove_file(&endpoints_path);
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn describe_task_result(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> String {
    match result {
        Ok(Ok(())) => "stopped early".to_string(),
        Ok(Err(error)) => format!("{error:#}"),
        Err(join_error) => format!("panicked: {join_error}"),
    }
}

fn participant_tls(pki: &DevPki, participant: &str) -> anyhow::Result<TlsFiles> {
    let files = pki
        .participant(participant)
        .with_context(|| format!("the development PKI has no participant {participant:?}"))?;
    Ok(TlsFiles {
        ca_cert: pki.ca_cert_path().to_path_buf(),
        cert: files.tls_cert.clone(),
        key: files.tls_key.clone(),
    })
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
