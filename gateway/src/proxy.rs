//! The sync channel: every call that is not one of the gateway's public endpoints (health,
//! reflection) lands here. The gateway authenticates the caller from its client certificate,
//! applies the access rule, envelope, quota, replay, signature and consent checks, forwards the
//! call to the upstream (or to the gateway's own services) with a bounded deadline, and writes the
//! message-log entry before the caller gets the call's final status.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use http_body_util::BodyExt;
use shlyuz_kit::backoff::Backoff;
use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::error::ApiError;
use shlyuz_kit::identity::IdentityCache;
use tonic::Code;
use tower::ServiceExt;

use crate::admission::RequestBudget;
use crate::consent::{ConsentChecker, ConsentQuery};
use crate::directory::{Directory, DirectoryHandle, Route};
use crate::envelope::{self, Envelope};
use crate::grpc_frames::{PayloadHasher, format_grpc_timeout, parse_grpc_timeout, single_message};
use crate::identity::CallerIdentity;
use crate::message_log::{Channel, LogRecord, MessageLog};
use crate::metrics::{GatewayMetrics, ObservedCall};
use crate::policy::{QuotaBuckets, ReplayGuard};
use crate::replay_store::SharedReplayGuard;
use crate::upstream::Upstreams;
use shlyuz_kit::error::reasons;

/// The async channel's service, whose SendMessage deduplicates message ids itself.
const ASYNC_CHANNEL_SERVICE: &str = "shlyuz.gateway.v1.AsyncChannelService";

/// The body type of requests and responses inside the gateway.
pub type GatewayBody = axum::body::Body;

/// The refusal of a message id the sender already used within the replay window.
fn replayed(message_id: &str, sender: &str) -> ApiError {
    ApiError::already_exists(
        "MESSAGE_REPLAYED",
        format!("message {message_id} was already sent by {sender}"),
    )
}

/// Envelope versions and admission limits of the sync channel.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Accept signatures over the legacy canonical string `shlyuz-envelope-v1`.
    pub accept_envelope_v1: bool,
    /// Calls per second one client certificate identity may make, refused ones included.
    pub caller_rate_per_second: f64,
    /// Burst of that rate.
    pub caller_burst: u32,
    /// How long the request message of a call may take to arrive.
    pub request_body_timeout: Duration,
    /// Request bytes all calls together may hold before their checks.
    pub max_buffered_request_bytes: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            accept_envelope_v1: true,
            caller_rate_per_second: 20_000.0,
            caller_burst: 20_000,
            request_body_timeout: Duration::from_secs(10),
            max_buffered_request_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Longest part of an asked path kept in the log entry of a call refused for its path.
const MAX_LOGGED_PATH: usize = 512;

/// What the gateway enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Identity, access rules, envelope, quota, replay, signature, consent and the message log.
    #[default]
    Full,
    /// Routing only (still behind mTLS): for measuring the proxy itself. Never for production.
    PassThrough,
}

/// The gateway's shared state for the sync channel.
pub struct SyncChannel {
    directory: DirectoryHandle,
    message_log: MessageLog,
    consent: Arc<dyn ConsentChecker>,
    upstreams: Arc<Upstreams>,
    local_services: axum::Router,
    quotas: QuotaBuckets,
    replay: ReplayGuard,
    identities: IdentityCache,
    metrics: GatewayMetrics,
    clock: SharedClock,
    mode: PolicyMode,
    store_bodies: bool,
    shared_replay: Option<SharedReplayGuard>,
    options: SyncOptions,
    caller_limits: QuotaBuckets,
    request_budget: Arc<RequestBudget>,
}

/// Everything the sync channel is built from.
pub struct SyncChannelParts {
    /// Participants, routes and rules.
    pub directory: DirectoryHandle,
    /// Where entries go.
    pub message_log: MessageLog,
    /// The consent store.
    pub consent: Arc<dyn ConsentChecker>,
    /// Connections and circuit breakers of the upstreams, shared with the async channel.
    pub upstreams: Arc<Upstreams>,
    /// The gateway's own gRPC services (directory, message log, access log), reached like upstreams.
    pub local_services: axum::Router,
    /// Metrics.
    pub metrics: GatewayMetrics,
    /// Time source.
    pub clock: SharedClock,
    /// What to enforce.
    pub mode: PolicyMode,
    /// Keep request and response bodies in the message log.
    pub store_bodies: bool,
    /// The replay guard shared with the other replicas, when `gateway.replay_guard = "shared"`.
    pub shared_replay: Option<SharedReplayGuard>,
    /// Envelope versions and admission limits.
    pub options: SyncOptions,
}

impl SyncChannel {
    /// Builds the channel.
    pub fn new(parts: SyncChannelParts) -> Arc<Self> {
        let request_budget = RequestBudget::new(
            parts.options.max_buffered_request_bytes,
            parts.metrics.buffered_request_bytes(),
        );
        Arc::new(Self {
            request_budget,
            directory: parts.directory,
            message_log: parts.message_log,
            consent: parts.consent,
            upstreams: parts.upstreams,
            local_services: parts.local_services,
            quotas: QuotaBuckets::default(),
            replay: ReplayGuard::default(),
            identities: IdentityCache::default(),
            metrics: parts.metrics,
            clock: parts.clock,
            mode: parts.mode,
            store_bodies: parts.store_bodies,
            shared_replay: parts.shared_replay,
            options: parts.options,
            caller_limits: QuotaBuckets::default(),
        })
    }

