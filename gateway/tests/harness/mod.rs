//! A gateway in front of an echo upstream, on loopback with mutual TLS, for end-to-end tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shlyuz_gateway::consent::InMemoryConsents;
use shlyuz_gateway::echo::Echo;
use shlyuz_gateway::envelope::EnvelopeBuilder;
use shlyuz_gateway::{Gateway, GatewayParts};
use shlyuz_kit::client::{ClientSettings, connect};
use shlyuz_kit::db::Database;
use shlyuz_kit::db::testing::TestDatabase;
use shlyuz_kit::listener::ListenerOptions;
use shlyuz_kit::pki::{DevPki, SigningKey};
use shlyuz_kit::server::{GrpcServer, ServerSettings, TlsFiles, Transport};
use shlyuz_kit::shutdown::{ShutdownTrigger, shutdown_channel};
use shlyuz_kit::telemetry::MetricsRegistry;
use shlyuz_proto::echo::v1::EchoRequest;
use shlyuz_proto::echo::v1::echo_service_client::EchoServiceClient;
use shlyuz_proto::gateway::v1::async_channel_service_client::AsyncChannelServiceClient;
use shlyuz_proto::gateway::v1::message_log_service_client::MessageLogServiceClient;
use shlyuz_proto::gateway::v1::{
    DeliveryState, GetEntryRequest, GetMessageStatusRequest, ListEntriesRequest, LogEntry,
    MessageStatus,
};
use tonic::transport::Channel;

/// A valid IIN used as the subject of personal-data calls.
pub const SUBJECT: &str = "900101300017";

pub const PARTICIPANTS: [&str; 7] = [
    "gateway",
    "registry",
    "jauynger-portal",
    "sdu",
    "ops",
    "intake",
    "sdu-limited",
];

/// Directory lines routing the gateway's access log and letting `ops` read it (purpose OPERATIONS).
pub const ACCESS_LOG_ROUTE: &str = r#"
[[services]]
name = "shlyuz.gateway.v1.AccessLogService"
upstream = "local"
personal_data = true
methods = ["ListSubjectAccess"]

[[rules]]
participant = "ops"
service = "shlyuz.gateway.v1.AccessLogService"
methods = ["*"]
purposes = ["OPERATIONS"]
"#;

/// Has a certificate from the gateway's CA but is not registered in the directory.
pub const STRANGER: &str = "stranger";

pub struct Harness {
    pub metrics: MetricsRegistry,
    pub directory_dir: tempfile::TempDir,
    pub pki: &'static DevPki,
    pub gateway_address: SocketAddr,
    pub echo: Echo,
    /// The upstream of `shlyuz.echo.v1.ScriptedService`: answers every call as told.
    pub scripted: ScriptedUpstream,
    /// Where it listens.
    pub scripted_address: SocketAddr,
    pub consents: Arc<InMemoryConsents>,
    pub gateway: Gateway,
    trigger: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    test_database: Option<TestDatabase>,
    /// Bound, never listening, for the harness's life: the dead route's address stays refused and
    /// no other program can take it.
    _dead_socket: tokio::net::TcpSocket,
}

/// The scripted upstream's route: `Echo` is idempotent (3 attempts), the breaker opens after 3
/// consecutive failures.
pub const SCRIPTED: &str = "/shlyuz.echo.v1.ScriptedService/Echo";
/// The scripted route's server-streaming method.
pub const SCRIPTED_STREAM: &str = "/shlyuz.echo.v1.ScriptedService/EchoServerStream";

/// What the scripted upstream answers.
#[derive(Debug, Clone)]
pub enum ScriptedAnswer {
    /// OK with an `EchoResponse` carrying this payload.
    Ok(String),
    /// `status` as a trailers-only response, the way tonic answers an error.
    Status(tonic::Status),
    /// Response headers, no message, then `status` in the trailers.
    StatusInTrailers(tonic::Status),
}

