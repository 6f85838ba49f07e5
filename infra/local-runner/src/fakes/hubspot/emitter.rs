//! The workflow "Send a webhook" action, as HubSpot performs it: a POST (or GET) of the
//! workflow's body to the target URL, authenticated by an API key (header or query parameter)
//! or by HubSpot's request signatures computed with the app's client secret:
//!
//! | version | headers | signed string | function |
//! |---|---|---|---|
//! | v1 | `X-HubSpot-Signature`, `X-HubSpot-Signature-Version: v1` | secret + body | SHA-256, hex |
//! | v2 | `X-HubSpot-Signature`, `X-HubSpot-Signature-Version: v2` | secret + method + URL + body | SHA-256, hex |
//! | v3 | `X-HubSpot-Signature-v3`, `X-HubSpot-Request-Timestamp` (ms) | method + URL (some escapes decoded) + body + timestamp | HMAC-SHA256 keyed with the secret, base64 |
//!
//! Delivery follows HubSpot's rules: connect timeout 3 s, response timeout 30 s; a 2xx is done;
//! a 4xx other than 429 is never retried; a 429 is retried after its `Retry-After` (milliseconds)
//! or on the schedule; anything else (5xx, timeouts, refused connections) is retried on the
//! schedule: first after about a minute, gaps doubling up to 8 hours, for up to 3 days. Tests use
//! [`RetrySchedule::compressed`]. Each attempt is signed afresh (a new timestamp).

use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::HubSpotFake;

/// How the webhook authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmitAuth {
    None,
    /// The "API key" option, placed in a request header.
    ApiKeyHeader {
        name: String,
        value: String,
    },
    /// The "API key" option, placed in a query parameter.
    ApiKeyQuery {
        name: String,
        value: String,
    },
    /// "Include request signature in header", v3 (HMAC, with a timestamp).
    SignatureV3 {
        client_secret: String,
    },
    /// The older v2 signature (SHA-256 of secret, method, URL and body).
    SignatureV2 {
        client_secret: String,
    },
    /// The v1 signature (SHA-256 of secret and body), as app webhook deliveries carry.
    SignatureV1 {
        client_secret: String,
    },
}

/// When to retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    /// The gap before the first retry.
    pub first: Duration,
    /// Each gap is the previous one times this.
    pub factor: u32,
    /// The longest gap.
    pub cap: Duration,
    /// No attempt starts later than this after the first.
    pub give_up_after: Duration,
    /// At most this many attempts in all (`None`: only `give_up_after` ends it).
    pub max_attempts: Option<u32>,
}

impl RetrySchedule {
    /// HubSpot's documented schedule: first retry after a minute, growing gaps capped at 8 hours,
    /// retries for up to 3 days. (The docs give no growth factor; doubling is the fake's choice.)
    pub fn hubspot() -> Self {
        Self {
            first: Duration::from_secs(60),
            factor: 2,
            cap: Duration::from_secs(8 * 3600),
            give_up_after: Duration::from_secs(72 * 3600),
            max_attempts: None,
        }
    }

    /// HubSpot's schedule with every duration divided by `divisor` (1000: the first retry after
    /// 60 ms, gaps capped at 28.8 s, giving up after 259.2 s).
    pub fn compressed(divisor: u32) -> Self {
        let h = Self::hubspot();
        let d = divisor.max(1);
        Self {
            first: h.first / d,
            cap: h.cap / d,
            give_up_after: h.give_up_after / d,
            ..h
        }
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// The gap before retry number `n` (1: the first retry).
    pub fn delay(&self, n: u32) -> Duration {
        let mut d = self.first;
        for _ in 1..n {
            d = d.saturating_mul(self.factor).min(self.cap);
        }
        d.min(self.cap)
    }
}

/// How an emission is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmitOptions {
    /// `POST` (the default) or `GET` (then without a body).
    pub method: String,
    pub schedule: RetrySchedule,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Signs with this `X-HubSpot-Request-Timestamp` instead of the current time (tests of
    /// stale timestamps).
    pub timestamp_ms: Option<i64>,
}

impl Default for EmitOptions {
    fn default() -> Self {
        Self {
            method: "POST".into(),
            schedule: RetrySchedule::compressed(1000),
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(30),
            timestamp_ms: None,
        }
    }
}

/// One delivery attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The wait before this attempt (zero for the first).
    pub waited: Duration,
    /// The status received (`None`: no answer, see `error`).
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The 429's `Retry-After`, in milliseconds as HubSpot reads it.
    pub retry_after_ms: Option<u64>,
    pub response: String,
    /// The headers this attempt carried (auth and signatures included).
    pub headers: Vec<(String, String)>,
}

