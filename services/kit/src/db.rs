//! Storage through sqlx `Any`: an SQLite file by default, PostgreSQL by URL, one code path with
//! portable SQL (`$1` placeholders; BIGINT, TEXT, BLOB/BYTEA and DOUBLE PRECISION columns only),
//! migrations per dialect embedded in the binary, and a harness that runs one storage test suite
//! against both backends.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

/// The SQL dialect behind a [`Database`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite, the embedded default.
    Sqlite,
    /// PostgreSQL, the production store.
    Postgres,
}

impl Dialect {
    /// The dialect a connection URL selects.
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            anyhow::bail!(
                "unsupported database url {:?}: expected sqlite:… or postgres://…",
                redact_url(url)
            )
        }
    }
}

/// Placeholders for `rows` rows of `width` columns: `($1,$2,…)` on PostgreSQL, anonymous `(?,?,…)`
/// on SQLite. SQLite keeps numbered parameters in a linear list that the driver searches once per
/// parameter when binding (quadratic in the parameters of a statement: 6 % of the gateway's CPU
/// at 16 rows × 22 columns); anonymous ones bind by position and are not in that list.
pub fn values_clause(dialect: Dialect, rows: usize, width: usize) -> String {
    let mut clause = String::with_capacity(rows * width * 5);
    for row in 0..rows {
        if row > 0 {
            clause.push(',');
        }
        clause.push('(');
        for column in 0..width {
            if column > 0 {
                clause.push(',');
            }
            match dialect {
                Dialect::Postgres => {
                    clause.push('$');
                    clause.push_str(&(row * width + column + 1).to_string());
                }
                Dialect::Sqlite => clause.push('?'),
            }
        }
        clause.push(')');
    }
    clause
}

/// The placeholder of bind parameter `number` (1-based) after `values_clause` parameters:
/// `$number` on PostgreSQL, `?` on SQLite (anonymous parameters bind in order).
pub fn placeholder(dialect: Dialect, number: usize) -> String {
    match dialect {
        Dialect::Postgres => format!("${number}"),
        Dialect::Sqlite => "?".to_string(),
    }
}

/// One migration, its SQL embedded in the binary with `include_str!`.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedMigration {
    /// Increasing version number.
    pub version: i64,
    /// Short description, stored in the migrations table.
    pub description: &'static str,
    /// The SQL; may hold several statements.
    pub sql: &'static str,
}

/// The migrations of one service, written once per dialect.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    /// Migrations for SQLite.
    pub sqlite: &'static [EmbeddedMigration],
    /// Migrations for PostgreSQL.
    pub postgres: &'static [EmbeddedMigration],
}

/// A connection pool and the dialect it speaks.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    dialect: Dialect,
}

static DRIVERS: Once = Once::new();

