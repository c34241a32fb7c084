//! The one task that writes a chain: it takes every append waiting in its queue (up to the batch
//! limit), seals them onto the chain, commits them in one transaction — with a signed checkpoint
//! when one is due — and only then answers each waiting call. One commit (one fsync) per batch is
//! the group commit that keeps throughput high under load while each call still waits for its own
//! entry to be durable.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::pki::SigningKey;
use shlyuz_kit::telemetry::MetricsRegistry;
use tokio::sync::mpsc;

use super::record::{GENESIS_HASH, HASH_LEN, StoredEntry, checkpoint_message};
use super::store::{self, StoredCheckpoint};
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

/// The writer of one chain.
pub struct Writer {
    database: Database,
    chain_id: String,
    signing_key: Arc<SigningKey>,
    signer_public_key: String,
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
    /// A writer of the new, empty chain `chain_id`.
    pub fn new(
        database: Database,
        chain_id: String,
        signing_key: Arc<SigningKey>,
        options: MessageLogOptions,
        metrics: WriterMetrics,
        clock: SharedClock,
    ) -> Writer {
        let signer_public_key = hex::encode(signing_key.verifying_key().as_bytes());
        Writer {
            database,
            chain_id,
            signing_key,
            signer_public_key,
            options,
            metrics,
            clock,
            next_sequence: 1,
            previous_hash: GENESIS_HASH,
            checkpointed_sequence: 0,
            last_checkpoint_at: Instant::now(),
        }
    }

    /// Serves appends until shutdown or until every handle is gone, then signs a final checkpoint.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut ticker = tokio::time::interval(self.options.checkpoint_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                self.checkpoint_alone().await;
                let _ = done.send(());
                return;
            }
        }
        self.checkpoint_alone().await;
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
        let error = match self.commit(&entries).await {
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
        for (mut entry, reply) in entries.into_iter().zip(replies) {
            entry.relink(self.next_sequence, self.previous_hash);
            let answer = match self.commit(std::slice::from_ref(&entry)).await {
                Ok(()) => Ok(entry.position()),
                Err(error) => {
                    tracing::error!(error = %error, message_id = %entry.message_id, "message log entry not written");
                    self.resynchronize().await;
                    Err(MessageLogError::Unavailable(error.to_string()))
                }
            };
            let _ = reply.send(answer);
        }
    }

    /// Commits `entries` (the next ones of the chain) with a signed checkpoint when one is due,
    /// and moves the chain head past them.
    async fn commit(&mut self, entries: &[StoredEntry]) -> Result<(), sqlx::Error> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let checkpoint_due = last.sequence - self.checkpointed_sequence
            >= self.options.checkpoint_every_entries
            || self.last_checkpoint_at.elapsed() >= self.options.checkpoint_interval;
        let checkpoint =
            checkpoint_due.then(|| self.sign_checkpoint(last.sequence, &last.entry_hash));
        let started = Instant::now();
        let written = store::write_batch(&self.database, entries, checkpoint.as_ref()).await;
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = written {
            self.metrics.failures.inc();
            return Err(error);
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
        let time_ms = self.clock.now_millis();
        let message = checkpoint_message(&self.chain_id, sequence, entry_hash, time_ms);
        StoredCheckpoint {
            chain_id: self.chain_id.clone(),
            sequence,
            entry_hash: entry_hash.to_vec(),
            time_ms,
            signature: self.signing_key.sign(message.as_bytes()).to_vec(),
            signer_public_key: self.signer_public_key.clone(),
        }
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
        match store::write_checkpoint(&self.database, &checkpoint).await {
            Ok(()) => self.checkpoint_written(head),
            Err(error) => tracing::warn!(error = %error, "message log checkpoint not written"),
        }
    }
}
