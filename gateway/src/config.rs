//! The `[gateway]` section of the Shlyuz configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shlyuz_kit::config::{ConfigError, TargetConfig};
use shlyuz_kit::listener::ListenerOptions;
use shlyuz_kit::pki::VerifyingKey;

use crate::async_channel::AsyncOptions;
use crate::message_log::MessageLogOptions;
use crate::proxy::{PolicyMode, SyncOptions};

/// Everything configurable about the gateway process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// Database URL of the message log; empty means `<data_dir>/gateway.db`.
    pub database_url: String,
    /// Size of the database connection pool.
    pub database_max_connections: u32,
    /// Maximum age of a client connection in seconds (0: unlimited), so HTTP/2 connections
    /// rebalance across gateway replicas.
    pub max_connection_age_secs: u64,
    /// The directory file (participants, routes, rules); empty means
    /// `<data_dir>/gateway-directory.toml`, written from the defaults on first start.
    pub directory_file: PathBuf,
    /// How often the directory file is checked for changes, in milliseconds (SIGHUP reloads at once).
    pub directory_poll_ms: u64,
    /// Where `target:<name>` upstreams of the directory go when the gateway runs alone
    /// (`serve --target gateway`), e.g. `{ registry = "registry:50052" }`; `up` uses the addresses
    /// it bound instead.
    pub targets: std::collections::BTreeMap<String, String>,
    /// `full` (every check and the message log) or `pass_through` (routing only; benchmarks).
    pub policy_mode: PolicyMode,
    /// Keep request and response bodies in the message log (off: data minimisation).
    pub store_bodies: bool,
    /// Most entries written in one message-log transaction.
    pub log_batch_max: usize,
    /// A signed checkpoint after this many entries.
    pub checkpoint_every_entries: i64,
    /// A signed checkpoint at least this often, in seconds, while entries arrive.
    pub checkpoint_interval_secs: u64,
    /// Time to live of an async message that does not set one, in seconds.
    pub async_default_ttl_secs: u64,
    /// Longest time to live an async message may ask for, in seconds.
    pub async_max_ttl_secs: u64,
    /// Wait before the second delivery attempt, in milliseconds (doubles per attempt).
    pub async_retry_initial_ms: u64,
    /// Longest wait between delivery attempts, in milliseconds.
    pub async_retry_max_ms: u64,
    /// Async deliveries in flight per gateway instance.
    pub async_delivery_concurrency: usize,
    /// How often the async queue is polled when nothing wakes the dispatcher, in milliseconds.
    pub async_poll_ms: u64,
    /// How much longer than its route's timeout an async delivery claim holds, in milliseconds:
    /// after a crash, a message that was being delivered is due again within its route's
    /// timeout plus this margin.
    pub async_lease_margin_ms: u64,
    /// How long final async messages, their inbox items and payloads are kept, in hours.
    pub async_retention_hours: u64,
    /// Async messages one sender may have on delivery at once (`RESOURCE_EXHAUSTED`
    /// `ASYNC_QUOTA_EXCEEDED` beyond).
    pub async_quota_messages: u64,
    /// Payload bytes one sender's async messages on delivery may hold at once.
    pub async_quota_bytes: u64,
    /// Public keys (SPKI PEM) the gateway signed with before a key rotation: `VerifyChain` accepts
    /// checkpoints signed by them as well as by the current `tls.signing_key`.
    pub retired_signing_public_keys: Vec<PathBuf>,
    /// `instance`: each gateway process remembers message ids itself (one process, `shlyuz up`);
    /// `shared`: replicas on one database also refuse each other's replays (Kubernetes).
    pub replay_guard: ReplayScope,
    /// Accept envelopes signed with the legacy canonical string `shlyuz-envelope-v1` (no user
    /// role or region). On for one release so senders can move to v2; then off.
    pub accept_envelope_v1: bool,
    /// Calls per second one client certificate identity may make, refused ones included, before
    /// any other check (the participant's own `quota` of the directory applies as well).
    pub caller_rate_per_second: f64,
    /// Burst of `caller_rate_per_second`.
    pub caller_burst: u32,
    /// How long a new connection may take to complete its TLS handshake, in milliseconds.
    pub tls_handshake_timeout_ms: u64,
    /// Client connections open at once; further ones are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Calls (HTTP/2 streams) one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// How often an idle client connection is pinged, in seconds.
    pub http2_keepalive_interval_secs: u64,
    /// How long a ping may go unanswered before the connection is closed, in seconds.
    pub http2_keepalive_timeout_secs: u64,
    /// PEM file of certificate revocation lists for client certificates (empty: none); reloaded
    /// like the directory, for new connections.
    pub client_crl_file: PathBuf,
    /// How long the gateway waits for the whole request message of a call, in milliseconds.
    pub request_body_timeout_ms: u64,
    /// Request bytes the gateway holds at once across all calls before their checks.
    pub max_buffered_request_bytes: usize,
}