/// An upstream that answers every call with the [`ScriptedAnswer`] it was last given, counting
/// the calls that reached it; clones share both.
#[derive(Clone)]
pub struct ScriptedUpstream {
    answer: Arc<parking_lot::Mutex<ScriptedAnswer>>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for ScriptedUpstream {
    fn default() -> Self {
        Self {
            answer: Arc::new(parking_lot::Mutex::new(ScriptedAnswer::Ok(String::new()))),
            calls: Arc::default(),
        }
    }
}

impl ScriptedUpstream {
    /// Every call from now on gets `answer`.
    pub fn answer_with(&self, answer: ScriptedAnswer) {
        *self.answer.lock() = answer;
    }

    /// Calls that reached this upstream so far.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn routes(&self) -> tonic::service::Routes {
        let upstream = self.clone();
        let handler = tower::service_fn(move |request: http::Request<axum::body::Body>| {
            let upstream = upstream.clone();
            async move {
                use http_body_util::BodyExt;
                // The request is read whole first, as a service would.
                let _ = request.into_body().collect().await;
                upstream
                    .calls
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = upstream.answer.lock().clone();
                Ok::<_, std::convert::Infallible>(scripted_response(answer))
            }
        });
        tonic::service::Routes::from(axum::Router::new().fallback_service(handler))
    }
}

fn scripted_response(answer: ScriptedAnswer) -> http::Response<axum::body::Body> {
    use bytes::{BufMut, Bytes, BytesMut};
    use http_body::Frame;
    use prost::Message as _;
    let (message, status) = match answer {
        ScriptedAnswer::Status(status) => return status.into_http(),
        ScriptedAnswer::Ok(payload) => {
            let encoded = shlyuz_proto::echo::v1::EchoResponse {
                payload,
                ..Default::default()
            }
            .encode_to_vec();
            let mut framed = BytesMut::with_capacity(encoded.len() + 5);
            framed.put_u8(0);
            framed.put_u32(encoded.len() as u32);
            framed.put_slice(&encoded);
            (Some(framed.freeze()), tonic::Status::ok(""))
        }
        ScriptedAnswer::StatusInTrailers(status) => (None, status),
    };
    let mut trailers = http::HeaderMap::new();
    status.add_header(&mut trailers).expect("status headers");
    let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = Vec::new();
    if let Some(message) = message {
        frames.push(Ok(Frame::data(message)));
    }
    frames.push(Ok(Frame::trailers(trailers)));
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(axum::body::Body::new(body))
        .expect("scripted response")
}

