//! Salesforce's REST API as the connector calls it: the versioned data path, bearer auth with one
//! refresh on 401 `INVALID_SESSION_ID`, `Sforce-Limit-Info` read on every answer so the daily
//! allocation is never spent past our share, and Salesforce's error arrays turned into errors
//! that say what Salesforce said (docs/crm-connectors.md 3.1-3.9).

use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::auth::{Authenticator, Session};
use crate::crm::CrmError;
use crate::deadline;
use crate::retry::Pause;
use crate::wire::{truncate, without_url};

/// Error codes that retrying cannot fix: a person has to change the data, the profile or the org.
const PERMANENT_CODES: &[&str] = &[
    "REQUIRED_FIELD_MISSING",
    "INVALID_FIELD",
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    "DUPLICATE_VALUE",
    "DUPLICATES_DETECTED",
    "FIELD_CUSTOM_VALIDATION_EXCEPTION",
    "MALFORMED_ID",
    "STRING_TOO_LONG",
    "JSON_PARSER_ERROR",
    "INVALID_TYPE",
    "INVALID_FIELD_FOR_INSERT_UPDATE",
    "INVALID_CROSS_REFERENCE_KEY",
    "INSUFFICIENT_ACCESS_OR_READONLY",
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
];
/// Codes worth another try.
const TRANSIENT_CODES: &[&str] = &[
    "UNABLE_TO_LOCK_ROW",
    "SERVER_UNAVAILABLE",
    "UNKNOWN_EXCEPTION",
];
/// The daily allocation (or the concurrent long-request cap) is spent: hold every caller, and
/// retry the event hourly until its attempt budget ends in the DLQ naming the limit.
const LIMIT_PAUSE: Duration = Duration::from_secs(15 * 60);
const LIMIT_RETRY: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub enum SalesforceError {
    /// 404 `NOT_FOUND`: no such record (by id or external id).
    NotFound(String),
    /// 300: the external id matched several records.
    Multiple(Value),
    Crm(CrmError),
}

impl From<CrmError> for SalesforceError {
    fn from(e: CrmError) -> Self {
        Self::Crm(e)
    }
}

impl SalesforceError {
    pub fn into_crm(self, what: &str) -> CrmError {
        match self {
            Self::Crm(e) => e,
            Self::NotFound(m) => CrmError::Rejected {
                status: 404,
                message: format!("{what}: {m}"),
            },
            Self::Multiple(v) => CrmError::Rejected {
                status: 300,
                message: format!(
                    "{what}: the external id matches {} records; make the field Unique in Salesforce and merge the duplicates",
                    v.as_array().map_or(0, Vec::len)
                ),
            },
        }
    }
}

/// The share of the org's daily API allocation the sync may use, from `Sforce-Limit-Info`.
#[derive(Debug)]
pub struct ApiBudget {
    /// Percent of the allocation (1-100).
    pub percent: u32,
    /// Last seen `api-usage=used/max`.
    seen: Mutex<Option<(u64, u64)>>,
}

impl ApiBudget {
    pub fn new(percent: u32) -> Self {
        Self {
            percent: percent.clamp(1, 100),
            seen: Mutex::new(None),
        }
    }

    fn note(&self, header: &str) {
        if let Some((used, max)) = parse_limit_info(header) {
            *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((used, max));
        }
    }

    /// `Some((used, max))` when our share is spent.
    pub fn spent(&self) -> Option<(u64, u64)> {
        let seen = *self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (used, max) = seen?;
        (max > 0 && used * 100 >= max * self.percent as u64).then_some((used, max))
    }
}

/// `api-usage=10018/100000` (possibly followed by `; api-bursts=...`).
pub fn parse_limit_info(header: &str) -> Option<(u64, u64)> {
    let usage = header
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("api-usage="))?;
    let (used, max) = usage.split_once('/')?;
    Some((used.trim().parse().ok()?, max.trim().parse().ok()?))
}

pub struct SalesforceApi {
    http: reqwest::Client,
    auth: Authenticator,
    /// `vNN.N`
    version: String,
    pub budget: ApiBudget,
    pause: Pause,
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `Null` for 204.
    pub body: Value,
}

impl SalesforceApi {
    pub fn new(http: reqwest::Client, auth: Authenticator, version: &str, percent: u32) -> Self {
        let v = version.trim().trim_start_matches('v');
        Self {
            http,
            auth,
            version: format!("v{v}"),
            budget: ApiBudget::new(percent),
            pause: Pause::default(),
        }
    }

    /// `/services/data/vNN.N` + `rest`.
    pub fn data_path(&self, rest: &str) -> String {
        format!("/services/data/{}{rest}", self.version)
    }

