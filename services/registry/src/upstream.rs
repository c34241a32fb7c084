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

/// The HTTP client `settings` describe: timeouts, trusted CA, client certificate, API key and
/// fixed headers, every file and variable read now; refuses what is missing or unreadable,
/// naming the key.
fn build_client(settings: &UpstreamSettings) -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a bundled provider: rustls uses the process-wide ring one.
    shlyuz_kit::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_millis(settings.timeout_ms))
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        // A redirect would carry the API key to wherever it points.
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(request_headers(settings)?)
        .tls_backend_rustls();
    if let Some(path) = &settings.ca_cert {
        let pem = read_file("ca_cert", path)?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
            anyhow::anyhow!(
                "key `ca_cert`: {} is not a PEM certificate: {error}",
                path.display()
            )
        })?;
        if certificates.is_empty() {
            anyhow::bail!("key `ca_cert`: {} holds no PEM certificate", path.display());
        }
        builder = builder.tls_certs_only(certificates);
    }
    match (&settings.client_cert, &settings.client_key) {
        (None, None) => {}
        (Some(_), None) => anyhow::bail!("key `client_key`: client_cert needs its private key"),
        (None, Some(_)) => anyhow::bail!("key `client_cert`: client_key needs its certificate"),
        (Some(cert_path), Some(key_path)) => {
            let mut pem = read_file("client_cert", cert_path)?;
            pem.push(b'\n');
            pem.extend(read_file("client_key", key_path)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|error| {
                anyhow::anyhow!(
                    "key `client_cert`/`client_key`: {} and {} are not a PEM certificate and \
                     its private key: {error}",
                    cert_path.display(),
                    key_path.display()
                )
            })?;
            builder = builder.identity(identity);
        }
    }
    builder
        .build()
        .map_err(|error| anyhow::anyhow!("cannot build the upstream http client: {error}"))
}

fn read_file(key: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|error| anyhow::anyhow!("key `{key}`: cannot read {}: {error}", path.display()))
}

/// The headers every call carries: the fixed `headers` and the API key (marked sensitive, so
/// it is never printed).
pub(crate) fn request_headers(
    settings: &UpstreamSettings,
) -> anyhow::Result<reqwest::header::HeaderMap> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let mut headers = HeaderMap::new();
    for (name, value) in &settings.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| anyhow::anyhow!("key `headers.{name}`: not an http header name"))?;
        let header_value = HeaderValue::from_str(value)
            .map_err(|_| anyhow::anyhow!("key `headers.{name}`: not an http header value"))?;
        headers.insert(header_name, header_value);
    }
    if let Some((name, key)) = api_key(settings)? {
        let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            anyhow::anyhow!("key `api_key_header`: {name:?} is not an http header name")
        })?;
        let mut header_value = HeaderValue::from_str(&key).map_err(|_| {
            anyhow::anyhow!("key `api_key_header`: the api key is not a valid header value")
        })?;
        header_value.set_sensitive(true);
        headers.insert(header_name, header_value);
    }
    Ok(headers)
}

/// The API-key header's name and the key, read from `api_key_file` or `api_key_env` (exactly
/// one of them); `None` without `api_key_header`.
pub(crate) fn api_key(settings: &UpstreamSettings) -> anyhow::Result<Option<(String, String)>> {
    let key = match (&settings.api_key_file, &settings.api_key_env) {
        (Some(_), Some(_)) => anyhow::bail!(
            "key `api_key_file`/`api_key_env`: give the api key in one of them, not both"
        ),
        (None, None) => None,
        (Some(path), None) => {
            let bytes = read_file("api_key_file", path)?;
            let text = String::from_utf8(bytes).map_err(|_| {
                anyhow::anyhow!("key `api_key_file`: {} is not utf-8 text", path.display())
            })?;
            Some(("api_key_file", text.trim().to_string()))
        }
        (None, Some(variable)) => {
            let text = std::env::var(variable).map_err(|_| {
                anyhow::anyhow!("key `api_key_env`: environment variable {variable} is not set")
            })?;
            Some(("api_key_env", text.trim().to_string()))
        }
    };
    match (&settings.api_key_header, key) {
        (None, None) => Ok(None),
        (None, Some((source, _))) => {
            anyhow::bail!("key `api_key_header`: {source} is set, but no header to send the key in")
        }
        (Some(_), None) => anyhow::bail!(
            "key `api_key_header`: the key comes from api_key_file or api_key_env; neither is set"
        ),
        (Some(_), Some((source, key))) if key.is_empty() => {
            anyhow::bail!("key `{source}`: the api key is empty")
        }
        (Some(header), Some((_, key))) => Ok(Some((header.clone(), key))),
    }
}

