//! Stage 3.1: `PUT /crm/installs/{install}/milestones/{milestone}` ->
//! `PUT /api/v3/installs/{id}/milestones/{milestoneId}`.
//!
//! Body: `start_date`, `completed_date` (`YYYY-MM-DD`; `null` clears; an absent field is left as
//! it is), optional `crm_update_id` (logged and answered back, for tracing). `{milestone}` is the
//! Enerflo milestone id (digits) or a CRM key from `MILESTONE_KEY_MAP`.
//!
//! No echo loop: a value we just pushed to the CRM that its automation sends straight back answers
//! 200 `{"status":"echo"}` without calling Enerflo; after a write to Enerflo its fingerprint is
//! recorded (under the milestone's lock, so the webhook it fires cannot be consumed first) and the
//! consumer drops that webhook as an echo.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::config::EnerfloFields;
use crate::enerflo::EnerfloApi;
use crate::enerflo::api_milestone::{DateChange, milestone_body};
use crate::enerflo::lenient::value_to_string;
use crate::http::inbound::{enerflo_problem, json_object, resolve_install, store_problem};
use crate::http::problem::FieldError;
use crate::http::router::{InboundRoute, RouteParams};
use crate::http::{HttpRequest, HttpResponse, Problem};
use crate::store::{ClaimStore, StoreError, XrefStore};
use crate::sync::fingerprints::milestone_fingerprint;
use crate::sync::{Direction, EchoGuard, EchoTarget, EntityLease, StateKey};
use crate::timefmt::iso_date;

/// How long the route waits for a consumer holding the milestone's lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

pub struct MilestoneRoute {
    pub enerflo: Arc<dyn EnerfloApi>,
    pub xref: Arc<dyn XrefStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub echo: EchoGuard,
    pub fields: EnerfloFields,
    /// Longest wait on Enerflo (`INBOUND_WAIT_SECS`).
    pub budget: Duration,
}

/// A validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MilestoneUpdate {
    pub start: DateChange,
    pub completed: DateChange,
    pub crm_update_id: Option<String>,
}

/// `{milestone}`: digits are an Enerflo milestone id; anything else a key of `MILESTONE_KEY_MAP`
/// (exact, then case-insensitive).
pub fn resolve_milestone(raw: &str, fields: &EnerfloFields) -> Option<u64> {
    let key = raw.trim();
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
        return key.parse().ok();
    }
    fields.milestone_keys.get(key).copied().or_else(|| {
        fields
            .milestone_keys
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, id)| *id)
    })
}

/// Validates the body; every bad field is named.
pub fn validate(body: &Map<String, Value>) -> Result<MilestoneUpdate, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut date = |field: &str| -> DateChange {
        match body.get(field) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) if iso_date(s).is_some() => Some(iso_date(s)),
            Some(_) => {
                errors.push(FieldError {
                    field: field.to_owned(),
                    message: "must be a calendar date as YYYY-MM-DD, or null to clear it".into(),
                });
                None
            }
        }
    };
    let start = date("start_date");
    let completed = date("completed_date");
    let crm_update_id = match body.get("crm_update_id") {
        None | Some(Value::Null) => None,
        Some(v @ (Value::String(_) | Value::Number(_))) => match value_to_string(v) {
            Some(id) if id.len() <= 256 && !id.chars().any(char::is_control) => Some(id),
            _ => {
                errors.push(FieldError {
                    field: "crm_update_id".into(),
                    message: "must be a non-blank id of at most 256 characters".into(),
                });
                None
            }
        },
        Some(_) => {
            errors.push(FieldError {
                field: "crm_update_id".into(),
                message: "must be a string or a number".into(),
            });
            None
        }
    };
    if !body.contains_key("start_date") && !body.contains_key("completed_date") {
        for field in ["start_date", "completed_date"] {
            errors.push(FieldError {
                field: field.into(),
                message: "give start_date or completed_date (or both); null clears a date".into(),
            });
        }
    }
    if errors.is_empty() {
        Ok(MilestoneUpdate {
            start,
            completed,
            crm_update_id,
        })
    } else {
        Err(errors)
    }
}

#[async_trait]
impl InboundRoute for MilestoneRoute {
    async fn handle(&self, req: &HttpRequest, params: &RouteParams) -> HttpResponse {
        match self.run(req, params).await {
            Ok(resp) => resp,
            Err(problem) => problem.into_response(),
        }
    }
}

impl MilestoneRoute {
    /// Whether these dates from the CRM are what we pushed to it: the fingerprint is recorded,
    /// and the CRM wrote nothing to this milestone through us after that push.
    async fn is_crm_echo(&self, target: &EchoTarget, fingerprint: &str) -> Result<bool, Problem> {
        self.echo
            .is_ours(Direction::ToCrm, target, &[fingerprint.to_owned()])
            .await
            .map_err(store_problem)
    }