    /// Handles one call end to end. The call runs in its own task, so that it reaches its
    /// message-log entry even when the caller's connection drops or the server abandons the call
    /// at the caller's deadline.
    pub async fn handle(
        self: Arc<Self>,
        request: http::Request<GatewayBody>,
    ) -> http::Response<GatewayBody> {
        match tokio::spawn(self.handle_in_task(request)).await {
            Ok(response) => response,
            Err(join_error) => {
                tracing::error!(error = %join_error, "gateway call task failed");
                tonic::Status::internal("the gateway failed while handling the call")
                    .into_http::<GatewayBody>()
            }
        }
    }

    async fn handle_in_task(
        self: Arc<Self>,
        request: http::Request<GatewayBody>,
    ) -> http::Response<GatewayBody> {
        let started = Instant::now();
        // Logged as asked (query included, bounded), so a refused odd path is visible as such.
        let asked: String = request
            .uri()
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .chars()
            .take(MAX_LOGGED_PATH)
            .collect();
        let (service, method) = shlyuz_kit::server::split_grpc_path(&asked);
        let mut call = CallRecord {
            started,
            service,
            method,
            ..CallRecord::default()
        };
        // What the caller claims, until the envelope is validated: a call refused before that
        // (unknown participant, no route) is still logged under the message id it was sent with.
        call.copy_raw_envelope(request.headers());
        let parent_context = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let span = tracing::info_span!(
            "gateway.call",
            otel.kind = "server",
            rpc.service = %call.service,
            rpc.method = %call.method,
            participant = tracing::field::Empty,
            message_id = tracing::field::Empty,
        );
        {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let _ = span.set_parent(parent_context);
        }
        let outcome =
            tracing::Instrument::instrument(self.clone().process(request, &mut call), span).await;
        match outcome {
            Ok(response) => response,
            Err(refusal) => self.refuse(call, refusal).await,
        }
    }

    async fn process(
        self: Arc<Self>,
        request: http::Request<GatewayBody>,
        call: &mut CallRecord,
    ) -> Result<http::Response<GatewayBody>, ApiError> {
        let (mut parts, body) = request.into_parts();
        let participant_id = match self.mode {
            PolicyMode::Full => self.admit_caller(&parts.extensions, call)?,
            PolicyMode::PassThrough => String::new(),
        };
        crate::admission::check_metadata_size(&parts.headers)?;
        // Only `/package.Service/Method`, exactly: an upstream that normalises paths must never
        // be reached at a method the log does not show.
        check_exact_path(&parts.uri)?;
        let directory = self.directory.snapshot();
        let Some(route) = directory.route(&call.service) else {
            return Err(ApiError::new(
                Code::Unimplemented,
                "UNKNOWN_SERVICE",
                format!("no route for service {}", call.service),
            ));
        };
        if !route.methods.contains(&call.method) {
            return Err(ApiError::new(
                Code::Unimplemented,
                "UNKNOWN_METHOD",
                format!("{} has no method {} routed", call.service, call.method),
            ));
        }
        call.routed = true;
        if self.mode == PolicyMode::PassThrough {
            // What the gateway states upstream is never taken from the caller, even here.
            parts.headers.remove(envelope::SENDER);
            parts.headers.remove(envelope::CHANNEL);
            let upstream_request = http::Request::from_parts(parts, body);
            return self
                .forward(&directory, route, upstream_request, None, call)
                .await;
        }

        let Some(participant) = directory.participant(&participant_id) else {
            return Err(ApiError::unauthenticated(
                reasons::UNKNOWN_PARTICIPANT,
                format!("participant {participant_id} is not registered with the gateway"),
            ));
        };
        if let Some(pinned) = participant.certificate_sha256
            && peer_certificate_sha256(&parts.extensions) != Some(pinned)
        {
            return Err(ApiError::unauthenticated(
                "CERTIFICATE_MISMATCH",
                format!("the client certificate is not the one registered for {participant_id}"),
            ));
        }
        if let Some(quota) = &participant.quota
            && let Err(wait) =
                self.quotas
                    .try_acquire(&participant_id, quota.rate_per_second, quota.burst)
        {
            return Err(ApiError::resource_exhausted(
                "QUOTA_EXCEEDED",
                format!(
                    "participant {participant_id} exceeded its quota of {} calls/s",
                    quota.rate_per_second
                ),
                wait,
            ));
        }

        // Only the gateway's own services that return no personal data may be called without
        // an envelope (grpcurl): everything else is signed and names its purpose and subject.
        let envelope_optional = route.is_local() && !route.personal_data;
        let envelope = match envelope::parse_envelope(&parts.headers) {
            Ok(envelope) => Some(envelope),
            Err(_) if envelope_optional && !parts.headers.contains_key(envelope::MESSAGE_ID) => {
                None
            }
            Err(error) => {
                call.copy_raw_envelope(&parts.headers);
                return Err(error);
            }
        };
        if let Some(envelope) = &envelope {
            call.copy_envelope(envelope);
            tracing::Span::current().record("message_id", envelope.message_id.as_str());
            if envelope.version == envelope::EnvelopeVersion::V1 && !self.options.accept_envelope_v1
            {
                return Err(ApiError::invalid_field(
                    envelope::ENVELOPE_VERSION,
                    "must be 2: this gateway accepts only shlyuz-envelope-v2 signatures",
                )
                .with_reason("ENVELOPE_VERSION_UNSUPPORTED"));
            }
        }
        call.personal_data = route.personal_data;

        let rule = crate::policy::access_rule(
            &directory,
            route,
            &participant_id,
            &call.service,
            &call.method,
            &call.purpose,
            &call.subject_iin,
        )?;

        let now_ms = self.clock.now_millis();
        let replay_window_ms = directory.settings().replay_window.as_millis() as i64;
        if let Some(envelope) = &envelope
            && (envelope.timestamp_ms - now_ms).abs() > replay_window_ms
        {
            return Err(ApiError::invalid_field(
                envelope::TIMESTAMP,
                format!(
                    "is more than {} s away from the gateway's clock",
                    replay_window_ms / 1000
                ),
            )
            .with_reason("MESSAGE_EXPIRED"));
        }

        // SendMessage is idempotent on the message id by design (a repeat gets the first
        // receipt), so a resent message id is answered by the async channel, not refused here.
        let idempotent_by_message_id =
            call.service == ASYNC_CHANNEL_SERVICE && call.method == "SendMessage";
        if let Some(envelope) = &envelope
            && !idempotent_by_message_id
            && !self.replay.first_sighting(
                &participant_id,
                &envelope.message_id,
                now_ms,
                envelope.timestamp_ms + replay_window_ms,
            )
        {
            call.replayed = true;
            return Err(replayed(&envelope.message_id, &participant_id));
        }
        // Replicas sharing a database: the call must also be the first the others have seen.
        if let (Some(shared), Some(envelope)) = (&self.shared_replay, &envelope)
            && !idempotent_by_message_id
        {
            let first = shared
                .claim(
                    &participant_id,
                    &envelope.message_id,
                    now_ms,
                    envelope.timestamp_ms + replay_window_ms,
                )
                .await;
            match first {
                Ok(true) => {}
                Ok(false) => {
                    call.replayed = true;
                    return Err(replayed(&envelope.message_id, &participant_id));
                }
                Err(error) => {
                    self.replay.forget(&participant_id, &envelope.message_id);
                    return Err(error);
                }
            }
        }

        let result = self
            .clone()
            .checked_forward(
                &directory,
                route,
                &mut parts,
                body,
                envelope.as_ref(),
                rule.consent_required,
                call,
            )
            .await;
        if result.is_err()
            && !call.reached_upstream
            && let Some(envelope) = &envelope
        {
            // Refused before reaching the upstream: the sender may correct the call and retry it
            // with the same message id. Once the upstream may have run it (a timeout, a lost
            // answer, a log failure after it), the id stays spent.
            self.replay.forget(&participant_id, &envelope.message_id);
            if let Some(shared) = &self.shared_replay {
                shared.release(&participant_id, &envelope.message_id).await;
            }
        }
        result
    }

