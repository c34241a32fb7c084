//! Shlyuz notify service: SMS and personal-cabinet notices in Kazakh and Russian, OTP, inbound SMS replies.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shlyuz_kit::db::{EmbeddedMigration, Migrations};
use shlyuz_kit::service::{Service, ServiceParts};
use shlyuz_proto::notify::v1::inbound_sms_service_server::InboundSmsServiceServer;
use shlyuz_proto::notify::v1::notification_service_server::NotificationServiceServer;
use shlyuz_proto::notify::v1::otp_service_server::OtpServiceServer;

pub mod bench;
pub mod config;
pub(crate) mod grpc;
pub(crate) mod inbound;
pub(crate) mod notifier;
pub(crate) mod otp;
pub(crate) mod phone;
pub(crate) mod provider;
pub(crate) mod reasons;
pub(crate) mod sms;
pub(crate) mod store;
pub(crate) mod templates;
pub(crate) mod webhook;
pub(crate) mod worker;

/// The participant id this target uses when it calls through the gateway.
pub const PARTICIPANT_ID: &str = "notify";

static SQLITE_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "notifications, outbox, inbox, conversations, replies, otps",
        sql: include_str!("../migrations/sqlite/0001_notify.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "the IIN an OTP was issued for",
        sql: include_str!("../migrations/sqlite/0002_otp_recipient.sql"),
    },
];

static POSTGRES_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "notifications, outbox, inbox, conversations, replies, otps",
        sql: include_str!("../migrations/postgres/0001_notify.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "the IIN an OTP was issued for",
        sql: include_str!("../migrations/postgres/0002_otp_recipient.sql"),
    },
];

/// Database migrations of the notify target, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: SQLITE_MIGRATIONS,
    postgres: POSTGRES_MIGRATIONS,
};

/// Which SMS provider sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Record each SMS and write it to `log_file` (the embedded default).
    #[default]
    Log,
    /// POST to an HTTP SMS gateway.
    Http,
}

/// Settings of the notify target.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySettings {
    /// The SMS provider.
    pub provider: ProviderKind,
    /// Where the log provider writes: a path, `-` for stdout; empty means `<data dir>/notify-sms.log`.
    pub log_file: String,
    /// The HTTP provider.
    pub http: provider::HttpProviderSettings,
    /// Retries of the delivery worker.
    pub delivery: worker::DeliverySettings,
    /// OTP limits.
    pub otp: otp::OtpSettings,
    /// Address of the provider webhook (delivery reports, inbound SMS); empty: no webhook.
    pub webhook_listen: String,
    /// Bearer token the provider must send to the webhook; empty: none required.
    pub webhook_token: String,
}

impl NotifySettings {
    /// The file the log provider appends SMS to: `None` for the HTTP provider or stdout.
    pub fn log_file_path(&self, data_dir: &Path) -> Option<std::path::PathBuf> {
        match (self.provider, self.log_file.as_str()) {
            (ProviderKind::Http, _) | (ProviderKind::Log, "-") => None,
            (ProviderKind::Log, "") => Some(data_dir.join("notify-sms.log")),
            (ProviderKind::Log, path) => Some(path.into()),
        }
    }
}

/// The provider the settings name.
pub(crate) fn build_provider(
    settings: &NotifySettings,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn provider::SmsProvider>> {
    Ok(match settings.provider {
        ProviderKind::Log => {
            let sink = match settings.log_file_path(data_dir) {
                Some(path) => provider::LogSink::File(path),
                None => provider::LogSink::Stdout,
            };
            Arc::new(provider::LogProvider::new(sink, false))
        }
        ProviderKind::Http => Arc::new(provider::HttpProvider::new(settings.http.clone())?),
    })
}

/// A forwarder for a notify without a gateway: replies wait in the database.
struct NoGatewayForwarder;

impl inbound::ReplyForwarder for NoGatewayForwarder {
    fn forward<'a>(
        &'a self,
        _participant: &'a str,
        _message_id: &'a str,
        _correlation_id: &'a str,
        _message: &'a inbound::Forwarded,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Err("no gateway address configured".to_string()) })
    }
}

/// Starts notify: the delivery worker, the reply relay and the webhook, and returns the gRPC
/// routes. Without a gateway there are no phone look-ups and replies wait until one is configured.
pub async fn start(parts: ServiceParts<config::NotifyConfig>) -> anyhow::Result<Service> {
    let provider = build_provider(&parts.config.sms, &parts.data_dir)?;
    start_with_provider(parts, provider).await
}

/// [`start`] with a given provider (tests and benchmarks).
pub(crate) async fn start_with_provider(
    parts: ServiceParts<config::NotifyConfig>,
    provider: Arc<dyn provider::SmsProvider>,
) -> anyhow::Result<Service> {
    let settings = &parts.config.sms;
    let tasks = &parts.tasks;
    let templates = Arc::new(templates::TemplateCatalog::embedded()?);
    let notifier = notifier::Notifier::new(parts.database.clone(), templates, parts.clock.clone());
    let (phones, forwarder): (
        Arc<dyn phone::PhoneDirectory>,
        Arc<dyn inbound::ReplyForwarder>,
    ) = match &parts.gateway {
        Some(gateway) => (
            Arc::new(phone::GatewayPhoneDirectory::new(gateway.clone())),
            Arc::new(inbound::GatewayReplyForwarder::new(gateway.clone())),
        ),
        None => (
            Arc::new(phone::NoPhoneDirectory),
            Arc::new(NoGatewayForwarder),
        ),
    };
    let worker = worker::DeliveryWorker::new(
        parts.database.clone(),
        provider,
        phones,
        parts.clock.clone(),
        settings.delivery.clone(),
    );
    tasks.spawn("notify delivery", worker.run(tasks.shutdown()));
    let relay = inbound::ReplyRelay::new(
        parts.database.clone(),
        forwarder,
        parts.clock.clone(),
        Duration::from_millis(settings.delivery.poll_interval_ms),
    );
    tasks.spawn("notify reply relay", relay.run(tasks.shutdown()));
    let inbound = inbound::InboundSms::new(notifier.clone());
    if !settings.webhook_listen.is_empty() {
        let address: SocketAddr = settings.webhook_listen.parse().map_err(|error| {
            anyhow::anyhow!(
                "notify.webhook_listen {:?}: {error}",
                settings.webhook_listen
            )
        })?;
        let server = webhook::WebhookServer::bind(
            address,
            webhook::router(
                notifier.clone(),
                inbound.clone(),
                settings.webhook_token.clone(),
            ),
        )
        .await?;
        tracing::info!(address = %server.local_addr()?, "notify webhook listening");
        let shutdown = tasks.shutdown();
        tasks.spawn("notify webhook", async move {
            if let Err(error) = server.serve(shutdown).await {
                tracing::error!(error = %error, "notify webhook stopped");
            }
        });
    }
    let otp = otp::OtpIssuer::new(notifier.clone(), settings.otp.clone());
    let mut builder = tonic::service::RoutesBuilder::default();
    builder
        .add_service(NotificationServiceServer::new(grpc::NotificationGrpc::new(
            notifier,
        )))
        .add_service(OtpServiceServer::new(grpc::OtpGrpc::new(otp)))
        .add_service(InboundSmsServiceServer::new(grpc::InboundGrpc::new(
            inbound,
        )));
    Ok(Service::new(builder.routes()))
}

#[cfg(test)]
mod tests;
