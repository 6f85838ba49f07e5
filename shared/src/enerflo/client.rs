//! Enerflo REST client: `api-key` header (never a query parameter, never logged), timeouts,
//! retries with backoff and jitter on timeouts, 429 and 5xx, `Retry-After` honoured, a client-side
//! limit under Enerflo's 300 requests/minute per key, and error bodies read as text first (429s
//! are HTML pages). A 429 (or a 503 with `Retry-After`) pauses every caller of the client, not
//! only the call that got it.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::Mutex;
// Tokio's clock: identical in production, pausable in tests.
use tokio::time::Instant;

use super::install::Install;
use crate::error::{RemoteAnswer, SyncError};
use crate::metrics::Observe as _;
use crate::retry::{Held, Pause};
use crate::secret::Secret;
use crate::wire::{
    body_text, encode_segment, http_client, json_shape, parse_retry_after, truncate, without_url,
};

/// A failed Enerflo call. `Display` (and so every log line) names the kind and status only: what
/// Enerflo answered may quote the customer data we sent, and is reached through
/// [`EnerfloError::answer`].
#[derive(Debug, thiserror::Error)]
pub enum EnerfloError {
    #[error("Enerflo answered 404 for {path}")]
    NotFound { path: String },
    #[error("Enerflo is rate limiting (429); retry after {retry_after:?}")]
    RateLimited { retry_after: Option<Duration> },
    /// No answer (`status` is `None`; `detail` says why), or a 408/5xx answer (`detail` is then
    /// its body as text).
    #[error("Enerflo unavailable ({})", unavailable_summary(.status, .detail))]
    Unavailable {
        status: Option<u16>,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// A 4xx answer; `message` is its body as text.
    #[error("Enerflo rejected the request with {status}")]
    Rejected { status: u16, message: String },
    /// A 2xx answer that cannot be used: not JSON (an HTML maintenance page served with 200), or
    /// without the id the call is for. Transient: both pass, and the queue's backoff retries them.
    /// `snippet` is the body as short text (or, for JSON, its shape), for the DLQ reason only.
    #[error("{}", bad_body_summary(*.status, .problem))]
    BadBody {
        status: u16,
        problem: BodyProblem,
        snippet: String,
    },
}

/// What is wrong with a 2xx answer ([`EnerfloError::BadBody`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyProblem {
    /// The body is not JSON; `content_type` is what the answer declared.
    NotJson { content_type: Option<String> },
    /// JSON without the id `call` exists to read (`what`), looked for at `looked_at`.
    NoId {
        call: String,
        what: &'static str,
        looked_at: String,
    },
}

fn bad_body_summary(status: u16, problem: &BodyProblem) -> String {
    match problem {
        BodyProblem::NotJson { content_type } => format!(
            "Enerflo answered {status} with a body that is not JSON (content type {})",
            content_type.as_deref().unwrap_or("not given")
        ),
        BodyProblem::NoId {
            call,
            what,
            looked_at,
        } => format!("{call} answered {status} without {what} (looked at {looked_at})"),
    }
}

fn unavailable_summary(status: &Option<u16>, detail: &str) -> String {
    match status {
        Some(status) => format!("HTTP {status}"),
        None => detail.to_owned(),
    }
}

