//! The one transactional outbox relay to notify. A service writes its notices into its own outbox
//! table in the transaction of the decision they announce; its store implements [`OutboxStore`]
//! over that table, and [`run_relay`] hands the due rows, oldest first, to
//! `NotificationService.SendNotification` through the gateway ([`NotifySender`]). Delivery is
//! at-least-once: the idempotency key is the row id, so a row resent after a lost answer (or a
//! crash between sending and marking) is one notice.

use std::future::Future;
use std::time::Duration;

use shlyuz_proto::notify::v1 as notify;

use crate::backoff::Backoff;
use crate::envelope::EnvelopeBuilder;
use crate::gateway_client::GatewayClient;
use crate::purpose::CITIZEN_NOTIFICATION;
use crate::shutdown::ShutdownSignal;

/// What one outbox row asks notify for.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The envelope's subject: the person the notice is about.
    pub subject_iin: String,
    /// The envelope's correlation id, or empty.
    pub correlation_id: String,
    /// The request; its idempotency key is set to the row id when sent.
    pub request: notify::SendNotificationRequest,
}

/// Why a row was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// It may go through later: notify or the gateway unreachable, overloaded, or failing.
    Transient(String),
    /// Refused for good: notify will never take this row as it is.
    Refused(String),
}

impl DeliveryFailure {
    /// The reason, as stored and logged.
    pub fn reason(&self) -> &str {
        match self {
            Self::Transient(reason) | Self::Refused(reason) => reason,
        }
    }

    /// The failure for notify's answer `status`: a refusal of the request itself (invalid, a
    /// precondition that will not change, not allowed) is for good, anything else is transient.
    pub fn of_status(status: &tonic::Status) -> Self {
        let reason = format!("notify refused: {:?}: {}", status.code(), status.message());
        match status.code() {
            tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::PermissionDenied => Self::Refused(reason),
            _ => Self::Transient(reason),
        }
    }
}

/// One row of a service's outbox.
pub trait OutboxRow: Send + Sync {
    /// The row id: the idempotency key at notify.
    fn outbox_id(&self) -> &str;
    /// The notify template, for the logs.
    fn template_id(&self) -> &str;
    /// Failed deliveries so far, for the back-off (stores that do not count them keep 0).
    fn failed_attempts(&self) -> i64 {
        0
    }
    /// The notification to send; `Err` when the row cannot become one.
    fn notification(&self) -> Result<Notification, DeliveryFailure>;
}