fn directory_toml(
    pki: &DevPki,
    echo_address: SocketAddr,
    dead_address: SocketAddr,
    scripted_address: SocketAddr,
    extra: &str,
    echo_idempotent: bool,
) -> String {
    let echo_idempotent = if echo_idempotent { "\"Echo\"" } else { "" };
    let mut text = String::from(
        "[settings]\nmax_request_bytes = 65536\nmax_response_bytes = 65536\ndefault_timeout_ms = 2000\nreplay_window_secs = 300\n\n",
    );
    for participant in PARTICIPANTS {
        let files = pki.participant(participant).expect("participant");
        text.push_str(&format!(
            "[[participants]]\nid = \"{participant}\"\nname = \"{participant} system\"\nsigning_public_key = \"{}\"\n",
            files.signing_public_key.display()
        ));
        if participant == "intake" {
            text.push_str("accept_messages_from = [\"ops\"]\n");
        }
        if participant == "sdu-limited" {
            text.push_str("quota = { rate_per_second = 0.001, burst = 2 }\n");
        }
        text.push('\n');
    }
    for purpose in ["MILITARY_RECRUITMENT", "HOUSING_ALLOCATION", "OPERATIONS"] {
        text.push_str(&format!(
            "[[purposes]]\ncode = \"{purpose}\"\ndescription = \"{purpose}\"\n\n"
        ));
    }
    text.push_str(&format!(
        r#"[[services]]
name = "shlyuz.echo.v1.EchoService"
upstream = "{echo_address}"
upstream_server_name = "registry"
timeout_ms = 2000
personal_data = true
idempotent_methods = [{echo_idempotent}]
client_streaming_methods = ["EchoClientStream", "EchoBidiStream"]
server_streaming_methods = ["EchoServerStream", "EchoBidiStream"]
methods = ["Echo", "EchoServerStream", "EchoClientStream", "EchoBidiStream"]
breaker = {{ failure_threshold = 10, open_ms = 5000 }}
retry = {{ max_attempts = 3, initial_backoff_ms = 10 }}

[[services]]
name = "shlyuz.echo.v1.DeadService"
upstream = "{dead_address}"
upstream_server_name = "registry"
timeout_ms = 1000
personal_data = false
methods = ["Echo"]
breaker = {{ failure_threshold = 3, open_ms = 60000 }}
retry = {{ max_attempts = 1, initial_backoff_ms = 10 }}

[[services]]
name = "shlyuz.echo.v1.ScriptedService"
upstream = "{scripted_address}"
upstream_server_name = "registry"
timeout_ms = 2000
personal_data = false
methods = ["Echo", "EchoServerStream"]
idempotent_methods = ["Echo"]
server_streaming_methods = ["EchoServerStream"]
breaker = {{ failure_threshold = 3, open_ms = 60000 }}
retry = {{ max_attempts = 3, initial_backoff_ms = 10 }}

[[services]]
name = "shlyuz.gateway.v1.MessageLogService"
upstream = "local"
personal_data = false
methods = ["GetEntry", "ListEntries", "VerifyChain", "ExportCheckpoints"]

[[services]]
name = "shlyuz.gateway.v1.AsyncChannelService"
upstream = "local"
personal_data = false
methods = ["SendMessage", "GetMessageStatus", "GetMessages", "AckMessages", "StreamMessages"]
server_streaming_methods = ["StreamMessages"]

[[rules]]
participant = "ops"
service = "shlyuz.gateway.v1.AsyncChannelService"
methods = ["*"]

[[rules]]
participant = "intake"
service = "shlyuz.gateway.v1.AsyncChannelService"
methods = ["*"]

[[rules]]
participant = "jauynger-portal"
service = "shlyuz.gateway.v1.AsyncChannelService"
methods = ["*"]

[[rules]]
participant = "jauynger-portal"
service = "shlyuz.echo.v1.EchoService"
methods = ["Echo"]
purposes = ["MILITARY_RECRUITMENT"]

[[rules]]
participant = "intake"
service = "shlyuz.echo.v1.EchoService"
methods = ["Echo"]
purposes = ["MILITARY_RECRUITMENT"]
consent_required = true

[[rules]]
participant = "ops"
service = "shlyuz.echo.v1.EchoService"
methods = ["*"]
purposes = ["OPERATIONS"]

[[rules]]
participant = "sdu-limited"
service = "shlyuz.echo.v1.EchoService"
methods = ["Echo"]
purposes = ["OPERATIONS"]

[[rules]]
participant = "ops"
service = "shlyuz.echo.v1.DeadService"
methods = ["*"]

[[rules]]
participant = "ops"
service = "shlyuz.echo.v1.ScriptedService"
methods = ["*"]

[[rules]]
participant = "ops"
service = "shlyuz.gateway.v1.MessageLogService"
methods = ["*"]

"#
    ));
    text.push_str(extra);
    text
}

impl Harness {
    pub async fn start_sqlite(extra_directory: &str) -> Harness {
        Self::start_sqlite_with(extra_directory, true).await
    }

    /// Like [`Harness::start_sqlite`]; `echo_idempotent` says whether `Echo` may be retried.
    pub async fn start_sqlite_with(extra_directory: &str, echo_idempotent: bool) -> Harness {
        let test_database = TestDatabase::sqlite().await;
        let database = test_database.database().clone();
        let mut harness = Self::start_with(database, extra_directory, echo_idempotent).await;
        harness.test_database = Some(test_database);
        harness
    }

    /// A gateway on SQLite with `settings` and the listener limits `listener` makes.
    pub async fn start_sqlite_listening(
        settings: shlyuz_gateway::GatewaySettings,
        listener: impl FnOnce(&DevPki) -> ListenerOptions,
    ) -> Harness {
        let test_database = TestDatabase::sqlite().await;
        let database = test_database.database().clone();
        let mut harness = Self::start_listening(database, "", true, settings, listener).await;
        harness.test_database = Some(test_database);
        harness
    }

