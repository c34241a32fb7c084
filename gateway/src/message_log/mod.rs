//! The gateway's tamper-evident message log: one entry per call (sync or async, refused ones too),
//! hash-chained per gateway instance run, with periodic signed checkpoints, written by one task
//! with group commit so that an entry is durable before its call's answer is released while
//! throughput stays high. Read through `MessageLogService` and `AccessLogService`.
//!
//! docs/message-log.md describes the chain, the checkpoints and how to verify them.

mod chains;
mod record;
mod service;
mod store;
mod verify;
mod writer;

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::pki::SigningKey;
use shlyuz_kit::telemetry::MetricsRegistry;
use tokio::sync::{mpsc, oneshot};

pub use record::{
    CHAIN_LINK_FORMAT_TAG, CHECKPOINT_FORMAT_TAG, Channel, ENTRY_FORMAT_TAG, GENESIS_HASH,
    HASH_LEN, LogPosition, LogRecord, StoredEntry, chain_link_message, checkpoint_message, sha256,
};
pub use service::{AccessLogApi, MessageLogApi, access_log_server, message_log_server};
pub use verify::{ChainReport, verify_chains};

/// How the message log batches, checkpoints and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageLogOptions {
    /// Most entries written in one transaction.
    pub max_batch: usize,
    /// A signed checkpoint after this many entries.
    pub checkpoint_every_entries: i64,
    /// A signed checkpoint at least this often while entries arrive.
    pub checkpoint_interval: Duration,
    /// Keep request and response bodies (off: data minimisation).
    pub store_bodies: bool,
    /// How often the writer refreshes its chain's heartbeat while no entry arrives (every batch
    /// refreshes it too).
    pub heartbeat_interval: Duration,
    /// A chain whose heartbeat is older than this is taken for the chain of a run that stopped
    /// without shutdown: the next instance to start closes it.
    pub chain_lease: Duration,
}

impl Default for MessageLogOptions {
    fn default() -> Self {
        Self {
            max_batch: 512,
            checkpoint_every_entries: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            store_bodies: false,
            heartbeat_interval: Duration::from_secs(5),
            chain_lease: Duration::from_secs(30),
        }
    }
}

/// Why an entry could not be made durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageLogError {
    /// The database refused or failed the write; nothing of the batch was stored.
    #[error("the message log could not be written: {0}")]
    Unavailable(String),
    /// A field holds a value the database cannot store (a NUL character).
    #[error("the message log cannot store field {0}")]
    Unstorable(&'static str),
    /// The log was shut down.
    #[error("the message log is shut down")]
    Closed,
}

/// How many appends may wait for the writer before callers wait for room.
const QUEUE_CAPACITY: usize = 16_384;

type AppendReply = oneshot::Sender<Result<LogPosition, MessageLogError>>;

enum Command {
    Append(Box<LogRecord>, AppendReply),
    Shutdown(oneshot::Sender<()>),
}

/// A handle to the running message log; clones share one writer and one chain.
#[derive(Clone)]
pub struct MessageLog {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    /// The chain the writer appends to now (a new one when its chain was closed under it).
    chain_id: Arc<Mutex<String>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl MessageLog {
    /// Closes the chains of runs that stopped without shutdown (an open chain whose heartbeat is
    /// older than `options.chain_lease`), starts a new chain for this gateway instance run,
    /// linked to the chain closed last, and the task that writes it.
    pub async fn start(
        database: Database,
        signing_key: Arc<SigningKey>,
        options: MessageLogOptions,
        metrics: &MetricsRegistry,
        clock: SharedClock,
    ) -> anyhow::Result<MessageLog> {
        // A time-ordered id: chains of successive runs sort in the order they were started.
        let chain_id = uuid::Uuid::now_v7().to_string();
        let lease_ms = i64::try_from(options.chain_lease.as_millis()).unwrap_or(i64::MAX);
        chains::close_stale_chains(&database, &signing_key, &clock, lease_ms, &chain_id).await?;
        let chain = chains::open_chain(&database, &signing_key, &clock, chain_id.clone()).await?;
        let shared_chain_id = Arc::new(Mutex::new(chain_id.clone()));
        let (commands, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let writer = writer::Writer::new(
            database,
            shared_chain_id.clone(),
            signing_key,
            options,
            writer::WriterMetrics::registered(metrics),
            clock,
        );
        let handle = tokio::spawn(writer.run(receiver));
        tracing::info!(chain_id = %chain_id, previous_chain_id = %chain.previous_chain_id, "message log chain started");
        Ok(MessageLog {
            inner: Arc::new(Inner {
                commands,
                chain_id: shared_chain_id,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// The chain this instance writes now.
    pub fn chain_id(&self) -> String {
        self.inner.chain_id.lock().clone()
    }

    /// Appends `record` and waits until it is committed; returns where it landed.
    pub async fn append(&self, record: LogRecord) -> Result<LogPosition, MessageLogError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Append(Box::new(record), reply))
            .await
            .map_err(|_| MessageLogError::Closed)?;
        answer.await.unwrap_or(Err(MessageLogError::Closed))
    }

    /// Writes what is queued, signs a final checkpoint, closes the chain and stops the writer.
    /// Appends after this fail with [`MessageLogError::Closed`].
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Shutdown(done))
            .await
            .is_ok()
        {
            let _ = finished.await;
        }
        let handle = self.inner.writer.lock().take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }

    /// Stops the writer at once, as a killed process would: nothing more is written, no final
    /// checkpoint, the chain stays open (its heartbeat lapses). Returns once the writer task has
    /// stopped. Appends after this fail with [`MessageLogError::Closed`]. For tests and drills.
    pub async fn abort(&self) {
        let handle = self.inner.writer.lock().take();
        if let Some(handle) = handle {
            handle.abort();
            let _ = handle.await;
        }
    }
}