    /// The caller's participant id from its client certificate, within the per-identity rate
    /// limit — checked before anything else, so a flood of calls that would be refused is cut
    /// before any work is done for them.
    fn admit_caller(
        &self,
        extensions: &http::Extensions,
        call: &mut CallRecord,
    ) -> Result<String, ApiError> {
        let participant_id = self.identities.participant_of(extensions)?;
        tracing::Span::current().record("participant", participant_id.as_str());
        call.sender = participant_id.clone();
        if let Err(wait) = self.caller_limits.try_acquire(
            &participant_id,
            self.options.caller_rate_per_second,
            self.options.caller_burst,
        ) {
            return Err(ApiError::resource_exhausted(
                "RATE_LIMITED",
                format!(
                    "{participant_id} exceeded the gateway's limit of {} calls/s per client certificate",
                    self.options.caller_rate_per_second
                ),
                wait,
            ));
        }
        Ok(participant_id)
    }

    #[allow(clippy::too_many_arguments)]
    async fn checked_forward(
        self: Arc<Self>,
        directory: &Directory,
        route: &Route,
        parts: &mut http::request::Parts,
        body: GatewayBody,
        envelope: Option<&Envelope>,
        consent_required: bool,
        call: &mut CallRecord,
    ) -> Result<http::Response<GatewayBody>, ApiError> {
        let streaming_request = route.client_streaming_methods.contains(&call.method);
        // The lease is held until the call is over: the buffered request stays counted while it
        // may still be resent.
        let (request_body, buffered, _request_lease) = if streaming_request {
            (body, None, None)
        } else {
            let (collected, lease) = crate::admission::read_request(
                body,
                route.max_request_bytes,
                self.options.request_body_timeout,
                &self.request_budget,
            )
            .await?;
            let message = single_message(&collected)
                .map_err(|problem| ApiError::invalid_field("request", problem))?;
            call.request_hash = Some(sha256(message));
            if self.store_bodies {
                call.request_body = Some(message.to_vec());
            }
            (
                GatewayBody::from(collected.clone()),
                Some(collected),
                Some(lease),
            )
        };
        let request_hash_hex = call.request_hash.map(hex::encode).unwrap_or_default();
        if let Some(envelope) = envelope {
            let Some(participant) = directory.participant(&call.sender) else {
                return Err(ApiError::unauthenticated(
                    reasons::UNKNOWN_PARTICIPANT,
                    "participant vanished",
                ));
            };
            let path = parts.uri.path().to_string();
            envelope.verify(&participant.signing_key, &path, &request_hash_hex)?;
        }
        if consent_required {
            let query = ConsentQuery {
                participant: &call.sender,
                subject_iin: &call.subject_iin,
                purpose: &call.purpose,
                consent_id: &call.consent_id,
                now_ms: self.clock.now_millis(),
            };
            crate::consent::require_consent(self.consent.as_ref(), query).await?;
        }

        // The upstream sees the envelope the gateway checked (each key once, the message id in
        // its one normal form) and the gateway's own statement of the sender — no other
        // `x-shlyuz-*` header of the caller's.
        remove_caller_envelope_headers(&mut parts.headers);
        if let Some(envelope) = envelope {
            insert_envelope_headers(&mut parts.headers, envelope);
        }
        if let Ok(sender) = HeaderValue::from_str(&call.sender) {
            parts.headers.insert(envelope::SENDER, sender);
        }
        parts.extensions.insert(CallerIdentity {
            participant_id: call.sender.clone(),
        });
        let upstream_request = http::Request::from_parts(clone_parts(parts), request_body);
        let mut response = self
            .forward(directory, route, upstream_request, buffered, call)
            .await?;
        if !request_hash_hex.is_empty()
            && let Ok(value) = HeaderValue::from_str(&request_hash_hex)
        {
            response.headers_mut().insert(envelope::REQUEST_HASH, value);
        }
        Ok(response)
    }