    pub async fn start(database: Database, extra_directory: &str) -> Harness {
        Self::start_with(database, extra_directory, true).await
    }

    pub async fn start_with(
        database: Database,
        extra_directory: &str,
        echo_idempotent: bool,
    ) -> Harness {
        Self::start_custom(
            database,
            extra_directory,
            echo_idempotent,
            fast_async_settings(),
        )
        .await
    }

    pub async fn start_custom(
        database: Database,
        extra_directory: &str,
        echo_idempotent: bool,
        gateway_settings: shlyuz_gateway::GatewaySettings,
    ) -> Harness {
        Self::start_listening(
            database,
            extra_directory,
            echo_idempotent,
            gateway_settings,
            |_pki| ListenerOptions::default(),
        )
        .await
    }

    /// [`Harness::start_custom`] with the gateway's listener limits made by `listener` (which
    /// may write files next to the PKI, such as a CRL).
    pub async fn start_listening(
        database: Database,
        extra_directory: &str,
        echo_idempotent: bool,
        gateway_settings: shlyuz_gateway::GatewaySettings,
        listener: impl FnOnce(&DevPki) -> ListenerOptions,
    ) -> Harness {
        shlyuz_kit::install_crypto_provider();
        let directory_dir = tempfile::tempdir().expect("temp dir");
        let pki = shared_pki();
        // The directory names the participants' keys under `pki/` next to it.
        std::os::unix::fs::symlink(pki.dir(), directory_dir.path().join("pki"))
            .expect("link the pki");
        let metrics = MetricsRegistry::default();
        let (trigger, signal) = shutdown_channel();

        let echo = Echo::default();
        let echo_server = GrpcServer::bind(
            ServerSettings::loopback(
                "echo",
                Transport::MutualTls(pki.tls_files("registry").expect("participant files")),
            ),
            &metrics,
        )
        .await
        .expect("bind echo");
        let echo_address = echo_server.local_addr().expect("echo address");
        let echo_routes = tonic::service::Routes::new(echo.clone().into_server());
        let mut tasks = vec![tokio::spawn(echo_server.serve(echo_routes, signal.clone()))];

        let scripted = ScriptedUpstream::default();
        let scripted_server = GrpcServer::bind(
            ServerSettings::loopback(
                "scripted",
                Transport::MutualTls(pki.tls_files("registry").expect("participant files")),
            ),
            &metrics,
        )
        .await
        .expect("bind the scripted upstream");
        let scripted_address = scripted_server.local_addr().expect("scripted address");
        tasks.push(tokio::spawn(
            scripted_server.serve(scripted.routes(), signal.clone()),
        ));

        // A port bound and kept, never listened on: connections to it are refused.
        let dead_socket = tokio::net::TcpSocket::new_v4().expect("socket");
        dead_socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind the dead address");
        let dead_address = dead_socket.local_addr().expect("address");

        let directory_path = directory_dir.path().join("gateway-directory.toml");
        std::fs::write(
            &directory_path,
            directory_toml(
                pki,
                echo_address,
                dead_address,
                scripted_address,
                extra_directory,
                echo_idempotent,
            ),
        )
        .expect("write directory");

        let database_for_gateway = database.clone();
        database_for_gateway
            .migrate(&shlyuz_gateway::MIGRATIONS)
            .await
            .expect("gateway migrations");
        let consents = Arc::new(InMemoryConsents::default());
        let gateway_files = pki.participant("gateway").expect("gateway files");
        let signing_key =
            SigningKey::from_pem_file(&gateway_files.signing_key).expect("gateway signing key");
        let gateway = Gateway::start(GatewayParts {
            database: database_for_gateway,
            directory_file: directory_path.clone(),
            targets: shlyuz_gateway::directory::TargetResolver::none(),
            signing_key: Arc::new(signing_key),
            consent: consents.clone(),
            upstream_tls: Some(pki.tls_files("gateway").expect("participant files")),
            metrics: metrics.clone(),
            clock: shlyuz_kit::clock::system_clock(),
            settings: gateway_settings,
            tasks: shlyuz_kit::service::Tasks::new(signal.clone()),
        })
        .await
        .expect("start gateway");
        let gateway_server = GrpcServer::bind(
            ServerSettings {
                listener: listener(pki),
                ..ServerSettings::loopback(
                    "gateway",
                    Transport::MutualTls(pki.tls_files("gateway").expect("participant files")),
                )
            },
            &metrics,
        )
        .await
        .expect("bind gateway");
        let gateway_address = gateway_server.local_addr().expect("gateway address");
        tasks.push(tokio::spawn(gateway_server.serve(gateway.routes(), signal)));

        Harness {
            metrics,
            directory_dir,
            pki,
            gateway_address,
            echo,
            scripted,
            scripted_address,
            consents,
            gateway,
            trigger,
            tasks,
            test_database: None,
            _dead_socket: dead_socket,
        }
    }

