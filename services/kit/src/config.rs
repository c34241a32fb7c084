//! Layered configuration: built-in defaults → TOML file → environment (`SHLYUZ__SECTION__KEY`) →
//! command-line overrides (`--set section.key=value`). Unknown keys and bad values stop start-up
//! with a message that names the key, the problem and where the value came from.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The environment prefix of configuration variables; `__` separates nested keys.
pub const ENV_PREFIX: &str = "SHLYUZ__";

/// Where configuration comes from, in increasing priority after the defaults.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// A TOML file; it must exist when given.
    pub file: Option<PathBuf>,
    /// Read `SHLYUZ__…` environment variables.
    pub use_environment: bool,
    /// `(dotted.key, value)` pairs from the command line; values are parsed as TOML values when
    /// they parse (numbers, booleans, arrays) and taken as strings otherwise.
    pub overrides: Vec<(String, String)>,
}

/// Configuration that cannot be used, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// One line per problem, each naming the key.
    pub problems: Vec<String>,
}

impl ConfigError {
    /// A single problem with `key`.
    pub fn key(key: &str, problem: impl std::fmt::Display) -> Self {
        Self {
            problems: vec![format!("config key `{key}`: {problem}")],
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "invalid configuration: {}",
            self.problems.join("; ")
        )
    }
}

impl std::error::Error for ConfigError {}

/// Loads `T` from its defaults and the given sources.
pub fn load_layered<T>(sources: &ConfigSources) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = &sources.file {
        if !file.is_file() {
            return Err(ConfigError {
                problems: vec![format!("config file {} not found", file.display())],
            });
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    if sources.use_environment {
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    }
    for (key, raw_value) in &sources.overrides {
        if key.is_empty() {
            return Err(ConfigError {
                problems: vec![format!(
                    "override {raw_value:?} names no key (use --set section.key=value)"
                )],
            });
        }
        figment = figment.merge(Serialized::default(key, parse_override_value(raw_value)));
    }
    figment.extract::<T>().map_err(describe_figment_error)
}

/// Splits `section.key=value` as given on the command line.
pub fn parse_override(argument: &str) -> Result<(String, String), ConfigError> {
    match argument.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(ConfigError {
            problems: vec![format!("--set {argument:?}: expected section.key=value")],
        }),
    }
}

fn parse_override_value(raw_value: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("value = {raw_value}")) {
        Ok(mut table) => table
            .remove("value")
            .unwrap_or_else(|| toml::Value::String(raw_value.to_string())),
        Err(_) => toml::Value::String(raw_value.to_string()),
    }
}

fn describe_figment_error(error: figment::Error) -> ConfigError {
    let problems = error
        .into_iter()
        .map(|single| {
            let key = single.path.join(".");
            let source = single
                .metadata
                .as_ref()
                .map(|metadata| match &metadata.source {
                    Some(source) => format!(" (from {source})"),
                    None => format!(" (from {})", metadata.name),
                })
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", single.kind)
            } else {
                format!("config key `{key}`: {}{source}", single.kind)
            }
        })
        .collect();
    ConfigError { problems }
}

/// Checks that a file named by configuration key `key` exists.
pub fn require_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(ConfigError::key(key, "is required"));
    }
    if !path.is_file() {
        return Err(ConfigError::key(
            key,
            format!("file {} not found", path.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        listen: SocketAddr,
        name: String,
    }

    impl Default for Section {
        fn default() -> Self {
            Self {
                listen: "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!()),
                name: "default".to_string(),
            }
        }
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        server: Section,
        workers: u32,
    }

    fn write_file(contents: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), contents).expect("write");
        file
    }

    #[test]
    fn layers_apply_in_order() {
        let file =
            write_file("workers = 3\n[server]\nname = \"from-file\"\nlisten = \"127.0.0.1:2\"\n");
        let sources = ConfigSources {
            file: Some(file.path().to_path_buf()),
            use_environment: false,
            overrides: vec![("server.listen".to_string(), "127.0.0.1:3".to_string())],
        };
        let loaded: Sample = load_layered(&sources).expect("valid");
        assert_eq!(loaded.workers, 3);
        assert_eq!(loaded.server.name, "from-file");
        assert_eq!(loaded.server.listen.port(), 3);
    }

    #[test]
    fn unknown_key_is_named() {
        let file = write_file("[server]\nlisten_addr = \"127.0.0.1:2\"\n");
        let sources = ConfigSources {
            file: Some(file.path().to_path_buf()),
            ..ConfigSources::default()
        };
        let error = load_layered::<Sample>(&sources).expect_err("unknown key");
        let text = error.to_string();
        assert!(text.contains("listen_addr"), "{text}");
        assert!(text.contains("server"), "{text}");
    }

    #[test]
    fn bad_port_is_named() {
        let sources = ConfigSources {
            overrides: vec![("server.listen".to_string(), "127.0.0.1:70000".to_string())],
            ..ConfigSources::default()
        };
        let error = load_layered::<Sample>(&sources).expect_err("bad port");
        assert!(error.to_string().contains("server.listen"), "{error}");
    }

    #[test]
    fn missing_file_is_reported() {
        let sources = ConfigSources {
            file: Some(PathBuf::from("/nonexistent/shlyuz.toml")),
            ..ConfigSources::default()
        };
        let error = load_layered::<Sample>(&sources).expect_err("missing file");
        assert!(error.to_string().contains("/nonexistent/shlyuz.toml"));
    }

    #[test]
    fn override_values_are_typed() {
        let sources = ConfigSources {
            overrides: vec![("workers".to_string(), "7".to_string())],
            ..ConfigSources::default()
        };
        let loaded: Sample = load_layered(&sources).expect("valid");
        assert_eq!(loaded.workers, 7);
        assert!(parse_override("novalue").is_err());
        assert_eq!(
            parse_override("a.b=c=d").expect("valid"),
            ("a.b".to_string(), "c=d".to_string())
        );
    }
}

