//! Stage 1.1: `POST /crm/leads` -> `POST /api/v1/partner/action/lead/add`, linking the CRM id to
//! the Enerflo customer id.
//!
//! One Enerflo lead per `crm_id`, whatever the CRM repeats: calls for one `crm_id` are serialised
//! by a claim (a conditional put), a known lead whose content is what we last sent answers 200
//! without calling Enerflo, and any other call is an upsert keyed by `integration_record_id` =
//! `crm_id` (ENERFLO_API.md 2.1, PEER_LESSONS 7, 19). Before writing, the CRM id is linked and the
//! lead's fingerprint recorded, so the `new_customer` / `customer.created` Enerflo fires back is
//! recognised as our own write by stage 1.2 (PEER_LESSONS 9).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::StatusCode;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::canonical::{Address, Lead, is_us_state, normalise_zip};
use crate::config::LeadFields;
use crate::enerflo::{EnerfloApi, EnerfloError};
use crate::hashing::content_hash;
use crate::http::inbound::{enerflo_problem, json_object, store_problem};
use crate::http::problem::FieldError;
use crate::http::router::{InboundRoute, RouteParams};
use crate::http::{HttpRequest, HttpResponse, Problem};
use crate::mapping::lead::{LeadKey, merge_keep, state_hash};
use crate::store::{
    Claim, ClaimStore, EntityKind, EntityLink, IdForm, IdRef, SyncState, SyncStateStore, XrefStore,
};
use crate::sync::{Direction, EchoGuard, EchoTarget, StateKey};
use crate::timefmt::now_rfc3339;

/// How long a call waits for a concurrent call with the same `crm_id` before answering 503.
pub const PEER_WAIT: Duration = Duration::from_secs(5);

const MAX_TEXT: usize = 255;
const MAX_NOTES: usize = 10_000;

/// A lead as the CRM sends it (DESIGN 3.2), validated: it cannot hold a missing name, a
/// non-US state or a malformed e-mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeadRequest {
    pub crm_id: String,
    pub first_name: String,
    pub last_name: String,
    pub street: String,
    pub city: String,
    /// Upper-case 2-letter US code.
    pub state: String,
    /// `12345` or `12345-6789`.
    pub zip: String,
    pub email: Option<String>,
    /// Digits only.
    pub mobile: Option<String>,
    pub rep_email: Option<String>,
    pub setter_email: Option<String>,
    pub lead_source: Option<String>,
    pub notes: Option<String>,
    pub deal_type_id: Option<u64>,
    pub appointment_type_id: Option<u64>,
}

impl LeadRequest {
    /// Validates the body; on failure, every bad field is named (never its value: no customer
    /// data in error bodies).
    pub fn parse(body: &Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let crm_id = text(
            body.get("crm_id"),
            "crm_id",
            true,
            MAX_TEXT,
            true,
            &mut errors,
        );
        let first_name = text(
            body.get("first_name"),
            "first_name",
            true,
            MAX_TEXT,
            false,
            &mut errors,
        );
        let last_name = text(
            body.get("last_name"),
            "last_name",
            true,
            MAX_TEXT,
            false,
            &mut errors,
        );

        let (mut street, mut city, mut state, mut zip) = (None, None, None, None);
        match body.get("address") {
            Some(Value::Object(a)) => {
                street = text(
                    a.get("street"),
                    "address.street",
                    true,
                    MAX_TEXT,
                    false,
                    &mut errors,
                );
                city = text(
                    a.get("city"),
                    "address.city",
                    true,
                    MAX_TEXT,
                    false,
                    &mut errors,
                );
                state = us_state(a.get("state"), &mut errors);
                zip = us_zip(a.get("zip"), &mut errors);
            }
            None | Some(Value::Null) => {
                for part in ["street", "city", "state", "zip"] {
                    push(&mut errors, &format!("address.{part}"), "is required");
                }
            }
            Some(_) => push(
                &mut errors,
                "address",
                "must be an object with street, city, state and zip",
            ),
        }

        let email = email_field(body.get("email"), "email", &mut errors);
        let mobile = phone(body.get("mobile"), "mobile", &mut errors);
        let rep_email = email_field(body.get("rep_email"), "rep_email", &mut errors);
        let setter_email = email_field(body.get("setter_email"), "setter_email", &mut errors);
        let lead_source = text(
            body.get("lead_source"),
            "lead_source",
            false,
            MAX_TEXT,
            false,
            &mut errors,
        );
        let notes = text(
            body.get("notes"),
            "notes",
            false,
            MAX_NOTES,
            false,
            &mut errors,
        );
        let deal_type_id = positive_id(body.get("deal_type_id"), "deal_type_id", &mut errors);
        let appointment_type_id = positive_id(
            body.get("appointment_type_id"),
            "appointment_type_id",
            &mut errors,
        );

        match (crm_id, first_name, last_name, street, city, state, zip) {
            (
                Some(crm_id),
                Some(first_name),
                Some(last_name),
                Some(street),
                Some(city),
                Some(state),
                Some(zip),
            ) if errors.is_empty() => Ok(Self {
                crm_id,
                first_name,
                last_name,
                street,
                city,
                state,
                zip,
                email,
                mobile,
                rep_email,
                setter_email,
                lead_source,
                notes,
                deal_type_id,
                appointment_type_id,
            }),
            _ => Err(errors),
        }
    }

