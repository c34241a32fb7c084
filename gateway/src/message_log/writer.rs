//! The one task that writes a chain: it takes every append waiting in its queue (up to the batch
//! limit), seals them onto the chain, commits them in one transaction — with a signed checkpoint
//! when one is due — and only then answers each waiting call. One commit (one fsync) per batch is
//! the group commit that keeps throughput high under load while each call still waits for its own
//! entry to be durable.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::pki::SigningKey;
use shlyuz_kit::telemetry::MetricsRegistry;
use tokio::sync::mpsc;

use super::chains;
use super::record::{GENESIS_HASH, HASH_LEN, StoredEntry};
use super::store::{self, Appended, StoredCheckpoint};
use super::{AppendReply, Command, LogRecord, MessageLogError, MessageLogOptions};

/// The message log's own metrics.
#[derive(Clone)]
pub struct WriterMetrics {
    entries: Counter,
    failures: Counter,
    checkpoints: Counter,
    batch_entries: Histogram,
    commit_seconds: Histogram,
}

impl WriterMetrics {
    /// Creates the metrics and registers them.
    pub fn registered(registry: &MetricsRegistry) -> Self {
        let metrics = Self {
            entries: Counter::default(),
            failures: Counter::default(),
            checkpoints: Counter::default(),
            batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            commit_seconds: shlyuz_kit::server::latency_histogram(),
        };
        registry.register(
            "gateway_message_log_entries",
            "message-log entries committed",
            metrics.entries.clone(),
        );
        registry.register(
            "gateway_message_log_write_failures",
            "message-log batches the database refused (their calls failed with MESSAGE_LOG_UNAVAILABLE)",
            metrics.failures.clone(),
        );
        registry.register(
            "gateway_message_log_checkpoints",
            "signed message-log checkpoints written",
            metrics.checkpoints.clone(),
        );
        registry.register(
            "gateway_message_log_batch_entries",
            "entries per message-log transaction (group commit)",
            metrics.batch_entries.clone(),
        );
        registry.register(
            "gateway_message_log_commit_seconds",
            "time to commit one message-log batch",
            metrics.commit_seconds.clone(),
        );
        metrics
    }
}

/// Why a commit wrote nothing.
enum CommitError {
    /// The database refused or failed it.
    Database(sqlx::Error),
    /// Another instance closed the chain (its heartbeat had lapsed).
    ChainClosed,
}

/// The writer of one chain (of a new one when its chain is closed under it).
pub struct Writer {
    database: Database,
    chain_id: String,
    /// Where [`super::MessageLog::chain_id`] reads the chain written now.
    shared_chain_id: Arc<Mutex<String>>,
    signing_key: Arc<SigningKey>,
    options: MessageLogOptions,
    metrics: WriterMetrics,
    clock: SharedClock,
    /// Sequence the next entry gets.
    next_sequence: i64,
    /// Hash of the last committed entry.
    previous_hash: [u8; HASH_LEN],
    /// Sequence of the last checkpoint.
    checkpointed_sequence: i64,
    last_checkpoint_at: Instant,
}

impl Writer {
    /// A writer of the new, empty, open chain named in `shared_chain_id`.
    pub fn new(
        database: Database,
        shared_chain_id: Arc<Mutex<String>>,
        signing_key: Arc<SigningKey>,
        options: MessageLogOptions,
        metrics: WriterMetrics,
        clock: SharedClock,
    ) -> Writer {
        let chain_id = shared_chain_id.lock().clone();
        Writer {
            database,
            chain_id,
            shared_chain_id,
            signing_key,
            options,
            metrics,
            clock,
            next_sequence: 1,
            previous_hash: GENESIS_HASH,
            checkpointed_sequence: 0,
            last_checkpoint_at: Instant::now(),
        }
    }

    /// Serves appends until shutdown or until every handle is gone, then signs a final checkpoint
    /// and closes the chain.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut ticker = tokio::time::interval(self.options.checkpoint_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The chain's record was written with a heartbeat of now: the first beat is one interval on.
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + self.options.heartbeat_interval,
            self.options.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch: Vec<(Box<LogRecord>, AppendReply)> =
            Vec::with_capacity(self.options.max_batch);
        loop {
            let first = tokio::select! {
                command = commands.recv() => command,
                _ = ticker.tick() => {
                    if self.last_checkpoint_at.elapsed() >= self.options.checkpoint_interval {
                        self.checkpoint_alone().await;
                    }
                    continue;
                }
                _ = heartbeat.tick() => {
                    self.heartbeat().await;
                    continue;
                }
            };
            let mut shutdown = None;
            match first {
                None => break,
                Some(Command::Shutdown(done)) => shutdown = Some(done),
                Some(Command::Append(record, reply)) => batch.push((record, reply)),
            }
            // Everything already waiting joins this transaction.
            while shutdown.is_none() && batch.len() < self.options.max_batch {
                match commands.try_recv() {
                    Ok(Command::Append(record, reply)) => batch.push((record, reply)),
                    Ok(Command::Shutdown(done)) => shutdown = Some(done),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.write(&mut batch).await;
            }
            if let Some(done) = shutdown {
                // Appends that were queued before the shutdown are written, later ones refused.
                commands.close();
                while let Some(command) = commands.recv().await {
                    match command {
                        Command::Append(record, reply) => {
                            batch.push((record, reply));
                            if batch.len() >= self.options.max_batch {
                                self.write(&mut batch).await;
                            }
                        }
                        Command::Shutdown(other) => {
                            let _ = other.send(());
                        }
                    }
                }
                if !batch.is_empty() {
                    self.write(&mut batch).await;
                }
                self.close().await;
                let _ = done.send(());
                return;
            }
        }
        self.close().await;
    }

