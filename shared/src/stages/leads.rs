//! Stage 1.2: v1 `new_customer` / `update_customer`, v2 `customer.created` /
//! `customer.updated.v2` -> `lead.upserted` to the CRM.
//!
//! Every id form an event carries is linked (v1 id, v2 UUID, the integration record id), so a
//! lead created from the CRM (stage 1.1) comes back to its CRM record. What is pushed is the
//! event merged over the last synced state (a blank never overwrites a known value), and only
//! when that differs from the last synced state; a copy that is our own stage-1.1 write echoing
//! back is dropped; a thin copy of a customer never synced is skipped (Enerflo sends
//! `customer.created` two or three times within a second, some copies nearly empty).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::lock::EntityLock;
use crate::canonical::{CrmEvent, CrmEventType, EnerfloRefs};
use crate::config::LeadFields;
use crate::consumer::{Outcome, OutcomeKind, StageHandler};
use crate::crm::CrmConnector;
use crate::enerflo::envelope::Envelope;
use crate::error::SyncError;
use crate::hashing::sha256_hex;
use crate::mapping::lead::{
    CustomerEvent, LeadKey, crm_target, enerflo_target, is_thin, merge_keep, state_hash,
    state_scope, written_scope,
};
use crate::queue::MessageMeta;
use crate::store::{
    ClaimStore, EchoStore, EntityKind, EntityLink, IdForm, IdRef, SyncState, SyncStateStore,
    XrefStore,
};
use crate::timefmt::now_rfc3339;

pub struct LeadsStage {
    pub crm: Arc<dyn CrmConnector>,
    pub xref: Arc<dyn XrefStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub state: Arc<dyn SyncStateStore>,
    pub echo: Arc<dyn EchoStore>,
    pub fields: LeadFields,
    pub include_raw: bool,
    pub echo_ttl: Duration,
}

#[async_trait]
impl StageHandler for LeadsStage {
    async fn handle(
        &self,
        meta: &MessageMeta,
        body: &str,
        _attempt: u32,
    ) -> Result<Outcome, SyncError> {
        let envelope = Envelope::parse(body.as_bytes(), Some(&meta.event))
            .map_err(|e| SyncError::permanent(format!("{} body unreadable: {e}", meta.event)))?;
        if !matches!(
            envelope.event.as_str(),
            "new_customer"
                | "update_customer"
                | "customer.created"
                | "customer.updated.v2"
                | "customer.updated"
        ) {
            return Err(SyncError::permanent(format!(
                "the leads stage does not handle `{}`",
                envelope.event
            )));
        }
        let event = CustomerEvent::from_envelope(&envelope, &self.fields);

        // Every id form, the integration record id first: when ids disagree, the entity the CRM
        // id belongs to wins.
        let mut ids = Vec::new();
        if let Some(ext) = &event.ids.external_id {
            ids.push(IdRef::new(IdForm::Integration, ext));
        }
        if let Some(id) = event.ids.customer_id {
            ids.push(IdRef::new(IdForm::CustomerId, id));
        }
        if let Some(uuid) = &event.ids.customer_uuid {
            ids.push(IdRef::new(IdForm::CustomerUuid, uuid));
        }
        let Some(customer) = ids
            .iter()
            .find(|id| id.form != IdForm::Integration)
            .map(IdRef::key)
        else {
            return Err(SyncError::permanent(format!(
                "{}: no customer id (v1 `id` or v2 `customer.id`)",
                envelope.event
            )));
        };

        let mut known = None;
        for id in &ids {
            if let Some(link) = self.xref.resolve(EntityKind::Customer, id).await? {
                known = Some(link);
                break;
            }
        }
        let key_hash = LeadKey::of(&event.lead).hash();
        let mut bridged = false;
        if known.is_none()
            && event.ids.external_id.is_none()
            && let Some(crm_id) = self.written_by_us(&key_hash).await?
        {
            // A lead we created from the CRM, echoing with only Enerflo's ids.
            ids.insert(0, IdRef::new(IdForm::Integration, crm_id));
            bridged = true;
        }
        if known.is_none() && !bridged && is_thin(&event.lead) {
            return Ok(thin(&customer));
        }

        let link = self.xref.link(EntityKind::Customer, &ids).await?;
        let lock = EntityLock::acquire(
            &self.claims,
            &format!("lead#{}", link.key),
            Duration::from_secs(60),
        )
        .await?;
        let result = self.sync(&envelope, &event, link, meta, body).await;
        lock.release().await;
        result
    }
}

fn thin(customer: &str) -> Outcome {
    Outcome::new(
        OutcomeKind::Incomplete,
        format!(
            "{customer}: no name or no contact data and never synced; waiting for a fuller copy"
        ),
    )
}

impl LeadsStage {
    /// The CRM id a lead with this key was written to Enerflo for, while that write is recent
    /// enough to echo (the fingerprint's TTL).
    async fn written_by_us(&self, key_hash: &str) -> Result<Option<String>, SyncError> {
        let Some(written) = self.state.get_state(&written_scope(key_hash)).await? else {
            return Ok(None);
        };
        let Some(crm_id) = written.data.get("crm_id").and_then(Value::as_str) else {
            return Ok(None);
        };
        Ok(self
            .echo
            .is_echo(&enerflo_target(crm_id), key_hash)
            .await?
            .then(|| crm_id.to_owned()))
    }

