//! Shlyuz housing service: service-housing queue, automatic offers with a 48-hour answer window, proactive review.

use shlyuz_kit::db::Migrations;

/// The participant id this target uses when it calls through the gateway.
pub const PARTICIPANT_ID: &str = "housing";

/// Database migrations of the housing target, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &[],
    postgres: &[],
};
