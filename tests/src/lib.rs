//! Test harness: a local runner on a random port with a fresh data dir, wired to wiremock
//! Enerflo and CRM servers (zero-to-production style: one app per test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod faulty;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use enerflo_sync::config::Config;
use enerflo_sync_local::Runner;
use serde_json::Value;
use wiremock::MockServer;

/// An obviously fake signing secret (`whsec_` + base64 of 32 bytes of 0x42).
pub const CRM_SECRET: &str = "whsec_QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
pub const TOKEN: &str = "test-webhook-token-0123456789abcdef";

pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/enerflo")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).expect("fixture is JSON")
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sync-tests-{tag}-{}-{:x}",
        std::process::id(),
        fastrand_u64()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn fastrand_u64() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ (std::process::id() as u64) << 32
}

pub struct Harness {
    pub runner: Runner,
    pub enerflo: MockServer,
    pub crm: MockServer,
    pub http: reqwest::Client,
}

/// Starts a runner pointed at fresh wiremock servers. `extra` overrides environment variables;
/// the retry backoff is shortened so retry tests finish in seconds.
pub async fn start(extra: &[(&str, &str)]) -> Harness {
    let enerflo = MockServer::start().await;
    let crm = MockServer::start().await;
    let data_dir = temp_dir("runner");
    let mut env: HashMap<String, String> = HashMap::from([
        ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
        ("DATA_DIR".into(), data_dir.display().to_string()),
        ("WEBHOOK_TOKEN".into(), TOKEN.into()),
        ("ENERFLO_BASE_URL".into(), enerflo.uri()),
        ("ENERFLO_API_KEY".into(), "fake-enerflo-key".into()),
        (
            "CRM_WEBHOOK_URL".into(),
            format!("{}/crm/events", crm.uri()),
        ),
        ("CRM_WEBHOOK_SECRET".into(), CRM_SECRET.into()),
        ("RETRY_MAX_ATTEMPTS".into(), "4".into()),
        ("ENERFLO_TIMEOUT_SECS".into(), "2".into()),
        ("CRM_TIMEOUT_SECS".into(), "2".into()),
    ]);
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let mut config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
    config.retry.base = Duration::from_millis(100);
    config.retry.cap = Duration::from_millis(400);
    let runner = enerflo_sync_local::start(config)
        .await
        .expect("runner starts");
    Harness {
        runner,
        enerflo,
        crm,
        http: reqwest::Client::new(),
    }
}

impl Harness {
    pub async fn post_webhook(&self, body: impl Into<String>) -> (u16, Value) {
        self.post_webhook_with_token(TOKEN, body).await
    }

    pub async fn post_webhook_with_token(
        &self,
        token: &str,
        body: impl Into<String>,
    ) -> (u16, Value) {
        let resp = self
            .http
            .post(self.runner.url(&format!("/enerflo/webhooks/{token}")))
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The JSON bodies the CRM mock received, in order.
    pub async fn crm_events(&self) -> Vec<Value> {
        self.crm
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
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

    /// Waits until the stage queues are empty (every accepted message processed or dead-lettered).
    pub async fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let depth: usize = enerflo_sync_local::CONSUMER_STAGES
                .iter()
                .map(|s| self.runner.queue.depth(*s).unwrap_or(0))
                .sum();
            if depth == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "queues not drained within {timeout:?} ({depth} left)"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Starts a runner on its own Enerflo sandbox (no `ENERFLO_API_KEY`): like the real platform, the
/// sandbox fires webhooks back into the runner after each write. The CRM is the wiremock server.
pub async fn start_with_sandbox(extra: &[(&str, &str)]) -> Harness {
    let enerflo = MockServer::start().await;
    let crm = MockServer::start().await;
    let data_dir = temp_dir("sandboxed");
    let mut env: HashMap<String, String> = HashMap::from([
        ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
        ("DATA_DIR".into(), data_dir.display().to_string()),
        ("WEBHOOK_TOKEN".into(), TOKEN.into()),
        (
            "CRM_WEBHOOK_URL".into(),
            format!("{}/crm/events", crm.uri()),
        ),
        ("CRM_WEBHOOK_SECRET".into(), CRM_SECRET.into()),
        ("RETRY_MAX_ATTEMPTS".into(), "4".into()),
        ("CRM_TIMEOUT_SECS".into(), "2".into()),
    ]);
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let mut config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
    config.retry.base = Duration::from_millis(100);
    config.retry.cap = Duration::from_millis(400);
    let runner = enerflo_sync_local::start(config)
        .await
        .expect("runner starts");
    assert!(
        runner.sandbox.is_some(),
        "no Enerflo key: the sandbox serves"
    );
    Harness {
        runner,
        enerflo,
        crm,
        http: reqwest::Client::new(),
    }
}

impl Harness {
    /// A CRM call to an inbound route (`PUT /crm/installs/...`) with the local bearer token.
    pub async fn crm_put(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .put(self.runner.url(path))
            .header(
                "authorization",
                format!("Bearer {}", enerflo_sync_local::LOCAL_CRM_TOKEN),
            )
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
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
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let log = self
                .runner
                .ports
                .log
                .for_entity(entity, 50)
                .await
                .unwrap_or_default();
            if log.iter().any(|r| r.event == event && r.outcome == outcome) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }
}

/// A wiremock answer for an Enerflo write that, like an Enerflo firing webhooks synchronously,
/// first delivers `webhook` to the runner (and waits for its 202), then answers 200. Wiremock
/// serves from its own thread, so the blocking call does not stall the runner.
pub struct FiresWebhookFirst {
    pub runner: std::net::SocketAddr,
    pub webhook: Value,
}

impl wiremock::Respond for FiresWebhookFirst {
    fn respond(&self, _request: &wiremock::Request) -> wiremock::ResponseTemplate {
        use std::io::{Read, Write};
        let body = self.webhook.to_string();
        let mut stream = std::net::TcpStream::connect(self.runner).expect("runner reachable");
        write!(
            stream,
            "POST /enerflo/webhooks/{TOKEN} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.runner,
            body.len()
        )
        .expect("webhook sent");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 202"),
            "webhook not accepted: {answer}"
        );
        wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": true}))
    }
}
