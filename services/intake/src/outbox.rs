//! Delivery of the notification outbox. Transitions write the rows (store.rs); a sender hands
//! them to notify through the gateway. The notify-backed sender is wired when notify lands; until
//! then rows wait, none is lost.

use std::time::Duration;

use futures::future::BoxFuture;
use shlyuz_kit::error::ApiError;

use crate::store::{OutboxRow, Store};

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
    let exponent = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    FIRST_RETRY
        .saturating_mul(2_u32.saturating_pow(exponent))
        .min(MAX_RETRY)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay(0), Duration::from_secs(5));
        assert_eq!(retry_delay(3), Duration::from_secs(40));
        assert_eq!(retry_delay(100), MAX_RETRY);
    }
}
