//! The one retry backoff policy: every place that waits before trying again doubles its wait from
//! an initial delay with each failed attempt, caps it, and may spread it with jitter so that calls
//! that failed together do not retry together.

use std::ops::Range;
use std::time::Duration;

/// How long to wait before the next attempt, from how many attempts have failed so far.
///
/// The wait doubles, saturating, so no attempt count and no initial or maximum delay can overflow
/// or panic; a zero initial delay stays zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// The jitter as factors of the un-jittered wait, `low..high`; `None` waits exactly.
    jitter: Option<(f64, f64)>,
}

impl Backoff {
    /// Waits `initial` after the first failed attempt, twice as long after each further one, at
    /// most `max` (before jitter).
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            jitter: None,
        }
    }

    /// Like [`Backoff::new`] with no cap but the longest `Duration`.
    pub const fn uncapped(initial: Duration) -> Backoff {
        Backoff::new(initial, Duration::MAX)
    }

    /// Spreads each wait uniformly from `percent.start` % up to (not including) `percent.end` %
    /// of the un-jittered wait, e.g. `50..150`. An empty range waits exactly `percent.start` %.
    pub fn with_jitter_percent(self, percent: Range<u32>) -> Backoff {
        let low = f64::from(percent.start) / 100.0;
        let high = f64::from(percent.end.max(percent.start)) / 100.0;
        Backoff {
            jitter: Some((low, high)),
            ..self
        }
    }

    /// The wait after `failed_attempts` failed attempts, without jitter: `initial` after the first
    /// (and for zero or a negative count), doubled for each further one, at most `max`.
    pub fn base_delay(&self, failed_attempts: i64) -> Duration {
        let doublings = failed_attempts.saturating_sub(1).max(0);
        let mut wait = self.initial.min(self.max);
        // Each doubling at least doubles a non-zero wait, so this ends within about 95 rounds
        // (one nanosecond to `Duration::MAX`) whatever the count.
        for _ in 0..doublings {
            if wait.is_zero() || wait >= self.max {
                break;
            }
            wait = wait.saturating_mul(2).min(self.max);
        }
        wait
    }

    /// The wait after `failed_attempts` failed attempts: [`Backoff::base_delay`] spread by the
    /// jitter, if any (saturating at the longest `Duration`).
    pub fn delay(&self, failed_attempts: i64) -> Duration {
        let base = self.base_delay(failed_attempts);
        let Some((low, high)) = self.jitter else {
            return base;
        };
        let factor = if low < high {
            rand::random_range(low..high)
        } else {
            low
        };
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_the_initial_delay_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(3600));
        assert_eq!(backoff.delay(1), Duration::from_secs(5));
        assert_eq!(backoff.delay(2), Duration::from_secs(10));
        assert_eq!(backoff.delay(4), Duration::from_secs(40));
        assert_eq!(backoff.delay(10), Duration::from_secs(2560));
        assert_eq!(backoff.delay(11), Duration::from_secs(3600));
        assert_eq!(backoff.delay(100), Duration::from_secs(3600));
    }

    #[test]
    fn no_attempt_count_panics_or_overflows() {
        let backoff = Backoff::new(Duration::from_millis(2_000), Duration::from_millis(300_000));
        assert_eq!(
            backoff.delay(0),
            Duration::from_secs(2),
            "zero counts as one"
        );
        assert_eq!(backoff.delay(-7), Duration::from_secs(2), "negative too");
        assert_eq!(backoff.delay(i64::MIN), Duration::from_secs(2));
        assert_eq!(backoff.delay(i64::MAX), Duration::from_secs(300));

        let uncapped = Backoff::uncapped(Duration::from_nanos(1));
        assert_eq!(uncapped.delay(i64::MAX), Duration::MAX);
        assert_eq!(uncapped.delay(64), Duration::from_nanos(1 << 63));
        assert_eq!(Backoff::uncapped(Duration::MAX).delay(2), Duration::MAX);
    }

    #[test]
    fn zero_delays_stay_zero() {
        assert_eq!(
            Backoff::uncapped(Duration::ZERO).delay(i64::MAX),
            Duration::ZERO
        );
        assert_eq!(
            Backoff::new(Duration::from_secs(1), Duration::ZERO).delay(3),
            Duration::ZERO,
            "a zero cap caps everything"
        );
        let jittered = Backoff::uncapped(Duration::ZERO).with_jitter_percent(50..150);
        assert_eq!(jittered.delay(4), Duration::ZERO);
    }

    #[test]
    fn a_cap_below_the_initial_delay_wins() {
        let backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(3));
        assert_eq!(backoff.delay(1), Duration::from_secs(3));
        assert_eq!(backoff.delay(5), Duration::from_secs(3));
    }

    #[test]
    fn jitter_spreads_the_wait_within_its_range() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
            .with_jitter_percent(50..150);
        let waits: Vec<Duration> = (0..200).map(|_| backoff.delay(3)).collect();
        for wait in &waits {
            assert!(
                *wait >= Duration::from_secs(2) && *wait < Duration::from_secs(6),
                "{wait:?} is outside 50–150 % of 4 s"
            );
        }
        assert!(
            waits.iter().any(|wait| *wait != waits[0]),
            "200 waits were all {:?}",
            waits[0]
        );
        assert_eq!(backoff.base_delay(3), Duration::from_secs(4));
    }

    #[test]
    fn jitter_applies_after_the_cap() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10))
            .with_jitter_percent(100..150);
        for _ in 0..50 {
            let wait = backoff.delay(40);
            assert!(
                wait >= Duration::from_secs(10) && wait < Duration::from_secs(15),
                "{wait:?}"
            );
        }
    }

    #[test]
    fn an_empty_jitter_range_waits_exactly_its_start() {
        let backoff = Backoff::uncapped(Duration::from_secs(2)).with_jitter_percent(150..150);
        assert_eq!(backoff.delay(1), Duration::from_secs(3));
        let (start, end) = (50, 10);
        let reversed = Backoff::uncapped(Duration::from_secs(2)).with_jitter_percent(start..end);
        assert_eq!(
            reversed.delay(1),
            Duration::from_secs(1),
            "a reversed range too"
        );
    }

    #[test]
    fn jitter_on_the_longest_wait_saturates() {
        let backoff = Backoff::uncapped(Duration::MAX).with_jitter_percent(100..400);
        assert_eq!(backoff.delay(3), Duration::MAX);
        let overflowing =
            Backoff::uncapped(Duration::from_secs(u64::MAX / 2)).with_jitter_percent(300..u32::MAX);
        assert_eq!(overflowing.delay(1), Duration::MAX);
    }
}
