//! Delivery of the notification outbox. Transitions write the rows (store.rs); [`NotifySender`]
//! hands them to notify through the gateway and [`run_delivery_loop`] drains them; without a
//! gateway rows wait, none is lost.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use shlyuz_kit::backoff::Backoff;
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::error::ApiError;
use shlyuz_kit::gateway_client::GatewayClient;
use shlyuz_kit::shutdown::ShutdownSignal;
use shlyuz_proto::notify::v1 as notify;

use crate::store::{OutboxRow, Store};
use shlyuz_kit::purpose::CITIZEN_NOTIFICATION;

/// gRPC path of `SendNotification`.
pub const SEND_NOTIFICATION_PATH: &str = "/shlyuz.notify.v1.NotificationService/SendNotification";
/// Rows handed to notify per round.
pub const DELIVERY_BATCH: usize = 50;

/// First retry delay; doubles per attempt.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);

/// Hands one SMS to the notification service.
pub trait NotificationSender: Send + Sync {
    /// Sends `message`; `Err` leaves it in the outbox for a later attempt. Must be idempotent on
    /// `message.outbox_id` (a crash between sending and marking resends it).
    fn send<'a>(&'a self, message: &'a OutboxRow) -> BoxFuture<'a, Result<(), String>>;
}

/// What one delivery round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Delivered.
    pub sent: usize,
    /// Failed, rescheduled.
    pub failed: usize,
}

/// The delay before attempt `attempts + 1`.
pub fn retry_delay(attempts: i64) -> Duration {
    Backoff::new(FIRST_RETRY, MAX_RETRY).delay(attempts.saturating_add(1))
}

/// Sends up to `limit` due rows, oldest first.
pub async fn deliver_pending(
    store: &Store,
    sender: &dyn NotificationSender,
    limit: usize,
) -> Result<DeliveryReport, ApiError> {
    let mut report = DeliveryReport::default();
    for message in store.pending_outbox(limit).await? {
        match sender.send(&message).await {
            Ok(()) => {
                store.mark_sent(&message.outbox_id).await?;
                report.sent += 1;
            }
            Err(error) => {
                let delay = retry_delay(message.attempts);
                let retry_at = store
                    .now_ms()
                    .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                tracing::warn!(
                    outbox_id = %message.outbox_id,
                    attempts = message.attempts + 1,
                    error = %error,
                    "sms delivery failed"
                );
                store
                    .mark_failed(&message.outbox_id, &error, retry_at)
                    .await?;
                report.failed += 1;
            }
        }
    }
    Ok(report)
}

/// Sends outbox rows through the gateway to `NotificationService.SendNotification`, signed as
/// intake, with the candidate's IIN as subject and recipient (notify asks the mobile citizens
/// database for the phone) and the outbox id as idempotency key, so a resent row is one SMS.
#[derive(Debug, Clone)]
pub struct NotifySender {
    gateway: GatewayClient,
}

impl NotifySender {
    /// A sender calling through `gateway`.
    pub fn new(gateway: GatewayClient) -> Self {
        Self { gateway }
    }
}

/// The `SendNotification` request for one outbox row.
pub fn send_request(message: &OutboxRow) -> Result<notify::SendNotificationRequest, String> {
    let parameters: HashMap<String, String> = serde_json::from_str(&message.parameters_json)
        .map_err(|error| format!("outbox parameters unreadable: {error}"))?;
    let language = match message.language.as_str() {
        "kk" => notify::Language::Kk,
        "ru" => notify::Language::Ru,
        other => return Err(format!("outbox language {other:?} unknown")),
    };
    Ok(notify::SendNotificationRequest {
        recipient_iin: message.recipient_iin.clone(),
        recipient_phone: String::new(),
        channels: vec![notify::Channel::Sms as i32],
        template_id: message.template_id.clone(),
        parameters,
        language: language as i32,
        idempotency_key: message.outbox_id.clone(),
        conversation: None,
    })
}

impl NotificationSender for NotifySender {
    fn send<'a>(&'a self, message: &'a OutboxRow) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let body = send_request(message)?;
            let envelope = EnvelopeBuilder {
                purpose: CITIZEN_NOTIFICATION.to_string(),
                subject_iin: message.recipient_iin.clone(),
                ..EnvelopeBuilder::default()
            };
            let request = self
                .gateway
                .signed_request(&envelope, SEND_NOTIFICATION_PATH, body);
            let mut client = notify::notification_service_client::NotificationServiceClient::new(
                self.gateway.channel(),
            );
            match client.send_notification(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    tracing::info!(
                        outbox_id = %message.outbox_id,
                        notification_id = %response.notification.map(|n| n.id).unwrap_or_default(),
                        duplicate = response.duplicate,
                        "sms handed to notify"
                    );
                    Ok(())
                }
                Err(status) => Err(format!(
                    "notify refused: {:?}: {}",
                    status.code(),
                    status.message()
                )),
            }
        })
    }
}

