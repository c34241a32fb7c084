//! What the Kubernetes manifests under `k8s/` hand to the binary: each target's `shlyuz.toml`
//! from its ConfigMap starts `shlyuz serve` (only file paths and ports swapped for a temporary
//! directory), the kubelet's plaintext gRPC probes get answers while the mTLS port stays closed to
//! them, SIGTERM drains and exits 0, and the gateway directory ConfigMap passes validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shlyuz_gateway::directory::{Directory, TargetResolver};
use shlyuz_kit::pki::DevPki;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SHLYUZ: &str = env!("CARGO_BIN_EXE_shlyuz");
const PARTICIPANTS: [&str; 8] = [
    "gateway",
    "registry",
    "notify",
    "intake",
    "housing",
    "ops",
    "jauynger-portal",
    "sdu",
];

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `target` with its manifest's configuration, every listener on port 0; returns the
/// process and the health address it bound (what the kubelet would probe).
fn serve_with_manifest_config(target: &str, work: &Path) -> (Running, SocketAddr) {
    let pki = DevPki::ensure(&work.join("pki"), &PARTICIPANTS).expect("development PKI");
    let files = pki.participant(target).expect("participant files");
    let config = repo_file(&format!("k8s/base/{target}/shlyuz.toml"));
    let overrides = [
        format!("data_dir={}", work.display()),
        format!("tls.ca_cert={}", pki.ca_cert_path().display()),
        format!("tls.cert={}", files.tls_cert.display()),
        format!("tls.key={}", files.tls_key.display()),
        format!("tls.signing_key={}", files.signing_key.display()),
        format!("{target}.listen=127.0.0.1:0"),
        "telemetry.admin_listen=127.0.0.1:0".to_string(),
        "health.listen=127.0.0.1:0".to_string(),
        // The manifests' 5 s readiness grace would only slow the test down.
        "shutdown.readiness_grace_ms=0".to_string(),
    ];
    let mut command = Command::new(SHLYUZ);
    command.arg("--config").arg(&config);
    for value in &overrides {
        command.arg("--set").arg(value);
    }
    if target == "gateway" {
        let directory = work.join("directory");
        std::fs::create_dir_all(&directory).expect("directory folder");
        copy_directory_config_map(&pki, &directory);
        command.arg("--set").arg(format!(
            "gateway.directory_file={}",
            directory.join("gateway-directory.toml").display()
        ));
    }
    let listening = work.join("listening.json");
    let child = command
        .args(["serve", "--target", target, "--listening-file"])
        .arg(&listening)
        .env_remove("SHLYUZ_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shlyuz serve");
    let mut running = Running { child };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&listening) {
            let bound: serde_json::Value = serde_json::from_str(&text).expect("listening file");
            let health = bound["health"]
                .as_str()
                .and_then(|address| address.parse().ok())
                .expect("a health address");
            return (running, health);
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!("shlyuz serve --target {target} exited before it listened: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{target} did not listen in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lays out the ConfigMap shlyuz-gateway-directory as Kubernetes mounts it: the directory file
/// and `<id>.signing.pub` side by side.
fn copy_directory_config_map(pki: &DevPki, folder: &Path) {
    std::fs::copy(
        repo_file("k8s/base/gateway/gateway-directory.toml"),
        folder.join("gateway-directory.toml"),
    )
    .expect("copy directory");
    for participant in PARTICIPANTS {
        let files = pki.participant(participant).expect("participant files");
        std::fs::copy(
            &files.signing_public_key,
            folder.join(format!("{participant}.signing.pub")),
        )
        .expect("copy public key");
    }
}

async fn wait_for_status(running: &mut Running, health: SocketAddr, service: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!("shlyuz serve exited before it was ready: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "no health answer on {health} within 60 s"
        );
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{health}")).expect("endpoint");
        if let Ok(channel) = endpoint.connect().await {
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: service.to_string(),
                })
                .await;
            if let Ok(answer) = answer {
                return answer.into_inner().status;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn terminate(running: &mut Running) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(running.child.id().to_string())
        .status()
        .expect("send SIGTERM");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = running.child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "shlyuz serve did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn probes_answer_and_sigterm_exits_cleanly(target: &str) {
    let work = tempfile::tempdir().expect("temp dir");
    let (mut running, health) = serve_with_manifest_config(target, work.path());
    assert_eq!(
        wait_for_status(&mut running, health, "").await,
        ServingStatus::Serving as i32,
        "liveness of {target}"
    );
    assert_eq!(
        wait_for_status(&mut running, health, "readiness").await,
        ServingStatus::Serving as i32,
        "readiness of {target}"
    );
    let status = terminate(&mut running);
    assert!(status.success(), "{target} exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_manifest_config_serves_probes_and_drains_on_sigterm() {
    probes_answer_and_sigterm_exits_cleanly("registry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_manifest_config_and_directory_serve_probes_and_drain_on_sigterm() {
    probes_answer_and_sigterm_exits_cleanly("gateway").await;
}

#[test]
fn every_target_manifest_config_is_accepted() {
    // `migrate` loads and validates the whole file (an unknown key exits 2) without certificates.
    for target in ["gateway", "registry", "notify", "intake", "housing"] {
        let work = tempfile::tempdir().expect("temp dir");
        let output = Command::new(SHLYUZ)
            .arg("--config")
            .arg(repo_file(&format!("k8s/base/{target}/shlyuz.toml")))
            .arg("--set")
            .arg(format!("data_dir={}", work.path().display()))
            .args(["migrate", "--target", target])
            .env_remove("SHLYUZ_CONFIG")
            .output()
            .expect("run shlyuz migrate");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{target}: {stderr}");
    }
}

#[test]
fn every_service_manifest_config_calls_through_the_gateway_service() {
    // Without it a service runs but cannot reach another: intake builds no dossier, housing
    // reviews nobody and sends no offer, the registry's consent codes and notify's look-ups wait.
    for target in ["registry", "notify", "intake", "housing"] {
        let text = std::fs::read_to_string(repo_file(&format!("k8s/base/{target}/shlyuz.toml")))
            .expect("read the manifest config");
        let config: toml::Value = toml::from_str(&text).expect("valid TOML");
        let section = &config[target];
        assert_eq!(
            section.get("gateway_address").and_then(toml::Value::as_str),
            Some("gateway.shlyuz.svc.cluster.local:50051"),
            "{target}"
        );
        assert_eq!(
            section
                .get("gateway_server_name")
                .and_then(toml::Value::as_str),
            Some("gateway"),
            "{target}"
        );
    }
    // The gateway asks the registry's ConsentService directly for consent-requiring rules.
    let text = std::fs::read_to_string(repo_file("k8s/base/gateway/shlyuz.toml"))
        .expect("read the gateway manifest config");
    let config: toml::Value = toml::from_str(&text).expect("valid TOML");
    assert_eq!(
        config["gateway"]["targets"]
            .get("registry")
            .and_then(toml::Value::as_str),
        Some("registry:50052")
    );
}

#[test]
fn kubernetes_gateway_directory_is_valid() {
    let work = tempfile::tempdir().expect("temp dir");
    let pki = DevPki::ensure(&work.path().join("pki"), &PARTICIPANTS).expect("development PKI");
    let folder = work.path().join("directory");
    std::fs::create_dir_all(&folder).expect("directory folder");
    copy_directory_config_map(&pki, &folder);
    let directory = Directory::load(
        &folder.join("gateway-directory.toml"),
        &TargetResolver::none(),
    )
    .unwrap_or_else(|error| panic!("{}", error.problems().join("\n")));
    for participant in PARTICIPANTS {
        assert!(
            directory.participant(participant).is_some(),
            "participant {participant} missing from the Kubernetes directory"
        );
    }
}

/// What a directory decides: who takes part, which services are routed how, who may call what.
fn decisions(directory: &Directory) -> Vec<String> {
    let mut lines = Vec::new();
    for participant in directory.participants() {
        lines.push(format!(
            "participant {} accepts messages from {:?}",
            participant.id, participant.accept_messages_from
        ));
        for allowed in directory.allowed_methods(&participant.id) {
            lines.push(format!("{} may call {allowed:?}", participant.id));
        }
    }
    for route in directory.routes() {
        let mut idempotent: Vec<&String> = route.idempotent_methods.iter().collect();
        idempotent.sort();
        lines.push(format!(
            "route {} local={} personal_data={} methods={:?} idempotent={idempotent:?}",
            route.service,
            route.is_local(),
            route.personal_data,
            route.methods
        ));
    }
    lines.sort();
    lines
}

#[test]
fn kubernetes_directory_decides_what_the_default_directory_decides() {
    // The two files differ only in key paths and upstream addresses (Service DNS names instead of
    // `target:` names); participants, routes and rules must not drift apart.
    let work = tempfile::tempdir().expect("temp dir");
    let pki = DevPki::ensure(&work.path().join("pki"), &PARTICIPANTS).expect("development PKI");
    let folder = work.path().join("directory");
    std::fs::create_dir_all(&folder).expect("directory folder");
    copy_directory_config_map(&pki, &folder);
    let kubernetes = Directory::load(
        &folder.join("gateway-directory.toml"),
        &TargetResolver::none(),
    )
    .unwrap_or_else(|error| panic!("{}", error.problems().join("\n")));
    let targets = TargetResolver::new(
        ["registry", "notify", "intake", "housing"]
            .iter()
            .map(|name| (name.to_string(), "127.0.0.1:9".to_string()))
            .collect(),
    );
    let default = Directory::from_toml_str(
        shlyuz_gateway::directory::DEFAULT_DIRECTORY,
        work.path(),
        &targets,
    )
    .unwrap_or_else(|error| panic!("{}", error.problems().join("\n")));
    assert_eq!(decisions(&kubernetes), decisions(&default));
}

#[test]
fn bad_health_listen_address_is_named() {
    let output = Command::new(SHLYUZ)
        .args([
            "migrate",
            "--target",
            "intake",
            "--set",
            "health.listen=8081",
        ])
        .env_remove("SHLYUZ_CONFIG")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run shlyuz");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("health.listen"), "{stderr}");
}
