//! gRPC server bootstrap shared by every target: mutual TLS (or plaintext only when configured),
//! tonic-health with `""` for liveness and [`READINESS_SERVICE`] for readiness, reflection, gRPC
//! metrics, and graceful shutdown (readiness NOT_SERVING → drain in-flight calls → return).
//!
//! Optionally a second, plaintext listener serves only `grpc.health.v1.Health` from the same
//! reporter, because the kubelet's native gRPC probes cannot present a client certificate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::identity::{CallerCheck, Callers};
use crate::listener::{ListenerMetrics, ListenerOptions, ServerTls};
use crate::shutdown::ShutdownSignal;
use crate::telemetry::MetricsRegistry;

/// The health-service name that reports readiness (the empty name reports liveness).
pub const READINESS_SERVICE: &str = "readiness";

/// Certificate files of one participant: the CA that signs every participant, its own chain and key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsFiles {
    /// PEM file of the CA certificates trusted for peers.
    pub ca_cert: PathBuf,
    /// PEM certificate chain of this participant.
    pub cert: PathBuf,
    /// PEM private key of this participant.
    pub key: PathBuf,
}

/// How a server accepts connections.
#[derive(Debug, Clone)]
pub enum Transport {
    /// TLS 1.3 with a client certificate required and verified against the CA.
    MutualTls(TlsFiles),
    /// No TLS at all; only when explicitly configured, e.g. behind a mesh in tests.
    Plaintext,
}

/// What a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The target's name, for logs and metrics.
    pub name: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// TLS or plaintext.
    pub transport: Transport,
    /// How long readiness reports NOT_SERVING before the listener closes, so load balancers
    /// stop sending new calls first.
    pub readiness_grace: Duration,
    /// How long in-flight calls may take to finish after shutdown starts.
    pub drain_timeout: Duration,
    /// Maximum age of an HTTP/2 connection, so clients rebalance across replicas.
    pub max_connection_age: Option<Duration>,
    /// Which participants may call the served routes (mutual TLS only; health and reflection are
    /// open to every authenticated peer).
    pub callers: Callers,
    /// Connection, stream and header limits, and the client CRLs.
    pub listener: ListenerOptions,
}

impl ServerSettings {
    /// A server on an ephemeral loopback port that drains for at most 5 s and has no readiness
    /// grace: what tests and benchmarks run.
    pub fn loopback(name: &str, transport: Transport) -> ServerSettings {
        ServerSettings {
            name: name.to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            transport,
            readiness_grace: Duration::ZERO,
            drain_timeout: Duration::from_secs(5),
            max_connection_age: None,
            callers: Callers::Any,
            listener: ListenerOptions::default(),
        }
    }
}

/// A bound gRPC server, not yet serving.
pub struct GrpcServer {
    settings: ServerSettings,
    listener: tokio::net::TcpListener,
    tls: Option<ServerTls>,
    health_reporter: HealthReporter,
    health_listener: Option<tokio::net::TcpListener>,
    metrics: GrpcServerMetrics,
    listener_metrics: ListenerMetrics,
}