    pub async fn channel(&self, participant: &str) -> Channel {
        let settings = ClientSettings {
            address: self.gateway_address.to_string(),
            tls: Some(self.pki.tls_files(participant).expect("participant files")),
            server_name: "gateway".to_string(),
            connect_timeout: Duration::from_secs(5),
        };
        connect(&settings).await.expect("connect to the gateway")
    }

    /// A channel to a gateway at `address` (a second replica) as `participant`.
    pub async fn channel_to(&self, address: SocketAddr, participant: &str) -> Channel {
        let settings = ClientSettings {
            address: address.to_string(),
            tls: Some(self.pki.tls_files(participant).expect("participant files")),
            server_name: "gateway".to_string(),
            connect_timeout: Duration::from_secs(5),
        };
        connect(&settings).await.expect("connect to the gateway")
    }

    pub async fn echo_client(&self, participant: &str) -> EchoServiceClient<Channel> {
        EchoServiceClient::new(self.channel(participant).await)
    }

    pub async fn raw_client(&self, participant: &str) -> RawClient {
        RawClient {
            grpc: tonic::client::Grpc::new(self.channel(participant).await),
        }
    }

    pub async fn dead_route_client(&self, participant: &str) -> RawClient {
        self.raw_client(participant).await
    }

    /// Another gateway instance on the same database and directory (as a second replica would
    /// be): its async dispatcher shares the queue.
    pub async fn second_gateway(&self, database: Database) -> SecondGateway {
        self.second_gateway_with(database, fast_async_settings())
            .await
    }

    /// [`Harness::second_gateway`] with its own settings, served on its own address.
    pub async fn second_gateway_with(
        &self,
        database: Database,
        settings: shlyuz_gateway::GatewaySettings,
    ) -> SecondGateway {
        let (trigger, signal) = shutdown_channel();
        let gateway_files = self.pki.participant("gateway").expect("gateway files");
        let signing_key =
            SigningKey::from_pem_file(&gateway_files.signing_key).expect("gateway signing key");
        let gateway = Gateway::start(GatewayParts {
            database,
            directory_file: self.directory_dir.path().join("gateway-directory.toml"),
            targets: shlyuz_gateway::directory::TargetResolver::none(),
            signing_key: Arc::new(signing_key),
            consent: self.consents.clone(),
            upstream_tls: Some(self.pki.tls_files("gateway").expect("participant files")),
            metrics: MetricsRegistry::default(),
            clock: shlyuz_kit::clock::system_clock(),
            settings,
            tasks: shlyuz_kit::service::Tasks::new(signal.clone()),
        })
        .await
        .expect("start the second gateway");
        let server = GrpcServer::bind(
            ServerSettings::loopback(
                "gateway",
                Transport::MutualTls(self.pki.tls_files("gateway").expect("participant files")),
            ),
            &self.metrics,
        )
        .await
        .expect("bind the second gateway");
        let address = server.local_addr().expect("second gateway address");
        let task = tokio::spawn(server.serve(gateway.routes(), signal));
        SecondGateway {
            gateway,
            trigger,
            address,
            task,
        }
    }

