//! HTTP and JSON helpers every remote client shares (Enerflo, the CRM connectors): building a
//! client, reading `Retry-After`, turning an error body into short text, encoding path segments.
//! Neutral on purpose, so a CRM connector never imports the Enerflo client.

use std::time::Duration;

use serde_json::Value;

/// One way to build an outbound HTTP client: the timeout bounds the whole call, connecting
/// gets at most 5 s of it, and the user agent names this product.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("enerflo-crm-sync/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A transport error as text without the URL (it may carry ids or a token in its query).
pub fn without_url(e: &reqwest::Error, label: &str) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), label);
    }
    s
}

/// Percent-encodes one path segment (ids come from payloads: never let one add a path).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Retry-After` in seconds or as an HTTP date; else `x-ratelimit-reset` (Unix seconds).
pub fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(v) = text("retry-after") {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(when) = httpdate::parse_http_date(v) {
            return Some(
                when.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default(),
            );
        }
    }
    let reset = text("x-ratelimit-reset")?.parse::<i64>().ok()?;
    let delta = reset - crate::timefmt::now_unix();
    (delta > 0).then(|| Duration::from_secs(delta as u64))
}

/// An error body as short plain text: HTML tags and whitespace runs collapsed, at most 300 chars.
pub fn body_text(bytes: &[u8]) -> String {
    let raw = String::from_utf8_lossy(bytes);
    if let Ok(v) = serde_json::from_str::<Value>(&raw) {
        let msg = v
            .get("message")
            .or_else(|| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let errors = v.get("errors").map(|e| e.to_string());
        let text = match (msg, errors) {
            (Some(m), Some(e)) => format!("{m} {e}"),
            (Some(m), None) => m,
            (None, Some(e)) => e,
            (None, None) => v.to_string(),
        };
        return truncate(&text, 300);
    }
    let mut out = String::with_capacity(raw.len().min(1024));
    let mut in_tag = false;
    let lower = raw.to_ascii_lowercase();
    // Drop <head>/<style>/<script> content wholesale: it is markup, not the message.
    let cut = ["</head>", "</style>", "</script>"]
        .iter()
        .filter_map(|m| lower.rfind(m).map(|i| i + m.len()))
        .max()
        .unwrap_or(0);
    for c in raw[cut..].chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    truncate(&out.split_whitespace().collect::<Vec<_>>().join(" "), 300)
}

/// A JSON answer's shape, never its values (they may be customer data): for an error that says
/// what came instead of the expected object.
pub fn json_shape(v: &Value) -> String {
    match v {
        Value::Null => "the body is empty".to_owned(),
        Value::Object(m) if m.is_empty() => "the body is an empty object".to_owned(),
        Value::Object(m) => truncate(
            &format!(
                "the body is an object with keys {}",
                m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            ),
            300,
        ),
        Value::Array(items) => format!("the body is an array of {} items", items.len()),
        _ => "the body is a bare JSON value".to_owned(),
    }
}

/// At most `max` characters, with `...` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}
