//! Stage 1.2: v1 `new_customer` / `update_customer`, v2 `customer.created` /
//! `customer.updated.v2` -> `lead.upserted` to the CRM, run by [`crate::pipeline::Pipeline`].
//!
//! Every id form an event carries is linked (v1 id, v2 UUID, the integration record id), so a
//! lead created from the CRM (stage 1.1) comes back to its CRM record. What is pushed is the
//! event merged over the last synced state (a blank never overwrites a known value), and only
//! when that differs from the last synced state; a copy that is our own stage-1.1 write echoing
//! back is dropped; a thin copy of a customer never synced is skipped (Enerflo sends
//! `customer.created` two or three times within a second, some copies nearly empty).

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::canonical::{CrmEventType, EnerfloRefs};
use crate::config::LeadFields;
use crate::consumer::OutcomeKind;
use crate::crm::CrmAck;
use crate::error::SyncError;
use crate::mapping::lead::{CustomerEvent, LeadKey, is_thin, merge_keep, state_hash};
use crate::pipeline::{
    Decision, EntityKeys, Kit, OutboundStage, Push, ReadError, Remember, StageMessage,
};
use crate::registry::Stage;
use crate::store::{EntityKind, EntityLink, IdForm, IdRef, SyncState};
use crate::sync::{Direction, EchoTarget, StateKey};

pub struct LeadsStage {
    pub fields: LeadFields,
}

/// A customer event, then what `resolve` linked.
pub struct LeadEvent {
    pub source_event: String,
    pub customer: CustomerEvent,
    /// Every id form the event carries, the integration record id first (when ids disagree, the
    /// entity the CRM id belongs to wins).
    pub ids: Vec<IdRef>,
    /// The customer as the event names it (its first non-integration id), for outcomes.
    pub customer_key: String,
    /// The customer entity, linked by `resolve`; `None` for a thin copy of a customer never
    /// synced, which is not linked and is skipped by `decide`.
    pub link: Option<EntityLink>,
}

fn thin(customer: &str) -> Decision {
    Decision::skip(
        OutcomeKind::Incomplete,
        format!(
            "{customer}: no name or no contact data and never synced; waiting for a fuller copy"
        ),
    )
}

#[async_trait]
impl OutboundStage for LeadsStage {
    type Event = LeadEvent;

    fn stage(&self) -> Stage {
        Stage::Leads
    }

    fn read(&self, msg: &StageMessage<'_>) -> Result<LeadEvent, ReadError> {
        let envelope = msg.envelope()?;
        if !matches!(
            envelope.event.as_str(),
            "new_customer"
                | "update_customer"
                | "customer.created"
                | "customer.updated.v2"
                | "customer.updated"
        ) {
            return Err(ReadError::WrongStage {
                stage: Stage::Leads,
                event: envelope.event,
            });
        }
        let customer = CustomerEvent::from_envelope(&envelope, &self.fields);
        let mut ids = Vec::new();
        if let Some(ext) = &customer.ids.external_id {
            ids.push(IdRef::new(IdForm::Integration, ext));
        }
        if let Some(id) = customer.ids.customer_id {
            ids.push(IdRef::new(IdForm::CustomerId, id));
        }
        if let Some(uuid) = &customer.ids.customer_uuid {
            ids.push(IdRef::new(IdForm::CustomerUuid, uuid));
        }
        let Some(customer_key) = ids
            .iter()
            .find(|id| id.form != IdForm::Integration)
            .map(IdRef::key)
        else {
            return Err(ReadError::Missing {
                event: envelope.event,
                what: vec!["no customer id (v1 `id` or v2 `customer.id`)".to_owned()],
            });
        };
        Ok(LeadEvent {
            source_event: envelope.event,
            customer,
            ids,
            customer_key,
            link: None,
        })
    }

