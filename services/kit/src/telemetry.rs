//! Logs, traces and metrics: `tracing` logs (JSON when stdout is not a terminal), OpenTelemetry
//! OTLP traces when an endpoint is configured, and Prometheus metrics on an admin HTTP port.

use parking_lot::Mutex;
use std::any::Any;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::shutdown::ShutdownSignal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, human-readable text otherwise.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// The `[telemetry]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log filter in `RUST_LOG` syntax; `RUST_LOG` itself wins when set.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// OTLP/gRPC collector endpoint (e.g. `http://otel-collector:4317`); traces are off when empty.
    pub otlp_endpoint: String,
    /// Address of the admin HTTP server that serves `/metrics`; empty disables it.
    pub admin_listen: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_level: "info".to_string(),
            log_format: LogFormat::Auto,
            otlp_endpoint: String::new(),
            admin_listen: "127.0.0.1:9464".to_string(),
        }
    }
}

/// Keeps the trace pipeline alive; dropping it flushes pending spans.
pub struct TelemetryGuard {
    tracer_provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown failed: {error}");
        }
    }
}

/// Installs the global log subscriber and, when configured, the OTLP trace exporter. Call once,
/// inside the Tokio runtime (the OTLP exporter needs it).
pub fn init_telemetry(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(from_env),
        _ => EnvFilter::try_new(&config.log_level),
    }
    .with_context(|| format!("telemetry.log_level: invalid filter {:?}", config.log_level))?;

    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let json_layer = json.then(|| tracing_subscriber::fmt::layer().json().flatten_event(true));
    let text_layer = (!json).then(tracing_subscriber::fmt::layer);

    let mut tracer_provider = None;
    let otel_layer = if config.otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .build()
            .context("telemetry.otlp_endpoint: cannot build the OTLP exporter")?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("shlyuz")
            .build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("shlyuz");
        tracer_provider = Some(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    tracing_subscriber::registry()
        .with(filter)
        .with(json_layer)
        .with(text_layer)
        .with(otel_layer)
        .try_init()
        .context("a global log subscriber is already installed")?;
    Ok(TelemetryGuard { tracer_provider })
}

/// The process-wide Prometheus registry every component registers its metrics in.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    registry: Arc<Mutex<Registry>>,
    /// Metrics several components of one process share (see [`MetricsRegistry::shared`]).
    shared: Arc<Mutex<HashMap<String, Box<dyn Any + Send>>>>,
}

impl MetricsRegistry {
    /// Registers a metric under `name` (without the `shlyuz_` prefix, which is added).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        let mut registry = self.registry.lock();
        registry.register(format!("shlyuz_{name}"), help, metric);
    }

    /// The metric registered under `name` by an earlier call, or `make()` registered now. For
    /// metrics that every instance of a component registers (each gRPC server of `shlyuz up` runs
    /// in one process with one registry): one family, so the exposition names it once, as
    /// Prometheus requires.
    pub fn shared<M>(&self, name: &str, help: &str, make: impl FnOnce() -> M) -> M
    where
        M: prometheus_client::registry::Metric + Clone + Send + 'static,
    {
        let mut shared = self.shared.lock();
        if let Some(metric) = shared
            .get(name)
            .and_then(|metric| metric.downcast_ref::<M>())
        {
            return metric.clone();
        }
        let metric = make();
        self.register(name, help, metric.clone());
        shared.insert(name.to_owned(), Box::new(metric.clone()));
        metric
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let registry = self.registry.lock();
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::error!(%error, "cannot encode metrics");
        }
        text
    }
}

/// A bound admin HTTP server serving `/metrics` and `/livez`.
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    metrics: MetricsRegistry,
}

impl AdminServer {
    /// Binds the admin port now, so a taken port fails start-up instead of a background task.
    pub async fn bind(address: &str, metrics: MetricsRegistry) -> anyhow::Result<Self> {
        let socket_address: SocketAddr = address.parse().with_context(|| {
            format!("telemetry.admin_listen: {address:?} is not a socket address")
        })?;
        let listener = tokio::net::TcpListener::bind(socket_address)
            .await
            .with_context(|| format!("telemetry.admin_listen: cannot bind {socket_address}"))?;
        Ok(Self { listener, metrics })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires.
    pub async fn serve(self, shutdown: ShutdownSignal) -> anyhow::Result<()> {
        let metrics = self.metrics;
        let router = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let metrics = metrics.clone();
                    async move {
                        (
                            [(
                                http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            metrics.encode(),
                        )
                    }
                }),
            )
            .route("/livez", axum::routing::get(|| async { "ok" }));
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
            .context("admin http server failed")
    }
}
