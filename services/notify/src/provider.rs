//! SMS providers behind one trait: `log` (the embedded default: records each SMS and writes it to
//! a file or stdout) and `http` (a JSON POST to an SMS gateway with an auth header and timeouts).

use parking_lot::Mutex;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::sms::mask_phone;

/// One SMS to hand to a provider.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutgoingSms {
    /// The notification it belongs to; providers echo it back as the reference.
    pub notification_id: String,
    /// E.164 phone.
    pub phone: String,
    /// Text.
    pub text: String,
    /// Segments the text takes.
    pub segments: i64,
}

/// Why a provider did not take an SMS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying (timeout, connection refused, 5xx, 429).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (the provider refused the message).
    #[error("{0}")]
    Permanent(String),
}

/// Something that sends SMS.
pub trait SmsProvider: Send + Sync + 'static {
    /// Hands `sms` over; the provider's message id on acceptance.
    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> BoxFuture<'a, Result<String, ProviderError>>;

    /// Name for logs and metrics.
    fn name(&self) -> &'static str;
}

/// Where the log provider writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSink {
    /// Nowhere but the in-memory record (tests).
    #[cfg(test)]
    Memory,
    /// One JSON line per SMS on stdout, phone masked.
    Stdout,
    /// One JSON line per SMS appended to a file.
    File(PathBuf),
}

/// The embedded provider: "sends" by recording. Like an SMS gateway that honours a client
/// message id, it sends each notification id once: a second hand-over of the same notification
/// (the worker died after the send, before it saved the result) is acknowledged without a second
/// SMS — across restarts too, since a file sink is read back at start.
#[derive(Debug)]
pub struct LogProvider {
    sink: LogSink,
    sent: Mutex<Vec<OutgoingSms>>,
    keep_in_memory: bool,
    /// Notification ids already sent; the lock is held across the write so two hand-overs of one
    /// notification cannot both write.
    sent_ids: Mutex<std::collections::HashSet<String>>,
}

impl LogProvider {
    /// A provider writing to `sink`; with `keep_in_memory` every SMS is also kept for
    /// [`LogProvider::sent`]. A file sink's existing lines tell which notifications were sent.
    pub fn new(sink: LogSink, keep_in_memory: bool) -> Self {
        let sent_ids = match &sink {
            LogSink::File(path) => ids_in_log_file(path),
            #[cfg(test)]
            LogSink::Memory => std::collections::HashSet::new(),
            LogSink::Stdout => std::collections::HashSet::new(),
        };
        Self {
            sink,
            sent: Mutex::new(Vec::new()),
            keep_in_memory,
            sent_ids: Mutex::new(sent_ids),
        }
    }

    #[cfg(test)]
    /// Every SMS recorded so far (only with `keep_in_memory`).
    pub fn sent(&self) -> Vec<OutgoingSms> {
        self.sent.lock().clone()
    }

    fn write_line(&self, sms: &OutgoingSms) -> Result<(), ProviderError> {
        let line = |phone: String| {
            serde_json::json!({
                "at_ms": time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
                "notification_id": sms.notification_id,
                "to": phone,
                "segments": sms.segments,
                "text": sms.text,
            })
            .to_string()
        };
        match &self.sink {
            #[cfg(test)]
            LogSink::Memory => Ok(()),
            LogSink::Stdout => {
                println!("{}", line(mask_phone(&sms.phone)));
                Ok(())
            }
            LogSink::File(path) => {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| {
                        ProviderError::Transient(format!("sms log {}: {error}", path.display()))
                    })?;
                writeln!(file, "{}", line(sms.phone.clone())).map_err(|error| {
                    ProviderError::Transient(format!("sms log {}: {error}", path.display()))
                })
            }
        }
    }
}

/// The notification ids of an SMS log file (a missing file has none; unreadable lines are skipped).
fn ids_in_log_file(path: &std::path::Path) -> std::collections::HashSet<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return std::collections::HashSet::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|line| {
            line.get("notification_id")
                .and_then(|id| id.as_str())
                .map(str::to_string)
        })
        .collect()
}

