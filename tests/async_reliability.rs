//! The async channel survives what production throws at it, with the gateway as its own process
//! (`shlyuz serve --target gateway`): killed without a graceful shutdown in the middle of delivering
//! 1,000 messages, and an upstream that is down for a while. Runs on SQLite, and on PostgreSQL when
//! `SHLYUZ_TEST_POSTGRES_URL` is set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use shlyuz::bench::process::{
    CLIENT_PARTICIPANT, GatewayProcess, GatewayProcessOptions, PARTICIPANTS, PURPOSE, tls_files,
    write_echo_directory,
};
use shlyuz_gateway::echo::Echo;
use shlyuz_gateway::envelope::EnvelopeBuilder;
use shlyuz_kit::client::{ClientSettings, connect};
use shlyuz_kit::pki::{DevPki, SigningKey};
use shlyuz_kit::server::{GrpcServer, ServerSettings, Transport};
use shlyuz_kit::shutdown::{ShutdownTrigger, shutdown_channel};
use shlyuz_kit::telemetry::MetricsRegistry;
use shlyuz_proto::echo::v1::EchoRequest;
use shlyuz_proto::gateway::v1::async_channel_service_client::AsyncChannelServiceClient;
use shlyuz_proto::gateway::v1::send_message_request::Target;
use shlyuz_proto::gateway::v1::{
    DeliveryState, GetMessageStatusRequest, MessageStatus, SendMessageRequest, ServiceTarget,
};
use tonic::transport::Channel;

const SUBJECT: &str = "900101300017";
const SEND_PATH: &str = "/shlyuz.gateway.v1.AsyncChannelService/SendMessage";

/// Fast retries and polling; deliveries claimed for the 1 s route timeout plus the 5 s margin.
const ASYNC_CONFIG: &str =
    "async_retry_initial_ms = 100\nasync_retry_max_ms = 500\nasync_poll_ms = 50\n";

struct Setup {
    work_dir: tempfile::TempDir,
    pki: DevPki,
    signing_key: SigningKey,
    directory: std::path::PathBuf,
    echo_address: SocketAddr,
    /// The echo upstream's server, bound on port 0 before the directory names its address.
    first_echo: parking_lot::Mutex<Option<GrpcServer>>,
    options: GatewayProcessOptions,
    postgres: Option<(String, String)>,
}

