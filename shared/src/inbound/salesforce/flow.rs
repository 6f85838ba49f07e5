//! `POST /crm/salesforce/{lead|status|milestone|note}`: a Flow "HTTP Callout" action (or Apex)
//! with a JSON body, translated into the canonical `/crm/*` request (docs/crm-connectors.md
//! 3.10.2: the body is ours to define). The router has checked the bearer token, the body size
//! and the method, as for `/crm/*`.
//!
//! Body (README "Salesforce flows"): the fields of docs/design.md 3.2, plus
//! - `record_id`: the record the flow runs on. For `lead` the Contact's (or Lead's) id, which
//!   becomes `crm_id`; for the others the Opportunity's id, the CRM project id of the
//!   cross-reference. `enerflo_install_id` (digits) addresses the install directly instead
//!   (`enerflo:<id>`) and wins when both are given.
//! - status: `status` (an Enerflo status name) or `status_id`, else the stage field of the
//!   profile (`StageName`) mapped back through `stages.by_status`: one status is used, several
//!   are a 422 naming them (unless one of them is what we pushed to the record: that is the echo),
//!   none a 422 listing the mapped stages.
//! - milestone: `milestone` (an Enerflo milestone id, a `MILESTONE_KEY_MAP` key, or a date field
//!   of the profile's `milestone_dates`) with `start_date` / `completed_date` (a Date, a DateTime,
//!   or null / "" to clear); or any of the profile's date fields (`PTO_Date__c`, ...) with a
//!   value, each setting its milestone's completed date.
//! - note: `crm_note_id`, `text`, `author`.
//!
//! Answers are the canonical route's (a Flow takes any non-2xx to its fault path; nothing is
//! retried for it), with a 422's fields named by the keys the flow sent (`record_id`,
//! `StageName`, a date field).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::{Action, Call, StageStatus, milestone_of_field, salesforce_date, status_for_stage};
use crate::crm::profile::Profile;
use crate::enerflo::lenient::value_to_string;
use crate::http::inbound::json_object;
use crate::http::problem::FieldError;
use crate::http::router::{InboundRoute, RouteParams};
use crate::http::{HttpRequest, HttpResponse, Problem};
use crate::store::XrefStore;
use crate::sync::EchoGuard;

pub struct FlowRoute {
    pub action: Action,
    /// The canonical route's handler: `LeadsRoute`, `StatusRoute`, `MilestoneRoute` or
    /// `NotesRoute`.
    pub target: Arc<dyn InboundRoute>,
    /// `stages` (for `StageName`) and `milestone_dates`.
    pub profile: Arc<Profile>,
    /// For a stage several statuses map to: the install, and which status we pushed.
    pub xref: Arc<dyn XrefStore>,
    pub echo: EchoGuard,
}

/// What a body becomes: the calls, and the flow's key behind each canonical field.
#[derive(Debug, Default)]
struct Translation {
    calls: Vec<Call>,
    keys: BTreeMap<String, String>,
}

fn bad(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn text_of(body: &Map<String, Value>, key: &str) -> Option<String> {
    body.get(key).and_then(value_to_string)
}

/// `{install}`: `enerflo:<enerflo_install_id>`, else `record_id` (the Opportunity).
fn install_ref(body: &Map<String, Value>) -> Result<String, FieldError> {
    if let Some(id) = text_of(body, "enerflo_install_id") {
        return if id.bytes().all(|b| b.is_ascii_digit()) {
            Ok(format!("enerflo:{id}"))
        } else {
            Err(bad(
                "enerflo_install_id",
                "must be a numeric Enerflo install id",
            ))
        };
    }
    text_of(body, "record_id").ok_or_else(|| {
        bad(
            "record_id",
            "is required: the Opportunity's record id (or enerflo_install_id)",
        )
    })
}

/// A date key of a milestone body: a Date or DateTime as `YYYY-MM-DD`, null or "" to clear it.
fn date_value(body: &Map<String, Value>, key: &str) -> Result<Option<Value>, FieldError> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(Value::Null)),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(Value::Null)),
        Some(Value::String(s)) => salesforce_date(s)
            .map(|d| Some(Value::String(d)))
            .ok_or_else(|| {
                bad(
                    key,
                    "must be a Date (YYYY-MM-DD) or a DateTime, or null to clear it",
                )
            }),
        Some(_) => Err(bad(
            key,
            "must be a Date (YYYY-MM-DD) or a DateTime, or null to clear it",
        )),
    }
}