impl Database {
    /// Connects to `url` (`sqlite:path` or `postgres://…`), creating an SQLite file if missing.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        DRIVERS.call_once(install_default_drivers);
        let dialect = Dialect::of_url(url)?;
        let connect_url = match dialect {
            Dialect::Sqlite => sqlite_url_with_create(url)?,
            Dialect::Postgres => url.to_string(),
        };
        let options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10));
        let options = match dialect {
            Dialect::Sqlite => options.after_connect(|connection, _metadata| {
                Box::pin(async move {
                    // WAL lets readers proceed during a write; FULL makes every commit survive
                    // a power cut, not only a process crash; the busy timeout makes concurrent
                    // writers wait instead of failing.
                    connection.execute("PRAGMA journal_mode = WAL").await?;
                    connection.execute("PRAGMA synchronous = FULL").await?;
                    connection.execute("PRAGMA busy_timeout = 10000").await?;
                    connection.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            }),
            Dialect::Postgres => options,
        };
        let pool = options
            .connect(&connect_url)
            .await
            .with_context(|| format!("cannot connect to database {}", redact_url(url)))?;
        Ok(Self { pool, dialect })
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The dialect, for the few statements that differ.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Runs one statement without parameters (administration: CREATE/DROP DATABASE).
    pub async fn execute_raw(&self, statement: &str) -> anyhow::Result<()> {
        self.pool.execute(statement).await?;
        Ok(())
    }

    /// Applies the pending migrations of this dialect; already applied ones are checked against
    /// their checksum so an edited migration is refused instead of silently diverging.
    pub async fn migrate(&self, migrations: &Migrations) -> anyhow::Result<()> {
        let embedded = match self.dialect {
            Dialect::Sqlite => migrations.sqlite,
            Dialect::Postgres => migrations.postgres,
        };
        let owned: Vec<Migration> = embedded
            .iter()
            .map(|migration| {
                Migration::new(
                    migration.version,
                    Cow::Borrowed(migration.description),
                    MigrationType::Simple,
                    Cow::Borrowed(migration.sql),
                    false,
                )
            })
            .collect();
        let migrator = Migrator {
            migrations: Cow::Owned(owned),
            ..Migrator::DEFAULT
        };
        migrator
            .run(&self.pool)
            .await
            .context("database migration failed")
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The default SQLite URL of a service's database file under the data directory.
pub fn default_sqlite_url(data_dir: &Path, service: &str) -> String {
    format!(
        "sqlite:{}",
        data_dir.join(format!("{service}.db")).display()
    )
}

fn sqlite_url_with_create(url: &str) -> anyhow::Result<String> {
    let path_part = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let file_path = path_part.split('?').next().unwrap_or_default();
    if file_path.is_empty() {
        anyhow::bail!("database url {url:?} names no SQLite file");
    }
    if file_path != ":memory:"
        && let Some(parent) = Path::new(file_path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).with_context(|| {
            format!("cannot create the database directory {}", parent.display())
        })?;
    }
    if url.contains("mode=") {
        return Ok(url.to_string());
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}mode=rwc"))
}

/// The URL with any password replaced, safe to log.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{credentials}@{host}"),
    }
}

/// Runs one storage test suite against every backend: SQLite always, PostgreSQL when
/// `SHLYUZ_TEST_POSTGRES_URL` is set (and, with `SHLYUZ_REQUIRE_POSTGRES=1`, a missing
/// PostgreSQL fails the test instead of skipping it).
pub mod testing {
    use super::*;

    /// Environment variable naming a PostgreSQL server (any database on it) for tests.
    pub const POSTGRES_URL_VARIABLE: &str = "SHLYUZ_TEST_POSTGRES_URL";
    /// Environment variable that turns a missing PostgreSQL into a test failure.
    pub const REQUIRE_POSTGRES_VARIABLE: &str = "SHLYUZ_REQUIRE_POSTGRES";

    /// A fresh, empty database for one test, removed by [`TestDatabase::cleanup`].
    pub struct TestDatabase {
        database: Database,
        cleanup: Cleanup,
    }

    enum Cleanup {
        Directory(tempfile::TempDir),
        PostgresDatabase { admin_url: String, name: String },
    }

    impl TestDatabase {
        /// A new SQLite file in a temporary directory.
        pub async fn sqlite() -> Self {
            let directory = match tempfile::tempdir() {
                Ok(directory) => directory,
                Err(error) => panic!("cannot create a temporary directory: {error}"),
            };
            let url = format!("sqlite:{}", directory.path().join("test.db").display());
            let database = match Database::connect(&url, 4).await {
                Ok(database) => database,
                Err(error) => panic!("cannot open test SQLite database: {error:#}"),
            };
            Self {
                database,
                cleanup: Cleanup::Directory(directory),
            }
        }

