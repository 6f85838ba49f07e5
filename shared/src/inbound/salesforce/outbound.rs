//! `POST /crm/salesforce/outbound-message`: a Salesforce Outbound Message (a workflow rule's or
//! flow's SOAP notifications, docs/crm-connectors.md 3.10.1).
//!
//! - The envelope is read by [`super::soap`]; a malformed one is a SOAP fault (400).
//! - `OrganizationId` must be `SALESFORCE_ORG_ID` (15- or 18-character form): another org is a
//!   fault (403), logged; an unset `SALESFORCE_ORG_ID` refuses every message (503) until it is
//!   set. (The router has already checked the `token` query parameter against
//!   `CRM_INBOUND_TOKEN`: Outbound Messages carry no signature and org ids are not secrets.)
//! - Each notification's sObject is mapped through the mapping profile: the lead object
//!   (`Contact` by default) becomes `POST /crm/leads` with `crm_id` = its `Id` and the fields the
//!   profile writes from lead fields read back; the deal object (`Opportunity`) becomes, for its
//!   install (`Enerflo_Install_Id__c` -> `enerflo:<id>`, else `Enerflo_Deal_Id__c` through the
//!   cross-reference, else its `Id` as the CRM project id), a status call when the stage field
//!   (`StageName`) maps back to one Enerflo status, and one milestone call per
//!   `milestone_dates` field with a date. A stage no status maps to changes no status (logged);
//!   an empty date field clears nothing (Outbound Messages send every selected field each time,
//!   so an empty one is no instruction; a flow callout with `completed_date: null` clears).
//! - Each notification is done once: a claim on its `Id` (stable across Salesforce's retries)
//!   and one per canonical call, completed only after the call succeeded; a repeat answers Ack
//!   and writes nothing.
//! - `<Ack>true</Ack>` only when every notification of the message is done. Otherwise a fault,
//!   so Salesforce keeps the message and retries it (for up to 24 hours): 503 `soapenv:Server`
//!   when a retry may succeed (Enerflo or the store unavailable, an Opportunity not linked yet,
//!   no time left in this delivery), 500 `soapenv:Client` when something must be fixed first
//!   (an Enerflo validation error, an sObject type the profile does not map, a stage several
//!   statuses share); the fault string names each notification and why, and shows in
//!   Salesforce's Outbound Message queue. Echoes are done: the status and milestone routes answer
//!   a value we pushed with `echo` and write nothing to Enerflo.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::soap::{self, FaultCode, Notification, SObject};
use super::{
    Call, StageStatus, key_field, lead_field, milestone_of_field, salesforce_date,
    same_salesforce_id, status_for_stage,
};
use crate::canonical::CrmEventType;
use crate::crm::profile::Profile;
use crate::http::router::{InboundRoute, RouteParams};
use crate::http::{HttpRequest, HttpResponse};
use crate::store::{Claim, ClaimStore, EntityKind, IdForm, IdRef, XrefStore};
use crate::sync::EchoGuard;

/// What Salesforce is told to wait before retrying a transient failure (it keeps its own
/// schedule; the header is a hint).
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// The longest one fault string gets (Salesforce shows it in its delivery queue).
const MAX_FAULT_TEXT: usize = 2000;

pub struct OutboundMessageRoute {
    /// `SALESFORCE_ORG_ID`.
    pub org_id: Option<String>,
    pub profile: Arc<Profile>,
    pub xref: Arc<dyn XrefStore>,
    pub echo: EchoGuard,
    pub claims: Arc<dyn ClaimStore>,
    /// The canonical routes' handlers.
    pub leads: Arc<dyn InboundRoute>,
    pub status: Arc<dyn InboundRoute>,
    pub milestone: Arc<dyn InboundRoute>,
    /// How long a done notification is remembered (`IDEMPOTENCY_TTL_DAYS`; Salesforce retries
    /// for 24 hours).
    pub dedupe_ttl: Duration,
    /// `INBOUND_WAIT_SECS`: no notification is started after half of it has passed (the rest
    /// is faulted for a retry), so the answer comes before API Gateway's 29 s.
    pub budget: Duration,
}

/// How one notification came out.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Done now (what was done) or before (a repeat).
    Done(String),
    Duplicate,
    /// Not done; a retry may succeed.
    Retry(String),
    /// Not done; something must be fixed first (Salesforce retries anyway).
    Fix(String),
}

