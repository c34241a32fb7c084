//! The `[intake]` configuration section: the target's listener and database, which participants
//! may assert user roles, and the MoD executors assignments go to.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shlyuz_kit::config::{ConfigError, TargetConfig};

/// Everything configurable about the intake target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// Database URL; empty means `<data_dir>/intake.db`.
    pub database_url: String,
    /// Size of the database connection pool.
    pub database_max_connections: u32,
    /// Maximum age of a client connection in seconds (0: unlimited).
    pub max_connection_age_secs: u64,
    /// `host:port` of the gateway this service calls others through (`shlyuz up` fills it).
    pub gateway_address: String,
    /// The name the gateway's certificate carries.
    pub gateway_server_name: String,
    /// Participants whose `x-shlyuz-user-role` intake trusts (the portal for candidates, the
    /// officials' workstation); every other caller is refused.
    pub role_asserting_participants: Vec<String>,
    /// User ids of the MoD executors of the department; empty accepts any assignee.
    pub executors: Vec<String>,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        let target = TargetConfig::on_port(50054);
        Self {
            listen: target.listen,
            database_url: target.database_url,
            database_max_connections: target.database_max_connections,
            max_connection_age_secs: target.max_connection_age_secs,
            gateway_address: target.gateway_address,
            gateway_server_name: target.gateway_server_name,
            role_asserting_participants: vec!["jauynger-portal".to_string(), "sdu".to_string()],
            executors: Vec::new(),
        }
    }
}

impl IntakeConfig {
    /// The listener and database part.
    pub fn target(&self) -> TargetConfig {
        TargetConfig {
            listen: self.listen,
            database_url: self.database_url.clone(),
            database_max_connections: self.database_max_connections,
            max_connection_age_secs: self.max_connection_age_secs,
            gateway_address: self.gateway_address.clone(),
            gateway_server_name: self.gateway_server_name.clone(),
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let Err(error) = self.target().validate("intake") {
            problems.extend(error.problems);
        }
        for (key, values) in [
            (
                "intake.role_asserting_participants",
                &self.role_asserting_participants,
            ),
            ("intake.executors", &self.executors),
        ] {
            if values.iter().any(|value| value.trim().is_empty()) {
                problems.push(format!("config key `{key}`: entries must not be empty"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}
