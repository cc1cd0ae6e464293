//! Brute-force throttling after NIST SP 800-63B-4: a few free failures, then a
//! delay that doubles with every further failure, then the templates are disabled
//! until the subject is re-enrolled. A success resets the count.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Consecutive failures allowed before any delay.
    pub free_failures: u32,
    /// Delay after the first failure past `free_failures`; doubles per further failure.
    pub base_delay: Duration,
    /// Consecutive failures after which the templates are disabled.
    pub disable_after: u32,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            free_failures: 5,
            base_delay: Duration::from_secs(30),
            disable_after: 50,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockoutState {
    Open,
    /// No attempt before this instant (Unix ms).
    LockedUntil(i64),
    /// Disabled until re-enrollment.
    Disabled,
}

impl LockoutPolicy {
    /// Longest delay, so that the doubling cannot overflow; far beyond any
    /// realistic attack window anyway.
    const MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

    /// The delay that must pass after the `failures`-th consecutive failure.
    pub fn delay_after(&self, failures: u32) -> Duration {
        if failures < self.free_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free_failures).min(32);
        self.base_delay
            .checked_mul(1u32 << doublings.min(31))
            .map_or(Self::MAX_DELAY, |d| d.min(Self::MAX_DELAY))
    }

    pub fn state(
        &self,
        failures: u32,
        last_failure_unix_ms: i64,
        now_unix_ms: i64,
    ) -> LockoutState {
        if failures >= self.disable_after {
            return LockoutState::Disabled;
        }
        let delay = self.delay_after(failures);
        if delay.is_zero() {
            return LockoutState::Open;
        }
        let until = last_failure_unix_ms.saturating_add(delay.as_millis() as i64);
        if now_unix_ms < until {
            LockoutState::LockedUntil(until)
        } else {
            LockoutState::Open
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000_000;

    #[test]
    fn four_failures_are_free() {
        let p = LockoutPolicy::default();
        assert_eq!(p.state(4, T0, T0), LockoutState::Open);
    }

    #[test]
    fn fifth_failure_locks_for_thirty_seconds() {
        let p = LockoutPolicy::default();
        assert_eq!(
            p.state(5, T0, T0 + 1),
            LockoutState::LockedUntil(T0 + 30_000)
        );
        assert_eq!(
            p.state(5, T0, T0 + 29_999),
            LockoutState::LockedUntil(T0 + 30_000)
        );
        assert_eq!(p.state(5, T0, T0 + 30_000), LockoutState::Open);
    }

    #[test]
    fn delay_doubles_per_further_failure() {
        let p = LockoutPolicy::default();
        assert_eq!(p.delay_after(5), Duration::from_secs(30));
        assert_eq!(p.delay_after(6), Duration::from_secs(60));
        assert_eq!(p.delay_after(7), Duration::from_secs(120));
        assert_eq!(p.delay_after(49), LockoutPolicy::MAX_DELAY);
    }

    #[test]
    fn fifty_failures_disable() {
        let p = LockoutPolicy::default();
        assert_eq!(p.state(50, T0, T0 + 10_000_000_000), LockoutState::Disabled);
        assert_eq!(p.state(u32::MAX, 0, 0), LockoutState::Disabled);
    }
}