    async fn sync(
        &self,
        envelope: &Envelope,
        event: &CustomerEvent,
        link: EntityLink,
        meta: &MessageMeta,
        body: &str,
    ) -> Result<Outcome, SyncError> {
        // Re-read under the lock: another worker may have set the CRM id meanwhile.
        let link = match IdRef::parse_key(&link.key) {
            Some(id) => self
                .xref
                .resolve(EntityKind::Customer, &id)
                .await?
                .unwrap_or(link),
            None => link,
        };
        let who = format!("customer entity {}", link.key);
        let scope = state_scope(&link.key);
        let last = self.state.get_state(&scope).await?;
        if last.is_none() && is_thin(&event.lead) {
            return Ok(thin(&link.key));
        }
        let fresh = serde_json::to_value(&event.lead).unwrap_or(Value::Null);
        let merged = match &last {
            Some(l) => merge_keep(&fresh, &l.data),
            None => fresh,
        };
        let hash = state_hash(&merged);
        let merged_key = LeadKey::of_value(&merged).hash();

        if last.as_ref().is_some_and(|l| l.hash == hash) {
            return Ok(Outcome::new(
                OutcomeKind::Unchanged,
                format!("{who}: no mapped field changed"),
            ));
        }
        // Our own stage-1.1 write coming back: drop it, but remember what Enerflo added (its
        // timezone, coordinates) as synced, so it is not pushed later either.
        let last_agrees = last
            .as_ref()
            .is_none_or(|l| LeadKey::of_value(&l.data).hash() == merged_key);
        if last_agrees {
            for crm_id in crm_ids(&link) {
                if self
                    .echo
                    .is_echo(&enerflo_target(&crm_id), &merged_key)
                    .await?
                {
                    self.put(&scope, hash, merged).await?;
                    return Ok(Outcome::new(
                        OutcomeKind::Echo,
                        format!("{who}: our own write for CRM record {crm_id}"),
                    ));
                }
            }
        }

        let refs = EnerfloRefs {
            customer_id: link
                .id(IdForm::CustomerId)
                .and_then(|v| v.parse().ok())
                .or(event.ids.customer_id),
            customer_uuid: link
                .id(IdForm::CustomerUuid)
                .or_else(|| event.ids.customer_uuid.clone()),
            ..EnerfloRefs::default()
        };
        let crm_event = CrmEvent {
            event_type: CrmEventType::LeadUpserted,
            id: format!(
                "evt_{}",
                &sha256_hex(format!("lead.upserted|{}|{hash}", link.key).as_bytes())[..32]
            ),
            occurred_at: event
                .occurred_at
                .clone()
                .or_else(|| Some(meta.received_at.clone()).filter(|s| !s.is_empty()))
                .unwrap_or_else(now_rfc3339),
            source_event: envelope.event.clone(),
            crm_id: link.crm_id.clone(),
            enerflo: refs,
            data: merged.clone(),
            raw: self.include_raw.then(
                || json!({"webhook": serde_json::from_str::<Value>(body).unwrap_or(Value::Null)}),
            ),
        };

        // Fingerprint first: the CRM's automation may call POST /crm/leads back before we return.
        let ttl = self.echo_ttl.as_secs();
        if let Some(crm_id) = &link.crm_id {
            self.echo
                .record_write(&crm_target(crm_id), &merged_key, ttl)
                .await?;
        }
        let ack = self.crm.deliver(&crm_event).await?;
        let crm_id = match &ack.crm_id {
            Some(id) if link.crm_id.as_deref() != Some(id.as_str()) => {
                self.xref
                    .set_crm_id(EntityKind::Customer, &link.key, id)
                    .await?;
                self.echo
                    .record_write(&crm_target(id), &merged_key, ttl)
                    .await?;
                Some(id.clone())
            }
            Some(id) => Some(id.clone()),
            None => link.crm_id.clone(),
        };
        self.put(&scope, hash, merged).await?;
        Ok(Outcome::new(
            OutcomeKind::Delivered,
            format!(
                "lead.upserted for {who} (crm_id {}, event {})",
                crm_id.as_deref().unwrap_or("none"),
                crm_event.id
            ),
        ))
    }

    async fn put(&self, scope: &str, hash: String, data: Value) -> Result<(), SyncError> {
        self.state
            .put_state(
                scope,
                &SyncState {
                    hash,
                    data,
                    updated_at: now_rfc3339(),
                    seq: 0,
                },
            )
            .await?;
        Ok(())
    }
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

    use std::sync::Mutex;

    use super::*;
    use crate::classify::Stage;
    use crate::crm::{CrmAck, CrmError};
    use crate::store::embedded::EmbeddedStore;

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
        stage: LeadsStage,
    }

    impl World {
        fn new() -> Self {
            let crm = Arc::new(FakeCrm::default());
            let store = Arc::new(EmbeddedStore::in_memory().unwrap());
            let stage = LeadsStage {
                crm: crm.clone(),
                xref: store.clone(),
                claims: store.clone(),
                state: store.clone(),
                echo: store.clone(),
                fields: LeadFields::default(),
                include_raw: false,
                echo_ttl: Duration::from_secs(3600),
            };
            Self { crm, store, stage }
        }

        async fn deliver(&self, body: &str) -> Outcome {
            let env = Envelope::parse(body.as_bytes(), None).unwrap();
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
            .record_write(&enerflo_target("crm-lead-0001"), &key, 3600)
            .await
            .unwrap();
        w.store
            .put_state(
                &written_scope(&key),
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
                &state_scope(&link.key),
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
            .record_write(&enerflo_target("crm-lead-0001"), &key, 3600)
            .await
            .unwrap();
        w.store
            .put_state(
                &written_scope(&key),
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
                .is_echo(&crm_target("crm-contact-1"), &pushed)
                .await
                .unwrap()
        );
    }
}
