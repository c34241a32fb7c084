//! `shlyuz up` as a newcomer runs it: the real binary, real sockets, mutual TLS with the paths
//! from `endpoints.json`, and a clean exit on SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shlyuz::up::Endpoints;
use shlyuz_kit::client::{ClientSettings, connect};
use shlyuz_kit::server::TlsFiles;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const SHLYUZ: &str = env!("CARGO_BIN_EXE_shlyuz");

/// Every port ephemeral, so tests run side by side.
fn ephemeral_port_flags() -> Vec<String> {
    let mut flags = Vec::new();
    for section in ["gateway", "registry", "notify", "intake", "housing"] {
        flags.push("--set".to_string());
        flags.push(format!("{section}.listen=127.0.0.1:0"));
    }
    flags.push("--set".to_string());
    flags.push("telemetry.admin_listen=127.0.0.1:0".to_string());
    flags
}

struct RunningUp {
    child: Child,
}

impl Drop for RunningUp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_up(data_dir: &Path) -> RunningUp {
    start_up_with(data_dir, &[])
}

fn start_up_with(data_dir: &Path, extra: &[&str]) -> RunningUp {
    let child = Command::new(SHLYUZ)
        .arg("up")
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--log-format")
        .arg("json")
        .args(ephemeral_port_flags())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shlyuz up");
    RunningUp { child }
}

fn wait_for_endpoints(running: &mut RunningUp, data_dir: &Path) -> Endpoints {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(endpoints) = Endpoints::read(data_dir) {
            return endpoints;
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!("shlyuz up exited before it was ready: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "endpoints.json did not appear within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client_settings(endpoints: &Endpoints, address: &str, participant: &str) -> ClientSettings {
    ClientSettings {
        address: address.to_string(),
        tls: Some(endpoints.tls_files(participant).expect("participant files")),
        server_name: "localhost".to_string(),
        connect_timeout: Duration::from_secs(5),
    }
}

fn terminate(running: &mut RunningUp) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(running.child.id().to_string())
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = running.child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "shlyuz up did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_is_serving_over_mtls_and_sigterm_exits_cleanly() {
    shlyuz_kit::install_crypto_provider();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut running = start_up(data_dir.path());
    let endpoints = wait_for_endpoints(&mut running, data_dir.path());

    assert_eq!(endpoints.targets.len(), 5);
    for participant in [
        "gateway",
        "registry",
        "notify",
        "intake",
        "housing",
        "jauynger-portal",
        "sdu",
        "ops",
    ] {
        let files = endpoints
            .participants
            .get(participant)
            .expect("participant in endpoints.json");
        for path in [
            &files.tls_cert,
            &files.tls_key,
            &files.signing_key,
            &files.signing_public_key,
        ] {
            assert!(path.is_file(), "{} is missing", path.display());
        }
    }

    for (name, address) in &endpoints.targets {
        let channel = connect(&client_settings(&endpoints, address, "ops"))
            .await
            .unwrap_or_else(|error| panic!("mTLS connection to {name}: {error:#}"));
        let mut health = HealthClient::new(channel);
        for service in ["", "readiness"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.to_string(),
                })
                .await
                .unwrap_or_else(|error| panic!("{name} health {service:?}: {error}"))
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{name} {service:?}");
        }
    }

    // Reflection works, so grpcurl can list services without proto files.
    let channel = connect(&client_settings(
        &endpoints,
        &endpoints.gateway,
        "jauynger-portal",
    ))
    .await
    .expect("connect to gateway");
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let first = responses
        .next()
        .await
        .expect("one response")
        .expect("ok response");
    let Some(MessageResponse::ListServicesResponse(listed)) = first.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = listed
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );

    let status = terminate(&mut running);
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        !data_dir.path().join("endpoints.json").exists(),
        "endpoints.json must not outlive the process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_trusted_certificate_is_refused() {
    shlyuz_kit::install_crypto_provider();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut running = start_up(data_dir.path());
    let endpoints = wait_for_endpoints(&mut running, data_dir.path());

    let (cert_pem, key_pem) =
        shlyuz_kit::pki::issue_untrusted_leaf("intruder").expect("untrusted leaf");
    let cert_path = data_dir.path().join("intruder.pem");
    let key_path = data_dir.path().join("intruder.key");
    std::fs::write(&cert_path, cert_pem).expect("write cert");
    std::fs::write(&key_path, key_pem).expect("write key");
    let untrusted = ClientSettings {
        address: endpoints.gateway.clone(),
        tls: Some(TlsFiles {
            ca_cert: endpoints.ca_cert.clone(),
            cert: cert_path,
            key: key_path,
        }),
        server_name: "localhost".to_string(),
        connect_timeout: Duration::from_secs(5),
    };
    let refused = async {
        let channel = connect(&untrusted).await?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map_err(anyhow::Error::from)
    }
    .await;
    assert!(
        refused.is_err(),
        "a certificate from another CA must not be accepted"
    );
    drop(running);
}

