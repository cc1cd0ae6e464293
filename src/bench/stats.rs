//! Throughput and latency percentiles of one measured phase.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    pub calls: u64,
    pub errors: u64,
    pub seconds: f64,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

impl PhaseStats {
    /// `latencies_us` are the successful calls' latencies in microseconds.
    pub fn from_samples(mut latencies_us: Vec<u32>, errors: u64, elapsed: Duration) -> Self {
        latencies_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if latencies_us.is_empty() {
                return 0.0;
            }
            // Nearest rank; the epsilon keeps 0.9 × 1000 from rounding up to 901.
            let rank = ((p * latencies_us.len() as f64) / 100.0 - 1e-9).ceil() as usize;
            f64::from(latencies_us[rank.clamp(1, latencies_us.len()) - 1]) / 1000.0
        };
        let calls = latencies_us.len() as u64;
        let seconds = elapsed.as_secs_f64();
        Self {
            calls,
            errors,
            seconds,
            throughput_per_s: if seconds > 0.0 {
                calls as f64 / seconds
            } else {
                0.0
            },
            p50_ms: pct(50.0),
            p90_ms: pct(90.0),
            p99_ms: pct(99.0),
            p999_ms: pct(99.9),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        let s = PhaseStats::from_samples(samples, 2, Duration::from_secs(2));
        assert_eq!(s.calls, 1000);
        assert_eq!(s.throughput_per_s, 500.0);
        assert_eq!(s.p50_ms, 500.0);
        assert_eq!(s.p90_ms, 900.0);
        assert_eq!(s.p99_ms, 990.0);
        assert_eq!(s.p999_ms, 999.0);
    }
}
