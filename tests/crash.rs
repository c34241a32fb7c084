//! `shlyuz up` killed with SIGKILL at several moments while SMS notices run through the gateway,
//! sync and as async messages, and restarted each time on the same data (issue 15), on SQLite and
//! on PostgreSQL: every notice the gateway accepted is sent exactly once, every accepted async
//! message ends DELIVERED within its route's claim after the last restart, no SMS goes out that
//! nobody asked for, and the message log still verifies.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;
use shlyuz::up::Endpoints;
use shlyuz_kit::client::{ClientSettings, connect};
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::pki::SigningKey;
use shlyuz_proto::gateway::v1::async_channel_service_client::AsyncChannelServiceClient;
use shlyuz_proto::gateway::v1::message_log_service_client::MessageLogServiceClient;
use shlyuz_proto::gateway::v1::send_message_request::Target;
use shlyuz_proto::gateway::v1::{
    DeliveryState, GetMessageStatusRequest, MessageStatus, SendMessageRequest, ServiceTarget,
    VerifyChainRequest,
};
use shlyuz_proto::notify::v1 as pb;

const SHLYUZ: &str = env!("CARGO_BIN_EXE_shlyuz");
const SEND_PATH: &str = "/shlyuz.notify.v1.NotificationService/SendNotification";
const TARGETS: [&str; 5] = ["gateway", "registry", "notify", "intake", "housing"];
/// Notices sent during the run.
const NOTICES: usize = 120;
/// Of those, every `ASYNC_EVERY`-th goes as an async message to notify's `SendNotification`.
const ASYNC_EVERY: usize = 3;
const ASYNC_SEND_PATH: &str = "/shlyuz.gateway.v1.AsyncChannelService/SendMessage";
/// The async claim margin of the run (`gateway.async_lease_margin_ms`).
const LEASE_MARGIN_MS: u64 = 1_000;
/// Notify's route timeout in the default directory.
const NOTIFY_TIMEOUT_MS: u64 = 5_000;
/// When the process is killed, after each start: fixed, so every run tries the same moments.
const KILL_AFTER_MS: [u64; 4] = [700, 1_300, 450, 1_000];