    async fn resolve(
        &self,
        kit: &Kit,
        _msg: &StageMessage<'_>,
        ev: &mut LeadEvent,
    ) -> Result<EntityKeys, SyncError> {
        let mut known = None;
        for id in &ev.ids {
            if let Some(link) = kit.xref.resolve(EntityKind::Customer, id).await? {
                known = Some(link);
                break;
            }
        }
        let key_hash = LeadKey::of(&ev.customer.lead).hash();
        let mut bridged = false;
        if known.is_none()
            && ev.customer.ids.external_id.is_none()
            && let Some(crm_id) = written_by_us(kit, &key_hash).await?
        {
            // A lead we created from the CRM, echoing with only Enerflo's ids.
            ev.ids.insert(0, IdRef::new(IdForm::Integration, crm_id));
            bridged = true;
        }
        if known.is_none() && !bridged && is_thin(&ev.customer.lead) {
            // Nothing is linked for a thin copy of a customer never synced: `decide` skips it
            // (`link` stays `None`). The lease is the one its entity would have when linked by
            // this id alone.
            return Ok(EntityKeys::same(StateKey::Lead(ev.customer_key.clone())));
        }
        // An entity found by the event's first known id that already has every id of the event
        // is what linking them would give (and change nothing): no link needed.
        let link = match known {
            Some(known)
                if !bridged
                    && ev
                        .ids
                        .iter()
                        .all(|id| id.form != IdForm::Crm && known.ids.contains(&id.key())) =>
            {
                known
            }
            _ => kit.xref.link(EntityKind::Customer, &ev.ids).await?,
        };
        let keys = EntityKeys::same(StateKey::Lead(link.key.clone()));
        ev.link = Some(link);
        Ok(keys)
    }

    async fn decide(
        &self,
        kit: &Kit,
        msg: &StageMessage<'_>,
        ev: LeadEvent,
        last: Option<&SyncState>,
    ) -> Result<Decision, SyncError> {
        let Some(link) = ev.link else {
            return Ok(thin(&ev.customer_key));
        };
        // Re-read under the lease: another worker may have set the CRM id meanwhile.
        let link = match IdRef::parse_key(&link.key) {
            Some(id) => kit
                .xref
                .resolve(EntityKind::Customer, &id)
                .await?
                .unwrap_or(link),
            None => link,
        };
        let who = format!("customer entity {}", link.key);
        if last.is_none() && is_thin(&ev.customer.lead) {
            return Ok(thin(&link.key));
        }
        let fresh = serde_json::to_value(&ev.customer.lead).unwrap_or(Value::Null);
        let merged = match last {
            Some(l) => merge_keep(&fresh, &l.data),
            None => fresh,
        };
        let hash = state_hash(&merged);
        let merged_key = LeadKey::of_value(&merged).hash();

        if last.is_some_and(|l| l.hash == hash) {
            return Ok(Decision::skip(
                OutcomeKind::Unchanged,
                format!("{who}: no mapped field changed"),
            ));
        }
        // Our own stage-1.1 write coming back: drop it, but remember what Enerflo added (its
        // timezone, coordinates) as synced, so it is not pushed later either.
        //
        // The check is `fingerprinted`, not `is_ours`: stage 1.1 (`crate::inbound::leads`)
        // records only fingerprints for `enerflo:lead:<crm id>`, no last-write marker, so
        // `is_ours` would answer the same today; what guards a change made back to an old value
        // (A -> B -> A in Enerflo) here is `last_agrees`: the last synced state must already
        // have this content's key.
        let last_agrees = last.is_none_or(|l| LeadKey::of_value(&l.data).hash() == merged_key);
        if last_agrees {
            for crm_id in crm_ids(&link) {
                if kit
                    .echo
                    .fingerprinted(
                        Direction::ToEnerflo,
                        &EchoTarget::Lead(crm_id.clone()),
                        std::slice::from_ref(&merged_key),
                    )
                    .await?
                {
                    return Ok(Decision::Skip {
                        outcome: OutcomeKind::Echo,
                        detail: format!("{who}: our own write for CRM record {crm_id}"),
                        remember: Some(Remember { hash, data: merged }),
                    });
                }
            }
        }

        let enerflo = EnerfloRefs {
            customer_id: link
                .id(IdForm::CustomerId)
                .and_then(|v| v.parse().ok())
                .or(ev.customer.ids.customer_id),
            customer_uuid: link
                .id(IdForm::CustomerUuid)
                .or_else(|| ev.customer.ids.customer_uuid.clone()),
            ..EnerfloRefs::default()
        };
        // Fingerprint first (the pipeline records it before delivering): the CRM's automation
        // may call POST /crm/leads back before we return. A CRM id learnt from the answer is
        // fingerprinted in `delivered`.
        let echo = link
            .crm_id
            .clone()
            .map(|crm_id| (EchoTarget::Lead(crm_id), vec![merged_key]));
        Ok(Decision::Push(Box::new(Push {
            event_type: CrmEventType::LeadUpserted,
            source_event: ev.source_event,
            occurred_at: ev.customer.occurred_at.clone(),
            kind: EntityKind::Customer,
            link,
            enerflo,
            data: merged.clone(),
            raw: kit.include_raw.then(|| {
                json!({"webhook": serde_json::from_str::<Value>(msg.body).unwrap_or(Value::Null)})
            }),
            remember: Remember { hash, data: merged },
            echo,
            subject: who,
        })))
    }

