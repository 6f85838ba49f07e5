//! Scripted faults: "the next N requests matching this route answer X". A pattern is a path as
//! the fake sees it (`/crm/v3/objects/contacts/batch/upsert`), where `*` stands for one segment
//! and a final `**` for any rest (`/crm/v3/objects/*/batch/**`). Rules are tried in the order
//! they were added; each matching request uses up one of its rule's answers.

use std::time::Duration;

use super::rate::Policy;

/// What a faulted request gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// This status (5xx, 423 locked, ...) with a HubSpot-shaped JSON error body; nothing applied.
    Status(u16),
    /// A 429 with the body of that policy (`TEN_SECONDLY_ROLLING`, `DAILY`, the search one).
    RateLimited(Policy),
    /// Hangs this long (past the client's timeout), then answers 504; nothing applied.
    Timeout(Duration),
    /// Waits this long, then handles the request normally.
    Slow(Duration),
    /// Handles the request (the write happens), then hangs this long before answering: the
    /// client times out on a write that was made.
    HangAfterApply(Duration),
    /// Exactly this status and body (e.g. an HTML 502 from HubSpot's edge).
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