impl FlowRoute {
    async fn translate(&self, body: &Map<String, Value>) -> Result<Translation, Problem> {
        let mut t = Translation::default();
        match self.action {
            Action::Lead => {
                let mut out = body.clone();
                out.remove("record_id");
                if let Some(id) = body.get("record_id").filter(|v| !v.is_null()) {
                    out.insert("crm_id".into(), id.clone());
                    t.keys.insert("crm_id".into(), "record_id".into());
                } else if !body.contains_key("crm_id") {
                    t.keys.insert("crm_id".into(), "record_id".into());
                }
                t.calls.push(Call::lead(Value::Object(out)));
            }
            Action::Status => {
                let install = install_ref(body).map_err(|e| Problem::validation(vec![e]))?;
                let status = self.status_body(body, &install, &mut t.keys).await?;
                t.calls.push(Call::status(&install, status));
            }
            Action::Milestone => {
                let install = install_ref(body).map_err(|e| Problem::validation(vec![e]))?;
                t.calls = self.milestone_calls(body, &install, &mut t.keys)?;
            }
            Action::Note => {
                let install = install_ref(body).map_err(|e| Problem::validation(vec![e]))?;
                let mut out = Map::new();
                for key in ["crm_note_id", "text", "author"] {
                    if let Some(v) = body.get(key) {
                        out.insert(key.into(), v.clone());
                    }
                }
                t.calls.push(Call::note(&install, Value::Object(out)));
            }
        }
        Ok(t)
    }

    /// `status` / `status_id` as given, else the stage field mapped back through the profile.
    async fn status_body(
        &self,
        body: &Map<String, Value>,
        install: &str,
        keys: &mut BTreeMap<String, String>,
    ) -> Result<Value, Problem> {
        let mut out = Map::new();
        for field in ["status", "status_id"] {
            if let Some(v) = body.get(field).filter(|v| !v.is_null()) {
                out.insert(field.to_owned(), v.clone());
            }
        }
        if !out.is_empty() {
            return Ok(Value::Object(out));
        }
        let stage_field = self.profile.stages.property.as_str();
        let Some(stage) = text_of(body, stage_field) else {
            return Err(Problem::validation(vec![bad(
                "status",
                format!("give status (an Enerflo status name), status_id, or {stage_field}"),
            )]));
        };
        keys.insert("status".into(), stage_field.to_owned());
        let name = match status_for_stage(
            &self.profile,
            self.xref.as_ref(),
            &self.echo,
            install,
            &stage,
        )
        .await?
        {
            StageStatus::One(name) => name,
            StageStatus::Unmapped(mapped) => {
                return Err(Problem::validation(vec![bad(
                    stage_field,
                    format!(
                        "`{stage}` is not a stage the mapping profile's stages.by_status maps an Enerflo status to (mapped stages: {}); send status or status_id instead",
                        mapped.join(", ")
                    ),
                )]));
            }
            StageStatus::Several(names) => {
                return Err(Problem::validation(vec![bad(
                    stage_field,
                    format!(
                        "`{stage}` is the stage of several Enerflo statuses ({}); send status or status_id instead",
                        names.join(", ")
                    ),
                )]));
            }
        };
        out.insert("status".into(), Value::String(name));
        Ok(Value::Object(out))
    }

