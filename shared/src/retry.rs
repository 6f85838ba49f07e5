//! Backoff: exponential from about 2 s, doubling, capped at 5 minutes, with jitter; a longer
//! `Retry-After` wins. The attempt budget (default 18, about an hour of trying) ends in the DLQ.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 18,
            base: Duration::from_secs(2),
            cap: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempt + 1`, after `attempt` failed ones (1-based). Jitter keeps
    /// 50-100 % of the exponential step so a burst of failures does not retry in lockstep.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.cap);
        let jittered = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
        match retry_after {
            Some(ra) if ra > jittered => ra,
            _ => jittered,
        }
    }

    pub fn exhausted(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }

    /// Total worst-case time the budget spans, for docs and sanity checks.
    pub fn budget(&self) -> Duration {
        (1..self.max_attempts)
            .map(|a| {
                self.base
                    .saturating_mul(1u32 << (a - 1).min(20))
                    .min(self.cap)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_two_seconds_and_cap_at_five_minutes() {
        let p = RetryPolicy::default();
        for (attempt, full) in [(1, 2), (2, 4), (3, 8), (8, 256), (9, 300), (30, 300)] {
            let d = p.delay(attempt, None);
            assert!(d <= Duration::from_secs(full), "attempt {attempt}: {d:?}");
            assert!(
                d >= Duration::from_secs(full) / 2,
                "attempt {attempt}: {d:?}"
            );
        }
    }

    #[test]
    fn longer_retry_after_wins_shorter_does_not() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(41))),
            Duration::from_secs(41)
        );
        assert!(p.delay(9, Some(Duration::from_secs(1))) >= Duration::from_secs(150));
    }

    #[test]
    fn default_budget_is_about_an_hour() {
        let b = RetryPolicy::default().budget();
        assert!(
            b >= Duration::from_secs(50 * 60) && b <= Duration::from_secs(80 * 60),
            "{b:?}"
        );
    }
}
