//! Stages 3 and 4 in the sandbox: the company's install statuses, the install object with its
//! milestones and status, and the two writes the CRM drives (status, milestone dates). Like the
//! platform, each write fires a webhook back at the runner (`update_install` in the real-capture
//! shape with `status: {id, name}`; `project_milestone_updated` in the shape the milestone stage
//! reads by default), so the echo protection can be watched working.
//!
//! Request bodies are read with the configured field names (`ENERFLO_STATUS_FIELD`,
//! `ENERFLO_MILESTONE_START_FIELD`, `ENERFLO_MILESTONE_COMPLETED_FIELD`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use enerflo_sync::enerflo::lenient::value_to_u64;
use enerflo_sync::timefmt::iso_date;
use serde_json::{Map, Value, json};

use super::{Model, Sandbox, install_object};

/// A realistic per-company list: Enerflo's usual stages plus a company-defined one.
pub const STATUSES: &[(u64, &str)] = &[
    (1, "New"),
    (2, "In Progress"),
    (4, "On Hold"),
    (5, "Voided"),
    (6, "Completed"),
    (323, "Awaiting HOA Approval"),
];

/// The company's milestone definitions (`id`, `title`), in sequence.
pub const MILESTONES: &[(u64, &str)] = &[
    (3900, "Site Survey"),
    (3901, "Engineering"),
    (3902, "Permitting"),
    (3903, "Installation"),
    (3904, "Inspection"),
    (3905, "Permission to Operate"),
];

pub fn routes() -> axum::Router<Arc<Sandbox>> {
    axum::Router::new()
        .route("/api/v3/install-statuses", get(statuses))
        .route("/api/v3/installs", get(list_installs))
        .route(
            "/api/v3/installs/{install_id}",
            get(get_install).put(put_install),
        )
        .route(
            "/api/v3/installs/{install_id}/milestones/{milestone_id}",
            put(put_milestone),
        )
}

fn v1_now() -> String {
    enerflo_sync::timefmt::now_rfc3339()
        .replacen('T', " ", 1)
        .chars()
        .take(19)
        .collect()
}

fn error(status: StatusCode, message: &str, errors: Option<Value>) -> Response {
    let mut body = json!({"message": message});
    if let Some(e) = errors {
        body["errors"] = e;
    }
    (status, Json(body)).into_response()
}

fn not_found(model: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("No query results for model [{model}]."),
        None,
    )
}

/// The install, created from [`install_object`] on first sight, with every milestone listed.
fn ensure_install<'m>(model: &'m mut Model, sb: &Sandbox, install_id: u64) -> &'m mut Value {
    let n = install_id.saturating_sub(700_000) % 90_000;
    let install = model
        .installs
        .entry(install_id)
        .or_insert_with(|| install_object(install_id, 900_000 + n, 4_000_000 + n));
    let listed = install
        .get("all_milestones")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !listed {
        let rows: Vec<Value> = MILESTONES
            .iter()
            .enumerate()
            .map(|(i, (id, title))| {
                let mut row = json!({
                    "id": 50_000 + install_id % 10_000 * 10 + i as u64,
                    "milestone_id": id,
                    "sequence": i + 1,
                    "title": title,
                });
                row[sb.fields.milestone_start_field.as_str()] = Value::Null;
                row[sb.fields.milestone_completed_field.as_str()] = Value::Null;
                row
            })
            .collect();
        install["all_milestones"] = Value::Array(rows);
    }
    install
}

fn install_id_of(raw: &str) -> Option<u64> {
    raw.trim().parse::<u64>().ok()
}

async fn statuses(State(sb): State<Arc<Sandbox>>, headers: HeaderMap) -> Response {
    if let Some(resp) = sb.reject(&headers, "GET /api/v3/install-statuses".into()) {
        return resp;
    }
    let data: Vec<Value> = STATUSES
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name, "company_id": 1001}))
        .collect();
    Json(json!({"data": data})).into_response()
}

async fn get_install(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Path(install_id): Path<String>,
) -> Response {
    if let Some(resp) = sb.reject(&headers, format!("GET /api/v3/installs/{install_id}")) {
        return resp;
    }
    let Some(install_id) = install_id_of(&install_id) else {
        return not_found("Install");
    };
    let Ok(mut model) = sb.model.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    Json(ensure_install(&mut model, &sb, install_id).clone()).into_response()
}

/// `update_install` as the June 2024 real delivery was shaped (docs/enerflo-api.md 3.3 (a)).
fn update_install_webhook(install: &Value, status: (u64, &str)) -> Value {
    let customer = install.get("customer").cloned().unwrap_or(Value::Null);
    json!({
        "webhook_event": "update_install",
        "id": install["id"],
        "status": {"id": status.0, "name": status.1},
        "sales_company_id": install.get("company_id").cloned().unwrap_or(json!(1002)),
        "install_company_id": install.get("epc_company_id").cloned().unwrap_or(json!(1001)),
        "office_id": 1003,
        "market_id": 2001,
        "deal_id": install.get("survey_id").cloned().unwrap_or(Value::Null),
        "agreement_id": 6001,
        "customer": customer,
        "agent": {"id": 5001, "first_name": "Riley", "last_name": "Rep", "full_name": "Riley Rep"},
        "timestamps": {
            "deleted_at": null,
            "created_at": install.get("created_at").cloned().unwrap_or(Value::Null),
            "updated_at": v1_now(),
            "timezone": "UTC"
        }
    })
}

