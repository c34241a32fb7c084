//! The configuration of the whole binary: one section per target plus the shared ones.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shlyuz_kit::config::{ConfigError, ShutdownConfig, TargetConfig, TlsConfig};
use shlyuz_kit::telemetry::TelemetryConfig;

use crate::targets::Target;

/// Everything `shlyuz` reads from defaults, `shlyuz.toml`, `SHLYUZ__…` and `--set`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShlyuzConfig {
    /// Where `up` keeps its SQLite files, development PKI and `endpoints.json`.
    pub data_dir: PathBuf,
    /// Logs, traces and metrics.
    pub telemetry: TelemetryConfig,
    /// The participant identity of `serve` (ignored by `up`, which uses its development PKI).
    pub tls: TlsConfig,
    /// Graceful shutdown timings.
    pub shutdown: ShutdownConfig,
    /// The integration gateway.
    pub gateway: TargetConfig,
    /// The registry service.
    pub registry: TargetConfig,
    /// The notify service.
    pub notify: TargetConfig,
    /// The intake service.
    pub intake: TargetConfig,
    /// The housing service.
    pub housing: TargetConfig,
}

impl Default for ShlyuzConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./var"),
            telemetry: TelemetryConfig::default(),
            tls: TlsConfig::default(),
            shutdown: ShutdownConfig::default(),
            gateway: TargetConfig::on_port(50051),
            registry: TargetConfig::on_port(50052),
            notify: TargetConfig::on_port(50053),
            intake: TargetConfig::on_port(50054),
            housing: TargetConfig::on_port(50055),
        }
    }
}

impl ShlyuzConfig {
    /// The section of `target`.
    pub fn target(&self, target: Target) -> &TargetConfig {
        match target {
            Target::Gateway => &self.gateway,
            Target::Registry => &self.registry,
            Target::Notify => &self.notify,
            Target::Intake => &self.intake,
            Target::Housing => &self.housing,
        }
    }

    /// Checks what serde cannot: every target section, collecting all problems.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for target in Target::ALL {
            if let Err(error) = self.target(target).validate(target.name()) {
                problems.extend(error.problems);
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("config key `data_dir`: must not be empty".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}