/// `ErrorInfo` reasons of upstream failures (defined in the crate's `reasons` module).
pub use crate::reasons::upstream as reasons;

/// How one kind of record is fetched and read (docs/upstream-contract.md).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointMapping {
    /// Path under the base URL: `POST {"<request_field>": [iins]}` there, or with `method =
    /// "get"` a path with `{iin}` in it, asked once per person.
    pub path: String,
    /// `post` (one call per ≤ 500 IINs) or `get` (one call per IIN).
    #[serde(default)]
    pub method: EndpointMethod,
    /// Name of the request's IIN-list field (`post` only).
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
    /// HTTP status of a `get` that means "no records about this person" (default 404).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found_status: Option<u16>,
}

/// The HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMethod {
    /// One `POST` with the IINs in the body per ≤ [`MAX_IINS_PER_CALL`] IINs.
    #[default]
    Post,
    /// One `GET` of the path with `{iin}` replaced, per IIN.
    Get,
}

/// Most IINs one `POST` carries; larger look-ups are split into several calls.
pub const MAX_IINS_PER_CALL: usize = 500;

/// Most calls in flight for one look-up (the per-person `GET`s, or the ≤ 500-IIN parts).
const CALLS_IN_FLIGHT: usize = 8;

/// What a `get` endpoint's `not_found_status` is when not configured.
const DEFAULT_NOT_FOUND_STATUS: u16 = 404;

impl Default for EndpointMapping {
    fn default() -> Self {
        Self {
            path: String::new(),
            method: EndpointMethod::Post,
            request_field: default_request_field(),
            records_pointer: String::new(),
            complete_pointer: None,
            fields: BTreeMap::new(),
            required: Vec::new(),
            not_found_status: None,
        }
    }
}

impl EndpointMapping {
    /// IINs per call: up to [`MAX_IINS_PER_CALL`] for `post`, one for `get`.
    pub(crate) fn iins_per_call(&self) -> usize {
        match self.method {
            EndpointMethod::Post => MAX_IINS_PER_CALL,
            EndpointMethod::Get => 1,
        }
    }

    /// The status a `get` answers for a person it has no records about.
    pub(crate) fn not_found_status(&self) -> u16 {
        self.not_found_status.unwrap_or(DEFAULT_NOT_FOUND_STATUS)
    }

    /// Refuses what cannot work, naming the key (`endpoints.<kind>.<key>`).
    fn validate(&self, kind: &str) -> anyhow::Result<()> {
        let key = |name: &str| format!("endpoints.{kind}.{name}");
        let has_placeholder = self.path.contains(IIN_PLACEHOLDER);
        match self.method {
            EndpointMethod::Post if has_placeholder => anyhow::bail!(
                "key `{}`: a post path cannot contain {IIN_PLACEHOLDER} (the IINs go in the body; \
                 use method = \"get\" for per-person endpoints)",
                key("path")
            ),
            EndpointMethod::Get if !has_placeholder => anyhow::bail!(
                "key `{}`: a get path must contain {IIN_PLACEHOLDER}, where the IIN goes",
                key("path")
            ),
            _ => {}
        }
        if self.method == EndpointMethod::Post && self.not_found_status.is_some() {
            anyhow::bail!(
                "key `{}`: only a get endpoint has a not-found status",
                key("not_found_status")
            );
        }
        if let Some(status) = self.not_found_status
            && !(200..600).contains(&status)
        {
            anyhow::bail!(
                "key `{}`: {status} is not an http status",
                key("not_found_status")
            );
        }
        if !self.records_pointer.is_empty() && !self.records_pointer.starts_with('/') {
            anyhow::bail!(
                "key `{}`: a json pointer starts with / (or is empty: the answer itself)",
                key("records_pointer")
            );
        }
        if let Some(pointer) = &self.complete_pointer {
            if !pointer.starts_with('/') {
                anyhow::bail!(
                    "key `{}`: a json pointer starts with /",
                    key("complete_pointer")
                );
            }
            if self.records_pointer.is_empty() {
                anyhow::bail!(
                    "key `{}`: the answer is the array of records (records_pointer is empty), \
                     so it has no place for a completeness flag",
                    key("complete_pointer")
                );
            }
        }
        for (column, pointer) in &self.fields {
            if !pointer.starts_with('/') {
                anyhow::bail!(
                    "key `{}`: a json pointer starts with /",
                    key(&format!("fields.{column}"))
                );
            }
        }
        Ok(())
    }
}