/// What an emission did.
#[derive(Clone, Debug)]
pub struct EmitResult {
    /// The URL requested (with an API key query parameter when that is the auth).
    pub url: String,
    /// The exact body sent.
    pub body: String,
    pub attempts: Vec<Attempt>,
    /// A 2xx was received.
    pub delivered: bool,
    /// Why it stopped without a 2xx.
    pub gave_up: Option<String>,
}

impl EmitResult {
    pub fn last_status(&self) -> Option<u16> {
        self.attempts.last().and_then(|a| a.status)
    }
}

fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// v1: lowercase hex SHA-256 of `client_secret + body`.
pub fn sign_v1(client_secret: &str, body: &[u8]) -> String {
    hex_sha256(&[client_secret.as_bytes(), body])
}

/// v2: lowercase hex SHA-256 of `client_secret + method + uri + body` (the URI exactly as called).
pub fn sign_v2(client_secret: &str, method: &str, uri: &str, body: &[u8]) -> String {
    hex_sha256(&[
        client_secret.as_bytes(),
        method.as_bytes(),
        uri.as_bytes(),
        body,
    ])
}

/// The URI v3 signs: the full URL called with only these escapes decoded:
/// `%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B` (others, like `%20`, stay encoded).
pub fn v3_uri(raw_url: &str) -> String {
    const DECODED: &[(&str, &str)] = &[
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ];
    let mut out = String::with_capacity(raw_url.len());
    let mut rest = raw_url;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3).unwrap_or(&rest[i..]);
        match DECODED.iter().find(|(e, _)| *e == esc) {
            Some((_, c)) => {
                out.push_str(c);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// v3: base64 HMAC-SHA256, keyed with the client secret, of
/// `method + v3_uri(raw_url) + body + timestamp_ms`.
pub fn sign_v3(
    client_secret: &str,
    method: &str,
    raw_url: &str,
    body: &[u8],
    timestamp_ms: i64,
) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(client_secret.as_bytes())
        .unwrap_or_else(|_| fallback_mac());
    mac.update(method.as_bytes());
    mac.update(v3_uri(raw_url).as_bytes());
    mac.update(body);
    mac.update(timestamp_ms.to_string().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

// HMAC takes keys of any length, so this is never used.
fn fallback_mac() -> Hmac<Sha256> {
    #[allow(clippy::expect_used)]
    <Hmac<Sha256> as KeyInit>::new_from_slice(b"k").expect("hmac takes any key length")
}

/// Adds `name=value` to a URL's query.
fn with_query(url: &str, name: &str, value: &str) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}={}", enc(name), enc(value))
}

/// The URL and headers of one attempt.
fn prepare(
    target: &str,
    method: &str,
    body: &[u8],
    auth: &EmitAuth,
    now_ms: i64,
) -> (String, Vec<(String, String)>) {
    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        (
            "User-Agent".to_owned(),
            "HubSpot Connect 2.0 (http://dev.hubspot.com/)".to_owned(),
        ),
    ];
    let mut url = target.to_owned();
    match auth {
        EmitAuth::None => {}
        EmitAuth::ApiKeyHeader { name, value } => headers.push((name.clone(), value.clone())),
        EmitAuth::ApiKeyQuery { name, value } => url = with_query(target, name, value),
        EmitAuth::SignatureV3 { client_secret } => {
            headers.push((
                "X-HubSpot-Signature-v3".into(),
                sign_v3(client_secret, method, &url, body, now_ms),
            ));
            headers.push(("X-HubSpot-Request-Timestamp".into(), now_ms.to_string()));
        }
        EmitAuth::SignatureV2 { client_secret } => {
            headers.push((
                "X-HubSpot-Signature".into(),
                sign_v2(client_secret, method, &url, body),
            ));
            headers.push(("X-HubSpot-Signature-Version".into(), "v2".into()));
        }
        EmitAuth::SignatureV1 { client_secret } => {
            headers.push(("X-HubSpot-Signature".into(), sign_v1(client_secret, body)));
            headers.push(("X-HubSpot-Signature-Version".into(), "v1".into()));
        }
    }
    (url, headers)
}

