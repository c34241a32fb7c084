//! The targets one `shlyuz` binary can run: their names and the migrations each owns.

use shlyuz_kit::db::Migrations;

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

    /// Whether the target's clock follows `up --test-clock` (housing's offer deadlines).
    pub fn follows_test_clock(self) -> bool {
        matches!(self, Target::Housing)
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
}
