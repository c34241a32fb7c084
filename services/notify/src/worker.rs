//! The delivery worker: claims due rows of the SMS outbox, finds the phone when only an IIN was
//! given, hands the SMS to the provider, and retries with exponential backoff until the provider
//! takes it or the attempts run out (FAILED with the provider's reason).

use std::sync::Arc;

use futures::StreamExt as _;
use std::time::Duration;

use shlyuz_kit::backoff::Backoff;
use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::shutdown::ShutdownSignal;

use crate::phone::PhoneDirectory;
use crate::provider::{OutgoingSms, ProviderError, SmsProvider};
use crate::sms::normalize_phone;
use crate::store::{self, NotificationRow};

/// Failure reason when the mobile citizens database has no phone for the IIN.
pub const REASON_PHONE_NOT_FOUND: &str =
    "PHONE_NOT_FOUND: the mobile citizens database has no phone for the recipient IIN";

/// How the worker retries.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Attempts before a notice is FAILED.
    pub max_attempts: u32,
    /// Delay after the first failed attempt, ms; doubled after each further one.
    pub base_backoff_ms: u64,
    /// Longest delay between attempts, ms.
    pub max_backoff_ms: u64,
    /// How long a claim holds a row, ms; a worker that dies releases its rows after this.
    pub lease_ms: u64,
    /// Rows claimed at once.
    pub batch_size: u32,
    /// Rows of a batch handled at the same time (provider calls in flight per worker).
    pub concurrency: u32,
    /// Pause when the outbox is empty, ms.
    pub poll_interval_ms: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_backoff_ms: 2_000,
            max_backoff_ms: 300_000,
            lease_ms: 60_000,
            batch_size: 64,
            concurrency: 16,
            poll_interval_ms: 200,
        }
    }
}

impl DeliverySettings {
    /// Delay before the attempt after `attempts_made` failed ones.
    pub fn backoff_after(&self, attempts_made: i64) -> Duration {
        Backoff::new(
            Duration::from_millis(self.base_backoff_ms),
            Duration::from_millis(self.max_backoff_ms),
        )
        .delay(attempts_made)
    }
}

/// What one pass over the outbox did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Handed to the provider.
    pub sent: usize,
    /// Put back for another attempt.
    pub retried: usize,
    /// Given up.
    pub failed: usize,
}

impl PassReport {
    /// Rows handled.
    pub fn handled(&self) -> usize {
        self.sent + self.retried + self.failed
    }
}

/// The result of the look-up and the provider call for one claimed row.
struct Attempt {
    /// The phone found in the directory on this attempt.
    looked_up_phone: Option<String>,
    /// The phone used and the provider's message id, or why it failed.
    result: Result<(String, String), ProviderError>,
}

/// What became of one claimed row.
enum Outcome {
    Sent,
    Retried,
    Failed,
}

/// `notifications` grouped by recipient (IIN, else phone), each group in the given order, groups in
/// the order of their first notification.
fn by_recipient(notifications: Vec<NotificationRow>) -> Vec<Vec<NotificationRow>> {
    let mut groups: Vec<Vec<NotificationRow>> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for notification in notifications {
        let recipient = if notification.recipient_iin.is_empty() {
            format!("phone:{}", notification.recipient_phone)
        } else {
            format!("iin:{}", notification.recipient_iin)
        };
        match index.get(&recipient) {
            Some(&group) => groups[group].push(notification),
            None => {
                index.insert(recipient, groups.len());
                groups.push(vec![notification]);
            }
        }
    }
    groups
}

/// Delivers the SMS outbox.
#[derive(Clone)]
pub struct DeliveryWorker {
    database: Database,
    provider: Arc<dyn SmsProvider>,
    phones: Arc<dyn PhoneDirectory>,
    clock: SharedClock,
    settings: DeliverySettings,
    owner: String,
}

impl DeliveryWorker {
    /// A worker with a fresh owner id (its leases are its own).
    pub fn new(
        database: Database,
        provider: Arc<dyn SmsProvider>,
        phones: Arc<dyn PhoneDirectory>,
        clock: SharedClock,
        settings: DeliverySettings,
    ) -> Self {
        Self {
            database,
            provider,
            phones,
            clock,
            settings,
            owner: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Claims one batch of due rows and handles each.
    pub async fn run_once(&self) -> Result<PassReport, sqlx::Error> {
        let now_ms = self.clock.now_millis();
        let lease_until =
            now_ms.saturating_add(i64::try_from(self.settings.lease_ms).unwrap_or(i64::MAX));
        let claimed = store::claim_due(
            &self.database,
            &self.owner,
            now_ms,
            lease_until,
            i64::from(self.settings.batch_size),
        )
        .await?;
        // Phone look-ups and provider calls run `concurrency` recipients at a time, so a slow
        // provider cannot hold the batch past its lease; one recipient's SMS go one after another
        // in the order they fell due, so a candidate reads "filed" before "accepted". The results
        // are then written one by one, which keeps SQLite's single writer free of contention.
        let attempts: Vec<(NotificationRow, Attempt)> =
            futures::stream::iter(by_recipient(claimed))
                .map(|notifications| {
                    let worker = self.clone();
                    async move {
                        let mut attempts = Vec::with_capacity(notifications.len());
                        for notification in notifications {
                            let attempt = worker.attempt(&notification).await;
                            attempts.push((notification, attempt));
                        }
                        attempts
                    }
                })
                .buffer_unordered(self.settings.concurrency.max(1) as usize)
                .flat_map(futures::stream::iter)
                .collect()
                .await;
        let mut report = PassReport::default();
        // One transaction for the batch: one commit (one fsync on SQLite) per batch, not per SMS.
        // If it fails nothing is recorded and the rows come back after their lease.
        let mut transaction = self.database.pool().begin().await?;
        for (notification, attempt) in attempts {
            match self
                .record(&mut transaction, &notification, attempt)
                .await?
            {
                Outcome::Sent => report.sent += 1,
                Outcome::Retried => report.retried += 1,
                Outcome::Failed => report.failed += 1,
            }
        }
        transaction.commit().await?;
        Ok(report)
    }

    /// Runs until `shutdown`, pausing when the outbox is empty; database errors are logged and
    /// retried after the poll interval.
    pub async fn run(self, shutdown: ShutdownSignal) {
        let pause = Duration::from_millis(self.settings.poll_interval_ms);
        loop {
            if shutdown.is_triggered() {
                return;
            }
            let handled = match self.run_once().await {
                Ok(report) => report.handled(),
                Err(error) => {
                    tracing::warn!(error = %error, "sms outbox pass failed");
                    0
                }
            };
            if handled == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.clone().wait() => return,
                }
            }
        }
    }