impl HubSpotFake {
    /// Sends a workflow webhook with this fake's [`EmitOptions`] (see [`FakeOptions::emit`]).
    ///
    /// [`FakeOptions::emit`]: super::FakeOptions::emit
    pub async fn emit_workflow(
        &self,
        target_url: &str,
        body: &Value,
        auth: EmitAuth,
    ) -> EmitResult {
        let opts = self.opts.emit.clone();
        self.emit_workflow_with(target_url, body, auth, &opts).await
    }

    /// The app-webhooks mode: a JSON array of events (v1-signed by default in HubSpot).
    pub async fn emit_app_events(
        &self,
        target_url: &str,
        events: &[Value],
        auth: EmitAuth,
    ) -> EmitResult {
        let opts = self.opts.emit.clone();
        self.emit_workflow_with(target_url, &Value::Array(events.to_vec()), auth, &opts)
            .await
    }

    /// Sends `body` (serialised once; every attempt sends the same bytes) to `target_url`,
    /// retrying on `opts.schedule` as HubSpot does.
    pub async fn emit_workflow_with(
        &self,
        target_url: &str,
        body: &Value,
        auth: EmitAuth,
        opts: &EmitOptions,
    ) -> EmitResult {
        let method = opts.method.to_ascii_uppercase();
        let raw = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let mut result = EmitResult {
            url: prepare(target_url, &method, raw.as_bytes(), &auth, 0).0,
            body: raw.clone(),
            attempts: Vec::new(),
            delivered: false,
            gave_up: None,
        };
        let client = match enerflo_sync::wire::client_builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.response_timeout)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                result.gave_up = Some(format!("no HTTP client: {e}"));
                return result;
            }
        };
        let started = Instant::now();
        let mut waited = Duration::ZERO;
        let mut retries = 0u32;
        loop {
            let ts = opts.timestamp_ms.unwrap_or_else(|| self.now_ms());
            let (url, headers) = prepare(target_url, &method, raw.as_bytes(), &auth, ts);
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST);
            let mut req = client.request(m, &url);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            if method != "GET" {
                req = req.body(raw.clone());
            }
            let mut attempt = Attempt {
                waited,
                status: None,
                error: None,
                retry_after_ms: None,
                response: String::new(),
                headers,
            };
            match req.send().await {
                Ok(resp) => {
                    attempt.status = Some(resp.status().as_u16());
                    attempt.retry_after_ms = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse().ok());
                    attempt.response = resp.text().await.unwrap_or_default();
                }
                Err(e) => attempt.error = Some(e.without_url().to_string()),
            }
            let status = attempt.status;
            let retry_after = attempt.retry_after_ms;
            result.attempts.push(attempt);
            match status {
                Some(s) if (200..300).contains(&s) => {
                    result.delivered = true;
                    return result;
                }
                Some(s) if (400..500).contains(&s) && s != 429 => {
                    result.gave_up =
                        Some(format!("{s}: HubSpot does not retry a 4xx other than 429"));
                    return result;
                }
                _ => {}
            }
            retries += 1;
            let next = match (status, retry_after) {
                (Some(429), Some(ms)) => Duration::from_millis(ms),
                _ => opts.schedule.delay(retries),
            };
            if opts
                .schedule
                .max_attempts
                .is_some_and(|n| result.attempts.len() as u32 >= n)
            {
                result.gave_up = Some(format!("stopped after {} attempts", result.attempts.len()));
                return result;
            }
            if started.elapsed() + next > opts.schedule.give_up_after {
                result.gave_up = Some(format!(
                    "retries exhausted: the next attempt would start after {:?}",
                    opts.schedule.give_up_after
                ));
                return result;
            }
            tokio::time::sleep(next).await;
            waited = next;
        }
    }
}
