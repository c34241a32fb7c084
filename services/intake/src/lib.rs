//! Shlyuz intake service: Jauynger contract-service recruitment, from application to order to report.

use shlyuz_kit::db::{EmbeddedMigration, Migrations};

pub mod config;
pub(crate) mod dossier;
pub(crate) mod gateway;
pub(crate) mod grpc;
pub(crate) mod outbox;
pub(crate) mod reasons;
pub(crate) mod roles;
pub(crate) mod store;
pub(crate) mod workflow;

/// The participant id this target uses when it calls through the gateway.
pub const PARTICIPANT_ID: &str = "intake";

static SQLITE_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "vacancies, applications, events, notification outbox",
        sql: include_str!("../migrations/sqlite/0001_intake.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "application attachments",
        sql: include_str!("../migrations/sqlite/0002_attachments.sql"),
    },
];

static POSTGRES_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "vacancies, applications, events, notification outbox",
        sql: include_str!("../migrations/postgres/0001_intake.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "application attachments",
        sql: include_str!("../migrations/postgres/0002_attachments.sql"),
    },
];

/// Database migrations of the intake target, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: SQLITE_MIGRATIONS,
    postgres: POSTGRES_MIGRATIONS,
};

/// How often intake hands due SMS rows to notify.
const SMS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts intake: its routes, calling the registry, the CA and notify's OTP through the gateway,
/// and the relay of its SMS outbox to notify. Without a gateway the services run, but every
/// dossier stays incomplete, no signature can be checked and SMS rows wait.
pub async fn start(
    parts: shlyuz_kit::service::ServiceParts<config::IntakeConfig>,
) -> anyhow::Result<shlyuz_kit::service::Service> {
    let routes = routes(
        parts.database.clone(),
        &parts.config,
        parts.gateway.as_ref().map(|client| client.channel()),
        parts.identity.signing_key.clone(),
    );
    if let Some(client) = parts.gateway {
        let store = store::Store::new(
            parts.database,
            parts.clock,
            shlyuz_kit::calendar::WorkingCalendar::kazakhstan(),
        );
        parts.tasks.spawn(
            "intake sms relay",
            shlyuz_kit::outbox::run_relay(
                store,
                outbox::NotifySender::new(client),
                outbox::RELAY_POLICY,
                SMS_INTERVAL,
                parts.tasks.shutdown(),
            ),
        );
    }
    Ok(shlyuz_kit::service::Service::new(routes))
}

/// The intake routes over `database`, calling the registry through `gateway` (a channel to the
/// gateway presenting intake's client certificate) signed with `signing_key`; with no gateway
/// the services run but every dossier stays incomplete and no signature can be checked.
pub(crate) fn routes(
    database: shlyuz_kit::db::Database,
    config: &config::IntakeConfig,
    gateway: Option<tonic::transport::Channel>,
    signing_key: std::sync::Arc<shlyuz_kit::pki::SigningKey>,
) -> tonic::service::Routes {
    use std::sync::Arc;
    let (lookups, signatures): (Arc<dyn dossier::RegistryLookups>, grpc::SignatureCheck) =
        match gateway {
            Some(channel) => (
                Arc::new(gateway::GatewayRegistryLookups::new(
                    channel.clone(),
                    signing_key.clone(),
                )),
                grpc::SignatureCheck::new(Arc::new(gateway::GatewayCertificateAuthority::new(
                    channel.clone(),
                    signing_key.clone(),
                )))
                .with_otp(Arc::new(gateway::GatewayOtpVerifier::new(
                    channel,
                    signing_key,
                ))),
            ),
            None => {
                tracing::warn!(
                    "intake has no gateway address: dossiers, signatures and OTP unavailable"
                );
                (
                    Arc::new(gateway::NoGateway),
                    grpc::SignatureCheck::new(Arc::new(gateway::NoGateway)),
                )
            }
        };
    let store = store::Store::new(
        database,
        shlyuz_kit::clock::system_clock(),
        shlyuz_kit::calendar::WorkingCalendar::kazakhstan(),
    );
    grpc::IntakeServices::new(
        store,
        roles::RolePolicy::new(config.role_asserting_participants.iter().cloned()),
        lookups,
        signatures,
        config.executors.clone(),
    )
    .routes()
}

#[cfg(test)]
mod tests;