    async fn forward(
        self: &Arc<Self>,
        _directory: &Directory,
        route: &Route,
        mut request: http::Request<GatewayBody>,
        buffered: Option<Bytes>,
        call: &mut CallRecord,
    ) -> Result<http::Response<GatewayBody>, ApiError> {
        let caller_timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        let timeout = upstream_timeout(caller_timeout, route.timeout);
        if let Ok(value) = HeaderValue::from_str(&format_grpc_timeout(timeout)) {
            request.headers_mut().insert("grpc-timeout", value);
        }
        {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let context = tracing::Span::current().context();
            opentelemetry::global::get_text_map_propagator(|propagator| {
                propagator.inject_context(&context, &mut HeaderInjector(request.headers_mut()))
            });
        }
        let deadline = tokio::time::Instant::now() + timeout;

        let response = if route.is_local() {
            call.reached_upstream = true;
            let local = self.local_services.clone();
            match local.oneshot(request).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            }
        } else {
            self.forward_upstream(route, request, buffered, deadline, call)
                .await?
        };

        if self.mode == PolicyMode::PassThrough {
            // Routing only: the response goes back untouched, without hashing or logging.
            self.metrics
                .observe(&call.observed(), call.started.elapsed());
            return Ok(response);
        }
        let (mut parts, body) = response.into_parts();
        take_response_subjects(&mut parts.headers, call)?;
        if let Some(status) = tonic::Status::from_header_map(&parts.headers) {
            // Trailers-only response: the call is over; log it before the caller sees it.
            call.status_code = status.code() as i32;
            call.set_answered_reason(route.is_local(), &status);
            let position = self.finish(call).await?;
            insert_position(&mut parts.headers, &position);
            return Ok(http::Response::from_parts(parts, GatewayBody::empty()));
        }
        if !route.server_streaming_methods.contains(&call.method) {
            return self
                .release_when_logged(parts, body, route, deadline, call)
                .await;
        }
        // A server stream cannot wait for its end: an entry that it opened is durable before
        // its first message leaves, and a second entry closes it with its status.
        let mut opening = call.clone();
        opening.reason = STREAM_OPENED.to_string();
        let position = self.record(&mut opening).await?;
        insert_position(&mut parts.headers, &position);
        let finisher = CallFinisher {
            channel: self.clone(),
            call: std::mem::take(call),
            local: route.is_local(),
        };
        let logged = LoggedBody::new(body, finisher, route.max_response_bytes as u64);
        Ok(http::Response::from_parts(parts, GatewayBody::new(logged)))
    }

    /// Reads a unary response whole (bounded by the route's limit and the deadline), writes its
    /// entry, and only once that is durable hands the response to the caller: when the log
    /// cannot be written the caller gets `MESSAGE_LOG_UNAVAILABLE` and not one response byte.
    async fn release_when_logged(
        &self,
        parts: http::response::Parts,
        body: GatewayBody,
        route: &Route,
        deadline: tokio::time::Instant,
        call: &mut CallRecord,
    ) -> Result<http::Response<GatewayBody>, ApiError> {
        let max_bytes = route.max_response_bytes;
        let limited = http_body_util::Limited::new(body, max_bytes);
        let collected = match tokio::time::timeout_at(deadline, limited.collect()).await {
            Ok(Ok(collected)) => collected,
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::new(
                    Code::ResourceExhausted,
                    "MESSAGE_TOO_LARGE",
                    format!("the response exceeds the route's limit of {max_bytes} bytes"),
                ));
            }
            Ok(Err(error)) => {
                return Err(ApiError::unavailable(
                    reasons::UPSTREAM_UNAVAILABLE,
                    format!("the upstream failed mid-call: {error}"),
                ));
            }
            Err(_elapsed) => {
                return Err(ApiError::new(
                    Code::DeadlineExceeded,
                    reasons::UPSTREAM_TIMEOUT,
                    "the upstream did not finish its response in time",
                ));
            }
        };
        let Some(mut trailers) = collected.trailers().cloned() else {
            return Err(ApiError::new(
                Code::Internal,
                "UPSTREAM_PROTOCOL_ERROR",
                "the upstream ended the call without a status",
            ));
        };
        let data = collected.to_bytes();
        let mut hasher = PayloadHasher::default();
        hasher.update(&data);
        let status = tonic::Status::from_header_map(&trailers);
        call.status_code = status
            .as_ref()
            .map(|status| status.code() as i32)
            .unwrap_or(Code::Unknown as i32);
        if let Some(status) = &status {
            call.set_answered_reason(route.is_local(), status);
        }
        call.response_hash = hasher.finish();
        if self.store_bodies {
            call.response_body = Some(data.to_vec());
        }
        let position = self.finish(call).await?;
        insert_position(&mut trailers, &position);
        let released = ReleasedBody {
            data: (!data.is_empty()).then_some(data),
            trailers: Some(trailers),
        };
        Ok(http::Response::from_parts(
            parts,
            GatewayBody::new(released),
        ))
    }

    async fn forward_upstream(
        &self,
        route: &Route,
        request: http::Request<GatewayBody>,
        buffered: Option<Bytes>,
        deadline: tokio::time::Instant,
        call: &mut CallRecord,
    ) -> Result<http::Response<GatewayBody>, ApiError> {
        let breaker = self.upstreams.breaker(&route.upstream);
        let mut permit = breaker.admit(&route.breaker).map_err(|_| {
            ApiError::unavailable(
                reasons::UPSTREAM_UNAVAILABLE,
                format!("the circuit breaker for {} is open", route.upstream),
            )
        })?;
        let channel = self
            .upstreams
            .channel(&route.upstream, &route.upstream_server_name)
            .map_err(|error| {
                ApiError::unavailable(reasons::UPSTREAM_UNAVAILABLE, format!("{error:#}"))
            })?;
        let idempotent = buffered.is_some() && route.idempotent_methods.contains(&call.method);
        let max_attempts = if idempotent {
            route.retry.max_attempts.max(1)
        } else {
            1
        };
        let (parts, body) = request.into_parts();
        let mut body = Some(body);
        let backoff = Backoff::uncapped(route.retry.initial_backoff).with_jitter_percent(50..150);
        let mut attempt = 1;
        loop {
            let attempt_body = match (&buffered, body.take()) {
                (Some(bytes), _) if attempt > 1 => GatewayBody::from(bytes.clone()),
                (_, Some(original)) => original,
                (_, None) => GatewayBody::empty(),
            };
            let attempt_request = http::Request::from_parts(
                clone_parts(&parts),
                tonic::body::Body::new(attempt_body),
            );
            call.reached_upstream = true;
            let sent =
                tokio::time::timeout_at(deadline, channel.clone().oneshot(attempt_request)).await;
            let sent = match sent {
                // The channel enforces `grpc-timeout` itself; its expiry is the same deadline.
                Ok(Err(transport_error)) if caused_by_timeout(&transport_error) => Err(()),
                Err(_elapsed) => Err(()),
                Ok(other) => Ok(other),
            };
            let failure = match sent {
                Err(()) => {
                    permit.failed();
                    return Err(ApiError::new(
                        Code::DeadlineExceeded,
                        reasons::UPSTREAM_TIMEOUT,
                        format!(
                            "{} did not answer within {:?}",
                            route.upstream, route.timeout
                        ),
                    ));
                }
                Ok(Err(transport_error)) => format!("{transport_error}"),
                Ok(Ok(response)) => {
                    // A service's reasoned status (any code) is its answer: the hop worked, and
                    // the status goes to the caller as it came. Only a bare UNAVAILABLE is the
                    // hop's failure.
                    let status_in_headers = tonic::Status::from_header_map(response.headers());
                    match status_in_headers {
                        Some(status) if crate::upstream::is_hop_failure(&status) => {
                            status.message().to_string()
                        }
                        _ => {
                            permit.succeeded();
                            return Ok(response.map(GatewayBody::new));
                        }
                    }
                }
            };
            permit.failed();
            call.attempts = attempt;
            let unavailable = || {
                ApiError::unavailable(
                    reasons::UPSTREAM_UNAVAILABLE,
                    format!("{} is unavailable: {failure}", route.upstream),
                )
            };
            if attempt >= max_attempts {
                return Err(unavailable());
            }
            permit = breaker.admit(&route.breaker).map_err(|_| unavailable())?;
            let wait = backoff.delay(i64::from(attempt));
            if tokio::time::Instant::now()
                .checked_add(wait)
                .is_none_or(|retry_at| retry_at >= deadline)
            {
                return Err(unavailable());
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Logs a refused call and answers it with the refusal.
    async fn refuse(
        self: Arc<Self>,
        mut call: CallRecord,
        refusal: ApiError,
    ) -> http::Response<GatewayBody> {
        call.status_code = refusal.code() as i32;
        call.set_own_reason(refusal.reason());
        tracing::info!(
            participant = %call.sender,
            service = %call.service,
            method = %call.method,
            reason = %call.reason,
            "call refused"
        );
        let position = if self.mode == PolicyMode::Full {
            self.finish(&mut call).await.ok()
        } else {
            self.metrics
                .observe(&call.observed(), call.started.elapsed());
            None
        };
        let status: tonic::Status = refusal.into();
        let mut response = status.into_http::<GatewayBody>();
        if let Some(position) = position {
            insert_position(response.headers_mut(), &position);
        }
        response
    }

    /// Writes the entry for a finished call and waits until it is durable.
    async fn finish(
        &self,
        call: &mut CallRecord,
    ) -> Result<crate::message_log::LogPosition, ApiError> {
        self.metrics
            .observe(&call.observed(), call.started.elapsed());
        self.record(call).await
    }

    /// Writes an entry for `call` as it stands and waits until it is durable.
    async fn record(
        &self,
        call: &mut CallRecord,
    ) -> Result<crate::message_log::LogPosition, ApiError> {
        let duration = call.started.elapsed();
        if self.mode == PolicyMode::PassThrough {
            return Err(ApiError::internal("no message log in pass-through mode"));
        }
        let record = LogRecord {
            time_ms: self.clock.now_millis(),
            message_id: call.message_id.clone(),
            correlation_id: call.correlation_id.clone(),
            sender: call.sender.clone(),
            user_id: call.user_id.clone(),
            service: call.service.clone(),
            method: call.method.clone(),
            purpose: call.purpose.clone(),
            subject_iin: call.subject_iin.clone(),
            request_hash: call.request_hash.unwrap_or([0; 32]),
            response_hash: call.response_hash,
            status_code: call.status_code,
            reason: call.reason.clone(),
            duration_us: i64::try_from(duration.as_micros()).unwrap_or(i64::MAX),
            channel: Channel::Sync,
            personal_data: call.personal_data,
            request_body: call.request_body.take(),
            response_body: call.response_body.take(),
        };
        self.message_log.append(record).await.map_err(|error| {
            tracing::error!(error = %error, "message log append failed");
            ApiError::unavailable(
                "MESSAGE_LOG_UNAVAILABLE",
                "the gateway could not record the call in its message log",
            )
        })
    }
}

/// `reason` of the entry a server stream writes before its first message.
pub const STREAM_OPENED: &str = "STREAM_OPENED";

/// `UNIMPLEMENTED` / `UNKNOWN_METHOD` unless `uri` is exactly `/package.Service/Method`: no query,
/// no empty, `.` or `..` segment, no trailing slash.
fn check_exact_path(uri: &http::Uri) -> Result<(), ApiError> {
    let exact = uri.query().is_none()
        && uri
            .path()
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(service, method)| {
                crate::directory::check_service_name(service).is_ok()
                    && crate::directory::is_identifier(method)
            });
    if exact {
        return Ok(());
    }
    Err(ApiError::new(
        Code::Unimplemented,
        "UNKNOWN_METHOD",
        "the path is not a gRPC method path of the form /package.Service/Method",
    ))
}

/// Adds the persons an upstream says its answer is about (`x-shlyuz-response-subjects`) to the
/// call's subjects, so they get subject-access rows, and removes the header. A malformed list
/// fails the call: an answer about unknown persons must not leave unlogged.
fn take_response_subjects(headers: &mut HeaderMap, call: &mut CallRecord) -> Result<(), ApiError> {
    let Some(value) = headers.remove(envelope::RESPONSE_SUBJECTS) else {
        return Ok(());
    };
    let declared = value
        .to_str()
        .map_err(|_| "is not ASCII".to_string())
        .and_then(shlyuz_kit::subject::Subjects::parse)
        .map_err(|problem| {
            ApiError::new(
                Code::Internal,
                "UPSTREAM_PROTOCOL_ERROR",
                format!(
                    "the upstream named the subjects of its answer wrongly ({}): {problem}",
                    envelope::RESPONSE_SUBJECTS
                ),
            )
        })?;
    let mut seen: std::collections::HashSet<String> = call
        .subject_iin
        .split(',')
        .filter(|iin| !iin.is_empty())
        .map(str::to_string)
        .collect();
    let mut merged = call.subject_iin.clone();
    for iin in declared.iins() {
        if seen.insert(iin.to_string()) {
            if !merged.is_empty() {
                merged.push(',');
            }
            merged.push_str(iin);
        }
    }
    call.subject_iin = merged;
    call.personal_data = true;
    Ok(())
}

/// Removes every `x-shlyuz-*` header the caller sent.
fn remove_caller_envelope_headers(headers: &mut HeaderMap) {
    let names: Vec<http::header::HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(envelope::HEADER_PREFIX))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Puts the checked envelope back, one value per key, as the gateway validated it.
fn insert_envelope_headers(headers: &mut HeaderMap, checked: &Envelope) {
    use base64::Engine as _;
    let signature = base64::engine::general_purpose::STANDARD.encode(checked.signature);
    let version = match checked.version {
        envelope::EnvelopeVersion::V1 => "",
        envelope::EnvelopeVersion::V2 => "2",
    };
    for (name, value) in [
        (envelope::MESSAGE_ID, checked.message_id.as_str()),
        (envelope::CORRELATION_ID, checked.correlation_id.as_str()),
        (envelope::USER_ID, checked.user_id.as_str()),
        (envelope::USER_ROLE, checked.user_role.as_str()),
        (envelope::USER_REGION, checked.user_region.as_str()),
        (envelope::PURPOSE, checked.purpose.as_str()),
        (envelope::SUBJECT_IIN, checked.subject_iin.as_str()),
        (envelope::CONSENT_ID, checked.consent_id.as_str()),
        (envelope::TIMESTAMP, checked.timestamp.as_str()),
        (envelope::SIGNATURE, signature.as_str()),
        (envelope::ENVELOPE_VERSION, version),
    ] {
        if !value.is_empty()
            && let Ok(value) = HeaderValue::from_str(value)
        {
            headers.insert(http::header::HeaderName::from_static(name), value);
        }
    }
}

/// A unary response released after its log entry is durable: its data, then its trailers.
struct ReleasedBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for ReleasedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(
            self.trailers
                .take()
                .map(|trailers| Ok(Frame::trailers(trailers))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

/// Whether `error` (or one of its causes) is an expired gRPC deadline.
fn caused_by_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current.is::<tonic::TimeoutExpired>() {
            return true;
        }
        cause = current.source();
    }
    false
}

/// How long the upstream gets: the route's timeout, or the caller's deadline when that is
/// shorter, less a margin (10 %, between 20 and 100 ms) in which the gateway still answers
/// `DEADLINE_EXCEEDED` and writes its log entry before the caller's deadline passes.
fn upstream_timeout(caller_timeout: Option<Duration>, route_timeout: Duration) -> Duration {
    match caller_timeout {
        Some(caller) if caller <= route_timeout => {
            let margin = (caller / 10).clamp(Duration::from_millis(20), Duration::from_millis(100));
            caller.saturating_sub(margin).max(Duration::from_millis(1))
        }
        _ => route_timeout,
    }
}

fn insert_position(headers: &mut HeaderMap, position: &crate::message_log::LogPosition) {
    if let Ok(value) =
        HeaderValue::from_str(&format!("{}:{}", position.chain_id, position.sequence))
    {
        headers.insert(envelope::LOG_POSITION, value);
    }
}

fn clone_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut builder = http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        *headers = parts.headers.clone();
    }
    let (mut cloned, ()) = match builder.body(()) {
        Ok(request) => request.into_parts(),
        Err(_) => http::Request::new(()).into_parts(),
    };
    cloned.extensions = parts.extensions.clone();
    cloned
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut hash = [0_u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

fn peer_certificate_sha256(extensions: &http::Extensions) -> Option<[u8; 32]> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let certificates = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    certificates.first().map(|leaf| sha256(leaf.as_ref()))
}

