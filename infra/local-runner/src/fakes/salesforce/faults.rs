//! Scripted faults: "the next N requests matching this route answer X". A pattern is a path as
//! the fake sees it (`/services/data/v62.0/sobjects/Opportunity/Enerflo_Deal_Id__c/deal_1`),
//! where `*` stands for one segment and a final `**` for any rest
//! (`/services/data/*/sobjects/Opportunity/**`). Rules are tried in the order they were added;
//! each matching request uses up one of its rule's answers. Composite subrequests are matched
//! by their own `url`, for the faults that are answers (status, lock, errors).

use std::time::Duration;

use super::errors::SfError;
use super::rest::Resp;

/// What a faulted request gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// This status with Salesforce's body for it (500 `UNKNOWN_EXCEPTION`, 503
    /// `SERVER_UNAVAILABLE`, ...); nothing applied.
    Status(u16),
    /// 400 `UNABLE_TO_LOCK_ROW` (row lock contention); nothing applied.
    UnableToLockRow,
    /// 403 `REQUEST_LIMIT_EXCEEDED` (as when the daily allocation is used up); nothing applied.
    RequestLimitExceeded,
    /// The session presented is expired from now on: this request and later ones with the same
    /// token answer 401 `INVALID_SESSION_ID`, until a new token is fetched.
    ExpireSession,
    /// Exactly these errors with this status (e.g. a 400 `FIELD_CUSTOM_VALIDATION_EXCEPTION`).
    Errors { status: u16, errors: Vec<SfError> },
    /// Waits this long, then handles the request normally.
    Slow(Duration),
    /// Hangs this long (past the client's timeout), then answers 503; nothing applied.
    Timeout(Duration),
    /// Handles the request (the write happens), then hangs this long before answering.
    HangAfterApply(Duration),
    /// Exactly this status and body (e.g. an HTML 502 from a proxy).
    Custom {
        status: u16,
        content_type: String,
        body: String,
    },
}

/// One rule: `times` answers of `kind` for requests matching `method` (any: `None`) and `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub method: Option<String>,
    pub path: String,
    pub times: u32,
    pub kind: FaultKind,
}

impl Fault {
    /// The next request (of any method) matching `path` gets `kind`.
    pub fn new(path: &str, kind: FaultKind) -> Self {
        Self {
            method: None,
            path: path.to_owned(),
            times: 1,
            kind,
        }
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }

    pub fn method(mut self, m: &str) -> Self {
        self.method = Some(m.to_ascii_uppercase());
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method) && pattern_matches(&self.path, path)
    }
}

/// Whether `path` fits `pattern` (`*` one segment, a final `**` any rest, including none).
pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    for (i, p) in pat.iter().enumerate() {
        if *p == "**" && i == pat.len() - 1 {
            return true;
        }
        match segs.get(i) {
            Some(s) if *p == "*" || p == s => {}
            _ => return false,
        }
    }
    pat.len() == segs.len()
}

/// The scripted rules.
#[derive(Default, Debug)]
pub struct Faults {
    rules: Vec<Fault>,
}

impl Faults {
    pub fn add(&mut self, f: Fault) {
        self.rules.push(f);
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Uses up one answer of the first rule that matches and `accept`s its kind, if any.
    pub fn take_if(
        &mut self,
        method: &str,
        path: &str,
        accept: impl Fn(&FaultKind) -> bool,
    ) -> Option<FaultKind> {
        let i = self
            .rules
            .iter()
            .position(|r| r.times > 0 && r.matches(method, path) && accept(&r.kind))?;
        self.rules[i].times -= 1;
        let kind = self.rules[i].kind.clone();
        if self.rules[i].times == 0 {
            self.rules.remove(i);
        }
        Some(kind)
    }

    /// Rules with answers left.
    pub fn pending(&self) -> Vec<Fault> {
        self.rules.clone()
    }
}

/// Salesforce's answer for a bare status.
pub fn status_answer(code: u16) -> Resp {
    let (error_code, message) = match code {
        500 => (
            "UNKNOWN_EXCEPTION",
            "An unexpected error occurred. Please include this ErrorId if you contact support: 0000000000-00000 (-0000000000)",
        ),
        502 => ("BAD_GATEWAY", "Bad gateway"),
        503 => (
            "SERVER_UNAVAILABLE",
            "Server is temporarily unavailable, please retry your request later",
        ),
        504 => ("GATEWAY_TIMEOUT", "The request timed out"),
        401 => ("INVALID_SESSION_ID", "Session expired or invalid"),
        403 => ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
        404 => ("NOT_FOUND", "The requested resource does not exist"),
        _ if code >= 500 => ("UNKNOWN_EXCEPTION", "An unexpected error occurred."),
        _ => ("INVALID_INPUT", "scripted error"),
    };
    Resp::error(code, SfError::new(error_code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_segments_and_rests() {
        assert!(pattern_matches(
            "/services/data/*/sobjects/Contact/**",
            "/services/data/v62.0/sobjects/Contact/Enerflo_Customer_Id__c/c1"
        ));
        assert!(!pattern_matches(
            "/services/data/*/sobjects/Lead/*",
            "/services/data/v62.0/sobjects/Contact/x"
        ));
    }
}