/// How a target accepts and makes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Mutual TLS: the default, and the only mode for production.
    #[default]
    Mutual,
    /// Plaintext; only for tests or behind a mesh that terminates mTLS, and only when set explicitly.
    Plaintext,
}

/// The `[tls]` section: this process's participant certificate, key and message-signing key, and
/// whom the services behind the gateway accept calls from.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Mutual TLS or plaintext.
    pub mode: TlsMode,
    /// PEM file of the CA that signs every participant certificate.
    pub ca_cert: PathBuf,
    /// PEM certificate chain of this participant.
    pub cert: PathBuf,
    /// PEM private key of this participant.
    pub key: PathBuf,
    /// PKCS#8 PEM Ed25519 key this participant signs message envelopes with.
    pub signing_key: PathBuf,
    /// Participants whose calls the service targets (registry, notify, intake, housing) accept on
    /// their routes: the gateway, so nobody reaches a service around its access rules, consent
    /// checks and logs. Health probes and reflection stay open. The gateway target accepts every
    /// participant of its directory.
    pub service_callers: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            mode: TlsMode::default(),
            ca_cert: PathBuf::new(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            signing_key: PathBuf::new(),
            service_callers: vec!["gateway".to_string()],
        }
    }
}

impl TlsConfig {
    /// Checks that every file mutual TLS needs exists.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mode == TlsMode::Plaintext {
            return Ok(());
        }
        let mut problems = Vec::new();
        for (key, path) in [
            ("tls.ca_cert", &self.ca_cert),
            ("tls.cert", &self.cert),
            ("tls.key", &self.key),
        ] {
            if let Err(error) = require_file(key, path) {
                problems.extend(error.problems);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// The section of one target (`[gateway]`, `[registry]`, …): where it listens and its database.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetConfig {
    /// Address the gRPC server listens on.
    pub listen: std::net::SocketAddr,
    /// Database URL (`sqlite:path` or `postgres://…`); empty means an SQLite file in the data dir.
    pub database_url: String,
    /// Size of the database connection pool.
    pub database_max_connections: u32,
    /// Maximum age of a client connection in seconds (0: unlimited), so HTTP/2 connections
    /// rebalance across replicas.
    pub max_connection_age_secs: u64,
    /// `host:port` of the gateway this service calls others through; empty: no outbound calls
    /// (`shlyuz up` fills it with the gateway's bound address).
    pub gateway_address: String,
    /// The name the gateway's certificate carries.
    pub gateway_server_name: String,
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self::on_port(50051)
    }
}

impl TargetConfig {
    /// Defaults for a target listening on loopback at `port`.
    pub fn on_port(port: u16) -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            database_url: String::new(),
            database_max_connections: 8,
            max_connection_age_secs: 0,
            gateway_address: String::new(),
            gateway_server_name: crate::gateway_client::DEFAULT_GATEWAY_SERVER_NAME.to_string(),
        }
    }

    /// Checks values serde cannot check; `section` is the section name for messages.
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if !self.database_url.is_empty()
            && let Err(error) = crate::db::Dialect::of_url(&self.database_url)
        {
            return Err(ConfigError::key(&format!("{section}.database_url"), error));
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError::key(
                &format!("{section}.database_max_connections"),
                "must be at least 1",
            ));
        }
        if !self.gateway_address.is_empty() && !self.gateway_address.contains(':') {
            return Err(ConfigError::key(
                &format!("{section}.gateway_address"),
                format!("{:?} is not host:port", self.gateway_address),
            ));
        }
        Ok(())
    }

    /// The database URL, defaulting to `<data_dir>/<section>.db`.
    pub fn database_url_or_default(&self, data_dir: &Path, section: &str) -> String {
        if self.database_url.is_empty() {
            crate::db::default_sqlite_url(data_dir, section)
        } else {
            self.database_url.clone()
        }
    }
}

/// The `[shutdown]` section.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Milliseconds readiness reports NOT_SERVING before the listener closes.
    pub readiness_grace_ms: u64,
    /// Milliseconds in-flight calls get to finish.
    pub drain_timeout_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            readiness_grace_ms: 0,
            drain_timeout_ms: 20_000,
        }
    }
}
