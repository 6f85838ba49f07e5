//! Salesforce drives Enerflo (docs/crm-connectors.md 3.10, docs/design.md 3.6): two ways in,
//! both translated into the canonical `/crm/*` request and handed to that route's own handler
//! ([`crate::inbound::leads`], [`crate::inbound::status`], [`crate::inbound::milestone`],
//! [`crate::inbound::notes`]), so validation, idempotency and echo rules are exactly theirs.
//!
//! - [`flow::FlowRoute`]: `POST /crm/salesforce/{lead|status|milestone|note}`, a Flow "HTTP
//!   Callout" action (or Apex) sending JSON with the fields of docs/design.md 3.2 plus
//!   `record_id`, authenticated like `/crm/*` (`Authorization: Bearer <CRM_INBOUND_TOKEN>`, set as
//!   a named credential's header).
//! - [`outbound::OutboundMessageRoute`]: `POST /crm/salesforce/outbound-message`, the SOAP
//!   notifications of an Outbound Message ([`soap`]): the org checked against
//!   `SALESFORCE_ORG_ID`, each sObject's fields mapped back through the mapping profile, each
//!   notification done once, and the `Ack` true only when all of them are.
//!
//! What both share is here: the Opportunity's `{install}`, `StageName` -> Enerflo status through
//! the profile's `stages.by_status` reversed, date fields -> milestones through
//! `milestone_dates` reversed, and the canonical request a translation becomes.

// A route's error is the problem+json answer itself, built once per request.
#![allow(clippy::result_large_err)]

pub mod flow;
pub mod outbound;
pub mod soap;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::Value;

use crate::canonical::CrmEventType;
use crate::crm::profile::{Profile, parse_date};
use crate::http::inbound::{resolve_install, store_problem};
use crate::http::router::RouteParams;
use crate::http::{HttpRequest, Problem};
use crate::store::XrefStore;
use crate::sync::fingerprints::status_name_fingerprint;
use crate::sync::{Direction, EchoGuard, EchoTarget};
use crate::wire::encode_segment;

/// Which canonical route a Flow callout becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Lead,
    Status,
    Milestone,
    Note,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Self::Lead => "lead",
            Self::Status => "status",
            Self::Milestone => "milestone",
            Self::Note => "note",
        }
    }
}

/// One canonical call a Salesforce request becomes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Call {
    /// Names the call in logs and idempotency keys: `lead`, `status`, `milestone:<key>`, `note`.
    pub label: String,
    pub path: String,
    pub method: Method,
    pub params: RouteParams,
    pub body: Value,
}

impl Call {
    pub fn lead(body: Value) -> Self {
        Self {
            label: "lead".into(),
            path: "/crm/leads".into(),
            method: Method::POST,
            params: RouteParams::default(),
            body,
        }
    }

    pub fn status(install: &str, body: Value) -> Self {
        Self {
            label: "status".into(),
            path: format!("/crm/installs/{}/status", encode_segment(install)),
            method: Method::PUT,
            params: install_params(install, None),
            body,
        }
    }

    pub fn milestone(install: &str, milestone: &str, body: Value) -> Self {
        Self {
            label: format!("milestone:{milestone}"),
            path: format!(
                "/crm/installs/{}/milestones/{}",
                encode_segment(install),
                encode_segment(milestone)
            ),
            method: Method::PUT,
            params: install_params(install, Some(milestone)),
            body,
        }
    }

    pub fn note(install: &str, body: Value) -> Self {
        Self {
            label: "note".into(),
            path: format!("/crm/installs/{}/notes", encode_segment(install)),
            method: Method::POST,
            params: install_params(install, None),
            body,
        }
    }

    /// The request the canonical route's handler receives.
    pub fn request(&self) -> HttpRequest {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        HttpRequest {
            method: self.method.clone(),
            path: self.path.clone(),
            query: None,
            headers,
            body: Bytes::from(serde_json::to_vec(&self.body).unwrap_or_default()),
        }
    }
}

fn install_params(install: &str, milestone: Option<&str>) -> RouteParams {
    RouteParams {
        install: Some(install.to_owned()),
        milestone: milestone.map(str::to_owned),
    }
}

