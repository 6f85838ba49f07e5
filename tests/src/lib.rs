//! The end-to-end test kit: a local runner on a random port with a fresh data dir, wired to a
//! wiremock Enerflo and a wiremock CRM (zero-to-production style: one app per test).
//!
//! - [`start`], [`start_with_sandbox`], [`start_unthrottled`]: a [`Harness`] (runner + both fakes);
//! - [`crm`]: the fake CRM (`crm_accepts`, what it received);
//! - [`enerflo`]: the fake Enerflo (installs, leads, notes, statuses, milestones) and the
//!   numbered test projects it knows;
//! - [`faulty`]: a server in front of either fake that fails on command;
//! - [`ddb_calls`]: a proxy in front of moto counting the DynamoDB calls by operation;
//! - waiting on observed progress: [`Harness::drain`], [`Harness::settle`], [`wait_until`],
//!   [`eventually`], and [`join_all`] for concurrent calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod crm;
pub mod ddb_calls;
pub mod enerflo;
pub mod faulty;
pub mod load;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use enerflo_sync::classify::Stage;
use enerflo_sync::config::Config;
use enerflo_sync::enerflo::{EnerfloApi, HttpEnerfloClient};
use enerflo_sync::queue::DeadLetter;
use enerflo_sync::secret::Secret;
use enerflo_sync::store::{EntityKind, EventRecord, IdForm, IdRef};
use enerflo_sync_local::Runner;
use serde_json::Value;
use wiremock::MockServer;

pub use futures::future::join_all;

/// An obviously fake signing secret (`whsec_` + base64 of 32 bytes of 0x42).
pub const CRM_SECRET: &str = "whsec_QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
pub const TOKEN: &str = "test-webhook-token-0123456789abcdef";
/// The Enerflo API key the harness's runner sends to the fake Enerflo.
pub const ENERFLO_API_KEY: &str = "fake-enerflo-key";

pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/enerflo")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).expect("fixture is JSON")
}

/// A fresh directory of its own: unique across processes (pid), tests in one process (a
/// counter: `cargo test` runs a binary's tests as threads of one process) and runs (a random tag).
pub fn temp_dir(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "sync-tests-{tag}-{}-{n}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

// ----- waiting on observed progress -------------------------------------------------------------

/// Polls `check` every 25 ms until it yields `Some`; `None` once `timeout` has passed.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `check` until it holds; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let held = eventually(timeout, || {
        let check = check();
        async move { check.await.then_some(()) }
    })
    .await;
    assert!(held.is_some(), "timed out after {timeout:?}: {what}");
}

/// Waits for the consumer's final verdict (not `queued` or `retrying`) on the first `event` of
/// `entity` in the runner's event log; `None` on timeout.
pub async fn final_outcome(
    runner: &Runner,
    entity: &str,
    event: &str,
    timeout: Duration,
) -> Option<String> {
    eventually(timeout, || async {
        let log = runner.ports.log.for_entity(entity, 50).await.unwrap();
        log.iter()
            .find(|r| r.event == event && !matches!(r.outcome.as_str(), "queued" | "retrying"))
            .map(|r| r.outcome.clone())
    })
    .await
}

// ----- the harness ------------------------------------------------------------------------------

pub struct Harness {
    pub runner: Runner,
    pub enerflo: MockServer,
    pub crm: MockServer,
    pub http: reqwest::Client,
}

/// An answer of the runner, as a client sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The body as JSON, or as a JSON string when it is not JSON.
    pub body: Value,
    pub text: String,
    pub content_type: String,
    pub retry_after: Option<String>,
}

impl Answer {
    pub async fn of(resp: reqwest::Response) -> Self {
        let header = |k: &str| {
            resp.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (retry_after, content_type) = (header("retry-after"), header("content-type"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Self {
            status,
            body: serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone())),
            text,
            content_type: content_type.unwrap_or_default(),
            retry_after,
        }
    }
}

/// The settings every harness runner gets: a random port, a fresh data dir, the webhook token and
/// the CRM webhook on the fake CRM; with `enerflo`, the Enerflo API there (else the sandbox).
fn runner_env(
    tag: &str,
    enerflo: Option<&MockServer>,
    crm: &MockServer,
) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = HashMap::from([
        ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
        ("DATA_DIR".into(), temp_dir(tag).display().to_string()),
        ("WEBHOOK_TOKEN".into(), TOKEN.into()),
        (
            "CRM_WEBHOOK_URL".into(),
            format!("{}{}", crm.uri(), crm::EVENTS_PATH),
        ),
        ("CRM_WEBHOOK_SECRET".into(), CRM_SECRET.into()),
    ]);
    if let Some(enerflo) = enerflo {
        env.insert("ENERFLO_BASE_URL".into(), enerflo.uri());
        env.insert("ENERFLO_API_KEY".into(), ENERFLO_API_KEY.into());
    }
    env
}

