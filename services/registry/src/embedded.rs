//! The embedded backend: the registries' own tables in the service's database, filled by the
//! population generator or fixture files.

use futures::FutureExt as _;
use shlyuz_kit::db::Database;
use shlyuz_kit::iin::Iin;
use sqlx::Row;

use crate::records::{DATA_TABLES, KindSpec, Population, TableRow};
use crate::source::{RegistrySource, Rows, SourceError};

/// Rows one bulk INSERT statement carries.
const ROWS_PER_STATEMENT: usize = 500;

/// The registries' tables.
#[derive(Clone)]
pub struct EmbeddedRegistry {
    database: Database,
}

impl EmbeddedRegistry {
    /// The backend over an open, migrated database.
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Number of persons stored.
    pub async fn person_count(&self) -> Result<i64, sqlx::Error> {
        let row = sqlx::query("SELECT COUNT(*) AS persons FROM persons")
            .fetch_one(self.database.pool())
            .await?;
        row.try_get("persons")
    }

    /// Up to `limit` stored IINs, in key order (benchmarks pick subjects from them).
    pub async fn sample_iins(&self, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query("SELECT iin FROM persons ORDER BY iin LIMIT $1")
            .bind(limit)
            .fetch_all(self.database.pool())
            .await?;
        rows.iter().map(|row| row.try_get("iin")).collect()
    }

    /// Inserts a population in one transaction: all of it or nothing.
    pub async fn insert_population(&self, population: &Population) -> Result<(), sqlx::Error> {
        let mut transaction = self.database.pool().begin().await?;
        insert_population_in(&mut transaction, population).await?;
        transaction.commit().await
    }

    async fn select(&self, kind: KindSpec, iins: &[Iin]) -> Result<Rows, SourceError> {
        let placeholders = placeholder_list(iins.len());
        let condition = kind
            .owners
            .iter()
            .map(|column| format!("{column} IN ({placeholders})"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY {}",
            kind.columns.join(", "),
            kind.table,
            kind.order_column
        );
        let mut query = sqlx::query(&sql);
        for iin in iins {
            query = query.bind(iin.as_str());
        }
        Ok(Rows::Table(query.fetch_all(self.database.pool()).await?))
    }
}

/// Deletes every registry record on `connection` (inside the caller's transaction).
pub async fn clear_in(connection: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    for table in DATA_TABLES {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Inserts every record of `population` on `connection` (inside the caller's transaction).
pub async fn insert_population_in(
    connection: &mut sqlx::AnyConnection,
    population: &Population,
) -> Result<(), sqlx::Error> {
    population.insert_in(connection).await
}

/// `$1, $2, …, $count`.
fn placeholder_list(count: usize) -> String {
    (1..=count)
        .map(|index| format!("${index}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Multi-row INSERTs of `rows` with literal values, [`ROWS_PER_STATEMENT`] rows each. Bulk loads
/// of millions of generated rows are dominated by per-argument overhead of bound parameters, so
/// values are written as escaped SQL literals instead (docs/decisions.md).
pub(crate) async fn insert_rows<T: TableRow>(
    connection: &mut sqlx::AnyConnection,
    rows: &[T],
) -> Result<(), sqlx::Error> {
    let header = format!(
        "INSERT INTO {} ({}) VALUES ",
        T::TABLE,
        T::COLUMNS.join(", ")
    );
    let mut statement = String::with_capacity(ROWS_PER_STATEMENT * 200);
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        statement.clear();
        statement.push_str(&header);
        for (index, row) in chunk.iter().enumerate() {
            if index > 0 {
                statement.push_str(", ");
            }
            row.write_values(&mut statement);
        }
        sqlx::raw_sql(statement.as_str())
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

impl RegistrySource for EmbeddedRegistry {
    fn rows<'a>(
        &'a self,
        kind: KindSpec,
        iins: &'a [Iin],
    ) -> futures::future::BoxFuture<'a, Result<Rows, SourceError>> {
        self.select(kind, iins).boxed()
    }
}
