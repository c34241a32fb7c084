//! The gateway's side of its upstreams, shared by the sync proxy and the async channel: one
//! multiplexed HTTP/2 connection (mutual TLS with the gateway's own certificate) per upstream, a
//! circuit breaker per upstream, the unary call the async channel delivers messages with, and the
//! one rule telling a failure of the gateway's hop from a service's own answer.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;
use shlyuz_kit::breaker::CircuitBreaker;
use shlyuz_kit::server::TlsFiles;
use tonic::Code;
use tonic_types::StatusExt;
use tower::ServiceExt;

use crate::directory::Route;
use crate::grpc_frames::{format_grpc_timeout, single_message};

/// Longest service reason kept in a message-log entry (AIP-193 reasons are at most 63 characters).
const MAX_SERVICE_REASON_CHARS: usize = 128;

/// The `ErrorInfo` reason a service gave in its non-OK `status`, when it gave one: the service ran
/// the call and said why it failed, so its answer passes through unchanged, is never retried and
/// counts as a success of the hop. Only what parses is trusted: details that are not a
/// `google.rpc.Status`, or hold no `ErrorInfo` with a reason, make the status bare. The reason is
/// cut to 128 characters (it is kept in the log entry; the caller gets the header unchanged).
pub fn service_reason(status: &tonic::Status) -> Option<String> {
    if status.code() == Code::Ok {
        return None;
    }
    let details = status.check_error_details().ok()?;
    let reason = &details.error_info()?.reason;
    if reason.is_empty() {
        return None;
    }
    Some(reason.chars().take(MAX_SERVICE_REASON_CHARS).collect())
}

/// Whether an upstream's answer `status` is a failure of the gateway's hop: a bare `UNAVAILABLE`
/// (tonic's own, a proxy's, a server going away), without a service's `ErrorInfo`. Retried on
/// idempotent methods and counted on the breaker like a failed connection; any other answer is
/// the service's.
pub fn is_hop_failure(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable && service_reason(status).is_none()
}

/// Connections and breakers of every upstream.
pub struct Upstreams {
    tls: Option<TlsFiles>,
    channels: RwLock<HashMap<String, tonic::transport::Channel>>,
    breakers: RwLock<HashMap<String, Arc<CircuitBreaker>>>,
}

/// What a unary call to an upstream came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnaryOutcome {
    /// The gRPC status code (a transport failure is `UNAVAILABLE`, a timeout `DEADLINE_EXCEEDED`).
    pub code: Code,
    /// The status message or the failure.
    pub message: String,
    /// The service's `ErrorInfo` reason ([`service_reason`]); empty for a failure of the hop, a
    /// bare status and OK.
    pub reason: String,
    /// The hop failed (connection, transport, the deadline, a bare `UNAVAILABLE`): what the
    /// breaker counts as a failure. A service's answer, whatever its code, is a success of the hop.
    pub hop_failed: bool,
    /// The response message, when the call succeeded.
    pub response: Option<Bytes>,
}

impl Upstreams {
    /// Upstreams reached with `tls` (the gateway's client identity), or plaintext when `None`.
    pub fn new(tls: Option<TlsFiles>) -> Arc<Self> {
        Arc::new(Self {
            tls,
            channels: RwLock::new(HashMap::new()),
            breakers: RwLock::new(HashMap::new()),
        })
    }

    /// The connection to `address`, expecting `server_name` in its certificate; made lazily.
    pub fn channel(
        &self,
        address: &str,
        server_name: &str,
    ) -> anyhow::Result<tonic::transport::Channel> {
        let key = format!("{address}|{server_name}");
        if let Some(found) = self.channels.read().get(&key) {
            return Ok(found.clone());
        }
        let settings = shlyuz_kit::client::ClientSettings {
            address: address.to_string(),
            tls: self.tls.clone(),
            server_name: server_name.to_string(),
            connect_timeout: Duration::from_secs(3),
        };
        let channel = shlyuz_kit::client::connect_lazy(&settings)?;
        let mut channels = self.channels.write();
        Ok(channels.entry(key).or_insert(channel).clone())
    }

    /// The circuit breaker of `upstream`.
    pub fn breaker(&self, upstream: &str) -> Arc<CircuitBreaker> {
        if let Some(found) = self.breakers.read().get(upstream) {
            return found.clone();
        }
        let mut breakers = self.breakers.write();
        breakers.entry(upstream.to_string()).or_default().clone()
    }

    /// Calls `path` on the upstream of `route` with one already-serialized request message and
    /// `metadata`, waiting at most `timeout`, and reads the whole answer (within the route's
    /// response limit).
    pub async fn call_unary(
        &self,
        route: &Route,
        path: &str,
        metadata: HeaderMap,
        payload: &[u8],
        timeout: Duration,
    ) -> UnaryOutcome {
        let hop_failure = |code: Code, message: String| UnaryOutcome {
            code,
            message,
            reason: String::new(),
            hop_failed: true,
            response: None,
        };
        let failure = |code: Code, message: String| UnaryOutcome {
            code,
            message,
            reason: String::new(),
            hop_failed: false,
            response: None,
        };
        let channel = match self.channel(&route.upstream, &route.upstream_server_name) {
            Ok(channel) => channel,
            Err(error) => return hop_failure(Code::Unavailable, format!("{error:#}")),
        };
        let mut frame = BytesMut::with_capacity(payload.len() + 5);
        frame.put_u8(0);
        frame.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
        frame.put_slice(payload);
        let mut builder = http::Request::builder()
            .method(http::Method::POST)
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", format_grpc_timeout(timeout));
        if let Some(headers) = builder.headers_mut() {
            headers.extend(metadata);
        }
        let request = match builder.body(tonic::body::Body::new(http_body_util::Full::new(
            frame.freeze(),
        ))) {
            Ok(request) => request,
            Err(error) => {
                return failure(Code::Internal, format!("cannot build the request: {error}"));
            }
        };
        let exchange = async {
            let response = channel
                .oneshot(request)
                .await
                .map_err(|error| error.to_string())?;
            let (parts, body) = response.into_parts();
            if let Some(status) = tonic::Status::from_header_map(&parts.headers) {
                return Ok((status, Bytes::new()));
            }
            let collected =
                http_body_util::Limited::new(body, route.max_response_bytes.saturating_add(5))
                    .collect()
                    .await
                    .map_err(|error| format!("the response could not be read: {error}"))?;
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let status = tonic::Status::from_header_map(&trailers).unwrap_or_else(|| {
                tonic::Status::internal("the upstream ended the call without a status")
            });
            Ok::<_, String>((status, collected.to_bytes()))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_elapsed) => hop_failure(
                Code::DeadlineExceeded,
                format!("no answer within {timeout:?}"),
            ),
            Ok(Err(message)) => hop_failure(Code::Unavailable, message),
            Ok(Ok((status, body))) if status.code() == Code::Ok => match single_message(&body) {
                Ok(message) => UnaryOutcome {
                    code: Code::Ok,
                    message: String::new(),
                    reason: String::new(),
                    hop_failed: false,
                    response: Some(Bytes::copy_from_slice(message)),
                },
                Err(problem) => failure(Code::Internal, format!("malformed response: {problem}")),
            },
            Ok(Ok((status, _))) => UnaryOutcome {
                code: status.code(),
                message: status.message().to_string(),
                reason: service_reason(&status).unwrap_or_default(),
                hop_failed: is_hop_failure(&status),
                response: None,
            },
        }
    }
}
