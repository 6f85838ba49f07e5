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

/// One rule of this fake's scripted faults (`crate::fakes::faults`).
pub type Fault = crate::fakes::faults::Fault<FaultKind>;
/// This fake's scripted rules.
pub type Faults = crate::fakes::faults::Faults<FaultKind>;

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
    use crate::fakes::faults::pattern_matches;

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
