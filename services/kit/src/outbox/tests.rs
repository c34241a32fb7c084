//! The relay against an in-memory outbox and a local notify fake (a tonic server on 127.0.0.1:0).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::*;
use crate::error::ApiError;
use crate::pki::SigningKey;
use crate::shutdown::shutdown_channel;

const REFUSED_IIN: &str = "900315391113";

/// One row of the in-memory outbox.
#[derive(Debug, Clone)]
struct MemoryRow {
    id: String,
    iin: String,
    attempts: i64,
}

impl OutboxRow for MemoryRow {
    fn outbox_id(&self) -> &str {
        &self.id
    }

    fn template_id(&self) -> &str {
        "test.notice"
    }

    fn failed_attempts(&self) -> i64 {
        self.attempts
    }

    fn notification(&self) -> Result<Notification, DeliveryFailure> {
        Ok(Notification {
            subject_iin: self.iin.clone(),
            correlation_id: String::new(),
            request: notify::SendNotificationRequest {
                recipient_iin: self.iin.clone(),
                channels: vec![notify::Channel::Sms as i32],
                template_id: "test.notice".to_string(),
                language: notify::Language::Kk as i32,
                ..Default::default()
            },
        })
    }
}

#[derive(Debug, Clone)]
struct Entry {
    row: MemoryRow,
    due_at_ms: i64,
    sent: bool,
    parked: Option<String>,
    last_error: String,
}

/// An outbox in memory, on a clock the test moves.
#[derive(Default)]
struct MemoryOutbox {
    entries: Mutex<Vec<Entry>>,
    now_ms: AtomicI64,
}

impl MemoryOutbox {
    fn with_rows(iins: &[&str]) -> Self {
        let outbox = MemoryOutbox::default();
        outbox
            .entries
            .lock()
            .extend(iins.iter().enumerate().map(|(index, iin)| Entry {
                row: MemoryRow {
                    id: format!("row-{index}"),
                    iin: iin.to_string(),
                    attempts: 0,
                },
                due_at_ms: 0,
                sent: false,
                parked: None,
                last_error: String::new(),
            }));
        outbox
    }

    fn entry(&self, id: &str) -> Entry {
        self.entries
            .lock()
            .iter()
            .find(|entry| entry.row.id == id)
            .cloned()
            .expect("a row of the outbox")
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut Entry)) {
        if let Some(entry) = self
            .entries
            .lock()
            .iter_mut()
            .find(|entry| entry.row.id == id)
        {
            change(entry);
        }
    }

    fn advance_ms(&self, milliseconds: i64) {
        self.now_ms.fetch_add(milliseconds, Ordering::SeqCst);
    }
}

impl OutboxStore for MemoryOutbox {
    type Row = MemoryRow;
    type Error = ApiError;

    async fn due(&self, limit: usize) -> Result<Vec<MemoryRow>, ApiError> {
        let now = self.now_ms();
        Ok(self
            .entries
            .lock()
            .iter()
            .filter(|entry| !entry.sent && entry.parked.is_none() && entry.due_at_ms <= now)
            .take(limit)
            .map(|entry| entry.row.clone())
            .collect())
    }

    async fn mark_sent(&self, row: &MemoryRow) -> Result<(), ApiError> {
        self.update(&row.id, |entry| entry.sent = true);
        Ok(())
    }

    async fn mark_failed(
        &self,
        row: &MemoryRow,
        reason: &str,
        retry_at_ms: i64,
    ) -> Result<(), ApiError> {
        self.update(&row.id, |entry| {
            entry.row.attempts += 1;
            entry.due_at_ms = retry_at_ms;
            entry.last_error = reason.to_string();
        });
        Ok(())
    }

