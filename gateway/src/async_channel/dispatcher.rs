//! Delivery: claims due messages from the queue (several gateway instances share it), each for
//! its own route's timeout plus a margin, re-checks at delivery what was checked at send time,
//! calls the target method with the original envelope, logs every attempt in the message log, and
//! ends each message DELIVERED, NOT_DELIVERED (a permanent error) or DELIVERY_STOPPED (expired, or
//! no longer allowed) — or schedules another attempt with exponential backoff and jitter after a
//! transient error. No final state is recorded before its message-log entry is durable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use shlyuz_kit::backoff::Backoff;
use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::shutdown::ShutdownSignal;
use tokio::sync::{Notify, Semaphore};
use tonic::Code;

use super::AsyncOptions;
use super::metrics::AsyncMetrics;
use shlyuz_kit::error::ApiError;

use super::store::{
    self, ClaimLeases, DELIVERED, DELIVERY_STOPPED, Finish, MessageRow, NOT_DELIVERED,
};
use crate::consent::{ConsentChecker, ConsentQuery};
use crate::directory::{Directory, DirectoryHandle, Route};
use crate::envelope;
use crate::message_log::{Channel, LogRecord, MessageLog, MessageLogError, sha256};
use crate::upstream::{UnaryOutcome, Upstreams};
use shlyuz_kit::error::reasons;

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
    /// Consents are checked again at delivery.
    pub(super) consent: Arc<dyn ConsentChecker>,
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

/// What one delivery attempt came to, before it is recorded.
struct Conclusion {
    /// `None`: another attempt later.
    final_state: Option<&'static str>,
    code: Code,
    /// `ErrorInfo`-style reason (empty when delivered).
    reason: String,
    message: String,
    response: Option<Vec<u8>>,
}

