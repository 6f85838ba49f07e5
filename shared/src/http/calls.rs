//! Inbound CRM calls in the event log, beside the Enerflo events: one record per authenticated
//! call to a `/crm/*` route, filed under the entity it addressed, so an entity's timeline shows
//! both directions (the operator console reads them; `README.md` "Operating it").
//!
//! A record's event is `crm.<route>` (`crm.leads`, `crm.milestone`, `crm.status`, `crm.note`),
//! its stage none (no queue carries it, so it is never replayed), its raw body the CRM's request,
//! its outcome the answer's `status` word (`updated`, `created`, `unchanged`, `echo`, ...) or,
//! for an error, `rejected` (4xx) or `failed` (429 and 5xx), and its detail the method, path,
//! answer status and answer body (what Enerflo call we made, and what it answered).

use std::sync::Arc;

use serde_json::Value;

use super::router::RouteParams;
use super::{HttpRequest, HttpResponse};
use crate::store::{
    EntityKind, EventLog, EventRecord, HISTORY_DETAIL_BYTES, INBOUND_EVENT_PREFIX, IdForm, IdRef,
    OutcomeEntry, XrefStore, cut,
};
use crate::timefmt::{now_millis, now_rfc3339};

/// Where inbound calls are recorded.
pub struct CallLog {
    pub log: Arc<dyn EventLog>,
    /// Resolves a CRM id to the entity a call addressed when its answer does not name it.
    pub xref: Arc<dyn XrefStore>,
    pub ttl_secs: u64,
}

/// The event name of a call to `route` (a registry route name: `leads`, `status`, ...).
pub fn call_event(route: &str) -> String {
    format!("{INBOUND_EVENT_PREFIX}{route}")
}

impl CallLog {
    /// When a call arrives: what [`record`](Self::record) files it under, so an Enerflo webhook
    /// the call caused (fired while it ran) is the later event on the timeline.
    pub fn arrived() -> (String, i64) {
        (now_rfc3339(), now_millis())
    }

    /// Records one answered call that arrived at `arrived`. A failure to record is logged,
    /// never the call's failure.
    pub async fn record(
        &self,
        route: &str,
        arrived: (String, i64),
        req: &HttpRequest,
        params: &RouteParams,
        answer: &HttpResponse,
    ) {
        let body = answer.body_json();
        let status = answer.status.as_u16();
        let outcome = match body.get("status").and_then(Value::as_str) {
            Some(word) if answer.status.is_success() && is_word(word) => word.to_owned(),
            _ if answer.status.is_success() => "accepted".to_owned(),
            _ if status == 429 || status >= 500 => "failed".to_owned(),
            _ => "rejected".to_owned(),
        };
        let entity = self.entity(route, req, params, &body).await;
        let answer_text = if body.is_null() {
            String::from_utf8_lossy(&answer.body).into_owned()
        } else {
            body.to_string()
        };
        let detail = cut(
            &format!("{} {} -> {status} {answer_text}", req.method, req.path),
            HISTORY_DETAIL_BYTES,
        );
        let (received_at, received_ms) = arrived;
        let event = call_event(route);
        let record = EventRecord {
            dedupe_key: format!(
                "{event}:{}:{received_ms}:{:08x}",
                entity.as_deref().unwrap_or("unresolved"),
                fastrand::u32(..)
            ),
            event,
            stage: None,
            entity,
            received_at: received_at.clone(),
            received_ms,
            raw_body: String::from_utf8_lossy(&req.body).into_owned(),
            outcome: outcome.clone(),
            detail: Some(detail.clone()),
            deliveries: 1,
            attempts: 1,
            history: vec![OutcomeEntry::new(received_at, &outcome, Some(&detail))],
        };
        if let Err(e) = self.log.record(&record, self.ttl_secs).await {
            tracing::warn!(error = %e, route, outcome, "inbound call not recorded in the event log");
        }
    }

    /// The FIFO-group-style entity (`install:<id>`, `customer:<id>`) the call addressed: named by
    /// the answer, by an `enerflo:<id>` address, or found through the CRM id it was called with.
    async fn entity(
        &self,
        route: &str,
        req: &HttpRequest,
        params: &RouteParams,
        answer: &Value,
    ) -> Option<String> {
        if let Some(id) = answer.get("install_id").and_then(number) {
            return Some(format!("install:{id}"));
        }
        if let Some(id) = answer.get("enerflo_customer_id").and_then(number) {
            return Some(format!("customer:{id}"));
        }
        if let Some(install) = &params.install {
            if let Some(id) = install.strip_prefix("enerflo:") {
                return id
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .map(|id| format!("install:{id}"));
            }
            let link = self
                .xref
                .resolve(EntityKind::Project, &IdRef::new(IdForm::Crm, install))
                .await
                .ok()
                .flatten()?;
            return link.id(IdForm::Install).map(|id| format!("install:{id}"));
        }
        if route == "leads" {
            let request: Value = serde_json::from_slice(&req.body).ok()?;
            let crm_id = request.get("crm_id").and_then(Value::as_str)?;
            let link = self
                .xref
                .resolve(EntityKind::Customer, &IdRef::new(IdForm::Crm, crm_id))
                .await
                .ok()
                .flatten()?;
            return link
                .id(IdForm::CustomerId)
                .or_else(|| link.id(IdForm::CustomerUuid))
                .map(|id| format!("customer:{id}"));
        }
        None
    }
}

fn number(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// A status word an answer may name as the outcome (`updated`, `no_change`), not free text.
fn is_word(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}
