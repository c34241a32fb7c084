//! The one circuit breaker: after a run of consecutive failures an upstream is not called for an
//! open period; then exactly one probe goes through, and its outcome closes or re-opens the breaker.
//!
//! Time comes from a [`MonotonicClock`], not from the kit's wall [`crate::clock::Clock`]: an open
//! period is an interval, and the wall clock can jump (NTP steps, `shlyuz up --test-clock` moves
//! it 48 hours at once), which would close a breaker early or keep it open for hours. Tests hand
//! the breaker a [`ManualMonotonicClock`] instead of sleeping.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic source of the current instant.
pub trait MonotonicClock: Send + Sync + 'static {
    /// The current instant; never earlier than one read before.
    fn now(&self) -> Instant;
}

/// A monotonic clock shared between a breaker and whoever made it.
pub type SharedMonotonicClock = Arc<dyn MonotonicClock>;

/// The operating system's monotonic clock ([`Instant::now`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemMonotonicClock;

impl MonotonicClock for SystemMonotonicClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A monotonic clock that only moves when told to; clones share the reading.
#[derive(Clone, Debug)]
pub struct ManualMonotonicClock {
    start: Instant,
    elapsed: Arc<Mutex<Duration>>,
}

impl Default for ManualMonotonicClock {
    fn default() -> Self {
        ManualMonotonicClock::new()
    }
}

impl ManualMonotonicClock {
    /// A clock stopped at the moment it is made.
    pub fn new() -> ManualMonotonicClock {
        ManualMonotonicClock {
            start: Instant::now(),
            elapsed: Arc::new(Mutex::new(Duration::ZERO)),
        }
    }

    /// Moves the clock forward by `step`; a step past what an `Instant` can hold is ignored.
    pub fn advance(&self, step: Duration) {
        let mut elapsed = self.elapsed.lock();
        let moved = elapsed.saturating_add(step);
        if self.start.checked_add(moved).is_some() {
            *elapsed = moved;
        }
    }

    /// A [`SharedMonotonicClock`] that follows this clock.
    pub fn shared(&self) -> SharedMonotonicClock {
        Arc::new(self.clone())
    }
}

impl MonotonicClock for ManualMonotonicClock {
    fn now(&self) -> Instant {
        // `advance` keeps `start + elapsed` representable.
        self.start
            .checked_add(*self.elapsed.lock())
            .unwrap_or(self.start)
    }
}

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker (0 counts as 1).
    pub failure_threshold: u32,
    /// How long the breaker stays open before the probe.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    /// Five failures, five seconds open.
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: 5,
            open_for: Duration::from_millis(5_000),
        }
    }
}

/// The breaker refused the call: it is open, or its one probe is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the circuit breaker is open")]
pub struct BreakerOpen;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        consecutive_failures: u32,
    },
    /// `until` is `None` when the open period is longer than an `Instant` can reach.
    Open {
        until: Option<Instant>,
    },
    /// The probe is in flight; every other call is refused until it reports.
    HalfOpen,
}

/// A circuit breaker for one upstream.
///
/// Closed, every call is admitted and `failure_threshold` consecutive failures open it. Open,
/// calls are refused for `open_for`. Then the next call is admitted as the one probe and the
/// breaker is half-open: concurrent calls are refused until the probe reports; its success closes
/// the breaker, its failure re-opens it for another `open_for`. A probe dropped without a verdict
/// (its caller's future cancelled) counts as a failure, so the breaker is never stuck half-open.
/// Any admitted call's success closes the breaker. Settings come with each admission, so a changed
/// configuration applies to the next call.
pub struct CircuitBreaker {
    state: Mutex<State>,
    clock: SharedMonotonicClock,
}

impl Default for CircuitBreaker {
    /// A closed breaker on the system's monotonic clock.
    fn default() -> Self {
        CircuitBreaker::new(Arc::new(SystemMonotonicClock))
    }
}