impl SmsProvider for LogProvider {
    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let mut sent_ids = self.sent_ids.lock();
            if sent_ids.contains(&sms.notification_id) {
                return Ok(format!("log-{}", sms.notification_id));
            }
            self.write_line(sms)?;
            sent_ids.insert(sms.notification_id.clone());
            drop(sent_ids);
            if self.keep_in_memory {
                self.sent.lock().push(sms.clone());
            }
            Ok(format!("log-{}", sms.notification_id))
        })
    }

    fn name(&self) -> &'static str {
        "log"
    }
}

/// Settings of the HTTP provider.
#[derive(Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpProviderSettings {
    /// URL the SMS is POSTed to.
    pub url: String,
    /// Header carrying the credential, e.g. `Authorization`.
    pub auth_header: String,
    /// Its value, e.g. `Bearer …`; never logged.
    pub auth_value: String,
    /// Whole-request timeout, ms.
    pub timeout_ms: u64,
    /// Connect timeout, ms.
    pub connect_timeout_ms: u64,
}

impl std::fmt::Debug for HttpProviderSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HttpProviderSettings")
            .field("url", &self.url)
            .field("auth_header", &self.auth_header)
            .field("auth_value", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish()
    }
}

impl Default for HttpProviderSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            auth_header: "Authorization".to_string(),
            auth_value: String::new(),
            timeout_ms: 5_000,
            connect_timeout_ms: 2_000,
        }
    }
}

/// The body POSTed to the SMS gateway.
#[derive(Debug, serde::Serialize)]
struct HttpSmsRequest<'a> {
    to: &'a str,
    text: &'a str,
    reference: &'a str,
    segments: i64,
}

/// The SMS gateway's answer on acceptance.
#[derive(Debug, serde::Deserialize)]
struct HttpSmsResponse {
    message_id: String,
}

/// Sends through an HTTP SMS gateway.
#[derive(Debug, Clone)]
pub struct HttpProvider {
    client: reqwest::Client,
    settings: Arc<HttpProviderSettings>,
}

impl HttpProvider {
    /// A provider for `settings`; an empty URL or a bad header is an error.
    pub fn new(settings: HttpProviderSettings) -> anyhow::Result<Self> {
        if settings.url.is_empty() {
            anyhow::bail!("notify http provider: url is empty");
        }
        reqwest::header::HeaderName::from_bytes(settings.auth_header.as_bytes())
            .map_err(|error| anyhow::anyhow!("notify http provider: auth_header: {error}"))?;
        // reqwest refuses to build a rustls client before a crypto provider is installed.
        shlyuz_kit::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .tls_backend_rustls()
            .build()
            .map_err(|error| anyhow::anyhow!("notify http provider: {error}"))?;
        Ok(Self {
            client,
            settings: Arc::new(settings),
        })
    }
}

impl SmsProvider for HttpProvider {
    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let mut request = self.client.post(&self.settings.url).json(&HttpSmsRequest {
                to: &sms.phone,
                text: &sms.text,
                reference: &sms.notification_id,
                segments: sms.segments,
            });
            if !self.settings.auth_value.is_empty() {
                request = request.header(
                    self.settings.auth_header.as_str(),
                    self.settings.auth_value.as_str(),
                );
            }
            let response = request.send().await.map_err(|error| {
                if error.is_timeout() {
                    ProviderError::Transient("sms gateway timed out".to_string())
                } else {
                    ProviderError::Transient(format!("sms gateway unreachable: {error}"))
                }
            })?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            let excerpt: String = body.chars().take(200).collect();
            if status.is_success() {
                let accepted: HttpSmsResponse = serde_json::from_str(&body).map_err(|error| {
                    ProviderError::Transient(format!(
                        "sms gateway answered {status} without a message_id: {error}"
                    ))
                })?;
                return Ok(accepted.message_id);
            }
            let reason = format!("sms gateway answered {status}: {excerpt}");
            if status.is_server_error()
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::REQUEST_TIMEOUT
            {
                Err(ProviderError::Transient(reason))
            } else {
                Err(ProviderError::Permanent(reason))
            }
        })
    }

    fn name(&self) -> &'static str {
        "http"
    }
}