    pub fn personal_envelope(&self) -> EnvelopeBuilder {
        EnvelopeBuilder {
            purpose: "MILITARY_RECRUITMENT".to_string(),
            subject_iin: SUBJECT.to_string(),
            ..EnvelopeBuilder::default()
        }
    }

    pub fn envelope(&self, purpose: &str) -> EnvelopeBuilder {
        EnvelopeBuilder {
            purpose: purpose.to_string(),
            subject_iin: SUBJECT.to_string(),
            ..EnvelopeBuilder::default()
        }
    }

    pub fn signing_key(&self, participant: &str) -> SigningKey {
        let files = self.pki.participant(participant).expect("participant");
        SigningKey::from_pem_file(&files.signing_key).expect("signing key")
    }

    pub fn expired_leaf(&self, participant: &str) -> (String, String) {
        let now = time::OffsetDateTime::now_utc();
        self.pki
            .issue_leaf(
                participant,
                now - time::Duration::days(30),
                now - time::Duration::days(1),
            )
            .expect("expired leaf")
    }

    pub async fn call_with_identity(&self, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        let cert_path: PathBuf = self
            .directory_dir
            .path()
            .join(format!("{}.pem", uuid::Uuid::new_v4()));
        let key_path = cert_path.with_extension("key");
        std::fs::write(&cert_path, cert_pem)?;
        std::fs::write(&key_path, key_pem)?;
        let settings = ClientSettings {
            address: self.gateway_address.to_string(),
            tls: Some(TlsFiles {
                ca_cert: self.pki.ca_cert_path().to_path_buf(),
                cert: cert_path,
                key: key_path,
            }),
            server_name: "gateway".to_string(),
            connect_timeout: Duration::from_secs(5),
        };
        let channel = connect(&settings).await?;
        let request = signed(
            self,
            "jauynger-portal",
            "/shlyuz.echo.v1.EchoService/Echo",
            &self.personal_envelope(),
            echo_request("x"),
        );
        EchoServiceClient::new(channel).echo(request).await?;
        Ok(())
    }

    pub async fn log_entry(&self, sender: &str, message_id: &str) -> LogEntry {
        let mut client = MessageLogServiceClient::new(self.channel("ops").await);
        client
            .get_entry(GetEntryRequest {
                message_id: message_id.to_string(),
                sender: sender.to_string(),
            })
            .await
            .expect("get entry")
            .into_inner()
            .entry
            .expect("entry")
    }

    pub async fn log_entries_for_message(&self, sender: &str, message_id: &str) -> Vec<LogEntry> {
        let mut client = MessageLogServiceClient::new(self.channel("ops").await);
        let mut found = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_entries(ListEntriesRequest {
                    sender: sender.to_string(),
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..ListEntriesRequest::default()
                })
                .await
                .expect("list entries")
                .into_inner();
            found.extend(
                page.entries
                    .into_iter()
                    .filter(|entry| entry.message_id == message_id),
            );
            if page.next_page_token.is_empty() {
                return found;
            }
            page_token = page.next_page_token;
        }
    }

    pub async fn stop(mut self) {
        self.trigger.trigger();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.gateway.shutdown().await;
        if let Some(test_database) = self.test_database.take() {
            test_database.cleanup().await;
        }
    }
}

impl Harness {
    /// Rewrites the directory file with `edit` and has the gateway load it at once (as SIGHUP
    /// does); panics when the gateway refuses the new directory.
    pub fn edit_directory(&self, edit: impl FnOnce(String) -> String) {
        let path = self.directory_dir.path().join("gateway-directory.toml");
        let text = std::fs::read_to_string(&path).expect("read the directory");
        std::fs::write(&path, edit(text)).expect("write the directory");
        self.gateway
            .reload_directory()
            .expect("the edited directory loads");
    }