    /// Seals the batch onto the chain and commits it; answers every call in it. When the batch
    /// fails, its entries are retried one by one, so an entry the database refuses fails alone
    /// and the others get their positions.
    async fn write(&mut self, batch: &mut Vec<(Box<LogRecord>, AppendReply)>) {
        let mut entries = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut previous_hash = self.previous_hash;
        let mut sequence = self.next_sequence;
        for (record, reply) in batch.drain(..) {
            if let Some(field) = record.first_unstorable_field() {
                let _ = reply.send(Err(MessageLogError::Unstorable(field)));
                continue;
            }
            let entry = StoredEntry::seal(
                self.chain_id.clone(),
                sequence,
                previous_hash,
                *record,
                self.options.store_bodies,
            );
            previous_hash = entry.entry_hash;
            sequence += 1;
            replies.push(reply);
            entries.push(entry);
        }
        if entries.is_empty() {
            return;
        }
        let error = match self.commit_on_open_chain(&mut entries).await {
            Ok(()) => {
                for (entry, reply) in entries.iter().zip(replies) {
                    let _ = reply.send(Ok(entry.position()));
                }
                return;
            }
            Err(error) => error,
        };
        tracing::error!(error = %error, entries = entries.len(), "message log batch not written");
        self.resynchronize().await;
        if entries.len() == 1 {
            for reply in replies {
                let _ = reply.send(Err(MessageLogError::Unavailable(error.to_string())));
            }
            return;
        }
        for (entry, reply) in entries.into_iter().zip(replies) {
            let mut alone = vec![entry];
            self.rebase(&mut alone);
            let answer = match self.commit_on_open_chain(&mut alone).await {
                Ok(()) => Ok(alone[0].position()),
                Err(error) => {
                    tracing::error!(error = %error, message_id = %alone[0].message_id, "message log entry not written");
                    self.resynchronize().await;
                    Err(MessageLogError::Unavailable(error.to_string()))
                }
            };
            let _ = reply.send(answer);
        }
    }

    /// Commits `entries` (the next ones of the chain); when the chain was closed under the
    /// writer, opens a new chain, moves the entries onto it and commits them there.
    async fn commit_on_open_chain(
        &mut self,
        entries: &mut [StoredEntry],
    ) -> Result<(), sqlx::Error> {
        match self.commit(entries).await {
            Ok(()) => return Ok(()),
            Err(CommitError::Database(error)) => return Err(error),
            Err(CommitError::ChainClosed) => {}
        }
        self.open_new_chain().await?;
        self.rebase(entries);
        match self.commit(entries).await {
            Ok(()) => Ok(()),
            Err(CommitError::Database(error)) => Err(error),
            Err(CommitError::ChainClosed) => Err(sqlx::Error::Protocol(
                "the new message log chain was closed at once".to_string(),
            )),
        }
    }

    /// Places `entries` after the writer's chain head, in order.
    fn rebase(&self, entries: &mut [StoredEntry]) {
        let mut previous_hash = self.previous_hash;
        for (sequence, entry) in (self.next_sequence..).zip(entries) {
            entry.chain_id.clone_from(&self.chain_id);
            entry.relink(sequence, previous_hash);
            previous_hash = entry.entry_hash;
        }
    }

    /// Another instance closed the chain (this writer's heartbeat lapsed, e.g. it was paused):
    /// nothing more goes onto it; a new chain is opened, linked to the chain closed last.
    async fn open_new_chain(&mut self) -> Result<(), sqlx::Error> {
        let chain_id = uuid::Uuid::now_v7().to_string();
        let chain =
            chains::open_chain(&self.database, &self.signing_key, &self.clock, chain_id).await?;
        tracing::warn!(closed_chain_id = %self.chain_id, chain_id = %chain.chain_id, "message log chain was closed by another instance; continuing in a new chain");
        self.chain_id = chain.chain_id;
        *self.shared_chain_id.lock() = self.chain_id.clone();
        self.next_sequence = 1;
        self.previous_hash = GENESIS_HASH;
        self.checkpointed_sequence = 0;
        self.last_checkpoint_at = Instant::now();
        Ok(())
    }

