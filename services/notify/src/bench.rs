//! The two phases `shlyuz bench notify` measures apart, so they do not share the CPU: the
//! NotificationService alone accepting notifications into the outbox, then delivery workers
//! draining it through the log provider. For the benchmark only; services start notify with
//! [`crate::start`].

use std::path::PathBuf;
use std::sync::Arc;

use shlyuz_kit::db::Database;
use shlyuz_proto::notify::v1::notification_service_server::NotificationServiceServer;

use crate::worker::{DeliverySettings, DeliveryWorker};

/// NotificationService over `database` (migrated), with no worker: notifications stay queued.
pub fn accept_routes(database: Database) -> anyhow::Result<tonic::service::Routes> {
    let notifier = crate::notifier::Notifier::new(
        database,
        Arc::new(crate::templates::TemplateCatalog::embedded()?),
        shlyuz_kit::clock::system_clock(),
    );
    Ok(tonic::service::Routes::new(NotificationServiceServer::new(
        crate::grpc::NotificationGrpc::new(notifier),
    )))
}

/// Runs `workers` delivery workers over `database` until the outbox is empty, sending through
/// the log provider into `log_file`, with no phone look-up (the notifications name phones).
pub async fn drain(database: Database, workers: usize, log_file: PathBuf) -> anyhow::Result<()> {
    let provider = Arc::new(crate::provider::LogProvider::new(
        crate::provider::LogSink::File(log_file),
        false,
    ));
    let settings = DeliverySettings {
        batch_size: 128,
        ..DeliverySettings::default()
    };
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let worker = DeliveryWorker::new(
            database.clone(),
            provider.clone(),
            Arc::new(crate::phone::NoPhoneDirectory),
            shlyuz_kit::clock::system_clock(),
            settings.clone(),
        );
        running.spawn(async move {
            loop {
                match worker.run_once().await {
                    Ok(report) if report.handled() == 0 => return Ok(()),
                    Ok(_) => {}
                    Err(error) => return Err(error),
                }
            }
        });
    }
    while let Some(joined) = running.join_next().await {
        joined.map_err(|error| anyhow::anyhow!("delivery worker panicked: {error}"))??;
    }
    Ok(())
}