        /// A new database on the PostgreSQL server of `SHLYUZ_TEST_POSTGRES_URL`, or `None`
        /// (skip) when it is not set and not required.
        pub async fn postgres() -> Option<Self> {
            let admin_url = match std::env::var(POSTGRES_URL_VARIABLE) {
                Ok(url) if !url.is_empty() => url,
                _ => {
                    if std::env::var(REQUIRE_POSTGRES_VARIABLE).as_deref() == Ok("1") {
                        panic!(
                            "{REQUIRE_POSTGRES_VARIABLE}=1 but {POSTGRES_URL_VARIABLE} is not set"
                        );
                    }
                    eprintln!("postgres backend skipped: {POSTGRES_URL_VARIABLE} is not set");
                    return None;
                }
            };
            let name = format!("shlyuz_test_{}", uuid::Uuid::new_v4().simple());
            let admin = match Database::connect(&admin_url, 1).await {
                Ok(admin) => admin,
                Err(error) => panic!("cannot reach the test PostgreSQL server: {error:#}"),
            };
            if let Err(error) = admin
                .pool()
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
            {
                panic!("cannot create test database {name}: {error}");
            }
            admin.close().await;
            let url = replace_database_name(&admin_url, &name);
            let database = match Database::connect(&url, 8).await {
                Ok(database) => database,
                Err(error) => panic!("cannot connect to test database {name}: {error:#}"),
            };
            Some(Self {
                database,
                cleanup: Cleanup::PostgresDatabase { admin_url, name },
            })
        }

        /// The database under test.
        pub fn database(&self) -> &Database {
            &self.database
        }

        /// Closes the pool and removes the database.
        pub async fn cleanup(self) {
            self.database.close().await;
            match self.cleanup {
                Cleanup::Directory(directory) => drop(directory),
                Cleanup::PostgresDatabase { admin_url, name } => {
                    if let Ok(admin) = Database::connect(&admin_url, 1).await {
                        let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        if let Err(error) = admin.pool().execute(statement.as_str()).await {
                            eprintln!("cannot drop test database {name}: {error}");
                        }
                        admin.close().await;
                    }
                }
            }
        }
    }