/// The Salesforce field holding the Enerflo id the profile keys `object` records by on `source`
/// (`$enerflo.install_id` -> `Enerflo_Install_Id__c`), if the profile has such a key.
pub(crate) fn key_field<'p>(
    profile: &'p Profile,
    t: CrmEventType,
    source: &str,
) -> Option<&'p str> {
    profile
        .event(t)
        .keys
        .iter()
        .find(|k| k.field.text == source)
        .map(|k| k.property.as_str())
}

/// What a stage stands for, through `stages.by_status` reversed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StageStatus {
    /// The Enerflo status name (as the profile holds it, lower-cased).
    One(String),
    /// No status maps to this stage; the stages that are mapped.
    Unmapped(Vec<String>),
    /// Several statuses share the stage and none of them is what we pushed to this record.
    Several(Vec<String>),
}

/// The Enerflo status `stage` stands for on `install`. One status is used; of several, the one we
/// pushed to this record (its echo coming back), else [`StageStatus::Several`].
pub(crate) async fn status_for_stage(
    profile: &Profile,
    xref: &dyn XrefStore,
    echo: &EchoGuard,
    install: &str,
    stage: &str,
) -> Result<StageStatus, Problem> {
    let stage = stage.trim();
    let names: Vec<String> = profile
        .stages
        .by_status
        .iter()
        .filter(|(_, s)| s.as_str() == stage)
        .map(|(name, _)| name.clone())
        .collect();
    match names.as_slice() {
        [one] => Ok(StageStatus::One(one.clone())),
        [] => {
            let mut mapped: Vec<String> = profile.stages.by_status.values().cloned().collect();
            mapped.sort();
            mapped.dedup();
            Ok(StageStatus::Unmapped(mapped))
        }
        several => {
            let target = resolve_install(xref, install).await?;
            for name in several {
                if echo
                    .is_ours(
                        Direction::ToCrm,
                        &EchoTarget::Status(target.install_id),
                        &[status_name_fingerprint(name)],
                    )
                    .await
                    .map_err(store_problem)?
                {
                    return Ok(StageStatus::One(name.clone()));
                }
            }
            Ok(StageStatus::Several(several.to_vec()))
        }
    }
}

/// The milestone key (a `milestone_dates` key: an Enerflo milestone id or a `MILESTONE_KEY_MAP`
/// key) whose date field is `field`.
pub(crate) fn milestone_of_field<'p>(profile: &'p Profile, field: &str) -> Option<&'p str> {
    profile
        .milestone_dates
        .iter()
        .find(|(_, f)| f.as_str() == field)
        .map(|(k, _)| k.as_str())
}

/// A Salesforce Date (`YYYY-MM-DD`) or DateTime (RFC 3339) as the canonical `YYYY-MM-DD`.
pub(crate) fn salesforce_date(raw: &str) -> Option<String> {
    let d = parse_date(raw.trim())?;
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    d.format(&fmt).ok()
}

/// The canonical lead field a lead-object property of the profile comes from, as `POST
/// /crm/leads` names it (`phone` -> `mobile`); `None` for fields that route does not take.
pub fn lead_field(canonical: &str) -> Option<&'static str> {
    Some(match canonical {
        "first_name" => "first_name",
        "last_name" => "last_name",
        "email" => "email",
        "phone" | "mobile" => "mobile",
        "address.street" => "address.street",
        "address.city" => "address.city",
        "address.state" => "address.state",
        "address.zip" => "address.zip",
        "lead_source" => "lead_source",
        "notes" => "notes",
        "rep_email" => "rep_email",
        "setter_email" => "setter_email",
        _ => return None,
    })
}

/// Two Salesforce ids for the same record: equal, or the 15-character case-sensitive id and its
/// 18-character case-safe form.
pub fn same_salesforce_id(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    match (a.len(), b.len()) {
        (x, y) if x == y => a == b,
        (15, 18) => b.starts_with(a),
        (18, 15) => a.starts_with(b),
        _ => false,
    }
}