    async fn delivered(
        &self,
        kit: &Kit,
        push: &Push,
        crm_id: Option<&str>,
        _ack: &CrmAck,
    ) -> Result<(), SyncError> {
        // The CRM named a contact the link did not have (now adopted): fingerprint what was
        // pushed under it too, so its automation sending it back is recognised by stage 1.1.
        if let Some(id) = crm_id
            && push.link.crm_id.as_deref() != Some(id)
        {
            kit.echo
                .record_fingerprints(
                    Direction::ToCrm,
                    &EchoTarget::Lead(id.to_owned()),
                    &[LeadKey::of_value(&push.data).hash()],
                )
                .await?;
        }
        Ok(())
    }
}

/// The CRM id a lead with this key was written to Enerflo for, while that write is recent
/// enough to echo (the fingerprint's TTL).
async fn written_by_us(kit: &Kit, key_hash: &str) -> Result<Option<String>, SyncError> {
    let Some(written) = kit
        .state
        .get_state(&StateKey::LeadWritten(key_hash.to_owned()).scope())
        .await?
    else {
        return Ok(None);
    };
    let Some(crm_id) = written.data.get("crm_id").and_then(Value::as_str) else {
        return Ok(None);
    };
    Ok(kit
        .echo
        .fingerprinted(
            Direction::ToEnerflo,
            &EchoTarget::Lead(crm_id.to_owned()),
            &[key_hash.to_owned()],
        )
        .await?
        .then(|| crm_id.to_owned()))
}

