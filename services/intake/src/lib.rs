//! Shlyuz intake service: Jauynger contract-service recruitment, from application to order to report.

use shlyuz_kit::db::{EmbeddedMigration, Migrations};

pub mod dossier;
pub mod gateway;
pub mod grpc;
pub mod outbox;
pub mod roles;
pub mod store;
pub mod workflow;

/// The participant id this target uses when it calls through the gateway.
pub const PARTICIPANT_ID: &str = "intake";

static SQLITE_MIGRATIONS: &[EmbeddedMigration] = &[EmbeddedMigration {
    version: 1,
    description: "vacancies, applications, events, notification outbox",
    sql: include_str!("../migrations/sqlite/0001_intake.sql"),
}];

static POSTGRES_MIGRATIONS: &[EmbeddedMigration] = &[EmbeddedMigration {
    version: 1,
    description: "vacancies, applications, events, notification outbox",
    sql: include_str!("../migrations/postgres/0001_intake.sql"),
}];

/// Database migrations of the intake target, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: SQLITE_MIGRATIONS,
    postgres: POSTGRES_MIGRATIONS,
};
