//! Intake's notification outbox on the kit's relay ([`shlyuz_kit::outbox`]). Transitions write
//! the rows (store.rs); the store is the relay's [`OutboxStore`], every row a status SMS to the
//! candidate. A failed row, refused or not, waits out its back-off while the rows after it go on;
//! without a gateway rows wait, none is lost.

use std::collections::HashMap;
use std::time::Duration;

use shlyuz_kit::backoff::Backoff;
use shlyuz_kit::outbox::{DeliveryFailure, Notification, OnFailure, OutboxStore, RelayPolicy};
#[cfg(test)]
use shlyuz_kit::outbox::{OutboxSink, relay_pass};
use shlyuz_proto::notify::v1 as notify;

use crate::store::{OutboxRow, Store, StoreError};

pub use shlyuz_kit::outbox::NotifySender;

/// Rows handed to notify per round.
pub const DELIVERY_BATCH: usize = 50;

/// First retry delay; doubles per attempt.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);

/// How intake relays: one batch a round, every failure (a refusal too) retried after its
/// back-off, the rows after it going on.
pub const RELAY_POLICY: RelayPolicy = RelayPolicy {
    page_size: DELIVERY_BATCH,
    drain: false,
    on_failure: OnFailure::RetryLater(Backoff::new(FIRST_RETRY, MAX_RETRY)),
    park_refusals: false,
};

#[cfg(test)]
/// The delay before attempt `attempts + 1`.
pub fn retry_delay(attempts: i64) -> Duration {
    Backoff::new(FIRST_RETRY, MAX_RETRY).delay(attempts.saturating_add(1))
}

/// The `SendNotification` request for one outbox row: to the candidate's IIN (notify asks the
/// mobile citizens database for the phone), idempotent on the outbox id.
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

impl shlyuz_kit::outbox::OutboxRow for OutboxRow {
    fn outbox_id(&self) -> &str {
        &self.outbox_id
    }

    fn template_id(&self) -> &str {
        &self.template_id
    }

    fn failed_attempts(&self) -> i64 {
        self.attempts
    }

    fn notification(&self) -> Result<Notification, DeliveryFailure> {
        Ok(Notification {
            subject_iin: self.recipient_iin.clone(),
            correlation_id: String::new(),
            request: send_request(self).map_err(DeliveryFailure::Transient)?,
        })
    }
}

impl OutboxStore for Store {
    type Row = OutboxRow;
    type Error = StoreError;

    async fn due(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.pending_outbox(limit).await
    }

    async fn mark_sent(&self, row: &OutboxRow) -> Result<(), StoreError> {
        Store::mark_sent(self, &row.outbox_id).await
    }

    async fn mark_failed(
        &self,
        row: &OutboxRow,
        reason: &str,
        retry_at_ms: i64,
    ) -> Result<(), StoreError> {
        Store::mark_failed(self, &row.outbox_id, reason, retry_at_ms).await
    }

    async fn park(&self, row: &OutboxRow, refusal: &str) -> Result<(), StoreError> {
        // RELAY_POLICY parks nothing (`park_refusals: false`): a refusal waits out its back-off
        // like any failure. Were it asked to, the row stays due rather than being dropped.
        tracing::error!(
            outbox_id = %row.outbox_id,
            refusal,
            "intake's outbox parks no row; it stays due"
        );
        Ok(())
    }

    fn now_ms(&self) -> i64 {
        Store::now_ms(self)
    }
}

#[cfg(test)]
/// What one delivery round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Delivered.
    pub sent: usize,
    /// Failed, rescheduled.
    pub failed: usize,
}

#[cfg(test)]
/// Sends up to `limit` due rows, oldest first: one round of the relay.
pub async fn deliver_pending<K: OutboxSink<OutboxRow>>(
    store: &Store,
    sender: &K,
    limit: usize,
) -> Result<DeliveryReport, StoreError> {
    let policy = RelayPolicy {
        page_size: limit,
        ..RELAY_POLICY
    };
    let report = relay_pass(store, sender, &policy, None).await?;
    Ok(DeliveryReport {
        sent: report.sent,
        failed: report.failed,
    })
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

    impl OutboxSink<OutboxRow> for Notify {
        async fn deliver(&self, message: &OutboxRow) -> Result<(), DeliveryFailure> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(DeliveryFailure::Transient(
                    "notify refused: Unavailable: connection refused".to_string(),
                ));
            }
            self.accepted
                .lock()
                .expect("not poisoned")
                .push(message.outbox_id.clone());
            Ok(())
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