impl Outcome {
    fn kind(&self) -> &'static str {
        match self {
            Self::Done(_) => "done",
            Self::Duplicate => "duplicate",
            Self::Retry(_) => "retry",
            Self::Fix(_) => "to_fix",
        }
    }
}

impl OutboundMessageRoute {
    fn lease(&self) -> u64 {
        (self.budget.as_secs() * 3).max(60)
    }

    fn ttl(&self) -> u64 {
        self.dedupe_ttl.as_secs().max(86_400)
    }

    async fn process(&self, org: &str, n: &Notification) -> Outcome {
        let key = format!("sfom#{org}#{}", n.id);
        match self.claims.claim(&key, self.lease(), self.ttl()).await {
            Ok(Claim::Acquired) => {}
            Ok(Claim::Completed { .. }) => return Outcome::Duplicate,
            Ok(Claim::InProgress) => {
                return Outcome::Retry("another delivery of it is being processed".into());
            }
            Err(e) => {
                tracing::error!(error = %e, notification = %n.id, "claim failed");
                return Outcome::Retry("the state store is unavailable".into());
            }
        }
        let outcome = match self.translate(&n.sobject).await {
            Err(outcome) => outcome,
            Ok(calls) => self.run_calls(&key, calls).await,
        };
        match &outcome {
            Outcome::Done(detail) => {
                if let Err(e) = self.claims.complete(&key, detail, self.ttl()).await {
                    tracing::error!(error = %e, notification = %n.id, "notification done but not recorded");
                    return Outcome::Retry(
                        "done, but the state store did not record it; the retry finds the calls done".into(),
                    );
                }
            }
            _ => {
                if let Err(e) = self.claims.release(&key).await {
                    tracing::warn!(error = %e, notification = %n.id, "claim not released; it expires with its lease");
                }
            }
        }
        outcome
    }