/// A fresh database on the test PostgreSQL server: (server url, database name).
async fn fresh_postgres() -> Option<(String, String)> {
    let server = std::env::var("SHLYUZ_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())?;
    let name = format!("shlyuz_test_{}", uuid::Uuid::new_v4().simple());
    let admin = shlyuz_kit::db::Database::connect(&server, 1)
        .await
        .expect("test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin.pool())
        .await
        .expect("create database");
    admin.close().await;
    Some((server, name))
}

async fn drop_postgres(postgres: Option<(String, String)>) {
    if let Some((server, name)) = postgres {
        let admin = shlyuz_kit::db::Database::connect(&server, 1)
            .await
            .expect("test PostgreSQL");
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(admin.pool())
            .await;
        admin.close().await;
    }
}

/// The echo upstream's server on `listen`.
async fn bind_echo(pki: &DevPki, listen: SocketAddr) -> GrpcServer {
    GrpcServer::bind(
        ServerSettings {
            name: "echo".to_string(),
            listen,
            transport: Transport::MutualTls(tls_files(pki, "echo").expect("echo files")),
            readiness_grace: Duration::ZERO,
            drain_timeout: Duration::from_secs(1),
            max_connection_age: None,
            callers: shlyuz_kit::identity::Callers::Any,
            listener: shlyuz_kit::listener::ListenerOptions::default(),
        },
        &MetricsRegistry::default(),
    )
    .await
    .expect("bind echo")
}

impl Setup {
    async fn new(postgres: bool) -> Setup {
        shlyuz_kit::install_crypto_provider();
        let work_dir = tempfile::tempdir().expect("temp dir");
        let pki = DevPki::ensure(&work_dir.path().join("pki"), &PARTICIPANTS).expect("pki");
        let signing_key = SigningKey::from_pem_file(
            &pki.participant(CLIENT_PARTICIPANT)
                .expect("client")
                .signing_key,
        )
        .expect("signing key");
        let first_echo = bind_echo(&pki, SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let echo_address = first_echo.local_addr().expect("echo address");
        let directory =
            write_echo_directory(work_dir.path(), &pki, echo_address, Duration::from_secs(1))
                .expect("directory");
        let postgres = if postgres {
            fresh_postgres().await
        } else {
            None
        };
        let database_url = postgres
            .as_ref()
            .map(|(server, name)| shlyuz_kit::db::testing::replace_database_name(server, name))
            .unwrap_or_default();
        let options = GatewayProcessOptions {
            mode: "full".to_string(),
            database_url,
            data_dir: work_dir.path().join("gateway"),
            extra_gateway_config: ASYNC_CONFIG.to_string(),
        };
        Setup {
            work_dir,
            pki,
            signing_key,
            directory,
            echo_address,
            first_echo: parking_lot::Mutex::new(Some(first_echo)),
            options,
            postgres,
        }
    }

    async fn start_gateway(&self) -> GatewayProcess {
        GatewayProcess::start(&self.pki, &self.directory, &self.options)
            .await
            .expect("gateway process")
    }

    /// Closes the echo listener bound by [`Setup::new`] without serving it.
    fn close_first_echo(&self) {
        drop(self.first_echo.lock().take());
    }

    async fn start_echo(&self, echo: &Echo) -> ShutdownTrigger {
        let (trigger, signal) = shutdown_channel();
        let prebound = self.first_echo.lock().take();
        // An upstream that was down comes back on the address the directory names.
        let server = match prebound {
            Some(server) => server,
            None => bind_echo(&self.pki, self.echo_address).await,
        };
        tokio::spawn(server.serve(
            tonic::service::Routes::new(echo.clone().into_server()),
            signal,
        ));
        trigger
    }

    async fn client(&self, gateway: &GatewayProcess) -> AsyncChannelServiceClient<Channel> {
        let settings = ClientSettings {
            address: gateway.address.to_string(),
            tls: Some(tls_files(&self.pki, CLIENT_PARTICIPANT).expect("client files")),
            server_name: "gateway".to_string(),
            connect_timeout: Duration::from_secs(5),
        };
        AsyncChannelServiceClient::new(connect(&settings).await.expect("connect"))
    }

    /// Sends one echo request through the async channel; returns its message id.
    async fn send(
        &self,
        client: &mut AsyncChannelServiceClient<Channel>,
        delay_ms: i64,
        expires_at_ms: i64,
    ) -> String {
        let builder = EnvelopeBuilder {
            purpose: PURPOSE.to_string(),
            subject_iin: SUBJECT.to_string(),
            ..EnvelopeBuilder::default()
        };
        let message = SendMessageRequest {
            target: Some(Target::Service(ServiceTarget {
                service: "shlyuz.echo.v1.EchoService".to_string(),
                method: "Echo".to_string(),
            })),
            payload: EchoRequest {
                payload: "жеткізу".to_string(),
                fail_with_code: 0,
                delay_ms,
                ..EchoRequest::default()
            }
            .encode_to_vec(),
            expires_at_ms,
            ..SendMessageRequest::default()
        };
        let encoded = message.encode_to_vec();
        let mut request = tonic::Request::new(message);
        for (name, value) in builder.sign(&self.signing_key, SEND_PATH, Some(&encoded)) {
            request.metadata_mut().insert(
                name,
                tonic::metadata::MetadataValue::try_from(value.as_str()).expect("metadata"),
            );
        }
        client.send_message(request).await.expect("accepted");
        builder.message_id
    }

    async fn finish(self) {
        drop_postgres(self.postgres).await;
        drop(self.work_dir);
    }
}

async fn status(
    client: &mut AsyncChannelServiceClient<Channel>,
    message_id: &str,
) -> MessageStatus {
    client
        .get_message_status(GetMessageStatusRequest {
            message_id: message_id.to_string(),
        })
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status")
}

/// Waits (bounded) until every message has left ON_DELIVERY; returns the final states.
async fn final_states(
    client: &mut AsyncChannelServiceClient<Channel>,
    message_ids: &[String],
    limit: Duration,
) -> HashMap<String, MessageStatus> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut finished = HashMap::new();
    while finished.len() < message_ids.len() {
        for message_id in message_ids {
            if finished.contains_key(message_id) {
                continue;
            }
            let current = status(client, message_id).await;
            if current.state != DeliveryState::OnDelivery as i32 {
                finished.insert(message_id.clone(), current);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} messages still on delivery after {limit:?}",
            message_ids.len() - finished.len(),
            message_ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    finished
}

async fn kill_during_delivery(postgres: bool) {
    let setup = Setup::new(postgres).await;
    if postgres && setup.postgres.is_none() {
        eprintln!("postgres backend skipped: SHLYUZ_TEST_POSTGRES_URL is not set");
        return;
    }
    let echo = Echo::default();
    let _echo = setup.start_echo(&echo).await;
    let gateway = setup.start_gateway().await;
    let mut client = setup.client(&gateway).await;

    let sends = futures::stream::iter(0..1000)
        .map(|_| {
            let mut client = client.clone();
            let setup = &setup;
            // Each delivery takes 0.6 s at the echo, so with at most 64 in flight the 1,000
            // deliveries need over 9 s: the kill below comes while they are under way even on a
            // slow machine that accepts slowly.
            async move { setup.send(&mut client, 600, 0).await }
        })
        .buffer_unordered(16);
    let message_ids: Vec<String> = sends.collect().await;
    assert_eq!(message_ids.len(), 1000, "every message was accepted");

    // Kill the gateway while deliveries are in flight.
    for _ in 0..600 {
        if echo.calls_by_message_id().len() >= 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered_before_kill = echo.calls_by_message_id().len();
    gateway.kill().await;
    assert!(
        delivered_before_kill < 1000,
        "the kill came after every delivery ({delivered_before_kill})"
    );

    let gateway = setup.start_gateway().await;
    client = setup.client(&gateway).await;
    let states = final_states(&mut client, &message_ids, Duration::from_secs(90)).await;
    for (message_id, state) in &states {
        assert_eq!(
            state.state,
            DeliveryState::Delivered as i32,
            "{message_id}: {state:?}"
        );
    }
    let calls = echo.calls_by_message_id();
    let mut repeated = 0;
    for message_id in &message_ids {
        let received = calls.get(message_id).copied().unwrap_or(0);
        assert!(received >= 1, "{message_id} never reached the upstream");
        if received > 1 {
            repeated += 1;
        }
    }
    // Only deliveries the killed process had claimed can reach the upstream twice; the receiver
    // executes each message id once (it deduplicates by x-shlyuz-message-id).
    assert!(
        repeated <= 64,
        "{repeated} messages reached the upstream more than once"
    );
    assert_eq!(calls.len(), 1000, "the upstream executed each message once");
    gateway.stop().await;
    setup.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_delivery_every_message_is_delivered_sqlite() {
    kill_during_delivery(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_delivery_every_message_is_delivered_postgres() {
    if std::env::var("SHLYUZ_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        assert!(
            std::env::var("SHLYUZ_TEST_POSTGRES_URL").is_ok_and(|url| !url.is_empty()),
            "SHLYUZ_REQUIRE_POSTGRES=1 but SHLYUZ_TEST_POSTGRES_URL is not set"
        );
    }
    kill_during_delivery(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_down_for_a_while_receives_everything_when_it_returns() {
    let setup = Setup::new(false).await;
    // The upstream is down from the start: nothing listens on its address.
    setup.close_first_echo();
    let gateway = setup.start_gateway().await;
    let mut client = setup.client(&gateway).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let mut message_ids = Vec::new();
    for _ in 0..30 {
        message_ids.push(setup.send(&mut client, 0, 0).await);
    }
    let short_lived = setup.send(&mut client, 0, now_ms + 1_500).await;

    // The upstream is down: attempts fail and are rescheduled.
    for _ in 0..100 {
        if status(&mut client, &message_ids[0]).await.attempts >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiting = status(&mut client, &message_ids[0]).await;
    assert_eq!(waiting.state, DeliveryState::OnDelivery as i32);
    assert!(waiting.attempts >= 2, "{waiting:?}");
    assert!(!waiting.last_error.is_empty());
    let stopped = final_states(
        &mut client,
        std::slice::from_ref(&short_lived),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        stopped[&short_lived].state,
        DeliveryState::DeliveryStopped as i32
    );

    // The upstream returns.
    let echo = Echo::default();
    let _echo = setup.start_echo(&echo).await;
    let states = final_states(&mut client, &message_ids, Duration::from_secs(60)).await;
    assert!(
        states
            .values()
            .all(|state| state.state == DeliveryState::Delivered as i32),
        "{states:?}"
    );
    let calls = echo.calls_by_message_id();
    assert!(
        message_ids
            .iter()
            .all(|message_id| calls.get(message_id) == Some(&1)),
        "{calls:?}"
    );
    assert!(
        !calls.contains_key(&short_lived),
        "the expired message was never delivered"
    );
    gateway.stop().await;
    setup.finish().await;
}
