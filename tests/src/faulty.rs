//! `FaultyServer`: an HTTP server of its own (127.0.0.1, random port) placed in front of an
//! upstream (a wiremock server) that fails on command, for the fault-injection tests. It passes
//! requests through, answers a chosen status (with `Retry-After`, as an HTML page like Enerflo's
//! 429s), hangs, forwards and then withholds the answer, or refuses connections altogether. It
//! records every request it sees with the time it arrived and the mode that answered it.
//!
//! Point the runner at it with the harness overrides, then give it the wiremock upstream:
//!
//! ```text
//! let enerflo = FaultyServer::start().await;
//! let h = start(&[("ENERFLO_BASE_URL", &enerflo.uri())]).await;
//! enerflo.set_upstream(&h.enerflo.uri());
//! enerflo.set_mode(Mode::Refuse).await;
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the server answers from now on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward method, path and query, headers (without `host`) and body to the upstream, and
    /// relay its answer.
    Pass,
    /// Answer this status without asking the upstream; `retry_after` in seconds; `html` makes the
    /// body an HTML page (what Enerflo's 429s and gateway errors look like) instead of JSON.
    Status {
        code: u16,
        retry_after: Option<u64>,
        html: bool,
    },
    /// Say nothing for this long, then answer 504 (the client's timeout fires first).
    Hang(Duration),
    /// The listener is closed and open connections are dropped: connecting is refused. Leaving
    /// this mode binds the same port again. Refused attempts never reach the server, so they are
    /// not recorded.
    Refuse,
    /// Forward to the upstream (which acts on the request), then withhold its answer for this long
    /// and answer 504: the write was accepted, the acknowledgement was lost.
    Swallow(Duration),
}

impl Mode {
    /// A bare status answer.
    pub fn status(code: u16) -> Self {
        Mode::Status {
            code,
            retry_after: None,
            html: false,
        }
    }

    /// The name requests are counted under.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Pass => "pass",
            Mode::Status { .. } => "status",
            Mode::Hang(_) => "hang",
            Mode::Refuse => "refuse",
            Mode::Swallow(_) => "swallow",
        }
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// When it arrived (headers and body read).
    pub at: Instant,
    pub method: String,
    pub path_and_query: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    /// The mode that answered it.
    pub mode: Mode,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.path_and_query
            .split('?')
            .next()
            .unwrap_or(&self.path_and_query)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Shared {
    upstream: Mutex<Option<String>>,
    mode: Mutex<Mode>,
    /// Modes for the next requests, used up before `mode` applies: (mode, how many requests).
    script: Mutex<VecDeque<(Mode, usize)>>,
    log: Mutex<Vec<Recorded>>,
    http: reqwest::Client,
}

struct Serving {
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

pub struct FaultyServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    serving: tokio::sync::Mutex<Option<Serving>>,
}

/// Headers that describe one hop, not the message: never copied across the proxy.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::HOST,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FaultyServer {
    /// Starts in [`Mode::Pass`] with no upstream yet (requests get 502 until [`Self::set_upstream`]).
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            upstream: Mutex::new(None),
            mode: Mutex::new(Mode::Pass),
            script: Mutex::new(VecDeque::new()),
            log: Mutex::new(Vec::new()),
            http: enerflo_sync::wire::client_builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        });
        let serving = serve(listener, shared.clone());
        Self {
            addr,
            shared,
            serving: tokio::sync::Mutex::new(Some(serving)),
        }
    }

    /// Starts in front of `upstream` (a base URL such as `MockServer::uri()`).
    pub async fn in_front_of(upstream: &str) -> Self {
        let server = Self::start().await;
        server.set_upstream(upstream);
        server
    }

    /// `http://127.0.0.1:<port>`: the same for the server's whole life, across [`Mode::Refuse`].
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_upstream(&self, upstream: &str) {
        *lock(&self.shared.upstream) = Some(upstream.trim_end_matches('/').to_owned());
    }

    pub fn mode(&self) -> Mode {
        lock(&self.shared.mode).clone()
    }

    /// Switches the mode for every later request. Entering [`Mode::Refuse`] closes the listener
    /// and drops open connections (pooled keep-alive connections included) before returning;
    /// leaving it binds the same port again before returning.
    pub async fn set_mode(&self, mode: Mode) {
        let refuse = mode == Mode::Refuse;
        *lock(&self.shared.mode) = mode;
        let mut serving = self.serving.lock().await;
        if refuse {
            if let Some(s) = serving.take() {
                s.accept.abort();
                let _ = s.accept.await;
                let connections: Vec<_> = lock(&s.connections).drain(..).collect();
                for c in connections {
                    c.abort();
                    let _ = c.await;
                }
            }
        } else if serving.is_none() {
            *serving = Some(serve(rebind(self.addr).await, self.shared.clone()));
        }
    }

    /// The next `times` requests get `mode` (not [`Mode::Refuse`]), whatever the current mode;
    /// scripted steps are used up in order.
    pub fn script(&self, mode: Mode, times: usize) {
        assert!(
            mode != Mode::Refuse,
            "Refuse is a listener state: use set_mode"
        );
        lock(&self.shared.script).push_back((mode, times));
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.log).clone()
    }

    /// How many requests each mode answered, by [`Mode::name`].
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for r in lock(&self.shared.log).iter() {
            *out.entry(r.mode.name()).or_insert(0) += 1;
        }
        out
    }

    /// How many requests the mode named `name` answered.
    pub fn count(&self, name: &str) -> usize {
        self.counts().get(name).copied().unwrap_or(0)
    }

    /// The most requests that arrived within any span of `window` (for rate checks).
    pub fn max_requests_in_any(&self, window: Duration) -> usize {
        let times: Vec<Instant> = lock(&self.shared.log).iter().map(|r| r.at).collect();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        if let Ok(mut serving) = self.serving.try_lock()
            && let Some(s) = serving.take()
        {
            s.accept.abort();
            for c in lock(&s.connections).drain(..) {
                c.abort();
            }
        }
    }
}

