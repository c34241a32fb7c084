//! Delivery: claims due messages from the queue (several gateway instances share it), calls the
//! target method with the original envelope, logs every attempt in the message log, and ends each
//! message DELIVERED, NOT_DELIVERED (a permanent error) or DELIVERY_STOPPED (expired) — or
//! schedules another attempt with exponential backoff and jitter after a transient error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::shutdown::ShutdownSignal;
use tokio::sync::{Notify, Semaphore};
use tonic::Code;

use super::AsyncOptions;
use super::metrics::AsyncMetrics;
use super::store::{self, DELIVERED, Finish, MessageRow, NOT_DELIVERED};
use crate::directory::DirectoryHandle;
use crate::envelope;
use crate::message_log::{Channel, LogRecord, MessageLog, sha256};
use crate::upstream::{UnaryOutcome, Upstreams};

/// Codes worth another attempt; any other answer is final.
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted
    )
}

/// Everything the delivery loop works with.
pub struct Dispatcher {
    pub(super) database: Database,
    pub(super) directory: DirectoryHandle,
    pub(super) upstreams: Arc<Upstreams>,
    pub(super) message_log: MessageLog,
    pub(super) clock: SharedClock,
    pub(super) options: AsyncOptions,
    pub(super) metrics: AsyncMetrics,
    /// Woken when a message is accepted, so delivery starts without waiting for the next poll.
    pub(super) wake: Arc<Notify>,
    /// Woken when an inbox gains items.
    pub(super) inbox_changed: Arc<Notify>,
    /// This instance's claim name.
    pub(super) owner: String,
}

