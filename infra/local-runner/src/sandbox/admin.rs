//! `/sandbox/enerflo/admin/...`: the sandbox driven by hand (no `api-key`; not recorded as API
//! calls), to show the reconciliation sweep at work:
//!
//! | route | what it does |
//! |---|---|
//! | `GET /admin/webhooks` | `{"losing": bool, "lost": [event names]}` |
//! | `POST /admin/webhooks/lose` | from now on, webhooks are "lost": kept aside, not sent |
//! | `POST /admin/webhooks/deliver` | webhooks are sent again (those lost stay lost) |
//! | `POST /admin/webhooks/redeliver` | sends the lost ones after all (a late delivery) |
//! | `POST /admin/installs/{id}/status` `{"status_id": 4}` | a user changes the status in Enerflo: `update_install` fires |
//! | `POST /admin/installs/{id}/milestones/{milestone}` `{"completed_date": "2025-03-01"}` (and/or `start_date`, `null` clears) | a user sets milestone dates: `project_milestone_updated` fires |
//! | `POST /admin/customers/{id}` `{"email": "...", "city": "..."}` | a user edits a customer: `update_customer` fires |
//! | `POST /admin/seed` `{"records": 50}` | reseeds the fake installs and customers (`seed.rs`) |
//! | `POST /admin/latency` `{"ms": 500}` | every list answer takes that long (a slow Enerflo; 0 undoes it) |

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use enerflo_sync::enerflo::lenient::value_to_u64;
use enerflo_sync::timefmt::iso_date;
use serde_json::{Map, Value, json};

use super::Sandbox;
use super::installs::{MILESTONES, STATUSES, set_milestone, set_status};

pub fn routes() -> axum::Router<Arc<Sandbox>> {
    axum::Router::new()
        .route("/webhooks", get(webhooks))
        .route("/webhooks/lose", post(lose))
        .route("/webhooks/deliver", post(deliver))
        .route("/webhooks/redeliver", post(redeliver))
        .route("/installs/{install_id}/status", post(status))
        .route(
            "/installs/{install_id}/milestones/{milestone_id}",
            post(milestone),
        )
        .route("/customers/{customer_id}", post(customer))
        .route("/seed", post(seed))
        .route("/latency", post(latency))
}

fn unprocessable(message: String) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"message": message})),
    )
        .into_response()
}

fn object(body: &bytes::Bytes) -> Map<String, Value> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

async fn webhooks(State(sb): State<Arc<Sandbox>>) -> Json<Value> {
    Json(json!({"losing": sb.is_losing_webhooks(), "lost": sb.lost_webhooks()}))
}

async fn lose(State(sb): State<Arc<Sandbox>>) -> Json<Value> {
    sb.lose_webhooks(true);
    Json(json!({"losing": true}))
}

async fn deliver(State(sb): State<Arc<Sandbox>>) -> Json<Value> {
    sb.lose_webhooks(false);
    Json(json!({"losing": false, "lost": sb.lost_webhooks()}))
}

async fn redeliver(State(sb): State<Arc<Sandbox>>) -> Json<Value> {
    Json(json!({"redelivered": sb.redeliver_lost()}))
}

async fn status(
    State(sb): State<Arc<Sandbox>>,
    Path(install_id): Path<u64>,
    body: bytes::Bytes,
) -> Response {
    let body = object(&body);
    let wanted = body.get("status_id").and_then(value_to_u64);
    let Some(status) = wanted.and_then(|id| STATUSES.iter().find(|(s, _)| *s == id).copied())
    else {
        let known: Vec<String> = STATUSES
            .iter()
            .map(|(id, n)| format!("{id} ({n})"))
            .collect();
        return unprocessable(format!("`status_id` must be one of {}", known.join(", ")));
    };
    match set_status(&sb, install_id, status) {
        Some(install) => Json(install).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn milestone(
    State(sb): State<Arc<Sandbox>>,
    Path((install_id, milestone_id)): Path<(u64, u64)>,
    body: bytes::Bytes,
) -> Response {
    let Some(&(mid, title)) = MILESTONES.iter().find(|(id, _)| *id == milestone_id) else {
        let known: Vec<String> = MILESTONES
            .iter()
            .map(|(id, t)| format!("{id} ({t})"))
            .collect();
        return unprocessable(format!("milestone must be one of {}", known.join(", ")));
    };
    let body = object(&body);
    let mut changes = Vec::new();
    for (key, field) in [
        ("start_date", sb.fields.milestone_start_field.as_str()),
        (
            "completed_date",
            sb.fields.milestone_completed_field.as_str(),
        ),
    ] {
        match body.get(key) {
            None => {}
            Some(Value::Null) => changes.push((field, Value::Null)),
            Some(Value::String(d)) if iso_date(d).is_some() => changes.push((field, json!(d))),
            Some(_) => return unprocessable(format!("`{key}` must be YYYY-MM-DD or null")),
        }
    }
    if changes.is_empty() {
        return unprocessable("give `start_date` and/or `completed_date`".into());
    }
    match set_milestone(&sb, install_id, (mid, title), &changes) {
        Some(Some(row)) => Json(row).into_response(),
        Some(None) => unprocessable(format!(
            "install {install_id} does not list milestone {mid}"
        )),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn customer(
    State(sb): State<Arc<Sandbox>>,
    Path(customer_id): Path<u64>,
    body: bytes::Bytes,
) -> Response {
    let changes = object(&body);
    if changes.is_empty() {
        return unprocessable("give the fields to change, e.g. {\"email\": \"...\"}".into());
    }
    match super::leads::update_customer(&sb, customer_id, &changes) {
        Some(c) => Json(c).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": format!("no customer {customer_id}")})),
        )
            .into_response(),
    }
}

async fn seed(State(sb): State<Arc<Sandbox>>, body: bytes::Bytes) -> Response {
    let body = object(&body);
    let Some(n) = body
        .get("records")
        .and_then(value_to_u64)
        .filter(|n| *n <= 10_000)
    else {
        return unprocessable("`records` must be a whole number up to 10000".into());
    };
    sb.seed(n as usize);
    Json(json!({"records": n})).into_response()
}

async fn latency(State(sb): State<Arc<Sandbox>>, body: bytes::Bytes) -> Response {
    let body = object(&body);
    let Some(ms) = body
        .get("ms")
        .and_then(value_to_u64)
        .filter(|ms| *ms <= 60_000)
    else {
        return unprocessable("`ms` must be a whole number of milliseconds up to 60000".into());
    };
    sb.set_list_latency(ms);
    Json(json!({"ms": ms})).into_response()
}
