//! Shlyuz integration gateway (ИШ/ШЭП mimic): sync proxy, async channel, message log, directory,
//! access log, policy.

pub mod admission;
pub mod async_channel;
pub mod config;
pub mod consent;
pub mod directory;
pub mod echo;
pub mod envelope;
pub mod grpc_frames;
pub mod identity;
pub mod message_log;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod replay_store;
pub mod upstream;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

pub use config::{GatewayConfig, GatewaySettings};
use consent::ConsentChecker;
use directory::{Directory, DirectoryHandle, TargetResolver};
use message_log::MessageLog;
use proxy::{SyncChannel, SyncChannelParts};
use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::pki::SigningKey;
use shlyuz_kit::server::TlsFiles;
use shlyuz_kit::service::{Service, ServiceParts, Tasks};
use shlyuz_kit::telemetry::MetricsRegistry;

use shlyuz_kit::db::{EmbeddedMigration, Migrations};

/// The participant id this target uses when it calls through the gateway.
pub const PARTICIPANT_ID: &str = "gateway";

static SQLITE_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "message log, checkpoints, subject access log",
        sql: include_str!("../migrations/sqlite/0001_message_log.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "async channel queue and inboxes",
        sql: include_str!("../migrations/sqlite/0002_async_channel.sql"),
    },
    EmbeddedMigration {
        version: 3,
        description: "replay guard shared by replicas",
        sql: include_str!("../migrations/sqlite/0003_replay_guard.sql"),
    },
    EmbeddedMigration {
        version: 4,
        description: "message log: one subject-access row per person named",
        sql: include_str!("../migrations/sqlite/0004_log_hardening.sql"),
    },
    EmbeddedMigration {
        version: 5,
        description: "async delivery reasons and retention",
        sql: include_str!("../migrations/sqlite/0005_async_delivery.sql"),
    },
    EmbeddedMigration {
        version: 6,
        description: "async sender quota index, lower-case message ids",
        sql: include_str!("../migrations/sqlite/0006_async_sender_bounds.sql"),
    },
    EmbeddedMigration {
        version: 7,
        description: "message log: chain records (links, heartbeats, closure)",
        sql: include_str!("../migrations/sqlite/0007_chain_records.sql"),
    },
];

static POSTGRES_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "message log, checkpoints, subject access log",
        sql: include_str!("../migrations/postgres/0001_message_log.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "async channel queue and inboxes",
        sql: include_str!("../migrations/postgres/0002_async_channel.sql"),
    },
    EmbeddedMigration {
        version: 3,
        description: "replay guard shared by replicas",
        sql: include_str!("../migrations/postgres/0003_replay_guard.sql"),
    },
    EmbeddedMigration {
        version: 4,
        description: "message log: one subject-access row per person named",
        sql: include_str!("../migrations/postgres/0004_log_hardening.sql"),
    },
    EmbeddedMigration {
        version: 5,
        description: "async delivery reasons and retention",
        sql: include_str!("../migrations/postgres/0005_async_delivery.sql"),
    },
    EmbeddedMigration {
        version: 6,
        description: "async sender quota index, lower-case message ids",
        sql: include_str!("../migrations/postgres/0006_async_sender_bounds.sql"),
    },
    EmbeddedMigration {
        version: 7,
        description: "message log: chain records (links, heartbeats, closure)",
        sql: include_str!("../migrations/postgres/0007_chain_records.sql"),
    },
];

/// Database migrations of the gateway, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: SQLITE_MIGRATIONS,
    postgres: POSTGRES_MIGRATIONS,
};

/// Starts the gateway as a Shlyuz service: the directory at `gateway.directory_file` (the
/// default directory written to the data directory when none is configured), `target:<name>`
/// upstreams resolved through `gateway.targets`, the registry's ConsentService as the consent
/// check where a `registry` target is named (else consents held in memory), and the identity's
/// certificate towards upstreams. At stop, the async delivery loop ends and the message log is
/// flushed with its final checkpoint.
pub async fn start(parts: ServiceParts<GatewayConfig>) -> anyhow::Result<Service> {
    use anyhow::Context;
    let config = &parts.config;
    let directory_file = config.directory_file_or_default(&parts.data_dir);
    if config.directory_file.as_os_str().is_empty() {
        directory::write_default_if_missing(&parts.data_dir)
            .context("gateway: default directory")?;
    }
    let targets = TargetResolver::new(config.targets.clone().into_iter().collect());
    let consent = consent::checker_for(&targets, parts.identity.tls.clone())?;
    let gateway = Gateway::start(GatewayParts {
        database: parts.database,
        directory_file,
        targets,
        signing_key: parts.identity.signing_key.clone(),
        consent,
        upstream_tls: parts.identity.tls.clone(),
        metrics: parts.metrics,
        clock: parts.clock,
        settings: GatewaySettings {
            retired_signing_keys: config.retired_signing_keys()?,
            ..config.settings()
        },
        tasks: parts.tasks,
    })
    .await?;
    let gateway = Arc::new(gateway);
    let routes = gateway.routes();
    Ok(Service::new(routes).on_stop(async move { gateway.shutdown().await }))
}