/// What a `get` path's IIN is written as.
const IIN_PLACEHOLDER: &str = "{iin}";

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

impl UpstreamSettings {
    /// What `shlyuz check-upstream` prints: the base URL, the authentication (never the key),
    /// the timeouts and each endpoint with its method.
    pub(crate) fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "base_url: {}", self.base_url);
        let _ = writeln!(
            out,
            "per attempt: timeout {} ms, connect timeout {} ms; {} attempt(s), backoff from {} ms",
            self.timeout_ms, self.connect_timeout_ms, self.max_attempts, self.initial_backoff_ms
        );
        let api_key = match (&self.api_key_header, &self.api_key_file, &self.api_key_env) {
            (Some(header), Some(path), _) => format!("{header} from {}", path.display()),
            (Some(header), None, Some(variable)) => format!("{header} from ${variable}"),
            _ => "none".to_string(),
        };
        let _ = writeln!(out, "api key: {api_key}");
        let client_cert = self
            .client_cert
            .as_ref()
            .map_or("none".to_string(), |path| path.display().to_string());
        let _ = writeln!(out, "client certificate: {client_cert}");
        let header_names: Vec<&str> = self.headers.keys().map(String::as_str).collect();
        let _ = writeln!(out, "fixed headers: {}", header_names.join(", "));
        let _ = writeln!(out, "endpoints: {}", self.endpoints.len());
        for (kind, mapping) in &self.endpoints {
            let how = match mapping.method {
                EndpointMethod::Post => format!(
                    "POST {} ({{\"{}\": [≤ {MAX_IINS_PER_CALL} iins]}})",
                    mapping.path, mapping.request_field
                ),
                EndpointMethod::Get => format!(
                    "GET {} (one per iin, http {} = no records)",
                    mapping.path,
                    mapping.not_found_status()
                ),
            };
            let _ = writeln!(
                out,
                "  {kind}: {how}, records at {:?}",
                mapping.records_pointer
            );
        }
        out
    }
}

fn default_request_field() -> String {
    "iins".to_string()
}

/// Settings of one external registry (docs/upstream-contract.md).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Header that carries the API key, e.g. `X-API-Key`; the key comes from `api_key_file` or
    /// `api_key_env`, read at start and never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_header: Option<String>,
    /// File holding the API key (surrounding whitespace is trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// Environment variable holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// PEM client certificate (chain) for mutual TLS; needs `client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// Fixed headers sent with every call, e.g. `{ "X-Request-Source" = "shlyuz" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Endpoint per record kind, by the kind's name (`records::KIND_NAMES`).
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointMapping>,
}

