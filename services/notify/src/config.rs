//! The `[notify]` configuration section: the listener and database every target has, the gateway
//! it calls through, and the SMS settings under `[notify.sms]`.

use shlyuz_kit::config::{ConfigError, TargetConfig};

use crate::{NotifySettings, ProviderKind};

/// The `[notify]` section.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Address the gRPC server listens on.
    pub listen: std::net::SocketAddr,
    /// Database URL; empty means `<data_dir>/notify.db`.
    pub database_url: String,
    /// Size of the database connection pool.
    pub database_max_connections: u32,
    /// Maximum age of a client connection in seconds (0: unlimited).
    pub max_connection_age_secs: u64,
    /// `host:port` of the gateway (phone look-ups, forwarding SMS replies).
    pub gateway_address: String,
    /// The name the gateway's certificate carries.
    pub gateway_server_name: String,
    /// SMS provider, retries, OTP limits and the provider webhook.
    pub sms: NotifySettings,
}

impl NotifyConfig {
    /// Defaults listening on loopback at `port`.
    pub fn on_port(port: u16) -> Self {
        let target = TargetConfig::on_port(port);
        Self {
            listen: target.listen,
            database_url: target.database_url,
            database_max_connections: target.database_max_connections,
            max_connection_age_secs: target.max_connection_age_secs,
            gateway_address: target.gateway_address,
            gateway_server_name: target.gateway_server_name,
            sms: NotifySettings::default(),
        }
    }

    /// The parts every target has.
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
        self.target().validate("notify")?;
        if self.sms.provider == ProviderKind::Http && self.sms.http.url.is_empty() {
            return Err(ConfigError::key(
                "notify.sms.http.url",
                "is required with provider = \"http\"",
            ));
        }
        if !self.sms.webhook_listen.is_empty()
            && self
                .sms
                .webhook_listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(ConfigError::key(
                "notify.sms.webhook_listen",
                format!(
                    "{:?} is not an address like 0.0.0.0:8090",
                    self.sms.webhook_listen
                ),
            ));
        }
        if self.sms.delivery.max_attempts == 0 {
            return Err(ConfigError::key(
                "notify.sms.delivery.max_attempts",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self::on_port(50053)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sms_section_parses_and_the_http_provider_needs_a_url() {
        let config: NotifyConfig = toml::from_str(
            "listen = \"0.0.0.0:50053\"\n\
             gateway_address = \"gateway:50051\"\n\
             [sms]\nprovider = \"http\"\nwebhook_listen = \"0.0.0.0:8090\"\n\
             [sms.delivery]\nmax_attempts = 3\n",
        )
        .expect("parses");
        assert_eq!(config.sms.provider, ProviderKind::Http);
        assert_eq!(config.sms.delivery.max_attempts, 3);
        assert_eq!(config.target().gateway_address, "gateway:50051");
        let problems = config.validate().expect_err("no url").problems;
        assert!(problems[0].contains("notify.sms.http.url"), "{problems:?}");
        let unknown = toml::from_str::<NotifyConfig>("[sms]\nprovder = \"log\"\n");
        assert!(unknown.is_err(), "a misspelt key is refused");
    }

    #[test]
    fn a_gateway_address_without_a_port_is_refused() {
        let config = NotifyConfig {
            gateway_address: "gateway".to_string(),
            ..NotifyConfig::default()
        };
        let problems = config.validate().expect_err("no port").problems;
        assert!(
            problems[0].contains("notify.gateway_address"),
            "{problems:?}"
        );
    }
}