/// A service's outbox table, with its own SQL.
pub trait OutboxStore: Send + Sync {
    /// A row.
    type Row: OutboxRow;
    /// Why the store failed (the service's own storage error; the relay only logs it).
    type Error: std::fmt::Display + Send;
    /// Unsent rows due now, oldest first, at most `limit` (parked rows excluded).
    fn due(&self, limit: usize)
    -> impl Future<Output = Result<Vec<Self::Row>, Self::Error>> + Send;
    /// Marks `row` sent.
    fn mark_sent(&self, row: &Self::Row) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Records a failed delivery of `row` and when it is due again (epoch ms UTC).
    fn mark_failed(
        &self,
        row: &Self::Row,
        reason: &str,
        retry_at_ms: i64,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Parks `row`, refused for good with `refusal`: it is not tried again.
    fn park(
        &self,
        row: &Self::Row,
        refusal: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Now, epoch ms UTC, on the store's clock.
    fn now_ms(&self) -> i64;
}

/// A shared store is the store (the relay task and the service hold the same one).
impl<T: OutboxStore> OutboxStore for std::sync::Arc<T> {
    type Row = T::Row;
    type Error = T::Error;

    fn due(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Self::Row>, Self::Error>> + Send {
        T::due(self, limit)
    }

    fn mark_sent(&self, row: &Self::Row) -> impl Future<Output = Result<(), Self::Error>> + Send {
        T::mark_sent(self, row)
    }

    fn mark_failed(
        &self,
        row: &Self::Row,
        reason: &str,
        retry_at_ms: i64,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        T::mark_failed(self, row, reason, retry_at_ms)
    }

    fn park(
        &self,
        row: &Self::Row,
        refusal: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        T::park(self, row, refusal)
    }

    fn now_ms(&self) -> i64 {
        T::now_ms(self)
    }
}

/// Hands one outbox row over: [`NotifySender`], or a test double.
pub trait OutboxSink<R>: Send + Sync {
    /// Delivers `row`; must be idempotent on its id.
    fn deliver(&self, row: &R) -> impl Future<Output = Result<(), DeliveryFailure>> + Send;
}

/// Sends outbox rows to `NotificationService.SendNotification` through the gateway, signed as
/// the gateway client's participant with purpose `CITIZEN_NOTIFICATION`, the row's person as the
/// envelope's subject, and the row id as idempotency key.
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

impl<R: OutboxRow> OutboxSink<R> for NotifySender {
    async fn deliver(&self, row: &R) -> Result<(), DeliveryFailure> {
        let Notification {
            subject_iin,
            correlation_id,
            mut request,
        } = row.notification()?;
        request.idempotency_key = row.outbox_id().to_string();
        let envelope = EnvelopeBuilder {
            purpose: CITIZEN_NOTIFICATION.to_string(),
            subject_iin,
            correlation_id,
            ..EnvelopeBuilder::default()
        };
        let mut client = notify::notification_service_client::NotificationServiceClient::new(
            self.gateway.signed_channel(),
        );
        let response = client
            .send_notification(crate::gateway_client::with_envelope(envelope, request))
            .await
            .map_err(|status| DeliveryFailure::of_status(&status))?
            .into_inner();
        tracing::info!(
            outbox_id = %row.outbox_id(),
            notification_id = %response.notification.map(|notice| notice.id).unwrap_or_default(),
            duplicate = response.duplicate,
            "notice handed to notify"
        );
        Ok(())
    }
}

/// What the relay does with a row that failed (transiently, or refused where refusals do not park).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OnFailure {
    /// Record the failure, make the row due again after `Backoff::delay(attempts)`, and go on
    /// with the rows after it.
    RetryLater(Backoff),
    /// Stop the pass: the row and the ones after it are tried again, in order, on the next pass.
    StopPass,
}

/// How a service relays its outbox.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelayPolicy {
    /// Rows fetched at a time.
    pub page_size: usize,
    /// Whether a pass fetches the next page after a full one (else one page per pass).
    pub drain: bool,
    /// What a failed row does.
    pub on_failure: OnFailure,
    /// Whether a refusal for good parks the row (else it fails like a transient one).
    pub park_refusals: bool,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Delivered.
    pub sent: usize,
    /// Failed and left for later.
    pub failed: usize,
    /// Refused for good and parked.
    pub parked: usize,
}

/// One pass over the due rows of `store` through `sink`. With `shutdown`, a pass stops after the
/// row in flight once it fires; what is left waits for the next start. A store error ends the
/// pass (the row stays due: at-least-once).
pub async fn relay_pass<S, K>(
    store: &S,
    sink: &K,
    policy: &RelayPolicy,
    shutdown: Option<&ShutdownSignal>,
) -> Result<PassReport, S::Error>
where
    S: OutboxStore,
    K: OutboxSink<S::Row>,
{
    let mut report = PassReport::default();
    loop {
        let rows = store.due(policy.page_size).await?;
        let full_page = !rows.is_empty() && rows.len() >= policy.page_size;
        let failed_before = report.failed;
        for row in &rows {
            if shutdown.is_some_and(ShutdownSignal::is_triggered) {
                return Ok(report);
            }
            match sink.deliver(row).await {
                Ok(()) => {
                    store.mark_sent(row).await?;
                    report.sent += 1;
                }
                Err(DeliveryFailure::Refused(refusal)) if policy.park_refusals => {
                    tracing::error!(
                        outbox_id = %row.outbox_id(),
                        template_id = %row.template_id(),
                        refusal = %refusal,
                        "outbox message refused for good; parked, the relay goes on"
                    );
                    store.park(row, &refusal).await?;
                    report.parked += 1;
                }
                Err(failure) => match policy.on_failure {
                    OnFailure::RetryLater(backoff) => {
                        let attempts = row.failed_attempts().saturating_add(1);
                        let delay = backoff.delay(attempts);
                        let retry_at = store
                            .now_ms()
                            .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                        tracing::warn!(
                            outbox_id = %row.outbox_id(),
                            template_id = %row.template_id(),
                            attempts,
                            error = %failure.reason(),
                            "outbox delivery failed; retried after the back-off"
                        );
                        store.mark_failed(row, failure.reason(), retry_at).await?;
                        report.failed += 1;
                    }
                    OnFailure::StopPass => {
                        tracing::warn!(
                            outbox_id = %row.outbox_id(),
                            template_id = %row.template_id(),
                            error = %failure.reason(),
                            "outbox delivery failed; retried on the next pass"
                        );
                        report.failed += 1;
                        return Ok(report);
                    }
                },
            }
        }
        // A page with failures is not drained further: its rows would come straight back.
        if !(policy.drain && full_page && report.failed == failed_before) {
            return Ok(report);
        }
    }
}

/// Relays `store`'s outbox through `sink` every `interval` until `shutdown` (a pass in flight
/// finishes its current row first); a failed pass is logged and the next one tries again.
pub async fn run_relay<S, K>(
    store: S,
    sink: K,
    policy: RelayPolicy,
    interval: Duration,
    shutdown: ShutdownSignal,
) where
    S: OutboxStore,
    K: OutboxSink<S::Row>,
{
    let (store, sink, policy, signal) = (&store, &sink, &policy, &shutdown);
    crate::task::every(interval, shutdown.clone(), || async move {
        match relay_pass(store, sink, policy, Some(signal)).await {
            Ok(report) if report != PassReport::default() => tracing::info!(
                sent = report.sent,
                failed = report.failed,
                parked = report.parked,
                "outbox relay pass"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "outbox relay pass failed"),
        }
    })
    .await;
}

#[cfg(test)]
mod tests;