impl Default for UpstreamSettings {
    /// The defaults of every key, with no base URL and no endpoint.
    fn default() -> Self {
        Self {
            base_url: String::new(),
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            max_attempts: default_max_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            breaker_failures: default_breaker_failures(),
            breaker_open_ms: default_breaker_open_ms(),
            ca_cert: None,
            api_key_header: None,
            api_key_file: None,
            api_key_env: None,
            client_cert: None,
            client_key: None,
            headers: BTreeMap::new(),
            endpoints: BTreeMap::new(),
        }
    }
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
                    "key `endpoints.{kind}`: {kind:?} is not a record kind (known: {})",
                    kinds.join(", ")
                );
            }
        }
        if settings.max_attempts == 0 {
            anyhow::bail!("key `max_attempts`: must be at least 1");
        }
        for (kind, mapping) in &settings.endpoints {
            mapping.validate(kind)?;
        }
        let client = build_client(&settings)?;
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

    /// The settings it was built from.
    pub(crate) fn settings(&self) -> &UpstreamSettings {
        &self.settings
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

    /// One HTTP exchange for the IINs of `group`: the parsed answer, or `None` when a per-person
    /// `get` answered its not-found status.
    async fn attempt(
        &self,
        mapping: &EndpointMapping,
        group: &[Iin],
    ) -> Result<Option<Value>, Attempt> {
        let base_url = self.settings.base_url.trim_end_matches('/');
        let request = match mapping.method {
            EndpointMethod::Post => {
                let iin_list: Vec<&str> = group.iter().map(Iin::as_str).collect();
                let body = serde_json::json!({ mapping.request_field.clone(): iin_list });
                let path = mapping.path.trim_start_matches('/');
                self.client.post(format!("{base_url}/{path}")).json(&body)
            }
            EndpointMethod::Get => {
                let iin = group.first().map(Iin::as_str).unwrap_or_default();
                let path = mapping
                    .path
                    .trim_start_matches('/')
                    .replace(IIN_PLACEHOLDER, iin);
                self.client.get(format!("{base_url}/{path}"))
            }
        };
        let response = match request.send().await {
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
        if mapping.method == EndpointMethod::Get && status.as_u16() == mapping.not_found_status() {
            return Ok(None);
        }
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
        serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            Attempt::Fail(SourceError::DataLoss {
                reason: reasons::MALFORMED,
                message: format!("the answer is not JSON: {error}"),
            })
        })
    }

    /// [`Self::attempt`] with retries and backoff; `Attempt::Retry` once every attempt failed.
    async fn exchange(
        &self,
        mapping: &EndpointMapping,
        group: &[Iin],
    ) -> Result<Option<Value>, Attempt> {
        let mut attempt_number = 1;
        loop {
            match self.attempt(mapping, group).await {
                Err(Attempt::Retry(_)) if attempt_number < self.settings.max_attempts => {
                    tokio::time::sleep(self.backoff.delay(i64::from(attempt_number))).await;
                    attempt_number += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Asks for the IINs — one `POST` per ≤ 500 of them, or one `GET` per IIN, at most
    /// [`CALLS_IN_FLIGHT`] at a time — and returns the answers in the order of
    /// `iins.chunks(mapping.iins_per_call())`. The breaker counts the look-up as one call.
    async fn call(
        &self,
        mapping: &EndpointMapping,
        iins: &[Iin],
    ) -> Result<Vec<Option<Value>>, SourceError> {
        use futures::{StreamExt as _, TryStreamExt as _};
        let permit = self.admit()?;
        // The exchanges are made before they are streamed: a closure in the stream would not be
        // `Send` for every lifetime, which `RegistrySource`'s boxed futures need.
        let exchanges: Vec<_> = iins
            .chunks(mapping.iins_per_call())
            .map(|group| self.exchange(mapping, group))
            .collect();
        let answers = futures::stream::iter(exchanges)
            .buffered(CALLS_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await;
        match answers {
            Ok(answers) => {
                permit.succeeded();
                Ok(answers)
            }
            Err(Attempt::Fail(error)) => {
                // The registry is up (it answered); the answer is what is wrong.
                permit.succeeded();
                Err(error)
            }
            Err(Attempt::Retry(error)) => {
                self.record_failure(permit);
                Err(error)
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

/// Reads records out of the answers of [`UpstreamRegistry::call`] with `mapping` into
/// `column → value` objects of `kind`, refusing anything that does not add up (the values' types
/// are checked when the objects are read into the kind's record type); a record more than one
/// answer holds (a marriage both of whose spouses were asked about in different calls) is kept
/// once.
fn map_records(
    answers: &[Option<Value>],
    mapping: &EndpointMapping,
    kind: KindSpec,
    iins: &[Iin],
) -> Result<Vec<serde_json::Map<String, Value>>, SourceError> {
    let mut mapped = Vec::new();
    let mut seen = HashSet::new();
    for (answer, group) in answers.iter().zip(iins.chunks(mapping.iins_per_call())) {
        let Some(answer) = answer else {
            continue;
        };
        for object in map_answer(answer, mapping, kind, group)? {
            if answers.len() > 1 && !seen.insert(Value::Object(object.clone()).to_string()) {
                continue;
            }
            mapped.push(object);
        }
    }
    Ok(mapped)
}

/// The records of one answer about the IINs of `group`.
fn map_answer(
    answer: &Value,
    mapping: &EndpointMapping,
    kind: KindSpec,
    group: &[Iin],
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
    let records = match records {
        Some(Value::Array(records)) => records.as_slice(),
        // A per-person endpoint may answer its one record as an object.
        Some(record @ Value::Object(_)) if mapping.method == EndpointMethod::Get => {
            std::slice::from_ref(record)
        }
        _ => {
            return Err(malformed(format!(
                "no array of records at {:?}",
                mapping.records_pointer
            )));
        }
    };
    let asked: HashSet<&str> = group.iter().map(Iin::as_str).collect();
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
