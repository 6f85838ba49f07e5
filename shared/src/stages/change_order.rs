//! Stage 6: v1 `signed_change_order` -> `change_order.signed` to the CRM: the system after the
//! change (panel type and count, batteries, adders) and what changed, from the latest complete
//! change order. The CRM project is found through the install id; an install not linked yet is
//! linked by this event (install, survey and customer ids from the payload) rather than failed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::lock::EntityLock;
use crate::canonical::{CrmEvent, CrmEventType, EnerfloRefs};
use crate::consumer::{Outcome, StageHandler};
use crate::crm::CrmConnector;
use crate::enerflo::envelope::Envelope;
use crate::enerflo::lenient::value_to_string;
use crate::error::SyncError;
use crate::hashing::{content_hash, sha256_hex};
use crate::mapping::change_order::{install_id, install_refs, map_change_order};
use crate::queue::MessageMeta;
use crate::store::{ClaimStore, EntityKind, IdForm, IdRef, SyncState, SyncStateStore, XrefStore};
use crate::timefmt::now_rfc3339;

pub struct ChangeOrderStage {
    pub crm: Arc<dyn CrmConnector>,
    pub xref: Arc<dyn XrefStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub state: Arc<dyn SyncStateStore>,
    pub include_raw: bool,
}

#[async_trait]
impl StageHandler for ChangeOrderStage {
    async fn handle(
        &self,
        meta: &MessageMeta,
        body: &str,
        _attempt: u32,
    ) -> Result<Outcome, SyncError> {
        let envelope = Envelope::parse(body.as_bytes(), Some(&meta.event))
            .map_err(|e| SyncError::permanent(format!("{} body unreadable: {e}", meta.event)))?;
        if envelope.event != "signed_change_order" {
            return Err(SyncError::permanent(format!(
                "the change order stage does not handle `{}`",
                envelope.event
            )));
        }
        let install = install_id(&envelope.record).ok_or_else(|| {
            SyncError::permanent(
                "signed_change_order: no install id (looked at install.id, id, change_orders[].epc_install_id)",
            )
        })?;
        let lock = EntityLock::acquire(
            &self.claims,
            &format!("change_order#install:{install}"),
            Duration::from_secs(60),
        )
        .await?;
        let result = self.sync(&envelope, install, meta).await;
        lock.release().await;
        result
    }
}

/// Unix seconds of an RFC 3339 time, for ordering.
fn unix(t: &str) -> Option<i64> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

