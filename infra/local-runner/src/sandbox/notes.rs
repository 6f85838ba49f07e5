//! Stage 5 in the sandbox: `POST /api/v3/installs/{id}/notes` stores a note, answers
//! `{"id": N, ...}` and, like the platform, fires `new_install_note` back at the runner, so the echo
//! protection can be watched working. `GET` on the same path lists the install's notes.
//!
//! The request body is read with the configured field names (`ENERFLO_NOTE_FIELD`,
//! `ENERFLO_NOTE_AUTHOR_FIELD`); the webhook is shaped the way the note stage reads it by default:
//! `{"webhook_event":"new_install_note","install_id":..,"note":{"id":..,"note":"text",
//! "user":{"full_name":..},"created_at":..}}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::Sandbox;

/// The first note id the sandbox hands out.
const FIRST_NOTE_ID: u64 = 30_001;

pub fn routes() -> axum::Router<Arc<Sandbox>> {
    axum::Router::new().route(
        "/api/v3/installs/{install_id}/notes",
        post(add_note).get(list_notes),
    )
}

/// v1's `YYYY-MM-DD HH:MM:SS` (UTC).
fn v1_now() -> String {
    enerflo_sync::timefmt::now_rfc3339()
        .replacen('T', " ", 1)
        .chars()
        .take(19)
        .collect()
}

async fn add_note(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Path(install_id): Path<String>,
    body: bytes::Bytes,
) -> Response {
    if let Some(resp) = sb.reject(
        &headers,
        format!("POST /api/v3/installs/{install_id}/notes"),
    ) {
        return resp;
    }
    let Ok(install_id) = install_id.trim().parse::<u64>() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "No query results for model [Install]."})),
        )
            .into_response();
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = body
        .get(&sb.fields.note_field)
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty());
    let Some(text) = text.map(str::to_owned) else {
        let field = sb.fields.note_field.clone();
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "message": format!("The {field} field is required."),
                "errors": {field.clone(): [format!("The {field} field is required.")]}
            })),
        )
            .into_response();
    };
    let author = (!sb.fields.note_author_field.is_empty())
        .then(|| {
            body.get(&sb.fields.note_author_field)
                .and_then(Value::as_str)
        })
        .flatten()
        .map(str::to_owned)
        .unwrap_or_else(|| "Sandbox API User".to_owned());
    let created_at = v1_now();
    let note = {
        let Ok(mut model) = sb.model.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let notes = model
            .extra
            .entry("notes".into())
            .or_insert_with(|| json!({"next_id": FIRST_NOTE_ID, "items": []}));
        let id = notes["next_id"].as_u64().unwrap_or(FIRST_NOTE_ID);
        notes["next_id"] = json!(id + 1);
        let note = json!({
            "id": id,
            "install_id": install_id,
            "note": text,
            "user": {"full_name": author},
            "created_at": created_at,
            "updated_at": created_at,
        });
        if let Some(items) = notes["items"].as_array_mut() {
            items.push(note.clone());
        }
        note
    };
    sb.emit(json!({
        "webhook_event": "new_install_note",
        "install_id": install_id,
        "note": note,
    }));
    (StatusCode::CREATED, Json(note)).into_response()
}

async fn list_notes(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Path(install_id): Path<String>,
) -> Response {
    if let Some(resp) = sb.reject(&headers, format!("GET /api/v3/installs/{install_id}/notes")) {
        return resp;
    }
    let wanted = install_id.trim().parse::<u64>().ok();
    let Ok(model) = sb.model.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let items: Vec<Value> = model
        .extra
        .get("notes")
        .and_then(|n| n["items"].as_array())
        .map(|items| {
            items
                .iter()
                .filter(|n| n["install_id"].as_u64() == wanted)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    Json(json!({"data": items})).into_response()
}
