//! `shlyuz bench registry`: single-IIN `GetPerson` look-ups per second against a seeded registry,
//! called directly over mTLS and through the gateway (signed envelope, access rule, message log),
//! on SQLite and, when a PostgreSQL URL is given, on PostgreSQL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use shlyuz_gateway::consent::InMemoryConsents;
use shlyuz_gateway::directory::{DEFAULT_DIRECTORY, TargetResolver};
use shlyuz_gateway::envelope::EnvelopeBuilder;
use shlyuz_gateway::{Gateway, GatewayParts, GatewaySettings};
use shlyuz_kit::client::{ClientSettings, connect};
use shlyuz_kit::db::Database;
use shlyuz_kit::pki::{DevPki, SigningKey};
use shlyuz_kit::server::{GrpcServer, ServerSettings, Transport};
use shlyuz_kit::shutdown::shutdown_channel;
use shlyuz_kit::telemetry::MetricsRegistry;
use shlyuz_proto::registry::v1::GetPersonRequest;
use shlyuz_proto::registry::v1::person_registry_service_client::PersonRegistryServiceClient;
use tonic::transport::Channel;

const GET_PERSON: &str = "/shlyuz.registry.v1.PersonRegistryService/GetPerson";
/// Every participant of the default directory, which names their keys under `pki/`.
const PARTICIPANTS: [&str; 8] = [
    "gateway",
    "registry",
    "notify",
    "intake",
    "housing",
    "jauynger-portal",
    "sdu",
    "ops",
];