/// Everything a gateway is built from.
pub struct GatewayParts {
    /// The gateway's database (message log, checkpoints, subject access log); migrated.
    pub database: Database,
    /// The directory file; reloaded on SIGHUP and when it changes.
    pub directory_file: PathBuf,
    /// How `target:<name>` upstreams resolve.
    pub targets: TargetResolver,
    /// The gateway's own message-signing key, for message-log checkpoints.
    pub signing_key: Arc<SigningKey>,
    /// The consent store.
    pub consent: Arc<dyn ConsentChecker>,
    /// The gateway's client identity towards upstreams; `None` for plaintext upstreams.
    pub upstream_tls: Option<TlsFiles>,
    /// Where metrics are registered.
    pub metrics: MetricsRegistry,
    /// Time source.
    pub clock: SharedClock,
    /// Policy mode, reload interval, message-log options.
    pub settings: GatewaySettings,
    /// Where the gateway's background work runs, and the shutdown it stops at.
    pub tasks: Tasks,
}

/// A running gateway: the sync channel, the async channel and the message log.
pub struct Gateway {
    channel: Arc<SyncChannel>,
    directory: DirectoryHandle,
    message_log: MessageLog,
    async_channel: parking_lot::Mutex<Option<async_channel::AsyncChannel>>,
}

impl Gateway {
    /// Loads the directory, starts the message log and the directory reloader.
    pub async fn start(parts: GatewayParts) -> anyhow::Result<Gateway> {
        let directory =
            Directory::load(&parts.directory_file, &parts.targets).map_err(|error| {
                anyhow::anyhow!(
                    "gateway directory {}: {error}",
                    parts.directory_file.display()
                )
            })?;
        let directory_handle = DirectoryHandle::new(directory);
        let reloader = directory::spawn_reloader(
            directory_handle.clone(),
            parts.directory_file.clone(),
            parts.targets.clone(),
            parts.tasks.shutdown(),
            &parts.metrics,
            parts.settings.directory_poll_interval,
        );
        parts.tasks.spawn("directory reloader", async move {
            let _ = reloader.await;
        });
        // Checkpoints signed before a key rotation stay verifiable with the retired keys.
        let mut trusted_keys = vec![parts.signing_key.verifying_key()];
        trusted_keys.extend(parts.settings.retired_signing_keys.iter().cloned());
        let message_log = MessageLog::start(
            parts.database.clone(),
            parts.signing_key.clone(),
            parts.settings.message_log.clone(),
            &parts.metrics,
            parts.clock.clone(),
        )
        .await?;
        let upstreams = upstream::Upstreams::new(parts.upstream_tls);
        let async_channel = async_channel::AsyncChannel::start(
            parts.database.clone(),
            directory_handle.clone(),
            upstreams.clone(),
            message_log.clone(),
            parts.consent.clone(),
            parts.clock.clone(),
            parts.settings.async_channel.clone(),
            &parts.metrics,
            parts.tasks.shutdown(),
        );
        let local_services =
            tonic::service::Routes::new(directory::directory_server(directory_handle.clone()))
                .add_service(async_channel.server())
                .add_service(message_log::message_log_server(
                    parts.database.clone(),
                    trusted_keys,
                    &parts.settings.message_log,
                    parts.clock.clone(),
                ))
                .add_service(message_log::access_log_server(parts.database.clone()))
                .prepare()
                .into_axum_router();
        // Replicas on one database refuse each other's replays when configured so.
        let shared_replay = (parts.settings.replay_scope == config::ReplayScope::Shared)
            .then(|| replay_store::SharedReplayGuard::new(parts.database.clone()));
        if let Some(guard) = &shared_replay {
            parts.tasks.spawn(
                "replay guard purge",
                guard
                    .clone()
                    .run_purge(parts.clock.clone(), parts.tasks.shutdown()),
            );
        }
        let channel = SyncChannel::new(SyncChannelParts {
            directory: directory_handle.clone(),
            message_log: message_log.clone(),
            consent: parts.consent,
            upstreams,
            local_services,
            metrics: metrics::GatewayMetrics::registered(&parts.metrics),
            clock: parts.clock,
            mode: parts.settings.mode,
            store_bodies: parts.settings.message_log.store_bodies,
            shared_replay: shared_replay.clone(),
            options: parts.settings.sync.clone(),
        });
        Ok(Gateway {
            channel,
            directory: directory_handle,
            message_log,
            async_channel: parking_lot::Mutex::new(Some(async_channel)),
        })
    }

    /// The routes to serve: every call goes through the sync channel.
    pub fn routes(&self) -> tonic::service::Routes {
        let channel = self.channel.clone();
        let handler = tower::service_fn(move |request: http::Request<axum::body::Body>| {
            let channel = channel.clone();
            async move { Ok::<_, Infallible>(channel.handle(request).await) }
        });
        tonic::service::Routes::from(axum::Router::new().fallback_service(handler))
    }

    /// Reloads the directory file now, as SIGHUP does; on failure the current directory stays.
    pub fn reload_directory(&self) -> Result<(), directory::DirectoryError> {
        self.directory.reload_from_file()
    }

    /// Waits for the async delivery loop to stop (it stops on the shutdown signal), then
    /// flushes the message log and writes its final checkpoint.
    pub async fn shutdown(&self) {
        let async_channel = self.async_channel.lock().take();
        if let Some(async_channel) = async_channel {
            async_channel.stopped().await;
        }
        self.message_log.shutdown().await;
    }
}
