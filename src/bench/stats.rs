//! Latency percentiles of a benchmark run.

/// Latency distribution of the successful calls of one scenario, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    /// Calls measured.
    pub count: usize,
    /// Median latency.
    pub p50_us: u64,
    /// 99th-percentile latency.
    pub p99_us: u64,
    /// Slowest call.
    pub max_us: u64,
}

impl LatencySummary {
    /// Sorts `latencies_us` and takes its percentiles; all zero when nothing was measured.
    pub fn from_latencies(mut latencies_us: Vec<u64>) -> LatencySummary {
        latencies_us.sort_unstable();
        LatencySummary {
            count: latencies_us.len(),
            p50_us: percentile(&latencies_us, 0.50).unwrap_or(0),
            p99_us: percentile(&latencies_us, 0.99).unwrap_or(0),
            max_us: latencies_us.last().copied().unwrap_or(0),
        }
    }
}

/// The nearest-rank percentile of an ascending slice: the smallest value such that at least
/// `fraction` of the values are less than or equal to it. `None` for an empty slice.
///
/// `fraction` is clamped to `0.0..=1.0`; 0 gives the minimum, 1 the maximum.
pub fn percentile(sorted_ascending: &[u64], fraction: f64) -> Option<u64> {
    if sorted_ascending.is_empty() {
        return None;
    }
    let fraction = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    let rank = (fraction * sorted_ascending.len() as f64).ceil() as usize;
    let index = rank.saturating_sub(1).min(sorted_ascending.len() - 1);
    Some(sorted_ascending[index])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_nothing_is_none() {
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn percentile_uses_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), Some(50));
        assert_eq!(percentile(&values, 0.99), Some(99));
        assert_eq!(percentile(&values, 0.999), Some(100));
        assert_eq!(percentile(&values, 1.0), Some(100));
        assert_eq!(percentile(&values, 0.0), Some(1));
    }

    #[test]
    fn percentile_of_a_small_sample_rounds_up() {
        let values = [10, 20, 30];
        assert_eq!(percentile(&values, 0.50), Some(20));
        assert_eq!(percentile(&values, 0.99), Some(30));
        assert_eq!(percentile(&[7], 0.99), Some(7));
    }

    #[test]
    fn percentile_clamps_out_of_range_fractions() {
        let values = [1, 2, 3];
        assert_eq!(percentile(&values, -1.0), Some(1));
        assert_eq!(percentile(&values, 2.0), Some(3));
        assert_eq!(percentile(&values, f64::NAN), Some(1));
    }

    #[test]
    fn summary_sorts_before_taking_percentiles() {
        let mut latencies: Vec<u64> = (1..=1000).rev().collect();
        latencies.push(5_000);
        let summary = LatencySummary::from_latencies(latencies);
        assert_eq!(summary.count, 1001);
        assert_eq!(summary.p50_us, 501);
        assert_eq!(summary.p99_us, 991);
        assert_eq!(summary.max_us, 5_000);
    }

    #[test]
    fn summary_of_nothing_is_zero() {
        assert_eq!(
            LatencySummary::from_latencies(Vec::new()),
            LatencySummary::default()
        );
    }
}
