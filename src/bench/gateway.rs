//! `shlyuz bench gateway`: an echo upstream measured in one run, with the same load, (a) called
//! directly, (b) through the gateway with full policy (mTLS, access rule, signature, replay
//! refusal, durable hash-chained log), (c) through the gateway as a pure proxy, and (d) through
//! nginx `grpc_pass` when nginx is installed (bench/install-nginx.sh). Every hop is mutual TLS.
//! The gateway runs as its own process (`shlyuz serve --target gateway`), so its memory is its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shlyuz_gateway::echo::Echo;
use shlyuz_gateway::envelope::EnvelopeBuilder;
use shlyuz_kit::client::{ClientSettings, connect};
use shlyuz_kit::pki::{DevPki, SigningKey};
use shlyuz_kit::server::{GrpcServer, READINESS_SERVICE, ServerSettings, TlsFiles, Transport};
use shlyuz_kit::shutdown::shutdown_channel;
use shlyuz_kit::telemetry::MetricsRegistry;
use shlyuz_proto::echo::v1::EchoRequest;
use tonic::transport::Channel;

use super::load::{self, LoadResult, RequestFactory};

/// Options of `shlyuz bench gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayBenchArgs {
    /// Calls per scenario.
    #[arg(long, default_value_t = 40_000)]
    pub requests: usize,
    /// Concurrent callers (HTTP/2 streams in flight).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Concurrent streams for the gateway memory measurement.
    #[arg(long, default_value_t = 256)]
    pub memory_streams: usize,
    /// PostgreSQL server for the gateway's message log (a fresh database is created on it and
    /// dropped afterwards); default: an SQLite file.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Skip the nginx scenario even when nginx is installed.
    #[arg(long)]
    pub skip_nginx: bool,
}

const ECHO_PATH: &str = "/shlyuz.echo.v1.EchoService/Echo";
const BENCH_PARTICIPANT: &str = "bench";
const PURPOSE: &str = "OPERATIONS";
const SUBJECT: &str = "900101300017";
const WARMUP_CALLS: usize = 2_000;

struct Scenario {
    name: &'static str,
    result: LoadResult,
}

/// Runs the gateway benchmark and prints its report.
pub async fn run(args: GatewayBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.requests > 0 && args.concurrency > 0 && args.connections > 0,
        "--requests, --concurrency and --connections must be positive"
    );
    let work_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let pki = DevPki::ensure(
        &work_dir.path().join("pki"),
        &["gateway", "echo", BENCH_PARTICIPANT],
    )?;
    let bench_files = tls_files(&pki, BENCH_PARTICIPANT)?;
    let bench_key = SigningKey::from_pem_file(
        &pki.participant(BENCH_PARTICIPANT)
            .context("bench participant")?
            .signing_key,
    )?;

    // The echo upstream, in this process.
    let metrics = MetricsRegistry::default();
    let (trigger, signal) = shutdown_channel();
    let echo_server = GrpcServer::bind(
        server_settings("echo", Transport::MutualTls(tls_files(&pki, "echo")?)),
        &metrics,
    )
    .await?;
    let echo_address = echo_server.local_addr()?;
    let echo_task = tokio::spawn(echo_server.serve(
        tonic::service::Routes::new(Echo::default().into_server()),
        signal,
    ));

    println!("shlyuz bench gateway — {}", super::machine_description());
    println!(
        "{} calls per scenario, {} concurrent callers over {} connections, mutual TLS on every hop",
        args.requests, args.concurrency, args.connections
    );
    let database = BenchDatabase::create(args.database_url.as_deref()).await?;
    println!("message log: {}", database.description());

    let mut scenarios = Vec::new();
    let direct = channels(
        &echo_address.to_string(),
        "echo",
        &bench_files,
        args.connections,
    )
    .await?;
    scenarios.push(Scenario {
        name: "direct",
        result: measure(&direct, &args, plain_requests()).await,
    });

    let directory = write_directory(work_dir.path(), &pki, echo_address)?;
    {
        let gateway =
            GatewayProcess::start(work_dir.path(), &pki, &directory, "full", database.url())
                .await?;
        let idle_kib = gateway.resident_kib();
        let through = channels(
            &gateway.address.to_string(),
            "gateway",
            &bench_files,
            args.connections,
        )
        .await?;
        let signed = signed_requests(&bench_key, WARMUP_CALLS + args.requests + args.requests);
        let full = measure(&through, &args, signed.clone()).await;
        // Memory at many concurrent streams, on the same process after the measured run.
        let offset = WARMUP_CALLS + args.requests;
        let (memory_run, peak_rss_kib) = gateway
            .peak_memory_during(load::run(
                &through,
                args.memory_streams,
                args.requests,
                Arc::new(move |index| signed(offset + index)),
            ))
            .await;
        scenarios.push(Scenario {
            name: "gateway, full policy",
            result: full,
        });
        println!(
            "gateway resident memory: {:.1} MiB idle; peak {:.1} MiB at {} concurrent streams ({} calls, {} failed)",
            idle_kib as f64 / 1024.0,
            peak_rss_kib as f64 / 1024.0,
            args.memory_streams,
            memory_run.succeeded,
            memory_run.failed
        );
        gateway.stop().await;
    }
    {
        let gateway = GatewayProcess::start(
            work_dir.path(),
            &pki,
            &directory,
            "pass_through",
            database.url(),
        )
        .await?;
        let through = channels(
            &gateway.address.to_string(),
            "gateway",
            &bench_files,
            args.connections,
        )
        .await?;
        scenarios.push(Scenario {
            name: "gateway, pure proxy",
            result: measure(&through, &args, plain_requests()).await,
        });
        gateway.stop().await;
    }
    match nginx_binary() {
        Some(nginx) if !args.skip_nginx => {
            let proxy = NginxProcess::start(&nginx, work_dir.path(), &pki, echo_address).await?;
            let through = channels(
                &proxy.address.to_string(),
                "gateway",
                &bench_files,
                args.connections,
            )
            .await?;
            scenarios.push(Scenario {
                name: "nginx grpc_pass",
                result: measure(&through, &args, plain_requests()).await,
            });
            proxy.stop().await;
        }
        Some(_) => println!("nginx scenario skipped (--skip-nginx)"),
        None => println!(
            "nginx scenario skipped: nginx is not installed (bench/install-nginx.sh installs it)"
        ),
    }
    database.drop_database().await;
    trigger.trigger();
    let _ = echo_task.await;
    print_report(&scenarios);
    Ok(())
}

