//! The local CRM inbox: a reference receiver of the signed `webhook` connector. It verifies the
//! Standard Webhooks signature, stores what arrives (DATA_DIR/crm-inbox.jsonl, reloaded on start),
//! answers a stable `crm_id` per entity, and lists everything at `GET /crm-inbox/events`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use enerflo_sync::config::SigningSecret;
use enerflo_sync::crm::signature::verify;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Received {
    pub webhook_id: String,
    pub crm_id: String,
    pub deliveries: u64,
    pub event: Value,
}

#[derive(Default)]
struct State_ {
    events: Vec<Received>,
    by_webhook_id: HashMap<String, usize>,
    crm_ids: HashMap<String, String>,
    rejected: u64,
}

pub struct Inbox {
    secret: SigningSecret,
    file: Option<PathBuf>,
    state: Mutex<State_>,
}

impl Inbox {
    pub fn new(secret: SigningSecret, file: Option<PathBuf>) -> Arc<Self> {
        let mut state = State_::default();
        if let Some(path) = &file
            && let Ok(text) = std::fs::read_to_string(path)
        {
            for line in text.lines() {
                if let Ok(r) = serde_json::from_str::<Received>(line) {
                    remember(&mut state, r);
                }
            }
        }
        Arc::new(Self {
            secret,
            file,
            state: Mutex::new(state),
        })
    }

    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/events", get(list).post(receive))
            .with_state(self.clone())
    }

    /// Every distinct event received (a redelivery of the same `webhook-id` counts once).
    pub fn events(&self) -> Vec<Received> {
        self.state
            .lock()
            .map(|s| s.events.clone())
            .unwrap_or_default()
    }

    pub fn rejected(&self) -> u64 {
        self.state.lock().map(|s| s.rejected).unwrap_or_default()
    }
}

fn remember(state: &mut State_, r: Received) {
    let entity = entity_key(&r.event);
    state.crm_ids.insert(entity, r.crm_id.clone());
    state
        .by_webhook_id
        .insert(r.webhook_id.clone(), state.events.len());
    state.events.push(r);
}

/// The CRM record an event applies to: the contact for leads, the note for notes, the project
/// for everything else.
fn entity_key(event: &Value) -> String {
    let t = event.get("type").and_then(Value::as_str).unwrap_or("");
    let e = event.get("enerflo").cloned().unwrap_or(Value::Null);
    let s = |k: &str| {
        e.get(k)
            .filter(|v| !v.is_null())
            .map(|v| v.to_string().trim_matches('"').to_owned())
    };
    if t.starts_with("lead.") {
        format!(
            "contact:{}",
            s("customer_uuid")
                .or_else(|| s("customer_id"))
                .unwrap_or_default()
        )
    } else if t.starts_with("note.") {
        format!(
            "note:{}",
            event
                .pointer("/data/note/id")
                .map(|v| v.to_string())
                .unwrap_or_default()
        )
    } else {
        format!(
            "project:{}",
            s("deal_id").or_else(|| s("install_id")).unwrap_or_default()
        )
    }
}

async fn list(State(inbox): State<Arc<Inbox>>) -> Json<Value> {
    let events = inbox.events();
    Json(json!({"count": events.len(), "rejected": inbox.rejected(), "events": events}))
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let now = enerflo_sync::timefmt::now_unix();
    if let Err(e) = verify(
        inbox.secret.key(),
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
        &body,
        now,
    ) {
        if let Ok(mut s) = inbox.state.lock() {
            s.rejected += 1;
        }
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": format!("signature rejected: {e}")})),
        )
            .into_response();
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "body is not JSON"})),
        )
            .into_response();
    };
    let webhook_id = h("webhook-id").unwrap_or_default().to_owned();
    let Ok(mut state) = inbox.state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Some(&i) = state.by_webhook_id.get(&webhook_id) {
        state.events[i].deliveries += 1;
        let crm_id = state.events[i].crm_id.clone();
        return Json(json!({"crm_id": crm_id, "duplicate": true})).into_response();
    }
    let entity = entity_key(&event);
    let crm_id = match event.get("crm_id").and_then(Value::as_str) {
        Some(id) if !entity.starts_with("note:") => id.to_owned(),
        _ => state.crm_ids.get(&entity).cloned().unwrap_or_else(|| {
            format!(
                "crm-{}-{}",
                entity.split(':').next().unwrap_or("record"),
                state.crm_ids.len() + 1
            )
        }),
    };
    let received = Received {
        webhook_id,
        crm_id: crm_id.clone(),
        deliveries: 1,
        event,
    };
    if let Some(path) = &inbox.file
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(
            f,
            "{}",
            serde_json::to_string(&received).unwrap_or_default()
        );
    }
    remember(&mut state, received);
    Json(json!({"crm_id": crm_id})).into_response()
}
