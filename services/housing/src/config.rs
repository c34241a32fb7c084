//! The `[housing]` configuration section: the target's listener and database, the entitled-area
//! norm and how often allocation rounds run.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shlyuz_kit::config::TargetConfig;

use crate::norm::AreaNorm;

/// Everything configurable about the housing target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HousingConfig {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// Database URL; empty means `<data_dir>/housing.db`.
    pub database_url: String,
    /// Size of the database connection pool.
    pub database_max_connections: u32,
    /// Maximum age of a client connection in seconds (0: unlimited).
    pub max_connection_age_secs: u64,
    /// `host:port` of the gateway this service calls others through (`shlyuz up` fills it).
    pub gateway_address: String,
    /// The name the gateway's certificate carries.
    pub gateway_server_name: String,
    /// Entitled area, lower bound per family member, m².
    pub min_m2_per_member: f64,
    /// Entitled area, upper bound per family member, m².
    pub max_m2_per_member: f64,
    /// Seconds between allocation rounds (overdue offers expire, free dwellings are offered).
    pub allocation_interval_secs: u64,
    /// Seconds a round waits after an offer's deadline before recording the silence as a refusal,
    /// so a reply received in time but still in transit through notify is not beaten by it.
    pub reply_grace_secs: u64,
}

impl Default for HousingConfig {
    fn default() -> Self {
        let target = TargetConfig::on_port(50055);
        let norm = AreaNorm::default();
        Self {
            listen: target.listen,
            database_url: target.database_url,
            database_max_connections: target.database_max_connections,
            max_connection_age_secs: target.max_connection_age_secs,
            gateway_address: target.gateway_address,
            gateway_server_name: target.gateway_server_name,
            min_m2_per_member: norm.min_m2_per_member,
            max_m2_per_member: norm.max_m2_per_member,
            allocation_interval_secs: 60,
            reply_grace_secs: crate::REPLY_GRACE.whole_seconds().unsigned_abs(),
        }
    }
}

impl HousingConfig {
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

    /// The entitled-area norm.
    pub fn norm(&self) -> AreaNorm {
        AreaNorm {
            min_m2_per_member: self.min_m2_per_member,
            max_m2_per_member: self.max_m2_per_member,
        }
    }

    /// Problems serde cannot see, as `config key …` messages.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(message) = self.norm().validate() {
            problems.push(format!(
                "config key `housing.min_m2_per_member`/`housing.max_m2_per_member`: {message}"
            ));
        }
        if self.reply_grace_secs > 6 * 3_600 {
            problems
                .push("config key `housing.reply_grace_secs`: at most 21600 (6 hours)".to_string());
        }
        if self.allocation_interval_secs == 0 {
            problems.push(
                "config key `housing.allocation_interval_secs`: must be at least 1".to_string(),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_inverted_norm_is_named() {
        assert!(HousingConfig::default().problems().is_empty());
        let inverted = HousingConfig {
            min_m2_per_member: 20.0,
            max_m2_per_member: 12.0,
            allocation_interval_secs: 0,
            ..HousingConfig::default()
        };
        let problems = inverted.problems();
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("housing.min_m2_per_member"));
        assert!(problems[1].contains("housing.allocation_interval_secs"));
    }
}