/// One `shlyuz up` process; killed outright when dropped.
struct Up {
    child: Child,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stack's data: its directory, and its PostgreSQL databases when it runs on PostgreSQL.
struct Stack {
    data_dir: tempfile::TempDir,
    /// `(server url, database name)` per target.
    postgres: Vec<(String, String)>,
}

impl Stack {
    async fn new(on_postgres: bool) -> Option<Stack> {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut postgres = Vec::new();
        if on_postgres {
            let server = match std::env::var("SHLYUZ_TEST_POSTGRES_URL") {
                Ok(url) if !url.is_empty() => url,
                _ => {
                    assert_ne!(
                        std::env::var("SHLYUZ_REQUIRE_POSTGRES").as_deref(),
                        Ok("1"),
                        "SHLYUZ_REQUIRE_POSTGRES=1 but SHLYUZ_TEST_POSTGRES_URL is not set"
                    );
                    return None;
                }
            };
            let admin = shlyuz_kit::db::Database::connect(&server, 1)
                .await
                .expect("test PostgreSQL");
            for _ in TARGETS {
                let name = format!("shlyuz_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(admin.pool())
                    .await
                    .expect("create database");
                postgres.push((server.clone(), name));
            }
            admin.close().await;
        }
        Some(Stack { data_dir, postgres })
    }

    fn path(&self) -> &Path {
        self.data_dir.path()
    }

    fn sms_log(&self) -> PathBuf {
        self.path().join("notify-sms.log")
    }

    /// Starts `up` and waits for the endpoints it writes once every target serves.
    fn start(&self) -> (Up, Endpoints) {
        // A killed run leaves its endpoints behind: wait for the new run's, not the old ones.
        let _ = std::fs::remove_file(self.path().join("endpoints.json"));
        let mut command = Command::new(SHLYUZ);
        command
            .arg("up")
            .arg("--data-dir")
            .arg(self.path())
            .arg("--log-format")
            .arg("json")
            // A killed worker's claims lapse in 2 s instead of a minute, so the test is short.
            .args(["--set", "notify.sms.delivery.lease_ms=2000"])
            // An async delivery killed in flight is due again after notify's 5 s route timeout
            // plus this margin (not after housing's 600 s review).
            .args([
                "--set",
                &format!("gateway.async_lease_margin_ms={LEASE_MARGIN_MS}"),
            ])
            .args(["--set", "gateway.async_retry_initial_ms=100"])
            .args(["--set", "gateway.async_retry_max_ms=500"])
            .args(["--set", "telemetry.admin_listen=127.0.0.1:0"]);
        for (index, target) in TARGETS.iter().enumerate() {
            command.args(["--set", &format!("{target}.listen=127.0.0.1:0")]);
            if let Some((server, name)) = self.postgres.get(index) {
                let url = shlyuz_kit::db::testing::replace_database_name(server, name);
                command.args(["--set", &format!("{target}.database_url={url}")]);
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn shlyuz up");
        let mut up = Up { child };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(endpoints) = Endpoints::read(self.path()) {
                return (up, endpoints);
            }
            if let Ok(Some(status)) = up.child.try_wait() {
                panic!("shlyuz up exited before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "shlyuz up not ready in 120 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn drop_databases(self) {
        let Some((server, _)) = self.postgres.first() else {
            return;
        };
        let admin = shlyuz_kit::db::Database::connect(server, 1)
            .await
            .expect("test PostgreSQL");
        for (_, name) in &self.postgres {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(admin.pool())
                .await;
        }
        admin.close().await;
    }
}

fn settings(endpoints: &Endpoints, participant: &str) -> ClientSettings {
    ClientSettings {
        address: endpoints.gateway.clone(),
        tls: Some(endpoints.tls_files(participant).expect("participant files")),
        server_name: "localhost".to_string(),
        connect_timeout: Duration::from_secs(2),
    }
}

/// Sends notice `index` until the gateway accepts it, through every crash and restart: the
/// same idempotency key each time, so notify keeps one notice whatever was lost in flight.
async fn send_until_accepted(data_dir: &Path, index: usize) -> String {
    let request = notice_request(index);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(Instant::now() < deadline, "notice {index} never accepted");
        let Ok(endpoints) = Endpoints::read(data_dir) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let attempt = async {
            let channel = connect(&settings(&endpoints, "housing")).await.ok()?;
            let key = SigningKey::from_pem_file(&endpoints.participants["housing"].signing_key)
                .expect("housing signing key");
            let envelope = EnvelopeBuilder {
                purpose: "CITIZEN_NOTIFICATION".to_string(),
                subject_iin: "900101300017".to_string(),
                ..EnvelopeBuilder::default()
            };
            let mut client =
                pb::notification_service_client::NotificationServiceClient::new(channel);
            let mut call = envelope.signed_request(&key, SEND_PATH, request.clone());
            call.set_timeout(Duration::from_secs(5));
            let answer = client.send_notification(call).await.ok()?;
            answer.into_inner().notification.map(|notice| notice.id)
        };
        if let Some(id) = attempt.await {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `SendNotification` request of notice `index`.
fn notice_request(index: usize) -> pb::SendNotificationRequest {
    pb::SendNotificationRequest {
        recipient_phone: format!("+7701555{:04}", index % 10),
        channels: vec![pb::Channel::Sms as i32],
        template_id: "jauynger.status.accepted".to_string(),
        parameters: [("application_number".to_string(), format!("J-CRASH-{index}"))]
            .into_iter()
            .collect(),
        language: pb::Language::Kk as i32,
        idempotency_key: format!("crash-{index}"),
        ..Default::default()
    }
}

/// Sends notice `index` as an async message with id `message_id` until the gateway accepts it,
/// through every crash and restart: the same message id each time, so the gateway keeps one.
async fn send_async_until_accepted(data_dir: &Path, index: usize, message_id: &str) {
    let request = SendMessageRequest {
        target: Some(Target::Service(ServiceTarget {
            service: "shlyuz.notify.v1.NotificationService".to_string(),
            method: "SendNotification".to_string(),
        })),
        payload: notice_request(index).encode_to_vec(),
        ..SendMessageRequest::default()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(
            Instant::now() < deadline,
            "async notice {index} never accepted"
        );
        let Ok(endpoints) = Endpoints::read(data_dir) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let attempt = async {
            let channel = connect(&settings(&endpoints, "housing")).await.ok()?;
            let key = SigningKey::from_pem_file(&endpoints.participants["housing"].signing_key)
                .expect("housing signing key");
            let envelope = EnvelopeBuilder {
                message_id: message_id.to_string(),
                purpose: "CITIZEN_NOTIFICATION".to_string(),
                subject_iin: "900101300017".to_string(),
                ..EnvelopeBuilder::default()
            };
            let mut call = envelope.signed_request(&key, ASYNC_SEND_PATH, request.clone());
            call.set_timeout(Duration::from_secs(5));
            AsyncChannelServiceClient::new(channel)
                .send_message(call)
                .await
                .ok()
        };
        if attempt.await.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status of housing's async message `message_id`.
async fn async_status(endpoints: &Endpoints, message_id: &str) -> MessageStatus {
    let channel = connect(&settings(endpoints, "housing"))
        .await
        .expect("gateway");
    let key = SigningKey::from_pem_file(&endpoints.participants["housing"].signing_key)
        .expect("housing signing key");
    let call = EnvelopeBuilder::default().signed_request(
        &key,
        "/shlyuz.gateway.v1.AsyncChannelService/GetMessageStatus",
        GetMessageStatusRequest {
            message_id: message_id.to_string(),
        },
    );
    AsyncChannelServiceClient::new(channel)
        .get_message_status(call)
        .await
        .expect("message status")
        .into_inner()
        .status
        .expect("status")
}

/// How many SMS the log holds per notification id.
fn sms_per_notification(log: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let Ok(sms) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(id) = sms["notification_id"].as_str() {
            *counts.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

async fn killed_and_restarted(on_postgres: bool) {
    shlyuz_kit::install_crypto_provider();
    let Some(stack) = Stack::new(on_postgres).await else {
        return;
    };
    let (mut up, _) = stack.start();
    let data_dir = stack.path().to_path_buf();
    let workload = tokio::spawn(async move {
        let mut accepted = Vec::with_capacity(NOTICES);
        let mut async_messages = Vec::new();
        for index in 0..NOTICES {
            if index % ASYNC_EVERY == 0 {
                let message_id = uuid::Uuid::now_v7().to_string();
                send_async_until_accepted(&data_dir, index, &message_id).await;
                async_messages.push((index, message_id));
            } else {
                accepted.push(send_until_accepted(&data_dir, index).await);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (accepted, async_messages)
    });
    for kill_after in KILL_AFTER_MS {
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        up.child.kill().expect("SIGKILL");
        let _ = up.child.wait();
        let started = Instant::now();
        let (restarted, _) = stack.start();
        up = restarted;
        eprintln!("restarted in {:?}", started.elapsed());
    }
    let last_restart = Instant::now();
    let (mut accepted, async_messages) = workload.await.expect("workload");
    let endpoints = Endpoints::read(stack.path()).expect("endpoints");

    // Every accepted async message ends DELIVERED — one a killed run was delivering once its
    // claim (notify's timeout plus the margin) lapses, plus a retry — with the notice it created.
    let bound =
        Duration::from_millis(NOTIFY_TIMEOUT_MS + LEASE_MARGIN_MS + 500) + Duration::from_secs(10);
    for (index, message_id) in &async_messages {
        let status = loop {
            let status = async_status(&endpoints, message_id).await;
            if status.state != DeliveryState::OnDelivery as i32 {
                break status;
            }
            assert!(
                last_restart.elapsed() < bound,
                "async message {message_id} still on delivery {:?} after the last restart: {status:?}",
                last_restart.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            status.state,
            DeliveryState::Delivered as i32,
            "{message_id}: {status:?}"
        );
        // The notice it created, by its idempotency key (housing has acknowledged the result,
        // so the gateway keeps no response): asking again returns the same notice.
        accepted.push(send_until_accepted(stack.path(), *index).await);
    }
    let accepted_ids: HashSet<&str> = accepted.iter().map(String::as_str).collect();
    assert_eq!(
        accepted_ids.len(),
        NOTICES,
        "one notice per idempotency key"
    );

    // Every accepted notice goes out — the ones a killed run had claimed once their claim lapses.
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let counts = sms_per_notification(&stack.sms_log());
        if accepted_ids.iter().all(|id| counts.contains_key(*id)) {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {NOTICES} notices sent 60 s after the last restart",
            accepted_ids
                .iter()
                .filter(|id| counts.contains_key(**id))
                .count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let repeated: Vec<(&String, &usize)> = counts.iter().filter(|(_, sent)| **sent > 1).collect();
    assert!(repeated.is_empty(), "sent more than once: {repeated:?}");
    let unasked: Vec<&String> = counts
        .keys()
        .filter(|id| !accepted_ids.contains(id.as_str()))
        .collect();
    assert!(
        unasked.is_empty(),
        "SMS nobody's accepted notice asked for: {unasked:?}"
    );

    let channel = connect(&settings(&endpoints, "ops"))
        .await
        .expect("gateway");
    let verified = MessageLogServiceClient::new(channel)
        .verify_chain(VerifyChainRequest::default())
        .await
        .expect("verify chain")
        .into_inner();
    assert!(verified.intact, "{verified:?}");
    drop(up);
    stack.drop_databases().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_are_sent_exactly_once_across_kills_on_sqlite() {
    killed_and_restarted(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_are_sent_exactly_once_across_kills_on_postgres() {
    killed_and_restarted(true).await;
}
