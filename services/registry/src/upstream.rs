//! The upstream backend: the same [`RegistrySource`] over an external registry's HTTP(S) JSON
//! API, with timeouts, retries with backoff (every call is a read), a circuit breaker and a
//! configurable JSON mapping per record kind. What the external system answers is checked before
//! it is believed: malformed or partial answers are `DATA_LOSS`, failures `UNAVAILABLE`, each
//! with a reason — never a wrong answer, and nothing is cached, so neither is an error.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::Value;
use shlyuz_kit::backoff::Backoff;
use shlyuz_kit::breaker::{BreakerSettings, CircuitBreaker, Permit};
use shlyuz_kit::iin::Iin;

use crate::records::{KindSpec, kinds::KIND_NAMES};
use crate::source::{RegistrySource, Rows, SourceError};

/// Largest answer accepted from an external registry.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// `ErrorInfo` reasons of upstream failures (defined in the crate's `reasons` module).
pub use crate::reasons::upstream as reasons;

/// How one kind of record is fetched and read.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointMapping {
    /// Path under the base URL; the request is `POST {"<request_field>": [iins]}`.
    pub path: String,
    /// Name of the request's IIN-list field.
    #[serde(default = "default_request_field")]
    pub request_field: String,
    /// JSON pointer to the array of records in the answer; empty: the answer is the array.
    #[serde(default)]
    pub records_pointer: String,
    /// JSON pointer to a boolean that is `false` when the registry could not answer fully.
    #[serde(default)]
    pub complete_pointer: Option<String>,
    /// Column → JSON pointer inside a record; a column not listed is read from `/<column>`.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Columns that must be present in every record (the IIN columns always are).
    #[serde(default)]
    pub required: Vec<String>,
}

impl UpstreamSettings {
    /// Reads settings from a TOML file (unknown keys are refused, naming the key).
    pub fn from_toml_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
        toml::from_str(&text).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
    }

    /// The longest one call to the external system may take, retries included:
    /// `timeout_ms × max_attempts` plus each backoff between attempts at its longest
    /// (`initial_backoff_ms` doubling, jittered up to 150 %). A gateway route to the registry
    /// needs a `timeout_ms` at least this long, or its caller gets the gateway's deadline instead
    /// of the registry's reason.
    pub fn attempt_budget(&self) -> std::time::Duration {
        let attempts = self.max_attempts.max(1);
        let backoff = Backoff::uncapped(Duration::from_millis(self.initial_backoff_ms));
        let mut budget = Duration::from_millis(self.timeout_ms).saturating_mul(attempts);
        for failed_attempts in 1..attempts {
            let wait = backoff.base_delay(i64::from(failed_attempts));
            budget = budget.saturating_add(wait.saturating_add(wait / 2));
        }
        budget
    }
}

fn default_request_field() -> String {
    "iins".to_string()
}

/// Settings of one external registry.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// Base URL, `https://…` in production.
    pub base_url: String,
    /// Deadline of one attempt.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Connection deadline.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Attempts in total, first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First backoff; doubles each retry, with jitter.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Consecutive failed calls that open the circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long the breaker stays open before one trial call.
    #[serde(default = "default_breaker_open_ms")]
    pub breaker_open_ms: u64,
    /// PEM CA certificate to trust instead of the platform roots (a state CA, a test CA).
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Endpoint per record kind, by the kind's name (`records::KIND_NAMES`).
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointMapping>,
}

