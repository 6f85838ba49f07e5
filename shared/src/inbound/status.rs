//! Stage 4.1: `PUT /crm/installs/{install}/status` -> `PUT /api/v3/installs/{id}` with
//! `{<ENERFLO_STATUS_FIELD>: <status id>}`.
//!
//! Body: `status` (an Enerflo status name, case-insensitive) or `status_id`. Ids are per company:
//! both are checked against `GET /api/v3/install-statuses` (cached), and an unknown one is a 422
//! listing the valid names.
//!
//! No echo loop: a status we just pushed to the CRM that its automation sends straight back
//! answers 200 `{"status":"echo"}` without calling Enerflo; after a write to Enerflo its
//! fingerprint is recorded (under the install's status lock, so the `update_install` it fires
//! cannot be consumed first) and the consumer drops that webhook as an echo.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::enerflo::EnerfloApi;
use crate::enerflo::api_status::{InstallStatus, StatusCatalog, same_name};
use crate::enerflo::lenient::value_to_u64;
use crate::http::inbound::{enerflo_problem, json_object, resolve_install, store_problem};
use crate::http::problem::FieldError;
use crate::http::router::{InboundRoute, RouteParams};
use crate::http::{HttpRequest, HttpResponse, Problem};
use crate::store::{ClaimStore, StoreError, XrefStore};
use crate::sync::fingerprints::{status_fingerprint, status_name_fingerprint};
use crate::sync::{Direction, EchoGuard, EchoTarget, EntityLease, StateKey};

const LOCK_WAIT: Duration = Duration::from_secs(5);

pub struct StatusRoute {
    pub enerflo: Arc<dyn EnerfloApi>,
    pub xref: Arc<dyn XrefStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub echo: EchoGuard,
    pub catalog: Arc<StatusCatalog>,
    /// `ENERFLO_STATUS_FIELD`.
    pub status_field: String,
    pub budget: Duration,
}

/// A validated request: a name, an id, or both (which must then agree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRequest {
    pub name: Option<String>,
    pub id: Option<u64>,
}

pub fn validate(body: &Map<String, Value>) -> Result<StatusRequest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = match body.get("status") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => {
            Some(s.trim().to_owned())
        }
        Some(_) => {
            errors.push(FieldError {
                field: "status".into(),
                message: "must be an Enerflo install status name".into(),
            });
            None
        }
    };
    let id = match body.get("status_id") {
        None | Some(Value::Null) => None,
        Some(v @ (Value::Number(_) | Value::String(_))) if value_to_u64(v).is_some() => {
            value_to_u64(v)
        }
        Some(_) => {
            errors.push(FieldError {
                field: "status_id".into(),
                message: "must be a numeric Enerflo install status id".into(),
            });
            None
        }
    };
    if errors.is_empty() && name.is_none() && id.is_none() {
        errors.push(FieldError {
            field: "status".into(),
            message: "give status (an Enerflo status name) or status_id".into(),
        });
    }
    if errors.is_empty() {
        Ok(StatusRequest { name, id })
    } else {
        Err(errors)
    }
}

/// 422 naming the unknown value and listing the valid statuses.
fn unknown_status(field: &str, given: &str, list: &[InstallStatus]) -> Problem {
    let valid = list
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut p = Problem::validation(vec![FieldError {
        field: field.into(),
        message: format!("`{given}` is not one of this company's install statuses: {valid}"),
    }]);
    p.detail = format!("Unknown install status. Valid statuses: {valid}.");
    p
}

#[async_trait]
impl InboundRoute for StatusRoute {
    async fn handle(&self, req: &HttpRequest, params: &RouteParams) -> HttpResponse {
        match self.run(req, params).await {
            Ok(resp) => resp,
            Err(problem) => problem.into_response(),
        }
    }
}

impl StatusRoute {
    /// Whether `status_id` from the CRM is what we pushed to it: its fingerprint is recorded, and
    /// the CRM wrote nothing through us after that push.
    async fn is_crm_echo(&self, install_id: u64, fingerprint: &str) -> Result<bool, Problem> {
        self.echo
            .is_ours(
                Direction::ToCrm,
                &EchoTarget::Status(install_id),
                &[fingerprint.to_owned()],
            )
            .await
            .map_err(store_problem)
    }

    /// After a write to Enerflo: its fingerprint, and when it happened.
    async fn record(&self, install_id: u64, status_id: u64) -> Result<(), StoreError> {
        self.echo
            .record(
                Direction::ToEnerflo,
                &EchoTarget::Status(install_id),
                &[status_fingerprint(status_id)],
            )
            .await
    }

    fn echo_answer(install_id: u64, request: &StatusRequest) -> HttpResponse {
        tracing::info!(
            install_id,
            outcome = "echo",
            "status from the CRM is what we pushed to it; Enerflo not called"
        );
        let mut answer = json!({"status": "echo", "install_id": install_id});
        if let Some(id) = request.id {
            answer["status_id"] = json!(id);
        }
        if let Some(name) = &request.name {
            answer["status_name"] = json!(name);
        }
        HttpResponse::json(StatusCode::OK, &answer)
    }

