//! The configuration of the whole binary: one section per target plus the shared ones.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shlyuz_gateway::GatewayConfig;
use shlyuz_kit::config::{ConfigError, ShutdownConfig, TargetConfig, TlsConfig};
use shlyuz_kit::telemetry::TelemetryConfig;
use shlyuz_notify::config::NotifyConfig;

use crate::target::Target;

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
    /// The plaintext health-probe listener of `serve`.
    pub health: HealthConfig,
    /// The integration gateway.
    pub gateway: GatewayConfig,
    /// The registry service.
    pub registry: shlyuz_registry::config::RegistryConfig,
    /// The notify service.
    pub notify: NotifyConfig,
    /// The intake service.
    pub intake: shlyuz_intake::config::IntakeConfig,
    /// The housing service.
    pub housing: shlyuz_housing::config::HousingConfig,
}

impl Default for ShlyuzConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./var"),
            telemetry: TelemetryConfig::default(),
            tls: TlsConfig::default(),
            shutdown: ShutdownConfig::default(),
            health: HealthConfig::default(),
            gateway: GatewayConfig::default(),
            registry: shlyuz_registry::config::RegistryConfig::default(),
            notify: NotifyConfig::on_port(50053),
            intake: shlyuz_intake::config::IntakeConfig::default(),
            housing: shlyuz_housing::config::HousingConfig::default(),
        }
    }
}

/// The `[health]` section: a plaintext listener that serves only `grpc.health.v1.Health`, for
/// probes that cannot present a client certificate (the kubelet's native gRPC probes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Address of the health-only listener of `serve` (e.g. `0.0.0.0:8081`); empty disables it.
    /// `up` ignores it.
    pub listen: String,
}

impl HealthConfig {
    /// The listener address, when one is configured and valid.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

impl ShlyuzConfig {
    /// The listener and database part of the section of `target`.
    pub fn target(&self, target: Target) -> TargetConfig {
        match target {
            Target::Gateway => self.gateway.target(),
            Target::Registry => self.registry.target(),
            Target::Notify => self.notify.target(),
            Target::Intake => self.intake.target(),
            Target::Housing => self.housing.target(),
        }
    }

    /// Points every service's outbound calls at `gateway` where no address is configured
    /// (`shlyuz up`, once the gateway's port is bound).
    pub fn fill_gateway_address(&mut self, gateway: &str) {
        for address in [
            &mut self.registry.gateway_address,
            &mut self.notify.gateway_address,
            &mut self.intake.gateway_address,
            &mut self.housing.gateway_address,
        ] {
            if address.is_empty() {
                *address = gateway.to_string();
            }
        }
    }

    /// Checks what serde cannot: every target section, collecting all problems.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let Err(error) = self.gateway.validate() {
            problems.extend(error.problems);
        }
        for error in [self.intake.validate().err(), self.notify.validate().err()]
            .into_iter()
            .flatten()
        {
            problems.extend(error.problems);
        }
        for target in Target::ALL {
            if let Err(error) = self.target(target).validate(target.name()) {
                problems.extend(error.problems);
            }
        }
        problems.extend(self.housing.problems());
        if !self.health.listen.is_empty()
            && self.health.listen.parse::<std::net::SocketAddr>().is_err()
        {
            problems.push(format!(
                "config key `health.listen`: {:?} is not an address like 0.0.0.0:8081",
                self.health.listen
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("config key `data_dir`: must not be empty".to_string());
        }
        let callers = &self.tls.service_callers;
        if callers.is_empty() || callers.iter().any(|caller| caller.trim().is_empty()) {
            problems.push(
                "config key `tls.service_callers`: must name at least one participant (the \
                 gateway), none of them empty"
                    .to_string(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}
