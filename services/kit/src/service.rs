//! The service contract: what every Shlyuz service is given when it starts, and what it hands
//! back. Each service crate exposes one `start(ServiceParts<ItsConfig>) -> Service`; the binary
//! builds the parts the same way for every target (`shlyuz up`, `shlyuz serve`, the tests'
//! `spawn_system`), serves the routes, and at shutdown drains the tasks and runs the stop hooks.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::SharedClock;
use crate::db::Database;
use crate::gateway_client::GatewayClient;
use crate::pki::SigningKey;
use crate::server::TlsFiles;
use crate::shutdown::ShutdownSignal;
use crate::telemetry::MetricsRegistry;

/// Who a service is: its participant id, certificate files and message-signing key, loaded once.
#[derive(Clone)]
pub struct Identity {
    /// The participant id (the target's name).
    pub participant: String,
    /// Certificate files; `None` means plaintext (tests only).
    pub tls: Option<TlsFiles>,
    /// The key that signs the participant's envelopes.
    pub signing_key: Arc<SigningKey>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Identity")
            .field("participant", &self.participant)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// What every service gets at start.
pub struct ServiceParts<C> {
    /// Its identity.
    pub identity: Identity,
    /// Its configuration section.
    pub config: C,
    /// Its database, migrated.
    pub database: Database,
    /// Its clock (the test clock under `shlyuz up --test-clock` for the services that follow it).
    pub clock: SharedClock,
    /// Its one way to other services, through the gateway; `None` without a gateway address.
    pub gateway: Option<GatewayClient>,
    /// The process's metrics registry.
    pub metrics: MetricsRegistry,
    /// Where it spawns its background work, and the shutdown that work stops at.
    pub tasks: Tasks,
    /// The data directory (default file locations).
    pub data_dir: PathBuf,
}

/// What a started service hands back: its gRPC routes, and what must run once the server has
/// stopped taking calls (e.g. the gateway flushing its message log).
pub struct Service {
    /// The gRPC routes besides health and reflection.
    pub routes: tonic::service::Routes,
    stop: Vec<BoxFuture<'static, ()>>,
}

impl Service {
    /// A service serving `routes`.
    pub fn new(routes: tonic::service::Routes) -> Self {
        Self {
            routes,
            stop: Vec::new(),
        }
    }

    /// Runs `hook` at shutdown, after the server has drained its calls and before the database
    /// closes.
    pub fn on_stop(mut self, hook: impl Future<Output = ()> + Send + 'static) -> Self {
        self.stop.push(Box::pin(hook));
        self
    }

    /// The routes, and the stop hooks to run in order once they are no longer served.
    pub fn into_parts(self) -> (tonic::service::Routes, Vec<BoxFuture<'static, ()>>) {
        (self.routes, self.stop)
    }
}

/// The background tasks of one service: every one is tracked, so shutdown can wait until they
/// have all ended before the database closes.
#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    shutdown: ShutdownSignal,
}

impl Tasks {
    /// Tasks that stop at `shutdown`.
    pub fn new(shutdown: ShutdownSignal) -> Self {
        Self {
            tracker: TaskTracker::new(),
            shutdown,
        }
    }

    /// The shutdown every task must stop at.
    pub fn shutdown(&self) -> ShutdownSignal {
        self.shutdown.clone()
    }

    /// Spawns `future`, tracked; it must end by itself once [`Tasks::shutdown`] fires.
    pub fn spawn(&self, name: &'static str, future: impl Future<Output = ()> + Send + 'static) {
        self.tracker
            .spawn(future.instrument(tracing::info_span!("task", name)));
    }

    /// Runs `run` at once and then every `period` until shutdown ([`crate::task::every`]),
    /// tracked.
    pub fn every<F, Fut>(&self, name: &'static str, period: Duration, run: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, crate::task::every(period, self.shutdown(), run));
    }

    /// How many tasks are still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Waits, at most `timeout`, until every task has ended; no task can be added after. `false`
    /// when some were still running at the timeout (they are logged and left to the runtime).
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.tracker.close();
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok()
        {
            return true;
        }
        tracing::warn!(
            running = self.tracker.len(),
            timeout_ms = timeout.as_millis() as u64,
            "background tasks still running at the end of the drain"
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::shutdown::shutdown_channel;

    #[tokio::test]
    async fn drain_waits_for_every_task_to_stop() {
        let (trigger, signal) = shutdown_channel();
        let tasks = Tasks::new(signal);
        let finished = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let shutdown = tasks.shutdown();
            let finished = finished.clone();
            tasks.spawn("waits", async move {
                shutdown.wait().await;
                // Work that takes a moment after shutdown, like a last flush.
                tokio::time::sleep(Duration::from_millis(20)).await;
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        tasks.every("loop", Duration::from_millis(5), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        assert_eq!(tasks.running(), 4);
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        trigger.trigger();
        assert!(tasks.drain(Duration::from_secs(5)).await);
        assert_eq!(finished.load(Ordering::SeqCst), 3, "drain returned early");
        assert_eq!(tasks.running(), 0);
    }

    #[tokio::test]
    async fn drain_gives_up_on_a_task_that_ignores_shutdown() {
        let (trigger, signal) = shutdown_channel();
        let tasks = Tasks::new(signal);
        tasks.spawn("stuck", std::future::pending());
        trigger.trigger();
        assert!(!tasks.drain(Duration::from_millis(50)).await);
        assert_eq!(tasks.running(), 1);
    }

    #[tokio::test]
    async fn stop_hooks_run_in_order() {
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (first, second) = (order.clone(), order.clone());
        let service = Service::new(tonic::service::Routes::default())
            .on_stop(async move { first.lock().push(1) })
            .on_stop(async move { second.lock().push(2) });
        let (_routes, hooks) = service.into_parts();
        for hook in hooks {
            hook.await;
        }
        assert_eq!(*order.lock(), vec![1, 2]);
    }
}
