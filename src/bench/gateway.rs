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
use shlyuz_kit::server::{GrpcServer, ServerSettings, TlsFiles, Transport};
use shlyuz_kit::shutdown::shutdown_channel;
use shlyuz_kit::telemetry::MetricsRegistry;
use shlyuz_proto::echo::v1::EchoRequest;
use tonic::transport::Channel;

use super::load::{self, LoadResult, RequestFactory};
use super::process::{
    CLIENT_PARTICIPANT, GatewayProcess, GatewayProcessOptions, PARTICIPANTS, PURPOSE, tls_files,
    write_echo_directory,
};

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
    /// `gateway.replay_guard` of the gateway under test: `instance` or `shared` (replicas on one
    /// database; one more database write per call).
    #[arg(long, default_value = "instance", value_parser = ["instance", "shared"])]
    pub replay_guard: String,
}

const ECHO_PATH: &str = "/shlyuz.echo.v1.EchoService/Echo";
const SUBJECT: &str = "900101300017";
const WARMUP_CALLS: usize = 2_000;

struct Scenario {
    name: &'static str,
    result: LoadResult,
    /// CPU the gateway process spent per successful call, when the gateway is a process here.
    gateway_cpu_us_per_call: Option<f64>,
}

/// Measures like [`measure`] and also the gateway process's CPU per call during the measured part.
async fn measure_gateway(
    gateway: &GatewayProcess,
    channels: &[Channel],
    args: &GatewayBenchArgs,
    requests: RequestFactory,
) -> (LoadResult, f64) {
    let warmup = load::run(channels, args.concurrency, WARMUP_CALLS, requests.clone()).await;
    if warmup.failed > 0 {
        eprintln!(
            "warm-up had {} failures: {}",
            warmup.failed,
            warmup.first_error.unwrap_or_default()
        );
    }
    let before = gateway.cpu_seconds();
    let offset_requests: RequestFactory = Arc::new(move |index| requests(WARMUP_CALLS + index));
    let result = load::run(channels, args.concurrency, args.requests, offset_requests).await;
    let cpu_us = (gateway.cpu_seconds() - before) * 1e6 / (result.succeeded.max(1) as f64);
    (result, cpu_us)
}

/// Runs the gateway benchmark and prints its report.
pub async fn run(args: GatewayBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.requests > 0 && args.concurrency > 0 && args.connections > 0,
        "--requests, --concurrency and --connections must be positive"
    );
    let work_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let pki = DevPki::ensure(&work_dir.path().join("pki"), &PARTICIPANTS)?;
    let bench_files = tls_files(&pki, CLIENT_PARTICIPANT)?;
    let bench_key = SigningKey::from_pem_file(
        &pki.participant(CLIENT_PARTICIPANT)
            .context("bench participant")?
            .signing_key,
    )?;

    // The echo upstream, in this process.
    let metrics = MetricsRegistry::default();
    let (trigger, signal) = shutdown_channel();
    let echo_server = GrpcServer::bind(
        ServerSettings::loopback("echo", Transport::MutualTls(tls_files(&pki, "echo")?)),
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
    println!(
        "message log: {}; replay guard: {}",
        database.description(),
        args.replay_guard
    );

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
        gateway_cpu_us_per_call: None,
    });

    let directory =
        write_echo_directory(work_dir.path(), &pki, echo_address, Duration::from_secs(10))?;
    {
        let gateway = GatewayProcess::start(
            &pki,
            &directory,
            &gateway_options(work_dir.path(), "full", database.url(), &args.replay_guard)?,
        )
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
        let (full, full_cpu) = measure_gateway(&gateway, &through, &args, signed.clone()).await;
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
            gateway_cpu_us_per_call: Some(full_cpu),
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
            &pki,
            &directory,
            &gateway_options(
                work_dir.path(),
                "pass_through",
                database.url(),
                &args.replay_guard,
            )?,
        )
        .await?;
        let through = channels(
            &gateway.address.to_string(),
            "gateway",
            &bench_files,
            args.connections,
        )
        .await?;
        let (result, cpu) = measure_gateway(&gateway, &through, &args, plain_requests()).await;
        scenarios.push(Scenario {
            name: "gateway, pure proxy",
            result,
            gateway_cpu_us_per_call: Some(cpu),
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
                gateway_cpu_us_per_call: None,
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

fn gateway_options(
    work_dir: &Path,
    mode: &str,
    database_url: &str,
    replay_guard: &str,
) -> anyhow::Result<GatewayProcessOptions> {
    Ok(GatewayProcessOptions {
        mode: mode.to_string(),
        database_url: database_url.to_string(),
        data_dir: work_dir.join(format!("gateway-{mode}")),
        extra_gateway_config: format!("replay_guard = \"{replay_guard}\"\n"),
    })
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
        "{:<22} {:>10} {:>9} {:>9} {:>9} {:>9} {:>12} {:>8}",
        "scenario", "calls/s", "p50 ms", "p99 ms", "× direct", "× nginx", "gw CPU µs", "failed"
    );
    for scenario in scenarios {
        let result = &scenario.result;
        let versus_nginx = nginx_rate.map_or("-".to_string(), |rate| {
            format!("{:.2}", result.rate() / rate)
        });
        let cpu = scenario
            .gateway_cpu_us_per_call
            .map_or("-".to_string(), |micros| format!("{micros:.0}"));
        println!(
            "{:<22} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>12} {:>8}",
            scenario.name,
            result.rate(),
            result.latency.p50_us as f64 / 1000.0,
            result.latency.p99_us as f64 / 1000.0,
            result.rate() / direct_rate.max(f64::MIN_POSITIVE),
            versus_nginx,
            cpu,
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
        ..EchoRequest::default()
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
        // nginx cannot report the port of a port-0 listener, so this one port is found first and
        // bound by nginx after: the benchmark's nginx only, never a test's server.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("cannot find a port for nginx")?
            .port();
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
            grpc_ssl_protocols TLSv1.3;
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
pub(crate) struct BenchDatabase {
    url: String,
    postgres: Option<(String, String)>,
}

impl BenchDatabase {
    pub(crate) async fn create(server_url: Option<&str>) -> anyhow::Result<BenchDatabase> {
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

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn description(&self) -> String {
        if self.url.is_empty() {
            "SQLite (WAL, synchronous=FULL)".to_string()
        } else {
            format!("PostgreSQL {}", shlyuz_kit::db::redact_url(&self.url))
        }
    }

    pub(crate) async fn drop_database(&self) {
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
