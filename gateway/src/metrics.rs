//! Operational monitoring of the gateway: calls per participant × service × method × code and
//! latency histograms per participant × service × method.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use shlyuz_kit::telemetry::MetricsRegistry;

use crate::proxy::CallRecord;

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
        Self { calls, latency }
    }

    pub(crate) fn observe(&self, call: &CallRecord, duration: Duration) {
        let code = format!("{:?}", tonic::Code::from_i32(call.status_code));
        self.calls
            .get_or_create(&CallLabels {
                participant: call.sender.clone(),
                service: call.service.clone(),
                method: call.method.clone(),
                code,
                reason: call.reason.clone(),
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                participant: call.sender.clone(),
                service: call.service.clone(),
                method: call.method.clone(),
            })
            .observe(duration.as_secs_f64());
    }
}