impl CircuitBreaker {
    /// A closed breaker that reads time from `clock`.
    pub fn new(clock: SharedMonotonicClock) -> CircuitBreaker {
        CircuitBreaker {
            state: Mutex::new(State::Closed {
                consecutive_failures: 0,
            }),
            clock,
        }
    }

    /// Admits a call, or refuses it while the breaker is open or its probe is in flight. The
    /// call reports its outcome through the returned permit.
    pub fn admit(&self, settings: &BreakerSettings) -> Result<Permit<'_>, BreakerOpen> {
        let now = self.clock.now();
        let mut state = self.state.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until: Some(until) } if now >= until => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => return Err(BreakerOpen),
        };
        Ok(Permit {
            breaker: self,
            settings: *settings,
            probe,
            reported: false,
        })
    }

    fn record_success(&self) {
        *self.state.lock() = State::Closed {
            consecutive_failures: 0,
        };
    }

    /// Returns whether this failure opened the breaker (or started a new open period).
    fn record_failure(&self, settings: &BreakerSettings) -> bool {
        let now = self.clock.now();
        let mut state = self.state.lock();
        if let State::Closed {
            consecutive_failures,
        } = *state
        {
            let failures = consecutive_failures.saturating_add(1);
            if failures < settings.failure_threshold.max(1) {
                *state = State::Closed {
                    consecutive_failures: failures,
                };
                return false;
            }
        }
        *state = State::Open {
            until: now.checked_add(settings.open_for),
        };
        true
    }
}

/// An admitted call; report its outcome with [`Permit::succeeded`] or [`Permit::failed`].
///
/// Dropped without either, an ordinary call counts for nothing (a caller gave up, the upstream
/// said nothing), but the probe counts as a failure.
#[must_use = "report the call's outcome, or a probe counts as failed"]
pub struct Permit<'breaker> {
    breaker: &'breaker CircuitBreaker,
    settings: BreakerSettings,
    probe: bool,
    reported: bool,
}