/// The reason recorded when an attempt's entry could not be written: the attempt is repeated.
const MESSAGE_LOG_UNAVAILABLE: &str = "MESSAGE_LOG_UNAVAILABLE";

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
            if free > 0 && self.options.deliver {
                let now_ms = self.clock.now_millis();
                let leases = self.claim_leases(now_ms);
                match store::claim_due(&self.database, &self.owner, now_ms, &leases, free as i64)
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
        // Let deliveries in flight finish, within the longest claim they can hold.
        let longest = self
            .directory
            .snapshot()
            .routes()
            .map(|route| route.timeout)
            .max()
            .unwrap_or_default();
        let _ = tokio::time::timeout(
            longest + self.options.lease_margin,
            slots.acquire_many(self.options.delivery_concurrency.max(1) as u32),
        )
        .await;
    }

    /// How long a claim on a message for a route with `timeout` holds: the route's timeout plus
    /// the margin, so a live instance never loses a message it is delivering (the claim is
    /// extended while the delivery runs) and a crashed one's messages are due again soon.
    fn lease(&self, timeout: Duration) -> Duration {
        timeout + self.options.lease_margin
    }

    /// The claim of every routed service from `now_ms`; a message without a route is claimed for
    /// the margin only (it is stopped at once).
    fn claim_leases(&self, now_ms: i64) -> ClaimLeases {
        let directory = self.directory.snapshot();
        ClaimLeases {
            by_service: directory
                .routes()
                .filter(|route| !route.is_local())
                .map(|route| {
                    (
                        route.service.clone(),
                        now_ms.saturating_add(millis(self.lease(route.timeout))),
                    )
                })
                .collect(),
            otherwise_until_ms: now_ms.saturating_add(millis(self.options.lease_margin)),
        }
    }

    async fn housekeeping(&self) {
        let now_ms = self.clock.now_millis();
        match store::stop_expired(
            &self.database,
            &self.owner,
            now_ms,
            500,
            self.options.keep_payloads,
        )
        .await
        {
            Ok(stopped) => {
                for message in &stopped {
                    self.metrics.finished(store::DELIVERY_STOPPED);
                    if let Err(error) = self
                        .log_attempt(
                            message,
                            Code::DeadlineExceeded,
                            "MESSAGE_EXPIRED",
                            None,
                            Duration::ZERO,
                        )
                        .await
                    {
                        tracing::error!(error = %error, message_id = %message.message_id, "async expiry not logged");
                    }
                }
                if !stopped.is_empty() {
                    self.inbox_changed.notify_waiters();
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot stop expired async messages"),
        }
        let retained_from_ms = now_ms.saturating_sub(millis(self.options.retention));
        if let Err(error) =
            store::delete_finished_before(&self.database, retained_from_ms, 500).await
        {
            tracing::warn!(error = %error, "cannot delete async messages past their retention");
        }
        match store::queue_stats(&self.database).await {
            Ok((depth, oldest_ms)) => self
                .metrics
                .queue(depth, oldest_ms.map_or(0, |oldest| now_ms - oldest)),
            Err(error) => tracing::warn!(error = %error, "cannot read async queue statistics"),
        }
    }

    async fn deliver(&self, message: MessageRow) {
        let lease = self
            .directory
            .snapshot()
            .route(&message.service)
            .map_or(self.options.lease_margin, |route| self.lease(route.timeout));
        let conclusion = self
            .holding_claim(&message, lease, self.attempt_and_log(&message))
            .await;
        let now_ms = self.clock.now_millis();
        let stored = match conclusion.final_state {
            Some(state) => {
                let finish = Finish {
                    state,
                    finished_ms: now_ms,
                    response_code: i64::from(conclusion.code as i32),
                    response_message: conclusion.message.clone(),
                    response_payload: conclusion.response,
                    reason: conclusion.reason.clone(),
                    keep_payload: self.options.keep_payloads,
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
                let error = if conclusion.reason == MESSAGE_LOG_UNAVAILABLE {
                    format!("{MESSAGE_LOG_UNAVAILABLE}: {}", conclusion.message)
                } else if conclusion.reason != reasons::UPSTREAM_UNAVAILABLE
                    && !conclusion.reason.is_empty()
                {
                    format!(
                        "{:?} {}: {}",
                        conclusion.code, conclusion.reason, conclusion.message
                    )
                } else {
                    format!("{:?}: {}", conclusion.code, conclusion.message)
                };
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

    /// Runs `work` while extending the claim on `message` every half `lease`, so that a slow
    /// upstream (or a slow log write) never lets another instance deliver it a second time.
    async fn holding_claim<T>(
        &self,
        message: &MessageRow,
        lease: Duration,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let every = (lease / 2).max(Duration::from_millis(10));
        let mut renewal = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = renewal.tick() => {
                    let until_ms = self.clock.now_millis().saturating_add(millis(lease));
                    match store::extend_claim(&self.database, &message.id, &self.owner, until_ms).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(message_id = %message.message_id, "async delivery claim lost while delivering"),
                        Err(error) => tracing::warn!(error = %error, message_id = %message.message_id, "cannot extend an async delivery claim"),
                    }
                }
            }
        }
    }

    /// Re-checks the message, attempts it and writes its entry; a conclusion whose entry could not
    /// be written is never final.
    async fn attempt_and_log(&self, message: &MessageRow) -> Conclusion {
        let started = Instant::now();
        let conclusion = match self.still_allowed(message).await {
            Err(refusal) if is_transient(refusal.code()) => Conclusion {
                final_state: None,
                code: refusal.code(),
                reason: refusal.reason().to_string(),
                message: refusal.message().to_string(),
                response: None,
            },
            Err(refusal) => Conclusion {
                final_state: Some(DELIVERY_STOPPED),
                code: refusal.code(),
                reason: refusal.reason().to_string(),
                message: refusal.message().to_string(),
                response: None,
            },
            Ok(route) => {
                let outcome = self.attempt(message, &route).await;
                self.metrics.attempt(outcome.code);
                // The code decides whether the message is attempted again; the reason is the
                // target's own when it gave one, else what the gateway makes of the code.
                let (final_state, gateway_reason) = if outcome.code == Code::Ok {
                    (Some(DELIVERED), "")
                } else if is_transient(outcome.code) {
                    (None, reasons::UPSTREAM_UNAVAILABLE)
                } else {
                    (Some(NOT_DELIVERED), reasons::UPSTREAM_REFUSED)
                };
                let reason = if outcome.reason.is_empty() {
                    gateway_reason.to_string()
                } else {
                    outcome.reason
                };
                Conclusion {
                    final_state,
                    code: outcome.code,
                    reason,
                    message: outcome.message,
                    response: outcome.response.map(|bytes| bytes.to_vec()),
                }
            }
        };
        let logged = self
            .log_attempt(
                message,
                conclusion.code,
                &conclusion.reason,
                conclusion.response.as_deref(),
                started.elapsed(),
            )
            .await;
        match logged {
            Ok(()) => conclusion,
            Err(error) => {
                tracing::error!(error = %error, message_id = %message.message_id, "async attempt not logged: it is attempted again");
                Conclusion {
                    final_state: None,
                    code: Code::Unavailable,
                    reason: MESSAGE_LOG_UNAVAILABLE.to_string(),
                    message: error.to_string(),
                    response: None,
                }
            }
        }
    }

    /// What `SendMessage` checked, checked again against today's directory and consents: the
    /// sender still registered, the route and the rule still there, the consent still active.
    async fn still_allowed(&self, message: &MessageRow) -> Result<Route, ApiError> {
        let directory = self.directory.snapshot();
        let route = allowed_route(&directory, message)?;
        let rule = crate::policy::access_rule(
            &directory,
            route,
            &message.sender,
            &message.service,
            &message.method,
            &message.purpose,
            &message.subject_iin,
        )?;
        if rule.consent_required {
            let query = ConsentQuery {
                participant: &message.sender,
                subject_iin: &message.subject_iin,
                purpose: &message.purpose,
                consent_id: &message.consent_id,
                now_ms: self.clock.now_millis(),
            };
            crate::consent::require_consent(self.consent.as_ref(), query).await?;
        }
        Ok(route.clone())
    }

    /// The wait before attempt `attempts + 1`: doubling from the initial backoff, capped, with
    /// 50–150 % jitter so that messages failed together do not retry together.
    fn backoff_ms(&self, attempts: i64) -> i64 {
        let jittered = Backoff::new(self.options.retry_initial, self.options.retry_max)
            .with_jitter_percent(50..150)
            .delay(attempts);
        i64::try_from(jittered.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    async fn attempt(&self, message: &MessageRow, route: &Route) -> UnaryOutcome {
        let breaker = self.upstreams.breaker(&route.upstream);
        let Ok(permit) = breaker.admit(&route.breaker) else {
            return UnaryOutcome {
                code: Code::Unavailable,
                message: format!("the circuit breaker for {} is open", route.upstream),
                reason: String::new(),
                hop_failed: true,
                response: None,
            };
        };
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
        // Only the hop's own failures count: a target that answered, whatever it said, is up.
        if outcome.hop_failed {
            permit.failed();
        } else {
            permit.succeeded();
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
    ) -> Result<(), MessageLogError> {
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
        self.message_log.append(record).await.map(|_| ())
    }

    /// Acknowledges `participant`'s inbox items. The hand-over of each recipient message this
    /// delivers is logged first: when an entry cannot be written nothing is acknowledged and the
    /// caller gets `UNAVAILABLE` `MESSAGE_LOG_UNAVAILABLE`, so no delivery is final without its
    /// entry. Returns how many items were acknowledged.
    pub async fn acknowledge(
        &self,
        participant: &str,
        item_ids: &[String],
    ) -> Result<usize, ApiError> {
        let deliverable =
            store::deliverable_by_acknowledgement(&self.database, participant, item_ids).await?;
        for message in &deliverable {
            if let Err(error) = self
                .log_attempt(message, Code::Ok, "", None, Duration::ZERO)
                .await
            {
                tracing::error!(error = %error, message_id = %message.message_id, "async acknowledgement not logged: nothing acknowledged");
                return Err(ApiError::unavailable(
                    MESSAGE_LOG_UNAVAILABLE,
                    "the gateway could not record the delivery in its message log",
                ));
            }
        }
        let (acknowledged, delivered) = store::acknowledge(
            &self.database,
            participant,
            item_ids,
            self.clock.now_millis(),
            self.options.keep_payloads,
        )
        .await?;
        for _ in &delivered {
            self.metrics.finished(DELIVERED);
        }
        Ok(acknowledged)
    }
}

/// The route of a service message, or why it can no longer be delivered: its sender or its
/// route removed from the directory, or the route made local.
fn allowed_route<'d>(
    directory: &'d Directory,
    message: &MessageRow,
) -> Result<&'d Route, ApiError> {
    if directory.participant(&message.sender).is_none() {
        return Err(ApiError::permission_denied(
            reasons::UNKNOWN_PARTICIPANT,
            format!(
                "participant {} is no longer registered with the gateway",
                message.sender
            ),
        ));
    }
    let Some(route) = directory.route(&message.service) else {
        return Err(ApiError::new(
            Code::Unimplemented,
            "UNKNOWN_SERVICE",
            format!("no route for service {}", message.service),
        ));
    };
    if route.is_local() {
        return Err(ApiError::invalid_field(
            "service.service",
            "the gateway's own services cannot be called through the async channel",
        ));
    }
    if !route.methods.contains(&message.method) {
        return Err(ApiError::new(
            Code::Unimplemented,
            "UNKNOWN_METHOD",
            format!(
                "{} has no method {} routed",
                message.service, message.method
            ),
        ));
    }
    Ok(route)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
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