impl GrpcServer {
    /// Loads TLS material and binds the listener, so bad files or a taken port fail start-up.
    pub async fn bind(settings: ServerSettings, metrics: &MetricsRegistry) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("{}: cannot listen on {}", settings.name, settings.listen))?;
        Self::with_listener(settings, listener, metrics)
    }

    /// Like [`GrpcServer::bind`] on a listener bound already (`settings.listen` is not used), for
    /// an address that had to be known before the server could start: bind a socket first, hand
    /// its address on, and start listening on it later — never bind a port found free and released.
    pub fn with_listener(
        settings: ServerSettings,
        listener: tokio::net::TcpListener,
        metrics: &MetricsRegistry,
    ) -> anyhow::Result<Self> {
        let tls = match &settings.transport {
            Transport::MutualTls(files) => Some(
                ServerTls::load(files, settings.listener.client_crl_file.as_deref())
                    .with_context(|| format!("{}: TLS", settings.name))?,
            ),
            Transport::Plaintext => None,
        };
        let (health_reporter, _) = tonic_health::server::health_reporter();
        Ok(Self {
            metrics: GrpcServerMetrics::registered(metrics),
            listener_metrics: ListenerMetrics::registered(metrics),
            settings,
            listener,
            tls,
            health_reporter,
            health_listener: None,
        })
    }

    /// Binds a plaintext listener that serves only `grpc.health.v1.Health` (liveness `""` and
    /// readiness [`READINESS_SERVICE`]) for probes that cannot do mutual TLS, such as the kubelet's
    /// native gRPC probes. It answers nothing else: no routes, no reflection. It keeps answering
    /// through the readiness grace and the drain, and closes when the main server has stopped.
    pub async fn bind_health_listener(&mut self, address: SocketAddr) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| {
                format!(
                    "{}: cannot listen for health probes on {address}",
                    self.settings.name
                )
            })?;
        self.health_listener = Some(listener);
        Ok(())
    }

    /// The address of the plaintext health listener, when one is bound.
    pub fn health_local_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.health_listener
            .as_ref()
            .map(tokio::net::TcpListener::local_addr)
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The health reporter, for services that want to report their own readiness.
    pub fn health_reporter(&self) -> HealthReporter {
        self.health_reporter.clone()
    }

    /// Serves `routes` plus health and reflection until `shutdown` fires, then drains.
    pub async fn serve(self, routes: Routes, shutdown: ShutdownSignal) -> anyhow::Result<()> {
        let name = self.settings.name.clone();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(self.health_reporter.clone()),
        );
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(shlyuz_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("cannot build the reflection service")?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(shlyuz_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .context("cannot build the reflection service")?;

        let limits = &self.settings.listener;
        let mut builder = tonic::transport::Server::builder()
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_keepalive_interval(Some(limits.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout))
            .http2_max_header_list_size(limits.max_header_list_bytes);
        if let Some(max_age) = self.settings.max_connection_age {
            builder = builder.max_connection_age(max_age);
        }
        let router = builder
            .layer(GrpcMetricsLayer {
                metrics: self.metrics.clone(),
            })
            .layer(CallerCheckLayer {
                check: CallerCheck::new(self.settings.callers.clone()),
            })
            .add_routes(routes)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let crl_reloader = self
            .tls
            .clone()
            .and_then(|tls| tls.spawn_reloader(limits.reload_interval, &self.listener_metrics));
        let health_task = self.health_listener.map(|listener| {
            let health_only = tonic::transport::Server::builder().add_service(
                tonic_health::pb::health_server::HealthServer::new(
                    tonic_health::server::HealthService::from_health_reporter(
                        self.health_reporter.clone(),
                    ),
                ),
            );
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tokio::spawn(health_only.serve_with_incoming(incoming))
        });
        let health_reporter = &self.health_reporter;
        let settings = &self.settings;
        let result: anyhow::Result<()> = async {
            let (drain_sender, drain_receiver) = tokio::sync::oneshot::channel::<()>();
            let drained = async {
                let _ = drain_receiver.await;
            };
            // The listener (connection cap, TLS handshake) hands over connections; tonic serves
            // HTTP/2 on them and drops the listener when the drain starts.
            let serving: futures::future::BoxFuture<'static, Result<(), tonic::transport::Error>> =
                match self.tls {
                    Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                        crate::listener::accept_tls(
                            self.listener,
                            &settings.listener,
                            self.listener_metrics.clone(),
                            tls,
                        ),
                        drained,
                    )),
                    None => Box::pin(router.serve_with_incoming_shutdown(
                        crate::listener::accept_plaintext(
                            self.listener,
                            &settings.listener,
                            self.listener_metrics.clone(),
                        ),
                        drained,
                    )),
                };
            let mut server_task = tokio::spawn(serving);

            health_reporter
                .set_service_status("", ServingStatus::Serving)
                .await;
            health_reporter
                .set_service_status(READINESS_SERVICE, ServingStatus::Serving)
                .await;
            tracing::info!(target_name = %name, address = %settings.listen, "serving");

            tokio::select! {
                finished = &mut server_task => {
                    return finished
                        .with_context(|| format!("{name}: server task failed"))?
                        .with_context(|| format!("{name}: server failed"));
                }
                () = shutdown.wait() => {}
            }

            health_reporter
                .set_service_status(READINESS_SERVICE, ServingStatus::NotServing)
                .await;
            tracing::info!(target_name = %name, grace = ?settings.readiness_grace, "readiness off, draining");
            tokio::time::sleep(settings.readiness_grace).await;
            let _ = drain_sender.send(());
            match tokio::time::timeout(settings.drain_timeout, &mut server_task).await {
                Ok(finished) => finished
                    .with_context(|| format!("{name}: server task failed"))?
                    .with_context(|| format!("{name}: server failed"))?,
                Err(_) => {
                    server_task.abort();
                    tracing::warn!(target_name = %name, "drain timeout reached, cutting remaining calls");
                }
            }
            tracing::info!(target_name = %name, "stopped");
            Ok(())
        }
        .await;
        if let Some(crl_reloader) = crl_reloader {
            crl_reloader.abort();
        }
        // The health listener holds no work worth draining, and an open Watch stream would keep
        // a graceful stop waiting forever: close it outright once the main server has stopped.
        if let Some(health_task) = health_task {
            health_task.abort();
            if let Ok(Err(error)) = health_task.await {
                tracing::warn!(target_name = %name, %error, "health listener failed");
            }
        }
        result
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcCallLabels {
    service: String,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcMethodLabels {
    service: String,
    method: String,
}

/// The `service` and `method` label of calls answered `UNIMPLEMENTED` (no route for the path).
pub const UNKNOWN_LABEL: &str = "unknown";

/// Per-method call counters and latency histograms of a gRPC server.
#[derive(Clone)]
struct GrpcServerMetrics {
    calls: Family<GrpcCallLabels, Counter>,
    latency: Family<GrpcMethodLabels, Histogram>,
}

impl GrpcServerMetrics {
    fn registered(registry: &MetricsRegistry) -> Self {
        let calls = registry.shared(
            "grpc_server_calls",
            "gRPC calls handled, by method and status code",
            Family::<GrpcCallLabels, Counter>::default,
        );
        let latency = registry.shared(
            "grpc_server_latency_seconds",
            "time to the response headers of gRPC calls, by method",
            || Family::<GrpcMethodLabels, Histogram>::new_with_constructor(latency_histogram),
        );
        Self { calls, latency }
    }
}

/// Latency buckets from 100 µs to ~13 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 18,
    ))
}

