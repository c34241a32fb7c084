//! The `[registry]` configuration section: the target's listener and database, and where the
//! external registries are described.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shlyuz_kit::config::TargetConfig;
use shlyuz_kit::db::Database;

use crate::embedded::EmbeddedRegistry;
use crate::source::RegistrySource;
use crate::upstream::{UpstreamRegistry, UpstreamSettings};

/// Everything configurable about the registry target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// Database URL; empty means `<data_dir>/registry.db`.
    pub database_url: String,
    /// Size of the database connection pool.
    pub database_max_connections: u32,
    /// Maximum age of a client connection in seconds (0: unlimited).
    pub max_connection_age_secs: u64,
    /// `host:port` of the gateway this service calls others through (`shlyuz up` fills it).
    pub gateway_address: String,
    /// The name the gateway's certificate carries.
    pub gateway_server_name: String,
    /// TOML file of external registries ([`UpstreamSettings`]); empty: every record comes from
    /// the embedded tables. Record kinds without an endpoint there still do.
    pub upstream_file: PathBuf,
    /// What to load into an empty embedded registry at start (`shlyuz up` loads the synthetic
    /// population and the rules fixture); absent: nothing (`serve` against real data).
    pub seed_if_empty: Option<SeedConfig>,
}

/// Test data for an empty registry: a synthetic population and the hand-picked people of the
/// rules fixture, whom the demo, the examples and the README use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedConfig {
    /// Synthetic persons to generate.
    pub population: usize,
    /// Seed of the generator.
    pub seed: u64,
    /// Whether the rules fixture's people are added.
    pub rules_fixture: bool,
}

impl SeedConfig {
    /// What `shlyuz up` loads.
    pub fn up() -> Self {
        Self {
            population: crate::UP_POPULATION,
            seed: crate::UP_SEED,
            rules_fixture: true,
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        let target = TargetConfig::on_port(50052);
        Self {
            listen: target.listen,
            database_url: target.database_url,
            database_max_connections: target.database_max_connections,
            max_connection_age_secs: target.max_connection_age_secs,
            gateway_address: target.gateway_address,
            gateway_server_name: target.gateway_server_name,
            upstream_file: PathBuf::new(),
            seed_if_empty: None,
        }
    }
}

impl RegistryConfig {
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

    /// The registry's routes: embedded tables, or external registries where configured; consent
    /// codes through `gateway` (notify's `OtpService`).
    pub fn routes(
        &self,
        database: Database,
        gateway: Option<shlyuz_kit::gateway_client::GatewayClient>,
    ) -> anyhow::Result<tonic::service::Routes> {
        let source: Arc<dyn RegistrySource> = if self.upstream_file.as_os_str().is_empty() {
            Arc::new(EmbeddedRegistry::new(database.clone()))
        } else {
            upstream_source(&self.upstream_file, database.clone())
                .context("config key `registry.upstream_file`")?
        };
        Ok(crate::routes_with_source(database, source, gateway))
    }

    /// How long one call to the external registries may take with its retries
    /// ([`UpstreamSettings::attempt_budget`]); `None` without `upstream_file` (the embedded
    /// tables answer at once). Gateway routes to the registry should allow at least this much.
    pub fn upstream_budget(&self) -> anyhow::Result<Option<Duration>> {
        if self.upstream_file.as_os_str().is_empty() {
            return Ok(None);
        }
        let settings = UpstreamSettings::from_toml_file(&self.upstream_file)
            .context("config key `registry.upstream_file`")?;
        Ok(Some(settings.attempt_budget()))
    }
}

fn upstream_source(path: &Path, database: Database) -> anyhow::Result<Arc<dyn RegistrySource>> {
    let embedded: Arc<dyn RegistrySource> = Arc::new(EmbeddedRegistry::new(database));
    Ok(Arc::new(open_upstream(path, Some(embedded))?))
}

/// Reads and checks an upstream file and builds its client: what the registry does at start,
/// and all `shlyuz check-upstream` does.
fn open_upstream(
    path: &Path,
    fallback: Option<Arc<dyn RegistrySource>>,
) -> anyhow::Result<UpstreamRegistry> {
    let settings = UpstreamSettings::from_toml_file(path)?;
    UpstreamRegistry::new(settings, fallback)
}

/// `shlyuz check-upstream FILE`: checks an upstream file exactly as the registry does when
/// `registry.upstream_file` names it (unknown keys, endpoint kinds, paths, pointers, the API key
/// and certificate files), without calling the external registry; returns a summary to print,
/// or the error naming the key.
pub fn check_upstream_file(path: &Path) -> anyhow::Result<String> {
    let upstream = open_upstream(path, None)?;
    let budget = upstream.settings().attempt_budget();
    Ok(format!(
        "{}attempt budget: {} ms (a gateway route to the registry needs timeout_ms at least this)\n",
        upstream.settings().summary(),
        budget.as_millis()
    ))
}