/// Delivers due rows every `interval` until `shutdown`; a failed round is logged and retried.
pub async fn run_delivery_loop(
    store: Store,
    sender: std::sync::Arc<dyn NotificationSender>,
    interval: Duration,
    shutdown: ShutdownSignal,
) {
    let (store, sender) = (&store, sender.as_ref());
    shlyuz_kit::task::every(interval, shutdown, || async move {
        match deliver_pending(store, sender, DELIVERY_BATCH).await {
            Ok(report) if report.sent + report.failed > 0 => tracing::info!(
                sent = report.sent,
                failed = report.failed,
                "outbox delivery round"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "outbox delivery round failed"),
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(language: &str) -> OutboxRow {
        OutboxRow {
            outbox_id: "0190f5a2-7c1e-7000-8000-00000000a001".into(),
            application_id: "0190f5a2-7c1e-7000-8000-00000000b001".into(),
            template_id: "intake.status.accepted".into(),
            recipient_iin: "980512391010".into(),
            phone_number: "+77011234567".into(),
            language: language.into(),
            parameters_json: r#"{"status_text":"Принято в работу"}"#.into(),
            attempts: 0,
        }
    }

    #[test]
    fn a_row_becomes_an_idempotent_sms_to_the_candidate() {
        let request = send_request(&row("kk")).expect("request");
        assert_eq!(
            request.idempotency_key,
            "0190f5a2-7c1e-7000-8000-00000000a001"
        );
        assert_eq!(request.recipient_iin, "980512391010");
        assert_eq!(
            request.recipient_phone, "",
            "notify takes the registry's phone"
        );
        assert_eq!(request.channels, [notify::Channel::Sms as i32]);
        assert_eq!(request.language, notify::Language::Kk as i32);
        assert_eq!(request.template_id, "intake.status.accepted");
        assert_eq!(
            request.parameters.get("status_text").map(String::as_str),
            Some("Принято в работу")
        );
        assert_eq!(
            send_request(&row("ru")).expect("request").language,
            notify::Language::Ru as i32
        );
        assert!(
            send_request(&row("en")).is_err(),
            "unknown language stays pending"
        );
    }

    /// Notify as the delivery round sees it: down while `down`, recording what it accepted.
    #[derive(Default)]
    struct Notify {
        down: std::sync::atomic::AtomicBool,
        accepted: std::sync::Mutex<Vec<String>>,
    }

    impl NotificationSender for Notify {
        fn send<'a>(&'a self, message: &'a OutboxRow) -> BoxFuture<'a, Result<(), String>> {
            let result = if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                Err("notify refused: Unavailable: connection refused".to_string())
            } else {
                self.accepted
                    .lock()
                    .map(|mut accepted| accepted.push(message.outbox_id.clone()))
                    .map_err(|_| "poisoned".to_string())
            };
            Box::pin(async move { result })
        }
    }

    shlyuz_kit::storage_test!(
        rows_wait_out_a_notify_outage_and_go_once,
        |database: shlyuz_kit::db::Database| async move {
            let clock = shlyuz_kit::clock::ManualClock::new(time::OffsetDateTime::now_utc());
            let (store, vacancy_id) =
                crate::store::tests::store_with_vacancy(database, clock.shared()).await;
            let mut applications = Vec::new();
            for candidate in ["980512391010", "971120391035"] {
                applications.push(
                    crate::store::tests::file(&store, &vacancy_id, candidate, "+77011234567", "kk")
                        .await
                        .application_id,
                );
            }
            let notify = Notify::default();
            notify.down.store(true, std::sync::atomic::Ordering::SeqCst);

            // Notify is down: every row fails and stays in the outbox, due again after the
            // back-off.
            let report = deliver_pending(&store, &notify, DELIVERY_BATCH)
                .await
                .expect("deliver");
            assert_eq!(report, DeliveryReport { sent: 0, failed: 2 });
            for application in &applications {
                let rows = store.outbox_of(application).await.expect("outbox");
                assert!(rows.iter().all(|row| row.attempts == 1), "{rows:?}");
            }
            notify
                .down
                .store(false, std::sync::atomic::Ordering::SeqCst);
            let report = deliver_pending(&store, &notify, DELIVERY_BATCH)
                .await
                .expect("deliver");
            assert_eq!(
                report,
                DeliveryReport::default(),
                "not due before the back-off"
            );

            // Notify is back: once the back-off has passed every row goes, and only once.
            clock.advance(time::Duration::seconds(6));
            let report = deliver_pending(&store, &notify, DELIVERY_BATCH)
                .await
                .expect("deliver");
            assert_eq!(report, DeliveryReport { sent: 2, failed: 0 });
            clock.advance(time::Duration::hours(1));
            let report = deliver_pending(&store, &notify, DELIVERY_BATCH)
                .await
                .expect("deliver");
            assert_eq!(
                report,
                DeliveryReport::default(),
                "sent rows are not sent again"
            );
            let mut expected = Vec::new();
            for application in &applications {
                let rows = store.outbox_of(application).await.expect("outbox");
                expected.extend(rows.into_iter().map(|row| row.outbox_id));
            }
            let mut accepted = notify.accepted.lock().expect("lock").clone();
            accepted.sort();
            expected.sort();
            assert_eq!(accepted, expected, "each row handed to notify once");
        }
    );

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay(0), Duration::from_secs(5));
        assert_eq!(retry_delay(3), Duration::from_secs(40));
        assert_eq!(retry_delay(100), MAX_RETRY);
    }
}