fn run_with_config(arguments: &[&str], config_text: Option<&str>) -> (i32, String) {
    let directory = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(SHLYUZ);
    if let Some(text) = config_text {
        let config_path = directory.path().join("shlyuz.toml");
        std::fs::write(&config_path, text).expect("write config");
        command.arg("--config").arg(&config_path);
    }
    let output = command
        .args(arguments)
        .current_dir(directory.path())
        .env_remove("SHLYUZ_CONFIG")
        .output()
        .expect("run shlyuz");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (output.status.code().unwrap_or(-1), stderr)
}

#[test]
fn unknown_config_key_stops_start_up_naming_it() {
    let (code, stderr) = run_with_config(
        &["serve", "--target", "registry"],
        Some("[registry]\nlisten_address = \"127.0.0.1:1\"\n"),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("listen_address"), "{stderr}");
    assert!(stderr.contains("registry"), "{stderr}");
}

#[test]
fn bad_port_stops_start_up_naming_the_key() {
    let (code, stderr) = run_with_config(&["up", "--set", "gateway.listen=127.0.0.1:99999"], None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("gateway.listen"), "{stderr}");
}

#[test]
fn missing_certificate_stops_serve_naming_the_key() {
    let (code, stderr) = run_with_config(
        &["serve", "--target", "gateway"],
        Some(
            "[tls]\nca_cert = \"/nonexistent/ca.pem\"\ncert = \"/nonexistent/gateway.pem\"\nkey = \"/nonexistent/gateway.key\"\n",
        ),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("tls.cert"), "{stderr}");
    assert!(stderr.contains("/nonexistent/gateway.pem"), "{stderr}");
}

#[test]
fn a_service_served_alone_needs_the_gateway_address() {
    let (code, stderr) = run_with_config(
        &["serve", "--target", "intake"],
        Some("[tls]\nmode = \"plaintext\"\n"),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("intake.gateway_address"), "{stderr}");
}

#[test]
fn bad_environment_value_is_named() {
    let output = Command::new(SHLYUZ)
        .args(["migrate", "--target", "intake"])
        .env("SHLYUZ__INTAKE__DATABASE_URL", "mysql://nowhere/db")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run shlyuz");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("intake.database_url"), "{stderr}");
}

