//! Stage 1 in the sandbox: `POST /api/v1/partner/action/lead/add`, an upsert keyed by
//! `lead.integration_record_id`, answering `{"status":"success","customer_id":N}`. Like the
//! platform it then fires the v1 customer webhook back at the runner: `new_customer` after a
//! create, `update_customer` after an update that changed something, in the shape of
//! tests/fixtures/enerflo/v1-new_customer.json with `external_id` = the integration record id, so
//! stage 1.2's echo protection can be watched working. `GET /api/v1/customers` lists them (and
//! the seeded ones, `seed.rs`) in pages.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::Sandbox;

/// The first customer id the sandbox hands out.
const FIRST_CUSTOMER_ID: u64 = 910_001;
/// `Model::extra` key of this file's state.
const KEY: &str = "leads";

pub fn routes() -> axum::Router<Arc<Sandbox>> {
    axum::Router::new()
        .route("/api/v1/partner/action/lead/add", post(add_lead))
        .route("/api/v1/customers", get(list_customers))
}

/// v1's `YYYY-MM-DD HH:MM:SS` (UTC).
fn v1_now() -> String {
    enerflo_sync::timefmt::now_rfc3339()
        .replacen('T', " ", 1)
        .chars()
        .take(19)
        .collect()
}

/// Laravel's validation answer, the shape third-party code expects from Enerflo's 422s.
fn invalid(field: &str, message: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"message": message, "errors": {field: [message]}})),
    )
        .into_response()
}