fn default_timeout_ms() -> u64 {
    2_000
}
fn default_connect_timeout_ms() -> u64 {
    1_000
}
fn default_max_attempts() -> u32 {
    3
}
fn default_initial_backoff_ms() -> u64 {
    100
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open_ms() -> u64 {
    10_000
}

/// An external registry behind the adapter trait.
pub struct UpstreamRegistry {
    settings: UpstreamSettings,
    client: reqwest::Client,
    breaker: CircuitBreaker,
    breaker_settings: BreakerSettings,
    backoff: Backoff,
    fallback: Option<Arc<dyn RegistrySource>>,
}

enum Attempt {
    Retry(SourceError),
    Fail(SourceError),
}

impl UpstreamRegistry {
    /// A client for `settings`; record kinds without an endpoint go to `fallback` (e.g. the
    /// embedded tables) or fail with `UPSTREAM_NOT_CONFIGURED`.
    pub fn new(
        settings: UpstreamSettings,
        fallback: Option<Arc<dyn RegistrySource>>,
    ) -> anyhow::Result<Self> {
        Self::with_kinds(settings, fallback, KIND_NAMES)
    }

    /// [`UpstreamRegistry::new`] for a registry whose record kinds are `kinds` (the shipped ones
    /// are [`KIND_NAMES`]; an adapter under test adds its own).
    pub fn with_kinds(
        settings: UpstreamSettings,
        fallback: Option<Arc<dyn RegistrySource>>,
        kinds: &[&str],
    ) -> anyhow::Result<Self> {
        for kind in settings.endpoints.keys() {
            if !kinds.contains(&kind.as_str()) {
                anyhow::bail!(
                    "upstream endpoint {kind:?} is not a record kind (known: {})",
                    kinds.join(", ")
                );
            }
        }
        if settings.max_attempts == 0 {
            anyhow::bail!("upstream max_attempts must be at least 1");
        }
        // reqwest is built without a bundled provider: rustls uses the process-wide ring one.
        shlyuz_kit::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .tls_backend_rustls();
        if let Some(path) = &settings.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|error| {
                anyhow::anyhow!("{} is not a PEM certificate: {error}", path.display())
            })?;
            builder = builder.tls_certs_only([certificate]);
        }
        let client = builder
            .build()
            .map_err(|error| anyhow::anyhow!("cannot build the upstream http client: {error}"))?;
        let breaker_settings = BreakerSettings {
            failure_threshold: settings.breaker_failures,
            open_for: Duration::from_millis(settings.breaker_open_ms),
        };
        let backoff = Backoff::uncapped(Duration::from_millis(settings.initial_backoff_ms))
            .with_jitter_percent(100..150);
        Ok(Self {
            settings,
            client,
            breaker: CircuitBreaker::default(),
            breaker_settings,
            backoff,
            fallback,
        })
    }

    /// `Err` while the breaker is open or its one trial call is in flight; after
    /// `breaker_open_ms` one call goes through as the trial.
    fn admit(&self) -> Result<Permit<'_>, SourceError> {
        self.breaker
            .admit(&self.breaker_settings)
            .map_err(|_| SourceError::Unavailable {
                reason: reasons::CIRCUIT_OPEN,
                message: "the registry failed repeatedly; calls are paused".to_string(),
            })
    }

    fn record_failure(&self, permit: Permit<'_>) {
        if permit.failed() {
            tracing::warn!(base_url = %self.settings.base_url, "upstream circuit breaker opened");
        }
    }

    async fn attempt(&self, url: &str, body: &Value) -> Result<Value, Attempt> {
        let response = match self.client.post(url).json(body).send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return Err(Attempt::Retry(SourceError::Unavailable {
                    reason: reasons::TIMEOUT,
                    message: "the registry did not answer in time".to_string(),
                }));
            }
            Err(error) => {
                return Err(Attempt::Retry(SourceError::Unavailable {
                    reason: reasons::UNAVAILABLE,
                    message: format!("cannot reach the registry: {error}"),
                }));
            }
        };
        let status = response.status();
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            return Err(Attempt::Retry(SourceError::Unavailable {
                reason: reasons::UNAVAILABLE,
                message: format!("the registry answered http {}", status.as_u16()),
            }));
        }
        if !status.is_success() {
            return Err(Attempt::Fail(SourceError::Refused {
                reason: reasons::REFUSED,
                message: format!("the registry refused the request: http {}", status.as_u16()),
            }));
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_RESPONSE_BYTES as u64)
        {
            return Err(Attempt::Fail(SourceError::DataLoss {
                reason: reasons::MALFORMED,
                message: "the answer is larger than accepted".to_string(),
            }));
        }
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) if error.is_timeout() => {
                return Err(Attempt::Retry(SourceError::Unavailable {
                    reason: reasons::TIMEOUT,
                    message: "the registry's answer did not finish in time".to_string(),
                }));
            }
            Err(error) => {
                return Err(Attempt::Retry(SourceError::Unavailable {
                    reason: reasons::UNAVAILABLE,
                    message: format!("the answer was cut off: {error}"),
                }));
            }
        };
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(Attempt::Fail(SourceError::DataLoss {
                reason: reasons::MALFORMED,
                message: "the answer is larger than accepted".to_string(),
            }));
        }
        serde_json::from_slice(&bytes).map_err(|error| {
            Attempt::Fail(SourceError::DataLoss {
                reason: reasons::MALFORMED,
                message: format!("the answer is not JSON: {error}"),
            })
        })
    }

    /// POSTs the IINs with retries and returns the parsed answer.
    async fn call(&self, mapping: &EndpointMapping, iins: &[Iin]) -> Result<Value, SourceError> {
        let permit = self.admit()?;
        let url = format!(
            "{}/{}",
            self.settings.base_url.trim_end_matches('/'),
            mapping.path.trim_start_matches('/')
        );
        let iin_list: Vec<&str> = iins.iter().map(Iin::as_str).collect();
        let body = serde_json::json!({ mapping.request_field.clone(): iin_list });
        let mut attempt_number = 1;
        loop {
            match self.attempt(&url, &body).await {
                Ok(value) => {
                    permit.succeeded();
                    return Ok(value);
                }
                Err(Attempt::Fail(error)) => {
                    // The registry is up (it answered); the answer is what is wrong.
                    permit.succeeded();
                    return Err(error);
                }
                Err(Attempt::Retry(error)) => {
                    if attempt_number >= self.settings.max_attempts {
                        self.record_failure(permit);
                        return Err(error);
                    }
                    tokio::time::sleep(self.backoff.delay(i64::from(attempt_number))).await;
                    attempt_number += 1;
                }
            }
        }
    }

    async fn fetch(&self, kind: KindSpec, iins: &[Iin]) -> Result<Rows, SourceError> {
        let Some(mapping) = self.settings.endpoints.get(kind.name) else {
            return Err(SourceError::Unavailable {
                reason: reasons::NOT_CONFIGURED,
                message: format!("no upstream endpoint is configured for {}", kind.name),
            });
        };
        let answer = self.call(mapping, iins).await?;
        map_records(&answer, mapping, kind, iins).map(Rows::Json)
    }
}