/// What is known about a call, filled in as it progresses, then logged.
#[derive(Debug, Clone)]
pub(crate) struct CallRecord {
    pub(crate) started: Instant,
    pub(crate) sender: String,
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) message_id: String,
    pub(crate) correlation_id: String,
    pub(crate) user_id: String,
    pub(crate) purpose: String,
    pub(crate) subject_iin: String,
    pub(crate) consent_id: String,
    pub(crate) personal_data: bool,
    pub(crate) request_hash: Option<[u8; 32]>,
    pub(crate) response_hash: Option<[u8; 32]>,
    pub(crate) request_body: Option<Vec<u8>>,
    pub(crate) response_body: Option<Vec<u8>>,
    pub(crate) status_code: i32,
    pub(crate) reason: String,
    /// `reason` is an upstream service's own: logged, but not a metric label (the gateway's
    /// reasons are a fixed set; a service's are not the gateway's to bound).
    pub(crate) reason_from_upstream: bool,
    pub(crate) attempts: u32,
    pub(crate) replayed: bool,
    /// The call was handed to the upstream (or a local service), which may have run it.
    pub(crate) reached_upstream: bool,
    /// The service has a route and the method is listed in it: only then are they metric labels.
    pub(crate) routed: bool,
}

impl Default for CallRecord {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            sender: String::new(),
            service: String::new(),
            method: String::new(),
            message_id: String::new(),
            correlation_id: String::new(),
            user_id: String::new(),
            purpose: String::new(),
            subject_iin: String::new(),
            consent_id: String::new(),
            personal_data: false,
            request_hash: None,
            response_hash: None,
            request_body: None,
            response_body: None,
            status_code: 0,
            reason: String::new(),
            reason_from_upstream: false,
            attempts: 1,
            replayed: false,
            reached_upstream: false,
            routed: false,
        }
    }
}

