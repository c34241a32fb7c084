//! The async channel (ARCHITECTURE.md §3.3, ШЭП AsyncChannel): `SendMessage` answers at once
//! with a receipt; the message waits in the gateway's database until it is delivered — to a
//! service method, retried with backoff on transient errors until it expires, or to a
//! participant's inbox — and its outcome waits for the sender in the sender's inbox.
//! Nothing accepted is lost when a gateway process dies: a message is claimed for a bounded time,
//! and a claim that lapses makes it due again, for this or another instance.

mod dispatcher;
mod inbox_poller;
mod metrics;
mod quota;
mod service;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::shutdown::ShutdownSignal;
use shlyuz_kit::telemetry::MetricsRegistry;
use tokio::sync::Notify;

pub use dispatcher::is_transient;
pub use quota::ASYNC_QUOTA_EXCEEDED;
pub use service::{AsyncChannelApi, REPLY_TO_NOT_ALLOWED};

use crate::consent::ConsentChecker;
use crate::directory::DirectoryHandle;
use crate::message_log::MessageLog;
use crate::upstream::Upstreams;

/// Metadata that tells a target the call came through the async channel (`async`).
pub const CHANNEL_HEADER: &str = "x-shlyuz-channel";

/// How the async channel retries, expires and polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncOptions {
    /// Time to live of a message that does not say when it expires.
    pub default_ttl: Duration,
    /// Longest time to live a sender may ask for.
    pub max_ttl: Duration,
    /// Wait before the second attempt; doubles with every attempt.
    pub retry_initial: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
    /// Deliveries in flight per gateway instance.
    pub delivery_concurrency: usize,
    /// How often the queue is checked when nothing wakes the dispatcher (other replicas' messages,
    /// retries coming due).
    pub poll_interval: Duration,
    /// How much longer than its route's timeout a delivery claim holds (and is extended by
    /// while the delivery runs).
    pub lease_margin: Duration,
    /// How long a message that reached its final state is kept, with its inbox items, before
    /// it is deleted (the message log keeps its entries).
    pub retention: Duration,
    /// Keep payloads after delivery (`gateway.store_bodies`); off: a message's payload is
    /// cleared when it becomes final or its recipient acknowledges it, and its response when the
    /// sender acknowledges the outcome.
    pub keep_payloads: bool,
    /// Whether this instance claims and delivers messages; off, it accepts messages, serves
    /// inboxes and does the housekeeping only. Always on from the configuration; tests hold
    /// delivery with it.
    pub deliver: bool,
    /// Messages one sender may have on delivery at once.
    pub quota_messages: u64,
    /// Payload bytes one sender may have on delivery at once.
    pub quota_bytes: u64,
}

impl Default for AsyncOptions {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(30 * 24 * 3600),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            delivery_concurrency: 64,
            poll_interval: Duration::from_millis(200),
            lease_margin: Duration::from_secs(5),
            retention: Duration::from_secs(7 * 24 * 3600),
            keep_payloads: false,
            deliver: true,
            quota_messages: 50_000,
            quota_bytes: 512 * 1024 * 1024,
        }
    }
}

/// A running async channel: its API and its delivery loop.
pub struct AsyncChannel {
    api: AsyncChannelApi,
    dispatcher_task: tokio::task::JoinHandle<()>,
    inbox_poller_task: tokio::task::JoinHandle<()>,
}

impl AsyncChannel {
    /// Starts delivering; `shutdown` stops the delivery loop.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        database: Database,
        directory: DirectoryHandle,
        upstreams: Arc<Upstreams>,
        message_log: MessageLog,
        consent: Arc<dyn ConsentChecker>,
        clock: SharedClock,
        options: AsyncOptions,
        metrics: &MetricsRegistry,
        shutdown: ShutdownSignal,
    ) -> AsyncChannel {
        let wake = Arc::new(Notify::new());
        let inbox_changed = Arc::new(Notify::new());
        let dispatcher = Arc::new(dispatcher::Dispatcher {
            database: database.clone(),
            directory: directory.clone(),
            upstreams,
            consent: consent.clone(),
            owner: message_log.chain_id(),
            message_log,
            clock: clock.clone(),
            options: options.clone(),
            metrics: metrics::AsyncMetrics::registered(metrics),
            wake: wake.clone(),
            inbox_changed: inbox_changed.clone(),
        });
        let inbox_poller = inbox_poller::InboxPoller::registered(metrics);
        let inbox_poller_task = tokio::spawn(inbox_poller.clone().run(
            database.clone(),
            inbox_changed.clone(),
            // Changes on this instance wake the poller at once; this only catches other replicas'.
            options.poll_interval.max(Duration::from_millis(100)) * 5,
            shutdown.clone(),
        ));
        let api = AsyncChannelApi {
            database,
            directory,
            consent,
            clock,
            options,
            wake,
            inbox_changed,
            dispatcher: dispatcher.clone(),
            message_log: dispatcher.message_log.clone(),
            inbox_poller,
            quotas: Arc::new(quota::SenderQuotas::default()),
        };
        let dispatcher_task = tokio::spawn(dispatcher.run(shutdown));
        AsyncChannel {
            api,
            dispatcher_task,
            inbox_poller_task,
        }
    }

    /// The tonic server of `AsyncChannelService`.
    pub fn server(
        &self,
    ) -> shlyuz_proto::gateway::v1::async_channel_service_server::AsyncChannelServiceServer<
        AsyncChannelApi,
    > {
        shlyuz_proto::gateway::v1::async_channel_service_server::AsyncChannelServiceServer::new(
            self.api.clone(),
        )
    }

    /// Waits for the delivery loop to stop (after the shutdown signal).
    pub async fn stopped(self) {
        let _ = self.dispatcher_task.await;
        let _ = self.inbox_poller_task.await;
    }
}
