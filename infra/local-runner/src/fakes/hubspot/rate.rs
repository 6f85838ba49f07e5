//! HubSpot's rate limits: a rolling 10-second window per token (100 on Free/Starter, 190, 250),
//! a daily allowance that resets at midnight in the account's time zone, and a separate, lower
//! per-second limit on the search endpoints. Each answer carries the `X-HubSpot-RateLimit-*`
//! headers; a refused request gets a 429 whose `policyName` says which limit it hit.
//!
//! Hand-written rather than `governor` (which is not in Cargo.lock either): governor implements
//! GCRA, a leaky bucket that, after a burst of N, admits another request every window/N. That
//! lets more than N requests into one rolling 10-second window (N at t=0, one more at t=0.1 s),
//! which is exactly what the connector's rate-limit tests must be able to catch. HubSpot's limit
//! is "at most N in any 10 seconds", so the fake keeps the accepted requests' times and counts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::errors::correlation_id;

/// Which limit a 429 reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The rolling 10-second window (`policyName: TEN_SECONDLY_ROLLING`).
    TenSecondly,
    /// The daily allowance (`policyName: DAILY`).
    Daily,
    /// The search endpoints' per-second limit (a body without `policyName`, as recorded from
    /// real search 429s).
    SearchSecondly,
}

/// The 429 body HubSpot sends for `policy`.
pub fn limit_body(policy: Policy) -> Value {
    match policy {
        Policy::TenSecondly => json!({
            "status": "error",
            "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(),
            "policyName": "TEN_SECONDLY_ROLLING",
            "requestId": correlation_id(),
            "category": "RATE_LIMITS",
        }),
        Policy::Daily => json!({
            "status": "error",
            "message": "You have reached your daily limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(),
            "policyName": "DAILY",
            "requestId": correlation_id(),
            "category": "RATE_LIMITS",
        }),
        Policy::SearchSecondly => json!({
            "status": "error",
            "message": "You have reached your secondly limit.",
            "correlationId": correlation_id(),
            "category": "RATE_LIMITS",
        }),
    }
}

/// At most `limit` accepted requests in any `window`.
#[derive(Clone, Debug)]
pub struct RollingWindow {
    pub limit: u32,
    pub window: Duration,
    hits: VecDeque<Instant>,
}

impl RollingWindow {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            hits: VecDeque::new(),
        }
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&t) = self.hits.front() {
            if now.saturating_duration_since(t) >= self.window {
                self.hits.pop_front();
            } else {
                break;
            }
        }
    }

    /// Requests accepted in the window ending now.
    pub fn used(&mut self, now: Instant) -> u32 {
        self.prune(now);
        self.hits.len() as u32
    }

    /// `Err(wait)` when full: the time until the oldest request leaves the window.
    fn check(&mut self, now: Instant) -> Result<(), Duration> {
        self.prune(now);
        if self.hits.len() as u32 >= self.limit {
            let oldest = self.hits.front().copied().unwrap_or(now);
            Err(self
                .window
                .saturating_sub(now.saturating_duration_since(oldest)))
        } else {
            Ok(())
        }
    }

    fn take(&mut self, now: Instant) {
        self.hits.push_back(now);
    }
}

/// The daily allowance: `used` counts the account's requests on `day` (days since the epoch in
/// the account's time zone).
#[derive(Clone, Debug)]
pub struct Daily {
    pub limit: u64,
    pub used: u64,
    day: i64,
    offset_ms: i64,
}

impl Daily {
    fn roll(&mut self, now_ms: i64) {
        let day = (now_ms + self.offset_ms).div_euclid(86_400_000);
        if day != self.day {
            self.day = day;
            self.used = 0;
        }
    }

    /// Milliseconds until the next midnight in the account's time zone.
    fn until_reset(&self, now_ms: i64) -> i64 {
        86_400_000 - (now_ms + self.offset_ms).rem_euclid(86_400_000)
    }
}

/// What the rate limits stand at (see [`super::HubSpotFake::rate_state`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateState {
    pub ten_second_limit: Option<u32>,
    /// Requests accepted in the last 10 seconds.
    pub in_window: u32,
    pub daily_limit: Option<u64>,
    pub daily_used: u64,
    pub search_per_second: Option<u32>,
    pub search_in_window: u32,
}

/// The header values an answer carries.
#[derive(Clone, Debug, Default)]
pub struct Headers {
    daily: Option<(u64, u64)>,
    interval: Option<(u32, u32)>,
    secondly: Option<(u32, u32)>,
}

