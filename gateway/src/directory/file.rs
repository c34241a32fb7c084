//! The directory file as written by operators, before validation. Required keys are `Option`s and
//! numbers are signed so that a missing key or a bad value becomes one of the collected problems
//! (naming the entry and key) instead of stopping the parser at the first one.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DirectoryFile {
    #[serde(default)]
    pub(super) settings: SettingsEntry,
    #[serde(default)]
    pub(super) participants: Vec<ParticipantEntry>,
    #[serde(default)]
    pub(super) purposes: Vec<PurposeEntry>,
    #[serde(default)]
    pub(super) services: Vec<ServiceEntry>,
    #[serde(default)]
    pub(super) rules: Vec<RuleEntry>,
}

/// `[settings]`: gateway-wide defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SettingsEntry {
    pub(super) max_request_bytes: Option<i64>,
    pub(super) max_response_bytes: Option<i64>,
    pub(super) default_timeout_ms: Option<i64>,
    pub(super) replay_window_secs: Option<i64>,
}

/// One `[[participants]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ParticipantEntry {
    pub(super) id: Option<String>,
    pub(super) name: Option<String>,
    pub(super) signing_public_key: Option<String>,
    pub(super) certificate: Option<String>,
    pub(super) quota: Option<QuotaEntry>,
    #[serde(default)]
    pub(super) assert_roles: bool,
    #[serde(default)]
    pub(super) accept_messages_from: Vec<String>,
}

/// A participant's `quota = { … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QuotaEntry {
    pub(super) rate_per_second: Option<f64>,
    pub(super) burst: Option<i64>,
}

/// One `[[purposes]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PurposeEntry {
    pub(super) code: Option<String>,
    #[serde(default)]
    pub(super) description: String,
}

/// One `[[services]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServiceEntry {
    pub(super) name: Option<String>,
    pub(super) upstream: Option<String>,
    pub(super) upstream_server_name: Option<String>,
    pub(super) timeout_ms: Option<i64>,
    pub(super) personal_data: Option<bool>,
    #[serde(default)]
    pub(super) methods: Vec<String>,
    #[serde(default)]
    pub(super) idempotent_methods: Vec<String>,
    #[serde(default)]
    pub(super) client_streaming_methods: Vec<String>,
    #[serde(default)]
    pub(super) server_streaming_methods: Vec<String>,
    pub(super) max_request_bytes: Option<i64>,
    pub(super) max_response_bytes: Option<i64>,
    pub(super) breaker: Option<BreakerEntry>,
    pub(super) retry: Option<RetryEntry>,
}

/// A service's `breaker = { … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BreakerEntry {
    pub(super) failure_threshold: Option<i64>,
    pub(super) open_ms: Option<i64>,
}

/// A service's `retry = { … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryEntry {
    pub(super) max_attempts: Option<i64>,
    pub(super) initial_backoff_ms: Option<i64>,
}

/// One `[[rules]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleEntry {
    pub(super) participant: Option<String>,
    pub(super) service: Option<String>,
    pub(super) methods: Option<Vec<String>>,
    #[serde(default)]
    pub(super) purposes: Vec<String>,
    #[serde(default)]
    pub(super) consent_required: bool,
}
