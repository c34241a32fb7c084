//! The `[gateway]` section of the Shlyuz configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shlyuz_kit::config::{ConfigError, TargetConfig};

use crate::message_log::MessageLogOptions;
use crate::proxy::PolicyMode;

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
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let target = TargetConfig::on_port(50051);
        let log = MessageLogOptions::default();
        Self {
            listen: target.listen,
            database_url: target.database_url,
            database_max_connections: target.database_max_connections,
            max_connection_age_secs: target.max_connection_age_secs,
            directory_file: PathBuf::new(),
            directory_poll_ms: 2_000,
            policy_mode: PolicyMode::Full,
            store_bodies: log.store_bodies,
            log_batch_max: log.max_batch,
            checkpoint_every_entries: log.checkpoint_every_entries,
            checkpoint_interval_secs: log.checkpoint_interval.as_secs(),
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
            },
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
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewayConfig::default().settings()
    }
}