/// Refuses calls from participants the server's [`Callers`] does not name, before they reach a
/// route (see [`crate::identity`]).
#[derive(Clone)]
struct CallerCheckLayer {
    check: CallerCheck,
}

impl<S> tower::Layer<S> for CallerCheckLayer {
    type Service = CallerCheckService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallerCheckService {
            inner,
            check: self.check.clone(),
        }
    }
}

#[derive(Clone)]
struct CallerCheckService<S> {
    inner: S,
    check: CallerCheck,
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>>
    for CallerCheckService<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        futures::future::Either<S::Future, std::future::Ready<Result<Self::Response, Self::Error>>>;

    fn poll_ready(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        match self.check.check(request.uri().path(), request.extensions()) {
            Ok(()) => futures::future::Either::Left(self.inner.call(request)),
            Err(refusal) => {
                let status = tonic::Status::from(refusal);
                tracing::warn!(
                    path = request.uri().path(),
                    refusal = status.message(),
                    "call refused"
                );
                futures::future::Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[derive(Clone)]
struct GrpcMetricsLayer {
    metrics: GrpcServerMetrics,
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcServerMetrics,
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>>
    for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResponseBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let (service, method) = split_grpc_path(request.uri().path());
        let started = Instant::now();
        let response_future = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = response_future.await;
            let code = match &result {
                // A status in the headers means a trailers-only response (an error, usually);
                // otherwise the call is counted as OK when the headers went out.
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<i32>().ok())
                    .map(|code| format!("{:?}", tonic::Code::from_i32(code)))
                    .unwrap_or_else(|| "Ok".to_string()),
                Err(_) => "Internal".to_string(),
            };
            // A path no route serves is answered UNIMPLEMENTED: one series for all of them, so
            // random paths cannot create series without bound.
            let (service, method) = if code == "Unimplemented" {
                (UNKNOWN_LABEL.to_string(), UNKNOWN_LABEL.to_string())
            } else {
                (service, method)
            };
            metrics
                .latency
                .get_or_create(&GrpcMethodLabels {
                    service: service.clone(),
                    method: method.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
            metrics
                .calls
                .get_or_create(&GrpcCallLabels {
                    service,
                    method,
                    code,
                })
                .inc();
            result
        })
    }
}

/// Splits `/package.Service/Method` into its service and method at the first `/` after the
/// leading one, so an odd path keeps its shape (`//a.B/M` is service `` and method `a.B/M`).
pub fn split_grpc_path(path: &str) -> (String, String) {
    let without_slash = path.strip_prefix('/').unwrap_or(path);
    match without_slash.split_once('/') {
        Some((service, method)) => (service.to_string(), method.to_string()),
        None => (without_slash.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use tonic_health::pb::health_check_response::ServingStatus as Status;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    use super::*;
    use crate::pki::DevPki;
    use crate::shutdown::shutdown_channel;

    #[test]
    fn servers_sharing_a_registry_expose_each_metric_family_once() {
        let registry = MetricsRegistry::default();
        let first = GrpcServerMetrics::registered(&registry);
        let second = GrpcServerMetrics::registered(&registry);
        ListenerMetrics::registered(&registry);
        ListenerMetrics::registered(&registry);
        for (metrics, service) in [(&first, "a.Service"), (&second, "b.Service")] {
            metrics
                .calls
                .get_or_create(&GrpcCallLabels {
                    service: service.to_string(),
                    method: "Get".to_string(),
                    code: "OK".to_string(),
                })
                .inc();
        }
        let text = registry.encode();
        for family in [
            "shlyuz_grpc_server_calls",
            "shlyuz_server_connections_open",
            "shlyuz_server_connections_refused",
        ] {
            let declared = text
                .lines()
                .filter(|line| line.starts_with(&format!("# TYPE {family} ")))
                .count();
            assert_eq!(declared, 1, "{family} declared {declared} times:\n{text}");
        }
        assert!(text.contains(r#"service="a.Service""#), "{text}");
        assert!(text.contains(r#"service="b.Service""#), "{text}");
    }

    async fn mutual_tls_server(
        pki_dir: &std::path::Path,
        readiness_grace: Duration,
    ) -> (GrpcServer, SocketAddr, SocketAddr) {
        let pki = DevPki::ensure(pki_dir, &["registry"]).expect("development PKI");
        let files = pki.participant("registry").expect("registry files");
        let settings = ServerSettings {
            name: "registry".to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            transport: Transport::MutualTls(TlsFiles {
                ca_cert: pki.ca_cert_path().to_path_buf(),
                cert: files.tls_cert,
                key: files.tls_key,
            }),
            readiness_grace,
            drain_timeout: Duration::from_secs(5),
            max_connection_age: None,
            callers: Callers::Any,
            listener: ListenerOptions::default(),
        };
        let mut server = GrpcServer::bind(settings, &MetricsRegistry::default())
            .await
            .expect("bind");
        server
            .bind_health_listener(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind health listener");
        let main = server.local_addr().expect("main address");
        let health = server
            .health_local_addr()
            .expect("health listener bound")
            .expect("health address");
        (server, main, health)
    }

    async fn plaintext_channel(address: SocketAddr) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("plaintext connection to the health listener")
    }

    fn request(service: &str) -> HealthCheckRequest {
        HealthCheckRequest {
            service: service.to_string(),
        }
    }

    async fn next_status(stream: &mut tonic::Streaming<HealthCheckResponse>) -> Option<Status> {
        let message = stream.message().await.expect("watch stream")?;
        Some(Status::try_from(message.status).expect("known status"))
    }

    #[tokio::test]
    async fn plaintext_health_listener_reports_liveness_and_readiness_through_the_drain() {
        let pki_dir = tempfile::tempdir().expect("temp dir");
        // A long grace keeps the server in the "readiness off" phase while the test looks.
        let (server, main, health) =
            mutual_tls_server(pki_dir.path(), Duration::from_secs(600)).await;
        let (trigger, signal) = shutdown_channel();
        let serving = tokio::spawn(server.serve(tonic::service::Routes::default(), signal));

        let channel = plaintext_channel(health).await;
        let mut health_client = HealthClient::new(channel.clone());
        let mut readiness = health_client
            .watch(request(READINESS_SERVICE))
            .await
            .expect("watch readiness")
            .into_inner();
        let mut status = next_status(&mut readiness).await;
        while status == Some(Status::ServiceUnknown) {
            status = next_status(&mut readiness).await;
        }
        assert_eq!(status, Some(Status::Serving));
        let liveness = health_client
            .check(request(""))
            .await
            .expect("liveness check without a client certificate");
        assert_eq!(liveness.into_inner().status, Status::Serving as i32);

        // Only health is served there: reflection (served on the main port) is not.
        let mut reflection =
            tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
                channel,
            );
        let refused = reflection
            .server_reflection_info(futures::stream::iter(Vec::<
                tonic_reflection::pb::v1::ServerReflectionRequest,
            >::new()))
            .await
            .expect_err("reflection on the health listener");
        assert_eq!(refused.code(), tonic::Code::Unimplemented);

        // The main port still demands TLS: a plaintext client gets no health answer there.
        let main_plaintext = tonic::transport::Endpoint::from_shared(format!("http://{main}"))
            .expect("endpoint")
            .connect()
            .await;
        if let Ok(main_channel) = main_plaintext {
            let answer = HealthClient::new(main_channel).check(request("")).await;
            assert!(answer.is_err(), "plaintext call on the mTLS port answered");
        }

        trigger.trigger();
        assert_eq!(next_status(&mut readiness).await, Some(Status::NotServing));
        let liveness = health_client
            .check(request(""))
            .await
            .expect("liveness during the drain");
        assert_eq!(liveness.into_inner().status, Status::Serving as i32);
        serving.abort();
    }

    #[tokio::test]
    async fn plaintext_health_listener_closes_when_the_server_stops() {
        let pki_dir = tempfile::tempdir().expect("temp dir");
        let (server, _main, health) = mutual_tls_server(pki_dir.path(), Duration::ZERO).await;
        let (trigger, signal) = shutdown_channel();
        let serving = tokio::spawn(server.serve(tonic::service::Routes::default(), signal));
        let mut health_client = HealthClient::new(plaintext_channel(health).await);
        let mut liveness = health_client
            .watch(request(""))
            .await
            .expect("watch liveness")
            .into_inner();
        let mut status = next_status(&mut liveness).await;
        while status == Some(Status::ServiceUnknown) {
            status = next_status(&mut liveness).await;
        }
        assert_eq!(status, Some(Status::Serving));

        trigger.trigger();
        serving
            .await
            .expect("serve task")
            .expect("server stopped cleanly");
        let reconnect = tonic::transport::Endpoint::from_shared(format!("http://{health}"))
            .expect("endpoint")
            .connect()
            .await;
        assert!(
            reconnect.is_err(),
            "health listener still accepts connections"
        );
    }
}
