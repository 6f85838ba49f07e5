//! HubSpot's HTTP API as the connector, the setup command and the notes poll call it: bearer
//! auth, the rolling 10-second budget, 429s read by `policyName`, HubSpot's error bodies turned
//! into errors that say what HubSpot said (docs/crm-connectors.md 2.2, 2.10, 2.11).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::Method;
use serde_json::Value;

use crate::crm::CrmError;
use crate::deadline;
use crate::metrics::Observe as _;
use crate::retry::Pause;
use crate::secret::Secret;
use crate::wire::{encode_segment, http_client, parse_retry_after, truncate, without_url};

/// HubSpot's burst window (docs/crm-connectors.md 2.10).
pub const WINDOW: Duration = Duration::from_secs(10);
/// How long a 10-second 429 that names no time holds every caller: the window.
const TEN_SECONDLY_PAUSE: Duration = WINDOW;
/// A daily-limit 429: every caller holds this long, and the event is retried after an hour
/// (the limit resets at midnight in the account's time zone, which we do not know), until its
/// attempt budget ends in the DLQ with the reason.
const DAILY_PAUSE: Duration = Duration::from_secs(15 * 60);
const DAILY_RETRY: Duration = Duration::from_secs(3600);
/// The longest a call waits for a slot in the budget before giving up as transient.
const MAX_BUDGET_WAIT: Duration = Duration::from_secs(12);

/// What went wrong with one call, for the caller to decide on.
#[derive(Debug)]
pub enum HubSpotError {
    /// 404: no such record (by id or by `idProperty`).
    NotFound(String),
    /// 409: HubSpot's conflict, with the existing record's id when it names one ("Contact already
    /// exists. Existing ID: 512").
    Conflict {
        existing_id: Option<String>,
        message: String,
    },
    /// Anything else: transient or permanent, as the connector reports it.
    Crm(CrmError),
}

impl From<CrmError> for HubSpotError {
    fn from(e: CrmError) -> Self {
        Self::Crm(e)
    }
}

impl HubSpotError {
    /// The error as the connector reports it; `NotFound` and `Conflict` become permanent
    /// rejections naming `what`.
    pub fn into_crm(self, what: &str) -> CrmError {
        match self {
            Self::Crm(e) => e,
            Self::NotFound(message) => CrmError::Rejected {
                status: 404,
                message: format!("{what}: {message}"),
            },
            Self::Conflict { message, .. } => CrmError::Rejected {
                status: 409,
                message: format!("{what}: {message}"),
            },
        }
    }
}

/// The rolling 10-second budget. `governor` implements GCRA, not a sliding log: with a burst of
/// `b` and one cell every `10 s / (n - b - 1)`, no 10-second window can hold more than `n`
/// requests (`b` + the cells replenished in 10 s), while the sustained rate stays near `n`.
pub struct Budget {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    pub per_window: u32,
}

impl Budget {
    pub fn new(per_window: u32) -> Self {
        Self::with_window(per_window, WINDOW)
    }

    /// A budget over another window length (tests use a short one).
    pub fn with_window(per_window: u32, window: Duration) -> Self {
        let n = per_window.max(3);
        let burst = (n / 10).max(1);
        let steady = n - burst - 1;
        let period = window / steady.max(1);
        let clock = DefaultClock::default();
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            per_window,
        }
    }

    /// Waits for a slot, at most `max_wait`; else returns how long it would have taken. `Ok`
    /// holds when the slot was granted.
    pub async fn acquire(&self, max_wait: Duration) -> Result<std::time::Instant, Duration> {
        loop {
            match self.limiter.check() {
                Ok(()) => return Ok(std::time::Instant::now()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    if wait > max_wait {
                        return Err(wait);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

pub struct HubSpotApi {
    http: reqwest::Client,
    base_url: String,
    token: Secret,
    budget: Budget,
    /// Set by a 429 (or a 5xx with `Retry-After`), checked before every call.
    pause: Pause,
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl HubSpotApi {
    pub fn new(
        base_url: &str,
        token: Secret,
        timeout: Duration,
        per_window: u32,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: http_client(timeout)?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
            budget: Budget::new(per_window),
            pause: Pause::default(),
        })
    }

    /// One call. `path` starts with `/` and is already encoded.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, HubSpotError> {
        if let Some(held) = self.pause.remaining() {
            return Err(CrmError::Unavailable {
                status: None,
                detail: format!(
                    "not sent: HubSpot answered {} to an earlier call and asked every caller to wait",
                    held.status
                ),
                retry_after: Some(held.remaining),
            }
            .into());
        }
        if let Err(wait) = self.budget.acquire(deadline::bound(MAX_BUDGET_WAIT)).await {
            return Err(CrmError::Unavailable {
                status: None,
                detail: format!(
                    "not sent: the HubSpot budget of {} calls per 10 s is spent",
                    self.budget.per_window
                ),
                retry_after: Some(wait),
            }
            .into());
        }
        let mut url = format!("{}{path}", self.base_url);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&encode_segment(k));
            url.push('=');
            url.push_str(&encode_segment(v));
        }
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose())
            .header("accept", "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(left) = deadline::remaining() {
            req = req.timeout(deadline::bound(left));
        }
        let req = req.observed(crate::metrics::Target::Crm);
        let resp = req.send().await.map_err(|e| CrmError::Unavailable {
            status: None,
            detail: format!("HubSpot call failed: {}", without_url(&e, "<hubspot>")),
            retry_after: None,
        })?;
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(|e| CrmError::Unavailable {
            status: Some(status),
            detail: format!(
                "reading HubSpot's answer failed: {}",
                without_url(&e, "<hubspot>")
            ),
            retry_after: None,
        })?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(truncate(&String::from_utf8_lossy(&bytes), 300)))
        };
        if (200..300).contains(&status) {
            return Ok(Answer { status, body });
        }
        Err(self.classify(status, &body, retry_after))
    }

    fn classify(&self, status: u16, body: &Value, retry_after: Option<Duration>) -> HubSpotError {
        let message = error_message(body);
        match status {
            404 => HubSpotError::NotFound(message),
            409 => HubSpotError::Conflict {
                existing_id: existing_id(&message),
                message,
            },
            429 => {
                let policy = body.get("policyName").and_then(Value::as_str).unwrap_or("");
                if policy.eq_ignore_ascii_case("DAILY") {
                    self.pause.hold(429, DAILY_PAUSE);
                    CrmError::Unavailable {
                        status: Some(429),
                        detail: format!("HubSpot's daily API limit is reached (policy DAILY): {message}"),
                        retry_after: Some(retry_after.unwrap_or(DAILY_RETRY).max(DAILY_PAUSE)),
                    }
                    .into()
                } else {
                    let wait = retry_after.unwrap_or(TEN_SECONDLY_PAUSE);
                    self.pause.hold(429, wait);
                    CrmError::Unavailable {
                        status: Some(429),
                        detail: format!(
                            "HubSpot rate limit (policy {}): {message}",
                            if policy.is_empty() { "not named" } else { policy }
                        ),
                        retry_after: Some(wait),
                    }
                    .into()
                }
            }
            // 423: the record is locked by a concurrent write; retry.
            423 | 500..=599 => {
                if let Some(wait) = retry_after {
                    self.pause.hold(status, wait);
                }
                CrmError::Unavailable {
                    status: Some(status),
                    detail: message,
                    retry_after,
                }
                .into()
            }
            401 | 403 => CrmError::Rejected {
                status,
                message: format!(
                    "HubSpot refused the access token (HUBSPOT_ACCESS_TOKEN invalid or missing a scope): {message}"
                ),
            }
            .into(),
            _ => CrmError::Rejected { status, message }.into(),
        }
    }
}

