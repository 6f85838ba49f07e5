//! The time an invocation has left. A Lambda batch runs inside [`scope`] with the invocation's
//! deadline, and every call that can wait (HTTP, retry sleeps) asks [`bound`] how long it may
//! take, so nothing started is still running when Lambda stops the function. Outside a scope
//! (the local runner, tests) there is no deadline and [`bound`] changes nothing.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// What [`bound`] keeps back from the time left: room for the consumer to record the outcome
/// of a call that used its whole bound (defer or dead-letter, event log) and for Lambda to get
/// the batch response.
pub const MARGIN: Duration = Duration::from_secs(2);

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `fut` with `deadline` as the time everything in it must be done by.
pub async fn scope<F: Future>(deadline: Instant, fut: F) -> F::Output {
    DEADLINE.scope(deadline, fut).await
}

/// The deadline of the current scope, if any.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// The time left before the current scope's deadline (zero once it has passed), or `None` when
/// there is no deadline.
pub fn remaining() -> Option<Duration> {
    current().map(|d| d.saturating_duration_since(Instant::now()))
}

/// `budget`, shortened to what is left before the deadline less [`MARGIN`] (zero once that has
/// passed). Unchanged without a deadline.
pub fn bound(budget: Duration) -> Duration {
    match remaining() {
        Some(left) => budget.min(left.saturating_sub(MARGIN)),
        None => budget,
    }
}

/// The deadline a Lambda context gives (`Context::deadline`, milliseconds since the Unix epoch)
/// as an [`Instant`] on tokio's clock; a deadline already past is now.
pub fn from_epoch_millis(deadline_ms: u64) -> Instant {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms);
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + left
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bound_is_the_budget_capped_by_the_time_left_less_the_margin() {
        assert_eq!(remaining(), None);
        assert_eq!(bound(Duration::from_secs(20)), Duration::from_secs(20));

        let deadline = Instant::now() + Duration::from_secs(12);
        scope(deadline, async {
            assert_eq!(remaining(), Some(Duration::from_secs(12)));
            assert_eq!(bound(Duration::from_secs(20)), Duration::from_secs(10));
            assert_eq!(bound(Duration::from_secs(3)), Duration::from_secs(3));
            tokio::time::sleep(Duration::from_secs(11)).await;
            assert_eq!(bound(Duration::from_secs(20)), Duration::ZERO);
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(remaining(), Some(Duration::ZERO), "past the deadline");
        })
        .await;
        assert_eq!(remaining(), None, "only inside the scope");
    }

    #[tokio::test]
    async fn a_lambda_deadline_in_epoch_millis_becomes_the_time_left() {
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let left = from_epoch_millis(now_ms + 30_000).saturating_duration_since(Instant::now());
        assert!(
            left <= Duration::from_secs(30) && left > Duration::from_secs(20),
            "{left:?}"
        );
        assert!(
            from_epoch_millis(now_ms - 5_000) <= Instant::now(),
            "already past"
        );
    }
}
