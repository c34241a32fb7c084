//! Shlyuz integration gateway (ИШ/ШЭП mimic): sync proxy, async channel, message log, directory, access log, policy.

use shlyuz_kit::db::Migrations;

/// The participant id this target uses when it calls through the gateway.
pub const PARTICIPANT_ID: &str = "gateway";

/// Database migrations of the gateway target, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &[],
    postgres: &[],
};
