//! The `POST /crm/leads` handler: validate, serialise per `crm_id`, answer a known unchanged
//! lead (or the CRM's echo of our own push) without calling Enerflo, else upsert it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use serde_json::{Value, json};
use tracing::Instrument;

use super::LeadRequest;
use crate::config::LeadFields;
use crate::enerflo::EnerfloApi;
use crate::hashing::content_hash;
use crate::http::inbound::{json_object, store_problem};
use crate::http::router::{InboundRoute, RouteParams};
use crate::http::{HttpRequest, HttpResponse, Problem};
use crate::mapping::lead::LeadKey;
use crate::store::{ClaimStore, IdForm, SyncStateStore, XrefStore};
use crate::sync::{Direction, EchoGuard, EchoTarget, StateKey};

/// How long a call waits for a concurrent call with the same `crm_id` before answering 503.
pub const PEER_WAIT: Duration = Duration::from_secs(5);

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
    /// Answers a known lead Enerflo already holds as sent (or the CRM's echo of our push)
    /// without calling Enerflo; otherwise links, fingerprints, calls `lead/add` and saves the
    /// synced state.
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

        self.prepare_write(crm_id, &key_hash).await?;
        let customer_id = self.add_lead(&body).await?;
        let link = self.link_customer(crm_id, customer_id).await?;
        self.save_synced(&link, crm_id, customer_id, &canonical, &key_hash, body_hash)
            .await?;

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::Value;

    use super::*;
    use crate::inbound::leads::test_kit::{good, parse, post, req, setup};
    use crate::store::{Claim, EchoStore, EntityKind, IdRef};

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
}
