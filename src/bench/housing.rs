//! `shlyuz bench housing`: one allocation round over a large register — by default 100,000 queued
//! persons and 10,000 free dwellings in 20 garrison localities — on SQLite and, when a PostgreSQL
//! URL is given, on PostgreSQL. The round is what the service runs: expiry of overdue offers, the
//! queue walk with the entitled-area norm, and every offer and its SMS outbox row written in one
//! transaction. Sending the SMS is not part of it (the outbox relay does that).
//!
//! With `--review-persons N` (default 100,000; 0 skips it) it also runs the seed-002 review of N
//! registered persons against the registry target seeded with a synthetic population, every look-up
//! going through a real gateway (mTLS, signed envelopes, access rules, message log) on SQLite.

use std::time::Instant;

use anyhow::Context;
use shlyuz_housing::bench::{BenchHousing, NewDwelling, NewRegistrant};
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
    /// Persons reviewed through the gateway (0: skip the review benchmark).
    #[arg(long, default_value_t = 100_000)]
    pub review_persons: usize,
    /// Review chunks checked at the same time.
    #[arg(long, default_value_t = 4)]
    pub review_concurrency: usize,
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
    if args.review_persons > 0 {
        let review = review::run(
            args.review_persons,
            args.review_concurrency,
            work_dir.path(),
        )
        .await?;
        println!(
            "review through the gateway (SQLite): {} persons checked, {} removed, {} not checked in {:.1} s (registry seeded in {:.1} s); target ≤ 120 s",
            review.checked, review.removed, review.not_checked, review.seconds, review.seed_seconds
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
    let housing = BenchHousing::new(database.clone());
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
    housing.import(&registrants, &dwellings).await?;
    let load_seconds = load_started.elapsed().as_secs_f64();

    let round_started = Instant::now();
    let offers = housing.allocation_round().await?;
    let round_seconds = round_started.elapsed().as_secs_f64();
    database.close().await;
    Ok(RoundFigures {
        backend,
        load_seconds,
        round_seconds,
        offers,
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

/// The review benchmark: registry and gateway targets in this process, the housing review calling
/// through the gateway as participant `housing`.
mod review {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use shlyuz_gateway::consent::InMemoryConsents;
    use shlyuz_gateway::directory::{DEFAULT_DIRECTORY, TargetResolver};
    use shlyuz_gateway::{Gateway, GatewayParts, GatewaySettings};
    use shlyuz_housing::bench::{BenchHousing, NewRegistrant};
    use shlyuz_kit::client::{ClientSettings, connect};
    use shlyuz_kit::db::Database;
    use shlyuz_kit::gateway_client::GatewayClient;
    use shlyuz_kit::pki::{DevPki, SigningKey};
    use shlyuz_kit::server::{GrpcServer, ServerSettings, TlsFiles, Transport};
    use shlyuz_kit::shutdown::shutdown_channel;
    use shlyuz_kit::telemetry::MetricsRegistry;

    const PARTICIPANTS: [&str; 8] = [
        "gateway",
        "registry",
        "notify",
        "intake",
        "housing",
        "jauynger-portal",
        "sdu",
        "ops",
    ];

    /// The figures of one review run.
    pub struct ReviewFigures {
        /// Persons whose checks completed.
        pub checked: i64,
        /// Persons removed.
        pub removed: i64,
        /// Persons left unchecked because a look-up failed.
        pub not_checked: i64,
        /// Seconds of the review run.
        pub seconds: f64,
        /// Seconds to seed the registry (not part of the target).
        pub seed_seconds: f64,
    }

    fn tls_files(pki: &DevPki, participant: &str) -> anyhow::Result<TlsFiles> {
        let files = pki
            .participant(participant)
            .with_context(|| format!("no participant {participant}"))?;
        Ok(TlsFiles {
            ca_cert: pki.ca_cert_path().to_path_buf(),
            cert: files.tls_cert.clone(),
            key: files.tls_key.clone(),
        })
    }

    fn server_settings(name: &str, pki: &DevPki) -> anyhow::Result<ServerSettings> {
        Ok(ServerSettings {
            name: name.to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            transport: Transport::MutualTls(tls_files(pki, name)?),
            readiness_grace: Duration::ZERO,
            drain_timeout: Duration::from_secs(5),
            max_connection_age: None,
            callers: shlyuz_kit::identity::Callers::Any,
            listener: shlyuz_kit::listener::ListenerOptions::default(),
        })
    }

    pub async fn run(
        persons: usize,
        concurrency: usize,
        work_dir: &Path,
    ) -> anyhow::Result<ReviewFigures> {
        shlyuz_kit::install_crypto_provider();
        let pki = DevPki::ensure(&work_dir.join("pki"), &PARTICIPANTS).context("bench pki")?;
        let metrics = MetricsRegistry::default();
        let (trigger, signal) = shutdown_channel();

        let registry_database = Database::connect(
            &format!("sqlite:{}", work_dir.join("registry.db").display()),
            16,
        )
        .await?;
        registry_database
            .migrate(&shlyuz_registry::MIGRATIONS)
            .await?;
        let seeded = shlyuz_registry::seed(registry_database.clone(), persons, 1, None).await?;
        let iins = shlyuz_registry::bench::sample_iins(
            registry_database.clone(),
            i64::try_from(persons).unwrap_or(i64::MAX),
        )
        .await?;
        let registry_server =
            GrpcServer::bind(server_settings("registry", &pki)?, &metrics).await?;
        let registry_address = registry_server.local_addr()?;
        let registry_task = tokio::spawn(registry_server.serve(
            shlyuz_registry::bench::routes(registry_database.clone()),
            signal.clone(),
        ));

        let directory_file = work_dir.join("gateway-directory-review.toml");
        std::fs::write(&directory_file, DEFAULT_DIRECTORY)?;
        let gateway_database = Database::connect(
            &format!("sqlite:{}", work_dir.join("gateway-review.db").display()),
            8,
        )
        .await?;
        gateway_database
            .migrate(&shlyuz_gateway::MIGRATIONS)
            .await?;
        let gateway = Gateway::start(GatewayParts {
            database: gateway_database.clone(),
            directory_file,
            // The default directory routes every service; only the registry runs here.
            targets: TargetResolver::partial(
                &[("registry", registry_address.to_string())],
                "127.0.0.1:9",
            ),
            signing_key: Arc::new(SigningKey::from_pem_file(
                &pki.participant("gateway").context("gateway")?.signing_key,
            )?),
            consent: Arc::new(InMemoryConsents::default()),
            upstream_tls: Some(tls_files(&pki, "gateway")?),
            metrics: metrics.clone(),
            clock: shlyuz_kit::clock::system_clock(),
            settings: GatewaySettings::default(),
            tasks: shlyuz_kit::service::Tasks::new(signal.clone()),
        })
        .await?;
        let gateway_server = GrpcServer::bind(server_settings("gateway", &pki)?, &metrics).await?;
        let gateway_address = gateway_server.local_addr()?;
        let gateway_task = tokio::spawn(gateway_server.serve(gateway.routes(), signal));

        let housing_database = Database::connect(
            &format!("sqlite:{}", work_dir.join("housing-review.db").display()),
            4,
        )
        .await?;
        housing_database
            .migrate(&shlyuz_housing::MIGRATIONS)
            .await?;
        let housing = BenchHousing::new(housing_database.clone());
        let registrants: Vec<NewRegistrant> = iins
            .iter()
            .enumerate()
            .map(|(index, iin)| NewRegistrant {
                iin: iin.clone(),
                full_name: format!("Әскери қызметші {index}"),
                phone: format!("+77{index:09}"),
                reported_at_ms: 1_600_000_000_000 + i64::try_from(index).unwrap_or(0) * 60_000,
                locality_kato: "711110000".to_string(),
                family_size: 1,
            })
            .collect();
        housing.import(&registrants, &[]).await?;

        let channel = connect(&ClientSettings {
            address: gateway_address.to_string(),
            tls: Some(tls_files(&pki, "housing")?),
            server_name: "gateway".to_string(),
            connect_timeout: Duration::from_secs(5),
        })
        .await?;
        let housing_client = GatewayClient::from_channel(
            channel,
            "housing",
            Arc::new(SigningKey::from_pem_file(
                &pki.participant("housing").context("housing")?.signing_key,
            )?),
        );
        let started = Instant::now();
        let report = housing.review(&housing_client, concurrency).await?;
        let seconds = started.elapsed().as_secs_f64();

        trigger.trigger();
        let _ = registry_task.await;
        let _ = gateway_task.await;
        gateway.shutdown().await;
        for database in [gateway_database, registry_database, housing_database] {
            database.close().await;
        }
        Ok(ReviewFigures {
            checked: report.checked,
            removed: report.removed,
            not_checked: report.not_checked,
            seconds,
            seed_seconds: seeded.elapsed.as_secs_f64(),
        })
    }
}
