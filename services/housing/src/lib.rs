//! Shlyuz housing service: service-housing queue, automatic offers with a 48-hour answer window, proactive review.

use std::sync::Arc;

use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::{Database, EmbeddedMigration, Migrations};

pub(crate) mod allocation;
pub mod bench;
pub mod config;
pub(crate) mod gateway_checks;
pub(crate) mod grpc;
pub(crate) mod inbox;
pub(crate) mod model;
pub(crate) mod norm;
pub(crate) mod notify_sink;
pub(crate) mod outbox;
pub(crate) mod reasons;
pub(crate) mod register;
pub(crate) mod review;
pub(crate) mod texts;

/// The participant id this target uses when it calls through the gateway.
pub const PARTICIPANT_ID: &str = "housing";

/// How long a recipient has to answer an offer (seed 003: 48 hours).
pub(crate) const ANSWER_WINDOW: time::Duration = time::Duration::hours(48);

/// How long rounds skip a person whose offer SMS could not be delivered (no phone in the mobile
/// citizens database, the provider refused it), so the dwelling goes to the next in the queue
/// instead of the same undeliverable offer every round.
pub(crate) const UNREACHABLE_PAUSE: time::Duration = time::Duration::hours(24);

/// How long after the deadline an allocation round waits before it records the silence as a
/// refusal: a reply the operator received in time may still be on its way through notify and the
/// async channel. Replies received after the deadline are late whatever the grace.
pub(crate) const REPLY_GRACE: time::Duration = time::Duration::minutes(15);

static SQLITE_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "housing register, stock, offers, outbox, review",
        sql: include_str!("../migrations/sqlite/0001_housing.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "unreadable inbox items",
        sql: include_str!("../migrations/sqlite/0002_inbox_unreadable.sql"),
    },
    EmbeddedMigration {
        version: 3,
        description: "outbox template, parameters and reply window",
        sql: include_str!("../migrations/sqlite/0003_outbox_notify.sql"),
    },
    EmbeddedMigration {
        version: 4,
        description: "outbox messages refused for good",
        sql: include_str!("../migrations/sqlite/0004_outbox_refused.sql"),
    },
    EmbeddedMigration {
        version: 5,
        description: "registrants unreachable after an undelivered offer",
        sql: include_str!("../migrations/sqlite/0005_unreachable.sql"),
    },
];

static POSTGRES_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "housing register, stock, offers, outbox, review",
        sql: include_str!("../migrations/postgres/0001_housing.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "unreadable inbox items",
        sql: include_str!("../migrations/postgres/0002_inbox_unreadable.sql"),
    },
    EmbeddedMigration {
        version: 3,
        description: "outbox template, parameters and reply window",
        sql: include_str!("../migrations/postgres/0003_outbox_notify.sql"),
    },
    EmbeddedMigration {
        version: 4,
        description: "outbox messages refused for good",
        sql: include_str!("../migrations/postgres/0004_outbox_refused.sql"),
    },
    EmbeddedMigration {
        version: 5,
        description: "registrants unreachable after an undelivered offer",
        sql: include_str!("../migrations/postgres/0005_unreachable.sql"),
    },
];

/// Database migrations of the housing target, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: SQLITE_MIGRATIONS,
    postgres: POSTGRES_MIGRATIONS,
};

/// How often housing pulls SMS replies from its async-channel inbox.
const INBOX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
/// How often housing relays its outbox (offer SMS, removal notices) to notify.
const OUTBOX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts housing: its routes, the allocation loop (overdue offers expire and freed dwellings are
/// offered again every `allocation_interval_secs`), and with a gateway the proactive review's
/// registry checks, the outbox relay to notify and the pull of SMS replies from its inbox.
pub async fn start(
    parts: shlyuz_kit::service::ServiceParts<config::HousingConfig>,
) -> anyhow::Result<shlyuz_kit::service::Service> {
    let housing = Housing::new(parts.database, parts.clock, parts.config.norm())
        .with_reply_grace(std::time::Duration::from_secs(
            parts.config.reply_grace_secs,
        ))
        .shared();
    parts.tasks.spawn(
        "housing allocation",
        grpc::run_allocation_loop(
            housing.clone(),
            std::time::Duration::from_secs(parts.config.allocation_interval_secs.max(1)),
            parts.tasks.shutdown(),
        ),
    );
    let checks = match parts.gateway {
        Some(client) => {
            let consumer =
                inbox::InboxConsumer::new(housing.clone(), client.channel(), client.signing_key());
            parts.tasks.spawn(
                "housing inbox",
                consumer.run(INBOX_INTERVAL, parts.tasks.shutdown()),
            );
            parts.tasks.spawn(
                "housing outbox relay",
                shlyuz_kit::outbox::run_relay(
                    housing.clone(),
                    shlyuz_kit::outbox::NotifySender::new(client.clone()),
                    outbox::RELAY_POLICY,
                    OUTBOX_INTERVAL,
                    parts.tasks.shutdown(),
                ),
            );
            Some(Arc::new(gateway_checks::GatewayRegistryChecks::new(
                client.channel(),
                client.signing_key(),
            )))
        }
        None => None,
    };
    Ok(shlyuz_kit::service::Service::new(grpc::routes(
        housing,
        checks,
        review::ReviewSettings::default(),
    )))
}

/// The housing service's state: its database, clock and entitled-area norm. Every decision lives
/// in the database, so a new `Housing` over the same database (a restart) continues where the
/// previous one stopped, open offers and their deadlines included.
#[derive(Clone)]
pub(crate) struct Housing {
    database: Database,
    clock: SharedClock,
    norm: norm::AreaNorm,
    answer_window_ms: i64,
    reply_grace_ms: i64,
}

impl Housing {
    /// A service over `database` (already migrated) with `clock` and the entitled-area `norm`.
    pub fn new(database: Database, clock: SharedClock, norm: norm::AreaNorm) -> Self {
        Self {
            database,
            clock,
            norm,
            answer_window_ms: i64::try_from(ANSWER_WINDOW.whole_milliseconds()).unwrap_or(i64::MAX),
            reply_grace_ms: i64::try_from(REPLY_GRACE.whole_milliseconds()).unwrap_or(i64::MAX),
        }
    }

    /// The same service waiting `grace` after a deadline before expiring the offer (default
    /// [`REPLY_GRACE`]).
    pub fn with_reply_grace(self, grace: std::time::Duration) -> Self {
        Self {
            reply_grace_ms: i64::try_from(grace.as_millis()).unwrap_or(i64::MAX),
            ..self
        }
    }

    /// The same service, shared.
    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }

    /// The database, for the relay and tests.
    pub fn database(&self) -> &Database {
        &self.database
    }

    pub(crate) fn now_millis(&self) -> i64 {
        self.clock.now_millis()
    }
}

#[cfg(test)]
mod tests;
