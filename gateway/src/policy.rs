//! Per-call policy: the access decision shared by the sync and async channels, and the state
//! behind it — quotas (token buckets per participant) and replay refusal (message ids per sender
//! within the replay window). Circuit breakers (per upstream) are the kit's, kept in
//! [`crate::upstream::Upstreams`].

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use shlyuz_kit::error::{ApiError, FieldViolation};

use crate::directory::{AccessRule, Directory, Route};
use crate::envelope;

/// The access rule under which `sender` may call `service`/`method` on `route` with the envelope's
/// `purpose` and `subject_iin`: a rule must exist (`ACCESS_DENIED`), a personal-data route needs
/// both fields (`INVALID_ARGUMENT` naming them), and the purpose must be one the rule allows
/// (`PURPOSE_NOT_ALLOWED`). Consent, where the rule asks for it, is checked separately.
pub fn access_rule<'d>(
    directory: &'d Directory,
    route: &Route,
    sender: &str,
    service: &str,
    method: &str,
    purpose: &str,
    subject_iin: &str,
) -> Result<&'d AccessRule, ApiError> {
    let Some(rule) = directory.rule(sender, service, method) else {
        return Err(ApiError::permission_denied(
            "ACCESS_DENIED",
            format!("participant {sender} may not call {service}/{method}"),
        ));
    };
    if route.personal_data {
        let missing: Vec<FieldViolation> = [
            (envelope::PURPOSE, purpose),
            (envelope::SUBJECT_IIN, subject_iin),
        ]
        .into_iter()
        .filter(|(_, value)| value.is_empty())
        .map(|(field, _)| FieldViolation {
            field: field.to_string(),
            description: "is required for personal-data services".to_string(),
        })
        .collect();
        if !missing.is_empty() {
            return Err(ApiError::invalid_fields(missing));
        }
    }
    if !purpose.is_empty() && !rule.purposes.is_empty() && !rule.purposes.contains(purpose) {
        return Err(ApiError::permission_denied(
            "PURPOSE_NOT_ALLOWED",
            format!("purpose {purpose} is not allowed for {sender} on {service}/{method}"),
        ));
    }
    Ok(rule)
}

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// Token buckets keyed by participant id.
#[derive(Default)]
pub struct QuotaBuckets {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl QuotaBuckets {
    /// Takes one token from `participant`'s bucket; `Err(wait)` says when one will be available.
    pub fn try_acquire(
        &self,
        participant: &str,
        rate_per_second: f64,
        burst: u32,
    ) -> Result<(), Duration> {
        let now = Instant::now();
        let capacity = f64::from(burst.max(1));
        let mut buckets = self.buckets.lock();
        let bucket = match buckets.get_mut(participant) {
            Some(bucket) => bucket,
            None => buckets.entry(participant.to_string()).or_insert(Bucket {
                tokens: capacity,
                refilled_at: now,
            }),
        };
        let elapsed = now.duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate_per_second).min(capacity);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - bucket.tokens;
        Err(Duration::from_secs_f64(
            missing / rate_per_second.max(f64::MIN_POSITIVE),
        ))
    }
}

const REPLAY_SHARDS: usize = 32;

/// Remembers `(sender, message id)` pairs for the replay window; sharded so concurrent calls
/// rarely contend for one lock. A message id is a UUID, kept as its 128-bit value (24 bytes per
/// remembered message with its expiry), so a window of a million calls stays within tens of MiB.
pub struct ReplayGuard {
    shards: Vec<Mutex<ReplayShard>>,
}

#[derive(Default)]
struct ReplayShard {
    /// Per sender: message id → when the memory of it may be dropped (epoch ms).
    seen: HashMap<String, HashMap<u128, i64>>,
    next_purge_ms: i64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self {
            shards: (0..REPLAY_SHARDS)
                .map(|_| Mutex::new(ReplayShard::default()))
                .collect(),
        }
    }
}

/// The id as a number; an id that is not a UUID (the envelope check refuses those first) is
/// hashed instead, so the guard never fails open.
fn message_key(message_id: &str) -> u128 {
    match uuid::Uuid::try_parse(message_id) {
        Ok(uuid) => uuid.as_u128(),
        Err(_) => {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            message_id.hash(&mut hasher);
            u128::from(hasher.finish())
        }
    }
}

impl ReplayGuard {
    fn shard(&self, message_key: u128) -> parking_lot::MutexGuard<'_, ReplayShard> {
        // UUIDv7 ids start with a timestamp: take the shard from the random low bits.
        self.shards[(message_key as usize) % REPLAY_SHARDS].lock()
    }

    /// Records the pair; `false` when it was already seen and has not expired (a replay).
    /// `expires_at_ms` is when the message would be refused by the timestamp check anyway.
    pub fn first_sighting(
        &self,
        sender: &str,
        message_id: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> bool {
        let key = message_key(message_id);
        let mut shard = self.shard(key);
        if now_ms >= shard.next_purge_ms {
            shard.seen.retain(|_, messages| {
                messages.retain(|_, expiry| *expiry > now_ms);
                !messages.is_empty()
            });
            shard.next_purge_ms = now_ms + 10_000;
        }
        let messages = match shard.seen.get_mut(sender) {
            Some(messages) => messages,
            None => shard.seen.entry(sender.to_string()).or_default(),
        };
        match messages.get(&key) {
            Some(expiry) if *expiry > now_ms => false,
            _ => {
                messages.insert(key, expires_at_ms);
                true
            }
        }
    }

    /// Forgets a pair, so a call refused before reaching the upstream may be sent again.
    pub fn forget(&self, sender: &str, message_id: &str) {
        let key = message_key(message_id);
        if let Some(messages) = self.shard(key).seen.get_mut(sender) {
            messages.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refuses_with_wait() {
        let buckets = QuotaBuckets::default();
        for _ in 0..3 {
            assert!(buckets.try_acquire("a", 1.0, 3).is_ok());
        }
        let wait = buckets.try_acquire("a", 1.0, 3).expect_err("empty bucket");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            buckets.try_acquire("b", 1.0, 3).is_ok(),
            "buckets are per participant"
        );
    }

    #[test]
    fn replay_is_refused_until_expiry() {
        let guard = ReplayGuard::default();
        let m1 = "0191f5a0-3c1e-7b3a-9a52-5d0b5e0f6c11";
        assert!(guard.first_sighting("a", m1, 1_000, 2_000));
        assert!(!guard.first_sighting("a", m1, 1_500, 2_500));
        assert!(
            guard.first_sighting("b", m1, 1_500, 2_500),
            "another sender may use the id"
        );
        assert!(
            guard.first_sighting("a", m1, 2_001, 3_000),
            "after expiry the timestamp check refuses instead"
        );
        guard.forget("a", m1);
        assert!(guard.first_sighting("a", m1, 2_002, 3_000));
        assert!(guard.first_sighting("a", "not-a-uuid", 2_002, 3_000));
        assert!(
            !guard.first_sighting("a", "not-a-uuid", 2_003, 3_000),
            "other ids are remembered too"
        );
    }
}
