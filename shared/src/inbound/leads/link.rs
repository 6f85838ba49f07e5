//! Stage 1.1's claims and links: one call at a time per `crm_id`, the customer entity a CRM id
//! is linked to, and the links, echo fingerprints and sync state written around the Enerflo call.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{Value, json};

use super::LeadsRoute;
use crate::http::Problem;
use crate::http::inbound::store_problem;
use crate::mapping::lead::{LeadKey, merge_keep, state_hash};
use crate::store::{Claim, EntityKind, EntityLink, IdForm, IdRef, SyncState};
use crate::sync::{Direction, EchoTarget, StateKey};
use crate::timefmt::now_rfc3339;

impl LeadsRoute {
    /// Claims `lead#<crm_id>`; a concurrent call for the same id waits for it (up to
    /// `peer_wait`), then goes on and finds the winner's link. Returns the claim key.
    pub(super) async fn serialise(&self, crm_id: &str) -> Result<String, Problem> {
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
    pub(super) async fn find_link(&self, crm_id: &str) -> Result<Option<EntityLink>, Problem> {
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

    /// Links the CRM id and records the lead's fingerprint before writing: Enerflo's webhook for
    /// this write may be processed before its answer reaches us.
    pub(super) async fn prepare_write(&self, crm_id: &str, key_hash: &str) -> Result<(), Problem> {
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
            .record_fingerprints(Direction::ToEnerflo, &target, &[key_hash.to_owned()])
            .await
            .map_err(store_problem)?;
        self.state
            .put_state(
                &StateKey::LeadWritten(key_hash.to_owned()).scope(),
                &SyncState {
                    hash: key_hash.to_owned(),
                    data: json!({ "crm_id": crm_id }),
                    updated_at: now_rfc3339(),
                    seq: 0,
                },
            )
            .await
            .map_err(store_problem)?;
        Ok(())
    }

    /// Links the Enerflo customer Enerflo answered with to the CRM id.
    pub(super) async fn link_customer(
        &self,
        crm_id: &str,
        customer_id: u64,
    ) -> Result<EntityLink, Problem> {
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
        Ok(link)
    }

    /// Saves what was synced: the state both directions judge change against (the CRM's values
    /// over what was known) and the hash of the body sent, which makes a repeat "unchanged".
    pub(super) async fn save_synced(
        &self,
        link: &EntityLink,
        crm_id: &str,
        customer_id: u64,
        canonical: &Value,
        key_hash: &str,
        body_hash: String,
    ) -> Result<(), Problem> {
        // Re-read: stage 1.2 may have stored the echo meanwhile.
        let scope = StateKey::Lead(link.key.clone()).scope();
        let last = self.state.get_state(&scope).await.map_err(store_problem)?;
        let merged = match &last {
            Some(l) => merge_keep(canonical, &l.data),
            None => canonical.clone(),
        };
        let merged_key = LeadKey::of_value(&merged).hash();
        if merged_key != key_hash {
            let target = EchoTarget::Lead(crm_id.to_owned());
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::http::router::{InboundRoute, RouteParams};
    use crate::inbound::leads::test_kit::{FakeEnerflo, good, post, req, route, setup};
    use crate::store::XrefStore;
    use crate::store::embedded::EmbeddedStore;

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