fn malformed(message: String) -> SourceError {
    SourceError::DataLoss {
        reason: reasons::MALFORMED,
        message,
    }
}

fn partial(message: String) -> SourceError {
    SourceError::DataLoss {
        reason: reasons::PARTIAL,
        message,
    }
}

/// Reads records out of an answer with `mapping` into `column → value` objects of `kind`,
/// refusing anything that does not add up (the values' types are checked when the objects are
/// read into the kind's record type).
fn map_records(
    answer: &Value,
    mapping: &EndpointMapping,
    kind: KindSpec,
    iins: &[Iin],
) -> Result<Vec<serde_json::Map<String, Value>>, SourceError> {
    let owner_columns = kind.owners;
    if let Some(pointer) = &mapping.complete_pointer {
        match answer.pointer(pointer) {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => {
                return Err(partial(
                    "the registry marked its answer incomplete".to_string(),
                ));
            }
            _ => return Err(malformed(format!("no boolean at {pointer}"))),
        }
    }
    let records = if mapping.records_pointer.is_empty() {
        Some(answer)
    } else {
        answer.pointer(&mapping.records_pointer)
    };
    let Some(Value::Array(records)) = records else {
        return Err(malformed(format!(
            "no array of records at {:?}",
            mapping.records_pointer
        )));
    };
    let asked: HashSet<&str> = iins.iter().map(Iin::as_str).collect();
    let mut mapped = Vec::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        if !record.is_object() {
            return Err(malformed(format!("record {index} is not an object")));
        }
        let mut object = serde_json::Map::new();
        for column in kind.columns {
            let pointer = mapping
                .fields
                .get(*column)
                .cloned()
                .unwrap_or_else(|| format!("/{column}"));
            match record.pointer(&pointer) {
                Some(Value::Null) | None => {
                    let required = owner_columns.contains(column) && owner_columns.len() == 1
                        || mapping.required.iter().any(|name| name == column);
                    if required {
                        return Err(partial(format!("record {index} has no {column}")));
                    }
                }
                Some(value) => {
                    object.insert((*column).to_string(), value.clone());
                }
            }
        }
        let belongs = owner_columns.iter().any(|column| {
            object
                .get(*column)
                .and_then(Value::as_str)
                .is_some_and(|value| asked.contains(value))
        });
        if !belongs {
            return Err(malformed(format!(
                "record {index} is about a person that was not asked about"
            )));
        }
        mapped.push(object);
    }
    Ok(mapped)
}

impl RegistrySource for UpstreamRegistry {
    fn rows<'a>(
        &'a self,
        kind: KindSpec,
        iins: &'a [Iin],
    ) -> BoxFuture<'a, Result<Rows, SourceError>> {
        if !self.settings.endpoints.contains_key(kind.name)
            && let Some(fallback) = &self.fallback
        {
            return fallback.rows(kind, iins);
        }
        self.fetch(kind, iins).boxed()
    }
}