    /// One call to `path` (absolute on the instance, e.g. from [`Self::data_path`]).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, SalesforceError> {
        if let Some(held) = self.pause.remaining() {
            return Err(CrmError::Unavailable {
                status: None,
                detail: "not sent: Salesforce's API limit was reached by an earlier call".into(),
                retry_after: Some(held.remaining),
            }
            .into());
        }
        if let Some((used, max)) = self.budget.spent() {
            return Err(CrmError::Unavailable {
                status: None,
                detail: format!(
                    "not sent: the sync's share of Salesforce's daily API allocation is spent ({used} of {max} used, share {}%, SALESFORCE_API_BUDGET_PERCENT)",
                    self.budget.percent
                ),
                retry_after: Some(LIMIT_RETRY),
            }
            .into());
        }
        let session = self.auth.session().await?;
        match self.send(&session, method.clone(), path, body).await {
            Err(SalesforceError::Crm(CrmError::Rejected { status: 401, .. })) => {
                // The token expired or was revoked: one new token, one more try.
                let fresh = self.auth.refresh(&session).await?;
                self.send(&fresh, method, path, body).await
            }
            other => other,
        }
    }

    async fn send(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, SalesforceError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", session.instance_url))
            .bearer_auth(session.access_token.expose())
            .header("accept", "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(left) = deadline::remaining() {
            req = req.timeout(deadline::bound(left));
        }
        let resp = req.send().await.map_err(|e| CrmError::Unavailable {
            status: None,
            detail: format!(
                "Salesforce call failed: {}",
                without_url(&e, "<salesforce>")
            ),
            retry_after: None,
        })?;
        let status = resp.status().as_u16();
        if let Some(h) = resp
            .headers()
            .get("sforce-limit-info")
            .and_then(|v| v.to_str().ok())
        {
            self.budget.note(h);
        }
        let bytes = resp.bytes().await.map_err(|e| CrmError::Unavailable {
            status: Some(status),
            detail: format!(
                "reading Salesforce's answer failed: {}",
                without_url(&e, "<salesforce>")
            ),
            retry_after: None,
        })?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(truncate(&String::from_utf8_lossy(&bytes), 300)))
        };
        match status {
            200..=299 => Ok(Answer { status, body }),
            300 => Err(SalesforceError::Multiple(body)),
            404 => Err(SalesforceError::NotFound(error_message(&body))),
            _ => Err(self.classify(status, &body).into()),
        }
    }

    fn classify(&self, status: u16, body: &Value) -> CrmError {
        let codes = error_codes(body);
        let message = error_message(body);
        let has = |set: &[&str]| codes.iter().any(|c| set.contains(&c.as_str()));
        if codes.iter().any(|c| c == "REQUEST_LIMIT_EXCEEDED") {
            self.pause.hold(status, LIMIT_PAUSE);
            return CrmError::Unavailable {
                status: Some(status),
                detail: format!(
                    "Salesforce's API limit is reached (REQUEST_LIMIT_EXCEEDED): {message}"
                ),
                retry_after: Some(LIMIT_RETRY),
            };
        }
        if status == 401 {
            return CrmError::Rejected {
                status,
                message: format!("Salesforce refused the session after a fresh token: {message}"),
            };
        }
        if status >= 500 || has(TRANSIENT_CODES) {
            return CrmError::Unavailable {
                status: Some(status),
                detail: message,
                retry_after: None,
            };
        }
        if has(PERMANENT_CODES) || (400..500).contains(&status) {
            return CrmError::Rejected { status, message };
        }
        CrmError::Unavailable {
            status: Some(status),
            detail: message,
            retry_after: None,
        }
    }
}

/// The `errorCode` (or, in collections, `statusCode`) of every item.
pub fn error_codes(body: &Value) -> Vec<String> {
    let items: Vec<&Value> = match body {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![body],
        _ => Vec::new(),
    };
    items
        .into_iter()
        .flat_map(|it| {
            let mut out = Vec::new();
            for key in ["errorCode", "statusCode"] {
                if let Some(c) = it.get(key).and_then(Value::as_str) {
                    out.push(c.to_owned());
                }
            }
            if let Some(inner) = it.get("errors").and_then(Value::as_array) {
                for e in inner {
                    out.extend(error_codes(e));
                }
            }
            out
        })
        .collect()
}

/// Salesforce's error array as one line: `CODE: message (fields A, B)` per item.
pub fn error_message(body: &Value) -> String {
    let items: Vec<&Value> = match body {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.contains_key("errors") => o["errors"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        Value::Object(_) => vec![body],
        Value::Null => return "no body".into(),
        Value::String(s) => return s.clone(),
        other => return truncate(&other.to_string(), 300),
    };
    let parts: Vec<String> = items
        .iter()
        .map(|it| {
            let code = it
                .get("errorCode")
                .or_else(|| it.get("statusCode"))
                .and_then(Value::as_str)
                .unwrap_or("ERROR");
            let msg = it.get("message").and_then(Value::as_str).unwrap_or("");
            let fields: Vec<&str> = it
                .get("fields")
                .and_then(Value::as_array)
                .map(|f| f.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if fields.is_empty() {
                format!("{code}: {msg}")
            } else {
                format!("{code}: {msg} (fields {})", fields.join(", "))
            }
        })
        .collect();
    if parts.is_empty() {
        truncate(&body.to_string(), 300)
    } else {
        truncate(&parts.join("; "), 1000)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn limit_info_is_read_and_the_share_is_enforced() {
        assert_eq!(
            parse_limit_info("api-usage=10018/100000; api-bursts=1/750"),
            Some((10018, 100000))
        );
        assert_eq!(parse_limit_info("per-app-api-usage=1/2"), None);
        let b = ApiBudget::new(50);
        b.note("api-usage=49999/100000");
        assert_eq!(b.spent(), None);
        b.note("api-usage=50000/100000");
        assert_eq!(b.spent(), Some((50000, 100000)));
    }

    #[test]
    fn error_arrays_name_code_message_and_fields() {
        let body = json!([{"message": "Status: bad value for restricted picklist field: Paused",
            "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "fields": ["Status__c"]}]);
        assert_eq!(
            error_message(&body),
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: Status: bad value for restricted picklist field: Paused (fields Status__c)"
        );
        assert_eq!(
            error_codes(
                &json!([{"success": false, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW"}]}])
            ),
            vec!["UNABLE_TO_LOCK_ROW"]
        );
    }
}
