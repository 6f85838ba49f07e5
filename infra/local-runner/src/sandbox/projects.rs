//! Stage 2 in the sandbox: `GET /api/v3/installs/find/{dealId}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{Sandbox, stable_number};

pub fn routes() -> axum::Router<Arc<Sandbox>> {
    axum::Router::new().route("/api/v3/installs/find/{deal_id}", get(find_install))
}

async fn find_install(
    State(sb): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Path(deal_id): Path<String>,
) -> Response {
    if let Some(resp) = sb.reject(&headers, format!("GET /api/v3/installs/find/{deal_id}")) {
        return resp;
    }
    let n = stable_number(&deal_id);
    let install_id = 700_000 + n;
    let install = {
        let mut model = match sb.model.lock() {
            Ok(m) => m,
            Err(_) => return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
        model
            .installs
            .entry(install_id)
            .or_insert_with(|| install_object(install_id, 900_000 + n, 4_000_000 + n))
            .clone()
    };
    Json(install).into_response()
}

/// The v1 install object in the shape Enerflo's install payloads use (docs/enerflo-api.md 3.3 (b)).
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