    /// `url` with its database name replaced by `name`, keeping credentials and parameters.
    pub fn replace_database_name(url: &str, name: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (url, None),
        };
        let scheme_end = base.find("://").map(|index| index + 3).unwrap_or(0);
        let server = match base[scheme_end..].find('/') {
            Some(slash) => &base[..scheme_end + slash],
            None => base,
        };
        match query {
            Some(query) => format!("{server}/{name}?{query}"),
            None => format!("{server}/{name}"),
        }
    }

    /// Defines a module `$name` with one test per backend, each running `$body` — an
    /// `async` closure taking a fresh [`Database`] — against an empty database.
    #[macro_export]
    macro_rules! storage_test {
        ($name:ident, $body:expr) => {
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let test_database = $crate::db::testing::TestDatabase::sqlite().await;
                    ($body)(test_database.database().clone()).await;
                    test_database.cleanup().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let Some(test_database) = $crate::db::testing::TestDatabase::postgres().await
                    else {
                        return;
                    };
                    ($body)(test_database.database().clone()).await;
                    test_database.cleanup().await;
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::testing::replace_database_name;
    use super::*;

    #[test]
    fn values_clause_numbers_placeholders_row_by_row() {
        assert_eq!(
            values_clause(Dialect::Postgres, 2, 3),
            "($1,$2,$3),($4,$5,$6)"
        );
        assert_eq!(values_clause(Dialect::Sqlite, 2, 3), "(?,?,?),(?,?,?)");
        assert_eq!(placeholder(Dialect::Postgres, 7), "$7");
        assert_eq!(placeholder(Dialect::Sqlite, 7), "?");
    }

    static CONFORMANCE_SQLITE: &[EmbeddedMigration] = &[EmbeddedMigration {
        version: 1,
        description: "conformance table",
        sql: "CREATE TABLE conformance (
                id TEXT PRIMARY KEY,
                counter BIGINT NOT NULL,
                active BIGINT NOT NULL,
                payload BLOB NOT NULL,
                ratio DOUBLE PRECISION NOT NULL,
                note TEXT
              );",
    }];
    static CONFORMANCE_POSTGRES: &[EmbeddedMigration] = &[EmbeddedMigration {
        version: 1,
        description: "conformance table",
        sql: "CREATE TABLE conformance (
                id TEXT PRIMARY KEY,
                counter BIGINT NOT NULL,
                active BIGINT NOT NULL,
                payload BYTEA NOT NULL,
                ratio DOUBLE PRECISION NOT NULL,
                note TEXT
              );",
    }];
    static CONFORMANCE: Migrations = Migrations {
        sqlite: CONFORMANCE_SQLITE,
        postgres: CONFORMANCE_POSTGRES,
    };

    crate::storage_test!(portable_types_round_trip, |database: Database| async move {
        database.migrate(&CONFORMANCE).await.expect("migrate");
        // Running the same migrations again is a no-op, not an error.
        database.migrate(&CONFORMANCE).await.expect("migrate twice");

        let payload = vec![0_u8, 1, 2, 255];
        sqlx::query(
            "INSERT INTO conformance (id, counter, active, payload, ratio, note) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind("a")
        .bind(i64::MAX)
        .bind(1_i64)
        .bind(payload.clone())
        .bind(0.25_f64)
        .bind(Option::<String>::None)
        .execute(database.pool())
        .await
        .expect("insert");

        let row = sqlx::query(
            "SELECT id, counter, active, payload, ratio, note,
                    CASE WHEN counter > $1 THEN 1 ELSE 0 END AS big
             FROM conformance WHERE id = $2",
        )
        .bind(0_i64)
        .bind("a")
        .fetch_one(database.pool())
        .await
        .expect("select");
        assert_eq!(row.get::<String, _>("id"), "a");
        assert_eq!(row.get::<i64, _>("counter"), i64::MAX);
        assert_eq!(row.get::<i64, _>("active"), 1);
        assert_eq!(row.get::<Vec<u8>, _>("payload"), payload);
        assert_eq!(row.get::<f64, _>("ratio"), 0.25);
        assert_eq!(row.get::<Option<String>, _>("note"), None);
        assert_eq!(row.get::<i64, _>("big"), 1);

        let returned = sqlx::query(
            "UPDATE conformance SET counter = counter - $1 WHERE id = $2 RETURNING counter",
        )
        .bind(1_i64)
        .bind("a")
        .fetch_one(database.pool())
        .await
        .expect("update returning");
        assert_eq!(returned.get::<i64, _>("counter"), i64::MAX - 1);
    });

    crate::storage_test!(
        failed_transaction_leaves_nothing,
        |database: Database| async move {
            database.migrate(&CONFORMANCE).await.expect("migrate");
            let mut transaction = database.pool().begin().await.expect("begin");
            sqlx::query("INSERT INTO conformance (id, counter, active, payload, ratio) VALUES ($1, 1, 0, $2, 0)")
            .bind("half-written")
            .bind(Vec::<u8>::new())
            .execute(&mut *transaction)
            .await
            .expect("first insert");
            let duplicate = sqlx::query("INSERT INTO conformance (id, counter, active, payload, ratio) VALUES ($1, 1, 0, $2, 0)")
            .bind("half-written")
            .bind(Vec::<u8>::new())
            .execute(&mut *transaction)
            .await;
            assert!(
                duplicate.is_err(),
                "a duplicate primary key must be refused"
            );
            drop(transaction);
            let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM conformance")
                .fetch_one(database.pool())
                .await
                .expect("count")
                .get("n");
            assert_eq!(count, 0, "a rolled-back transaction leaves no row");
        }
    );

    crate::storage_test!(
        edited_migration_is_refused,
        |database: Database| async move {
            database.migrate(&CONFORMANCE).await.expect("migrate");
            static EDITED: &[EmbeddedMigration] = &[EmbeddedMigration {
                version: 1,
                description: "conformance table",
                sql: "CREATE TABLE something_else (id TEXT PRIMARY KEY);",
            }];
            let edited = Migrations {
                sqlite: EDITED,
                postgres: EDITED,
            };
            assert!(database.migrate(&edited).await.is_err());
        }
    );

    #[test]
    fn replaces_database_name_keeping_parameters() {
        assert_eq!(
            replace_database_name(
                "postgres://u:p@localhost:5432/postgres?sslmode=disable",
                "t1"
            ),
            "postgres://u:p@localhost:5432/t1?sslmode=disable"
        );
        assert_eq!(
            replace_database_name("postgres://localhost", "t2"),
            "postgres://localhost/t2"
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite:var/x.db"), "sqlite:var/x.db");
    }

    #[test]
    fn rejects_unknown_scheme() {
        assert!(Dialect::of_url("mysql://localhost/db").is_err());
    }
}