    /// The lead/add body (shape of tests/fixtures/enerflo/api-lead-add.request.json). Absent
    /// optional fields are left out rather than sent as null: Enerflo stores a null it is sent, and
    /// an update must not blank what the CRM did not mention.
    pub fn enerflo_body(&self, fields: &LeadFields) -> Value {
        let mut lead = Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(v) = value
                && !name.is_empty()
            {
                lead.insert(name.to_owned(), v);
            }
        };
        let s = |v: &Option<String>| v.clone().map(Value::String);
        put("first_name", Some(self.first_name.clone().into()));
        put("last_name", Some(self.last_name.clone().into()));
        put("email", s(&self.email));
        put("mobile", s(&self.mobile));
        put("address", Some(self.street.clone().into()));
        put("city", Some(self.city.clone().into()));
        put("state", Some(self.state.clone().into()));
        put("zip", Some(self.zip.clone().into()));
        put("integration_record_id", Some(self.crm_id.clone().into()));
        put("lead_source", s(&self.lead_source));
        put("assign_to_email", s(&self.rep_email));
        put("setter_email", s(&self.setter_email));
        put(&fields.notes_field, s(&self.notes));
        put(
            &fields.create_deal_field,
            self.deal_type_id.map(Value::from),
        );
        put(
            &fields.appointment_type_field,
            self.appointment_type_id.map(Value::from),
        );
        put(
            "office_match",
            Some(fields.office_match.clone())
                .filter(|v| !v.is_empty())
                .map(Value::String),
        );
        json!({ "lead": lead })
    }

    /// The lead as the CRM holds it, in the canonical shape stage 1.2 pushes.
    pub fn canonical(&self) -> Lead {
        Lead {
            first_name: Some(self.first_name.clone()),
            last_name: Some(self.last_name.clone()),
            email: self.email.clone(),
            phone: self.mobile.clone(),
            address: Some(Address {
                street: Some(self.street.clone()),
                city: Some(self.city.clone()),
                state: Some(self.state.clone()),
                zip: Some(self.zip.clone()),
                country: None,
                lat: None,
                lng: None,
            }),
            lead_source: self.lead_source.clone(),
            timezone: None,
            owner: self.rep_email.clone(),
        }
    }

    /// Asks Enerflo to do more than store the lead (create a deal, start an appointment): such a
    /// request is never taken for an echo.
    fn has_action(&self) -> bool {
        self.deal_type_id.is_some() || self.appointment_type_id.is_some()
    }
}

fn push(errors: &mut Vec<FieldError>, field: &str, message: &str) {
    errors.push(FieldError {
        field: field.to_owned(),
        message: message.to_owned(),
    });
}

/// Trimmed text; blank optional text reads as absent.
fn text(
    v: Option<&Value>,
    field: &str,
    required: bool,
    max: usize,
    numbers_ok: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let t = match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_owned()).filter(|t| !t.is_empty()),
        Some(Value::Number(n)) if numbers_ok => Some(n.to_string()),
        Some(_) => {
            let msg = if numbers_ok {
                "must be a string or a number"
            } else {
                "must be a string"
            };
            push(errors, field, msg);
            return None;
        }
    };
    let Some(t) = t else {
        if required {
            push(errors, field, "is required");
        }
        return None;
    };
    if t.chars().count() > max {
        push(errors, field, &format!("must be at most {max} characters"));
        return None;
    }
    if field != "notes" && t.chars().any(char::is_control) {
        push(errors, field, "must not contain control characters");
        return None;
    }
    Some(t)
}

fn us_state(v: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    let field = "address.state";
    let raw = text(v, field, true, MAX_TEXT, false, errors)?;
    if raw.len() == 2 && is_us_state(&raw) {
        Some(raw.to_ascii_uppercase())
    } else {
        push(errors, field, "must be a 2-letter US state code");
        None
    }
}

fn us_zip(v: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    let field = "address.zip";
    let raw = match v {
        // CRMs export zips as numbers; 2134 is Boston's 02134.
        Some(Value::Number(n)) => Some(n.to_string()),
        other => text(other, field, true, MAX_TEXT, false, errors),
    };
    let zip = normalise_zip(raw.as_deref(), None, Some("US"))?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match zip.split_once('-') {
        None => digits(&zip, 5),
        Some((five, four)) => digits(five, 5) && digits(four, 4),
    };
    if ok {
        Some(zip)
    } else {
        push(errors, field, "must be a US ZIP code (12345 or 12345-6789)");
        None
    }
}