    /// A gateway instance on its own runtime and its own connections to `database`, that can be
    /// killed as SIGKILL would: see [`KillableGateway::kill`].
    pub async fn killable_gateway(
        &self,
        database: &Database,
        settings: shlyuz_gateway::GatewaySettings,
    ) -> KillableGateway {
        let url = database_url(database).await;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the killable gateway");
        let gateway_files = self.pki.participant("gateway").expect("gateway files");
        let signing_key =
            SigningKey::from_pem_file(&gateway_files.signing_key).expect("gateway signing key");
        let directory_file = self.directory_dir.path().join("gateway-directory.toml");
        let consents = self.consents.clone();
        let tls = self.pki.tls_files("gateway").expect("participant files");
        let (started, address) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let database = Database::connect(&url, 4)
                .await
                .expect("connect the killable gateway");
            let (trigger, signal) = shutdown_channel();
            let gateway = Gateway::start(GatewayParts {
                database,
                directory_file,
                targets: shlyuz_gateway::directory::TargetResolver::none(),
                signing_key: Arc::new(signing_key),
                consent: consents,
                upstream_tls: Some(tls.clone()),
                metrics: MetricsRegistry::default(),
                clock: shlyuz_kit::clock::system_clock(),
                settings,
                tasks: shlyuz_kit::service::Tasks::new(signal.clone()),
            })
            .await
            .expect("start the killable gateway");
            let server = GrpcServer::bind(
                ServerSettings::loopback("gateway", Transport::MutualTls(tls)),
                &MetricsRegistry::default(),
            )
            .await
            .expect("bind the killable gateway");
            let _ = started.send(server.local_addr().expect("killable gateway address"));
            let _ = server.serve(gateway.routes(), signal).await;
            // Never reached before the kill: the trigger lives as long as the runtime.
            drop(trigger);
        });
        let address = address.await.expect("the killable gateway started");
        KillableGateway {
            runtime: Some(runtime),
            address,
        }
    }
}

/// A gateway that dies without a shutdown; see [`Harness::killable_gateway`].
pub struct KillableGateway {
    runtime: Option<tokio::runtime::Runtime>,
    /// Where it is served.
    pub address: SocketAddr,
}