/// Which gateways refuse a replayed message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayScope {
    /// This process only (memory).
    #[default]
    Instance,
    /// Every replica on the gateway's database (memory first, then a shared row per call).
    Shared,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let target = TargetConfig::on_port(50051);
        let log = MessageLogOptions::default();
        let delivery = AsyncOptions::default();
        let sync = SyncOptions::default();
        let listener = ListenerOptions::default();
        Self {
            listen: target.listen,
            database_url: target.database_url,
            database_max_connections: target.database_max_connections,
            max_connection_age_secs: target.max_connection_age_secs,
            directory_file: PathBuf::new(),
            directory_poll_ms: 2_000,
            targets: std::collections::BTreeMap::new(),
            policy_mode: PolicyMode::Full,
            store_bodies: log.store_bodies,
            log_batch_max: log.max_batch,
            checkpoint_every_entries: log.checkpoint_every_entries,
            checkpoint_interval_secs: log.checkpoint_interval.as_secs(),
            async_default_ttl_secs: delivery.default_ttl.as_secs(),
            async_max_ttl_secs: delivery.max_ttl.as_secs(),
            async_retry_initial_ms: delivery.retry_initial.as_millis() as u64,
            async_retry_max_ms: delivery.retry_max.as_millis() as u64,
            async_delivery_concurrency: delivery.delivery_concurrency,
            async_poll_ms: delivery.poll_interval.as_millis() as u64,
            async_lease_margin_ms: delivery.lease_margin.as_millis() as u64,
            async_retention_hours: delivery.retention.as_secs() / 3600,
            async_quota_messages: delivery.quota_messages,
            async_quota_bytes: delivery.quota_bytes,
            retired_signing_public_keys: Vec::new(),
            replay_guard: ReplayScope::Instance,
            accept_envelope_v1: sync.accept_envelope_v1,
            caller_rate_per_second: sync.caller_rate_per_second,
            caller_burst: sync.caller_burst,
            tls_handshake_timeout_ms: listener.tls_handshake_timeout.as_millis() as u64,
            max_connections: listener.max_connections,
            max_concurrent_streams: listener.max_concurrent_streams,
            http2_keepalive_interval_secs: listener.http2_keepalive_interval.as_secs(),
            http2_keepalive_timeout_secs: listener.http2_keepalive_timeout.as_secs(),
            client_crl_file: PathBuf::new(),
            request_body_timeout_ms: sync.request_body_timeout.as_millis() as u64,
            max_buffered_request_bytes: sync.max_buffered_request_bytes,
        }
    }
}

impl GatewayConfig {
    /// The generic target part of this section.
    pub fn target(&self) -> TargetConfig {
        TargetConfig {
            listen: self.listen,
            database_url: self.database_url.clone(),
            database_max_connections: self.database_max_connections,
            max_connection_age_secs: self.max_connection_age_secs,
            // The gateway makes no calls through a gateway.
            ..TargetConfig::default()
        }
    }