    /// Refreshes the chain's heartbeat (a chain found closed is left for a new one), then closes
    /// the chains of runs that stopped without shutdown since: a killed run's chain is signed and
    /// closed by any running instance within the lease and one heartbeat, not only by a start
    /// that comes after the lease.
    async fn heartbeat(&mut self) {
        match store::heartbeat(&self.database, &self.chain_id, self.clock.now_millis()).await {
            Ok(true) => {
                let lease_ms =
                    i64::try_from(self.options.chain_lease.as_millis()).unwrap_or(i64::MAX);
                if let Err(error) = super::chains::close_stale_chains(
                    &self.database,
                    &self.signing_key,
                    &self.clock,
                    lease_ms,
                    &self.chain_id,
                )
                .await
                {
                    tracing::warn!(error = %error, "stale message log chains not closed");
                }
            }
            Ok(false) => {
                if let Err(error) = self.open_new_chain().await {
                    tracing::warn!(error = %error, "cannot open a new message log chain");
                }
            }
            Err(error) => tracing::warn!(error = %error, "message log heartbeat not written"),
        }
    }

    /// Commits `entries` (the next ones of the chain) with a signed checkpoint when one is due,
    /// and moves the chain head past them.
    async fn commit(&mut self, entries: &[StoredEntry]) -> Result<(), CommitError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let checkpoint_due = last.sequence - self.checkpointed_sequence
            >= self.options.checkpoint_every_entries
            || self.last_checkpoint_at.elapsed() >= self.options.checkpoint_interval;
        let checkpoint =
            checkpoint_due.then(|| self.sign_checkpoint(last.sequence, &last.entry_hash));
        let started = Instant::now();
        let written = store::write_batch(
            &self.database,
            &self.chain_id,
            self.clock.now_millis(),
            entries,
            checkpoint.as_ref(),
        )
        .await;
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        match written {
            Ok(Appended::Written) => {}
            Ok(Appended::ChainClosed) => return Err(CommitError::ChainClosed),
            Err(error) => {
                self.metrics.failures.inc();
                return Err(CommitError::Database(error));
            }
        }
        self.metrics.entries.inc_by(entries.len() as u64);
        self.metrics.batch_entries.observe(entries.len() as f64);
        self.next_sequence = last.sequence + 1;
        self.previous_hash = last.entry_hash;
        if let Some(checkpoint) = checkpoint {
            self.checkpoint_written(checkpoint.sequence);
        }
        Ok(())
    }

    /// After a failed commit the database may still have committed it (a connection lost after
    /// COMMIT): continue from whatever the database holds, so the chain never forks.
    async fn resynchronize(&mut self) {
        match store::chain_head(&self.database, &self.chain_id).await {
            Ok(Some((sequence, hash))) => {
                if let Ok(hash) = <[u8; HASH_LEN]>::try_from(hash) {
                    self.next_sequence = sequence + 1;
                    self.previous_hash = hash;
                }
            }
            Ok(None) => {
                self.next_sequence = 1;
                self.previous_hash = GENESIS_HASH;
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot re-read the message log chain head")
            }
        }
        if let Ok(sequence) = store::last_checkpoint_sequence(&self.database, &self.chain_id).await
        {
            self.checkpointed_sequence = sequence;
        }
    }

    fn sign_checkpoint(&self, sequence: i64, entry_hash: &[u8; HASH_LEN]) -> StoredCheckpoint {
        chains::signed_checkpoint(
            &self.signing_key,
            &self.chain_id,
            sequence,
            entry_hash,
            self.clock.now_millis(),
        )
    }

    fn checkpoint_written(&mut self, sequence: i64) {
        self.checkpointed_sequence = sequence;
        self.last_checkpoint_at = Instant::now();
        self.metrics.checkpoints.inc();
    }

    /// Signs the chain head when entries were added since the last checkpoint.
    async fn checkpoint_alone(&mut self) {
        let head = self.next_sequence - 1;
        if head <= self.checkpointed_sequence {
            self.last_checkpoint_at = Instant::now();
            return;
        }
        let checkpoint = self.sign_checkpoint(head, &self.previous_hash);
        match store::write_checkpoint(&self.database, self.clock.now_millis(), &checkpoint).await {
            Ok(Appended::Written) => self.checkpoint_written(head),
            // The instance that closed the chain signed its head.
            Ok(Appended::ChainClosed) => {
                if let Err(error) = self.open_new_chain().await {
                    tracing::warn!(error = %error, "cannot open a new message log chain");
                }
            }
            Err(error) => tracing::warn!(error = %error, "message log checkpoint not written"),
        }
    }

    /// At shutdown: signs the chain head when entries were added since the last checkpoint and
    /// closes the chain, in one transaction.
    async fn close(&mut self) {
        let head = self.next_sequence - 1;
        let checkpoint = (head > self.checkpointed_sequence)
            .then(|| self.sign_checkpoint(head, &self.previous_hash));
        let now_ms = self.clock.now_millis();
        match store::close_own_chain(
            &self.database,
            &self.chain_id,
            now_ms,
            head,
            checkpoint.as_ref(),
        )
        .await
        {
            Ok(true) => {
                if checkpoint.is_some() {
                    self.checkpoint_written(head);
                }
            }
            Ok(false) => {
                tracing::warn!(chain_id = %self.chain_id, "message log chain was already closed by another instance")
            }
            Err(error) => {
                tracing::warn!(error = %error, "message log chain not closed; the next start closes it")
            }
        }
    }
}