impl CallRecord {
    /// What the metrics count of this call.
    fn observed(&self) -> ObservedCall<'_> {
        ObservedCall {
            participant: &self.sender,
            service: &self.service,
            method: &self.method,
            routed: self.routed,
            status_code: self.status_code,
            reason: if self.reason_from_upstream {
                ""
            } else {
                &self.reason
            },
        }
    }

    /// The entry's reason for a call answered with `status`: the `ErrorInfo` reason of a non-OK
    /// answer, whether one of the gateway's own services refused (the async channel's
    /// `ACCESS_DENIED`, `REPLY_TO_NOT_ALLOWED`, …) or the upstream service said why it failed
    /// (the registry's `UPSTREAM_TIMEOUT`); empty for OK and for a status without one.
    fn set_answered_reason(&mut self, local: bool, status: &tonic::Status) {
        self.reason = crate::upstream::service_reason(status).unwrap_or_default();
        self.reason_from_upstream = !local && !self.reason.is_empty();
    }

    /// The entry's reason is the gateway's own: it ended the call itself.
    fn set_own_reason(&mut self, reason: &str) {
        self.reason = reason.to_string();
        self.reason_from_upstream = false;
    }

    fn copy_envelope(&mut self, envelope: &Envelope) {
        self.message_id = envelope.message_id.clone();
        self.correlation_id = envelope.correlation_id.clone();
        self.user_id = envelope.user_id.clone();
        self.purpose = envelope.purpose.clone();
        self.subject_iin = envelope.subject_iin.clone();
        self.consent_id = envelope.consent_id.clone();
    }

    /// Keeps what can be read of an invalid envelope, bounded, so the refusal's log entry says
    /// what was attempted.
    fn copy_raw_envelope(&mut self, headers: &HeaderMap) {
        let read = |name: &str, limit: usize| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(|text| text.chars().take(limit).collect::<String>())
                .unwrap_or_default()
        };
        self.message_id = read(envelope::MESSAGE_ID, 64);
        self.purpose = read(envelope::PURPOSE, 64);
        // Whole, up to the longest valid list: a refused call must name everyone it asked about.
        self.subject_iin = read(envelope::SUBJECT_IIN, envelope::MAX_SUBJECTS * 13);
        self.correlation_id = read(envelope::CORRELATION_ID, 64);
    }
}