impl Headers {
    pub fn apply(&self, h: &mut HeaderMap) {
        let mut put = |k: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        };
        if let Some((max, left)) = self.daily {
            put("x-hubspot-ratelimit-daily", max.to_string());
            put("x-hubspot-ratelimit-daily-remaining", left.to_string());
        }
        if let Some((max, left)) = self.interval {
            put("x-hubspot-ratelimit-interval-milliseconds", "10000".into());
            put("x-hubspot-ratelimit-max", max.to_string());
            put("x-hubspot-ratelimit-remaining", left.to_string());
        }
        if let Some((max, left)) = self.secondly {
            put("x-hubspot-ratelimit-secondly", max.to_string());
            put("x-hubspot-ratelimit-secondly-remaining", left.to_string());
        }
    }
}

/// A refusal: the policy, and when retrying could succeed.
#[derive(Clone, Copy, Debug)]
pub struct Limited {
    pub policy: Policy,
    pub retry_in: Duration,
}

/// The three limits of one token.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    ten: Option<RollingWindow>,
    daily: Option<Daily>,
    search: Option<RollingWindow>,
}

impl RateLimiter {
    pub fn new(
        ten_second: Option<u32>,
        daily: Option<u64>,
        search_per_second: Option<u32>,
        daily_reset_utc_offset_minutes: i32,
    ) -> Self {
        Self {
            ten: ten_second.map(|n| RollingWindow::new(n, Duration::from_secs(10))),
            daily: daily.map(|limit| Daily {
                limit,
                used: 0,
                day: i64::MIN,
                offset_ms: daily_reset_utc_offset_minutes as i64 * 60_000,
            }),
            search: search_per_second.map(|n| RollingWindow::new(n, Duration::from_secs(1))),
        }
    }

    /// Counts a request when every limit admits it; a refused request is not counted.
    pub fn admit(
        &mut self,
        now: Instant,
        now_ms: i64,
        search: bool,
    ) -> (Headers, Result<(), Limited>) {
        if let Some(d) = &mut self.daily {
            d.roll(now_ms);
        }
        let verdict = self.check(now, now_ms, search);
        if verdict.is_ok() {
            if let Some(d) = &mut self.daily {
                d.used += 1;
            }
            if let Some(w) = &mut self.ten {
                w.take(now);
            }
            if search && let Some(w) = &mut self.search {
                w.take(now);
            }
        }
        (self.headers(now, search), verdict)
    }

    fn check(&mut self, now: Instant, now_ms: i64, search: bool) -> Result<(), Limited> {
        if let Some(d) = &self.daily
            && d.used >= d.limit
        {
            return Err(Limited {
                policy: Policy::Daily,
                retry_in: Duration::from_millis(d.until_reset(now_ms) as u64),
            });
        }
        if let Some(w) = &mut self.ten {
            w.check(now).map_err(|retry_in| Limited {
                policy: Policy::TenSecondly,
                retry_in,
            })?;
        }
        if search && let Some(w) = &mut self.search {
            w.check(now).map_err(|retry_in| Limited {
                policy: Policy::SearchSecondly,
                retry_in,
            })?;
        }
        Ok(())
    }

    pub fn headers(&mut self, now: Instant, search: bool) -> Headers {
        Headers {
            daily: self
                .daily
                .as_ref()
                .map(|d| (d.limit, d.limit.saturating_sub(d.used))),
            interval: self.ten.as_mut().map(|w| {
                let used = w.used(now);
                (w.limit, w.limit.saturating_sub(used))
            }),
            secondly: if search {
                self.search.as_mut().map(|w| {
                    let used = w.used(now);
                    (w.limit, w.limit.saturating_sub(used))
                })
            } else {
                None
            },
        }
    }

    pub fn state(&mut self, now: Instant, now_ms: i64) -> RateState {
        if let Some(d) = &mut self.daily {
            d.roll(now_ms);
        }
        RateState {
            ten_second_limit: self.ten.as_ref().map(|w| w.limit),
            in_window: self.ten.as_mut().map_or(0, |w| w.used(now)),
            daily_limit: self.daily.as_ref().map(|d| d.limit),
            daily_used: self.daily.as_ref().map_or(0, |d| d.used),
            search_per_second: self.search.as_ref().map(|w| w.limit),
            search_in_window: self.search.as_mut().map_or(0, |w| w.used(now)),
        }
    }
}

/// The most of `times` (sorted or not) that fall in any half-open interval of length `window`.
pub fn max_in_any_window(times: &[Duration], window: Duration) -> usize {
    let mut t: Vec<Duration> = times.to_vec();
    t.sort();
    let (mut best, mut start) = (0, 0);
    for end in 0..t.len() {
        while t[end] - t[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}
