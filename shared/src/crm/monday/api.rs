//! Monday.com's GraphQL API as the connector, the webhook route and the setup command call it
//! (docs/monday.md 2, 5): one `POST` per operation with the raw token as `Authorization` and the
//! pinned `API-Version`, an `Idempotency-Key` on every mutation, and every budget Monday keeps
//! respected before a call goes out:
//!
//! * the per-minute request limit, by a local budget of `MONDAY_RATE_LIMIT` requests a minute;
//! * the complexity budget, read from the `complexity` field every operation asks for: once what
//!   is left is below [`COMPLEXITY_RESERVE`], calls wait for the reset it names;
//! * the daily call limit, counted in the state table across every process (failed calls count,
//!   as Monday counts them): past `MONDAY_DAILY_CALL_BUDGET` nothing is sent until 00:00 UTC.
//!
//! Monday's own limit errors (HTTP 429, or `retry_in_seconds` in any answer) hold every caller of
//! the process for the time they give; a short one is waited out in the call, a longer one is
//! returned as transient with that `Retry-After`, so the message is retried then and, past its
//! attempt budget, dead-lettered with the reason. A GraphQL error inside a 200 is an error, with
//! Monday's code and message.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::crm::CrmError;
use crate::crm::hubspot::api::Budget;
use crate::deadline;
use crate::retry::Pause;
use crate::secret::Secret;
use crate::store::EventLog;
use crate::wire::{http_client, parse_retry_after, truncate, without_url};

/// Complexity points kept in hand: below this the next call waits for the budget's reset
/// (`create_item` costs about 10,000 points, docs/monday.md 5.1).
pub const COMPLEXITY_RESERVE: u64 = 60_000;
/// The longest a call waits in place (for a limit's reset, a slot of the minute budget) before
/// it gives up as transient and lets the queue retry it later.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(12);
/// When a limit error names no time.
const DEFAULT_LIMIT_WAIT: Duration = Duration::from_secs(30);
/// How long the daily counter of one UTC day is kept.
const DAY_COUNTER_TTL: u64 = 3 * 86_400;

/// What went wrong with one call.
#[derive(Debug)]
pub enum MondayError {
    /// The item, update or board named does not exist (`ResourceNotFoundException`,
    /// `InvalidItemIdException`): the caller may recreate or look further.
    NotFound(String),
    /// Anything else, transient or permanent, as the connector reports it.
    Crm(CrmError),
}

impl From<CrmError> for MondayError {
    fn from(e: CrmError) -> Self {
        Self::Crm(e)
    }
}

impl MondayError {
    /// The error as the connector reports it, naming `what` was being done.
    pub fn into_crm(self, what: &str) -> CrmError {
        match self {
            Self::NotFound(m) => CrmError::Rejected {
                status: 404,
                message: format!("{what}: {m}"),
            },
            Self::Crm(CrmError::Rejected { status, message }) => CrmError::Rejected {
                status,
                message: format!("{what}: {message}"),
            },
            Self::Crm(CrmError::Unavailable {
                status,
                detail,
                retry_after,
            }) => CrmError::Unavailable {
                status,
                detail: format!("{what}: {detail}"),
                retry_after,
            },
        }
    }
}

/// How many calls one exchange spent, for its log line (the calls an exchange costs are what
/// the daily limit is spent on).
#[derive(Debug, Default)]
pub struct Spend(AtomicU32);

