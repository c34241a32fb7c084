//! What `shlyuz bench registry` and `shlyuz bench housing` need from the registry besides
//! [`crate::start`]: its routes alone (served directly, to compare with the gateway in one run)
//! and a sample of the persons a seeded registry holds. For the benchmarks only.

use shlyuz_kit::db::Database;

/// The registry's routes over the embedded tables of `database` (migrated), with no gateway.
pub fn routes(database: Database) -> tonic::service::Routes {
    crate::routes(database)
}

/// Up to `limit` IINs of persons in the embedded registry of `database`.
pub async fn sample_iins(database: Database, limit: i64) -> anyhow::Result<Vec<String>> {
    crate::embedded::EmbeddedRegistry::new(database)
        .sample_iins(limit)
        .await
        .map_err(Into::into)
}
