//! Background work on a fixed period that stops at shutdown: the relay, purge and allocation loops
//! of every service share this shape.

use std::future::Future;
use std::time::Duration;

use crate::shutdown::ShutdownSignal;

/// Runs `run` at once and then every `period` until `shutdown` fires.
///
/// A run in flight finishes before shutdown is noticed; once shutdown has fired no new run
/// starts. A run slower than `period` does not pile up ticks: the next run starts at once and
/// the ones after keep `period` apart again (`MissedTickBehavior::Delay`). A zero `period` is
/// taken as one millisecond rather than a busy loop (or `tokio::time::interval`'s panic).
pub async fn every<F, Fut>(period: Duration, shutdown: ShutdownSignal, mut run: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(period.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => return,
            _ = ticker.tick() => run().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::shutdown_channel;
    use std::time::Instant;
    use tokio::sync::mpsc;

    const PERIOD: Duration = Duration::from_millis(50);

    /// Starts `every` with a run that reports its start time and takes `slow_first` on the first
    /// run only; returns the start times receiver, the trigger and the loop's task.
    fn start(
        slow_first: Duration,
    ) -> (
        mpsc::UnboundedReceiver<Instant>,
        crate::shutdown::ShutdownTrigger,
        tokio::task::JoinHandle<()>,
    ) {
        let (trigger, signal) = shutdown_channel();
        let (starts, received) = mpsc::unbounded_channel();
        let handle = tokio::spawn(async move {
            let starts = &starts;
            let mut first = true;
            every(PERIOD, signal, move || {
                let pause = if std::mem::take(&mut first) {
                    slow_first
                } else {
                    Duration::ZERO
                };
                async move {
                    let _ = starts.send(Instant::now());
                    tokio::time::sleep(pause).await;
                }
            })
            .await;
        });
        (received, trigger, handle)
    }

    #[tokio::test]
    async fn runs_at_once_and_then_every_period() {
        let (mut starts, trigger, handle) = start(Duration::ZERO);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(starts.recv().await.expect("the loop runs"));
        }
        for pair in seen.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= PERIOD - Duration::from_millis(5),
                "runs {gap:?} apart"
            );
        }
        trigger.trigger();
        handle.await.expect("the loop ends cleanly");
    }

    #[tokio::test]
    async fn stops_at_shutdown_and_starts_no_run_after() {
        let (mut starts, trigger, handle) = start(Duration::ZERO);
        starts.recv().await.expect("the first run starts at once");
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("the loop returns once shutdown fires")
            .expect("the loop ends cleanly");
    }

    #[tokio::test]
    async fn starts_no_run_once_shutdown_has_fired() {
        let (trigger, signal) = shutdown_channel();
        trigger.trigger();
        let mut runs = 0;
        tokio::time::timeout(
            Duration::from_secs(5),
            every(PERIOD, signal, || {
                runs += 1;
                async {}
            }),
        )
        .await
        .expect("the loop returns at once");
        assert_eq!(runs, 0, "a run started after shutdown");
    }

    #[tokio::test]
    async fn shutdown_during_a_slow_run_wins_over_the_tick_it_missed() {
        // When the run ends both the missed tick and shutdown are ready: shutdown must win every
        // time (an unbiased choice would start a second run about every other time).
        for _ in 0..16 {
            let (trigger, signal) = shutdown_channel();
            let mut runs = 0;
            every(Duration::from_millis(5), signal, || {
                runs += 1;
                let trigger = trigger.clone();
                async move {
                    trigger.trigger();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            assert_eq!(runs, 1, "a run started after shutdown");
        }
    }

    #[tokio::test]
    async fn a_zero_period_runs_instead_of_panicking() {
        let (trigger, signal) = shutdown_channel();
        let mut runs = 0;
        every(Duration::ZERO, signal, || {
            runs += 1;
            if runs == 3 {
                trigger.trigger();
            }
            async {}
        })
        .await;
        assert_eq!(runs, 3);
    }

    #[tokio::test]
    async fn a_slow_run_does_not_pile_up_ticks() {
        // The first run takes five periods: a bursting ticker would start the next runs back to
        // back to catch up; this one starts one at once and keeps the period after it.
        let (mut starts, trigger, handle) = start(PERIOD * 5);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(starts.recv().await.expect("the loop runs"));
        }
        assert!(
            seen[1] - seen[0] >= PERIOD * 5,
            "the slow run finished first"
        );
        for pair in seen[1..].windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= PERIOD - Duration::from_millis(5),
                "caught-up runs {gap:?} apart"
            );
        }
        trigger.trigger();
        handle.await.expect("the loop ends cleanly");
    }
}
