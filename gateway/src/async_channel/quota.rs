//! The per-sender async quota: how many messages, and how many payload bytes, one sender may
//! have on delivery at once (`gateway.async_quota_messages`, `gateway.async_quota_bytes`), so no
//! participant can fill the gateway's database or starve the others' deliveries.
//!
//! Counting a sender's rows on every `SendMessage` would cost a scan per message; instead each
//! instance reads a sender's usage from the database at most once per [`REFRESH`] and adds what it
//! accepted since. Deliveries free room at the next read, so a full sender may be refused for up
//! to [`REFRESH`] after room was made; replicas each add only their own acceptances between reads,
//! so together they may overshoot by what they accept in one [`REFRESH`].

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use shlyuz_kit::db::Database;
use shlyuz_kit::error::ApiError;
use tonic::Code;

use super::store;

/// How long a sender's usage read from the database is trusted.
pub const REFRESH: Duration = Duration::from_secs(1);

/// `ErrorInfo` reason of a message refused for its sender's quota.
pub const ASYNC_QUOTA_EXCEEDED: &str = "ASYNC_QUOTA_EXCEEDED";

/// The limits of one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Messages on delivery.
    pub messages: u64,
    /// Payload bytes of those messages.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    read_at: Instant,
    messages: u64,
    bytes: u64,
}

/// Each sender's usage as this instance knows it.
#[derive(Default)]
pub struct SenderQuotas {
    usage: Mutex<HashMap<String, Usage>>,
    /// Held while usage is read from the database, so the calls that find it stale together
    /// wait for one read instead of each sending its own (a sum over every message in flight).
    refresh: tokio::sync::Mutex<()>,
}

impl SenderQuotas {
    fn usage(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Usage>> {
        self.usage.lock()
    }

    /// Whether `sender`'s usage was read from the database less than [`REFRESH`] ago.
    fn is_fresh(&self, sender: &str) -> bool {
        self.usage()
            .get(sender)
            .is_some_and(|usage| usage.read_at.elapsed() < REFRESH)
    }

    /// Takes room for one message of `payload_bytes` from `sender`'s quota, or refuses it with
    /// `RESOURCE_EXHAUSTED` / `ASYNC_QUOTA_EXCEEDED`.
    pub async fn reserve(
        &self,
        database: &Database,
        limits: QuotaLimits,
        sender: &str,
        payload_bytes: usize,
    ) -> Result<(), ApiError> {
        if !self.is_fresh(sender) {
            let _one_read = self.refresh.lock().await;
            if !self.is_fresh(sender) {
                let read_at = Instant::now();
                let (messages, bytes) = store::in_flight(database, sender)
                    .await
                    .map_err(ApiError::from)?;
                self.usage().insert(
                    sender.to_string(),
                    Usage {
                        read_at,
                        messages: u64::try_from(messages).unwrap_or(0),
                        bytes: u64::try_from(bytes).unwrap_or(0),
                    },
                );
            }
        }
        let payload_bytes = u64::try_from(payload_bytes).unwrap_or(u64::MAX);
        let mut all = self.usage();
        let Some(usage) = all.get_mut(sender) else {
            return Ok(());
        };
        if usage.messages >= limits.messages {
            return Err(exceeded(
                sender,
                format!("{} messages on delivery", limits.messages),
            ));
        }
        if usage.bytes.saturating_add(payload_bytes) > limits.bytes {
            return Err(exceeded(
                sender,
                format!("{} payload bytes on delivery", limits.bytes),
            ));
        }
        usage.messages += 1;
        usage.bytes = usage.bytes.saturating_add(payload_bytes);
        Ok(())
    }

    /// Gives back room taken by [`SenderQuotas::reserve`] for a message that was not stored
    /// (a duplicate, or a failed write).
    pub fn release(&self, sender: &str, payload_bytes: usize) {
        if let Some(usage) = self.usage().get_mut(sender) {
            usage.messages = usage.messages.saturating_sub(1);
            usage.bytes = usage
                .bytes
                .saturating_sub(u64::try_from(payload_bytes).unwrap_or(u64::MAX));
        }
    }
}

fn exceeded(sender: &str, limit: String) -> ApiError {
    ApiError::new(
        Code::ResourceExhausted,
        ASYNC_QUOTA_EXCEEDED,
        format!(
            "participant {sender} has its quota of {limit} in flight: send again once some are delivered"
        ),
    )
    .with_metadata("sender", sender)
}
