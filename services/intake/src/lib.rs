//! Shlyuz intake service: Jauynger contract-service recruitment, from application to order to report.

use shlyuz_kit::db::Migrations;

/// The participant id this target uses when it calls through the gateway.
pub const PARTICIPANT_ID: &str = "intake";

/// Database migrations of the intake target, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &[],
    postgres: &[],
};