/// The CRM ids an entity is known by: its CRM contact and the integration record ids Enerflo
/// holds for it (stage 1.1 writes the CRM id there).
fn crm_ids(link: &EntityLink) -> BTreeSet<String> {
    link.crm_id
        .iter()
        .cloned()
        .chain(
            link.ids
                .iter()
                .filter_map(|k| IdRef::parse_key(k))
                .filter(|r| matches!(r.form, IdForm::Integration | IdForm::Crm))
                .map(|r| r.value),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::canonical::CrmEvent;
    use crate::consumer::{Outcome, StageHandler};
    use crate::crm::{CrmConnector, CrmError};
    use crate::pipeline::Pipeline;
    use crate::queue::MessageMeta;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{EchoStore, SyncStateStore, XrefStore};

    const V1_NEW: &str = include_str!("../../../tests/fixtures/enerflo/v1-new_customer.json");
    const V1_UPDATE: &str = include_str!("../../../tests/fixtures/enerflo/v1-update_customer.json");
    const V2_CREATED: &str =
        include_str!("../../../tests/fixtures/enerflo/v2-customer.created.json");
    const V2_UPDATED: &str =
        include_str!("../../../tests/fixtures/enerflo/v2-customer.updated.v2.json");
    const UUID: &str = "00000000-0000-4000-8000-000000000003";

    /// CRM double: records events, answers a stable contact id per Enerflo customer.
    #[derive(Default)]
    struct FakeCrm {
        events: Mutex<Vec<CrmEvent>>,
    }

    #[async_trait]
    impl CrmConnector for FakeCrm {
        async fn deliver(&self, event: &CrmEvent) -> Result<CrmAck, CrmError> {
            self.events.lock().unwrap().push(event.clone());
            Ok(CrmAck {
                status: 200,
                crm_id: Some(
                    event
                        .crm_id
                        .clone()
                        .unwrap_or_else(|| "crm-contact-1".into()),
                ),
            })
        }
    }

    struct World {
        crm: Arc<FakeCrm>,
        store: Arc<EmbeddedStore>,
        stage: Pipeline<LeadsStage>,
    }

    impl World {
        fn new() -> Self {
            let crm = Arc::new(FakeCrm::default());
            let store = Arc::new(EmbeddedStore::in_memory().unwrap());
            let kit = Kit::new(
                crm.clone(),
                store.clone(),
                store.clone(),
                store.clone(),
                store.clone(),
                Duration::from_secs(3600),
                false,
            );
            let stage = Pipeline::new(
                LeadsStage {
                    fields: LeadFields::default(),
                },
                kit,
            );
            Self { crm, store, stage }
        }

        async fn deliver(&self, body: &str) -> Outcome {
            let env = crate::enerflo::envelope::Envelope::parse(body.as_bytes(), None).unwrap();
            let meta = MessageMeta {
                stage: Stage::Leads,
                event: env.event,
                dedupe_key: "k".into(),
                group: "customer:x".into(),
                received_at: "2025-03-01T00:00:00Z".into(),
            };
            self.stage.handle(&meta, body, 1).await.expect("handled")
        }

        fn writes(&self) -> Vec<CrmEvent> {
            self.crm.events.lock().unwrap().clone()
        }
    }

    fn with(body: &str, edit: impl FnOnce(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(body).unwrap();
        edit(&mut v);
        v.to_string()
    }

    #[tokio::test]
    async fn v1_new_customer_becomes_a_lead_upserted() {
        let w = World::new();
        assert_eq!(w.deliver(V1_NEW).await.status, "delivered");
        let e = &w.writes()[0];
        assert_eq!(e.event_type, CrmEventType::LeadUpserted);
        assert_eq!(e.source_event, "new_customer");
        assert_eq!(e.crm_id, None);
        assert_eq!(e.enerflo.customer_id, Some(900001));
        assert_eq!(e.occurred_at, "2025-01-01T12:00:00Z");
        assert_eq!(
            e.data,
            json!({"first_name": "Pat", "last_name": "Placeholder",
                "email": "pat.placeholder@example.com", "phone": "(555) 010-0000",
                "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX",
                    "zip": "75001", "country": null, "lat": 32.0, "lng": -97.0},
                "lead_source": null, "timezone": "America/Chicago", "owner": null})
        );
    }

    #[tokio::test]
    async fn v1_update_customer_of_an_unknown_customer_is_pushed_and_an_unchanged_one_is_not() {
        let w = World::new();
        assert_eq!(w.deliver(V1_UPDATE).await.status, "delivered");
        assert_eq!(w.writes()[0].source_event, "update_customer");
        assert_eq!(w.writes()[0].occurred_at, "2025-01-02T09:30:00Z");
        assert_eq!(w.deliver(V1_NEW).await.status, "unchanged");
        let moved = with(V1_UPDATE, |v| v["address"]["zip"] = json!(75002));
        assert_eq!(w.deliver(&moved).await.status, "delivered");
        let writes = w.writes();
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[1].data["address"]["zip"], "75002");
        assert_eq!(
            writes[1].crm_id.as_deref(),
            Some("crm-contact-1"),
            "the second push targets the linked contact"
        );
    }

    #[tokio::test]
    async fn v2_customer_created_becomes_a_lead_upserted() {
        let w = World::new();
        assert_eq!(w.deliver(V2_CREATED).await.status, "delivered");
        let e = &w.writes()[0];
        assert_eq!(e.source_event, "customer.created");
        assert_eq!(e.enerflo.customer_uuid.as_deref(), Some(UUID));
        assert_eq!(e.enerflo.customer_id, None);
        assert_eq!(e.occurred_at, "2025-03-01T00:00:00Z", "received time");
        assert_eq!(
            e.data,
            json!({"first_name": "Pat", "last_name": "Placeholder",
                "email": "pat.placeholder@example.com", "phone": "5550100000",
                "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX",
                    "zip": "75001", "country": null, "lat": null, "lng": null},
                "lead_source": null, "timezone": null, "owner": null})
        );
    }

    #[tokio::test]
    async fn v2_customer_updated_maps_current_and_pushes_only_real_changes() {
        let w = World::new();
        // an unknown customer's update is its first sync
        assert_eq!(w.deliver(V2_UPDATED).await.status, "delivered");
        let e = &w.writes()[0];
        assert_eq!(e.source_event, "customer.updated.v2");
        assert_eq!(e.data["email"], "pat.placeholder@example.com");
        // same mapped fields, different previous/changes/status: no write
        let noise = with(V2_UPDATED, |v| {
            v["payload"]["changes"] = json!({"status": "INACTIVE"});
            v["payload"]["current"]["status"] = json!("INACTIVE");
            v["payload"]["previous"]["email"] = json!("someone@example.com");
        });
        assert_eq!(w.deliver(&noise).await.status, "unchanged");
        assert_eq!(w.deliver(V2_CREATED).await.status, "unchanged");
        // a real change is pushed to the linked contact
        let phone = with(V2_UPDATED, |v| {
            v["payload"]["current"]["phone"] = json!("5550109999");
            v["payload"]["current"]["mobile"] = json!("5550109999");
        });
        assert_eq!(w.deliver(&phone).await.status, "delivered");
        let writes = w.writes();
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[1].data["phone"], "5550109999");
        assert_eq!(writes[1].crm_id.as_deref(), Some("crm-contact-1"));
        assert_ne!(writes[0].id, writes[1].id);
    }

    fn near_empty() -> String {
        with(V2_CREATED, |v| {
            let c = &mut v["payload"]["customer"];
            for k in ["firstName", "lastName", "email", "phone", "mobile"] {
                c[k] = Value::Null;
            }
            c["address"] = json!({"line1": null, "city": null, "state": null,
                "postalCode": null, "lat": null, "lng": null});
        })
    }

    #[tokio::test]
    async fn a_burst_with_a_near_empty_copy_first_writes_once_with_full_data() {
        let w = World::new();
        let outcomes = [
            w.deliver(&near_empty()).await.status,
            w.deliver(V2_CREATED).await.status,
            w.deliver(V2_CREATED).await.status,
        ];
        assert_eq!(outcomes, ["incomplete", "delivered", "unchanged"]);
        let writes = w.writes();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].data["email"], "pat.placeholder@example.com");
    }

    #[tokio::test]
    async fn a_thin_copy_of_an_unknown_customer_links_nothing() {
        let w = World::new();
        assert_eq!(w.deliver(&near_empty()).await.status, "incomplete");
        let linked = w
            .store
            .resolve(
                EntityKind::Customer,
                &IdRef::new(IdForm::CustomerUuid, UUID),
            )
            .await
            .unwrap();
        assert!(linked.is_none(), "{linked:?}");
        assert!(w.writes().is_empty());
    }

    #[tokio::test]
    async fn a_push_to_a_linked_contact_is_fingerprinted_under_it() {
        let w = World::new();
        assert_eq!(w.deliver(V2_CREATED).await.status, "delivered");
        let phone = with(V2_CREATED, |v| {
            v["payload"]["customer"]["phone"] = json!("5550109999");
            v["payload"]["customer"]["mobile"] = json!("5550109999");
        });
        assert_eq!(w.deliver(&phone).await.status, "delivered");
        let pushed = LeadKey::of_value(&w.writes()[1].data).hash();
        assert!(
            w.store
                .is_echo(
                    &EchoTarget::Lead("crm-contact-1".into()).written(Direction::ToCrm),
                    &pushed
                )
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_near_empty_copy_after_the_full_one_never_blanks_the_crm() {
        let w = World::new();
        assert_eq!(w.deliver(V2_CREATED).await.status, "delivered");
        assert_eq!(w.deliver(&near_empty()).await.status, "unchanged");
        // a copy with only some fields blank is merged: still nothing new
        let partial = with(V2_CREATED, |v| {
            v["payload"]["customer"]["email"] = json!("")
        });
        assert_eq!(w.deliver(&partial).await.status, "unchanged");
        assert_eq!(w.writes().len(), 1);
    }

    #[tokio::test]
    async fn an_event_without_a_customer_id_is_a_permanent_failure() {
        let w = World::new();
        let body = r#"{"event":"customer.created","payload":{"customer":{"firstName":"Pat"}}}"#;
        let meta = MessageMeta {
            stage: Stage::Leads,
            event: "customer.created".into(),
            dedupe_key: "k".into(),
            group: "unidentified:x".into(),
            received_at: String::new(),
        };
        let err = w.stage.handle(&meta, body, 1).await.expect_err("fails");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("no customer id"), "{err}");
    }

    /// What stage 1.1 leaves behind after creating lead `crm-lead-0001` as Enerflo customer
    /// 900001 from the values of the v1 fixture.
    async fn crm_created_lead(w: &World) {
        use crate::inbound::leads::LeadRequest;
        let lead = LeadRequest::parse(
            json!({"crm_id": "crm-lead-0001", "first_name": "Pat", "last_name": "Placeholder",
                "email": "pat.placeholder@example.com", "mobile": "5550100000",
                "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX", "zip": "75001"}})
            .as_object()
            .unwrap(),
        )
        .unwrap();
        let canonical = serde_json::to_value(lead.canonical()).unwrap();
        let key = LeadKey::of_value(&canonical).hash();
        let link = w
            .store
            .link(
                EntityKind::Customer,
                &[
                    IdRef::new(IdForm::Integration, "crm-lead-0001"),
                    IdRef::new(IdForm::Crm, "crm-lead-0001"),
                ],
            )
            .await
            .unwrap();
        w.store
            .record_write(
                &EchoTarget::Lead("crm-lead-0001".into()).written(Direction::ToEnerflo),
                &key,
                3600,
            )
            .await
            .unwrap();
        w.store
            .put_state(
                &StateKey::LeadWritten(key.clone()).scope(),
                &SyncState {
                    hash: key.clone(),
                    data: json!({"crm_id": "crm-lead-0001"}),
                    updated_at: String::new(),
                    seq: 0,
                },
            )
            .await
            .unwrap();
        w.store
            .link(
                EntityKind::Customer,
                &[
                    IdRef::new(IdForm::Integration, "crm-lead-0001"),
                    IdRef::new(IdForm::CustomerId, 900001),
                ],
            )
            .await
            .unwrap();
        w.store
            .put_state(
                &StateKey::Lead(link.key.clone()).scope(),
                &SyncState {
                    hash: state_hash(&canonical),
                    data: canonical,
                    updated_at: String::new(),
                    seq: 0,
                },
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn our_crm_lead_echoing_as_new_customer_writes_nothing_and_keeps_what_enerflo_added() {
        let w = World::new();
        crm_created_lead(&w).await;
        let echo = with(V1_NEW, |v| v["external_id"] = json!("crm-lead-0001"));
        assert_eq!(w.deliver(&echo).await.status, "echo");
        // the same echo without its external id is found by the v1 id linked by stage 1.1
        assert_eq!(w.deliver(V1_NEW).await.status, "unchanged");
        // and as v2, with only a UUID we never saw, by its content (its phone is only formatted
        // differently)
        assert_eq!(w.deliver(V2_CREATED).await.status, "unchanged");
        assert!(w.writes().is_empty());
        let by_uuid = w
            .store
            .resolve(
                EntityKind::Customer,
                &IdRef::new(IdForm::CustomerUuid, UUID),
            )
            .await
            .unwrap()
            .expect("linked");
        assert_eq!(by_uuid.crm_id.as_deref(), Some("crm-lead-0001"));
        // a real change in Enerflo later goes to the CRM record the lead came from
        let changed = with(V1_UPDATE, |v| v["email"] = json!("pat.new@example.com"));
        assert_eq!(w.deliver(&changed).await.status, "delivered");
        let writes = w.writes();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].crm_id.as_deref(), Some("crm-lead-0001"));
        assert_eq!(writes[0].enerflo.customer_id, Some(900001));
        assert_eq!(writes[0].enerflo.customer_uuid.as_deref(), Some(UUID));
        assert_eq!(
            writes[0].data["timezone"], "America/Chicago",
            "what the echo added is known"
        );
    }

    #[tokio::test]
    async fn our_crm_lead_echoing_as_v2_customer_created_is_linked_by_content_and_writes_nothing() {
        let w = World::new();
        crm_created_lead(&w).await;
        let outcome = w.deliver(V2_CREATED).await.status;
        assert!(outcome == "echo" || outcome == "unchanged", "{outcome}");
        assert!(w.writes().is_empty());
        let by_uuid = w
            .store
            .resolve(
                EntityKind::Customer,
                &IdRef::new(IdForm::CustomerUuid, UUID),
            )
            .await
            .unwrap()
            .expect("linked");
        assert_eq!(by_uuid.crm_id.as_deref(), Some("crm-lead-0001"));
    }

    #[tokio::test]
    async fn an_echo_that_beats_enerflos_answer_is_still_recognised() {
        // GIVEN stage 1.1 linked the CRM id and fingerprinted the lead, but lead/add has not
        // answered yet (no Enerflo id linked, no state)
        let w = World::new();
        let lead = json!({"first_name": "Pat", "last_name": "Placeholder",
            "email": "pat.placeholder@example.com", "phone": "5550100000",
            "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX",
                "zip": "75001", "country": null, "lat": null, "lng": null},
            "lead_source": null, "timezone": null, "owner": null});
        let key = LeadKey::of_value(&lead).hash();
        w.store
            .link(
                EntityKind::Customer,
                &[
                    IdRef::new(IdForm::Integration, "crm-lead-0001"),
                    IdRef::new(IdForm::Crm, "crm-lead-0001"),
                ],
            )
            .await
            .unwrap();
        w.store
            .record_write(
                &EchoTarget::Lead("crm-lead-0001".into()).written(Direction::ToEnerflo),
                &key,
                3600,
            )
            .await
            .unwrap();
        w.store
            .put_state(
                &StateKey::LeadWritten(key.clone()).scope(),
                &SyncState {
                    hash: key.clone(),
                    data: json!({"crm_id": "crm-lead-0001"}),
                    updated_at: String::new(),
                    seq: 0,
                },
            )
            .await
            .unwrap();
        // WHEN Enerflo's new_customer arrives (without external_id)
        assert_eq!(w.deliver(V1_NEW).await.status, "echo");
        // THEN nothing is written and the v1 id joins the CRM's entity
        assert!(w.writes().is_empty());
        let link = w
            .store
            .resolve(
                EntityKind::Customer,
                &IdRef::new(IdForm::CustomerId, 900001),
            )
            .await
            .unwrap()
            .expect("linked");
        assert_eq!(link.crm_id.as_deref(), Some("crm-lead-0001"));
    }

    #[tokio::test]
    async fn the_echo_of_a_push_reverted_in_enerflo_is_a_change_not_an_echo() {
        let w = World::new();
        crm_created_lead(&w).await;
        // Enerflo changes the e-mail (pushed), then changes it back to what the CRM sent us
        let changed = with(V1_UPDATE, |v| v["email"] = json!("pat.new@example.com"));
        assert_eq!(w.deliver(&changed).await.status, "delivered");
        assert_eq!(w.deliver(V1_UPDATE).await.status, "delivered");
        assert_eq!(w.writes().len(), 2);
    }

    #[tokio::test]
    async fn a_delivery_links_the_crm_contact_and_fingerprints_what_was_pushed() {
        let w = World::new();
        w.deliver(V1_NEW).await;
        let link = w
            .store
            .resolve(
                EntityKind::Customer,
                &IdRef::new(IdForm::Crm, "crm-contact-1"),
            )
            .await
            .unwrap()
            .expect("linked");
        assert_eq!(link.id(IdForm::CustomerId).as_deref(), Some("900001"));
        let pushed = LeadKey::of_value(&w.writes()[0].data).hash();
        assert!(
            w.store
                .is_echo(
                    &EchoTarget::Lead("crm-contact-1".into()).written(Direction::ToCrm),
                    &pushed
                )
                .await
                .unwrap()
        );
    }
}
