//! A local stand-in for Enerflo's REST API, serving the endpoints the flows call with realistic
//! data, so a new user sees events flow end to end without credentials. It checks the `api-key`
//! header like the real API and records every call (GET `/calls`).

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

pub struct Sandbox {
    pub api_key: String,
    calls: Mutex<Vec<String>>,
}

impl Sandbox {
    pub fn new(api_key: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            api_key: api_key.into(),
            calls: Mutex::new(Vec::new()),
        })
    }

    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/api/v3/installs/find/{deal_id}", get(find_install))
            .route("/calls", get(calls))
            .with_state(self.clone())
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn authorise(&self, headers: &HeaderMap, call: String) -> Result<(), Response> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
        match headers.get("api-key").and_then(|v| v.to_str().ok()) {
            Some(k) if k == self.api_key => Ok(()),
            _ => Err((
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "Unauthenticated."})),
            )
                .into_response()),
        }
    }
}

async fn calls(State(sb): State<Arc<Sandbox>>) -> Json<Value> {
    Json(json!({"calls": sb.calls()}))
}

/// A stable small number derived from an id, so the same deal always maps to the same install.
fn stable_number(s: &str) -> u64 {
    s.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1099511628211)
    }) % 90_000
}

async fn find_install(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Path(deal_id): Path<String>,
) -> Response {
    if let Err(resp) = sb.authorise(&headers, format!("GET /api/v3/installs/find/{deal_id}")) {
        return resp;
    }
    let n = stable_number(&deal_id);
    Json(install_object(700_000 + n, 900_000 + n, 4_000_000 + n)).into_response()
}

/// The v1 install object in the shape Enerflo's install payloads use (ENERFLO_API.md 3.3 (b)).
pub fn install_object(install_id: u64, customer_id: u64, survey_id: u64) -> Value {
    json!({
        "id": install_id,
        "epc_company_id": 1001,
        "company_id": 1002,
        "customer_id": customer_id,
        "survey_id": survey_id,
        "agent_id": 5001,
        "status_id": 1,
        "status_name": "New",
        "created_at": "2025-01-05 18:00:00",
        "updated_at": "2025-01-05 18:00:00",
        "deleted_at": null,
        "customer": {
            "id": customer_id,
            "first_name": "Pat",
            "last_name": "Placeholder",
            "email": "pat.placeholder@example.com",
            "phone": "(555) 010-0000",
            "mobile": "5550100000",
            "customer_timezone": "America/Chicago",
            "lead_source": "sandbox"
        },
        "solarData": {
            "system_size": 8.1,
            "panel_count": 20,
            "panel": {"name": "405W Example Module", "manufacturer": "Example Solar", "model": "EX-405", "capacity": 405},
            "inverter": {"name": "EX-INV-7600"},
            "inverter_count": 1,
            "finance_method": "Cash"
        },
        "current_milestone": {"id": 3901, "title": "Engineering"},
        "all_milestones": []
    })
}