impl Spend {
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The daily call limit, counted where every process sees it.
pub struct DailyBudget {
    pub counter: std::sync::Arc<dyn EventLog>,
    /// `MONDAY_DAILY_CALL_BUDGET`.
    pub limit: u32,
}

pub struct MondayApi {
    http: reqwest::Client,
    url: String,
    token: Secret,
    version: String,
    minute: Budget,
    daily: Option<DailyBudget>,
    /// Set by a limit error, checked before every call.
    pause: Pause,
    /// The complexity points left and when the budget resets, from the last answer.
    complexity: Mutex<Option<(u64, Instant)>>,
}

impl MondayApi {
    pub fn new(
        url: &str,
        token: Secret,
        version: &str,
        timeout: Duration,
        per_minute: u32,
        daily: Option<DailyBudget>,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: http_client(timeout)?,
            url: url.trim_end_matches('/').to_owned(),
            token,
            version: version.to_owned(),
            minute: Budget::with_window(per_minute, Duration::from_secs(60)),
            daily,
            pause: Pause::default(),
            complexity: Mutex::new(None),
        })
    }

    /// A query (`idempotency_key` `None`) or a mutation (`Some`): its `data`, or the error.
    /// `document` is one operation; `complexity { after reset_in_x_seconds }` is added to it.
    pub async fn call(
        &self,
        document: &str,
        variables: Value,
        idempotency_key: Option<&str>,
        spend: &Spend,
    ) -> Result<Answer, MondayError> {
        let document = with_complexity(document);
        let body = json!({"query": document, "variables": variables});
        // One inline wait for a short limit reset, then the queue's backoff takes over.
        let mut waited = false;
        loop {
            match self.once(&body, idempotency_key, spend).await {
                Err(MondayError::Crm(CrmError::Unavailable {
                    status: Some(429),
                    retry_after: Some(wait),
                    ..
                })) if !waited && wait <= deadline::bound(MAX_INLINE_WAIT) => {
                    waited = true;
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn before(&self) -> Result<(), CrmError> {
        if let Err(held) = self.pause.wait(deadline::bound(MAX_INLINE_WAIT)).await {
            return Err(CrmError::Unavailable {
                status: None,
                detail: format!(
                    "not sent: Monday.com answered {} to an earlier call and asked every caller to wait",
                    held.status
                ),
                retry_after: Some(held.remaining),
            });
        }
        let low = *self.complexity.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((left, reset)) = low
            && left < COMPLEXITY_RESERVE
        {
            let wait = reset.saturating_duration_since(Instant::now());
            if wait > deadline::bound(MAX_INLINE_WAIT) {
                return Err(CrmError::Unavailable {
                    status: None,
                    detail: format!(
                        "not sent: {left} complexity points are left this minute, fewer than the {COMPLEXITY_RESERVE} kept in hand"
                    ),
                    retry_after: Some(wait),
                });
            }
            tokio::time::sleep(wait).await;
            *self.complexity.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        if let Err(wait) = self.minute.acquire(deadline::bound(MAX_INLINE_WAIT)).await {
            return Err(CrmError::Unavailable {
                status: None,
                detail: format!(
                    "not sent: the budget of {} Monday.com requests a minute (MONDAY_RATE_LIMIT) is spent",
                    self.minute.per_window
                ),
                retry_after: Some(wait),
            });
        }
        if let Some(daily) = &self.daily {
            let day = crate::timefmt::now_rfc3339()
                .get(..10)
                .unwrap_or("")
                .to_owned();
            let used = daily
                .counter
                .count_attempt(&format!("monday-calls#{day}"), DAY_COUNTER_TTL)
                .await
                .map_err(|e| CrmError::Unavailable {
                    status: None,
                    detail: format!("the daily Monday.com call count cannot be read: {e}"),
                    retry_after: None,
                })?;
            if used > daily.limit {
                let wait = until_utc_midnight();
                self.pause.hold(429, wait.min(Duration::from_secs(900)));
                return Err(CrmError::Unavailable {
                    status: None,
                    detail: format!(
                        "not sent: the daily budget of {} Monday.com calls (MONDAY_DAILY_CALL_BUDGET) is spent; it renews at 00:00 UTC",
                        daily.limit
                    ),
                    retry_after: Some(wait),
                });
            }
        }
        Ok(())
    }

    async fn once(
        &self,
        body: &Value,
        idempotency_key: Option<&str>,
        spend: &Spend,
    ) -> Result<Answer, MondayError> {
        self.before().await?;
        let mut req = self
            .http
            .post(&self.url)
            .header("authorization", self.token.expose())
            .header("api-version", &self.version)
            .header("accept", "application/json")
            .json(body);
        if let Some(key) = idempotency_key {
            req = req.header("idempotency-key", key);
        }
        if let Some(left) = deadline::remaining() {
            req = req.timeout(deadline::bound(left));
        }
        spend.add();
        let resp = req.send().await.map_err(|e| CrmError::Unavailable {
            status: None,
            detail: format!("Monday.com call failed: {}", without_url(&e, "<monday>")),
            retry_after: None,
        })?;
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(resp.headers());
        let replayed = resp
            .headers()
            .get("idempotency-replayed")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let bytes = resp.bytes().await.map_err(|e| CrmError::Unavailable {
            status: Some(status),
            detail: format!(
                "reading Monday.com's answer failed: {}",
                without_url(&e, "<monday>")
            ),
            retry_after: None,
        })?;
        let parsed: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(truncate(&String::from_utf8_lossy(&bytes), 300)));
        if let Some(c) = parsed.pointer("/data/complexity") {
            self.note_complexity(c);
        }
        let has_errors = parsed.get("errors").is_some()
            || parsed.get("error_code").is_some()
            || parsed.get("error_message").is_some();
        if (200..300).contains(&status) && !has_errors {
            return match parsed.get("data") {
                Some(data) if data.is_object() => Ok(Answer {
                    data: data.clone(),
                    replayed,
                }),
                _ => Err(CrmError::Unavailable {
                    status: Some(status),
                    detail: "Monday.com answered without `data`".into(),
                    retry_after: None,
                }
                .into()),
            };
        }
        Err(self.classify(status, &parsed, retry_after))
    }

    fn note_complexity(&self, c: &Value) {
        let after = c.get("after").and_then(Value::as_u64);
        let reset = c
            .get("reset_in_x_seconds")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0);
        if let (Some(after), Some(reset)) = (after, reset) {
            *self.complexity.lock().unwrap_or_else(|p| p.into_inner()) = Some((
                after,
                Instant::now() + Duration::from_secs_f64(reset.min(120.0)),
            ));
        }
    }

    fn classify(&self, status: u16, body: &Value, retry_after: Option<Duration>) -> MondayError {
        let e = read_error(body);
        let code = e.code.as_str();
        let wait_given = e.retry_in.or(retry_after);
        let limit = status == 429
            || e.retry_in.is_some()
            || matches!(
                code,
                "COMPLEXITY_BUDGET_EXHAUSTED"
                    | "ComplexityException"
                    | "MINUTE_RATE_LIMIT_EXCEEDED"
                    | "RateLimitExceeded"
                    | "MAX_CONCURRENCY_EXCEEDED"
                    | "maxConcurrencyExceeded"
                    | "IP_RATE_LIMIT_EXCEEDED"
                    | "DAILY_LIMIT_EXCEEDED"
            );
        if limit {
            let daily = code == "DAILY_LIMIT_EXCEEDED";
            let wait = if daily {
                wait_given.unwrap_or_else(until_utc_midnight)
            } else {
                wait_given.unwrap_or(DEFAULT_LIMIT_WAIT)
            };
            self.pause.hold(429, wait);
            let what = if daily {
                "the account's daily call limit is reached"
            } else if code.contains("COMPLEXITY") || code.contains("Complexity") {
                "the complexity budget is exhausted"
            } else {
                "a rate limit was hit"
            };
            return CrmError::Unavailable {
                status: Some(429),
                detail: format!(
                    "Monday.com: {what} ({}), waiting {}s",
                    e.text,
                    wait.as_secs()
                ),
                retry_after: Some(wait),
            }
            .into();
        }
        match (status, code) {
            (409, _) | (_, "IDEMPOTENCY_CONFLICT") => CrmError::Unavailable {
                status: Some(409),
                detail: format!(
                    "Monday.com is still running the same mutation (Idempotency-Key): {}",
                    e.text
                ),
                retry_after: Some(retry_after.unwrap_or(Duration::from_secs(2))),
            }
            .into(),
            (401 | 403, _)
            | (
                _,
                "NOT_AUTHENTICATED" | "UserUnauthorizedException" | "USER_ACCESS_DENIED"
                | "missingRequiredPermissions",
            ) => CrmError::Rejected {
                status: if status >= 400 { status } else { 403 },
                message: format!(
                    "Monday.com refused the token (MONDAY_API_TOKEN invalid, or its user lacks access or a scope): {}",
                    e.text
                ),
            }
            .into(),
            (423 | 500..=599, _) | (_, "API_TEMPORARILY_BLOCKED" | "INTERNAL_SERVER_ERROR") => {
                if let Some(wait) = retry_after {
                    self.pause.hold(status, wait);
                }
                CrmError::Unavailable {
                    status: Some(status),
                    detail: format!("Monday.com answered {status}: {}", e.text),
                    retry_after,
                }
                .into()
            }
            (_, "ResourceNotFoundException" | "InvalidItemIdException") => {
                MondayError::NotFound(e.text)
            }
            _ => CrmError::Rejected {
                status: if status >= 400 { status } else { 422 },
                message: format!("Monday.com {}", e.text),
            }
            .into(),
        }
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub data: Value,
    /// `Idempotency-Replayed: true`: the first answer to this key, not a new write.
    pub replayed: bool,
}

/// The first error of an answer: its code, seconds to wait, and one line of text.
pub struct ReadError {
    pub code: String,
    pub retry_in: Option<Duration>,
    /// `CODE: message (error_data, request_id)`.
    pub text: String,
}

/// Monday's error body, current (`errors[].extensions`) or legacy (`error_code`,
/// `error_message`, `status_code` at the top), as one line naming the code, the message, the
/// column its `error_data` names and the `request_id` support asks for.
pub fn read_error(body: &Value) -> ReadError {
    let first = body
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|e| e.first());
    let ext = first.and_then(|e| e.get("extensions"));
    let code = ext
        .and_then(|x| x.get("code"))
        .or_else(|| body.get("error_code"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let message = match first {
        Some(Value::String(s)) => s.clone(),
        Some(e) => e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        None => body
            .get("error_message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| match body {
                Value::String(s) => s.clone(),
                Value::Null => "no body".into(),
                other => truncate(&other.to_string(), 300),
            }),
    };
    let retry_in = ext
        .and_then(|x| x.get("retry_in_seconds"))
        .or_else(|| body.get("retry_in_seconds"))
        .and_then(Value::as_f64)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.ceil().min(86_400.0)));
    let mut text = if code.is_empty() {
        message
    } else {
        format!("{code}: {message}")
    };
    if let Some(data) = ext.and_then(|x| x.get("error_data")) {
        let mut named = Vec::new();
        for (k, label) in [("column_id", "column"), ("column_type", "column type")] {
            if let Some(v) = data.get(k).and_then(Value::as_str) {
                named.push(format!("{label} {v}"));
            }
        }
        // DATA_VALIDATIONS_ERROR: an array of {itemId, columnIds, message}.
        if let Some(items) = data.as_array() {
            for it in items {
                let cols = it
                    .get("columnIds")
                    .and_then(Value::as_array)
                    .map(|c| {
                        c.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                let m = it.get("message").and_then(Value::as_str).unwrap_or("");
                named.push(format!("columns {cols}: {m}"));
            }
        }
        if !named.is_empty() {
            text.push_str(&format!(" ({})", named.join("; ")));
        }
    }
    if let Some(path) = first
        .and_then(|e| e.get("path"))
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
    {
        let p: Vec<String> = path
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect();
        text.push_str(&format!(" [at {}]", p.join(".")));
    }
    if let Some(id) = body
        .pointer("/extensions/request_id")
        .or_else(|| body.get("request_id"))
        .and_then(Value::as_str)
    {
        text.push_str(&format!(" (request_id {id})"));
    }
    ReadError {
        code,
        retry_in,
        text: truncate(&text, 1000),
    }
}

/// The time left until 00:00 UTC, when Monday's daily call count resets.
pub fn until_utc_midnight() -> Duration {
    let now = crate::timefmt::now_unix().rem_euclid(86_400) as u64;
    Duration::from_secs(86_400 - now)
}

/// `document` with `complexity { after reset_in_x_seconds }` added to its root selection.
fn with_complexity(document: &str) -> String {
    let d = document.trim_end();
    match d.strip_suffix('}') {
        Some(head) if !document.contains("complexity") => {
            format!("{head} complexity {{ after reset_in_x_seconds }} }}")
        }
        _ => d.to_owned(),
    }
}

/// An `Idempotency-Key` value from its parts: stable for the same parts, short, and free of
/// customer data.
pub fn idempotency_key(parts: &[&str]) -> String {
    let joined = parts.join("\u{1f}");
    let hash = crate::hashing::sha256_hex(joined.as_bytes());
    format!("enerflo-sync-{}", &hash[..40])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn current_and_legacy_error_bodies_are_read_alike() {
        let current = json!({"errors": [{"message": "Complexity budget exhausted",
            "extensions": {"code": "COMPLEXITY_BUDGET_EXHAUSTED", "retry_in_seconds": 22}}],
            "extensions": {"request_id": "00000000-0000-0000-0000-000000000001"}});
        let e = read_error(&current);
        assert_eq!(e.code, "COMPLEXITY_BUDGET_EXHAUSTED");
        assert_eq!(e.retry_in, Some(Duration::from_secs(22)));
        assert!(
            e.text
                .contains("request_id 00000000-0000-0000-0000-000000000001")
        );
        let legacy = json!({"error_code": "ComplexityException", "status_code": 429,
            "error_message": "Complexity budget exhausted, query cost 30001 budget remaining 20 out of 1000000 reset in 12 seconds",
            "errors": ["Complexity budget exhausted"]});
        let e = read_error(&legacy);
        assert_eq!(e.code, "ComplexityException");
        assert!(
            e.text
                .starts_with("ComplexityException: Complexity budget exhausted")
        );
    }

    #[test]
    fn a_column_value_error_names_the_column_and_its_type() {
        let body = json!({"data": {"change_multiple_column_values": null},
            "errors": [{"message": "invalid value - label does not exist in column",
                "path": ["change_multiple_column_values"],
                "extensions": {"code": "ColumnValueException", "status_code": 200,
                    "error_data": {"column_id": "project_status", "column_type": "color"}}}]});
        let e = read_error(&body);
        assert_eq!(
            e.text,
            "ColumnValueException: invalid value - label does not exist in column (column project_status; column type color) [at change_multiple_column_values]"
        );
    }

    #[test]
    fn the_complexity_field_goes_into_the_root_selection_once() {
        assert_eq!(
            with_complexity("query { me { id } }"),
            "query { me { id }  complexity { after reset_in_x_seconds } }"
        );
        let once = with_complexity("query { me { id } complexity { after } }");
        assert_eq!(once.matches("complexity").count(), 1);
    }

    #[test]
    fn idempotency_keys_are_stable_and_carry_no_data() {
        let a = idempotency_key(&["create", "111", "enerflo_deal_id", "deal-1"]);
        assert_eq!(
            a,
            idempotency_key(&["create", "111", "enerflo_deal_id", "deal-1"])
        );
        assert_ne!(
            a,
            idempotency_key(&["create", "111", "enerflo_deal_id", "deal-2"])
        );
        assert!(!a.contains("deal-1"));
        assert!(a.len() < 64);
    }
}