impl Permit<'_> {
    /// Whether this call is the probe after an open period.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The upstream answered: the breaker closes.
    pub fn succeeded(mut self) {
        self.reported = true;
        self.breaker.record_success();
    }

    /// The upstream failed (unreachable, unavailable, no answer in time); returns whether the
    /// breaker opened because of it.
    pub fn failed(mut self) -> bool {
        self.reported = true;
        self.breaker.record_failure(&self.settings)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            tracing::debug!(
                "a circuit breaker probe ended without an outcome; the breaker re-opens"
            );
            self.breaker.record_failure(&self.settings);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;

    const SETTINGS: BreakerSettings = BreakerSettings {
        failure_threshold: 3,
        open_for: Duration::from_secs(10),
    };

    fn breaker() -> (CircuitBreaker, ManualMonotonicClock) {
        let clock = ManualMonotonicClock::new();
        (CircuitBreaker::new(clock.shared()), clock)
    }

    fn fail(breaker: &CircuitBreaker, times: u32) {
        for _ in 0..times {
            let _ = breaker.admit(&SETTINGS).expect("admitted").failed();
        }
    }

    #[test]
    fn consecutive_failures_open_the_breaker() {
        let (breaker, _clock) = breaker();
        let permit = breaker.admit(&SETTINGS).expect("closed");
        assert!(!permit.is_probe());
        assert!(!permit.failed(), "one failure of three");
        assert!(!breaker.admit(&SETTINGS).expect("closed").failed());
        assert!(breaker.admit(&SETTINGS).expect("closed").failed(), "third");
        assert_eq!(breaker.admit(&SETTINGS).err(), Some(BreakerOpen));
    }

    #[test]
    fn a_success_resets_the_count() {
        let (breaker, _clock) = breaker();
        fail(&breaker, 2);
        breaker.admit(&SETTINGS).expect("closed").succeeded();
        fail(&breaker, 2);
        assert!(
            breaker.admit(&SETTINGS).is_ok(),
            "two plus two is not three in a row"
        );
    }

    #[test]
    fn after_the_open_period_exactly_one_probe_goes_through() {
        let (breaker, clock) = breaker();
        fail(&breaker, 3);
        clock.advance(Duration::from_millis(9_999));
        assert!(breaker.admit(&SETTINGS).is_err(), "still open");

        clock.advance(Duration::from_millis(1));
        let probe = breaker.admit(&SETTINGS).expect("the probe");
        assert!(probe.is_probe());
        for _ in 0..5 {
            assert_eq!(
                breaker.admit(&SETTINGS).err(),
                Some(BreakerOpen),
                "concurrent calls wait for the probe"
            );
        }
        clock.advance(Duration::from_secs(60));
        assert!(breaker.admit(&SETTINGS).is_err(), "however long it takes");

        probe.succeeded();
        let after = breaker.admit(&SETTINGS).expect("closed again");
        assert!(!after.is_probe());
        assert!(breaker.admit(&SETTINGS).is_ok(), "every call goes through");
    }

    #[test]
    fn a_failed_probe_reopens_for_a_whole_open_period() {
        let (breaker, clock) = breaker();
        fail(&breaker, 3);
        clock.advance(SETTINGS.open_for);
        let probe = breaker.admit(&SETTINGS).expect("the probe");
        clock.advance(Duration::from_secs(2));
        assert!(probe.failed(), "one failure re-opens");

        clock.advance(Duration::from_millis(9_999));
        assert!(breaker.admit(&SETTINGS).is_err());
        clock.advance(Duration::from_millis(1));
        assert!(breaker.admit(&SETTINGS).expect("next probe").is_probe());
    }

    #[test]
    fn a_cancelled_probe_does_not_leave_the_breaker_half_open() {
        let (breaker, clock) = breaker();
        fail(&breaker, 3);
        clock.advance(SETTINGS.open_for);
        let call = async {
            let _probe = breaker.admit(&SETTINGS).expect("the probe");
            // The upstream never answers; the caller gives up (the future is dropped).
            std::future::pending::<()>().await;
        };
        assert_eq!(call.now_or_never(), None);

        assert!(breaker.admit(&SETTINGS).is_err(), "counted as a failure");
        clock.advance(SETTINGS.open_for);
        let next = breaker
            .admit(&SETTINGS)
            .expect("a new probe after the open period");
        assert!(next.is_probe());
        next.succeeded();
        assert!(breaker.admit(&SETTINGS).is_ok());
    }

    #[test]
    fn an_ordinary_call_dropped_without_an_outcome_counts_for_nothing() {
        let (breaker, _clock) = breaker();
        fail(&breaker, 2);
        for _ in 0..10 {
            drop(breaker.admit(&SETTINGS).expect("closed"));
        }
        assert!(breaker.admit(&SETTINGS).is_ok(), "still closed");
        assert!(breaker.admit(&SETTINGS).expect("closed").failed(), "third");
    }

    #[test]
    fn settings_come_with_each_call() {
        let (breaker, clock) = breaker();
        fail(&breaker, 1);
        let stricter = BreakerSettings {
            failure_threshold: 2,
            open_for: Duration::from_secs(1),
        };
        assert!(breaker.admit(&stricter).expect("closed").failed());
        clock.advance(Duration::from_secs(1));
        assert!(breaker.admit(&stricter).expect("the probe").is_probe());
    }

    #[test]
    fn extreme_settings_do_not_panic() {
        let (breaker, clock) = breaker();
        let zero = BreakerSettings {
            failure_threshold: 0,
            open_for: Duration::ZERO,
        };
        assert!(
            breaker.admit(&zero).expect("closed").failed(),
            "0 counts as 1"
        );
        let probe = breaker.admit(&zero).expect("open for no time: the probe");
        assert!(probe.is_probe());
        assert!(breaker.admit(&zero).is_err(), "one probe even so");
        drop(probe);

        let forever = BreakerSettings {
            failure_threshold: u32::MAX,
            open_for: Duration::MAX,
        };
        assert!(breaker.admit(&forever).expect("the probe").failed());
        clock.advance(Duration::from_secs(100 * 365 * 86_400));
        assert!(
            breaker.admit(&forever).is_err(),
            "open for longer than time"
        );
    }
}
