//! A local stand-in for Enerflo's REST API, serving the endpoints the flows call with realistic
//! data, so a new user sees events flow end to end without credentials. Like the real API it
//! checks the `api-key` header, and like the real platform it fires webhooks after writes (to the
//! runner's own webhook route), so the echo protection can be watched working. Every call is
//! recorded (`GET /sandbox/enerflo/calls`).
//!
//! One file per stage adds its routes (`projects.rs` for installs/find, ...); they share
//! [`Sandbox`] state. `seed.rs` fills it with a few hundred obviously fake installs and customers,
//! which `GET /api/v3/installs` and `GET /api/v1/customers` serve in pages; `admin.rs` changes
//! them the way a user in Enerflo would and can "lose" the webhooks that follow, to show the
//! reconciliation sweep repairing the drift.

mod admin;
mod installs;
mod leads;
mod notes;
mod projects;
mod seed;

pub use seed::{DEFAULT_RECORDS, FIRST_SEEDED_CUSTOMER, FIRST_SEEDED_INSTALL};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

pub use projects::install_object;

/// What the sandbox remembers between calls.
#[derive(Default)]
pub struct Model {
    /// v1 install objects by install id (created on first `installs/find` of a deal).
    pub installs: BTreeMap<u64, Value>,
    /// Free-form per-stage state (customers, notes, statuses, ...), keyed by the stage's files.
    pub extra: BTreeMap<String, Value>,
}

pub struct Sandbox {
    pub api_key: String,
    pub model: Mutex<Model>,
    calls: Mutex<Vec<String>>,
    /// Where to send the webhooks Enerflo would fire after a write (`None`: fire nothing).
    webhook_url: Mutex<Option<String>>,
    /// Webhooks being "lost" on command (`admin.rs`).
    webhooks: Mutex<WebhookLoss>,
    /// How long the list endpoints take to answer (`admin.rs`: a slow Enerflo).
    list_latency_ms: std::sync::atomic::AtomicU64,
    http: reqwest::Client,
    pub fields: enerflo_sync::config::EnerfloFields,
}

impl Sandbox {
    pub fn new(
        api_key: impl Into<String>,
        fields: enerflo_sync::config::EnerfloFields,
    ) -> Arc<Self> {
        Arc::new(Self {
            api_key: api_key.into(),
            model: Mutex::new(Model::default()),
            calls: Mutex::new(Vec::new()),
            webhook_url: Mutex::new(None),
            webhooks: Mutex::new(WebhookLoss::default()),
            list_latency_ms: std::sync::atomic::AtomicU64::new(0),
            http: enerflo_sync::wire::client(),
            fields,
        })
    }

    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/calls", get(calls))
            .merge(projects::routes())
            .merge(leads::routes())
            .merge(installs::routes())
            .merge(notes::routes())
            .nest("/admin", admin::routes())
            .with_state(self.clone())
    }

    /// Makes the sandbox fire Enerflo-style webhooks after writes, to `url`.
    pub fn set_webhook_url(&self, url: String) {
        if let Ok(mut slot) = self.webhook_url.lock() {
            *slot = Some(url);
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Records the call; `Some(401 response)` when the `api-key` header is wrong.
    pub fn reject(&self, headers: &HeaderMap, call: String) -> Option<Response> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
        match headers.get("api-key").and_then(|v| v.to_str().ok()) {
            Some(k) if k == self.api_key => None,
            _ => Some(
                (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"message": "Unauthenticated."})),
                )
                    .into_response(),
            ),
        }
    }

    /// Fires a webhook the way Enerflo does after a write: asynchronously, a moment later. While
    /// webhooks are being lost ([`Sandbox::lose_webhooks`]) it is kept aside instead.
    pub fn emit(self: &Arc<Self>, body: Value) {
        if let Ok(mut loss) = self.webhooks.lock()
            && loss.losing
        {
            loss.lost.push(body);
            return;
        }
        self.send_webhook(body);
    }

    fn send_webhook(self: &Arc<Self>, body: Value) {
        let Some(url) = self.webhook_url.lock().ok().and_then(|u| u.clone()) else {
            return;
        };
        let http = self.http.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if let Err(e) = http.post(&url).json(&body).send().await {
                // Without the URL: its path is the webhook token.
                tracing::warn!(error = %e.without_url(), "sandbox webhook not delivered");
            }
        });
    }
}

/// Webhooks the sandbox was told to lose, kept for redelivery.
#[derive(Default)]
struct WebhookLoss {
    losing: bool,
    lost: Vec<Value>,
}

impl Sandbox {
    /// Makes the sandbox hold exactly `records` seeded installs and customers (`seed.rs`).
    pub fn seed(&self, records: usize) {
        if let Ok(mut model) = self.model.lock() {
            seed::seed(
                &mut model,
                records,
                &self.fields.milestone_start_field,
                &self.fields.milestone_completed_field,
            );
        }
    }

    /// Makes every list answer (`GET /api/v3/installs`, `GET /api/v1/customers`) take `ms`.
    pub fn set_list_latency(&self, ms: u64) {
        self.list_latency_ms
            .store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    async fn list_latency(&self) {
        let ms = self
            .list_latency_ms
            .load(std::sync::atomic::Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    pub fn is_losing_webhooks(&self) -> bool {
        self.webhooks.lock().map(|l| l.losing).unwrap_or(false)
    }

    /// From now on, webhooks are not sent (`true`) or sent again (`false`).
    pub fn lose_webhooks(&self, lose: bool) {
        if let Ok(mut loss) = self.webhooks.lock() {
            loss.losing = lose;
        }
    }

    /// The event names of the webhooks lost so far (and not redelivered).
    pub fn lost_webhooks(&self) -> Vec<String> {
        self.webhooks
            .lock()
            .map(|l| {
                l.lost
                    .iter()
                    .map(|w| w["webhook_event"].as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends the lost webhooks after all (late, as a delayed delivery would be); how many.
    pub fn redeliver_lost(self: &Arc<Self>) -> usize {
        let lost = self
            .webhooks
            .lock()
            .map(|mut l| std::mem::take(&mut l.lost))
            .unwrap_or_default();
        let n = lost.len();
        for body in lost {
            self.send_webhook(body);
        }
        n
    }
}

async fn calls(State(sb): State<Arc<Sandbox>>) -> Json<Value> {
    Json(json!({"calls": sb.calls()}))
}

/// The rows of a `?page=&<size_param>=` request (pages from 1, size 100 by default, at most 1000);
/// `None` without `page`.
pub fn page_window(
    q: &std::collections::HashMap<String, String>,
    size_param: &str,
    total: usize,
) -> Option<std::ops::Range<usize>> {
    let page: usize = q
        .get("page")?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let size: usize = q
        .get(size_param)
        .and_then(|s| s.trim().parse().ok())
        .filter(|s| *s >= 1)
        .unwrap_or(100)
        .min(1000);
    let start = ((page - 1) * size).min(total);
    Some(start..(start + size).min(total))
}

/// A stable small number derived from an id, so the same deal always maps to the same install.
pub fn stable_number(s: &str) -> u64 {
    s.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1099511628211)
    }) % 90_000
}
