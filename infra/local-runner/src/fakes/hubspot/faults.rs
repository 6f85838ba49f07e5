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

    /// Uses up one answer of the first rule that matches, if any.
    pub fn take(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        let i = self
            .rules
            .iter()
            .position(|r| r.times > 0 && r.matches(method, path))?;
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