/// Logs a streamed call once its body ends.
struct CallFinisher {
    channel: Arc<SyncChannel>,
    call: CallRecord,
    /// The stream is one of the gateway's own services'.
    local: bool,
}

impl CallFinisher {
    /// Writes the closing entry with the call's reason as it stands.
    async fn finish(
        mut self,
        status_code: i32,
        response_hash: Option<[u8; 32]>,
    ) -> Result<String, ApiError> {
        self.call.status_code = status_code;
        self.call.response_hash = response_hash;
        let position = self.channel.finish(&mut self.call).await?;
        Ok(format!("{}:{}", position.chain_id, position.sequence))
    }
}

enum LoggedState {
    Streaming,
    Finishing(BoxFuture<'static, HeaderMap>),
    Done,
}

/// Passes the response body through, hashing and counting it; at its end writes the log entry and
/// only then releases the trailers (which carry the call's status) to the caller.
struct LoggedBody {
    inner: GatewayBody,
    hasher: Option<PayloadHasher>,
    body_copy: Option<Vec<u8>>,
    max_bytes: u64,
    finisher: Option<CallFinisher>,
    state: LoggedState,
}

impl LoggedBody {
    fn new(inner: GatewayBody, finisher: CallFinisher, max_bytes: u64) -> Self {
        let store = finisher.channel.store_bodies;
        Self {
            inner,
            hasher: Some(PayloadHasher::default()),
            body_copy: store.then(Vec::new),
            max_bytes,
            finisher: Some(finisher),
            state: LoggedState::Streaming,
        }
    }