impl ChangeOrderStage {
    async fn sync(
        &self,
        envelope: &Envelope,
        install: u64,
        meta: &MessageMeta,
    ) -> Result<Outcome, SyncError> {
        let record = &envelope.record;
        let data = map_change_order(record).map_err(|e| {
            SyncError::permanent(format!("signed_change_order for install {install}: {e}"))
        })?;
        let co_id = value_to_string(&data.change_order.id).unwrap_or_default();

        // Link before the write, creating the project entity when this install is new to us.
        let (survey, customer) = install_refs(record);
        let mut ids = vec![IdRef::new(IdForm::Install, install)];
        if let Some(s) = survey {
            ids.push(IdRef::new(IdForm::Survey, s));
        }
        let link = self.xref.link(EntityKind::Project, &ids).await?;
        if let Some(c) = customer {
            self.xref
                .link(EntityKind::Customer, &[IdRef::new(IdForm::CustomerId, c)])
                .await?;
        }

        let data_value = serde_json::to_value(&data).unwrap_or(Value::Null);
        let hash = content_hash(&data_value);
        let scope = format!("change_order#install:{install}");
        if let Some(last) = self.state.get_state(&scope).await? {
            if last.hash == hash {
                return Ok(Outcome::new(
                    "unchanged",
                    format!(
                        "change order {co_id} of install {install}: same content as last synced"
                    ),
                ));
            }
            let last_signed = last
                .data
                .pointer("/change_order/signed_at")
                .and_then(Value::as_str)
                .and_then(unix);
            if let (Some(last_signed), Some(this)) =
                (last_signed, unix(&data.change_order.signed_at))
                && this < last_signed
            {
                return Ok(Outcome::new(
                    "stale",
                    format!(
                        "change order {co_id} of install {install} was signed before the one already synced"
                    ),
                ));
            }
        }

        let num = |form| link.id(form).and_then(|v| v.parse::<u64>().ok());
        let event = CrmEvent {
            event_type: CrmEventType::ChangeOrderSigned,
            id: format!(
                "evt_{}",
                &sha256_hex(format!("change_order.signed|{install}|{co_id}|{hash}").as_bytes())
                    [..32]
            ),
            occurred_at: Some(data.change_order.signed_at.clone())
                .filter(|s| !s.is_empty())
                .or_else(|| Some(meta.received_at.clone()).filter(|s| !s.is_empty()))
                .unwrap_or_else(now_rfc3339),
            source_event: envelope.event.clone(),
            crm_id: link.crm_id.clone(),
            enerflo: EnerfloRefs {
                customer_id: customer,
                customer_uuid: None,
                deal_id: link.id(IdForm::Deal),
                install_id: Some(install),
                survey_id: survey.or_else(|| num(IdForm::Survey)),
            },
            data: data_value,
            raw: self.include_raw.then(|| json!({"webhook": record})),
        };

        let ack = self.crm.deliver(&event).await?;
        let crm_id = match &ack.crm_id {
            Some(id) if link.crm_id.as_deref() != Some(id.as_str()) => {
                self.xref
                    .set_crm_id(EntityKind::Project, &link.key, id)
                    .await?;
                Some(id.clone())
            }
            Some(id) => Some(id.clone()),
            None => link.crm_id.clone(),
        };
        self.state
            .put_state(
                &scope,
                &SyncState {
                    hash,
                    data: event.data.clone(),
                    updated_at: now_rfc3339(),
                },
            )
            .await?;
        Ok(Outcome::new(
            "delivered",
            format!(
                "change_order.signed {co_id} for install {install} (crm_id {}, event {})",
                crm_id.as_deref().unwrap_or("none"),
                event.id
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Stage;
    use crate::crm::{CrmAck, CrmError};
    use crate::store::embedded::EmbeddedStore;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeCrm {
        events: Mutex<Vec<CrmEvent>>,
    }

    #[async_trait]
    impl CrmConnector for FakeCrm {
        async fn deliver(&self, event: &CrmEvent) -> Result<CrmAck, CrmError> {
            self.events.lock().expect("lock").push(event.clone());
            Ok(CrmAck {
                status: 200,
                crm_id: Some("crm-proj-9".into()),
            })
        }
    }

    fn sample() -> Value {
        serde_json::from_str(include_str!(
            "../../../tests/fixtures/enerflo/v1-signed_change_order.json"
        ))
        .expect("fixture")
    }

    fn body(record: &Value) -> String {
        let mut v = record.clone();
        v["webhook_event"] = json!("signed_change_order");
        v.to_string()
    }

    fn meta() -> MessageMeta {
        MessageMeta {
            stage: Stage::ChangeOrder,
            event: "signed_change_order".into(),
            dedupe_key: "k".into(),
            group: "install:700001".into(),
            received_at: "2025-03-02T11:00:05Z".into(),
        }
    }

    fn kit() -> (ChangeOrderStage, Arc<FakeCrm>, Arc<EmbeddedStore>) {
        let store = Arc::new(EmbeddedStore::in_memory().expect("store"));
        let crm = Arc::new(FakeCrm::default());
        (
            ChangeOrderStage {
                crm: crm.clone(),
                xref: store.clone(),
                claims: store.clone(),
                state: store.clone(),
                include_raw: false,
            },
            crm,
            store,
        )
    }

    #[tokio::test]
    async fn an_unlinked_install_is_linked_by_the_change_order_and_gets_the_crm_id() {
        let (stage, crm, store) = kit();
        let out = stage
            .handle(&meta(), &body(&sample()), 1)
            .await
            .expect("ok");
        assert_eq!(out.status, "delivered");
        let events = crm.events.lock().expect("lock").clone();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.event_type, CrmEventType::ChangeOrderSigned);
        assert_eq!(e.crm_id, None);
        assert_eq!(e.occurred_at, "2025-03-02T11:00:00Z");
        assert_eq!(
            (
                e.enerflo.install_id,
                e.enerflo.survey_id,
                e.enerflo.customer_id
            ),
            (Some(700001), Some(4000001), Some(900001))
        );
        assert_eq!(e.data["panel_count"], json!(20));
        let link = store
            .resolve(EntityKind::Project, &IdRef::new(IdForm::Survey, 4000001))
            .await
            .expect("resolve")
            .expect("linked");
        assert_eq!(link.id(IdForm::Install).as_deref(), Some("700001"));
        assert_eq!(link.crm_id.as_deref(), Some("crm-proj-9"));
    }

    #[tokio::test]
    async fn a_repeat_of_the_same_change_order_writes_nothing_and_an_older_one_is_stale() {
        let (stage, crm, _) = kit();
        let mut newer = sample();
        newer["change_orders"][0]["id"] = json!(8000002);
        newer["change_orders"][0]["signed_at"] = json!("2025-04-01 08:00:00");
        let first = stage.handle(&meta(), &body(&newer), 1).await.expect("ok");
        let mut reordered = newer.clone();
        reordered["surveyData"] = json!({"unrelated": "change"});
        let repeat = stage
            .handle(&meta(), &body(&reordered), 1)
            .await
            .expect("ok");
        let older = stage
            .handle(&meta(), &body(&sample()), 1)
            .await
            .expect("ok");
        assert_eq!(
            (first.status, repeat.status, older.status),
            ("delivered", "unchanged", "stale")
        );
        let events = crm.events.lock().expect("lock").clone();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].crm_id, None);
    }

    #[tokio::test]
    async fn a_newer_change_order_targets_the_linked_project_with_a_new_event_id() {
        let (stage, crm, _) = kit();
        stage
            .handle(&meta(), &body(&sample()), 1)
            .await
            .expect("ok");
        let mut next = sample();
        next["change_orders"].as_array_mut().expect("list").push(
            json!({"id": 8000002, "status": "complete", "signed_at": "2025-04-01 08:00:00",
                         "change_values": {"panel_count": {"old": 20, "new": 22}}}),
        );
        stage.handle(&meta(), &body(&next), 1).await.expect("ok");
        let events = crm.events.lock().expect("lock").clone();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].crm_id.as_deref(), Some("crm-proj-9"));
        assert_eq!(events[1].data["panel_count"], json!(22));
        assert_ne!(events[0].id, events[1].id);
    }

    #[tokio::test]
    async fn no_complete_change_order_fails_permanently_with_the_reason() {
        let (stage, crm, _) = kit();
        let mut record = sample();
        record["change_orders"][0]["status"] = json!("pending");
        let err = stage
            .handle(&meta(), &body(&record), 1)
            .await
            .expect_err("fails");
        assert!(!err.is_transient());
        assert!(
            err.to_string().contains("no complete signed change order"),
            "{err}"
        );
        assert!(crm.events.lock().expect("lock").is_empty());
    }
}