/// `shlyuz up` wires notify to the gateway: a notice naming only an IIN reaches the phone the
/// registry's synthetic population holds for that person, and the SMS lands in `notify-sms.log`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_finds_the_phone_through_the_gateway_and_logs_the_sms() {
    use shlyuz_proto::notify::v1 as pb;
    use sqlx::Row;

    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut running = start_up(data_dir.path());
    let endpoints = wait_for_endpoints(&mut running, data_dir.path());

    // A person of the generated population with a phone, read as an operator would.
    let registry = shlyuz_kit::db::Database::connect(
        &shlyuz_kit::db::default_sqlite_url(data_dir.path(), "registry"),
        1,
    )
    .await
    .expect("registry database");
    let row = sqlx::query("SELECT iin, phone_number FROM phones ORDER BY iin LIMIT 1")
        .fetch_one(registry.pool())
        .await
        .expect("a person with a phone");
    let iin: String = row.try_get("iin").expect("iin");
    let phone: String = row.try_get("phone_number").expect("phone");
    registry.close().await;

    let channel = connect(&client_settings(&endpoints, &endpoints.gateway, "housing"))
        .await
        .expect("connect to gateway");
    let key =
        shlyuz_kit::pki::SigningKey::from_pem_file(&endpoints.participants["housing"].signing_key)
            .expect("housing signing key");
    let envelope = shlyuz_kit::envelope::EnvelopeBuilder {
        purpose: "CITIZEN_NOTIFICATION".to_string(),
        subject_iin: iin.clone(),
        ..Default::default()
    };
    let mut client = pb::notification_service_client::NotificationServiceClient::new(channel);
    let sent = client
        .send_notification(
            envelope.signed_request(
                &key,
                "/shlyuz.notify.v1.NotificationService/SendNotification",
                pb::SendNotificationRequest {
                    recipient_iin: iin.clone(),
                    channels: vec![pb::Channel::Sms as i32],
                    template_id: "jauynger.status.accepted".to_string(),
                    parameters: [("application_number".to_string(), "J-UP-1".to_string())]
                        .into_iter()
                        .collect(),
                    language: pb::Language::Kk as i32,
                    idempotency_key: "up-test-1".to_string(),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("send notification")
        .into_inner()
        .notification
        .expect("notification");

    let log = data_dir.path().join("notify-sms.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|line| line.contains(&sent.id)) {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no SMS for {} in {}",
            sent.id,
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let logged: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(logged["to"], phone.as_str());
    assert!(
        logged["text"]
            .as_str()
            .unwrap_or_default()
            .contains("\"Жұмысқа алынды\""),
        "{line}"
    );
    let status = terminate(&mut running);
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// Runs `shlyuz demo` against the `up` of `data_dir`; returns its exit code, stdout and stderr.
fn run_demo(data_dir: &Path) -> (i32, String, String) {
    let output = Command::new(SHLYUZ)
        .arg("demo")
        .arg("--endpoints")
        .arg(data_dir.join("endpoints.json"))
        .arg("--log-format")
        .arg("text")
        .output()
        .expect("run shlyuz demo");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_walks_every_seed_through_the_gateway_and_refuses_a_second_run() {
    shlyuz_kit::install_crypto_provider();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut running = start_up_with(data_dir.path(), &["--test-clock"]);
    let endpoints = wait_for_endpoints(&mut running, data_dir.path());
    assert_eq!(
        endpoints.test_clock.as_deref(),
        endpoints.targets.get("housing").map(String::as_str),
        "the test clock is served by housing"
    );

    let (code, stdout, stderr) = run_demo(data_dir.path());
    assert_eq!(code, 0, "demo failed:\n{stdout}\n{stderr}");
    for expected in [
        "[23/23]",
        "checked by intake with notify",
        "ACTIVE for intake, MILITARY_RECRUITMENT",
        "candidate status Completed",
        "Петров Игорь Сергеевич: REJECTED",
        "the candidate sees only REJECTED",
        "Тоқаев Ғалым Бауыржанұлы: lease concluded",
        "refused with 6522",
        "Мұқанов Асқар Жандосұлы: offer",
        "EXPIRED, deemed refused",
        "removed Иванов Алексей Николаевич: PermanentUseInLocality",
        "kept Қасымов Ерлан Серікұлы: Active",
        "intact",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    assert!(!stdout.contains("FAILED"), "{stdout}");

    // What the demo printed is what the system holds: housing's clock really moved, and the
    // offer SMS really went out to the three phones.
    let housing = connect(&client_settings(
        &endpoints,
        endpoints.test_clock.as_deref().expect("test clock"),
        "ops",
    ))
    .await
    .expect("connect to housing");
    let clock =
        shlyuz_proto::testing::v1::test_clock_service_client::TestClockServiceClient::new(housing)
            .get_test_clock(shlyuz_proto::testing::v1::GetTestClockRequest {})
            .await
            .expect("read the test clock")
            .into_inner();
    assert_eq!(clock.offset_seconds, 49 * 3_600);
    let sms_log = std::fs::read_to_string(endpoints.sms_log.as_ref().expect("sms log"))
        .expect("read the SMS log");
    for phone in ["+77015550113", "+77015550229", "+77015550233"] {
        assert!(
            sms_log
                .lines()
                .any(|line| line.contains(phone) && line.contains("6521")),
            "no offer SMS to {phone}"
        );
    }

    // A second run finds its people on the register and stops before changing anything.
    let (code, stdout, stderr) = run_demo(data_dir.path());
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("[ 1/23]") && stdout.contains("FAILED"),
        "{stdout}"
    );
    assert!(stderr.contains("fresh --data-dir"), "{stderr}");
    assert_eq!(terminate(&mut running).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_clock_exists_only_with_the_flag_and_only_for_ops() {
    use shlyuz_proto::testing::v1::AdvanceTestClockRequest;
    use shlyuz_proto::testing::v1::test_clock_service_client::TestClockServiceClient;
    shlyuz_kit::install_crypto_provider();

    // Without --test-clock: nothing in endpoints.json, housing does not serve it, and the demo
    // says how to start `up` instead of running half a scenario.
    let plain_dir = tempfile::tempdir().expect("temp dir");
    let mut plain = start_up(plain_dir.path());
    let endpoints = wait_for_endpoints(&mut plain, plain_dir.path());
    assert_eq!(endpoints.test_clock, None);
    let housing = connect(&client_settings(
        &endpoints,
        &endpoints.targets["housing"],
        "ops",
    ))
    .await
    .expect("connect to housing");
    let status = TestClockServiceClient::new(housing)
        .advance_test_clock(AdvanceTestClockRequest { seconds: 60 })
        .await
        .expect_err("no test clock without the flag");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let (code, stdout, stderr) = run_demo(plain_dir.path());
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("--test-clock"), "{stderr}");
    assert_eq!(terminate(&mut plain).code(), Some(0));

    // With it: only ops may move the clock, only forward, at most a year at a time.
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut running = start_up_with(data_dir.path(), &["--test-clock"]);
    let endpoints = wait_for_endpoints(&mut running, data_dir.path());
    let address = endpoints.test_clock.clone().expect("test clock address");
    let as_portal = connect(&client_settings(&endpoints, &address, "jauynger-portal"))
        .await
        .expect("connect as the portal");
    let status = TestClockServiceClient::new(as_portal)
        .advance_test_clock(AdvanceTestClockRequest { seconds: 60 })
        .await
        .expect_err("the portal may not move time");
    let summary = shlyuz_kit::error::summarize_status(&status);
    assert_eq!(
        (summary.code, summary.reason.as_str()),
        (tonic::Code::PermissionDenied, "CLOCK_OPERATOR_ONLY")
    );
    let mut as_ops = TestClockServiceClient::new(
        connect(&client_settings(&endpoints, &address, "ops"))
            .await
            .expect("connect as ops"),
    );
    for seconds in [0, -3_600, 366 * 86_400] {
        let status = as_ops
            .advance_test_clock(AdvanceTestClockRequest { seconds })
            .await
            .expect_err("out of range");
        let summary = shlyuz_kit::error::summarize_status(&status);
        assert_eq!(summary.code, tonic::Code::InvalidArgument, "{seconds}");
        assert_eq!(summary.fields, ["seconds"], "{seconds}");
    }
    let moved = as_ops
        .advance_test_clock(AdvanceTestClockRequest { seconds: 7_200 })
        .await
        .expect("ops moves the clock")
        .into_inner();
    assert_eq!(moved.offset_seconds, 7_200);
    let ahead = moved.now.expect("now").seconds - time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((7_100..=7_200).contains(&ahead), "{ahead}");
    assert_eq!(terminate(&mut running).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_refuse_calls_that_go_around_the_gateway() {
    use shlyuz_proto::{housing, intake, notify, registry};
    shlyuz_kit::install_crypto_provider();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut running = start_up(data_dir.path());
    let endpoints = wait_for_endpoints(&mut running, data_dir.path());
    let channel = async |target: &str, participant: &str| {
        connect(&client_settings(
            &endpoints,
            &endpoints.targets[target],
            participant,
        ))
        .await
        .expect("connect to the target")
    };
    // A participant with a valid certificate that claims, in metadata, to be the gateway's sender.
    fn forged<M>(message: M) -> tonic::Request<M> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("x-shlyuz-sender", "sdu".parse().expect("ascii"));
        request
    }
    let refusals = [
        registry::v1::person_registry_service_client::PersonRegistryServiceClient::new(
            channel("registry", "jauynger-portal").await,
        )
        .get_person(forged(registry::v1::GetPersonRequest {
            iin: "980512391010".into(),
        }))
        .await
        .map(|_| ())
        .expect_err("registry directly"),
        notify::v1::notification_service_client::NotificationServiceClient::new(
            channel("notify", "intake").await,
        )
        .get_notification(forged(notify::v1::GetNotificationRequest::default()))
        .await
        .map(|_| ())
        .expect_err("notify directly"),
        intake::v1::vacancy_service_client::VacancyServiceClient::new(
            channel("intake", "sdu").await,
        )
        .list_vacancies(forged(intake::v1::ListVacanciesRequest::default()))
        .await
        .map(|_| ())
        .expect_err("intake directly"),
        housing::v1::housing_register_service_client::HousingRegisterServiceClient::new(
            channel("housing", "ops").await,
        )
        .list_registrants(forged(housing::v1::ListRegistrantsRequest::default()))
        .await
        .map(|_| ())
        .expect_err("housing directly"),
    ];
    for status in refusals {
        let summary = shlyuz_kit::error::summarize_status(&status);
        assert_eq!(
            (summary.code, summary.reason.as_str()),
            (tonic::Code::PermissionDenied, "CALLER_NOT_ALLOWED"),
            "{status:?}"
        );
        assert!(
            status.message().contains("through the gateway"),
            "{status:?}"
        );
    }

    // The gateway itself still reaches the services (here: the consent look-up it makes on the
    // registry directly), and everyone may still probe health.
    let consent = registry::v1::consent_service_client::ConsentServiceClient::new(
        channel("registry", "gateway").await,
    )
    .get_consent(registry::v1::GetConsentRequest {
        consent_id: "0190f5a2-7c1e-7000-8000-0000000000c1".into(),
    })
    .await;
    if let Err(status) = consent {
        assert_ne!(
            shlyuz_kit::error::summarize_status(&status).reason,
            "CALLER_NOT_ALLOWED",
            "{status:?}"
        );
    }
    let health = HealthClient::new(channel("registry", "jauynger-portal").await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is open to every participant")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    assert_eq!(terminate(&mut running).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_otp_reaches_the_citizen_through_notify_and_confirms_the_consent() {
    use shlyuz_kit::envelope::EnvelopeBuilder;
    use shlyuz_kit::pki::SigningKey;
    use shlyuz_proto::registry::v1 as registry;
    shlyuz_kit::install_crypto_provider();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut running = start_up(data_dir.path());
    let endpoints = wait_for_endpoints(&mut running, data_dir.path());
    let portal_key =
        SigningKey::from_pem_file(&endpoints.participants["jauynger-portal"].signing_key)
            .expect("portal signing key");
    let subject = "980512391010";
    let envelope = || EnvelopeBuilder {
        purpose: "PERSONAL_DATA_CONSENT".to_string(),
        subject_iin: subject.to_string(),
        ..EnvelopeBuilder::default()
    };
    let mut gateway_settings = client_settings(&endpoints, &endpoints.gateway, "jauynger-portal");
    gateway_settings.server_name = "gateway".to_string();
    let mut consents = registry::consent_service_client::ConsentServiceClient::new(
        connect(&gateway_settings)
            .await
            .expect("connect to the gateway"),
    );
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000;
    let pending = consents
        .request_consent(envelope().signed_request(
            &portal_key,
            "/shlyuz.registry.v1.ConsentService/RequestConsent",
            registry::RequestConsentRequest {
                subject_iin: subject.to_string(),
                participant: "intake".to_string(),
                purpose: "MILITARY_RECRUITMENT".to_string(),
                scopes: vec!["shlyuz.registry.v1.PersonRegistryService".to_string()],
                expire_time_ms: now_ms + 3_600_000,
            },
        ))
        .await
        .expect("the portal requests a consent")
        .into_inner()
        .consent
        .expect("consent");
    assert_eq!(pending.state, registry::ConsentState::Pending as i32);

    // The registry has notify's OtpService issue the code, sent to the phone of the mobile citizens
    // database, in both languages.
    let sms_log = endpoints.sms_log.clone().expect("sms log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let log = std::fs::read_to_string(&sms_log).unwrap_or_default();
        let found = log
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|sms| sms["to"] == "+77015550010")
            .find_map(|sms| sms["text"].as_str().map(str::to_string));
        if let Some(text) = found {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no consent SMS in {}",
            sms_log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        text.contains("Растау коды") && text.contains("Код подтверждения"),
        "{text}"
    );
    assert!(
        text.contains("intake") && text.contains("MILITARY_RECRUITMENT"),
        "{text}"
    );
    let otp: String = text
        .split(|character: char| !character.is_ascii_digit())
        .find(|part| part.len() == 6)
        .expect("a six-digit code")
        .to_string();

    let active = consents
        .confirm_consent(envelope().signed_request(
            &portal_key,
            "/shlyuz.registry.v1.ConsentService/ConfirmConsent",
            registry::ConfirmConsentRequest {
                consent_id: pending.consent_id.clone(),
                otp,
            },
        ))
        .await
        .expect("the citizen's code confirms the consent")
        .into_inner()
        .consent
        .expect("consent");
    assert_eq!(active.state, registry::ConsentState::Active as i32);

    // notify keeps the code; the registry keeps only notify's OTP id, and no outbox of codes.
    let database = shlyuz_kit::db::Database::connect(
        &shlyuz_kit::db::default_sqlite_url(data_dir.path(), "registry"),
        1,
    )
    .await
    .expect("open the registry database");
    use sqlx::Row as _;
    let otp_id: String = sqlx::query("SELECT otp_id FROM consents WHERE consent_id = $1")
        .bind(pending.consent_id.clone())
        .fetch_one(database.pool())
        .await
        .and_then(|row| row.try_get("otp_id"))
        .expect("the consent row");
    assert!(uuid::Uuid::parse_str(&otp_id).is_ok(), "{otp_id:?}");
    let outboxes: i64 = sqlx::query(
        "SELECT COUNT(*) AS tables FROM sqlite_master WHERE type = 'table' AND name = 'sms_outbox'",
    )
    .fetch_one(database.pool())
    .await
    .and_then(|row| row.try_get("tables"))
    .expect("schema");
    assert_eq!(outboxes, 0);
    database.close().await;
    assert_eq!(terminate(&mut running).code(), Some(0));
}