    /// Each call once: a claim per call, completed after its success, so a retry after a partial
    /// failure repeats only what was not done.
    async fn run_calls(&self, key: &str, calls: Vec<Call>) -> Outcome {
        if calls.is_empty() {
            return Outcome::Done("nothing the profile maps back to Enerflo".into());
        }
        let mut done = Vec::new();
        for call in calls {
            let sub = format!("{key}#{}", call.label);
            match self.claims.claim(&sub, self.lease(), self.ttl()).await {
                Ok(Claim::Acquired) => {}
                Ok(Claim::Completed { outcome }) => {
                    done.push(format!("{}: {outcome} (before)", call.label));
                    continue;
                }
                Ok(Claim::InProgress) => {
                    return Outcome::Retry(format!(
                        "{} is still being processed by an earlier delivery",
                        call.label
                    ));
                }
                Err(e) => {
                    tracing::error!(error = %e, "claim failed");
                    return Outcome::Retry("the state store is unavailable".into());
                }
            }
            let target = match call.label.as_str() {
                "lead" => &self.leads,
                "status" => &self.status,
                _ => &self.milestone,
            };
            let resp = target.handle(&call.request(), &call.params).await;
            let answer = resp.body_json();
            tracing::info!(
                canonical = %call.path,
                status = resp.status.as_u16(),
                outcome = answer
                    .get("status")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(""),
                "Salesforce outbound message call"
            );
            if resp.status.is_success() {
                let what = answer
                    .get("status")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| resp.status.as_u16().to_string());
                if let Err(e) = self.claims.complete(&sub, &what, self.ttl()).await {
                    tracing::error!(error = %e, call = %call.label, "call done but not recorded");
                }
                done.push(format!("{}: {what}", call.label));
                continue;
            }
            if let Err(e) = self.claims.release(&sub).await {
                tracing::warn!(error = %e, "claim not released; it expires with its lease");
            }
            return failure(&call, resp.status, &answer);
        }
        Outcome::Done(done.join(", "))
    }

    async fn translate(&self, so: &SObject) -> Result<Vec<Call>, Outcome> {
        let lead_object = &self.profile.event(CrmEventType::LeadUpserted).object;
        let deal_object = &self.profile.event(CrmEventType::StatusChanged).object;
        if so.object_type == *lead_object {
            return self.lead_calls(so).map(|c| vec![c]);
        }
        if so.object_type == *deal_object
            || so.object_type == self.profile.event(CrmEventType::MilestoneUpdated).object
        {
            return self.deal_calls(so).await;
        }
        Err(Outcome::Fix(format!(
            "an sObject of type {} is not one the mapping profile maps back ({lead_object}: leads; {deal_object}: status and milestones)",
            so.object_type
        )))
    }

    /// The lead object's fields the profile writes from lead fields, read back.
    fn lead_calls(&self, so: &SObject) -> Result<Call, Outcome> {
        let Some(id) = so.get("Id") else {
            return Err(Outcome::Fix(format!(
                "the {} has no Id: include Id in the Outbound Message's fields",
                so.object_type
            )));
        };
        let mut body = Map::new();
        body.insert("crm_id".into(), Value::String(id.to_owned()));
        let map = self.profile.event(CrmEventType::LeadUpserted);
        let mut address = Map::new();
        for (field, property) in &map.properties {
            let (Some(value), Some(from)) = (so.get(field), property.fields.first()) else {
                continue;
            };
            let Some(target) = lead_field(&from.text) else {
                continue;
            };
            let value = Value::String(value.to_owned());
            match target.strip_prefix("address.") {
                Some(part) => {
                    address.entry(part.to_owned()).or_insert(value);
                }
                None => {
                    body.entry(target.to_owned()).or_insert(value);
                }
            }
        }
        if !address.is_empty() {
            body.insert("address".into(), Value::Object(address));
        }
        Ok(Call::lead(Value::Object(body)))
    }

    /// The Opportunity's `{install}`.
    async fn install_of(&self, so: &SObject) -> Result<String, Outcome> {
        let t = CrmEventType::StatusChanged;
        if let Some(field) = key_field(&self.profile, t, "$enerflo.install_id")
            && let Some(id) = so.get(field)
        {
            if id.bytes().all(|b| b.is_ascii_digit()) {
                return Ok(format!("enerflo:{id}"));
            }
            return Err(Outcome::Fix(format!(
                "{field} `{id}` is not a numeric Enerflo install id"
            )));
        }
        if let Some(field) = key_field(&self.profile, t, "$enerflo.deal_id")
            && let Some(deal) = so.get(field)
        {
            let link = self
                .xref
                .resolve(EntityKind::Project, &IdRef::new(IdForm::Deal, deal))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "cross-reference lookup failed");
                    Outcome::Retry("the state store is unavailable".into())
                })?;
            if let Some(install) = link.and_then(|l| l.id(IdForm::Install)) {
                return Ok(format!("enerflo:{install}"));
            }
        }
        so.get("Id").map(str::to_owned).ok_or_else(|| {
            Outcome::Fix(format!(
                "the {} has neither Id nor an Enerflo id field: include Id in the Outbound Message's fields",
                so.object_type
            ))
        })
    }

    async fn deal_calls(&self, so: &SObject) -> Result<Vec<Call>, Outcome> {
        let install = self.install_of(so).await?;
        let mut calls = Vec::new();
        let stage_field = self.profile.stages.property.as_str();
        if let Some(stage) = so.get(stage_field) {
            let mapped = status_for_stage(
                &self.profile,
                self.xref.as_ref(),
                &self.echo,
                &install,
                stage,
            )
            .await
            .map_err(|p| {
                let resp = p.into_response();
                failure(
                    &Call::status(&install, Value::Null),
                    resp.status,
                    &resp.body_json(),
                )
            })?;
            match mapped {
                StageStatus::One(name) => {
                    calls.push(Call::status(&install, json!({"status": name})))
                }
                StageStatus::Unmapped(_) => tracing::info!(
                    install = %install,
                    stage,
                    "stage maps to no Enerflo status (stages.by_status); status left as it is"
                ),
                StageStatus::Several(names) => {
                    return Err(Outcome::Fix(format!(
                        "{stage_field} `{stage}` is the stage of several Enerflo statuses ({}), none of which the sync set: map it to one in the profile, or set the status with a flow callout",
                        names.join(", ")
                    )));
                }
            }
        }
        for (field, value) in &so.fields {
            let (Some(milestone), Some(raw)) = (milestone_of_field(&self.profile, field), value)
            else {
                continue;
            };
            if raw.trim().is_empty() {
                continue;
            }
            let Some(date) = salesforce_date(raw) else {
                return Err(Outcome::Fix(format!("{field} `{raw}` is not a date")));
            };
            calls.push(Call::milestone(
                &install,
                milestone,
                json!({"completed_date": date}),
            ));
        }
        Ok(calls)
    }
}

