//! The fake CRM: what the wiremock CRM (`Harness::crm`) answers to the runner's signed event
//! webhooks, and what it received.
//!
//! ```text
//! crm_accepts(&h.crm, "crm-proj-1").await;        // one record for everything
//! crm_accepts(&h.crm, CrmIds::per_deal()).await;  // one record per deal: crm-<deal id>
//! crm_accepts(&h.crm, CrmIds::Numbered("crm-note")).await;  // crm-note-1, crm-note-2, ...
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Where the runner posts its CRM events (`CRM_WEBHOOK_URL` of the harness).
pub const EVENTS_PATH: &str = "/crm/events";

/// Which CRM record id the fake CRM answers for an event.
#[derive(Clone, Debug)]
pub enum CrmIds {
    /// The same record for every event (one project, one contact).
    Same(String),
    /// A record named from the event (one per entity).
    PerEvent(fn(&Value) -> String),
    /// A new record per event: `{prefix}-1`, `{prefix}-2`, ... (notes).
    Numbered(&'static str),
}

impl CrmIds {
    /// One record per deal: `crm-{enerflo.deal_id}`.
    pub fn per_deal() -> Self {
        CrmIds::PerEvent(|event| {
            format!(
                "crm-{}",
                event["enerflo"]["deal_id"].as_str().unwrap_or("unknown")
            )
        })
    }
}

impl From<&str> for CrmIds {
    fn from(id: &str) -> Self {
        CrmIds::Same(id.to_owned())
    }
}

/// Every event the fake CRM accepted, with the instant it arrived.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<Mutex<Vec<(Value, Instant)>>>);

impl Arrivals {
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<(Value, Instant)> {
        self.0.lock().unwrap().clone()
    }
}

struct FakeCrm {
    ids: CrmIds,
    next: AtomicU64,
    arrivals: Arrivals,
}

impl Respond for FakeCrm {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let at = Instant::now();
        let event: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let crm_id = match &self.ids {
            CrmIds::Same(id) => id.clone(),
            CrmIds::PerEvent(name) => name(&event),
            CrmIds::Numbered(prefix) => {
                format!("{prefix}-{}", self.next.fetch_add(1, Ordering::SeqCst))
            }
        };
        self.arrivals.0.lock().unwrap().push((event, at));
        ResponseTemplate::new(200).set_body_json(json!({"crm_id": crm_id}))
    }
}

/// Mounts the fake CRM on `crm`: every event posted to [`EVENTS_PATH`] is accepted (200) with the
/// record id `ids` names. The returned log holds what arrived, and when.
pub async fn crm_accepts(crm: &MockServer, ids: impl Into<CrmIds>) -> Arrivals {
    let arrivals = Arrivals::default();
    Mock::given(method("POST"))
        .and(path(EVENTS_PATH))
        .respond_with(FakeCrm {
            ids: ids.into(),
            next: AtomicU64::new(1),
            arrivals: arrivals.clone(),
        })
        .mount(crm)
        .await;
    arrivals
}

/// The JSON bodies `crm` received, in arrival order.
pub async fn events(crm: &MockServer) -> Vec<Value> {
    crm.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_slice(&r.body).ok())
        .collect()
}

/// What `crm` received: (`webhook-id` header, body), in arrival order.
pub async fn deliveries(crm: &MockServer) -> Vec<(String, Value)> {
    crm.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let id = r
                .headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (id, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        })
        .collect()
}
