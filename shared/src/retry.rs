//! Backoff: exponential from about 2 s, doubling, capped at 5 minutes, with jitter; a longer
//! `Retry-After` wins. The attempt budget (default 18, about an hour of trying) ends in the DLQ.
//! [`Pause`] holds every caller of one remote while it has asked (`Retry-After`) to be left alone.

use std::sync::Mutex;
use std::time::Duration;

// Tokio's clock: identical in production, pausable in tests.
use tokio::time::Instant;

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

/// A "not before" instant shared by every caller of one remote (one HTTP client): a 429, or a 503
/// with `Retry-After`, answered to any call holds all of them, so the next entity's call does not
/// go out early during a 429 storm. Checked before every request.
#[derive(Debug, Default)]
pub struct Pause {
    /// Until when, and the status that asked for it.
    until: Mutex<Option<(Instant, u16)>>,
}

/// The longest a pause holds: a larger `Retry-After` (a header like that is a bug, and would
/// overflow the clock) is cut to this; the message's own backoff still honours it in full.
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// A pause that a caller could not (or would not) wait out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// How much of the pause is left: the `Retry-After` to pass on.
    pub remaining: Duration,
    /// The status (429 or 503) that asked for the pause.
    pub status: u16,
}

impl Pause {
    /// Holds every caller for `wait` from now, because the remote answered `status`. A pause
    /// already running longer is kept: a shorter `Retry-After` never shortens it.
    pub fn hold(&self, status: u16, wait: Duration) {
        let until = Instant::now() + wait.min(MAX_PAUSE);
        let mut slot = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none_or(|(current, _)| current < until) {
            *slot = Some((until, status));
        }
    }

    /// What is left of the pause, if one is running.
    pub fn remaining(&self) -> Option<Held> {
        let slot = *self.until.lock().unwrap_or_else(|p| p.into_inner());
        let (until, status) = slot?;
        let remaining = until.saturating_duration_since(Instant::now());
        (!remaining.is_zero()).then_some(Held { remaining, status })
    }

    /// Waits out the pause when that takes less than `max_wait`; else returns at once with what
    /// is left, so the caller fails fast instead of sleeping past its budget.
    pub async fn wait(&self, max_wait: Duration) -> Result<(), Held> {
        // Loops because another caller may extend the pause while this one sleeps.
        while let Some(held) = self.remaining() {
            if held.remaining >= max_wait {
                return Err(held);
            }
            tokio::time::sleep(held.remaining).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_until_its_end_and_a_shorter_retry_after_never_shortens_it() {
        let pause = Pause::default();
        assert_eq!(pause.remaining(), None);
        assert_eq!(pause.wait(Duration::ZERO).await, Ok(()));
        pause.hold(429, Duration::from_secs(10));
        pause.hold(503, Duration::from_secs(3));
        let held = pause
            .wait(Duration::from_secs(5))
            .await
            .expect_err("10 s > 5 s");
        assert_eq!(
            held,
            Held {
                remaining: Duration::from_secs(10),
                status: 429
            }
        );
        let start = Instant::now();
        assert_eq!(pause.wait(Duration::from_secs(11)).await, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(pause.remaining(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurd_retry_after_holds_for_at_most_an_hour() {
        let pause = Pause::default();
        pause.hold(429, Duration::MAX);
        assert_eq!(pause.remaining().map(|h| h.remaining), Some(MAX_PAUSE));
    }

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