    fn milestone_calls(
        &self,
        body: &Map<String, Value>,
        install: &str,
        keys: &mut BTreeMap<String, String>,
    ) -> Result<Vec<Call>, Problem> {
        let mut errors = Vec::new();
        if let Some(given) = text_of(body, "milestone") {
            // A date field's name addresses its milestone too.
            let milestone = milestone_of_field(&self.profile, &given)
                .map(str::to_owned)
                .unwrap_or(given);
            let mut out = Map::new();
            for field in ["start_date", "completed_date"] {
                match date_value(body, field) {
                    Ok(Some(v)) => {
                        out.insert(field.into(), v);
                    }
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
            if let Some(v) = body.get("crm_update_id").filter(|v| !v.is_null()) {
                out.insert("crm_update_id".into(), v.clone());
            }
            if !errors.is_empty() {
                return Err(Problem::validation(errors));
            }
            return Ok(vec![Call::milestone(
                install,
                &milestone,
                Value::Object(out),
            )]);
        }
        let mut calls = Vec::new();
        for (milestone, field) in &self.profile.milestone_dates {
            match date_value(body, field) {
                // An empty date field is ignored here: a flow maps every field, set or not.
                Ok(None | Some(Value::Null)) => {}
                Ok(Some(d)) => {
                    keys.insert("completed_date".into(), field.clone());
                    calls.push(Call::milestone(
                        install,
                        milestone,
                        json!({"completed_date": d}),
                    ));
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        if calls.is_empty() {
            let fields: Vec<&str> = self
                .profile
                .milestone_dates
                .values()
                .map(String::as_str)
                .collect();
            return Err(Problem::validation(vec![bad(
                "milestone",
                format!(
                    "give milestone with start_date and/or completed_date, or a date in one of the profile's milestone date fields ({}); empty fields are ignored",
                    fields.join(", ")
                ),
            )]));
        }
        Ok(calls)
    }
}

/// A canonical route's 422 with its fields named by the flow's keys.
fn rename_fields(resp: HttpResponse, keys: &BTreeMap<String, String>) -> HttpResponse {
    if resp.status != StatusCode::UNPROCESSABLE_ENTITY || keys.is_empty() {
        return resp;
    }
    let Value::Object(mut map) = resp.body_json() else {
        return resp;
    };
    let Some(Value::Array(errors)) = map.get_mut("errors") else {
        return resp;
    };
    for e in errors.iter_mut() {
        if let Some(field) = e.get("field").and_then(Value::as_str)
            && let Some(key) = keys.get(field)
        {
            e["field"] = Value::String(key.clone());
        }
    }
    let mut out = resp;
    out.body = bytes::Bytes::from(serde_json::to_vec(&Value::Object(map)).unwrap_or_default());
    out
}

#[async_trait]
impl InboundRoute for FlowRoute {
    async fn handle(&self, req: &HttpRequest, _params: &RouteParams) -> HttpResponse {
        let body = match json_object(req) {
            Ok(b) => b,
            Err(p) => return p.into_response(),
        };
        let t = match self.translate(&body).await {
            Ok(t) => t,
            Err(p) => return p.into_response(),
        };
        let mut answers = Vec::with_capacity(t.calls.len());
        for call in &t.calls {
            let resp = rename_fields(
                self.target.handle(&call.request(), &call.params).await,
                &t.keys,
            );
            tracing::info!(
                route = self.action.name(),
                canonical = %call.path,
                status = resp.status.as_u16(),
                "Salesforce flow callout"
            );
            if !resp.status.is_success() {
                // Earlier calls of this body are done; the canonical routes are idempotent.
                return resp;
            }
            answers.push(resp);
        }
        if answers.len() == 1
            && let Some(one) = answers.pop()
        {
            return one;
        }
        let results: Vec<Value> = answers.iter().map(HttpResponse::body_json).collect();
        let status = if results.iter().all(|r| r["status"] == "echo") {
            "echo"
        } else {
            "updated"
        };
        HttpResponse::json(
            StatusCode::OK,
            &json!({"status": status, "milestones": results}),
        )
    }
}