fn text(lead: &Map<String, Value>, key: &str) -> Option<String> {
    match lead.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `5550100000` -> `(555) 010-0000`, the way Enerflo's customer payloads format phones.
fn format_phone(raw: &str) -> String {
    let d: String = raw.chars().filter(char::is_ascii_digit).collect();
    if d.len() == 10 {
        format!("({}) {}-{}", &d[..3], &d[3..6], &d[6..])
    } else {
        raw.to_owned()
    }
}

async fn add_lead(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    if let Some(resp) = sb.reject(&headers, "POST /api/v1/partner/action/lead/add".into()) {
        return resp;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(lead) = body.get("lead").and_then(Value::as_object) else {
        return invalid("lead", "The lead field is required.");
    };
    for (field, name) in [("first_name", "first name"), ("last_name", "last name")] {
        if text(lead, field).is_none() {
            return invalid(field, &format!("The {name} field is required."));
        }
    }
    let Some(record_id) = text(lead, "integration_record_id") else {
        return invalid(
            "integration_record_id",
            "The integration record id field is required.",
        );
    };

    let (event, customer) = {
        let Ok(mut model) = sb.model.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let state = state(&mut model);
        let existing = state["by_integration"][&record_id].as_u64();
        let id = existing.unwrap_or_else(|| state["next_id"].as_u64().unwrap_or(FIRST_CUSTOMER_ID));
        let now = v1_now();
        let before = state["customers"][id.to_string()].clone();
        let mut customer = if before.is_object() {
            before.clone()
        } else {
            json!({
                "id": id, "external_id": record_id, "first_name": null, "last_name": null,
                "full_name": null, "email": null, "phone": null,
                "address": {"street": null, "city": null, "state": null, "zip": null,
                            "county": null, "full_address": null, "latitude": null, "longitude": null},
                "customer_timezone": null, "lead_source": "",
                "timestamps": {"deleted_at": null, "created_at": now, "updated_at": now, "timezone": "UTC"}
            })
        };
        // An upsert: only the fields sent change; absent ones keep their value.
        for (from, to) in [
            ("first_name", "/first_name"),
            ("last_name", "/last_name"),
            ("email", "/email"),
            ("lead_source", "/lead_source"),
            ("address", "/address/street"),
            ("city", "/address/city"),
            ("state", "/address/state"),
            ("zip", "/address/zip"),
        ] {
            if let Some(v) = text(lead, from)
                && let Some(slot) = customer.pointer_mut(to)
            {
                *slot = Value::String(v);
            }
        }
        if let Some(m) = text(lead, "mobile") {
            customer["phone"] = Value::String(format_phone(&m));
        }
        let s = |p: &str| {
            customer
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let full_name = format!("{} {}", s("/first_name"), s("/last_name"));
        let full_address = format!(
            "{}, {}, {} {}",
            s("/address/street"),
            s("/address/city"),
            s("/address/state"),
            s("/address/zip")
        );
        customer["full_name"] = json!(full_name.trim());
        customer["address"]["full_address"] = json!(full_address);
        let changed = {
            let mut a = customer.clone();
            let mut b = before.clone();
            for v in [&mut a, &mut b] {
                if let Some(t) = v.get_mut("timestamps") {
                    *t = Value::Null;
                }
            }
            a != b
        };
        if changed && existing.is_some() {
            customer["timestamps"]["updated_at"] = json!(now);
        }
        state["customers"][id.to_string()] = customer.clone();
        state["by_integration"][&record_id] = json!(id);
        if existing.is_none() {
            state["next_id"] = json!(id + 1);
        }
        let event = match existing {
            None => Some("new_customer"),
            Some(_) if changed => Some("update_customer"),
            Some(_) => None,
        };
        (event, customer)
    };
    let id = customer["id"].clone();
    if let Some(name) = event {
        let mut hook = customer;
        hook["webhook_event"] = json!(name);
        sb.emit(hook);
    }
    Json(json!({"status": "success", "customer_id": id})).into_response()
}

/// The customer state, created on first use.
fn state(model: &mut super::Model) -> &mut Value {
    model.extra.entry(KEY.into()).or_insert_with(
        || json!({"next_id": FIRST_CUSTOMER_ID, "by_integration": {}, "customers": {}}),
    )
}

/// Replaces the seeded customers (ids in `range`) with `customers` (`seed.rs`).
pub(super) fn seed_customers(
    model: &mut super::Model,
    customers: Vec<Value>,
    range: std::ops::Range<u64>,
) {
    let state = state(model);
    if let Some(map) = state["customers"].as_object_mut() {
        map.retain(|id, _| id.parse::<u64>().map_or(true, |id| !range.contains(&id)));
        for c in customers {
            if let Some(id) = c["id"].as_u64() {
                map.insert(id.to_string(), c);
            }
        }
    }
}

/// A customer changed in Enerflo by a user (`admin.rs`): only the fields given change, then
/// `update_customer` fires. `None` when there is no such customer.
pub(super) fn update_customer(
    sb: &Arc<Sandbox>,
    id: u64,
    changes: &Map<String, Value>,
) -> Option<Value> {
    let customer = {
        let mut model = sb.model.lock().ok()?;
        let customer = state(&mut model)["customers"].get_mut(id.to_string())?;
        for (k, v) in changes {
            match (k.as_str(), customer.get_mut("address")) {
                ("street" | "city" | "state" | "zip", Some(addr)) => addr[k] = v.clone(),
                _ => customer[k] = v.clone(),
            }
        }
        customer["timestamps"]["updated_at"] = json!(v1_now());
        customer.clone()
    };
    let mut hook = customer.clone();
    hook["webhook_event"] = json!("update_customer");
    sb.emit(hook);
    Some(customer)
}

/// `GET /api/v1/customers?page=&pageSize=`: `{"dataCount": n, "data": [...]}` by id; without
/// `page` every customer.
async fn list_customers(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let call = match q.get("page") {
        Some(p) => format!("GET /api/v1/customers?page={p}"),
        None => "GET /api/v1/customers".into(),
    };
    if let Some(resp) = sb.reject(&headers, call) {
        return resp;
    }
    sb.list_latency().await;
    let mut customers: Vec<Value> = sb
        .model
        .lock()
        .ok()
        .and_then(|m| m.extra.get(KEY).cloned())
        .and_then(|s| s.get("customers").and_then(Value::as_object).cloned())
        .map(|c| c.into_values().collect())
        .unwrap_or_default();
    customers.sort_by_key(|c| c["id"].as_u64().unwrap_or(0));
    let total = customers.len();
    let rows = match super::page_window(&q, "pageSize", total) {
        Some(range) => customers[range].to_vec(),
        None => customers,
    };
    Json(json!({"dataCount": total, "data": rows})).into_response()
}