    async fn park(&self, row: &MemoryRow, refusal: &str) -> Result<(), ApiError> {
        self.update(&row.id, |entry| entry.parked = Some(refusal.to_string()));
        Ok(())
    }

    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// What the notify fake did and is told to do.
#[derive(Default)]
struct FakeState {
    /// Idempotency keys notify has taken.
    keys: HashSet<String>,
    /// The SMS it queued, by idempotency key, in order.
    sms: Vec<String>,
    /// Calls still to answer `UNAVAILABLE` before taking anything.
    unavailable: usize,
    /// Calls still to take and then lose the answer of.
    lose_answers: usize,
}

/// Notify's `NotificationService`, deduplicating by idempotency key like notify and refusing the
/// person [`REFUSED_IIN`] for good.
#[derive(Clone)]
struct FakeNotify {
    state: Arc<Mutex<FakeState>>,
    /// Told each call's key as it arrives.
    arrivals: mpsc::UnboundedSender<String>,
    /// How long each call takes.
    pause: Duration,
}

#[tonic::async_trait]
impl notify::notification_service_server::NotificationService for FakeNotify {
    async fn send_notification(
        &self,
        request: Request<notify::SendNotificationRequest>,
    ) -> Result<Response<notify::SendNotificationResponse>, Status> {
        let request = request.into_inner();
        let _ = self.arrivals.send(request.idempotency_key.clone());
        tokio::time::sleep(self.pause).await;
        let mut state = self.state.lock();
        if state.unavailable > 0 {
            state.unavailable -= 1;
            return Err(Status::unavailable("notify is down"));
        }
        if request.recipient_iin == REFUSED_IIN {
            return Err(Status::failed_precondition("no such template"));
        }
        let duplicate = !state.keys.insert(request.idempotency_key.clone());
        if !duplicate {
            state.sms.push(request.idempotency_key.clone());
        }
        if state.lose_answers > 0 {
            state.lose_answers -= 1;
            return Err(Status::unavailable("the answer was lost on the way back"));
        }
        Ok(Response::new(notify::SendNotificationResponse {
            notification: Some(notify::Notification {
                id: format!("notice-{}", request.idempotency_key),
                ..Default::default()
            }),
            duplicate,
        }))
    }