    /// Checks values serde cannot check.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.target().validate("gateway")?;
        if self.log_batch_max == 0 {
            return Err(ConfigError::key(
                "gateway.log_batch_max",
                "must be at least 1",
            ));
        }
        if self.checkpoint_every_entries <= 0 {
            return Err(ConfigError::key(
                "gateway.checkpoint_every_entries",
                "must be at least 1",
            ));
        }
        for (key, value) in [
            (
                "gateway.async_default_ttl_secs",
                self.async_default_ttl_secs,
            ),
            ("gateway.async_max_ttl_secs", self.async_max_ttl_secs),
            (
                "gateway.async_retry_initial_ms",
                self.async_retry_initial_ms,
            ),
            ("gateway.async_retry_max_ms", self.async_retry_max_ms),
            (
                "gateway.async_delivery_concurrency",
                self.async_delivery_concurrency as u64,
            ),
            ("gateway.async_poll_ms", self.async_poll_ms),
            ("gateway.async_lease_margin_ms", self.async_lease_margin_ms),
            ("gateway.async_retention_hours", self.async_retention_hours),
            ("gateway.async_quota_messages", self.async_quota_messages),
            ("gateway.async_quota_bytes", self.async_quota_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::key(key, "must be at least 1"));
            }
        }
        if self.async_default_ttl_secs > self.async_max_ttl_secs {
            return Err(ConfigError::key(
                "gateway.async_default_ttl_secs",
                "must not exceed gateway.async_max_ttl_secs",
            ));
        }
        if !(self.caller_rate_per_second.is_finite() && self.caller_rate_per_second > 0.0) {
            return Err(ConfigError::key(
                "gateway.caller_rate_per_second",
                "must be a positive number",
            ));
        }
        if self.caller_burst == 0 {
            return Err(ConfigError::key(
                "gateway.caller_burst",
                "must be at least 1",
            ));
        }
        for (key, value) in [
            (
                "gateway.tls_handshake_timeout_ms",
                self.tls_handshake_timeout_ms,
            ),
            ("gateway.max_connections", self.max_connections as u64),
            (
                "gateway.max_concurrent_streams",
                u64::from(self.max_concurrent_streams),
            ),
            (
                "gateway.http2_keepalive_interval_secs",
                self.http2_keepalive_interval_secs,
            ),
            (
                "gateway.http2_keepalive_timeout_secs",
                self.http2_keepalive_timeout_secs,
            ),
            (
                "gateway.request_body_timeout_ms",
                self.request_body_timeout_ms,
            ),
            (
                "gateway.max_buffered_request_bytes",
                self.max_buffered_request_bytes as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::key(key, "must be at least 1"));
            }
        }
        if self.directory_poll_ms == 0 {
            return Err(ConfigError::key(
                "gateway.directory_poll_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The directory file, defaulting to `<data_dir>/gateway-directory.toml`.
    pub fn directory_file_or_default(&self, data_dir: &Path) -> PathBuf {
        if self.directory_file.as_os_str().is_empty() {
            data_dir.join("gateway-directory.toml")
        } else {
            self.directory_file.clone()
        }
    }

    /// The gateway settings this section describes.
    pub fn settings(&self) -> GatewaySettings {
        GatewaySettings {
            mode: self.policy_mode,
            directory_poll_interval: Duration::from_millis(self.directory_poll_ms),
            message_log: MessageLogOptions {
                max_batch: self.log_batch_max,
                checkpoint_every_entries: self.checkpoint_every_entries,
                checkpoint_interval: Duration::from_secs(self.checkpoint_interval_secs.max(1)),
                store_bodies: self.store_bodies,
                ..MessageLogOptions::default()
            },
            async_channel: AsyncOptions {
                default_ttl: Duration::from_secs(self.async_default_ttl_secs),
                max_ttl: Duration::from_secs(self.async_max_ttl_secs),
                retry_initial: Duration::from_millis(self.async_retry_initial_ms),
                retry_max: Duration::from_millis(self.async_retry_max_ms),
                delivery_concurrency: self.async_delivery_concurrency,
                poll_interval: Duration::from_millis(self.async_poll_ms),
                lease_margin: Duration::from_millis(self.async_lease_margin_ms),
                retention: Duration::from_secs(self.async_retention_hours.saturating_mul(3600)),
                keep_payloads: self.store_bodies,
                deliver: true,
                quota_messages: self.async_quota_messages,
                quota_bytes: self.async_quota_bytes,
            },
            retired_signing_keys: Vec::new(),
            replay_scope: self.replay_guard,
            sync: SyncOptions {
                accept_envelope_v1: self.accept_envelope_v1,
                caller_rate_per_second: self.caller_rate_per_second,
                caller_burst: self.caller_burst,
                request_body_timeout: Duration::from_millis(self.request_body_timeout_ms),
                max_buffered_request_bytes: self.max_buffered_request_bytes,
            },
        }
    }

    /// The limits of the gateway's listener: connections, streams, keep-alive, TLS handshake and
    /// the client CRLs (checked for changes as often as the directory).
    pub fn listener_options(&self) -> ListenerOptions {
        ListenerOptions {
            tls_handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
            max_connections: self.max_connections,
            max_concurrent_streams: self.max_concurrent_streams,
            http2_keepalive_interval: Duration::from_secs(self.http2_keepalive_interval_secs),
            http2_keepalive_timeout: Duration::from_secs(self.http2_keepalive_timeout_secs),
            client_crl_file: (!self.client_crl_file.as_os_str().is_empty())
                .then(|| self.client_crl_file.clone()),
            reload_interval: Duration::from_millis(self.directory_poll_ms),
            ..ListenerOptions::default()
        }
    }

    /// Reads `retired_signing_public_keys`; a file that is missing or not an Ed25519 public key is
    /// named with its key.
    pub fn retired_signing_keys(&self) -> Result<Vec<VerifyingKey>, ConfigError> {
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        for (index, path) in self.retired_signing_public_keys.iter().enumerate() {
            match VerifyingKey::from_pem_file(path) {
                Ok(key) => keys.push(key),
                Err(error) => problems.push(format!(
                    "config key `gateway.retired_signing_public_keys[{index}]` ({}): {error}",
                    path.display()
                )),
            }
        }
        if problems.is_empty() {
            Ok(keys)
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// What a running gateway needs beyond its parts.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// What to enforce.
    pub mode: PolicyMode,
    /// How often the directory file is checked for changes.
    pub directory_poll_interval: Duration,
    /// Message-log batching, checkpoints and body storage.
    pub message_log: MessageLogOptions,
    /// Async channel retries, expiry and polling.
    pub async_channel: AsyncOptions,
    /// Keys the gateway signed message-log checkpoints with before a rotation (the current key is
    /// always trusted); see [`GatewayConfig::retired_signing_keys`].
    pub retired_signing_keys: Vec<VerifyingKey>,
    /// Which gateways refuse a replayed message id.
    pub replay_scope: ReplayScope,
    /// Envelope versions and admission limits of the sync channel.
    pub sync: SyncOptions,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewayConfig::default().settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_limits_come_from_the_gateway_section() {
        let config = GatewayConfig {
            tls_handshake_timeout_ms: 1_500,
            max_connections: 7,
            client_crl_file: PathBuf::from("/etc/shlyuz/crl/clients.crl"),
            ..GatewayConfig::default()
        };
        let listener = config.listener_options();
        assert_eq!(listener.tls_handshake_timeout, Duration::from_millis(1_500));
        assert_eq!(listener.max_connections, 7);
        assert_eq!(
            listener.client_crl_file.as_deref(),
            Some(Path::new("/etc/shlyuz/crl/clients.crl"))
        );
        assert_eq!(
            GatewayConfig::default().listener_options().client_crl_file,
            None
        );
    }

    #[test]
    fn a_zero_limit_is_named_with_its_key() {
        let config = GatewayConfig {
            max_buffered_request_bytes: 0,
            ..GatewayConfig::default()
        };
        let problems = config.validate().expect_err("zero budget").problems;
        assert!(
            problems
                .iter()
                .any(|problem| problem.contains("gateway.max_buffered_request_bytes")),
            "{problems:?}"
        );
    }
}
