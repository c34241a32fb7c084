//! An injectable source of the current time, so that deadlines and expiry can be tested without
//! sleeping.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::{Duration, OffsetDateTime};

/// Nanoseconds in a millisecond.
const NANOS_PER_MILLI: i128 = 1_000_000;

/// A source of the current instant.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> OffsetDateTime;

    /// The current instant as milliseconds since the Unix epoch (UTC), rounded towards minus infinity.
    fn now_millis(&self) -> i64 {
        let millis = self
            .now()
            .unix_timestamp_nanos()
            .div_euclid(NANOS_PER_MILLI);
        // `OffsetDateTime` spans ±9999 years, about ±3.2e14 ms, so this always fits.
        i64::try_from(millis).unwrap_or(if millis < 0 { i64::MIN } else { i64::MAX })
    }
}

/// A clock shared between the service and whoever constructed it.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock, behind a [`SharedClock`].
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// The operating system's wall clock, in UTC.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to; clones share the same instant.
///
/// Keep one clone in the test and hand [`ManualClock::shared`] to the code under test.
#[derive(Clone, Debug)]
pub struct ManualClock {
    instant: Arc<Mutex<OffsetDateTime>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: OffsetDateTime) -> ManualClock {
        ManualClock {
            instant: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock by `step`, backwards if `step` is negative, saturating at the
    /// representable range.
    pub fn advance(&self, step: Duration) {
        let mut instant = self.lock();
        *instant = instant.saturating_add(step);
    }

    /// Moves the clock to `instant`.
    pub fn set(&self, instant: OffsetDateTime) {
        *self.lock() = instant;
    }

    /// A [`SharedClock`] that follows this clock.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }

    /// Locks the instant; a panic in another holder cannot leave an `OffsetDateTime` half-written.
    fn lock(&self) -> parking_lot::MutexGuard<'_, OffsetDateTime> {
        self.instant.lock()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.lock()
    }
}

/// The wall clock moved forward by an offset that only grows: what `shlyuz up --test-clock` gives
/// a target so a test or the demo can walk through a 48-hour window in seconds. Clones share the
/// offset.
#[derive(Clone, Debug, Default)]
pub struct AdjustableClock {
    offset_ms: Arc<AtomicI64>,
}

impl AdjustableClock {
    /// A clock that reads the wall clock until it is advanced.
    pub fn new() -> AdjustableClock {
        AdjustableClock::default()
    }

    /// Moves the clock forward by `step` (negative or zero steps are ignored: time never goes back,
    /// so deadlines already passed stay passed); returns the new offset.
    pub fn advance(&self, step: Duration) -> Duration {
        let step_ms = i64::try_from(step.whole_milliseconds()).unwrap_or(i64::MAX);
        if step_ms > 0 {
            let _ = self
                .offset_ms
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |offset| {
                    Some(offset.saturating_add(step_ms))
                });
        }
        self.offset()
    }

    /// How far this clock is ahead of the wall clock.
    pub fn offset(&self) -> Duration {
        Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }

    /// A [`SharedClock`] that follows this clock.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for AdjustableClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc().saturating_add(self.offset())
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn manual_clock_stays_put_until_advanced() {
        let clock = ManualClock::new(datetime!(2026-01-05 09:00 UTC));
        assert_eq!(clock.now(), datetime!(2026-01-05 09:00 UTC));
        assert_eq!(clock.now(), datetime!(2026-01-05 09:00 UTC));

        clock.advance(Duration::minutes(90));
        assert_eq!(clock.now(), datetime!(2026-01-05 10:30 UTC));

        clock.advance(Duration::seconds(-30));
        assert_eq!(clock.now(), datetime!(2026-01-05 10:29:30 UTC));
    }

    #[test]
    fn manual_clock_set_jumps_anywhere() {
        let clock = ManualClock::new(datetime!(2026-01-05 09:00 UTC));
        clock.set(datetime!(2020-02-29 23:59:59 UTC));
        assert_eq!(clock.now(), datetime!(2020-02-29 23:59:59 UTC));
        clock.advance(Duration::seconds(1));
        assert_eq!(clock.now(), datetime!(2020-03-01 00:00 UTC));
    }

    #[test]
    fn manual_clock_clones_share_the_instant() {
        let test_side = ManualClock::new(datetime!(2026-01-05 09:00 UTC));
        let service_side: SharedClock = test_side.shared();
        test_side.advance(Duration::days(3));
        assert_eq!(service_side.now(), datetime!(2026-01-08 09:00 UTC));

        let other_thread = test_side.clone();
        std::thread::spawn(move || other_thread.advance(Duration::hours(1)))
            .join()
            .unwrap();
        assert_eq!(service_side.now(), datetime!(2026-01-08 10:00 UTC));
    }

    #[test]
    fn now_millis_counts_from_the_epoch() {
        let clock = ManualClock::new(datetime!(1970-01-01 00:00:01.5 UTC));
        assert_eq!(clock.now_millis(), 1_500);
        clock.set(datetime!(2026-01-05 00:00 UTC));
        assert_eq!(clock.now_millis(), 1_767_571_200_000);
        // Before the epoch the value rounds down, like `floor`, so ordering is kept.
        clock.set(datetime!(1969-12-31 23:59:59.9995 UTC));
        assert_eq!(clock.now_millis(), -1);
    }

    #[test]
    fn manual_clock_advance_saturates() {
        let clock = ManualClock::new(datetime!(2026-01-05 09:00 UTC));
        clock.advance(Duration::MAX);
        assert!(clock.now().year() >= 9999);
    }

    #[test]
    fn system_clock_is_close_to_now() {
        let clock = system_clock();
        let before = OffsetDateTime::now_utc();
        let observed = clock.now();
        let after = OffsetDateTime::now_utc();
        assert!(before <= observed && observed <= after);
        assert!(clock.now_millis() >= before.unix_timestamp() * 1_000);
    }

    #[test]
    fn adjustable_clock_only_moves_forward_and_clones_follow() {
        let clock = AdjustableClock::new();
        let service_side = clock.shared();
        let before = OffsetDateTime::now_utc();
        assert!(service_side.now() >= before);
        assert!(service_side.now() - before < Duration::hours(1));

        assert_eq!(clock.advance(Duration::hours(48)), Duration::hours(48));
        let moved = service_side.now() - OffsetDateTime::now_utc();
        assert!(
            moved > Duration::hours(47) && moved <= Duration::hours(48),
            "{moved}"
        );

        assert_eq!(clock.advance(Duration::hours(-100)), Duration::hours(48));
        assert_eq!(clock.advance(Duration::ZERO), Duration::hours(48));
        assert_eq!(
            clock.clone().advance(Duration::minutes(1)),
            Duration::minutes(48 * 60 + 1)
        );
        assert_eq!(clock.offset(), Duration::minutes(48 * 60 + 1));
    }
}
