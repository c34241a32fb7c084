//! `shlyuz bench notify`: notifications accepted per second (SendNotification over mutual TLS into
//! the transactional outbox) and sent per second (delivery workers draining the outbox through the
//! log provider), on SQLite or PostgreSQL.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use shlyuz_kit::client::{ClientSettings, connect};
use shlyuz_kit::db::Database;
use shlyuz_kit::pki::DevPki;
use shlyuz_kit::server::{GrpcServer, ServerSettings, Transport};
use shlyuz_kit::shutdown::shutdown_channel;
use shlyuz_kit::telemetry::MetricsRegistry;
use shlyuz_proto::notify::v1 as pb;
use shlyuz_proto::notify::v1::notification_service_client::NotificationServiceClient;
use sqlx::Row;

use super::process::tls_files;
use super::stats::LatencySummary;

/// Options of `shlyuz bench notify`.
#[derive(Debug, Clone, clap::Args)]
pub struct NotifyBenchArgs {
    /// Notifications to send.
    #[arg(long, default_value_t = 20_000)]
    pub notifications: usize,
    /// Concurrent SendNotification calls.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Delivery workers draining the outbox.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// PostgreSQL server for notify's database (a fresh database is created and dropped);
    /// default: an SQLite file.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

const BENCH_PARTICIPANTS: [&str; 2] = ["notify", "intake"];

/// Runs the notify benchmark and prints its report.
pub async fn run(args: NotifyBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.notifications > 0 && args.concurrency > 0 && args.workers > 0,
        "--notifications, --concurrency and --workers must be positive"
    );
    let work_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let pki = DevPki::ensure(&work_dir.path().join("pki"), &BENCH_PARTICIPANTS)?;
    let bench_database =
        super::gateway::BenchDatabase::create(args.database_url.as_deref()).await?;
    let url = if bench_database.url().is_empty() {
        shlyuz_kit::db::default_sqlite_url(work_dir.path(), "notify")
    } else {
        bench_database.url().to_string()
    };
    let database = Database::connect(&url, 16).await?;
    database.migrate(&shlyuz_notify::MIGRATIONS).await?;

    let (trigger, signal) = shutdown_channel();
    let server = GrpcServer::bind(
        ServerSettings {
            name: "notify".to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            transport: Transport::MutualTls(tls_files(&pki, "notify")?),
            readiness_grace: Duration::ZERO,
            drain_timeout: Duration::from_secs(5),
            max_connection_age: None,
            callers: shlyuz_kit::identity::Callers::Any,
            listener: shlyuz_kit::listener::ListenerOptions::default(),
        },
        &MetricsRegistry::default(),
    )
    .await?;
    let address = server.local_addr()?;
    let server_task = tokio::spawn(server.serve(
        shlyuz_notify::bench::accept_routes(database.clone())?,
        signal,
    ));

    println!("shlyuz bench notify — {}", super::machine_description());
    println!(
        "{} notifications (SMS, Russian, 2 segments), {} concurrent SendNotification calls over mTLS, \
         {} delivery workers, log provider (file), database: {}",
        args.notifications,
        args.concurrency,
        args.workers,
        bench_database.description()
    );
    let client = NotificationServiceClient::new(
        connect(&ClientSettings {
            address: address.to_string(),
            tls: Some(tls_files(&pki, "intake")?),
            server_name: "notify".to_string(),
            connect_timeout: Duration::from_secs(5),
        })
        .await?,
    );
    let started = Instant::now();
    let latencies: Vec<Option<u64>> = futures::stream::iter(0..args.notifications)
        .map(|number| {
            let mut client = client.clone();
            async move {
                let call_started = Instant::now();
                client
                    .send_notification(request(number))
                    .await
                    .ok()
                    .map(|_| call_started.elapsed().as_micros() as u64)
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let accept_elapsed = started.elapsed();
    let accepted = latencies.iter().filter(|latency| latency.is_some()).count();
    let accept_latency = LatencySummary::from_latencies(latencies.into_iter().flatten().collect());

    // The workers start after acceptance, so the two figures do not share the CPU.
    let drain_started = Instant::now();
    shlyuz_notify::bench::drain(
        database.clone(),
        args.workers,
        work_dir.path().join("notify-sms.log"),
    )
    .await?;
    let drain_elapsed = drain_started.elapsed();
    let sent: i64 = sqlx::query("SELECT COUNT(*) AS sent FROM notifications WHERE state = 'SENT'")
        .fetch_one(database.pool())
        .await?
        .try_get("sent")?;

    println!();
    println!(
        "accepted   {accepted:>7} of {:>7}  {:>9.0}/s   SendNotification p50 {:.2} ms, p99 {:.2} ms",
        args.notifications,
        accepted as f64 / accept_elapsed.as_secs_f64(),
        accept_latency.p50_us as f64 / 1000.0,
        accept_latency.p99_us as f64 / 1000.0
    );
    println!(
        "sent       {sent:>7} of {accepted:>7}  {:>9.0}/s   outbox drained in {:.2} s",
        sent as f64 / drain_elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        drain_elapsed.as_secs_f64()
    );
    trigger.trigger();
    let _ = server_task.await;
    database.close().await;
    bench_database.drop_database().await;
    anyhow::ensure!(
        usize::try_from(sent).unwrap_or(0) == accepted && accepted == args.notifications,
        "{} of {} notifications accepted, {sent} sent",
        accepted,
        args.notifications
    );
    Ok(())
}

fn request(number: usize) -> tonic::Request<pb::SendNotificationRequest> {
    tonic::Request::new(pb::SendNotificationRequest {
        recipient_iin: String::new(),
        recipient_phone: format!("+7701{:07}", number % 10_000_000),
        channels: vec![pb::Channel::Sms as i32],
        template_id: "jauynger.status.accepted".to_string(),
        parameters: [(
            "application_number".to_string(),
            format!("J-2026-{number:06}"),
        )]
        .into_iter()
        .collect(),
        language: pb::Language::Ru as i32,
        idempotency_key: format!("bench-{number}"),
        conversation: None,
    })
}
