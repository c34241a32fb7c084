//! Shlyuz notify service: SMS and personal-cabinet notices in Kazakh and Russian, OTP, inbound SMS replies.

use shlyuz_kit::db::Migrations;

/// The participant id this target uses when it calls through the gateway.
pub const PARTICIPANT_ID: &str = "notify";

/// Database migrations of the notify target, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &[],
    postgres: &[],
};