async fn measure(
    channels: &[Channel],
    args: &GatewayBenchArgs,
    requests: RequestFactory,
) -> LoadResult {
    let warmup = load::run(channels, args.concurrency, WARMUP_CALLS, requests.clone()).await;
    if warmup.failed > 0 {
        eprintln!(
            "warm-up had {} failures: {}",
            warmup.failed,
            warmup.first_error.unwrap_or_default()
        );
    }
    let offset_requests: RequestFactory = Arc::new(move |index| requests(WARMUP_CALLS + index));
    load::run(channels, args.concurrency, args.requests, offset_requests).await
}

fn print_report(scenarios: &[Scenario]) {
    let direct_rate = scenarios
        .first()
        .map_or(0.0, |scenario| scenario.result.rate());
    let nginx_rate = scenarios
        .iter()
        .find(|scenario| scenario.name == "nginx grpc_pass")
        .map(|scenario| scenario.result.rate());
    println!();
    println!(
        "{:<22} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "scenario", "calls/s", "p50 ms", "p99 ms", "× direct", "× nginx", "failed"
    );
    for scenario in scenarios {
        let result = &scenario.result;
        let versus_nginx = nginx_rate.map_or("-".to_string(), |rate| {
            format!("{:.2}", result.rate() / rate)
        });
        println!(
            "{:<22} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>8}",
            scenario.name,
            result.rate(),
            result.latency.p50_us as f64 / 1000.0,
            result.latency.p99_us as f64 / 1000.0,
            result.rate() / direct_rate.max(f64::MIN_POSITIVE),
            versus_nginx,
            result.failed
        );
        if let Some(error) = &result.first_error {
            println!("  first failure: {error}");
        }
    }
}

fn plain_requests() -> RequestFactory {
    Arc::new(|_| tonic::Request::new(echo_request()))
}

fn echo_request() -> EchoRequest {
    EchoRequest {
        payload: "сәлем, шлюз".to_string(),
        fail_with_code: 0,
        delay_ms: 0,
    }
}

/// Signs `count` envelopes up front, so the load generator spends no time signing while measured.
fn signed_requests(
    key: &SigningKey,
    count: usize,
) -> Arc<dyn Fn(usize) -> tonic::Request<EchoRequest> + Send + Sync> {
    let body = prost::Message::encode_to_vec(&echo_request());
    let envelopes: Vec<
        Vec<(
            tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
            tonic::metadata::AsciiMetadataValue,
        )>,
    > = (0..count)
        .map(|_| {
            let builder = EnvelopeBuilder {
                purpose: PURPOSE.to_string(),
                subject_iin: SUBJECT.to_string(),
                ..EnvelopeBuilder::default()
            };
            builder
                .sign(key, ECHO_PATH, Some(&body))
                .into_iter()
                .filter_map(|(name, value)| Some((name.parse().ok()?, value.parse().ok()?)))
                .collect()
        })
        .collect();
    let envelopes = Arc::new(envelopes);
    Arc::new(move |index| {
        let mut request = tonic::Request::new(echo_request());
        if let Some(pairs) = envelopes.get(index) {
            for (name, value) in pairs {
                request.metadata_mut().insert(name.clone(), value.clone());
            }
        }
        request
    })
}

