//! Shlyuz registry service: adapters for state databases (ГБД ФЛ, АХАЖ, ЕГКН, state property, Қазтізілім, military register, dispensaries, criminal records, mobile citizens, consent, НУЦ mimic).

use shlyuz_kit::db::Migrations;

/// The participant id this target uses when it calls through the gateway.
pub const PARTICIPANT_ID: &str = "registry";

/// Database migrations of the registry target, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &[],
    postgres: &[],
};
