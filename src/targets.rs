//! The targets one `shlyuz` binary can run, and how one target is started.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use shlyuz_kit::db::{Database, Migrations};
use shlyuz_kit::server::{GrpcServer, ServerSettings, Transport};
use shlyuz_kit::telemetry::MetricsRegistry;

use crate::config::ShlyuzConfig;

/// A role of the binary; `shlyuz up` runs all of them in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The integration gateway (ИШ/ШЭП mimic).
    Gateway,
    /// Adapters for state databases.
    Registry,
    /// SMS, personal-cabinet inbox, OTP.
    Notify,
    /// Jauynger contract-service recruitment.
    Intake,
    /// Service-housing queue and allocation.
    Housing,
}

impl Target {
    /// Every target, the gateway first.
    pub const ALL: [Target; 5] = [
        Target::Gateway,
        Target::Registry,
        Target::Notify,
        Target::Intake,
        Target::Housing,
    ];

    /// The target's name, also its configuration section and participant id.
    pub fn name(self) -> &'static str {
        match self {
            Target::Gateway => "gateway",
            Target::Registry => "registry",
            Target::Notify => "notify",
            Target::Intake => "intake",
            Target::Housing => "housing",
        }
    }

    /// The database migrations the target owns.
    pub fn migrations(self) -> &'static Migrations {
        match self {
            Target::Gateway => &shlyuz_gateway::MIGRATIONS,
            Target::Registry => &shlyuz_registry::MIGRATIONS,
            Target::Notify => &shlyuz_notify::MIGRATIONS,
            Target::Intake => &shlyuz_intake::MIGRATIONS,
            Target::Housing => &shlyuz_housing::MIGRATIONS,
        }
    }

    /// The gRPC services the target serves besides health and reflection.
    pub fn routes(self) -> tonic::service::Routes {
        tonic::service::RoutesBuilder::default().routes()
    }
}

/// Opens the target's database and applies its migrations.
pub async fn open_database(
    config: &ShlyuzConfig,
    target: Target,
    data_dir: &Path,
) -> anyhow::Result<Database> {
    let section = config.target(target);
    let url = section.database_url_or_default(data_dir, target.name());
    let database = Database::connect(&url, section.database_max_connections)
        .await
        .with_context(|| format!("{}: database", target.name()))?;
    database
        .migrate(target.migrations())
        .await
        .with_context(|| format!("{}: migrations", target.name()))?;
    Ok(database)
}

/// A target whose database is open and whose listener is bound, ready to serve.
pub struct PreparedTarget {
    /// Which target.
    pub target: Target,
    /// Its bound server.
    pub server: GrpcServer,
    /// Its database.
    pub database: Database,
}

/// Opens the database, applies migrations and binds the server of `target`.
pub async fn prepare_target(
    config: &ShlyuzConfig,
    target: Target,
    transport: Transport,
    metrics: &MetricsRegistry,
) -> anyhow::Result<PreparedTarget> {
    let database = open_database(config, target, &config.data_dir).await?;
    let section = config.target(target);
    let settings = ServerSettings {
        name: target.name().to_string(),
        listen: section.listen,
        transport,
        readiness_grace: Duration::from_millis(config.shutdown.readiness_grace_ms),
        drain_timeout: Duration::from_millis(config.shutdown.drain_timeout_ms),
        max_connection_age: (section.max_connection_age_secs > 0)
            .then(|| Duration::from_secs(section.max_connection_age_secs)),
    };
    let server = GrpcServer::bind(settings, metrics).await?;
    Ok(PreparedTarget {
        target,
        server,
        database,
    })
}