    /// Logs the stream's end with `trailers` as its status: `reason` is the gateway's own, or,
    /// when `None`, the `ErrorInfo` reason the trailers carry.
    fn start_finishing(&mut self, mut trailers: HeaderMap, reason: Option<String>) {
        let status = tonic::Status::from_header_map(&trailers);
        let status_code = status
            .as_ref()
            .map(|status| status.code() as i32)
            .unwrap_or(Code::Unknown as i32);
        let response_hash = self.hasher.take().and_then(PayloadHasher::finish);
        let Some(mut finisher) = self.finisher.take() else {
            self.state = LoggedState::Done;
            return;
        };
        match (reason, &status) {
            (Some(own), _) => finisher.call.set_own_reason(&own),
            (None, Some(status)) => finisher.call.set_answered_reason(finisher.local, status),
            (None, None) => finisher.call.set_own_reason(""),
        }
        finisher.call.response_body = self.body_copy.take();
        self.state = LoggedState::Finishing(Box::pin(async move {
            match finisher.finish(status_code, response_hash).await {
                Ok(position) => {
                    if let Ok(value) = HeaderValue::from_str(&position) {
                        trailers.insert(envelope::LOG_POSITION, value);
                    }
                    trailers
                }
                Err(error) => {
                    let status: tonic::Status = error.into();
                    let mut failed = HeaderMap::new();
                    let _ = status.add_header(&mut failed);
                    failed
                }
            }
        }));
    }
}

fn status_trailers(code: Code, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    let _ = tonic::Status::new(code, message).add_header(&mut trailers);
    trailers
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                LoggedState::Done => return Poll::Ready(None),
                LoggedState::Finishing(pending) => {
                    let trailers = futures::ready!(pending.as_mut().poll(context));
                    this.state = LoggedState::Done;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                LoggedState::Streaming => {}
            }
            let polled = futures::ready!(std::pin::Pin::new(&mut this.inner).poll_frame(context));
            match polled {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        if let Some(hasher) = this.hasher.as_mut() {
                            hasher.update(data);
                            if hasher.bytes() > this.max_bytes {
                                let message = format!(
                                    "the response exceeds the route's limit of {} bytes",
                                    this.max_bytes
                                );
                                this.start_finishing(
                                    status_trailers(Code::ResourceExhausted, &message),
                                    Some("MESSAGE_TOO_LARGE".to_string()),
                                );
                                continue;
                            }
                        }
                        if let Some(copy) = this.body_copy.as_mut() {
                            copy.extend_from_slice(data);
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    match frame.into_trailers() {
                        Ok(trailers) => this.start_finishing(trailers, None),
                        Err(_unknown_frame) => continue,
                    }
                }
                Some(Err(error)) => {
                    let status = tonic::Status::from_error(error.into());
                    this.start_finishing(
                        status_trailers(
                            Code::Unavailable,
                            &format!("the upstream failed mid-call: {}", status.message()),
                        ),
                        Some(reasons::UPSTREAM_UNAVAILABLE.to_string()),
                    );
                }
                None => {
                    this.start_finishing(
                        status_trailers(
                            Code::Internal,
                            "the upstream ended the call without a status",
                        ),
                        Some("UPSTREAM_PROTOCOL_ERROR".to_string()),
                    );
                }
            }
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // The caller went away before the end: the call still gets its log entry.
        if let Some(mut finisher) = self.finisher.take() {
            let response_hash = self.hasher.take().and_then(PayloadHasher::finish);
            finisher.call.set_own_reason("CALLER_CANCELLED");
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = finisher.finish(Code::Cancelled as i32, response_hash).await;
                });
            }
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(header_value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, header_value);
        }
    }
}
