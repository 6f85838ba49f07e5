//! Time helpers: RFC 3339 output, Enerflo's three timestamp styles in.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

pub fn now_millis() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

pub fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// Reads an Enerflo timestamp: ISO 8601 / RFC 3339 (v2), or v1's `YYYY-MM-DD HH:MM:SS` (UTC, as
/// the payloads' `timestamps.timezone` says), or PHP's `{"date": "... .000000"}` object text.
/// Returns it as RFC 3339, or `None` when it is not a timestamp.
pub fn parse_enerflo_time(raw: &str) -> Option<String> {
    let s = raw.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(rfc3339(t));
    }
    let v1 = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let head = s.get(..19).unwrap_or(s);
    PrimitiveDateTime::parse(head, v1)
        .ok()
        .map(|t| rfc3339(t.assume_utc()))
}

pub fn from_unix(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(rfc3339)
        .unwrap_or_else(|_| secs.to_string())
}

/// A strict ISO calendar date (`YYYY-MM-DD`), as the CRM must send it.
pub fn iso_date(raw: &str) -> Option<String> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let s = raw.trim();
    (s.len() == 10 && time::Date::parse(s, fmt).is_ok()).then(|| s.to_owned())
}

/// A date as Enerflo may send it: `YYYY-MM-DD`, a v1 timestamp (`YYYY-MM-DD HH:MM:SS`), ISO 8601,
/// or a PHP `{"date": "...", "timezone": ...}` object; the calendar date it names. `0000-00-00`
/// and anything else read as no date.
pub fn enerflo_date(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => s.trim().get(..10).and_then(iso_date),
        serde_json::Value::Object(m) => m.get("date").and_then(enerflo_date),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_enerflo_timestamp_styles() {
        assert_eq!(
            parse_enerflo_time("2025-01-02 09:30:00").as_deref(),
            Some("2025-01-02T09:30:00Z")
        );
        assert_eq!(
            parse_enerflo_time("2025-01-02 09:30:00.000000").as_deref(),
            Some("2025-01-02T09:30:00Z")
        );
        assert_eq!(
            parse_enerflo_time("2025-01-01T00:00:00.000Z").as_deref(),
            Some("2025-01-01T00:00:00Z")
        );
        assert_eq!(parse_enerflo_time("yesterday"), None);
    }
}
