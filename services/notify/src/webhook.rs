//! The HTTP side for SMS providers: delivery reports (`POST /v1/delivery-reports`) and incoming
//! SMS (`POST /v1/inbound-sms`), guarded by a bearer token when one is configured.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use shlyuz_kit::shutdown::ShutdownSignal;

use crate::inbound::InboundSms;
use crate::notifier::Notifier;
use crate::store;

/// A provider's report on one SMS.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
pub struct DeliveryReport {
    /// The provider's message id (returned when the SMS was accepted).
    pub message_id: String,
    /// `delivered`, or `failed` / `undelivered` / `expired` / `rejected`.
    pub status: String,
    /// The provider's reason when not delivered.
    #[serde(default)]
    pub reason: String,
}

/// An incoming SMS as a provider posts it.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
pub struct InboundSmsBody {
    /// Sender phone.
    pub from: String,
    /// Text.
    pub text: String,
    /// The provider's id of the SMS (for de-duplication of retried posts).
    #[serde(default)]
    pub message_id: String,
}

#[derive(Clone)]
struct WebhookState {
    notifier: Notifier,
    inbound: InboundSms,
    token: Arc<String>,
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, serde_json::json!({ "error": message.into() }))
}

/// Parses a JSON body, or answers 400 with serde's description.
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|problem| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body: {problem}"),
        ))
    })
}

fn authorised(state: &WebhookState, headers: &HeaderMap) -> bool {
    if state.token.is_empty() {
        return true;
    }
    let expected = format!("Bearer {}", state.token);
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.len() == expected.len()
                && value
                    .bytes()
                    .zip(expected.bytes())
                    .fold(0u8, |difference, (a, b)| difference | (a ^ b))
                    == 0
        })
}

async fn delivery_report(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorised(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let report: DeliveryReport = match parse_body(&body) {
        Ok(report) => report,
        Err(response) => return *response,
    };
    let delivered = match report.status.to_ascii_lowercase().as_str() {
        "delivered" => true,
        "failed" | "undelivered" | "expired" | "rejected" => false,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "status {other:?} is not delivered, failed, undelivered, expired or rejected"
                ),
            );
        }
    };
    let reason = if report.reason.is_empty() {
        format!("provider reported {}", report.status)
    } else {
        format!("provider reported {}: {}", report.status, report.reason)
    };
    match store::apply_delivery_report(
        state.notifier.database(),
        &report.message_id,
        delivered,
        &reason,
        state.notifier.clock().now_millis(),
    )
    .await
    {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "no SMS awaiting a report has that message_id",
        ),
        Err(problem) => {
            tracing::warn!(error = %problem, "delivery report not stored");
            error(StatusCode::SERVICE_UNAVAILABLE, "try again")
        }
    }
}

async fn inbound_sms(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorised(&state, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let body: InboundSmsBody = match parse_body(&body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    match state
        .inbound
        .receive(&body.from, &body.text, &body.message_id)
        .await
    {
        Ok(outcome) => json(
            StatusCode::OK,
            serde_json::json!({
                "reply_id": outcome.reply_id,
                "outcome": outcome.outcome,
                "conversation_id": outcome.conversation_id,
                "duplicate": outcome.duplicate,
            }),
        ),
        Err(problem) if problem.code() == tonic::Code::InvalidArgument => {
            error(StatusCode::BAD_REQUEST, problem.message().to_string())
        }
        Err(problem) => {
            tracing::warn!(error = %problem.message(), "inbound sms not stored");
            error(StatusCode::SERVICE_UNAVAILABLE, "try again")
        }
    }
}

/// The provider-facing router.
pub fn router(notifier: Notifier, inbound: InboundSms, token: String) -> axum::Router {
    axum::Router::new()
        .route("/v1/delivery-reports", post(delivery_report))
        .route("/v1/inbound-sms", post(inbound_sms))
        .with_state(WebhookState {
            notifier,
            inbound,
            token: Arc::new(token),
        })
}

/// A bound webhook listener.
pub struct WebhookServer {
    listener: tokio::net::TcpListener,
    router: axum::Router,
}

impl WebhookServer {
    /// Binds `address` for `router`.
    pub async fn bind(address: SocketAddr, router: axum::Router) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| anyhow::anyhow!("notify webhook: cannot bind {address}: {error}"))?;
        Ok(Self { listener, router })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`.
    pub async fn serve(self, shutdown: ShutdownSignal) -> anyhow::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.wait())
            .await
            .map_err(|error| anyhow::anyhow!("notify webhook: {error}"))
    }
}
