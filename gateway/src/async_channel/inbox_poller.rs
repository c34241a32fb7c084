//! One database poller for every open `StreamMessages`: a single task reads the pending items of
//! each participant that has a stream open — when an inbox changes and at the poll interval (for
//! other replicas' changes) — and hands the snapshot to that participant's streams. However many
//! streams are open, the database sees one participant's inbox read at a time.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use shlyuz_kit::db::Database;
use shlyuz_kit::shutdown::ShutdownSignal;
use shlyuz_kit::telemetry::MetricsRegistry;
use tokio::sync::{Notify, watch};

use super::store::{self, InboxRow};

/// Most pending items one snapshot holds per participant (a stream pushes them oldest first).
pub const SNAPSHOT_ITEMS: i64 = 500;

/// A participant's pending items as last read; `None` until the first read.
pub type Snapshot = Option<Arc<Vec<InboxRow>>>;

/// The registry of watched inboxes and the wake-up of the poller.
#[derive(Clone)]
pub struct InboxPoller {
    inner: Arc<Inner>,
}

struct Inner {
    watched: Mutex<HashMap<String, Watched>>,
    /// A stream opened for a participant: read its inbox now.
    subscribed: Notify,
    /// Inbox reads made for streams.
    reads: Counter,
    /// Streams open on this instance.
    streams: Gauge,
}

struct Watched {
    snapshots: watch::Sender<Snapshot>,
    streams: usize,
}

/// One stream's view of its participant's inbox; dropping it ends the watch when it was the
/// participant's last stream.
pub struct Subscription {
    poller: InboxPoller,
    participant: String,
    /// Receives a new snapshot after every read of the inbox.
    pub snapshots: watch::Receiver<Snapshot>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.poller.inner.streams.dec();
        let mut watched = self.poller.watched();
        if let Some(entry) = watched.get_mut(&self.participant) {
            entry.streams = entry.streams.saturating_sub(1);
            if entry.streams == 0 {
                watched.remove(&self.participant);
            }
        }
    }
}

impl InboxPoller {
    /// A poller with no stream open; its metrics registered.
    pub fn registered(metrics: &MetricsRegistry) -> Self {
        let inner = Inner {
            watched: Mutex::new(HashMap::new()),
            subscribed: Notify::new(),
            reads: Counter::default(),
            streams: Gauge::default(),
        };
        metrics.register(
            "gateway_async_inbox_stream_reads",
            "inbox reads the shared poller made for StreamMessages",
            inner.reads.clone(),
        );
        metrics.register(
            "gateway_async_inbox_streams",
            "StreamMessages streams open on this instance",
            inner.streams.clone(),
        );
        Self {
            inner: Arc::new(inner),
        }
    }

    fn watched(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Watched>> {
        self.inner.watched.lock()
    }

    /// Watches `participant`'s inbox for one more stream; its first snapshot follows shortly.
    pub fn subscribe(&self, participant: &str) -> Subscription {
        let snapshots = {
            let mut watched = self.watched();
            let entry = watched
                .entry(participant.to_string())
                .or_insert_with(|| Watched {
                    snapshots: watch::channel(None).0,
                    streams: 0,
                });
            entry.streams += 1;
            let mut receiver = entry.snapshots.subscribe();
            // A snapshot read before this stream opened is still news to it.
            receiver.mark_changed();
            receiver
        };
        self.inner.streams.inc();
        self.inner.subscribed.notify_one();
        Subscription {
            poller: self.clone(),
            participant: participant.to_string(),
            snapshots,
        }
    }

    /// Reads the watched inboxes whenever `inbox_changed` fires, a stream opens, or
    /// `poll_interval` passes, until shutdown.
    pub async fn run(
        self,
        database: Database,
        inbox_changed: Arc<Notify>,
        poll_interval: Duration,
        shutdown: ShutdownSignal,
    ) {
        loop {
            // Registered before the read, so a change during the read wakes the next one.
            let changed = inbox_changed.notified();
            let participants: Vec<String> = self.watched().keys().cloned().collect();
            for participant in participants {
                self.inner.reads.inc();
                match store::pending_inbox(&database, &participant, SNAPSHOT_ITEMS).await {
                    Ok(rows) => {
                        if let Some(entry) = self.watched().get(&participant) {
                            entry.snapshots.send_replace(Some(Arc::new(rows)));
                        }
                    }
                    // The streams keep their last snapshot; the next read tries again.
                    Err(error) => {
                        tracing::warn!(error = %error, participant = %participant, "cannot read an inbox for its streams");
                    }
                }
            }
            tokio::select! {
                _ = changed => {}
                _ = self.inner.subscribed.notified() => {}
                _ = tokio::time::sleep(poll_interval) => {}
                _ = shutdown.clone().wait() => return,
            }
        }
    }
}
