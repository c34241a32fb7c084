//! Metrics of the async channel: queue depth, age of the oldest message, attempts by code, and
//! messages by final state.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use shlyuz_kit::telemetry::MetricsRegistry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// The async channel's metrics.
#[derive(Clone)]
pub struct AsyncMetrics {
    depth: Gauge<i64, AtomicI64>,
    oldest_age_seconds: Gauge<i64, AtomicI64>,
    attempts: Family<CodeLabel, Counter>,
    finished: Family<StateLabel, Counter>,
}

impl AsyncMetrics {
    /// Creates the metrics and registers them.
    pub fn registered(registry: &MetricsRegistry) -> Self {
        let metrics = Self {
            depth: Gauge::default(),
            oldest_age_seconds: Gauge::default(),
            attempts: Family::default(),
            finished: Family::default(),
        };
        registry.register(
            "gateway_async_queue_depth",
            "async messages on delivery (all gateway instances)",
            metrics.depth.clone(),
        );
        registry.register(
            "gateway_async_oldest_message_age_seconds",
            "age of the oldest async message still on delivery",
            metrics.oldest_age_seconds.clone(),
        );
        registry.register(
            "gateway_async_delivery_attempts",
            "async delivery attempts by the gRPC code the target answered",
            metrics.attempts.clone(),
        );
        registry.register(
            "gateway_async_messages_finished",
            "async messages by final state",
            metrics.finished.clone(),
        );
        metrics
    }

    pub(super) fn queue(&self, depth: i64, oldest_age_ms: i64) {
        self.depth.set(depth);
        self.oldest_age_seconds.set(oldest_age_ms.max(0) / 1000);
    }

    pub(super) fn attempt(&self, code: tonic::Code) {
        self.attempts
            .get_or_create(&CodeLabel {
                code: format!("{code:?}"),
            })
            .inc();
    }

    pub(super) fn finished(&self, state: &str) {
        self.finished
            .get_or_create(&StateLabel {
                state: state.to_string(),
            })
            .inc();
    }
}