impl KillableGateway {
    /// Drops every task of the gateway where it stands (deliveries in flight, the message-log
    /// writer, connections): nothing more is written, its claims stay in the database.
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for KillableGateway {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The URL `database` was opened with, so that another runtime can open its own pool.
pub async fn database_url(database: &Database) -> String {
    use sqlx::Row;
    match database.dialect() {
        shlyuz_kit::db::Dialect::Sqlite => {
            let row = sqlx::query("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(database.pool())
                .await
                .expect("the SQLite file");
            let file: String = row.try_get("file").expect("the SQLite file");
            format!("sqlite:{file}")
        }
        shlyuz_kit::db::Dialect::Postgres => {
            let row = sqlx::query("SELECT CAST(current_database() AS TEXT) AS name")
                .fetch_one(database.pool())
                .await
                .expect("the database name");
            let name: String = row.try_get("name").expect("the database name");
            let server = std::env::var(shlyuz_kit::db::testing::POSTGRES_URL_VARIABLE)
                .expect("the PostgreSQL test server");
            shlyuz_kit::db::testing::replace_database_name(&server, &name)
        }
    }
}

/// Makes every message-log write fail (the table is renamed away), or undoes it.
pub async fn break_message_log(database: &Database, broken: bool) {
    let (from, to) = if broken {
        ("message_log_entries", "message_log_entries_away")
    } else {
        ("message_log_entries_away", "message_log_entries")
    };
    sqlx::query(&format!("ALTER TABLE {from} RENAME TO {to}"))
        .execute(database.pool())
        .await
        .expect("rename the message-log table");
}

/// A second gateway instance; see [`Harness::second_gateway`].
pub struct SecondGateway {
    gateway: Gateway,
    trigger: ShutdownTrigger,
    /// Where it is served.
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl SecondGateway {
    pub async fn shutdown(self) {
        self.trigger.trigger();
        let _ = self.task.await;
        self.gateway.shutdown().await;
    }
}

/// Gateway settings with async retries and polling fast enough for tests.
pub fn fast_async_settings() -> shlyuz_gateway::GatewaySettings {
    let mut settings = shlyuz_gateway::GatewaySettings::default();
    settings.async_channel.retry_initial = Duration::from_millis(50);
    settings.async_channel.retry_max = Duration::from_millis(200);
    settings.async_channel.poll_interval = Duration::from_millis(50);
    settings
}

/// A request signed by `participant` for `path`.
pub fn signed<M: prost::Message>(
    harness: &Harness,
    participant: &str,
    path: &str,
    builder: &EnvelopeBuilder,
    message: M,
) -> tonic::Request<M> {
    let encoded = message.encode_to_vec();
    let pairs = builder.sign(&harness.signing_key(participant), path, Some(&encoded));
    let mut request = tonic::Request::new(message);
    for (name, value) in pairs {
        request.metadata_mut().insert(
            name,
            tonic::metadata::MetadataValue::try_from(value.as_str()).expect("metadata"),
        );
    }
    request
}

/// A client-streaming request whose envelope is signed without a body hash.
pub fn signed_streaming<S>(
    harness: &Harness,
    participant: &str,
    path: &str,
    stream: S,
) -> tonic::Request<S> {
    let builder = harness.envelope("OPERATIONS");
    let pairs = builder.sign(&harness.signing_key(participant), path, None);
    let mut request = tonic::Request::new(stream);
    for (name, value) in pairs {
        request.metadata_mut().insert(
            name,
            tonic::metadata::MetadataValue::try_from(value.as_str()).expect("metadata"),
        );
    }
    request
}

pub fn echo_request(payload: &str) -> EchoRequest {
    EchoRequest {
        payload: payload.to_string(),
        fail_with_code: 0,
        delay_ms: 0,
        ..EchoRequest::default()
    }
}

/// Calls arbitrary paths with an `EchoRequest` body.
pub struct RawClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl RawClient {
    pub async fn unary(
        &mut self,
        path: &str,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<shlyuz_proto::echo::v1::EchoResponse>, tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        let path = http::uri::PathAndQuery::from_str(path)
            .map_err(|error| tonic::Status::internal(error.to_string()))?;
        self.grpc
            .unary(request, path, tonic_prost::ProstCodec::default())
            .await
    }

    /// Calls `path` and reads its answer as a raw HTTP/2 client would: every response message
    /// that reached the client before the call's status, then the status (OK when clean).
    pub async fn messages_before_status(
        &mut self,
        path: &str,
        request: tonic::Request<EchoRequest>,
    ) -> (Vec<shlyuz_proto::echo::v1::EchoResponse>, tonic::Status) {
        if let Err(error) = self.grpc.ready().await {
            return (Vec::new(), tonic::Status::unavailable(error.to_string()));
        }
        let path = http::uri::PathAndQuery::from_str(path).expect("path");
        let response = self
            .grpc
            .server_streaming(request, path, tonic_prost::ProstCodec::default())
            .await;
        let mut stream = match response {
            Ok(response) => response.into_inner(),
            Err(status) => return (Vec::new(), status),
        };
        let mut messages = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => return (messages, tonic::Status::ok("")),
                Err(status) => return (messages, status),
            }
        }
    }
}

/// The status of async message `message_id`, as its sender sees it.
pub async fn message_status(
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

/// Polls until the message leaves ON_DELIVERY, for at most `limit`.
pub async fn final_status_within(
    client: &mut AsyncChannelServiceClient<Channel>,
    message_id: &str,
    limit: Duration,
) -> MessageStatus {
    let deadline = Instant::now() + limit;
    loop {
        let current = message_status(client, message_id).await;
        if current.state != DeliveryState::OnDelivery as i32 {
            return current;
        }
        assert!(
            Instant::now() < deadline,
            "message {message_id} is still on delivery after {limit:?}: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The development PKI of this test binary: generated once, shared by every harness in it.
fn shared_pki() -> &'static DevPki {
    static PKI: std::sync::OnceLock<(tempfile::TempDir, DevPki)> = std::sync::OnceLock::new();
    let (_dir, pki) = PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("pki dir");
        let mut participants = PARTICIPANTS.to_vec();
        participants.push(STRANGER);
        let pki = DevPki::ensure(&dir.path().join("pki"), &participants).expect("pki");
        (dir, pki)
    });
    pki
}