fn email_field(v: Option<&Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let raw = text(v, field, false, 254, false, errors)?;
    if is_email(&raw) {
        Some(raw)
    } else {
        push(errors, field, "must be an e-mail address");
        None
    }
}

/// A practical e-mail check: one `@`, a dot-atom local part, a domain of at least two labels
/// with an alphabetic top level. No whitespace anywhere.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic));
    local_ok && domain_ok
}

/// A phone number as digits: formatting (`+1 (555) 010-0000`) is dropped; 7 to 15 digits.
fn phone(v: Option<&Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let raw = text(v, field, false, 40, true, errors)?;
    let allowed = raw
        .chars()
        .all(|c| c.is_ascii_digit() || " ()-.+".contains(c));
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    if allowed && (7..=15).contains(&digits.len()) {
        Some(digits)
    } else {
        push(errors, field, "must be a phone number of 7 to 15 digits");
        None
    }
}

fn positive_id(v: Option<&Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<u64> {
    let id = match v {
        None | Some(Value::Null) => return None,
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if s.trim().is_empty() => return None,
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    match id {
        Some(n) if n > 0 => Some(n),
        _ => {
            push(errors, field, "must be a positive whole number");
            None
        }
    }
}

/// `POST /crm/leads`.
pub struct LeadsRoute {
    pub enerflo: Arc<dyn EnerfloApi>,
    pub xref: Arc<dyn XrefStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub state: Arc<dyn SyncStateStore>,
    pub echo: EchoGuard,
    pub fields: LeadFields,
    /// Longest wait on Enerflo (`INBOUND_WAIT_SECS`).
    pub budget: Duration,
    /// Longest wait for a concurrent call with the same `crm_id` ([`PEER_WAIT`]).
    pub peer_wait: Duration,
}

#[async_trait]
impl InboundRoute for LeadsRoute {
    async fn handle(&self, req: &HttpRequest, _params: &RouteParams) -> HttpResponse {
        let body = match json_object(req) {
            Ok(b) => b,
            Err(p) => return p.into_response(),
        };
        let lead = match LeadRequest::parse(&body) {
            Ok(l) => l,
            Err(errors) => {
                tracing::info!(fields = errors.len(), outcome = "invalid", "crm lead");
                return Problem::validation(errors).into_response();
            }
        };
        let span = tracing::info_span!("crm_lead", crm_id = %lead.crm_id);
        async {
            let claim = match self.serialise(&lead.crm_id).await {
                Ok(c) => c,
                Err(p) => return p.into_response(),
            };
            let out = self.upsert(&lead).await;
            if let Err(e) = self.claims.release(&claim).await {
                tracing::warn!(error = %e, "lead claim not released; it expires with its lease");
            }
            match out {
                Ok(resp) => resp,
                Err(p) => p.into_response(),
            }
        }
        .instrument(span)
        .await
    }
}

impl LeadsRoute {
    /// Claims `lead#<crm_id>`; a concurrent call for the same id waits for it (up to
    /// `peer_wait`), then goes on and finds the winner's link. Returns the claim key.
    async fn serialise(&self, crm_id: &str) -> Result<String, Problem> {
        let key = StateKey::CrmLead(crm_id.to_owned()).scope();
        // Outlives the longest Enerflo wait, so a live call never loses its claim; a crashed one
        // blocks the id for no longer than this.
        let lease = (self.budget + Duration::from_secs(10)).as_secs();
        let deadline = Instant::now() + self.peer_wait;
        loop {
            match self
                .claims
                .claim(&key, lease, lease)
                .await
                .map_err(store_problem)?
            {
                Claim::Acquired => return Ok(key),
                // Nothing completes these claims; a stale record must not block the id.
                Claim::Completed { .. } => {
                    self.claims.release(&key).await.map_err(store_problem)?;
                }
                Claim::InProgress => {}
            }
            if Instant::now() >= deadline {
                tracing::info!(outcome = "in_progress", "crm lead");
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "lead-in-progress",
                    "Service Unavailable",
                    "Another request for this crm_id is still being processed; retry.",
                )
                .with_retry_after(Duration::from_secs(3)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The customer entity this CRM id is linked to: as Enerflo's integration record id (a lead
    /// we created), else as the CRM contact a stage-1.2 push created.
    async fn find_link(&self, crm_id: &str) -> Result<Option<EntityLink>, Problem> {
        for form in [IdForm::Integration, IdForm::Crm] {
            if let Some(link) = self
                .xref
                .resolve(EntityKind::Customer, &IdRef::new(form, crm_id))
                .await
                .map_err(store_problem)?
            {
                return Ok(Some(link));
            }
        }
        Ok(None)
    }

    async fn upsert(&self, lead: &LeadRequest) -> Result<HttpResponse, Problem> {
        let crm_id = lead.crm_id.as_str();
        let body = lead.enerflo_body(&self.fields);
        let body_hash = content_hash(&body);
        let canonical = serde_json::to_value(lead.canonical()).unwrap_or(Value::Null);
        let key = LeadKey::of_value(&canonical);
        let key_hash = key.hash();

        let link = self.find_link(crm_id).await?;
        let known_id = link
            .as_ref()
            .and_then(|l| l.id(IdForm::CustomerId))
            .and_then(|v| v.parse::<u64>().ok());
        let last = match &link {
            Some(l) => self
                .state
                .get_state(&StateKey::Lead(l.key.clone()).scope())
                .await
                .map_err(store_problem)?,
            None => None,
        };
        // Enerflo still holds what this lead says (no change synced from Enerflo since).
        let agrees = last
            .as_ref()
            .is_none_or(|s| key.agrees_with(&LeadKey::of_value(&s.data)));

        if let Some(id) = known_id
            && agrees
        {
            if !lead.has_action()
                && self
                    .echo
                    .fingerprinted(
                        Direction::ToCrm,
                        &EchoTarget::Lead(crm_id.to_owned()),
                        std::slice::from_ref(&key_hash),
                    )
                    .await
                    .map_err(store_problem)?
            {
                tracing::info!(outcome = "echo", enerflo_customer_id = id, "crm lead");
                return Ok(answer(StatusCode::OK, "echo", crm_id, Some(id), false));
            }
            let sent = self
                .state
                .get_state(&StateKey::LeadSent(crm_id.to_owned()).scope())
                .await
                .map_err(store_problem)?;
            if sent.is_some_and(|s| s.hash == body_hash) {
                tracing::info!(outcome = "unchanged", enerflo_customer_id = id, "crm lead");
                return Ok(answer(StatusCode::OK, "unchanged", crm_id, Some(id), false));
            }
        }

        // Link and fingerprint before writing: Enerflo's webhook for this write may be processed
        // before its answer reaches us.
        let crm_ids = [
            IdRef::new(IdForm::Integration, crm_id),
            IdRef::new(IdForm::Crm, crm_id),
        ];
        self.xref
            .link(EntityKind::Customer, &crm_ids)
            .await
            .map_err(store_problem)?;
        let target = EchoTarget::Lead(crm_id.to_owned());
        self.echo
            .record_fingerprints(
                Direction::ToEnerflo,
                &target,
                std::slice::from_ref(&key_hash),
            )
            .await
            .map_err(store_problem)?;
        self.state
            .put_state(
                &StateKey::LeadWritten(key_hash.clone()).scope(),
                &SyncState {
                    hash: key_hash.clone(),
                    data: json!({ "crm_id": crm_id }),
                    updated_at: now_rfc3339(),
                    seq: 0,
                },
            )
            .await
            .map_err(store_problem)?;

        let added = match self
            .enerflo
            .add_lead(&body, &self.fields.customer_id_paths, self.budget)
            .await
        {
            Ok(a) => a,
            Err(EnerfloError::NotFound { .. }) => {
                tracing::error!(outcome = "enerflo_404", "lead/add answered 404");
                return Err(Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "enerflo-error",
                    "Bad Gateway",
                    "Enerflo answered 404 to lead/add; check ENERFLO_BASE_URL.",
                ));
            }
            Err(e) => {
                // The message may quote the caller's data: it goes back to the caller, not to logs.
                tracing::warn!(
                    outcome = "enerflo_failed",
                    kind = error_kind(&e),
                    "crm lead"
                );
                return Err(enerflo_problem(e));
            }
        };
        let Some(customer_id) = added.customer_id else {
            tracing::error!(
                outcome = "no_customer_id",
                "lead/add answer names no customer id"
            );
            return Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "enerflo-bad-response",
                "Bad Gateway",
                "Enerflo accepted the lead but its answer names no customer id; retrying is safe (lead/add is keyed by crm_id).",
            ));
        };

        let ids = [
            IdRef::new(IdForm::Integration, crm_id),
            IdRef::new(IdForm::Crm, crm_id),
            IdRef::new(IdForm::CustomerId, customer_id),
        ];
        let link = self
            .xref
            .link(EntityKind::Customer, &ids)
            .await
            .map_err(store_problem)?;
        if link.id(IdForm::CustomerId) != Some(customer_id.to_string()) {
            tracing::warn!(
                enerflo_customer_id = customer_id,
                linked = link.id(IdForm::CustomerId).as_deref().unwrap_or(""),
                "Enerflo answered another customer id than the one linked to this crm_id"
            );
        }
        // The state both directions judge change against: the CRM's values over what was known
        // (re-read: stage 1.2 may have stored the echo meanwhile).
        let scope = StateKey::Lead(link.key.clone()).scope();
        let last = self.state.get_state(&scope).await.map_err(store_problem)?;
        let merged = match &last {
            Some(l) => merge_keep(&canonical, &l.data),
            None => canonical.clone(),
        };
        let merged_key = LeadKey::of_value(&merged).hash();
        if merged_key != key_hash {
            self.echo
                .record_fingerprints(Direction::ToEnerflo, &target, &[merged_key])
                .await
                .map_err(store_problem)?;
        }
        let now = now_rfc3339();
        self.state
            .put_state(
                &scope,
                &SyncState {
                    hash: state_hash(&merged),
                    data: merged,
                    updated_at: now.clone(),
                    seq: 0,
                },
            )
            .await
            .map_err(store_problem)?;
        self.state
            .put_state(
                &StateKey::LeadSent(crm_id.to_owned()).scope(),
                &SyncState {
                    hash: body_hash,
                    data: json!({ "enerflo_customer_id": customer_id }),
                    updated_at: now,
                    seq: 0,
                },
            )
            .await
            .map_err(store_problem)?;

        let created = known_id.is_none();
        tracing::info!(
            outcome = if created { "created" } else { "updated" },
            enerflo_customer_id = customer_id,
            "crm lead"
        );
        Ok(if created {
            answer(
                StatusCode::CREATED,
                "created",
                crm_id,
                Some(customer_id),
                true,
            )
        } else {
            answer(StatusCode::OK, "updated", crm_id, Some(customer_id), false)
        })
    }
}

fn answer(
    status: StatusCode,
    outcome: &str,
    crm_id: &str,
    enerflo_customer_id: Option<u64>,
    created: bool,
) -> HttpResponse {
    HttpResponse::json(
        status,
        &json!({
            "status": outcome,
            "crm_id": crm_id,
            "enerflo_customer_id": enerflo_customer_id,
            "created": created,
        }),
    )
}

fn error_kind(e: &EnerfloError) -> &'static str {
    match e {
        EnerfloError::NotFound { .. } => "not_found",
        EnerfloError::RateLimited { .. } => "rate_limited",
        EnerfloError::Unavailable { .. } => "unavailable",
        EnerfloError::Rejected { .. } => "rejected",
        EnerfloError::BadBody { .. } => "bad_body",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::VecDeque;
    use std::sync::Mutex;

    use reqwest::Method;

    use super::*;
    use crate::enerflo::client::ApiResponse;
    use crate::store::EchoStore;
    use crate::store::embedded::EmbeddedStore;

    const REQUEST_FIXTURE: &str =
        include_str!("../../../tests/fixtures/enerflo/api-lead-add.request.json");

    /// Enerflo double: records every call, answers from a script (then lead/add success).
    #[derive(Default)]
    struct FakeEnerflo {
        calls: Mutex<Vec<(String, Value)>>,
        script: Mutex<VecDeque<Result<ApiResponse, EnerfloError>>>,
        delay: Duration,
    }

    #[async_trait]
    impl EnerfloApi for FakeEnerflo {
        async fn send(
            &self,
            _method: Method,
            path: &str,
            body: Option<&Value>,
            _budget: Duration,
        ) -> Result<ApiResponse, EnerfloError> {
            self.calls
                .lock()
                .unwrap()
                .push((path.to_owned(), body.cloned().unwrap_or(Value::Null)));
            tokio::time::sleep(self.delay).await;
            self.script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Ok(ApiResponse {
                    status: 200,
                    body: json!({"status": "success", "customer_id": 900001}),
                }))
        }
    }

    impl FakeEnerflo {
        fn calls(&self) -> usize {
            self.calls.lock().unwrap().len()
        }
    }

    fn route(enerflo: Arc<FakeEnerflo>, store: Arc<EmbeddedStore>) -> LeadsRoute {
        LeadsRoute {
            enerflo,
            xref: store.clone(),
            claims: store.clone(),
            state: store.clone(),
            echo: EchoGuard::new(store.clone(), store, Duration::from_secs(3600)),
            fields: LeadFields::default(),
            budget: Duration::from_secs(5),
            peer_wait: PEER_WAIT,
        }
    }

    fn setup() -> (Arc<FakeEnerflo>, Arc<EmbeddedStore>, LeadsRoute) {
        let enerflo = Arc::new(FakeEnerflo::default());
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let r = route(enerflo.clone(), store.clone());
        (enerflo, store, r)
    }

    fn good() -> Value {
        json!({
            "crm_id": "crm-lead-0001",
            "first_name": "Pat",
            "last_name": "Placeholder",
            "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX", "zip": "75001"},
            "email": "pat.placeholder@example.com",
            "mobile": "5550100000",
            "rep_email": "closer@example.com",
            "setter_email": "setter@example.com",
            "lead_source": "CRM"
        })
    }

    fn req(body: &Value) -> HttpRequest {
        HttpRequest {
            method: http::Method::POST,
            path: "/crm/leads".into(),
            query: None,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    async fn post(r: &LeadsRoute, body: &Value) -> (u16, Value) {
        let resp = r.handle(&req(body), &RouteParams::default()).await;
        (resp.status.as_u16(), resp.body_json())
    }

    fn parse(v: &Value) -> Result<LeadRequest, Vec<FieldError>> {
        LeadRequest::parse(v.as_object().unwrap())
    }

    #[test]
    fn a_valid_lead_becomes_the_documented_lead_add_body() {
        let lead = parse(&good()).expect("valid");
        let expected: Value = serde_json::from_str(REQUEST_FIXTURE).unwrap();
        assert_eq!(lead.enerflo_body(&LeadFields::default()), expected);
    }

    #[test]
    fn deal_appointment_and_notes_use_the_configured_field_names() {
        let mut body = good();
        body["deal_type_id"] = json!(12);
        body["appointment_type_id"] = json!("34");
        body["notes"] = json!("  Prefers mornings  ");
        let sent = parse(&body)
            .expect("valid")
            .enerflo_body(&LeadFields::default());
        assert_eq!(sent["lead"]["createDeal"], 12);
        assert_eq!(sent["lead"]["appointment_type_id"], 34);
        assert_eq!(sent["lead"]["notes"], "Prefers mornings");
        let renamed = LeadFields {
            notes_field: "add_note".into(),
            office_match: String::new(),
            ..LeadFields::default()
        };
        let sent = parse(&body).expect("valid").enerflo_body(&renamed);
        assert_eq!(sent["lead"]["add_note"], "Prefers mornings");
        assert!(sent["lead"].get("notes").is_none());
        assert!(sent["lead"].get("office_match").is_none());
    }

    #[test]
    fn absent_optional_fields_are_not_sent_as_null() {
        let body = json!({"crm_id": "c1", "first_name": "A", "last_name": "B",
            "address": {"street": "1 Way", "city": "X", "state": "tx", "zip": "75001"},
            "email": "", "mobile": null});
        let sent = parse(&body)
            .expect("valid")
            .enerflo_body(&LeadFields::default());
        let lead = sent["lead"].as_object().unwrap();
        assert!(!lead.contains_key("email") && !lead.contains_key("mobile"));
        assert_eq!(lead["state"], "TX");
    }

    #[test]
    fn crm_exports_are_read_numbers_and_formatting_included() {
        let body = json!({"crm_id": 12345, "first_name": "A", "last_name": "B",
            "address": {"street": "1 Way", "city": "Boston", "state": "MA", "zip": 2134},
            "mobile": "+1 (555) 010-0000", "deal_type_id": "7"});
        let lead = parse(&body).expect("valid");
        assert_eq!(lead.crm_id, "12345");
        assert_eq!(lead.zip, "02134");
        assert_eq!(lead.mobile.as_deref(), Some("15550100000"));
        assert_eq!(lead.deal_type_id, Some(7));
    }

    #[test]
    fn every_bad_field_is_named_without_echoing_its_value() {
        let body = json!({"crm_id": "  ", "first_name": "Pat", "last_name": 7,
            "address": {"street": "1 Example Way", "state": "Texas", "zip": "ABCDE"},
            "email": "pat@@example", "mobile": "call me", "rep_email": "rep at example.com",
            "deal_type_id": -1, "appointment_type_id": "soon"});
        let errors = parse(&body).expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "crm_id",
                "last_name",
                "address.city",
                "address.state",
                "address.zip",
                "email",
                "mobile",
                "rep_email",
                "deal_type_id",
                "appointment_type_id"
            ]
        );
        let text = serde_json::to_string(&errors).unwrap();
        for value in ["Texas", "ABCDE", "pat@@example", "call me"] {
            assert!(!text.contains(value), "{value} echoed in {text}");
        }
    }

    #[test]
    fn a_missing_address_names_each_part_and_a_wrong_shape_names_the_address() {
        let mut body = good();
        body.as_object_mut().unwrap().remove("address");
        let fields: Vec<String> = parse(&body)
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "address.street",
                "address.city",
                "address.state",
                "address.zip"
            ]
        );
        body["address"] = json!("1 Example Way, Exampleville TX");
        let errors = parse(&body).expect_err("invalid");
        assert_eq!(errors[0].field, "address");
    }

    #[test]
    fn emails_are_checked_sensibly() {
        for ok in [
            "a@b.co",
            "first.last+tag@sub.example.com",
            "o'neil@example.org",
        ] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "a@b",
            "a@@b.com",
            "@b.com",
            "a@b.c",
            "a b@c.com",
            "a@-b.com",
            ".a@b.com",
            "a..b@c.com",
            "a@b..com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn invalid_lead_answers_422_and_calls_nobody() {
        let (enerflo, store, r) = setup();
        let (status, body) = post(&r, &json!({"crm_id": "", "first_name": "Pat"})).await;
        assert_eq!(status, 422);
        assert_eq!(
            body["type"],
            "urn:enerflo-crm-sync:problem:validation-failed"
        );
        assert_eq!(body["errors"].as_array().unwrap().len(), 6, "{body}");
        assert_eq!(enerflo.calls(), 0);
        // no side effect: nothing linked, no claim left behind
        assert!(
            store
                .resolve(EntityKind::Customer, &IdRef::new(IdForm::Integration, ""))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store.claim("lead#", 1, 1).await.unwrap(),
            Claim::Acquired,
            "no claim was taken"
        );
    }

    #[tokio::test]
    async fn malformed_json_is_400() {
        let (enerflo, _, r) = setup();
        let mut bad = req(&Value::Null);
        bad.body = bytes::Bytes::from_static(b"{nope");
        let resp = r.handle(&bad, &RouteParams::default()).await;
        assert_eq!(resp.status.as_u16(), 400);
        assert_eq!(enerflo.calls(), 0);
    }

    #[tokio::test]
    async fn a_new_lead_is_created_once_and_linked_both_ways() {
        let (enerflo, store, r) = setup();
        let (status, body) = post(&r, &good()).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            body,
            json!({"status": "created", "crm_id": "crm-lead-0001",
                "enerflo_customer_id": 900001, "created": true})
        );
        let (path, sent) = enerflo.calls.lock().unwrap()[0].clone();
        assert_eq!(path, "/api/v1/partner/action/lead/add");
        assert_eq!(sent["lead"]["integration_record_id"], "crm-lead-0001");
        let by_enerflo = store
            .resolve(
                EntityKind::Customer,
                &IdRef::new(IdForm::CustomerId, 900001),
            )
            .await
            .unwrap()
            .expect("linked");
        assert_eq!(by_enerflo.crm_id.as_deref(), Some("crm-lead-0001"));
        assert_eq!(
            by_enerflo.id(IdForm::Integration).as_deref(),
            Some("crm-lead-0001")
        );
        // the echo fingerprint stage 1.2 will look for
        let key = LeadKey::of(&parse(&good()).unwrap().canonical()).hash();
        assert!(
            store
                .is_echo(
                    &EchoTarget::Lead("crm-lead-0001".into()).written(Direction::ToEnerflo),
                    &key
                )
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_repeat_answers_200_with_the_link_and_does_not_call_enerflo() {
        let (enerflo, _, r) = setup();
        assert_eq!(post(&r, &good()).await.0, 201);
        let (status, body) = post(&r, &good()).await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "unchanged");
        assert_eq!(body["created"], false);
        assert_eq!(body["enerflo_customer_id"], 900001);
        assert_eq!(enerflo.calls(), 1);
    }

    #[tokio::test]
    async fn a_changed_lead_goes_through_as_an_update_of_the_same_record() {
        let (enerflo, _, r) = setup();
        assert_eq!(post(&r, &good()).await.0, 201);
        let mut changed = good();
        changed["email"] = json!("pat.new@example.com");
        let (status, body) = post(&r, &changed).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("updated")));
        assert_eq!(body["created"], false);
        let calls = enerflo.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].1["lead"]["integration_record_id"], "crm-lead-0001");
        assert_eq!(calls[1].1["lead"]["email"], "pat.new@example.com");
    }

    #[tokio::test]
    async fn concurrent_calls_for_one_crm_id_create_one_enerflo_lead() {
        let enerflo = Arc::new(FakeEnerflo {
            delay: Duration::from_millis(300),
            ..FakeEnerflo::default()
        });
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let r = Arc::new(route(enerflo.clone(), store));
        let handles: Vec<_> = (0..5)
            .map(|_| {
                let r = r.clone();
                tokio::spawn(async move { post(&r, &good()).await })
            })
            .collect();
        let mut statuses = Vec::new();
        for h in handles {
            let (status, body) = h.await.unwrap();
            assert_eq!(body["enerflo_customer_id"], 900001, "{body}");
            statuses.push(status);
        }
        statuses.sort();
        assert_eq!(statuses, [200, 200, 200, 200, 201]);
        assert_eq!(enerflo.calls(), 1);
    }

    #[tokio::test]
    async fn a_peer_still_working_after_the_wait_is_503_with_retry_after() {
        let enerflo = Arc::new(FakeEnerflo {
            delay: Duration::from_millis(800),
            ..FakeEnerflo::default()
        });
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let r = Arc::new(LeadsRoute {
            peer_wait: Duration::from_millis(200),
            ..route(enerflo.clone(), store)
        });
        let first = {
            let r = r.clone();
            tokio::spawn(async move { post(&r, &good()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let resp = r.handle(&req(&good()), &RouteParams::default()).await;
        assert_eq!(resp.status.as_u16(), 503);
        assert!(resp.headers.get("retry-after").is_some());
        assert_eq!(first.await.unwrap().0, 201);
        assert_eq!(enerflo.calls(), 1);
    }

    async fn failing_with(err: EnerfloError) -> (HttpResponse, Arc<FakeEnerflo>, LeadsRoute) {
        let (enerflo, _, r) = setup();
        enerflo.script.lock().unwrap().push_back(Err(err));
        let resp = r.handle(&req(&good()), &RouteParams::default()).await;
        (resp, enerflo, r)
    }

    #[tokio::test]
    async fn enerflo_rate_limiting_is_429_with_its_retry_after() {
        let (resp, _, r) = failing_with(EnerfloError::RateLimited {
            retry_after: Some(Duration::from_secs(41)),
        })
        .await;
        assert_eq!(resp.status.as_u16(), 429);
        assert_eq!(resp.headers["retry-after"], "41");
        // nothing was linked to an Enerflo customer: the retry creates it
        assert_eq!(post(&r, &good()).await.0, 201);
    }

    #[tokio::test]
    async fn enerflo_down_is_502_or_503_with_retry_after() {
        let (resp, ..) = failing_with(EnerfloError::Unavailable {
            status: Some(500),
            detail: "HTTP 500".into(),
            retry_after: None,
        })
        .await;
        assert_eq!(resp.status.as_u16(), 502);
        assert!(resp.headers.get("retry-after").is_some());
        let (resp, ..) = failing_with(EnerfloError::Unavailable {
            status: None,
            detail: "request timed out".into(),
            retry_after: None,
        })
        .await;
        assert_eq!(resp.status.as_u16(), 503);
        assert!(resp.headers.get("retry-after").is_some());
    }

    #[tokio::test]
    async fn enerflo_rejection_is_422_with_its_reason() {
        let (resp, ..) = failing_with(EnerfloError::Rejected {
            status: 422,
            message: "The assign to email must match a user.".into(),
        })
        .await;
        assert_eq!(resp.status.as_u16(), 422);
        let body = resp.body_json();
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("The assign to email must match a user."),
            "{body}"
        );
    }

    #[tokio::test]
    async fn an_answer_without_a_customer_id_is_502_and_links_nothing() {
        let (enerflo, store, r) = setup();
        enerflo.script.lock().unwrap().push_back(Ok(ApiResponse {
            status: 200,
            body: json!({"status": "success"}),
        }));
        let (status, _) = post(&r, &good()).await;
        assert_eq!(status, 502);
        let link = store
            .resolve(
                EntityKind::Customer,
                &IdRef::new(IdForm::Integration, "crm-lead-0001"),
            )
            .await
            .unwrap()
            .expect("the CRM id is pre-linked");
        assert_eq!(link.id(IdForm::CustomerId), None);
        // the retry is an upsert and completes the link
        assert_eq!(post(&r, &good()).await.0, 201);
        assert_eq!(enerflo.calls(), 2);
    }

    #[tokio::test]
    async fn the_crm_echoing_our_push_answers_echo_without_calling_enerflo() {
        let (enerflo, store, r) = setup();
        // GIVEN stage 1.2 pushed Enerflo customer 900001 to CRM contact crm-9
        let link = store
            .link(
                EntityKind::Customer,
                &[IdRef::new(IdForm::CustomerId, 900001)],
            )
            .await
            .unwrap();
        store
            .set_crm_id(EntityKind::Customer, &link.key, "crm-9")
            .await
            .unwrap();
        let mut lead = good();
        lead["crm_id"] = json!("crm-9");
        let pushed = LeadKey::of(&parse(&lead).unwrap().canonical());
        store
            .record_write(
                &EchoTarget::Lead("crm-9".into()).written(Direction::ToCrm),
                &pushed.hash(),
                60,
            )
            .await
            .unwrap();
        // WHEN the CRM's automation sends that contact back
        let (status, body) = post(&r, &lead).await;
        // THEN it is recognised, and Enerflo is not called
        assert_eq!(status, 200);
        assert_eq!(body["status"], "echo");
        assert_eq!(body["enerflo_customer_id"], 900001);
        assert_eq!(enerflo.calls(), 0);
        // ... but a request that creates a deal is never an echo
        lead["deal_type_id"] = json!(3);
        assert_eq!(post(&r, &lead).await.1["status"], "updated");
        assert_eq!(enerflo.calls(), 1);
    }

    /// A cross-reference store that cannot be reached.
    struct DownXref;

    #[async_trait]
    impl XrefStore for DownXref {
        async fn resolve(
            &self,
            _: EntityKind,
            _: &IdRef,
        ) -> Result<Option<EntityLink>, crate::error::StoreError> {
            Err(crate::error::StoreError::unavailable(
                "resolve",
                "timed out",
            ))
        }
        async fn link(
            &self,
            _: EntityKind,
            _: &[IdRef],
        ) -> Result<EntityLink, crate::error::StoreError> {
            Err(crate::error::StoreError::unavailable("link", "timed out"))
        }
        async fn set_crm_id(
            &self,
            _: EntityKind,
            _: &str,
            _: &str,
        ) -> Result<EntityLink, crate::error::StoreError> {
            Err(crate::error::StoreError::unavailable("set", "timed out"))
        }
    }

    #[tokio::test]
    async fn a_failed_link_lookup_is_503_never_a_new_lead() {
        let (enerflo, store, _) = setup();
        let r = LeadsRoute {
            xref: Arc::new(DownXref),
            ..route(enerflo.clone(), store)
        };
        let resp = r.handle(&req(&good()), &RouteParams::default()).await;
        assert_eq!(resp.status.as_u16(), 503);
        assert!(resp.headers.get("retry-after").is_some());
        assert_eq!(enerflo.calls(), 0);
    }
}