/// HubSpot's error body as one line: category, message, and every item's message (which names
/// the property), plus the correlation id support asks for. Every field is optional.
pub fn error_message(body: &Value) -> String {
    let Some(obj) = body.as_object() else {
        return match body {
            Value::Null => "no body".to_owned(),
            Value::String(s) => s.clone(),
            other => truncate(&other.to_string(), 300),
        };
    };
    let mut parts = Vec::new();
    if let Some(c) = obj.get("category").and_then(Value::as_str) {
        parts.push(c.to_owned());
    }
    if let Some(m) = obj.get("message").and_then(Value::as_str) {
        parts.push(m.to_owned());
    }
    if let Some(items) = obj.get("errors").and_then(Value::as_array) {
        for it in items {
            if let Some(m) = it.get("message").and_then(Value::as_str) {
                parts.push(m.to_owned());
            }
        }
    }
    if parts.is_empty() {
        parts.push(truncate(&body.to_string(), 300));
    }
    let mut text = parts.join(": ");
    if let Some(id) = obj.get("correlationId").and_then(Value::as_str) {
        text.push_str(&format!(" (correlationId {id})"));
    }
    truncate(&text, 1000)
}

/// The id in "... Existing ID: 512".
pub fn existing_id(message: &str) -> Option<String> {
    let at = message.find("Existing ID:")? + "Existing ID:".len();
    let digits: String = message[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then_some(digits)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn error_bodies_become_one_line_naming_the_property() {
        let body = json!({"status": "error", "message": "Property values were not valid",
            "correlationId": "00000000-0000-0000-0000-000000000001", "category": "VALIDATION_ERROR",
            "errors": [{"message": "Property \"panel_cnt\" does not exist", "code": "PROPERTY_DOESNT_EXIST"}]});
        assert_eq!(
            error_message(&body),
            "VALIDATION_ERROR: Property values were not valid: Property \"panel_cnt\" does not exist (correlationId 00000000-0000-0000-0000-000000000001)"
        );
        assert_eq!(error_message(&Value::Null), "no body");
        assert_eq!(error_message(&json!({})), "{}");
    }

    #[test]
    fn the_existing_contact_id_is_read_from_a_conflict() {
        assert_eq!(
            existing_id("Contact already exists. Existing ID: 512").as_deref(),
            Some("512")
        );
        assert_eq!(existing_id("Contact already exists."), None);
    }

    #[tokio::test]
    async fn the_budget_never_lets_more_than_its_size_into_any_window() {
        // A 300 ms window instead of 10 s; the arithmetic is the same.
        let window = Duration::from_millis(300);
        let budget = Budget::with_window(20, window);
        let mut sent = Vec::new();
        while sent.len() < 70 {
            sent.push(budget.acquire(Duration::from_secs(5)).await.unwrap());
        }
        // 5 ms of slack for the time between the grant and reading the clock.
        let span = window - Duration::from_millis(5);
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .filter(|u| u.duration_since(*t) < span)
                .count();
            assert!(
                in_window <= 20,
                "{in_window} calls in the window from call {i}"
            );
        }
    }
}
