//! `shlyuz bench housing`: one allocation round over a large register — by default 100,000 queued
//! persons and 10,000 free dwellings in 20 garrison localities — on SQLite and, when a PostgreSQL
//! URL is given, on PostgreSQL. The round is what the service runs: expiry of overdue offers, the
//! queue walk with the entitled-area norm, and every offer and its SMS outbox row written in one
//! transaction. Sending the SMS is not part of it (the outbox relay does that).

use std::time::Instant;

use anyhow::Context;
use shlyuz_housing::Housing;
use shlyuz_housing::norm::AreaNorm;
use shlyuz_housing::register::{NewDwelling, NewRegistrant};
use shlyuz_kit::db::Database;

/// Options of `shlyuz bench housing`.
#[derive(Debug, Clone, clap::Args)]
pub struct HousingBenchArgs {
    /// Persons on the register.
    #[arg(long, default_value_t = 100_000)]
    pub persons: usize,
    /// Free dwellings.
    #[arg(long, default_value_t = 10_000)]
    pub dwellings: usize,
    /// Garrison localities the persons and dwellings are spread over.
    #[arg(long, default_value_t = 20)]
    pub localities: usize,
    /// PostgreSQL server (any database on it) for the second backend; default: SQLite only.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// The figures of one backend.
#[derive(Debug, Clone)]
pub struct RoundFigures {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Seconds to load the register and the stock (not part of the target).
    pub load_seconds: f64,
    /// Seconds of the allocation round.
    pub round_seconds: f64,
    /// Offers the round made.
    pub offers: usize,
}

/// Runs the benchmark and prints one line per backend.
pub async fn run(args: HousingBenchArgs) -> anyhow::Result<Vec<RoundFigures>> {
    let work_dir = tempfile::tempdir().context("temporary directory")?;
    let mut figures = Vec::new();
    let sqlite_url = format!("sqlite:{}", work_dir.path().join("housing.db").display());
    figures.push(run_backend("sqlite", &sqlite_url, &args).await?);
    if let Some(admin_url) = &args.database_url {
        let name = format!("shlyuz_bench_housing_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(admin_url, 1).await?;
        admin
            .execute_raw(&format!("CREATE DATABASE {name}"))
            .await?;
        let url = shlyuz_kit::db::testing::replace_database_name(admin_url, &name);
        let outcome = run_backend("postgres", &url, &args).await;
        let _ = admin
            .execute_raw(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
        admin.close().await;
        figures.push(outcome?);
    }
    println!("shlyuz bench housing — {}", super::machine_description());
    println!(
        "{} persons, {} free dwellings, {} localities; target: round ≤ 2 s",
        args.persons, args.dwellings, args.localities
    );
    println!("backend   load_s  round_s  offers");
    for figure in &figures {
        println!(
            "{:<8} {:>7.2} {:>8.3} {:>7}",
            figure.backend, figure.load_seconds, figure.round_seconds, figure.offers
        );
    }
    Ok(figures)
}

async fn run_backend(
    backend: &'static str,
    url: &str,
    args: &HousingBenchArgs,
) -> anyhow::Result<RoundFigures> {
    let database = Database::connect(url, 4).await?;
    database.migrate(&shlyuz_housing::MIGRATIONS).await?;
    let housing = Housing::new(
        database.clone(),
        shlyuz_kit::clock::system_clock(),
        AreaNorm::default(),
    );
    let localities = args.localities.max(1);
    let kato = |index: usize| format!("{:09}", 711_000_000 + (index % localities) * 1000);

    let load_started = Instant::now();
    let registrants: Vec<NewRegistrant> = (0..args.persons)
        .map(|index| NewRegistrant {
            iin: bench_iin(index),
            full_name: format!("Әскери қызметші {index}"),
            phone: format!("+77{:09}", index),
            reported_at_ms: 1_600_000_000_000 + i64::try_from(index).unwrap_or(0) * 60_000,
            locality_kato: kato(index),
            // Families of one to five in every locality.
            family_size: i64::try_from((index / localities) % 5).unwrap_or(0) + 1,
        })
        .collect();
    housing
        .import_registrants(&registrants)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let dwellings: Vec<NewDwelling> = (0..args.dwellings)
        .map(|index| {
            let rooms = i64::try_from((index / localities) % 4).unwrap_or(0) + 1;
            NewDwelling {
                address: format!("Гарнизон көшесі, {index}"),
                locality_kato: kato(index),
                rooms,
                // 34, 52, 70, 88 m²: each size fits some family size of the norm.
                total_area_m2: 16.0 + 18.0 * rooms as f64,
            }
        })
        .collect();
    housing
        .import_dwellings(&dwellings)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let load_seconds = load_started.elapsed().as_secs_f64();

    let round_started = Instant::now();
    let outcome = housing
        .run_allocation_round()
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let round_seconds = round_started.elapsed().as_secs_f64();
    database.close().await;
    Ok(RoundFigures {
        backend,
        load_seconds,
        round_seconds,
        offers: outcome.offers_made.len(),
    })
}

/// A valid, distinct IIN for person `index` (born between 1970 and 2000, check digit computed).
fn bench_iin(index: usize) -> String {
    // 30 birth years × 365 days × serials: plenty of distinct IINs for any bench size.
    let day = index % 10_000;
    let serial_block = index / 10_000;
    let birth_date = time::Date::from_calendar_date(1975, time::Month::January, 1)
        .unwrap_or(time::Date::MIN)
        .saturating_add(time::Duration::days(i64::try_from(day).unwrap_or(0)));
    // Some serials have no valid check digit: walk forward from a block of 20 per index.
    let first_serial = u16::try_from(serial_block * 20 + 1).unwrap_or(1);
    (first_serial..first_serial.saturating_add(20))
        .find_map(|serial| {
            shlyuz_kit::iin::Iin::from_parts(birth_date, shlyuz_kit::iin::Sex::Male, serial)
        })
        .map(|iin| iin.as_str().to_string())
        .unwrap_or_default()
}
