//! Shlyuz registry service: adapters for state databases (ГБД ФЛ, АХАЖ, ЕГКН, state property, Қазтізілім, military register, dispensaries, criminal records, mobile citizens, consent, НУЦ mimic).

use shlyuz_kit::db::{EmbeddedMigration, Migrations};

pub mod bench;
pub(crate) mod certificate_authority;
pub mod config;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub(crate) mod consent;
pub(crate) mod consent_otp;
pub(crate) mod embedded;
#[cfg(any(test, feature = "testing"))]
pub mod example;
pub(crate) mod fixtures;
pub(crate) mod grpc;
pub(crate) mod population;
pub(crate) mod reasons;
pub(crate) mod records;
pub(crate) mod reference;
pub(crate) mod source;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub(crate) mod upstream;

/// The participant id this target uses when it calls through the gateway.
pub const PARTICIPANT_ID: &str = "registry";

/// Persons `shlyuz up` generates on first start, when the registry database is empty.
pub const UP_POPULATION: usize = 10_000;

/// Seed of the population `shlyuz up` generates.
pub const UP_SEED: u64 = 1;

static SQLITE_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "registry tables",
        sql: include_str!("../migrations/sqlite/0001_registries.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "consents and sms outbox",
        sql: include_str!("../migrations/sqlite/0002_consents.sql"),
    },
    EmbeddedMigration {
        version: 3,
        description: "certificate authority",
        sql: include_str!("../migrations/sqlite/0003_certificate_authority.sql"),
    },
    EmbeddedMigration {
        version: 4,
        description: "consent sms relayed to notify",
        sql: include_str!("../migrations/sqlite/0004_consent_sms_relay.sql"),
    },
    EmbeddedMigration {
        version: 5,
        description: "consent codes kept by notify",
        sql: include_str!("../migrations/sqlite/0005_consent_otp_in_notify.sql"),
    },
];

static POSTGRES_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "registry tables",
        sql: include_str!("../migrations/postgres/0001_registries.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "consents and sms outbox",
        sql: include_str!("../migrations/postgres/0002_consents.sql"),
    },
    EmbeddedMigration {
        version: 3,
        description: "certificate authority",
        sql: include_str!("../migrations/postgres/0003_certificate_authority.sql"),
    },
    EmbeddedMigration {
        version: 4,
        description: "consent sms relayed to notify",
        sql: include_str!("../migrations/postgres/0004_consent_sms_relay.sql"),
    },
    EmbeddedMigration {
        version: 5,
        description: "consent codes kept by notify",
        sql: include_str!("../migrations/postgres/0005_consent_otp_in_notify.sql"),
    },
];

/// Database migrations of the registry target, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: SQLITE_MIGRATIONS,
    postgres: POSTGRES_MIGRATIONS,
};

/// Starts the registry: its routes over the embedded tables or the upstreams that
/// `registry.upstream_file` describes; consent codes are issued and checked by notify's
/// `OtpService` through the gateway (without one, consent requests are `UNAVAILABLE`
/// `OTP_UNAVAILABLE`).
pub async fn start(
    parts: shlyuz_kit::service::ServiceParts<config::RegistryConfig>,
) -> anyhow::Result<shlyuz_kit::service::Service> {
    if let Some(seed) = parts.config.seed_if_empty {
        let fixture = match seed.rules_fixture {
            true => Some(fixtures::parse(fixtures::RULES_FIXTURE)?),
            false => None,
        };
        let seeded = seed_if_empty(
            parts.database.clone(),
            seed.population,
            seed.seed,
            fixture.as_ref(),
        )
        .await
        .map_err(|error| error.context("registry: synthetic population"))?;
        if let Some(report) = seeded {
            tracing::info!(
                persons = report.persons,
                records = report.records,
                elapsed_ms = report.elapsed.as_millis() as u64,
                "registry seeded with the synthetic population"
            );
        }
    }
    let routes = parts.config.routes(parts.database.clone(), parts.gateway)?;
    Ok(shlyuz_kit::service::Service::new(routes))
}

/// The registry target's gRPC routes over the embedded backend in `database`, without a gateway
/// (consent requests are then `UNAVAILABLE` `OTP_UNAVAILABLE`).
pub(crate) fn routes(database: shlyuz_kit::db::Database) -> tonic::service::Routes {
    let source: std::sync::Arc<dyn source::RegistrySource> =
        std::sync::Arc::new(embedded::EmbeddedRegistry::new(database.clone()));
    routes_with_source(database, source, None)
}

/// The routes with registry data from `source` (e.g. an [`upstream::UpstreamRegistry`] falling
/// back to the embedded tables); consents and certificates always live in `database`, consent
/// codes at notify, reached through `gateway`.
pub(crate) fn routes_with_source(
    database: shlyuz_kit::db::Database,
    source: std::sync::Arc<dyn source::RegistrySource>,
    gateway: Option<shlyuz_kit::gateway_client::GatewayClient>,
) -> tonic::service::Routes {
    let clock = shlyuz_kit::clock::system_clock();
    let certificate_authority = certificate_authority::CertificateAuthorityServiceImpl::new(
        database.clone(),
        source.clone(),
        clock.clone(),
    );
    let consent = consent::ConsentServiceImpl::new(
        database,
        source.clone(),
        clock,
        consent_otp::ConsentOtp::new(gateway),
    );
    grpc::RegistryServices::new(source)
        .routes()
        .add_service(consent.into_server())
        .add_service(certificate_authority.into_server())
}

pub use population::SeedReport;

/// `shlyuz seed`: replaces the embedded registry's data in `database` (migrated) with `population`
/// synthetic persons generated from `seed`, then adds the records of the fixture file `fixture`.
pub async fn seed(
    database: shlyuz_kit::db::Database,
    population: usize,
    seed: u64,
    fixture: Option<&std::path::Path>,
) -> anyhow::Result<SeedReport> {
    // The fixture is read first: a bad file must not cost the data already there.
    let fixture = match fixture {
        Some(path) => Some(fixtures::read(path)?),
        None => None,
    };
    let registry = embedded::EmbeddedRegistry::new(database);
    let report = population::seed_population(&registry, population, seed).await?;
    if let Some(records) = &fixture {
        fixtures::load(&registry, records).await?;
    }
    Ok(report)
}

/// Generates the `shlyuz up` population, then adds `fixture`'s records, when the registry holds
/// no person yet; returns the report when it seeded, `None` when data was already there.
pub(crate) async fn seed_if_empty(
    database: shlyuz_kit::db::Database,
    population: usize,
    seed: u64,
    fixture: Option<&records::Population>,
) -> anyhow::Result<Option<population::SeedReport>> {
    let registry = embedded::EmbeddedRegistry::new(database);
    if registry.person_count().await? > 0 {
        return Ok(None);
    }
    let report = population::seed_population(&registry, population, seed).await?;
    if let Some(fixture) = fixture {
        fixtures::load(&registry, fixture).await?;
    }
    Ok(Some(report))
}

#[cfg(test)]
mod tests;