/// A canonical route's failure as the notification's outcome.
fn failure(call: &Call, status: StatusCode, answer: &Value) -> Outcome {
    let mut why = answer
        .get("detail")
        .and_then(Value::as_str)
        .unwrap_or("no detail")
        .to_owned();
    if let Some(errors) = answer.get("errors").and_then(Value::as_array) {
        let named: Vec<String> = errors
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.get("field").and_then(Value::as_str).unwrap_or("?"),
                    e.get("message").and_then(Value::as_str).unwrap_or("?")
                )
            })
            .collect();
        if !named.is_empty() {
            why = format!("{why} ({})", named.join("; "));
        }
    }
    let problem_type = answer.get("type").and_then(Value::as_str).unwrap_or("");
    let text = format!("{} answered {}: {why}", call.label, status.as_u16());
    if status.as_u16() == 429
        || status.is_server_error()
        || problem_type.ends_with(":unlinked-install")
    {
        Outcome::Retry(text)
    } else {
        Outcome::Fix(text)
    }
}

fn cut(s: String) -> String {
    if s.len() <= MAX_FAULT_TEXT {
        return s;
    }
    let mut end = MAX_FAULT_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[async_trait]
impl InboundRoute for OutboundMessageRoute {
    async fn handle(&self, req: &HttpRequest, _params: &RouteParams) -> HttpResponse {
        let started = Instant::now();
        let message = match soap::parse_notifications(&req.body) {
            Ok(m) => m,
            Err(why) => {
                tracing::info!(reason = %why, "malformed Salesforce Outbound Message refused");
                return soap::fault(
                    StatusCode::BAD_REQUEST,
                    FaultCode::Client,
                    &format!("Malformed Outbound Message: {why}."),
                );
            }
        };
        let org = message.organization_id.as_str();
        let Some(configured) = &self.org_id else {
            tracing::error!(
                organization_id = org,
                "Salesforce Outbound Message refused: SALESFORCE_ORG_ID is not set"
            );
            return soap::fault(
                StatusCode::SERVICE_UNAVAILABLE,
                FaultCode::Server,
                "This endpoint accepts no Outbound Messages until SALESFORCE_ORG_ID is set to the org's id.",
            );
        };
        if !same_salesforce_id(configured, org) {
            tracing::warn!(
                organization_id = org,
                action_id = message.action_id.as_deref().unwrap_or(""),
                "Salesforce Outbound Message from another org refused"
            );
            return soap::fault(
                StatusCode::FORBIDDEN,
                FaultCode::Client,
                &format!(
                    "OrganizationId {org} is not the org this integration accepts (SALESFORCE_ORG_ID)."
                ),
            );
        }
        let cutoff = self.budget / 2;
        let total = message.notifications.len();
        let mut failed: Vec<(String, Outcome)> = Vec::new();
        let (mut done, mut repeats) = (0usize, 0usize);
        for n in &message.notifications {
            let outcome = if started.elapsed() >= cutoff {
                Outcome::Retry("not started: no time left in this delivery".into())
            } else {
                self.process(org, n).await
            };
            // The outcome's kind only: its reason may quote the record's values (it goes to
            // Salesforce, the caller, in the fault string).
            tracing::info!(
                notification = %n.id,
                object = %n.sobject.object_type,
                outcome = outcome.kind(),
                "Salesforce outbound notification"
            );
            match outcome {
                Outcome::Done(_) => done += 1,
                Outcome::Duplicate => repeats += 1,
                other => failed.push((n.id.clone(), other)),
            }
        }
        if failed.is_empty() {
            tracing::info!(
                notifications = total,
                done,
                repeats,
                "Salesforce Outbound Message acknowledged"
            );
            return soap::ack();
        }
        let retry = failed.iter().any(|(_, o)| matches!(o, Outcome::Retry(_)));
        let reasons: Vec<String> = failed
            .iter()
            .map(|(id, o)| match o {
                Outcome::Retry(why) | Outcome::Fix(why) => format!("{id}: {why}"),
                Outcome::Done(_) | Outcome::Duplicate => String::new(),
            })
            .collect();
        let text = cut(format!(
            "{} of {total} notification(s) not done, so the message is not acknowledged and Salesforce retries it; those done are not repeated. {}",
            failed.len(),
            reasons.join("; ")
        ));
        let mut resp = if retry {
            soap::fault(StatusCode::SERVICE_UNAVAILABLE, FaultCode::Server, &text)
        } else {
            soap::fault(StatusCode::INTERNAL_SERVER_ERROR, FaultCode::Client, &text)
        };
        if retry && let Ok(v) = http::HeaderValue::from_str(&RETRY_AFTER.as_secs().to_string()) {
            resp.headers.insert(http::header::RETRY_AFTER, v);
        }
        resp
    }
}
