//! A shutdown signal shared by every task of the process: fired once by SIGTERM/SIGINT (or a test),
//! awaited by servers and workers. Built on `tokio_util`'s [`CancellationToken`]; the tasks a
//! service spawns are tracked by [`crate::service::Tasks`], so shutdown can wait for them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Fires shutdown for every clone of the matching [`ShutdownSignal`]. Dropping the last clone of
/// a trigger fires it too: nobody could fire it any more, so waiting for it would wait forever.
#[derive(Clone)]
pub struct ShutdownTrigger {
    inner: Arc<TriggerInner>,
}

struct TriggerInner {
    token: CancellationToken,
}

impl Drop for TriggerInner {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Resolves when shutdown has been triggered.
#[derive(Clone)]
pub struct ShutdownSignal {
    token: CancellationToken,
}

/// A new trigger and the signal it fires.
pub fn shutdown_channel() -> (ShutdownTrigger, ShutdownSignal) {
    let token = CancellationToken::new();
    let signal = ShutdownSignal {
        token: token.clone(),
    };
    (
        ShutdownTrigger {
            inner: Arc::new(TriggerInner { token }),
        },
        signal,
    )
}

impl ShutdownTrigger {
    /// Starts shutdown; idempotent.
    pub fn trigger(&self) {
        self.inner.token.cancel();
    }

    /// A signal that resolves when this trigger fires.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            token: self.inner.token.clone(),
        }
    }

    /// Fires this trigger on the first SIGTERM or SIGINT the process receives.
    pub fn trigger_on_os_signals(&self) -> std::io::Result<()> {
        // The listener holds only the token, so dropping every trigger still fires shutdown.
        let token = self.inner.token.clone();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut terminate = signal(SignalKind::terminate())?;
            let mut interrupt = signal(SignalKind::interrupt())?;
            tokio::spawn(async move {
                let name = tokio::select! {
                    () = token.cancelled() => return,
                    _ = terminate.recv() => "SIGTERM",
                    _ = interrupt.recv() => "SIGINT",
                };
                tracing::info!(signal = name, "shutdown requested");
                token.cancel();
            });
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                result = tokio::signal::ctrl_c() => if result.is_ok() {
                    tracing::info!("shutdown requested");
                    token.cancel();
                }
            }
        });
        Ok(())
    }
}

impl ShutdownSignal {
    /// Waits until shutdown is triggered (or every trigger is gone).
    pub async fn wait(self) {
        self.token.cancelled_owned().await;
    }

    /// Whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn triggering_fires_every_signal() {
        let (trigger, signal) = shutdown_channel();
        let other = trigger.signal();
        assert!(!signal.is_triggered());
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(1), signal.wait())
            .await
            .expect("fired");
        assert!(other.is_triggered());
    }

    #[tokio::test]
    async fn dropping_the_last_trigger_fires_the_signal() {
        let (trigger, signal) = shutdown_channel();
        let clone = trigger.clone();
        drop(trigger);
        assert!(
            !signal.is_triggered(),
            "a clone of the trigger is still alive"
        );
        drop(clone);
        assert!(signal.is_triggered());
    }
}