fn tls_files(pki: &DevPki, participant: &str) -> anyhow::Result<TlsFiles> {
    let files = pki
        .participant(participant)
        .with_context(|| format!("no PKI files for {participant}"))?;
    Ok(TlsFiles {
        ca_cert: pki.ca_cert_path().to_path_buf(),
        cert: files.tls_cert.clone(),
        key: files.tls_key.clone(),
    })
}

fn server_settings(name: &str, transport: Transport) -> ServerSettings {
    ServerSettings {
        name: name.to_string(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        transport,
        readiness_grace: Duration::ZERO,
        drain_timeout: Duration::from_secs(5),
        max_connection_age: None,
    }
}

async fn channels(
    address: &str,
    server_name: &str,
    tls: &TlsFiles,
    count: usize,
) -> anyhow::Result<Vec<Channel>> {
    let settings = ClientSettings {
        address: address.to_string(),
        tls: Some(tls.clone()),
        server_name: server_name.to_string(),
        connect_timeout: Duration::from_secs(5),
    };
    let mut opened = Vec::with_capacity(count);
    for _ in 0..count {
        opened.push(connect(&settings).await?);
    }
    Ok(opened)
}

fn write_directory(
    work_dir: &Path,
    pki: &DevPki,
    echo_address: SocketAddr,
) -> anyhow::Result<PathBuf> {
    let key_of = |participant: &str| -> anyhow::Result<String> {
        Ok(pki
            .participant(participant)
            .with_context(|| format!("no PKI files for {participant}"))?
            .signing_public_key
            .display()
            .to_string())
    };
    let text = format!(
        r#"[[participants]]
id = "gateway"
name = "Shlyuz gateway"
signing_public_key = "{gateway_key}"

[[participants]]
id = "{BENCH_PARTICIPANT}"
name = "Benchmark client"
signing_public_key = "{bench_key}"

[[purposes]]
code = "{PURPOSE}"

[[services]]
name = "shlyuz.echo.v1.EchoService"
upstream = "{echo_address}"
upstream_server_name = "echo"
personal_data = true
methods = ["Echo"]
idempotent_methods = ["Echo"]

[[rules]]
participant = "{BENCH_PARTICIPANT}"
service = "shlyuz.echo.v1.EchoService"
methods = ["Echo"]
purposes = ["{PURPOSE}"]
"#,
        gateway_key = key_of("gateway")?,
        bench_key = key_of(BENCH_PARTICIPANT)?,
    );
    let path = work_dir.join("bench-directory.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn toml_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A gateway in its own process, as deployed.
struct GatewayProcess {
    child: tokio::process::Child,
    address: SocketAddr,
}

impl GatewayProcess {
    async fn start(
        work_dir: &Path,
        pki: &DevPki,
        directory: &Path,
        mode: &str,
        database_url: &str,
    ) -> anyhow::Result<GatewayProcess> {
        let port = free_port()?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let data_dir = work_dir.join(format!("gateway-{mode}"));
        std::fs::create_dir_all(&data_dir)?;
        let files = tls_files(pki, "gateway")?;
        let signing_key = pki
            .participant("gateway")
            .context("gateway files")?
            .signing_key;
        let config = format!(
            "data_dir = {}\n\n[telemetry]\nlog_level = \"warn\"\nlog_format = \"json\"\nadmin_listen = \"\"\n\n[tls]\nmode = \"mutual\"\nca_cert = {}\ncert = {}\nkey = {}\nsigning_key = {}\n\n[gateway]\nlisten = \"{address}\"\ndirectory_file = {}\npolicy_mode = \"{mode}\"\ndatabase_url = {}\n",
            toml_string(&data_dir.display().to_string()),
            toml_string(&files.ca_cert.display().to_string()),
            toml_string(&files.cert.display().to_string()),
            toml_string(&files.key.display().to_string()),
            toml_string(&signing_key.display().to_string()),
            toml_string(&directory.display().to_string()),
            toml_string(database_url),
        );
        let config_path = data_dir.join("shlyuz.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(data_dir.join("gateway.log"))?;
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--target", "gateway", "--config"])
            .arg(&config_path)
            .env_remove("SHLYUZ_CONFIG")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the gateway process")?;
        let process = GatewayProcess { child, address };
        process.wait_ready(pki).await.with_context(|| {
            format!(
                "the gateway did not become ready; see {}",
                data_dir.join("gateway.log").display()
            )
        })?;
        Ok(process)
    }

    async fn wait_ready(&self, pki: &DevPki) -> anyhow::Result<()> {
        let settings = ClientSettings {
            address: self.address.to_string(),
            tls: Some(tls_files(pki, BENCH_PARTICIPANT)?),
            server_name: "gateway".to_string(),
            connect_timeout: Duration::from_secs(1),
        };
        for _ in 0..200 {
            if let Ok(channel) = connect(&settings).await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let answer = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: READINESS_SERVICE.to_string(),
                    })
                    .await;
                if let Ok(answer) = answer
                    && answer.into_inner().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("not ready after 10 s")
    }

    /// The process's resident memory now, KiB.
    fn resident_kib(&self) -> u64 {
        self.child
            .id()
            .and_then(super::process_memory_kib)
            .map_or(0, |(resident, _)| resident)
    }

    /// Runs `work` while sampling the process's resident memory; returns the work's result and
    /// the peak resident set in KiB.
    async fn peak_memory_during<F>(&self, work: F) -> (F::Output, u64)
    where
        F: std::future::Future,
    {
        let pid = self.child.id().unwrap_or_default();
        {
            let sampler = tokio::spawn(async move {
                let mut peak = 0;
                loop {
                    match super::process_memory_kib(pid) {
                        Some((resident, _)) => peak = peak.max(resident),
                        None => return peak,
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            let output = work.await;
            sampler.abort();
            let sampled = sampler.await.unwrap_or(0);
            // VmHWM catches a peak between two samples.
            let high_water = super::process_memory_kib(pid).map_or(0, |(_, high_water)| high_water);
            (output, sampled.max(high_water))
        }
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM: the gateway drains and flushes its log as in production.
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// nginx terminating mutual TLS and passing calls to the echo upstream over mutual TLS.
struct NginxProcess {
    child: tokio::process::Child,
    address: SocketAddr,
}

impl NginxProcess {
    async fn start(
        binary: &Path,
        work_dir: &Path,
        pki: &DevPki,
        echo_address: SocketAddr,
    ) -> anyhow::Result<NginxProcess> {
        let port = free_port()?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let prefix = work_dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs"))?;
        let server = tls_files(pki, "gateway")?;
        let config = format!(
            r#"worker_processes auto;
error_log {prefix}/logs/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    # nginx closes an HTTP/2 connection after 1000 requests by default; the bench's long-lived
    # connections would see in-flight calls cancelled.
    keepalive_requests 100000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    upstream echo {{
        server {echo_address};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    server {{
        listen {address} ssl http2;
        ssl_protocols TLSv1.3;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        location / {{
            grpc_pass grpcs://echo;
            grpc_ssl_certificate {cert};
            grpc_ssl_certificate_key {key};
            grpc_ssl_trusted_certificate {ca};
            grpc_ssl_verify on;
            grpc_ssl_name echo;
            grpc_ssl_session_reuse on;
        }}
    }}
}}
"#,
            prefix = prefix.display(),
            cert = server.cert.display(),
            key = server.key.display(),
            ca = server.ca_cert.display(),
        );
        let config_path = prefix.join("nginx.conf");
        std::fs::write(&config_path, config)?;
        let child = tokio::process::Command::new(binary)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config_path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start nginx")?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return Ok(NginxProcess { child, address });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!(
            "nginx did not listen on {address}; see {}/logs/error.log",
            prefix.display()
        )
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The message log's database for the run: an SQLite file in the gateway's data directory, or a
/// fresh database on the given PostgreSQL server.
struct BenchDatabase {
    url: String,
    postgres: Option<(String, String)>,
}

impl BenchDatabase {
    async fn create(server_url: Option<&str>) -> anyhow::Result<BenchDatabase> {
        let Some(server_url) = server_url else {
            return Ok(BenchDatabase {
                url: String::new(),
                postgres: None,
            });
        };
        let name = format!("shlyuz_bench_{}", uuid::Uuid::new_v4().simple());
        let admin = shlyuz_kit::db::Database::connect(server_url, 1).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(admin.pool())
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        admin.close().await;
        Ok(BenchDatabase {
            url: shlyuz_kit::db::testing::replace_database_name(server_url, &name),
            postgres: Some((server_url.to_string(), name)),
        })
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn description(&self) -> String {
        if self.url.is_empty() {
            "SQLite (WAL, synchronous=FULL)".to_string()
        } else {
            format!("PostgreSQL {}", shlyuz_kit::db::redact_url(&self.url))
        }
    }

    async fn drop_database(&self) {
        if let Some((server_url, name)) = &self.postgres
            && let Ok(admin) = shlyuz_kit::db::Database::connect(server_url, 1).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(admin.pool())
                .await;
            admin.close().await;
        }
    }
}
