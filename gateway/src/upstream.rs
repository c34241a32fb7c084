//! The gateway's side of its upstreams, shared by the sync proxy and the async channel: one
//! multiplexed HTTP/2 connection (mutual TLS with the gateway's own certificate) per upstream, a
//! circuit breaker per upstream, and the unary call the async channel delivers messages with.

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
use tower::ServiceExt;

use crate::directory::Route;
use crate::grpc_frames::{format_grpc_timeout, single_message};

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
        let failure = |code: Code, message: String| UnaryOutcome {
            code,
            message,
            response: None,
        };
        let channel = match self.channel(&route.upstream, &route.upstream_server_name) {
            Ok(channel) => channel,
            Err(error) => return failure(Code::Unavailable, format!("{error:#}")),
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
            Err(_elapsed) => failure(
                Code::DeadlineExceeded,
                format!("no answer within {timeout:?}"),
            ),
            Ok(Err(message)) => failure(Code::Unavailable, message),
            Ok(Ok((status, body))) if status.code() == Code::Ok => match single_message(&body) {
                Ok(message) => UnaryOutcome {
                    code: Code::Ok,
                    message: String::new(),
                    response: Some(Bytes::copy_from_slice(message)),
                },
                Err(problem) => failure(Code::Internal, format!("malformed response: {problem}")),
            },
            Ok(Ok((status, _))) => failure(status.code(), status.message().to_string()),
        }
    }
}
