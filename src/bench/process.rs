//! A gateway in its own process in front of an echo upstream, as deployed (`shlyuz serve --target
//! gateway` with a configuration file): for benchmarks, which measure its memory alone, and for
//! tests that kill it without a graceful shutdown and start it again on the same database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use shlyuz_kit::client::{ClientSettings, connect};
use shlyuz_kit::pki::DevPki;
use shlyuz_kit::server::{READINESS_SERVICE, TlsFiles};

/// The participant that calls the echo through the gateway.
pub const CLIENT_PARTICIPANT: &str = "bench";
/// The purpose its rule allows.
pub const PURPOSE: &str = "OPERATIONS";
/// Participants of the development PKI these setups need.
pub const PARTICIPANTS: [&str; 3] = ["gateway", "echo", CLIENT_PARTICIPANT];

/// The certificate files of `participant`.
pub fn tls_files(pki: &DevPki, participant: &str) -> anyhow::Result<TlsFiles> {
    pki.tls_files(participant)
        .with_context(|| format!("no PKI files for {participant}"))
}

fn toml_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes a gateway directory with the echo route (personal data, `Echo` idempotent, the given
/// timeout), the async channel, and rules letting [`CLIENT_PARTICIPANT`] call both.
pub fn write_echo_directory(
    work_dir: &Path,
    pki: &DevPki,
    echo_address: SocketAddr,
    echo_timeout: Duration,
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
signing_public_key = {gateway_key}

[[participants]]
id = "{CLIENT_PARTICIPANT}"
name = "Benchmark and test client"
signing_public_key = {client_key}

[[purposes]]
code = "{PURPOSE}"

[[services]]
name = "shlyuz.echo.v1.EchoService"
upstream = "{echo_address}"
upstream_server_name = "echo"
personal_data = true
timeout_ms = {timeout_ms}
methods = ["Echo"]
idempotent_methods = ["Echo"]

[[services]]
name = "shlyuz.gateway.v1.AsyncChannelService"
upstream = "local"
personal_data = false
methods = ["SendMessage", "GetMessageStatus", "GetMessages", "AckMessages", "StreamMessages"]
server_streaming_methods = ["StreamMessages"]

[[rules]]
participant = "{CLIENT_PARTICIPANT}"
service = "shlyuz.echo.v1.EchoService"
methods = ["Echo"]
purposes = ["{PURPOSE}"]

[[rules]]
participant = "{CLIENT_PARTICIPANT}"
service = "shlyuz.gateway.v1.AsyncChannelService"
methods = ["*"]
"#,
        gateway_key = toml_string(&key_of("gateway")?),
        client_key = toml_string(&key_of(CLIENT_PARTICIPANT)?),
        timeout_ms = echo_timeout.as_millis(),
    );
    let path = work_dir.join("gateway-directory.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// How to run the gateway process.
#[derive(Debug, Clone)]
pub struct GatewayProcessOptions {
    /// `full` or `pass_through`.
    pub mode: String,
    /// The gateway's database; empty means an SQLite file in its data directory.
    pub database_url: String,
    /// Its data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// More `key = value` lines for the `[gateway]` section.
    pub extra_gateway_config: String,
}

/// The address a `serve --listening-file` process bound, once it has written it.
async fn wait_for_listening(
    child: &mut tokio::process::Child,
    listening_path: &Path,
) -> anyhow::Result<SocketAddr> {
    for _ in 0..400 {
        if let Ok(text) = std::fs::read_to_string(listening_path) {
            let listening: serde_json::Value =
                serde_json::from_str(&text).context("listening file")?;
            let address = listening["address"]
                .as_str()
                .context("no address in the listening file")?;
            return address.parse().context("listening address");
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the gateway process exited before it listened: {status}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("the gateway process did not listen within 10 s")
}

/// A gateway in its own process.
pub struct GatewayProcess {
    child: tokio::process::Child,
    /// Where it listens.
    pub address: SocketAddr,
}

impl GatewayProcess {
    /// Writes the configuration, starts `shlyuz serve --target gateway` and waits until it
    /// reports ready over mutual TLS.
    pub async fn start(
        pki: &DevPki,
        directory: &Path,
        options: &GatewayProcessOptions,
    ) -> anyhow::Result<GatewayProcess> {
        std::fs::create_dir_all(&options.data_dir)?;
        let files = tls_files(pki, "gateway")?;
        let signing_key = pki
            .participant("gateway")
            .context("gateway files")?
            .signing_key;
        let config = format!(
            "data_dir = {}\n\n[telemetry]\nlog_level = \"warn\"\nlog_format = \"json\"\nadmin_listen = \"\"\n\n[tls]\nmode = \"mutual\"\nca_cert = {}\ncert = {}\nkey = {}\nsigning_key = {}\n\n[shutdown]\ndrain_timeout_ms = 5000\n\n[gateway]\nlisten = \"127.0.0.1:0\"\ndirectory_file = {}\npolicy_mode = \"{}\"\ndatabase_url = {}\n{}\n",
            toml_string(&options.data_dir.display().to_string()),
            toml_string(&files.ca_cert.display().to_string()),
            toml_string(&files.cert.display().to_string()),
            toml_string(&files.key.display().to_string()),
            toml_string(&signing_key.display().to_string()),
            toml_string(&directory.display().to_string()),
            options.mode,
            toml_string(&options.database_url),
            options.extra_gateway_config,
        );
        let config_path = options.data_dir.join("shlyuz.toml");
        std::fs::write(&config_path, config)?;
        let log_path = options.data_dir.join("gateway.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let binary = std::env::var_os("CARGO_BIN_EXE_shlyuz")
            .map(PathBuf::from)
            .map_or_else(std::env::current_exe, Ok)?;
        // The process binds port 0 itself and says where: no port is reserved and bound later.
        let listening_path = options.data_dir.join("listening.json");
        let _ = std::fs::remove_file(&listening_path);
        let mut child = tokio::process::Command::new(binary)
            .args(["serve", "--target", "gateway", "--config"])
            .arg(&config_path)
            .arg("--listening-file")
            .arg(&listening_path)
            .env_remove("SHLYUZ_CONFIG")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the gateway process")?;
        let address = match wait_for_listening(&mut child, &listening_path).await {
            Ok(address) => address,
            Err(error) => {
                return Err(error.context(format!("see {}", log_path.display())));
            }
        };
        let process = GatewayProcess { child, address };
        process.wait_ready(pki).await.with_context(|| {
            format!(
                "the gateway did not become ready; see {}",
                log_path.display()
            )
        })?;
        Ok(process)
    }

    async fn wait_ready(&self, pki: &DevPki) -> anyhow::Result<()> {
        let settings = ClientSettings {
            address: self.address.to_string(),
            tls: Some(tls_files(pki, CLIENT_PARTICIPANT)?),
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

    /// CPU seconds the process has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.child.id().and_then(process_cpu_seconds).unwrap_or(0.0)
    }

    /// The process's resident memory now, KiB.
    pub fn resident_kib(&self) -> u64 {
        self.child
            .id()
            .and_then(process_memory_kib)
            .map_or(0, |(resident, _)| resident)
    }

    /// Runs `work` while sampling the process's resident memory; returns the work's result and
    /// the peak resident set in KiB.
    pub async fn peak_memory_during<F>(&self, work: F) -> (F::Output, u64)
    where
        F: std::future::Future,
    {
        let pid = self.child.id().unwrap_or_default();
        let sampler = tokio::spawn(async move {
            let mut peak = 0;
            while let Some((resident, _)) = process_memory_kib(pid) {
                peak = peak.max(resident);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        });
        let output = work.await;
        sampler.abort();
        let sampled = sampler.await.unwrap_or(0);
        // VmHWM catches a peak between two samples.
        let high_water = process_memory_kib(pid).map_or(0, |(_, high_water)| high_water);
        (output, sampled.max(high_water))
    }

    /// SIGTERM: the gateway drains and flushes its log as in production.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
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

    /// SIGKILL: the process dies at once, as in a crash or a node failure.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// CPU time (user + system) process `pid` has used, in seconds, from /proc (Linux only; /proc
/// reports it in USER_HZ, 100 per second on Linux).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// Resident and peak resident memory of process `pid` in KiB, from /proc (Linux only).
pub fn process_memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
