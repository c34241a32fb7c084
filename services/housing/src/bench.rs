//! What `shlyuz bench housing` measures apart from the service: an allocation round over a
//! register loaded in bulk, and a proactive review asking the registries through the gateway.
//! For the benchmark only; services start housing with [`crate::start`].

use shlyuz_kit::db::Database;
use shlyuz_kit::gateway_client::GatewayClient;

pub use crate::register::{NewDwelling, NewRegistrant};

/// Housing over a migrated database, with the system clock and the default norm.
pub struct BenchHousing {
    housing: crate::Housing,
}

/// What a review run found.
#[derive(Debug, Clone, Copy)]
pub struct ReviewCounts {
    /// Persons whose checks completed.
    pub checked: i64,
    /// Persons removed.
    pub removed: i64,
    /// Persons left unchecked because a look-up failed.
    pub not_checked: i64,
}

impl BenchHousing {
    /// Housing over `database` (migrated).
    pub fn new(database: Database) -> Self {
        Self {
            housing: crate::Housing::new(
                database,
                shlyuz_kit::clock::system_clock(),
                crate::norm::AreaNorm::default(),
            ),
        }
    }

    /// Loads `registrants` and `dwellings` in bulk, as the initial import does.
    pub async fn import(
        &self,
        registrants: &[NewRegistrant],
        dwellings: &[NewDwelling],
    ) -> anyhow::Result<()> {
        let error = |error: crate::model::HousingError| anyhow::anyhow!("{error}");
        self.housing
            .import_registrants(registrants)
            .await
            .map_err(error)?;
        self.housing
            .import_dwellings(dwellings)
            .await
            .map(|_ids| ())
            .map_err(error)
    }

    /// Runs one allocation round; the offers it made.
    pub async fn allocation_round(&self) -> anyhow::Result<usize> {
        let outcome = self
            .housing
            .run_allocation_round()
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        Ok(outcome.offers_made.len())
    }

    /// Reviews every active person, asking the registries through `gateway` (as `housing`),
    /// `concurrency` chunks of 200 persons at a time.
    pub async fn review(
        &self,
        gateway: &GatewayClient,
        concurrency: usize,
    ) -> anyhow::Result<ReviewCounts> {
        let checks = crate::gateway_checks::GatewayRegistryChecks::new(
            gateway.channel(),
            gateway.signing_key(),
        );
        let report = self
            .housing
            .run_review(
                &checks,
                crate::review::ReviewSettings {
                    persons_per_chunk: 200,
                    concurrency: concurrency.max(1),
                },
            )
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        Ok(ReviewCounts {
            checked: report.persons_checked,
            removed: report.persons_removed,
            not_checked: report.persons_not_checked,
        })
    }
}

impl std::fmt::Debug for BenchHousing {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BenchHousing")
            .finish_non_exhaustive()
    }
}