/// What to measure.
#[derive(Debug, Clone)]
pub struct RegistryBenchOptions {
    /// Persons to seed.
    pub persons: usize,
    /// Measuring time per run.
    pub duration: Duration,
    /// Calls in flight.
    pub concurrency: usize,
    /// PostgreSQL server (any database on it) for the second backend; `None`: SQLite only.
    pub postgres_url: Option<String>,
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct RunFigures {
    /// `direct` or `gateway`.
    pub path: &'static str,
    /// Successful calls.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Successful calls per second.
    pub per_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// The figures of one backend.
#[derive(Debug, Clone)]
pub struct BackendFigures {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Seeding time.
    pub seed_time: Duration,
    /// Direct, then through the gateway.
    pub runs: Vec<RunFigures>,
}

/// Runs the benchmark on every backend and prints a table.
pub async fn run(options: RegistryBenchOptions) -> anyhow::Result<Vec<BackendFigures>> {
    shlyuz_kit::install_crypto_provider();
    let work_dir = tempfile::tempdir().context("temporary directory")?;
    let pki = DevPki::ensure(&work_dir.path().join("pki"), &PARTICIPANTS).context("bench pki")?;
    let mut figures = Vec::new();
    let sqlite_url = format!("sqlite:{}", work_dir.path().join("registry.db").display());
    figures.push(run_backend("sqlite", &sqlite_url, &options, &pki, work_dir.path()).await?);
    if let Some(admin_url) = &options.postgres_url {
        let name = format!("shlyuz_bench_{}", uuid_simple());
        let admin = Database::connect(admin_url, 1).await?;
        sqlx_execute(&admin, &format!("CREATE DATABASE {name}")).await?;
        let url = shlyuz_kit::db::testing::replace_database_name(admin_url, &name);
        let outcome = run_backend("postgres", &url, &options, &pki, work_dir.path()).await;
        let _ = sqlx_execute(
            &admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await;
        admin.close().await;
        figures.push(outcome?);
    }
    print_figures(&options, &figures);
    Ok(figures)
}

fn uuid_simple() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default()
    )
}

async fn sqlx_execute(database: &Database, statement: &str) -> anyhow::Result<()> {
    database.execute_raw(statement).await
}

async fn run_backend(
    backend: &'static str,
    url: &str,
    options: &RegistryBenchOptions,
    pki: &DevPki,
    work_dir: &std::path::Path,
) -> anyhow::Result<BackendFigures> {
    let metrics = MetricsRegistry::default();
    let (trigger, signal) = shutdown_channel();
    let database = Database::connect(url, 16).await?;
    database.migrate(&shlyuz_registry::MIGRATIONS).await?;
    let seeded = shlyuz_registry::seed(database.clone(), options.persons, 1, None).await?;
    let subjects = shlyuz_registry::bench::sample_iins(database.clone(), 10_000).await?;
    anyhow::ensure!(!subjects.is_empty(), "the seeded registry holds no person");

    let registry_server = GrpcServer::bind(
        ServerSettings::loopback(
            "registry",
            Transport::MutualTls(super::process::tls_files(pki, "registry")?),
        ),
        &metrics,
    )
    .await?;
    let registry_address = registry_server.local_addr()?;
    let registry_task = tokio::spawn(registry_server.serve(
        shlyuz_registry::bench::routes(database.clone()),
        signal.clone(),
    ));

    let gateway_dir = work_dir.join(format!("gateway-{backend}"));
    std::fs::create_dir_all(&gateway_dir)?;
    // The default directory names keys under pki/ next to itself, as the bench PKI is.
    let directory_file = work_dir.join(format!("gateway-directory-{backend}.toml"));
    std::fs::write(&directory_file, DEFAULT_DIRECTORY)?;
    let gateway_database = Database::connect(
        &format!("sqlite:{}", gateway_dir.join("gateway.db").display()),
        8,
    )
    .await?;
    gateway_database
        .migrate(&shlyuz_gateway::MIGRATIONS)
        .await?;
    let gateway_key =
        SigningKey::from_pem_file(&pki.participant("gateway").context("gateway")?.signing_key)?;
    let gateway = Gateway::start(GatewayParts {
        database: gateway_database.clone(),
        directory_file,
        // The default directory routes every service; only the registry runs here.
        targets: TargetResolver::partial(
            &[("registry", registry_address.to_string())],
            "127.0.0.1:9",
        ),
        signing_key: Arc::new(gateway_key),
        consent: Arc::new(InMemoryConsents::default()),
        upstream_tls: Some(super::process::tls_files(pki, "gateway")?),
        metrics: metrics.clone(),
        clock: shlyuz_kit::clock::system_clock(),
        settings: GatewaySettings::default(),
        tasks: shlyuz_kit::service::Tasks::new(signal.clone()),
    })
    .await?;
    let gateway_server = GrpcServer::bind(
        ServerSettings::loopback(
            "gateway",
            Transport::MutualTls(super::process::tls_files(pki, "gateway")?),
        ),
        &metrics,
    )
    .await?;
    let gateway_address = gateway_server.local_addr()?;
    let gateway_task = tokio::spawn(gateway_server.serve(gateway.routes(), signal));

    let ops_key = Arc::new(SigningKey::from_pem_file(
        &pki.participant("ops").context("ops")?.signing_key,
    )?);
    let subjects = Arc::new(subjects);
    let direct = load(
        "direct",
        registry_address,
        "registry",
        pki,
        options,
        subjects.clone(),
        None,
    )
    .await?;
    let through_gateway = load(
        "gateway",
        gateway_address,
        "gateway",
        pki,
        options,
        subjects,
        Some(ops_key),
    )
    .await?;

    trigger.trigger();
    let _ = registry_task.await;
    let _ = gateway_task.await;
    gateway.shutdown().await;
    gateway_database.close().await;
    database.close().await;
    Ok(BackendFigures {
        backend,
        seed_time: seeded.elapsed,
        runs: vec![direct, through_gateway],
    })
}

async fn load(
    path: &'static str,
    address: SocketAddr,
    server_name: &str,
    pki: &DevPki,
    options: &RegistryBenchOptions,
    subjects: Arc<Vec<String>>,
    signing_key: Option<Arc<SigningKey>>,
) -> anyhow::Result<RunFigures> {
    let connections = options.concurrency.clamp(1, 8);
    let mut channels: Vec<Channel> = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(
            connect(&ClientSettings {
                address: address.to_string(),
                tls: Some(super::process::tls_files(pki, "ops")?),
                server_name: server_name.to_string(),
                connect_timeout: Duration::from_secs(5),
            })
            .await?,
        );
    }
    let deadline = Instant::now() + options.duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..options.concurrency.max(1) {
        let mut client = PersonRegistryServiceClient::new(channels[worker % connections].clone());
        let subjects = subjects.clone();
        let signing_key = signing_key.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0_u64;
            let mut index = worker;
            while Instant::now() < deadline {
                let subject = &subjects[index % subjects.len()];
                index += 7919;
                let message = GetPersonRequest {
                    iin: subject.clone(),
                };
                let mut request = tonic::Request::new(message.clone());
                match &signing_key {
                    Some(key) => {
                        let builder = EnvelopeBuilder {
                            purpose: "OPERATIONS".to_string(),
                            subject_iin: subject.clone(),
                            ..EnvelopeBuilder::default()
                        };
                        let encoded = prost::Message::encode_to_vec(&message);
                        for (name, value) in builder.sign(key, GET_PERSON, Some(&encoded)) {
                            if let Ok(value) = value.parse() {
                                request.metadata_mut().insert(name, value);
                            }
                        }
                    }
                    None => {
                        if let Ok(value) = subject.parse() {
                            request
                                .metadata_mut()
                                .insert(shlyuz_kit::subject::SUBJECT_IIN_METADATA, value);
                        }
                    }
                }
                let started = Instant::now();
                match client.get_person(request).await {
                    Ok(_) => latencies.push(started.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(finished) = workers.join_next().await {
        let (worker_latencies, worker_errors) = finished?;
        latencies.extend(worker_latencies);
        errors += worker_errors;
    }
    latencies.sort_unstable();
    let percentile = |fraction: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let position = ((latencies.len() as f64 - 1.0) * fraction).round() as usize;
        latencies[position].as_secs_f64() * 1000.0
    };
    Ok(RunFigures {
        path,
        calls: latencies.len() as u64,
        errors,
        per_second: latencies.len() as f64 / options.duration.as_secs_f64(),
        p50_ms: percentile(0.5),
        p99_ms: percentile(0.99),
    })
}

fn print_figures(options: &RegistryBenchOptions, figures: &[BackendFigures]) {
    println!(
        "registry bench: GetPerson, {} persons, concurrency {}, {:.0} s per run",
        options.persons,
        options.concurrency,
        options.duration.as_secs_f64()
    );
    println!(
        "{:<9} {:<8} {:>10} {:>8} {:>10} {:>9} {:>9}",
        "backend", "path", "calls", "errors", "calls/s", "p50 ms", "p99 ms"
    );
    for backend in figures {
        for run in &backend.runs {
            println!(
                "{:<9} {:<8} {:>10} {:>8} {:>10.0} {:>9.2} {:>9.2}",
                backend.backend,
                run.path,
                run.calls,
                run.errors,
                run.per_second,
                run.p50_ms,
                run.p99_ms
            );
        }
        println!(
            "{:<9} seeded in {:.1} s",
            backend.backend,
            backend.seed_time.as_secs_f64()
        );
    }
}
