//! How one target of the `shlyuz` binary is prepared and started: the same for `up`, `serve` and
//! the tests. Every target starts through the kit's service contract
//! ([`shlyuz_kit::service`]); what a target does inside is its crate's business.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shlyuz_kit::clock::AdjustableClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::gateway_client::GatewayClient;
use shlyuz_kit::identity::Callers;
use shlyuz_kit::pki::SigningKey;
use shlyuz_kit::server::{GrpcServer, ServerSettings, TlsFiles, Transport};
use shlyuz_kit::service::{Identity, Service, ServiceParts, Tasks};
use shlyuz_kit::shutdown::ShutdownSignal;
use shlyuz_kit::telemetry::MetricsRegistry;

use crate::config::ShlyuzConfig;
use crate::target::Target;

/// Where a target's identity is: its certificate files and message-signing key file.
#[derive(Debug, Clone)]
pub struct TargetIdentity {
    /// Certificate files; `None` for plaintext.
    pub tls: Option<TlsFiles>,
    /// PKCS#8 PEM Ed25519 key.
    pub signing_key: PathBuf,
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
    /// Its identity, loaded.
    pub identity: Identity,
}

/// Opens the database, applies migrations and binds the server of `target` on its configured
/// `listen` address, or serves on `listener` when one is given (already bound by the caller).
pub async fn prepare_target(
    config: &ShlyuzConfig,
    target: Target,
    identity: TargetIdentity,
    metrics: &MetricsRegistry,
    listener: Option<tokio::net::TcpListener>,
) -> anyhow::Result<PreparedTarget> {
    let signing_key = SigningKey::from_pem_file(&identity.signing_key)
        .with_context(|| format!("{}: message-signing key (tls.signing_key)", target.name()))?;
    let identity = Identity {
        participant: target.name().to_string(),
        tls: identity.tls,
        signing_key: Arc::new(signing_key),
    };
    let database = open_database(config, target, &config.data_dir).await?;
    let section = config.target(target);
    let transport = match &identity.tls {
        Some(files) => Transport::MutualTls(files.clone()),
        None => Transport::Plaintext,
    };
    let settings = ServerSettings {
        name: target.name().to_string(),
        listen: section.listen,
        transport,
        readiness_grace: Duration::from_millis(config.shutdown.readiness_grace_ms),
        drain_timeout: Duration::from_millis(config.shutdown.drain_timeout_ms),
        max_connection_age: (section.max_connection_age_secs > 0)
            .then(|| Duration::from_secs(section.max_connection_age_secs)),
        // Services are reached through the gateway only; the gateway applies the directory.
        callers: match target {
            Target::Gateway => Callers::Any,
            _ => Callers::only(config.tls.service_callers.iter().cloned()),
        },
        listener: match target {
            Target::Gateway => config.gateway.listener_options(),
            _ => shlyuz_kit::listener::ListenerOptions::default(),
        },
    };
    let server = match listener {
        Some(listener) => GrpcServer::with_listener(settings, listener, metrics)?,
        None => GrpcServer::bind(settings, metrics).await?,
    };
    Ok(PreparedTarget {
        target,
        server,
        database,
        identity,
    })
}

/// Starts the service of a prepared target through its crate's `start`, its tasks spawned on
/// `tasks`. With `test_clock` (`up --test-clock`), the targets that follow the test clock get it
/// and serve `shlyuz.testing.v1.TestClockService` to move it.
pub async fn start_service(
    config: &ShlyuzConfig,
    prepared: &PreparedTarget,
    metrics: &MetricsRegistry,
    tasks: Tasks,
    test_clock: Option<&AdjustableClock>,
) -> anyhow::Result<Service> {
    let target = prepared.target;
    let test_clock = test_clock.filter(|_| target.follows_test_clock());
    let clock = match test_clock {
        Some(clock) => clock.shared(),
        None => shlyuz_kit::clock::system_clock(),
    };
    let gateway = GatewayClient::for_section(&prepared.identity, &config.target(target))?;
    let parts = Parts {
        prepared,
        clock,
        gateway,
        metrics: metrics.clone(),
        tasks,
        data_dir: config.data_dir.clone(),
    };
    let mut service = match target {
        Target::Gateway => shlyuz_gateway::start(parts.with(config.gateway.clone())).await,
        Target::Registry => shlyuz_registry::start(parts.with(config.registry.clone())).await,
        Target::Notify => shlyuz_notify::start(parts.with(config.notify.clone())).await,
        Target::Intake => shlyuz_intake::start(parts.with(config.intake.clone())).await,
        Target::Housing => shlyuz_housing::start(parts.with(config.housing.clone())).await,
    }
    .with_context(|| format!("{}: start", target.name()))?;
    if let Some(clock) = test_clock {
        tracing::warn!(
            target_name = target.name(),
            "serving the TEST CLOCK (shlyuz up --test-clock)"
        );
        service.routes = service
            .routes
            .add_service(shlyuz_kit::test_clock::TestClock::new(clock.clone()).into_server());
    }
    Ok(service)
}

/// The parts every target gets, before its configuration section is added.
struct Parts<'a> {
    prepared: &'a PreparedTarget,
    clock: shlyuz_kit::clock::SharedClock,
    gateway: Option<GatewayClient>,
    metrics: MetricsRegistry,
    tasks: Tasks,
    data_dir: PathBuf,
}

impl Parts<'_> {
    fn with<C>(self, config: C) -> ServiceParts<C> {
        ServiceParts {
            identity: self.prepared.identity.clone(),
            config,
            database: self.prepared.database.clone(),
            clock: self.clock,
            gateway: self.gateway,
            metrics: self.metrics,
            tasks: self.tasks,
            data_dir: self.data_dir,
        }
    }
}

/// Serves a prepared target until shutdown; then runs its stop hooks (the gateway flushes its
/// message log), waits for its background tasks and closes its database. The tasks saw the same
/// shutdown when the server began draining, so they have normally ended by now; one that has not
/// is given at most [`TASK_DRAIN`] more, so a stuck task cannot outlast the pod's grace period.
pub async fn serve_target(
    prepared: PreparedTarget,
    service: Service,
    tasks: Tasks,
    shutdown: ShutdownSignal,
) -> anyhow::Result<()> {
    let (routes, stop) = service.into_parts();
    let result = prepared.server.serve(routes, shutdown).await;
    for hook in stop {
        hook.await;
    }
    if !tasks.drain(TASK_DRAIN).await {
        tracing::warn!(
            target_name = prepared.target.name(),
            "closing the database with background tasks still running"
        );
    }
    prepared.database.close().await;
    result
}

/// How long a target waits, after its server has drained, for background tasks still running.
pub const TASK_DRAIN: Duration = Duration::from_secs(5);