impl Dispatcher {
    /// Delivers until shutdown; in-flight deliveries finish (or their claim lapses) afterwards.
    pub async fn run(self: Arc<Self>, shutdown: ShutdownSignal) {
        let slots = Arc::new(Semaphore::new(self.options.delivery_concurrency.max(1)));
        let mut last_housekeeping = Instant::now() - Duration::from_secs(3600);
        loop {
            if shutdown.is_triggered() {
                break;
            }
            if last_housekeeping.elapsed() >= Duration::from_secs(1) {
                self.housekeeping().await;
                last_housekeeping = Instant::now();
            }
            let free = slots.available_permits();
            let mut claimed = Vec::new();
            if free > 0 {
                let now_ms = self.clock.now_millis();
                match store::claim_due(
                    &self.database,
                    &self.owner,
                    now_ms,
                    now_ms + self.lease_ms(),
                    free as i64,
                )
                .await
                {
                    Ok(rows) => claimed = rows,
                    Err(error) => tracing::warn!(error = %error, "cannot claim async messages"),
                }
            }
            let claimed_any = !claimed.is_empty();
            for message in claimed {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let dispatcher = self.clone();
                tokio::spawn(async move {
                    dispatcher.deliver(message).await;
                    drop(permit);
                });
            }
            if claimed_any && slots.available_permits() > 0 {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.options.poll_interval) => {}
                _ = shutdown.clone().wait() => break,
            }
        }
        // Let deliveries in flight finish, within the lease they hold.
        let _ = tokio::time::timeout(
            Duration::from_millis(self.lease_ms() as u64),
            slots.acquire_many(self.options.delivery_concurrency.max(1) as u32),
        )
        .await;
    }

    /// How long a claim holds: longer than any route's timeout, so a live instance never loses
    /// a message it is delivering.
    fn lease_ms(&self) -> i64 {
        let longest = self
            .directory
            .snapshot()
            .routes()
            .map(|route| route.timeout)
            .max()
            .unwrap_or(Duration::from_secs(10));
        i64::try_from((longest + self.options.lease_margin).as_millis()).unwrap_or(i64::MAX)
    }

    async fn housekeeping(&self) {
        let now_ms = self.clock.now_millis();
        match store::stop_expired(&self.database, &self.owner, now_ms, 500).await {
            Ok(stopped) => {
                for message in &stopped {
                    self.metrics.finished(store::DELIVERY_STOPPED);
                    self.log_attempt(
                        message,
                        Code::DeadlineExceeded,
                        "MESSAGE_EXPIRED",
                        None,
                        Duration::ZERO,
                    )
                    .await;
                }
                if !stopped.is_empty() {
                    self.inbox_changed.notify_waiters();
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot stop expired async messages"),
        }
        match store::queue_stats(&self.database).await {
            Ok((depth, oldest_ms)) => self
                .metrics
                .queue(depth, oldest_ms.map_or(0, |oldest| now_ms - oldest)),
            Err(error) => tracing::warn!(error = %error, "cannot read async queue statistics"),
        }
    }

    async fn deliver(&self, message: MessageRow) {
        let started = Instant::now();
        let outcome = self.attempt(&message).await;
        let elapsed = started.elapsed();
        self.metrics.attempt(outcome.code);
        let now_ms = self.clock.now_millis();
        let final_state = if outcome.code == Code::Ok {
            Some(DELIVERED)
        } else if is_transient(outcome.code) {
            None
        } else {
            Some(NOT_DELIVERED)
        };
        let reason = match final_state {
            Some(DELIVERED) => "",
            Some(_) => "UPSTREAM_REFUSED",
            None => "UPSTREAM_UNAVAILABLE",
        };
        self.log_attempt(
            &message,
            outcome.code,
            reason,
            outcome.response.as_deref(),
            elapsed,
        )
        .await;
        let stored = match final_state {
            Some(state) => {
                let finish = Finish {
                    state,
                    finished_ms: now_ms,
                    response_code: i64::from(outcome.code as i32),
                    response_message: outcome.message.clone(),
                    response_payload: outcome.response.map(|bytes| bytes.to_vec()),
                };
                let result = store::finish(&self.database, &message, &self.owner, &finish).await;
                if matches!(result, Ok(true)) {
                    self.metrics.finished(state);
                    self.inbox_changed.notify_waiters();
                }
                result.map(|_| ())
            }
            None => {
                let next_attempt_ms = now_ms + self.backoff_ms(message.attempts);
                let error = format!("{:?}: {}", outcome.code, outcome.message);
                store::reschedule(
                    &self.database,
                    &message.id,
                    &self.owner,
                    next_attempt_ms,
                    &error,
                )
                .await
            }
        };
        if let Err(error) = stored {
            // The claim lapses and the message is attempted again: receivers deduplicate by id.
            tracing::warn!(error = %error, message_id = %message.message_id, "cannot record an async delivery attempt");
        }
    }

    /// The wait before attempt `attempts + 1`: doubling from the initial backoff, capped, with
    /// 50–150 % jitter so that messages failed together do not retry together.
    fn backoff_ms(&self, attempts: i64) -> i64 {
        let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let base = self
            .options
            .retry_initial
            .saturating_mul(2_u32.saturating_pow(exponent))
            .min(self.options.retry_max);
        let jittered = base.mul_f64(rand::random_range(0.5..1.5));
        i64::try_from(jittered.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    async fn attempt(&self, message: &MessageRow) -> UnaryOutcome {
        let unavailable = |message: String| UnaryOutcome {
            code: Code::Unavailable,
            message,
            response: None,
        };
        let directory = self.directory.snapshot();
        let Some(route) = directory.route(&message.service) else {
            return UnaryOutcome {
                code: Code::Unimplemented,
                message: format!("no route for service {}", message.service),
                response: None,
            };
        };
        if route.is_local() {
            return UnaryOutcome {
                code: Code::InvalidArgument,
                message: "the gateway's own services cannot be called through the async channel"
                    .to_string(),
                response: None,
            };
        }
        let breaker = self.upstreams.breaker(&route.upstream);
        if !breaker.allow() {
            return unavailable(format!(
                "the circuit breaker for {} is open",
                route.upstream
            ));
        }
        let path = format!("/{}/{}", message.service, message.method);
        let timeout = route.timeout.min(Duration::from_millis(
            u64::try_from(message.expires_ms - self.clock.now_millis())
                .unwrap_or(0)
                .max(1),
        ));
        let outcome = self
            .upstreams
            .call_unary(
                route,
                &path,
                envelope_headers(message),
                &message.payload,
                timeout,
            )
            .await;
        if is_transient(outcome.code) {
            breaker.record_failure(route.breaker.failure_threshold, route.breaker.open_for);
        } else {
            breaker.record_success();
        }
        outcome
    }

    async fn log_attempt(
        &self,
        message: &MessageRow,
        code: Code,
        reason: &str,
        response: Option<&[u8]>,
        elapsed: Duration,
    ) {
        let (service, method) = if message.recipient.is_empty() {
            (message.service.clone(), message.method.clone())
        } else {
            (
                format!("participant:{}", message.recipient),
                message.payload_type.clone(),
            )
        };
        let record = LogRecord {
            time_ms: self.clock.now_millis(),
            message_id: message.message_id.clone(),
            correlation_id: message.correlation_id.clone(),
            sender: message.sender.clone(),
            user_id: message.user_id.clone(),
            service,
            method,
            purpose: message.purpose.clone(),
            subject_iin: message.subject_iin.clone(),
            request_hash: sha256(&message.payload),
            response_hash: response.map(sha256),
            status_code: code as i32,
            reason: reason.to_string(),
            duration_us: i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX),
            channel: Channel::Async,
            personal_data: message.personal_data,
            request_body: Some(message.payload.clone()),
            response_body: response.map(<[u8]>::to_vec),
        };
        if let Err(error) = self.message_log.append(record).await {
            tracing::error!(error = %error, message_id = %message.message_id, "async attempt not logged");
        }
    }

    /// Logs the hand-over of recipient messages acknowledged by their recipient.
    pub async fn log_acknowledged(&self, messages: &[MessageRow]) {
        for message in messages {
            self.metrics.finished(DELIVERED);
            self.log_attempt(message, Code::Ok, "", None, Duration::ZERO)
                .await;
        }
    }
}

/// The metadata the target sees: the sender's envelope (without its signature, which covered the
/// SendMessage call) and the gateway's statement of who sent it.
fn envelope_headers(message: &MessageRow) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if !value.is_empty()
            && let Ok(value) = HeaderValue::from_str(value)
        {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    put(envelope::MESSAGE_ID, &message.message_id);
    put(envelope::CORRELATION_ID, &message.correlation_id);
    put(envelope::USER_ID, &message.user_id);
    put(envelope::PURPOSE, &message.purpose);
    put(envelope::SUBJECT_IIN, &message.subject_iin);
    put(envelope::CONSENT_ID, &message.consent_id);
    put(envelope::SENDER, &message.sender);
    put(super::CHANNEL_HEADER, "async");
    headers
}