/// The test settings on top of [`runner_env`]: four attempts, 2 s timeouts, then `extra`; the
/// retry backoff is shortened so retry tests finish in seconds.
fn quick_config(mut env: HashMap<String, String>, sandbox: bool, extra: &[(&str, &str)]) -> Config {
    env.insert("RETRY_MAX_ATTEMPTS".into(), "4".into());
    env.insert("CRM_TIMEOUT_SECS".into(), "2".into());
    if !sandbox {
        env.insert("ENERFLO_TIMEOUT_SECS".into(), "2".into());
    }
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let mut config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
    config.retry.base = Duration::from_millis(100);
    config.retry.cap = Duration::from_millis(400);
    config
}

/// Which Enerflo the runner talks to.
enum EnerfloKind {
    /// The wiremock Enerflo, with the test settings of [`quick_config`].
    Mock,
    /// The runner's own sandbox, with the test settings of [`quick_config`].
    Sandbox,
    /// The wiremock Enerflo through a client without the per-minute limit, default settings.
    Unthrottled,
}

async fn launch(tag: &str, kind: EnerfloKind, extra: &[(&str, &str)]) -> Harness {
    let enerflo = MockServer::start().await;
    let crm = MockServer::start().await;
    let sandbox = matches!(kind, EnerfloKind::Sandbox);
    let env = runner_env(tag, (!sandbox).then_some(&enerflo), &crm);
    let (config, client) = match kind {
        EnerfloKind::Mock | EnerfloKind::Sandbox => (quick_config(env, sandbox, extra), None),
        EnerfloKind::Unthrottled => {
            let client: std::sync::Arc<dyn EnerfloApi> = std::sync::Arc::new(
                HttpEnerfloClient::new(
                    &enerflo.uri(),
                    Secret::new(ENERFLO_API_KEY),
                    Duration::from_secs(5),
                    usize::MAX,
                )
                .expect("client"),
            );
            let config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
            (config, Some(client))
        }
    };
    // WORKERS_PER_STAGE among `extra`: the runner's workers per stage (else its default).
    let workers = extra
        .iter()
        .find(|(k, _)| *k == "WORKERS_PER_STAGE")
        .map(|(_, v)| v.parse().expect("WORKERS_PER_STAGE is a number"))
        .unwrap_or(enerflo_sync_local::DEFAULT_WORKERS_PER_STAGE);
    let runner = enerflo_sync_local::start_with_workers(config, client, workers)
        .await
        .expect("runner starts");
    assert_eq!(
        runner.sandbox.is_some(),
        sandbox,
        "the sandbox serves exactly when there is no Enerflo key"
    );
    Harness {
        runner,
        enerflo,
        crm,
        http: enerflo_sync::wire::client(),
    }
}

/// Starts a runner pointed at fresh wiremock servers. `extra` overrides environment variables;
/// the retry backoff is shortened so retry tests finish in seconds.
pub async fn start(extra: &[(&str, &str)]) -> Harness {
    launch("runner", EnerfloKind::Mock, extra).await
}

/// Starts a runner on its own Enerflo sandbox (no `ENERFLO_API_KEY`): like the real platform, the
/// sandbox fires webhooks back into the runner after each write. The CRM is the wiremock server.
pub async fn start_with_sandbox(extra: &[(&str, &str)]) -> Harness {
    launch("sandboxed", EnerfloKind::Sandbox, extra).await
}

/// A runner with the default settings (retries, timeouts, backoff) and an Enerflo client without
/// the per-minute limit, for load: that limit (proven by client unit tests) would measure
/// Enerflo's quota, not the pipeline.
pub async fn start_unthrottled() -> Harness {
    launch("load", EnerfloKind::Unthrottled, &[]).await
}