    async fn run(&self, req: &HttpRequest, params: &RouteParams) -> Result<HttpResponse, Problem> {
        let body = json_object(req)?;
        let request = validate(&body).map_err(Problem::validation)?;
        let target = resolve_install(
            self.xref.as_ref(),
            params.install.as_deref().unwrap_or_default(),
        )
        .await?;
        let install_id = target.install_id;

        // An echo is recognised without calling Enerflo: every status we push is fingerprinted
        // by its id and by its name.
        let fingerprint = match (request.id, &request.name) {
            (Some(id), _) => status_fingerprint(id),
            (None, Some(name)) => status_name_fingerprint(name),
            (None, None) => String::new(),
        };
        if !fingerprint.is_empty() && self.is_crm_echo(install_id, &fingerprint).await? {
            return Ok(Self::echo_answer(install_id, &request));
        }

        let (found, list) = match (&request.id, &request.name) {
            (Some(id), _) => self
                .catalog
                .find(self.enerflo.as_ref(), self.budget, |s| s.id == *id)
                .await
                .map_err(enerflo_problem)?,
            (None, Some(name)) => self
                .catalog
                .find(self.enerflo.as_ref(), self.budget, |s| {
                    same_name(&s.name, name)
                })
                .await
                .map_err(enerflo_problem)?,
            (None, None) => (None, Arc::new(Vec::new())),
        };
        let Some(status) = found else {
            return Err(match (request.id, &request.name) {
                (Some(id), _) => unknown_status("status_id", &id.to_string(), &list),
                (None, name) => unknown_status("status", name.as_deref().unwrap_or(""), &list),
            });
        };
        if let Some(name) = &request.name
            && !same_name(&status.name, name)
        {
            return Err(Problem::validation(vec![FieldError {
                field: "status_id".into(),
                message: format!(
                    "status_id {} is `{}`, which contradicts status `{name}`; send one of them",
                    status.id, status.name
                ),
            }]));
        }
        if request.id.is_none()
            && self
                .is_crm_echo(install_id, &status_fingerprint(status.id))
                .await?
        {
            return Ok(Self::echo_answer(install_id, &request));
        }

        let lock = EntityLease::acquire(&self.claims, &StateKey::Status(install_id), LOCK_WAIT)
            .await
            .map_err(|e| {
                tracing::warn!(install_id, error = %e, "status lock not acquired");
                Problem::unavailable(
                    "This install's status is being synced right now; retry.",
                    Duration::from_secs(5),
                )
            })?;
        let written = self
            .enerflo
            .set_install_status(install_id, &self.status_field, status.id, self.budget)
            .await;
        let recorded = match &written {
            Ok(_) => self.record(install_id, status.id).await.err(),
            Err(_) => None,
        };
        lock.release().await;
        if let Err(e) = written {
            tracing::warn!(install_id, status_id = status.id, error = %e, "Enerflo status write failed");
            return Err(enerflo_problem(e));
        }
        if let Some(e) = recorded {
            tracing::error!(install_id, error = %e, "echo fingerprint not recorded");
        }
        tracing::info!(
            install_id,
            status_id = status.id,
            outcome = "updated",
            "status written to Enerflo"
        );
        Ok(HttpResponse::json(
            StatusCode::OK,
            &json!({
                "status": "updated",
                "install_id": install_id,
                "install_status": {"id": status.id, "name": status.name},
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn a_name_or_an_id_is_required_and_bad_types_are_named() {
        assert_eq!(
            validate(&obj(json!({"status": " Completed "}))),
            Ok(StatusRequest {
                name: Some("Completed".into()),
                id: None
            })
        );
        assert_eq!(
            validate(&obj(json!({"status_id": "6"}))).map(|r| r.id),
            Ok(Some(6))
        );
        let named = |v: Value| -> Vec<String> {
            validate(&obj(v))
                .expect_err("invalid")
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        assert_eq!(named(json!({})), ["status"]);
        assert_eq!(named(json!({"status": "  "})), ["status"]);
        assert_eq!(
            named(json!({"status": 5, "status_id": "six"})),
            ["status", "status_id"]
        );
    }

    #[test]
    fn unknown_status_lists_every_valid_name() {
        let list = vec![
            InstallStatus {
                id: 1,
                name: "New".into(),
            },
            InstallStatus {
                id: 6,
                name: "Completed".into(),
            },
        ];
        let p = unknown_status("status", "Done", &list);
        assert_eq!(p.status, 422);
        assert!(
            p.errors[0].message.contains("New, Completed"),
            "{:?}",
            p.errors
        );
        assert!(p.detail.contains("New, Completed"));
    }
}
