//! A shutdown signal shared by every task of the process: fired once by SIGTERM/SIGINT (or a test),
//! awaited by servers and workers.

use tokio::sync::watch;

/// Fires shutdown for every clone of the matching [`ShutdownSignal`].
#[derive(Clone)]
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

/// Resolves when shutdown has been triggered.
#[derive(Clone)]
pub struct ShutdownSignal {
    receiver: watch::Receiver<bool>,
}

/// A new trigger and the signal it fires.
pub fn shutdown_channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger { sender }, ShutdownSignal { receiver })
}

impl ShutdownTrigger {
    /// Starts shutdown; idempotent.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// A signal that resolves when this trigger fires.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            receiver: self.sender.subscribe(),
        }
    }

    /// Fires this trigger on the first SIGTERM or SIGINT the process receives.
    pub fn trigger_on_os_signals(&self) -> std::io::Result<()> {
        let trigger = self.clone();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut terminate = signal(SignalKind::terminate())?;
            let mut interrupt = signal(SignalKind::interrupt())?;
            tokio::spawn(async move {
                let name = tokio::select! {
                    _ = terminate.recv() => "SIGTERM",
                    _ = interrupt.recv() => "SIGINT",
                };
                tracing::info!(signal = name, "shutdown requested");
                trigger.trigger();
            });
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("shutdown requested");
                trigger.trigger();
            }
        });
        Ok(())
    }
}

impl ShutdownSignal {
    /// Waits until shutdown is triggered (or every trigger is gone).
    pub async fn wait(mut self) {
        // An error means every trigger was dropped: nobody can fire it any more, so treat it as fired.
        let _ = self.receiver.wait_for(|fired| *fired).await;
    }

    /// Whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }
}