impl Harness {
    /// A request to the runner with an optional `authorization` header and a JSON body.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        authorization: Option<&str>,
        body: impl Into<String>,
    ) -> Answer {
        let mut req = self
            .http
            .request(method, self.runner.url(path))
            .header("content-type", "application/json")
            .body(body.into());
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        Answer::of(req.send().await.expect("request")).await
    }

    pub async fn post_webhook(&self, body: impl Into<String>) -> (u16, Value) {
        self.post_webhook_with_token(TOKEN, body).await
    }

    pub async fn post_webhook_with_token(
        &self,
        token: &str,
        body: impl Into<String>,
    ) -> (u16, Value) {
        let a = self
            .request(
                http::Method::POST,
                &format!("/enerflo/webhooks/{token}"),
                None,
                body,
            )
            .await;
        (a.status, a.body)
    }

    /// Posts a webhook, asserts it was accepted (202) and waits until the queues are drained.
    pub async fn deliver(&self, body: impl Into<String>) {
        let (status, answer) = self.post_webhook(body).await;
        assert_eq!(status, 202, "{answer}");
        self.drain(Duration::from_secs(10)).await;
    }

    /// A CRM call to an inbound route with the local bearer token.
    pub async fn crm_call(&self, method: http::Method, path: &str, body: Value) -> Answer {
        let bearer = format!("Bearer {}", enerflo_sync_local::LOCAL_CRM_TOKEN);
        self.request(method, path, Some(&bearer), body.to_string())
            .await
    }

    /// A CRM `PUT` to an inbound route (`/crm/installs/...`) with the local bearer token.
    pub async fn crm_put(&self, path: &str, body: Value) -> (u16, Value) {
        let a = self.crm_call(http::Method::PUT, path, body).await;
        (a.status, a.body)
    }

    /// A CRM `POST` to an inbound route (`/crm/leads`, `/crm/installs/.../notes`) with the local
    /// bearer token.
    pub async fn crm_post(&self, path: &str, body: Value) -> (u16, Value) {
        let a = self.crm_call(http::Method::POST, path, body).await;
        (a.status, a.body)
    }

    /// The JSON bodies the CRM mock received, in order.
    pub async fn crm_events(&self) -> Vec<Value> {
        crm::events(&self.crm).await
    }

    pub async fn enerflo_calls(&self, path_prefix: &str) -> usize {
        self.enerflo
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path().starts_with(path_prefix))
            .count()
    }

    /// Messages waiting in the stage queues, all stages together.
    pub fn queued(&self) -> usize {
        enerflo_sync_local::CONSUMER_STAGES
            .iter()
            .map(|s| self.runner.queue.depth(*s).unwrap_or(0))
            .sum()
    }

    /// Waits until the stage queues are empty (every accepted message processed or dead-lettered).
    pub async fn drain(&self, timeout: Duration) {
        let drained = eventually(timeout, || async { (self.queued() == 0).then_some(()) }).await;
        assert!(
            drained.is_some(),
            "queues not drained within {timeout:?} ({} left)",
            self.queued()
        );
    }

    /// Lets everything still in flight land before a test judges "exactly once" or "nothing":
    /// waits until the queues are drained and then neither fake received a request and the queues
    /// stayed empty for [`QUIET`] (long enough for an echo a fake fires from a thread of its own
    /// to arrive and be processed).
    pub async fn settle(&self) {
        self.drain(Duration::from_secs(60)).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = self.activity().await;
        let mut since = Instant::now();
        while since.elapsed() < QUIET {
            assert!(
                Instant::now() < deadline,
                "still busy after 60 s: {seen:?} (CRM requests, Enerflo requests, queued)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.activity().await;
            if now != seen {
                (seen, since) = (now, Instant::now());
            }
        }
        self.drain(Duration::from_secs(60)).await;
    }

    async fn activity(&self) -> (usize, usize, usize) {
        let crm = self.crm.received_requests().await.map_or(0, |r| r.len());
        let enerflo = self
            .enerflo
            .received_requests()
            .await
            .map_or(0, |r| r.len());
        (crm, enerflo, self.queued())
    }

    /// The dead letters of `stage`'s queue.
    pub fn dead_letters(&self, stage: Stage) -> Vec<DeadLetter> {
        self.runner.queue.dead_letters(stage).unwrap()
    }

    /// The event log's records of `entity`, newest first (at most 50).
    pub async fn event_log(&self, entity: &str) -> Vec<EventRecord> {
        self.runner.ports.log.for_entity(entity, 50).await.unwrap()
    }

    /// Waits until the event log records `outcome` for an `event` of `entity` (e.g. the echo of a
    /// webhook the sandbox fires a moment after a write); false on timeout.
    pub async fn wait_for_event_outcome(
        &self,
        entity: &str,
        event: &str,
        outcome: &str,
        timeout: Duration,
    ) -> bool {
        eventually(timeout, || async {
            let log = self
                .runner
                .ports
                .log
                .for_entity(entity, 50)
                .await
                .unwrap_or_default();
            log.iter()
                .any(|r| r.event == event && r.outcome == outcome)
                .then_some(())
        })
        .await
        .is_some()
    }

    /// The consumer's final verdict on the first `event` of `entity` ([`final_outcome`], 10 s).
    pub async fn final_outcome(&self, entity: &str, event: &str) -> Option<String> {
        final_outcome(&self.runner, entity, event, Duration::from_secs(10)).await
    }

    /// Links `install` to the CRM project `crm_project`, as stage 2 would have.
    pub async fn link_project(&self, install: u64, crm_project: &str) {
        let xref = &self.runner.ports.xref;
        let link = xref
            .link(EntityKind::Project, &[IdRef::new(IdForm::Install, install)])
            .await
            .unwrap();
        xref.set_crm_id(EntityKind::Project, &link.key, crm_project)
            .await
            .unwrap();
    }
}

/// How long [`Harness::settle`] waits for nothing to happen.
pub const QUIET: Duration = Duration::from_millis(800);

/// Posts `body` as JSON to `url` (with a bearer token if given) from a thread of its own, as a
/// fake answering from inside wiremock must (a runtime cannot block inside wiremock's); join the
/// handle for the answer.
pub fn post_from_thread(
    url: String,
    bearer: Option<&str>,
    body: Value,
) -> std::thread::JoinHandle<(u16, Value)> {
    let bearer = bearer.map(str::to_owned);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut req = enerflo_sync::wire::client().post(url).json(&body);
            if let Some(token) = bearer {
                req = req.bearer_auth(token);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        })
    })
}