    /// After a write to Enerflo: its fingerprint, and when it happened.
    async fn record(&self, target: &EchoTarget, fingerprint: &str) -> Result<(), StoreError> {
        self.echo
            .record(Direction::ToEnerflo, target, &[fingerprint.to_owned()])
            .await
    }

    async fn run(&self, req: &HttpRequest, params: &RouteParams) -> Result<HttpResponse, Problem> {
        let raw_milestone = params.milestone.as_deref().unwrap_or_default();
        let milestone_id = resolve_milestone(raw_milestone, &self.fields).ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-milestone",
                "Not Found",
                "The milestone is neither an Enerflo milestone id nor a key configured in MILESTONE_KEY_MAP.",
            )
        })?;
        let body = json_object(req)?;
        let update = validate(&body).map_err(Problem::validation)?;
        let target = resolve_install(
            self.xref.as_ref(),
            params.install.as_deref().unwrap_or_default(),
        )
        .await?;
        let install_id = target.install_id;
        let echo_target = EchoTarget::Milestone {
            install: install_id,
            milestone: milestone_id,
        };
        let fingerprint = milestone_fingerprint(&update.start, &update.completed);
        let mut answer = json!({"install_id": install_id, "milestone_id": milestone_id});
        for (k, v) in [
            ("start_date", &update.start),
            ("completed_date", &update.completed),
        ] {
            if let Some(d) = v {
                answer[k] = json!(d);
            }
        }
        if let Some(id) = &update.crm_update_id {
            answer["crm_update_id"] = json!(id);
        }

        if self.is_crm_echo(&echo_target, &fingerprint).await? {
            tracing::info!(
                install_id,
                milestone_id,
                crm_update_id = update.crm_update_id.as_deref().unwrap_or(""),
                outcome = "echo",
                "milestone from the CRM is what we pushed to it; Enerflo not called"
            );
            answer["status"] = json!("echo");
            return Ok(HttpResponse::json(StatusCode::OK, &answer));
        }

        let lock = EntityLease::acquire(
            &self.claims,
            &StateKey::Milestone {
                install: install_id,
                milestone: milestone_id,
            },
            LOCK_WAIT,
        )
        .await
        .map_err(|e| {
            tracing::warn!(install_id, milestone_id, error = %e, "milestone lock not acquired");
            Problem::unavailable(
                "This milestone is being synced right now; retry.",
                Duration::from_secs(5),
            )
        })?;
        let body = milestone_body(&self.fields, &update.start, &update.completed);
        let written = self
            .enerflo
            .set_install_milestone(install_id, milestone_id, &body, self.budget)
            .await;
        let recorded = match &written {
            Ok(_) => self.record(&echo_target, &fingerprint).await.err(),
            Err(_) => None,
        };
        lock.release().await;
        if let Err(e) = written {
            tracing::warn!(install_id, milestone_id, error = %e, "Enerflo milestone write failed");
            return Err(enerflo_problem(e));
        }
        if let Some(e) = recorded {
            // Enerflo has the dates; only the echo protection of this one write is lost (the
            // consumer then sees a completion the CRM already has and pushes it once).
            tracing::error!(install_id, milestone_id, error = %e, "echo fingerprint not recorded");
        }
        tracing::info!(
            install_id,
            milestone_id,
            crm_update_id = update.crm_update_id.as_deref().unwrap_or(""),
            outcome = "updated",
            "milestone written to Enerflo"
        );
        answer["status"] = json!("updated");
        Ok(HttpResponse::json(StatusCode::OK, &answer))
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
    fn dates_set_clear_or_stay() {
        let u = validate(&obj(
            json!({"completed_date": "2025-03-01", "start_date": null}),
        ))
        .expect("valid");
        assert_eq!(u.completed, Some(Some("2025-03-01".into())));
        assert_eq!(u.start, Some(None));
        let u = validate(&obj(
            json!({"start_date": "2025-02-01", "crm_update_id": 77}),
        ))
        .expect("valid");
        assert_eq!(
            (u.completed, u.crm_update_id.as_deref()),
            (None, Some("77"))
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let errors = validate(&obj(json!({
            "start_date": "02/01/2025", "completed_date": "2025-02-30", "crm_update_id": {}
        })))
        .expect_err("invalid");
        let named: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(named, ["start_date", "completed_date", "crm_update_id"]);
        let errors = validate(&obj(json!({"crm_update_id": "x"}))).expect_err("invalid");
        let named: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(named, ["start_date", "completed_date"]);
    }

    #[test]
    fn milestones_are_addressed_by_id_or_configured_key() {
        let mut fields = EnerfloFields::default();
        fields.milestone_keys.insert("engineering".into(), 3901);
        assert_eq!(resolve_milestone("3902", &fields), Some(3902));
        assert_eq!(resolve_milestone("engineering", &fields), Some(3901));
        assert_eq!(resolve_milestone("Engineering", &fields), Some(3901));
        assert_eq!(resolve_milestone("permits", &fields), None);
    }
}