async fn put_install(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Path(install_id): Path<String>,
    body: bytes::Bytes,
) -> Response {
    if let Some(resp) = sb.reject(&headers, format!("PUT /api/v3/installs/{install_id}")) {
        return resp;
    }
    let Some(install_id) = install_id_of(&install_id) else {
        return not_found("Install");
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let field = sb.fields.status_field.as_str();
    let status = body
        .get(field)
        .and_then(value_to_u64)
        .and_then(|id| STATUSES.iter().find(|(sid, _)| *sid == id).copied());
    let Some(status) = status else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The given data was invalid.",
            Some(json!({field: [format!("The selected {field} is invalid.")]})),
        );
    };
    match set_status(&sb, install_id, status) {
        Some(install) => Json(install).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Sets an install's status and fires `update_install`, as a write through the API or a user in
/// Enerflo does (`admin.rs`). The install as it is now.
pub(super) fn set_status(sb: &Arc<Sandbox>, install_id: u64, status: (u64, &str)) -> Option<Value> {
    let (install, webhook) = {
        let mut model = sb.model.lock().ok()?;
        let install = ensure_install(&mut model, sb, install_id);
        install["status_id"] = json!(status.0);
        install["status_name"] = json!(status.1);
        install["updated_at"] = json!(v1_now());
        let webhook = update_install_webhook(install, status);
        (install.clone(), webhook)
    };
    sb.emit(webhook);
    Some(install)
}

/// `GET /api/v3/installs?page=&per_page=`: `{"total", "per_page", "current_page", "results"}`,
/// by install id (the `sort_by` the sweep sends is accepted and is the only order there is).
async fn list_installs(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let call = match q.get("page") {
        Some(p) => format!("GET /api/v3/installs?page={p}"),
        None => "GET /api/v3/installs".into(),
    };
    if let Some(resp) = sb.reject(&headers, call) {
        return resp;
    }
    sb.list_latency().await;
    let Ok(model) = sb.model.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let total = model.installs.len();
    let range = super::page_window(&q, "per_page", total).unwrap_or(0..total.min(100));
    let rows: Vec<Value> = model
        .installs
        .values()
        .skip(range.start)
        .take(range.len())
        .cloned()
        .collect();
    let per_page = q.get("per_page").cloned().unwrap_or_else(|| "100".into());
    Json(json!({
        "total": total,
        "per_page": per_page,
        "current_page": q.get("page").cloned().unwrap_or_else(|| "1".into()),
        "results": rows,
    }))
    .into_response()
}

async fn put_milestone(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Path((install_id, milestone_id)): Path<(String, String)>,
    body: bytes::Bytes,
) -> Response {
    if let Some(resp) = sb.reject(
        &headers,
        format!("PUT /api/v3/installs/{install_id}/milestones/{milestone_id}"),
    ) {
        return resp;
    }
    let Some(install_id) = install_id_of(&install_id) else {
        return not_found("Install");
    };
    let Some((milestone_id, title)) = install_id_of(&milestone_id)
        .and_then(|mid| MILESTONES.iter().find(|(id, _)| *id == mid).copied())
    else {
        return not_found("Milestone");
    };
    let body: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let (start_field, completed_field) = (
        sb.fields.milestone_start_field.as_str(),
        sb.fields.milestone_completed_field.as_str(),
    );
    let mut changes = Vec::new();
    let mut errors = Map::new();
    for field in [start_field, completed_field] {
        match body.get(field) {
            None => {}
            Some(Value::Null) => changes.push((field, Value::Null)),
            Some(Value::String(s)) if iso_date(s).is_some() => {
                changes.push((field, json!(s.trim())));
            }
            Some(_) => {
                errors.insert(
                    field.to_owned(),
                    json!([format!("The {field} is not a valid date.")]),
                );
            }
        }
    }
    if changes.is_empty() && errors.is_empty() {
        errors.insert(
            completed_field.to_owned(),
            json!([format!(
                "The {start_field} or {completed_field} field is required."
            )]),
        );
    }
    if !errors.is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The given data was invalid.",
            Some(Value::Object(errors)),
        );
    }
    match set_milestone(&sb, install_id, (milestone_id, title), &changes) {
        Some(Some(row)) => Json(row).into_response(),
        Some(None) => not_found("Milestone"),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Sets a milestone's dates (`changes`: field name, value) and fires `project_milestone_updated`,
/// as a write through the API or a user in Enerflo does (`admin.rs`). The milestone row as it is
/// now; `Some(None)` when the install does not list it.
pub(super) fn set_milestone(
    sb: &Arc<Sandbox>,
    install_id: u64,
    (milestone_id, title): (u64, &str),
    changes: &[(&str, Value)],
) -> Option<Option<Value>> {
    let (start_field, completed_field) = (
        sb.fields.milestone_start_field.as_str(),
        sb.fields.milestone_completed_field.as_str(),
    );
    let row = {
        let mut model = sb.model.lock().ok()?;
        let install = ensure_install(&mut model, sb, install_id);
        let Some(row) = install
            .get_mut("all_milestones")
            .and_then(Value::as_array_mut)
            .and_then(|rows| {
                rows.iter_mut()
                    .find(|r| r.get("milestone_id").and_then(value_to_u64) == Some(milestone_id))
            })
        else {
            return Some(None);
        };
        for (field, value) in changes {
            row[*field] = value.clone();
        }
        row["updated_at"] = json!(v1_now());
        row.clone()
    };
    sb.emit(json!({
        "webhook_event": "project_milestone_updated",
        "install_id": install_id,
        "milestone_id": milestone_id,
        "milestone": {"id": milestone_id, "title": title},
        "start_date": row.get(start_field).cloned().unwrap_or(Value::Null),
        "completed_date": row.get(completed_field).cloned().unwrap_or(Value::Null),
        "updated_at": row["updated_at"],
    }));
    Some(Some(row))
}