    async fn get_notification(
        &self,
        _request: Request<notify::GetNotificationRequest>,
    ) -> Result<Response<notify::GetNotificationResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_inbox(
        &self,
        _request: Request<notify::ListInboxRequest>,
    ) -> Result<Response<notify::ListInboxResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn mark_read(
        &self,
        _request: Request<notify::MarkReadRequest>,
    ) -> Result<Response<notify::MarkReadResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

/// A running notify fake and a [`NotifySender`] calling it.
struct Notify {
    state: Arc<Mutex<FakeState>>,
    arrivals: mpsc::UnboundedReceiver<String>,
    sender: NotifySender,
}

impl Notify {
    async fn start(pause: Duration) -> Notify {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let fake = FakeNotify {
            state: state.clone(),
            arrivals: arrived,
            pause,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let address = listener.local_addr().expect("the local address");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    notify::notification_service_server::NotificationServiceServer::new(fake),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("an endpoint")
            .connect_lazy();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("a key");
        let signing_key = SigningKey::from_pkcs8_der(key.serialized_der()).expect("an Ed25519 key");
        let gateway = GatewayClient::from_channel(channel, "intake", Arc::new(signing_key));
        Notify {
            state,
            arrivals,
            sender: NotifySender::new(gateway),
        }
    }

    fn sms(&self) -> Vec<String> {
        self.state.lock().sms.clone()
    }
}

/// One relay pass over `outbox` to `notify`.
async fn pass(outbox: &MemoryOutbox, notify: &Notify, policy: &RelayPolicy) -> PassReport {
    relay_pass(outbox, &notify.sender, policy, None)
        .await
        .expect("a pass over the in-memory outbox")
}

const BACKOFF: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(3600));

/// Intake's way: every failure waits out its back-off, refusals included.
const RETRY_LATER: RelayPolicy = RelayPolicy {
    page_size: 50,
    drain: false,
    on_failure: OnFailure::RetryLater(BACKOFF),
    park_refusals: false,
};

/// Housing's way: rows keep their order, refusals are parked.
const IN_ORDER: RelayPolicy = RelayPolicy {
    page_size: 2,
    drain: true,
    on_failure: OnFailure::StopPass,
    park_refusals: true,
};

#[tokio::test]
async fn a_transient_failure_is_retried_after_the_back_off() {
    let notify = Notify::start(Duration::ZERO).await;
    notify.state.lock().unavailable = 1;
    let outbox = MemoryOutbox::with_rows(&["980512391010", "980512391028"]);

    let report = pass(&outbox, &notify, &RETRY_LATER).await;
    assert_eq!((report.sent, report.failed), (1, 1), "{report:?}");
    let failed = outbox.entry("row-0");
    assert!(!failed.sent);
    assert_eq!(
        failed.due_at_ms, 5_000,
        "due again after the first back-off"
    );
    assert!(
        failed.last_error.contains("Unavailable"),
        "{}",
        failed.last_error
    );
    assert_eq!(notify.sms(), ["row-1"], "the row after the failed one went");

    let early = pass(&outbox, &notify, &RETRY_LATER).await;
    assert_eq!(early, PassReport::default(), "not due before the back-off");
    outbox.advance_ms(5_000);
    let report = pass(&outbox, &notify, &RETRY_LATER).await;
    assert_eq!(report.sent, 1);
    assert!(outbox.entry("row-0").sent);
    assert_eq!(notify.sms(), ["row-1", "row-0"]);
}

#[tokio::test]
async fn a_failure_in_order_stops_the_pass_and_the_next_pass_resumes_there() {
    let notify = Notify::start(Duration::ZERO).await;
    notify.state.lock().unavailable = 1;
    let outbox = MemoryOutbox::with_rows(&["980512391010", "980512391028", "980512391036"]);

    let report = pass(&outbox, &notify, &IN_ORDER).await;
    assert_eq!((report.sent, report.failed), (0, 1), "{report:?}");
    assert!(notify.sms().is_empty(), "nothing overtook the failed row");

    let report = pass(&outbox, &notify, &IN_ORDER).await;
    assert_eq!(report.sent, 3, "the pass drained both pages");
    assert_eq!(notify.sms(), ["row-0", "row-1", "row-2"]);
}

#[tokio::test]
async fn a_refusal_for_good_is_parked_and_the_rows_after_it_still_go() {
    let notify = Notify::start(Duration::ZERO).await;
    let outbox = MemoryOutbox::with_rows(&["980512391010", REFUSED_IIN, "980512391036"]);

    let report = pass(&outbox, &notify, &IN_ORDER).await;
    assert_eq!((report.sent, report.parked), (2, 1), "{report:?}");
    assert_eq!(notify.sms(), ["row-0", "row-2"]);
    let parked = outbox.entry("row-1").parked.expect("parked");
    assert_eq!(
        parked,
        "notify refused: FailedPrecondition: no such template"
    );

    let again = pass(&outbox, &notify, &IN_ORDER).await;
    assert_eq!(
        again,
        PassReport::default(),
        "a parked row is not tried again"
    );
}

#[tokio::test]
async fn a_refusal_where_refusals_do_not_park_waits_out_the_back_off() {
    let notify = Notify::start(Duration::ZERO).await;
    let outbox = MemoryOutbox::with_rows(&[REFUSED_IIN]);

    let report = pass(&outbox, &notify, &RETRY_LATER).await;
    assert_eq!((report.failed, report.parked), (1, 0), "{report:?}");
    let entry = outbox.entry("row-0");
    assert_eq!(entry.parked, None);
    assert_eq!((entry.row.attempts, entry.due_at_ms), (1, 5_000));
}

#[tokio::test]
async fn an_answer_lost_after_notify_took_the_row_sends_no_second_sms() {
    let notify = Notify::start(Duration::ZERO).await;
    notify.state.lock().lose_answers = 1;
    let outbox = MemoryOutbox::with_rows(&["980512391010"]);

    let report = pass(&outbox, &notify, &RETRY_LATER).await;
    assert_eq!(report.failed, 1, "the relay never heard notify took it");
    outbox.advance_ms(5_000);
    let report = pass(&outbox, &notify, &RETRY_LATER).await;
    assert_eq!(report.sent, 1);
    assert!(outbox.entry("row-0").sent);
    assert_eq!(notify.sms(), ["row-0"], "one SMS for the row");
}

#[tokio::test]
async fn shutdown_mid_pass_finishes_the_row_in_flight_and_leaves_the_rest() {
    let mut notify = Notify::start(Duration::from_millis(200)).await;
    let outbox = Arc::new(MemoryOutbox::with_rows(&[
        "980512391010",
        "980512391028",
        "980512391036",
    ]));
    let (trigger, signal) = shutdown_channel();
    let relay = tokio::spawn(run_relay(
        outbox.clone(),
        notify.sender.clone(),
        RETRY_LATER,
        Duration::from_secs(60),
        signal,
    ));
    let first = notify
        .arrivals
        .recv()
        .await
        .expect("the first row reaches notify");
    assert_eq!(first, "row-0");
    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(5), relay)
        .await
        .expect("the relay stops after the row in flight")
        .expect("the relay ends cleanly");

    assert!(outbox.entry("row-0").sent, "the row in flight was finished");
    assert!(!outbox.entry("row-1").sent && !outbox.entry("row-2").sent);
    assert_eq!(notify.sms(), ["row-0"]);
    assert!(
        notify.arrivals.try_recv().is_err(),
        "no row started after shutdown"
    );
}
