//! Stage 6: v1 `signed_change_order` -> `change_order.signed` to the CRM: the system after the
//! change (panel type and count, batteries, adders) and what changed, from the latest complete
//! change order. The CRM project is found through the install id; an install not linked yet is
//! linked by this event (install, survey and customer ids from the payload) rather than failed.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::canonical::{CrmEventType, EnerfloRefs};
use crate::consumer::OutcomeKind;
use crate::enerflo::lenient::value_to_string;
use crate::error::SyncError;
use crate::hashing::content_hash;
use crate::mapping::change_order::{install_id, install_refs, map_change_order};
use crate::pipeline::{
    Decision, EntityKeys, Kit, OutboundStage, Push, ReadError, Remember, StageMessage,
};
use crate::registry::Stage;
use crate::store::{EntityKind, IdForm, IdRef, SyncState};
use crate::sync::{StateKey, link_apart};

pub struct ChangeOrderStage;

pub struct ChangeOrderEvent {
    pub install: u64,
    pub record: Value,
}

/// Unix seconds of an RFC 3339 time, for ordering.
fn unix(t: &str) -> Option<i64> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

#[async_trait]
impl OutboundStage for ChangeOrderStage {
    type Event = ChangeOrderEvent;

    fn stage(&self) -> Stage {
        Stage::ChangeOrder
    }

    fn read(&self, msg: &StageMessage<'_>) -> Result<ChangeOrderEvent, ReadError> {
        let envelope = msg.envelope()?;
        let install = install_id(&envelope.record).ok_or_else(|| ReadError::Missing {
            event: envelope.event.clone(),
            what: vec![
                "no install id (looked at install.id, id, change_orders[].epc_install_id)".into(),
            ],
        })?;
        Ok(ChangeOrderEvent {
            install,
            record: envelope.record,
        })
    }

    async fn resolve(
        &self,
        _kit: &Kit,
        _msg: &StageMessage<'_>,
        ev: &mut ChangeOrderEvent,
    ) -> Result<EntityKeys, SyncError> {
        Ok(EntityKeys::same(StateKey::ChangeOrder(ev.install)))
    }

    async fn decide(
        &self,
        kit: &Kit,
        _msg: &StageMessage<'_>,
        ev: ChangeOrderEvent,
        last: Option<&SyncState>,
    ) -> Result<Decision, SyncError> {
        let (install, record) = (ev.install, ev.record);
        let data = map_change_order(&record).map_err(|e| {
            SyncError::permanent(format!("signed_change_order for install {install}: {e}"))
        })?;
        let co_id = value_to_string(&data.change_order.id).unwrap_or_default();

        // Link before the write, creating the project entity when this install is new to us.
        let (survey, customer) = install_refs(&record);
        let (link, conflicts) = link_apart(
            kit.xref.as_ref(),
            EntityKind::Project,
            IdRef::new(IdForm::Install, install),
            survey
                .map(|s| IdRef::new(IdForm::Survey, s))
                .into_iter()
                .collect(),
            &[IdForm::Deal, IdForm::Install],
        )
        .await?;
        if let Some(c) = customer {
            kit.xref
                .link(EntityKind::Customer, &[IdRef::new(IdForm::CustomerId, c)])
                .await?;
        }

        let data_value = serde_json::to_value(&data).unwrap_or(Value::Null);
        let hash = content_hash(&data_value);
        if let Some(last) = last {
            if last.hash == hash {
                return Ok(Decision::skip(
                    OutcomeKind::Unchanged,
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
                return Ok(Decision::skip(
                    OutcomeKind::Stale,
                    format!(
                        "change order {co_id} of install {install} was signed before the one already synced"
                    ),
                ));
            }
        }
        let num = |form| link.id(form).and_then(|v| v.parse::<u64>().ok());
        let enerflo = EnerfloRefs {
            customer_id: customer,
            customer_uuid: None,
            deal_id: link.id(IdForm::Deal),
            install_id: Some(install),
            survey_id: survey.or_else(|| num(IdForm::Survey)),
        };
        let conflicts: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
        Ok(Decision::Push(Box::new(Push {
            event_type: CrmEventType::ChangeOrderSigned,
            source_event: "signed_change_order".into(),
            occurred_at: Some(data.change_order.signed_at.clone()),
            kind: EntityKind::Project,
            link,
            enerflo,
            remember: Remember {
                hash,
                data: data_value.clone(),
            },
            data: data_value,
            raw: kit.include_raw.then(|| json!({"webhook": record})),
            echo: None,
            subject: if conflicts.is_empty() {
                format!("change order {co_id} of install {install}")
            } else {
                format!(
                    "change order {co_id} of install {install} (conflict: {})",
                    conflicts.join("; ")
                )
            },
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::CrmEvent;
    use crate::consumer::StageHandler;
    use crate::crm::{CrmAck, CrmConnector, CrmError};
    use crate::pipeline::Pipeline;
    use crate::queue::MessageMeta;
    use crate::store::XrefStore;
    use crate::store::embedded::EmbeddedStore;
    use std::sync::{Arc, Mutex};

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

    fn kit() -> (Pipeline<ChangeOrderStage>, Arc<FakeCrm>, Arc<EmbeddedStore>) {
        let store = Arc::new(EmbeddedStore::in_memory().expect("store"));
        let crm = Arc::new(FakeCrm::default());
        (
            Pipeline::new(ChangeOrderStage, Kit::on(store.clone(), crm.clone(), false)),
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
        assert_eq!(out.status, OutcomeKind::Delivered);
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
            (
                OutcomeKind::Delivered,
                OutcomeKind::Unchanged,
                OutcomeKind::Stale
            )
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
