//! The sweep's own share of Enerflo's per-key limit: a sliding one-minute window over every call
//! the engine makes, shared by all runs in a process (a warm Lambda, the local runner's interval).
//! It never sends a call that would make more than `per_minute` in any 60 seconds, and it never
//! waits past the invocation's deadline: it says how long it would have to wait instead.
//!
//! The reconcile function's Enerflo client keeps the same limit on its HTTP requests, retries
//! included (`crate::enerflo::client`), so a retried call does not exceed it either.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
// Tokio's clock: pausable in tests.
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);

pub struct CallBudget {
    per_minute: usize,
    sent: Mutex<VecDeque<Instant>>,
}

impl CallBudget {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: (per_minute as usize).max(1),
            sent: Mutex::new(VecDeque::new()),
        }
    }

    pub fn per_minute(&self) -> usize {
        self.per_minute
    }

    /// Takes a slot now, or says how long until one is free.
    pub async fn try_take(&self) -> Result<(), Duration> {
        let mut sent = self.sent.lock().await;
        let now = Instant::now();
        while sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            sent.pop_front();
        }
        if sent.len() < self.per_minute {
            sent.push_back(now);
            return Ok(());
        }
        Err(sent
            .front()
            .map(|t| WINDOW.saturating_sub(now.duration_since(*t)))
            .unwrap_or_default()
            .max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_window_frees_a_slot_one_minute_after_its_oldest_call() {
        let b = CallBudget::new(2);
        assert!(b.try_take().await.is_ok());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(b.try_take().await.is_ok());
        assert_eq!(b.try_take().await, Err(Duration::from_secs(50)));
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert!(b.try_take().await.is_ok());
    }
}