impl EnerfloError {
    /// What Enerflo answered, as text: for the caller of an inbound route (its own input may be
    /// quoted) and the DLQ reason, never for a log line.
    pub fn answer(&self) -> Option<&str> {
        match self {
            Self::Unavailable {
                status: Some(_),
                detail,
                ..
            } => Some(detail),
            Self::Rejected { message, .. } => Some(message),
            Self::BadBody { snippet, .. } => Some(snippet),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::Unavailable { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The error of a call not sent because Enerflo asked every caller to wait longer than the
    /// call's budget: transient, carrying what is left of the wait.
    fn held(held: Held) -> Self {
        match held.status {
            429 => Self::RateLimited {
                retry_after: Some(held.remaining),
            },
            status => Self::Unavailable {
                status: None,
                detail: format!(
                    "not sent: Enerflo answered {status} with Retry-After to an earlier call"
                ),
                retry_after: Some(held.remaining),
            },
        }
    }
}

impl From<EnerfloError> for SyncError {
    fn from(e: EnerfloError) -> Self {
        // The answer becomes the cause: in the DLQ reason, not in log lines.
        let reason = e.to_string();
        let source = RemoteAnswer::boxed(e.answer());
        match &e {
            EnerfloError::RateLimited { retry_after }
            | EnerfloError::Unavailable { retry_after, .. } => SyncError::Transient {
                reason,
                retry_after: *retry_after,
                source,
            },
            EnerfloError::NotFound { .. } => SyncError::transient(reason),
            EnerfloError::BadBody { .. } => SyncError::Transient {
                reason,
                retry_after: None,
                source,
            },
            EnerfloError::Rejected { .. } => SyncError::Permanent { reason, source },
        }
    }
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    /// The JSON body (`Null` when empty).
    pub body: Value,
}

/// The one port over Enerflo's REST API. Typed calls are the helpers below, so a test double
/// implements a single method.
#[async_trait]
pub trait EnerfloApi: Send + Sync {
    /// Sends one request, retrying transient failures for at most `budget` in total.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        budget: Duration,
    ) -> Result<ApiResponse, EnerfloError>;
}

/// Typed calls. Paths are from docs/enerflo-api.md 2.
impl dyn EnerfloApi {
    /// `GET /api/v3/installs/find/{v2 deal id}`: `None` while the install does not exist yet. An
    /// answer without an install id (`{}`) is not an install: a transient error, never mapped.
    pub async fn find_install_by_deal(
        &self,
        deal_id: &str,
        budget: Duration,
    ) -> Result<Option<Value>, EnerfloError> {
        let path = format!("/api/v3/installs/find/{}", encode_segment(deal_id));
        match self.send(Method::GET, &path, None, budget).await {
            Ok(r) => match Install::id_lookup(&r.body) {
                (Some(_), _) => Ok(Some(r.body)),
                (None, looked_at) => Err(EnerfloError::BadBody {
                    status: r.status,
                    problem: BodyProblem::NoId {
                        call: format!("installs/find for deal {deal_id}"),
                        what: "an install id",
                        looked_at,
                    },
                    snippet: json_shape(&r.body),
                }),
            },
            Err(EnerfloError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /api/v3/installs/{id}`.
    pub async fn get_install(
        &self,
        install_id: u64,
        budget: Duration,
    ) -> Result<Option<Value>, EnerfloError> {
        match self
            .send(
                Method::GET,
                &format!("/api/v3/installs/{install_id}"),
                None,
                budget,
            )
            .await
        {
            Ok(r) => Ok(Some(r.body)),
            Err(EnerfloError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Sliding one-minute window shared by every call of this client (one per process: the limit
/// is per key, so Lambda concurrency x this limit must stay under Enerflo's 300/min).
struct RateWindow {
    per_minute: usize,
    sent: Mutex<VecDeque<Instant>>,
}

impl RateWindow {
    /// Waits for a slot; gives up (returning how long it would take) when the wait exceeds `max_wait`.
    async fn acquire(&self, max_wait: Duration) -> Result<(), Duration> {
        loop {
            let wait = {
                let mut sent = self.sent.lock().await;
                let now = Instant::now();
                while sent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
                {
                    sent.pop_front();
                }
                if sent.len() < self.per_minute {
                    sent.push_back(now);
                    return Ok(());
                }
                sent.front()
                    .map(|t| Duration::from_secs(60).saturating_sub(now.duration_since(*t)))
                    .unwrap_or_default()
            };
            if wait > max_wait {
                return Err(wait);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

pub struct HttpEnerfloClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Secret,
    window: RateWindow,
    /// Set by a 429 (or a 503 with `Retry-After`) to any call, checked before every request.
    pause: Pause,
}

impl HttpEnerfloClient {
    pub fn new(
        base_url: &str,
        api_key: Secret,
        timeout: Duration,
        per_minute: usize,
    ) -> Result<Self, reqwest::Error> {
        let http = http_client(timeout)?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            window: RateWindow {
                per_minute: per_minute.max(1),
                sent: Mutex::new(VecDeque::new()),
            },
            pause: Pause::default(),
        })
    }

    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiResponse, EnerfloError> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{}", self.base_url, path))
            .header("api-key", self.api_key.expose())
            .header("accept", "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let req = req.observed(crate::metrics::Target::Enerflo);
        let resp = req.send().await.map_err(|e| EnerfloError::Unavailable {
            status: None,
            // reqwest's message can carry the URL; ours never carries the key (it is a header).
            detail: if e.is_timeout() {
                "request timed out".into()
            } else {
                format!("request failed: {}", without_url(&e, "<enerflo>"))
            },
            retry_after: None,
        })?;
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(resp.headers());
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| truncate(&String::from_utf8_lossy(v.as_bytes()), 100));
        let bytes = resp.bytes().await.map_err(|e| EnerfloError::Unavailable {
            status: Some(status),
            detail: format!("reading the body failed: {}", without_url(&e, "<enerflo>")),
            retry_after,
        })?;
        match status {
            200..=299 => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return Ok(ApiResponse {
                        status,
                        body: Value::Null,
                    });
                }
                serde_json::from_slice(&bytes)
                    .map(|body| ApiResponse { status, body })
                    .map_err(|_| EnerfloError::BadBody {
                        status,
                        problem: BodyProblem::NotJson { content_type },
                        snippet: body_text(&bytes),
                    })
            }
            404 => Err(EnerfloError::NotFound {
                path: path.to_owned(),
            }),
            429 => Err(EnerfloError::RateLimited { retry_after }),
            408 | 500..=599 => Err(EnerfloError::Unavailable {
                status: Some(status),
                detail: body_text(&bytes),
                retry_after,
            }),
            _ => Err(EnerfloError::Rejected {
                status,
                message: body_text(&bytes),
            }),
        }
    }
}

#[async_trait]
impl EnerfloApi for HttpEnerfloClient {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        budget: Duration,
    ) -> Result<ApiResponse, EnerfloError> {
        let budget = crate::deadline::bound(budget);
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let remaining = budget.saturating_sub(started.elapsed());
            // Enerflo asked every caller to wait: wait too, or fail fast if the budget cannot.
            if let Err(held) = self.pause.wait(remaining).await {
                return Err(EnerfloError::held(held));
            }
            let remaining = budget.saturating_sub(started.elapsed());
            if let Err(wait) = self.window.acquire(remaining).await {
                return Err(EnerfloError::RateLimited {
                    retry_after: Some(wait),
                });
            }
            let err = match self.attempt(&method, path, body).await {
                Ok(r) => return Ok(r),
                Err(e @ (EnerfloError::RateLimited { .. } | EnerfloError::Unavailable { .. })) => e,
                // A maintenance page served with 200; a write is left to the caller's retry.
                Err(
                    e @ EnerfloError::BadBody {
                        problem: BodyProblem::NotJson { .. },
                        ..
                    },
                ) if method == Method::GET => e,
                Err(e) => return Err(e),
            };
            let backoff = Duration::from_millis(250u64 << attempt.min(5))
                .mul_f64(0.5 + fastrand::f64() * 0.5);
            // ... and this answer may be such a request: it holds every other caller too.
            match &err {
                EnerfloError::RateLimited { retry_after } => {
                    self.pause.hold(429, retry_after.unwrap_or(backoff));
                }
                EnerfloError::Unavailable {
                    status: Some(503),
                    retry_after: Some(ra),
                    ..
                } => self.pause.hold(503, *ra),
                _ => {}
            }
            let wait = err.retry_after().map_or(backoff, |ra| ra.max(backoff));
            let remaining = budget.saturating_sub(started.elapsed());
            if attempt >= 4 || wait >= remaining {
                tracing::warn!(path, attempt, error = %err, "enerflo call gave up within its budget");
                return Err(err);
            }
            tracing::info!(path, attempt, wait_ms = wait.as_millis() as u64, error = %err, "retrying enerflo call");
            tokio::time::sleep(wait).await;
        }
    }
}

/// The tests' client.
#[cfg(test)]
impl HttpEnerfloClient {
    /// A client of `base_url` (a fake Enerflo) as the route tests use it: a fake key, 2 s per
    /// call, Enerflo's 240 requests a minute.
    pub(crate) fn for_tests(base_url: &str) -> std::sync::Arc<dyn EnerfloApi> {
        std::sync::Arc::new(
            Self::new(
                base_url,
                Secret::new("fake-enerflo-key"),
                Duration::from_secs(2),
                240,
            )
            .expect("a client for the fake Enerflo"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_window_never_allows_more_than_the_limit_in_any_minute() {
        let window = RateWindow {
            per_minute: 240,
            sent: Mutex::new(VecDeque::new()),
        };
        let start = tokio::time::Instant::now();
        let mut granted = Vec::new();
        for _ in 0..600 {
            window
                .acquire(Duration::from_secs(600))
                .await
                .expect("waits, never refuses within budget");
            granted.push(tokio::time::Instant::now() - start);
        }
        // Any 60 s span holds at most 240 grants.
        for (i, t) in granted.iter().enumerate() {
            let in_minute = granted[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(60))
                .count();
            assert!(
                in_minute <= 240,
                "{in_minute} grants in the minute from {t:?}"
            );
        }
        assert!(
            granted[599] >= Duration::from_secs(120),
            "600 calls at 240/min take over two minutes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_window_refuses_a_wait_longer_than_the_budget() {
        let window = RateWindow {
            per_minute: 2,
            sent: Mutex::new(VecDeque::new()),
        };
        window.acquire(Duration::ZERO).await.expect("first");
        window.acquire(Duration::ZERO).await.expect("second");
        let wait = window
            .acquire(Duration::from_secs(5))
            .await
            .expect_err("third must wait a minute");
        assert!(wait > Duration::from_secs(55));
    }

    #[test]
    fn html_error_pages_reduce_to_their_text() {
        let html = b"<!DOCTYPE html><html><head><title>x</title><style>body{}</style></head><body><h1>Too many requests</h1></body></html>";
        assert_eq!(body_text(html), "Too many requests");
        assert_eq!(
            body_text(br#"{"message":"The state field is invalid."}"#),
            "The state field is invalid."
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("abc-123"), "abc-123");
        assert_eq!(encode_segment("../x y"), "..%2Fx%20y");
    }
}

/// The client against a wiremock Enerflo, in real time (reqwest's timeouts run on Tokio's clock,
/// so a paused clock would fire them while a request is on the wire).
#[cfg(test)]
mod http_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex as StdMutex};
    use std::time::Instant as StdInstant;

    use serde_json::json;
    use wiremock::matchers::{method, path, path_regex};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    use super::*;
    use crate::error::SyncError;

    type Arrivals = Arc<StdMutex<Vec<(String, StdInstant)>>>;

    fn client(server: &MockServer) -> Arc<HttpEnerfloClient> {
        Arc::new(
            HttpEnerfloClient::new(
                &server.uri(),
                Secret::new("fake-enerflo-key"),
                Duration::from_secs(5),
                240,
            )
            .unwrap(),
        )
    }

    /// A responder that notes when each request reached the server.
    fn noting(arrivals: &Arrivals, answer: ResponseTemplate) -> impl wiremock::Respond + use<> {
        let arrivals = arrivals.clone();
        move |req: &Request| {
            arrivals
                .lock()
                .unwrap()
                .push((req.url.path().to_owned(), StdInstant::now()));
            answer.clone()
        }
    }

    fn arrival(arrivals: &Arrivals, p: &str) -> Option<StdInstant> {
        arrivals
            .lock()
            .unwrap()
            .iter()
            .find(|(q, _)| q == p)
            .map(|(_, t)| *t)
    }

    #[tokio::test]
    async fn a_429_retry_after_holds_every_later_call_of_the_client_until_it_passes() {
        // GIVEN Enerflo answers the first call (deal A) 429 with Retry-After: 2
        let server = MockServer::start().await;
        let arrivals: Arrivals = Arc::default();
        Mock::given(method("GET"))
            .and(path("/api/v3/installs/find/A"))
            .respond_with(noting(
                &arrivals,
                ResponseTemplate::new(429)
                    .insert_header("retry-after", "2")
                    .insert_header("content-type", "text/html; charset=UTF-8")
                    .set_body_string("<html><body>Too many requests</body></html>"),
            ))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex("^/api/v3/installs/find/[BC]$"))
            .respond_with(noting(
                &arrivals,
                ResponseTemplate::new(200).set_body_json(json!({"id": 1})),
            ))
            .mount(&server)
            .await;
        let enerflo = client(&server);

        // WHEN call A, whose budget cannot wait 2 s, gives up with the 429 ...
        let a = enerflo
            .send(
                Method::GET,
                "/api/v3/installs/find/A",
                None,
                Duration::from_secs(1),
            )
            .await
            .expect_err("429");
        assert_eq!(a.retry_after(), Some(Duration::from_secs(2)), "{a}");
        let rate_limited_at = arrival(&arrivals, "/api/v3/installs/find/A").expect("A sent");
        // ... and calls for other deals follow, concurrently, with budgets that cover the pause
        let calls = ["B", "C"].map(|deal| {
            let enerflo = enerflo.clone();
            tokio::spawn(async move {
                enerflo
                    .send(
                        Method::GET,
                        &format!("/api/v3/installs/find/{deal}"),
                        None,
                        Duration::from_secs(10),
                    )
                    .await
            })
        });
        for call in calls {
            call.await
                .unwrap()
                .expect("answered once the pause is over");
        }

        // THEN neither reached Enerflo before the 2 s Enerflo asked for had passed
        for deal in ["B", "C"] {
            let at = arrival(&arrivals, &format!("/api/v3/installs/find/{deal}")).expect("sent");
            assert!(
                at.duration_since(rate_limited_at) >= Duration::from_secs(2),
                "deal {deal} reached Enerflo {:?} after the 429",
                at.duration_since(rate_limited_at)
            );
        }
    }

    #[tokio::test]
    async fn a_call_whose_budget_cannot_cover_the_pause_fails_fast_without_a_request() {
        // GIVEN Enerflo answered a call 503 with Retry-After: 30
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v3/installs/find/A"))
            .respond_with(
                ResponseTemplate::new(503)
                    .insert_header("retry-after", "30")
                    .set_body_string("<html><body>Service Unavailable</body></html>"),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v3/installs/find/B"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 1})))
            .mount(&server)
            .await;
        let enerflo = client(&server);
        let a = enerflo
            .send(
                Method::GET,
                "/api/v3/installs/find/A",
                None,
                Duration::from_secs(5),
            )
            .await
            .expect_err("503");
        assert_eq!(a.retry_after(), Some(Duration::from_secs(30)), "{a}");

        // WHEN another deal's call comes with a 5 s budget
        let b = enerflo
            .send(
                Method::GET,
                "/api/v3/installs/find/B",
                None,
                Duration::from_secs(5),
            )
            .await
            .expect_err("held: the pause outlasts the budget");

        // THEN it is not sent, and fails as transient carrying the rest of the pause
        let sent: Vec<_> = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| r.url.path().to_owned())
            .collect();
        assert_eq!(sent, ["/api/v3/installs/find/A"]);
        let ra = b.retry_after().expect("carries the remaining Retry-After");
        assert!(
            ra > Duration::from_secs(20) && ra <= Duration::from_secs(30),
            "{ra:?}"
        );
        let err = SyncError::from(b);
        assert!(err.is_transient(), "{}", err.describe());
        assert_eq!(err.retry_after(), Some(ra));
    }

    fn maintenance_page() -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_raw(
            "<!DOCTYPE html><html><head><title>Enerflo</title></head>\
             <body><h1>Down for maintenance</h1><p>Back soon.</p></body></html>",
            "text/html; charset=UTF-8",
        )
    }

    #[tokio::test]
    async fn a_200_html_maintenance_page_is_a_transient_error_naming_its_content_type() {
        // GIVEN Enerflo answers 200 with an HTML maintenance page
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(maintenance_page())
            .mount(&server)
            .await;

        // WHEN a call's budget runs out on it
        let e = client(&server)
            .send(
                Method::GET,
                "/api/v3/installs/700001",
                None,
                Duration::from_secs(3),
            )
            .await
            .expect_err("not JSON");

        // THEN it was retried, and is transient: the log text names the content type, the
        // DLQ reason adds the page's text
        assert!(server.received_requests().await.unwrap().len() >= 2);
        let summary = e.to_string();
        assert!(summary.contains("answered 200"), "{summary}");
        assert!(summary.contains("not JSON"), "{summary}");
        assert!(summary.contains("text/html"), "{summary}");
        assert!(
            !summary.contains("maintenance"),
            "no body in logs: {summary}"
        );
        let err = SyncError::from(e);
        assert!(err.is_transient(), "{}", err.describe());
        assert!(
            err.describe().ends_with("Down for maintenance Back soon."),
            "{}",
            err.describe()
        );
    }

    #[tokio::test]
    async fn a_200_html_maintenance_page_then_json_returns_the_json() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(maintenance_page())
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 700001})))
            .mount(&server)
            .await;
        let r = client(&server)
            .send(
                Method::GET,
                "/api/v3/installs/700001",
                None,
                Duration::from_secs(5),
            )
            .await
            .expect("retried past the page");
        assert_eq!(r.body, json!({"id": 700001}));
        assert_eq!(server.received_requests().await.unwrap().len(), 2);
    }

    async fn find(body: Value) -> (Result<Option<Value>, EnerfloError>, usize) {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v3/installs/find/deal-x"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&server)
            .await;
        let enerflo: Arc<dyn EnerfloApi> = client(&server);
        let r = enerflo
            .find_install_by_deal("deal-x", Duration::from_secs(5))
            .await;
        (r, server.received_requests().await.unwrap().len())
    }

    #[tokio::test]
    async fn installs_find_answering_200_without_an_install_id_is_a_transient_error() {
        for body in [
            json!({}),
            json!({"data": {"customer_id": 900001}}),
            json!({"status": "ok"}),
        ] {
            let (r, calls) = find(body.clone()).await;
            let e = r.expect_err("not an install");
            assert_eq!(calls, 1, "the queue's backoff retries it, not this call");
            let summary = e.to_string();
            assert!(
                summary.starts_with(
                    "installs/find for deal deal-x answered 200 without an install id (looked at"
                ),
                "{body}: {summary}"
            );
            let err = SyncError::from(e);
            assert!(err.is_transient(), "{body}: {}", err.describe());
        }
    }

    #[tokio::test]
    async fn installs_find_takes_the_install_id_where_the_mapping_reads_it() {
        for body in [
            json!({"id": 700001}),
            json!({"data": {"id": "700002"}}),
            json!({"results": [{"id": 700003}]}),
        ] {
            let (r, _) = find(body.clone()).await;
            assert_eq!(r.expect("an install"), Some(body));
        }
    }
}