    /// Finds the phone and hands the SMS to the provider; writes nothing.
    async fn attempt(&self, notification: &NotificationRow) -> Attempt {
        let (phone, looked_up) = match self.phone_of(notification).await {
            Ok(found) => found,
            Err(error) => {
                return Attempt {
                    looked_up_phone: None,
                    result: Err(error),
                };
            }
        };
        let sms = OutgoingSms {
            notification_id: notification.id.clone(),
            phone: phone.clone(),
            text: notification.text.clone(),
            segments: notification.sms_segments,
        };
        let result = self
            .provider
            .send(&sms)
            .await
            .map(|provider_message_id| (phone.clone(), provider_message_id));
        Attempt {
            looked_up_phone: looked_up.then_some(phone),
            result,
        }
    }

    /// Writes what an attempt did.
    async fn record(
        &self,
        transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
        notification: &NotificationRow,
        attempt: Attempt,
    ) -> Result<Outcome, sqlx::Error> {
        if let Some(phone) = &attempt.looked_up_phone {
            // Kept for the next attempt and for replies to the conversation, if any.
            store::set_phone_in(transaction, &notification.id, phone).await?;
        }
        match attempt.result {
            Ok((phone, provider_message_id)) => {
                let now_ms = self.clock.now_millis();
                if store::mark_sent_in(
                    transaction,
                    &notification.id,
                    &self.owner,
                    &phone,
                    &provider_message_id,
                    now_ms,
                )
                .await?
                {
                    tracing::debug!(notification = %notification.id, provider = self.provider.name(), "sms sent");
                } else {
                    tracing::warn!(notification = %notification.id, "sms sent after the claim was lost");
                }
                Ok(Outcome::Sent)
            }
            Err(error) => self.after_failure(transaction, notification, error).await,
        }
    }

    /// The phone to use and whether it was just looked up: the stored one, else the directory's.
    async fn phone_of(
        &self,
        notification: &NotificationRow,
    ) -> Result<(String, bool), ProviderError> {
        if !notification.recipient_phone.is_empty() {
            return Ok((notification.recipient_phone.clone(), false));
        }
        if notification.recipient_iin.is_empty() {
            return Err(ProviderError::Permanent(
                "NO_RECIPIENT: neither a phone nor an IIN".to_string(),
            ));
        }
        match self.phones.lookup(&notification.recipient_iin).await {
            Ok(Some(raw)) => match normalize_phone("phone", &raw) {
                Ok(phone) => Ok((phone, true)),
                Err(_) => Err(ProviderError::Permanent(format!(
                    "PHONE_INVALID: the mobile citizens database returned an unusable number {}",
                    crate::sms::mask_phone(&raw)
                ))),
            },
            Ok(None) => Err(ProviderError::Permanent(REASON_PHONE_NOT_FOUND.to_string())),
            Err(problem) => Err(ProviderError::Transient(problem)),
        }
    }

    async fn after_failure(
        &self,
        transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
        notification: &NotificationRow,
        error: ProviderError,
    ) -> Result<Outcome, sqlx::Error> {
        let now_ms = self.clock.now_millis();
        let final_reason = match &error {
            ProviderError::Permanent(reason) => Some(reason.clone()),
            ProviderError::Transient(reason)
                if notification.attempts >= i64::from(self.settings.max_attempts) =>
            {
                Some(format!(
                    "gave up after {} attempts: {reason}",
                    notification.attempts
                ))
            }
            ProviderError::Transient(_) => None,
        };
        match final_reason {
            Some(reason) => {
                tracing::warn!(notification = %notification.id, attempts = notification.attempts, reason = %reason, "sms failed");
                store::mark_failed_in(transaction, &notification.id, &self.owner, &reason, now_ms)
                    .await?;
                Ok(Outcome::Failed)
            }
            None => {
                let delay = self.settings.backoff_after(notification.attempts);
                let next_ms =
                    now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                tracing::info!(notification = %notification.id, attempts = notification.attempts, retry_in_ms = delay.as_millis() as u64, error = %error, "sms attempt failed, will retry");
                store::reschedule_in(
                    transaction,
                    &notification.id,
                    &self.owner,
                    next_ms,
                    &error.to_string(),
                )
                .await?;
                Ok(Outcome::Retried)
            }
        }
    }
}