/// Binds the port a refused phase released. The old sockets may linger briefly; retry.
async fn rebind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("could not bind {addr} again: {e}"),
        }
    }
}

fn serve(listener: TcpListener, shared: Arc<Shared>) -> Serving {
    let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
    let conns = connections.clone();
    let accept = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            };
            let shared = shared.clone();
            let task = tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(shared.handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            let mut open = lock(&conns);
            open.retain(|t| !t.is_finished());
            open.push(task);
        }
    });
    Serving {
        accept,
        connections,
    }
}

fn plain(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

impl Shared {
    fn next_mode(&self) -> Mode {
        let mut script = lock(&self.script);
        while let Some((mode, left)) = script.front_mut() {
            if *left == 0 {
                script.pop_front();
                continue;
            }
            *left -= 1;
            return mode.clone();
        }
        drop(script);
        lock(&self.mode).clone()
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mode = self.next_mode();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        lock(&self.log).push(Recorded {
            at: Instant::now(),
            method: parts.method.to_string(),
            path_and_query: path_and_query.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
            mode: mode.clone(),
        });
        match mode {
            Mode::Pass => self.forward(&parts, &path_and_query, body).await,
            Mode::Status {
                code,
                retry_after,
                html,
            } => {
                let mut resp = if html {
                    plain(
                        code,
                        "text/html; charset=UTF-8",
                        format!(
                            "<!DOCTYPE html><html><head><title>{code}</title></head>\
                             <body><h1>Error {code}</h1></body></html>"
                        ),
                    )
                } else {
                    plain(
                        code,
                        "application/json",
                        format!(r#"{{"message":"injected fault {code}"}}"#),
                    )
                };
                if let Some(secs) = retry_after {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                resp
            }
            Mode::Hang(d) => {
                tokio::time::sleep(d).await;
                plain(504, "text/plain", "gateway timeout".into())
            }
            Mode::Swallow(d) => {
                let _ = self.forward(&parts, &path_and_query, body).await;
                tokio::time::sleep(d).await;
                plain(504, "text/plain", "gateway timeout".into())
            }
            // Only a request racing the switch gets here: the listener is gone.
            Mode::Refuse => plain(503, "text/plain", "refusing".into()),
        }
    }

    async fn forward(
        &self,
        parts: &http::request::Parts,
        path_and_query: &str,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let Some(upstream) = lock(&self.upstream).clone() else {
            return plain(502, "text/plain", "no upstream configured".into());
        };
        let mut req = self
            .http
            .request(parts.method.clone(), format!("{upstream}{path_and_query}"));
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(name) {
                req = req.header(name, value);
            }
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => return plain(502, "text/plain", format!("upstream failed: {e}")),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap_or_default();
        let mut out = Response::new(Full::new(bytes));
        *out.status_mut() = status;
        for (name, value) in &headers {
            if !HOP_BY_HOP.contains(name) {
                out.headers_mut().append(name, value.clone());
            }
        }
        out
    }
}
