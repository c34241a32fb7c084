//! Operational monitoring of the gateway: calls per participant × service × method × code and
//! latency histograms per participant × service × method. A service or method the directory does
//! not route is labelled [`UNKNOWN_LABEL`], so random paths cannot create series without bound.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use shlyuz_kit::telemetry::MetricsRegistry;

/// The `service` and `method` label of calls to a path the directory does not route (the kit's
/// server metrics use the same value).
pub use shlyuz_kit::server::UNKNOWN_LABEL;

/// What the metrics see of one finished call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ObservedCall<'a> {
    /// The calling participant.
    pub(crate) participant: &'a str,
    /// The gRPC service asked for.
    pub(crate) service: &'a str,
    /// The method asked for.
    pub(crate) method: &'a str,
    /// The service has a route and the method is listed in it: only then are they labels.
    pub(crate) routed: bool,
    /// The gRPC status code answered.
    pub(crate) status_code: i32,
    /// The `ErrorInfo` reason answered, empty for none.
    pub(crate) reason: &'a str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    participant: String,
    service: String,
    method: String,
    code: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    participant: String,
    service: String,
    method: String,
}

/// The gateway's call metrics.
#[derive(Clone)]
pub struct GatewayMetrics {
    calls: Family<CallLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    buffered_request_bytes: Gauge,
}

impl GatewayMetrics {
    /// Creates the metrics and registers them.
    pub fn registered(registry: &MetricsRegistry) -> Self {
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(
            shlyuz_kit::server::latency_histogram,
        );
        registry.register(
            "gateway_calls",
            "calls through the gateway by participant, service, method, status code and refusal reason",
            calls.clone(),
        );
        registry.register(
            "gateway_call_duration_seconds",
            "time the gateway spent on a call, by participant, service and method",
            latency.clone(),
        );
        let buffered_request_bytes = Gauge::default();
        registry.register(
            "gateway_buffered_request_bytes",
            "request bytes the gateway holds for calls being read and checked",
            buffered_request_bytes.clone(),
        );
        Self {
            calls,
            latency,
            buffered_request_bytes,
        }
    }

    /// The gauge of buffered request bytes, for the request budget to report in.
    pub(crate) fn buffered_request_bytes(&self) -> Gauge {
        self.buffered_request_bytes.clone()
    }

    /// Counts `call` and records its latency.
    pub(crate) fn observe(&self, call: &ObservedCall<'_>, duration: Duration) {
        let code = format!("{:?}", tonic::Code::from_i32(call.status_code));
        let (service, method) = if call.routed {
            (call.service.to_string(), call.method.to_string())
        } else {
            (UNKNOWN_LABEL.to_string(), UNKNOWN_LABEL.to_string())
        };
        self.calls
            .get_or_create(&CallLabels {
                participant: call.participant.to_string(),
                service: service.clone(),
                method: method.clone(),
                code,
                reason: call.reason.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                participant: call.participant.to_string(),
                service,
                method,
            })
            .observe(duration.as_secs_f64());
    }
}
