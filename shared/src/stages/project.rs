//! Stage 2: `deal.projectSubmitted` / `deal.projectReceived` -> hydrate through
//! `installs/find` -> `project.submitted` / `project.received` to the CRM.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::canonical::CrmEventType;
use crate::consumer::OutcomeKind;
use crate::enerflo::EnerfloApi;
use crate::enerflo::install::Install;
use crate::enerflo::project::{ProjectBody, ProjectPayload};
use crate::error::SyncError;
use crate::hashing::content_hash;
use crate::mapping::project::{map_project, project_refs};
use crate::pipeline::{
    Decision, EntityKeys, Kit, OutboundStage, Push, ReadError, Remember, StageMessage,
};
use crate::registry::Stage;
use crate::store::{EntityKind, EntityLink, IdForm, IdRef, SyncState};
use crate::sync::{LinkConflict, StateKey, link_apart};
use crate::timefmt::parse_enerflo_time;

pub struct ProjectStage {
    pub enerflo: Arc<dyn EnerfloApi>,
    /// How long one Enerflo call may retry in-process before the queue's backoff takes over.
    pub call_budget: Duration,
}

/// A project event, then what hydration and linking added.
pub struct ProjectEvent {
    pub event_type: CrmEventType,
    pub source_event: String,
    pub payload: ProjectPayload,
    pub deal_id: String,
    /// Filled by `resolve`.
    pub install: Option<(Value, Install)>,
    pub link: Option<EntityLink>,
    pub conflicts: Vec<LinkConflict>,
}

#[async_trait]
impl OutboundStage for ProjectStage {
    type Event = ProjectEvent;

    fn stage(&self) -> Stage {
        Stage::Project
    }

    fn read(&self, msg: &StageMessage<'_>) -> Result<ProjectEvent, ReadError> {
        // One typed pass over the body bytes (docs/design.md 6: a 73 KB submission maps in under 1 ms).
        let parsed =
            ProjectBody::parse(msg.body.as_bytes()).map_err(|e| ReadError::Unreadable {
                event: msg.meta.event.clone(),
                detail: e.to_string(),
            })?;
        let source_event = parsed
            .event
            .clone()
            .unwrap_or_else(|| msg.meta.event.clone());
        let event_type = match source_event.as_str() {
            "deal.projectSubmitted" => CrmEventType::ProjectSubmitted,
            "deal.projectReceived" => CrmEventType::ProjectReceived,
            _ => {
                return Err(ReadError::WrongStage {
                    stage: Stage::Project,
                    event: source_event,
                });
            }
        };
        let missing = |what: &str| ReadError::Missing {
            event: source_event.clone(),
            what: vec![what.to_owned()],
        };
        let payload = parsed
            .payload
            .ok_or_else(|| missing("the body has no `payload` object"))?;
        let deal_id = payload
            .deal_id()
            .map(str::to_owned)
            .ok_or_else(|| missing("payload.deal.id is missing"))?;
        Ok(ProjectEvent {
            event_type,
            source_event: source_event.clone(),
            payload,
            deal_id,
            install: None,
            link: None,
            conflicts: Vec::new(),
        })
    }

    async fn resolve(
        &self,
        kit: &Kit,
        _msg: &StageMessage<'_>,
        ev: &mut ProjectEvent,
    ) -> Result<EntityKeys, SyncError> {
        let deal_id = &ev.deal_id;
        let install_body = self
            .enerflo
            .find_install_by_deal(deal_id, self.call_budget)
            .await?
            .ok_or_else(|| {
                SyncError::transient(format!(
                    "install for deal {deal_id} not created yet (installs/find answered 404)"
                ))
            })?;
        let install = Install::from_response(&install_body);
        let refs = project_refs(&ev.payload, Some(&install));

        // Link every id form before any CRM write, so later events of this entity find it; an id
        // that already belongs to another deal is kept apart, never merged.
        let mut others = Vec::new();
        if let Some(code) = ev
            .payload
            .deal
            .as_ref()
            .and_then(|d| d.short_code.as_deref())
        {
            others.push(IdRef::new(IdForm::ShortCode, code));
        }
        if let Some(id) = refs.install_id {
            others.push(IdRef::new(IdForm::Install, id));
        }
        if let Some(id) = refs.survey_id {
            others.push(IdRef::new(IdForm::Survey, id));
        }
        let (link, conflicts) = link_apart(
            kit.xref.as_ref(),
            EntityKind::Project,
            IdRef::new(IdForm::Deal, deal_id),
            others,
            &[IdForm::Deal, IdForm::Install],
        )
        .await?;
        let mut customer_ids = Vec::new();
        if let Some(uuid) = &refs.customer_uuid {
            customer_ids.push(IdRef::new(IdForm::CustomerUuid, uuid));
        }
        if let Some(id) = refs.customer_id {
            customer_ids.push(IdRef::new(IdForm::CustomerId, id));
        }
        if !customer_ids.is_empty() {
            kit.xref.link(EntityKind::Customer, &customer_ids).await?;
        }
        let keys = EntityKeys {
            lease: StateKey::ProjectDeal(deal_id.clone()),
            state: StateKey::Project(link.key.clone()),
        };
        ev.install = Some((install_body, install));
        ev.link = Some(link);
        ev.conflicts = conflicts;
        Ok(keys)
    }

    async fn decide(
        &self,
        kit: &Kit,
        msg: &StageMessage<'_>,
        ev: ProjectEvent,
        last: Option<&SyncState>,
    ) -> Result<Decision, SyncError> {
        let (Some((install_body, install)), Some(link)) = (ev.install, ev.link) else {
            return Err(SyncError::permanent(
                "project event decided before resolved",
            ));
        };
        let deal_id = ev.deal_id;
        let unflagged = map_project(&ev.payload, Some(&install), false);
        let hash = content_hash(&unflagged);
        if last.is_some_and(|l| l.hash == hash) {
            return Ok(Decision::skip(
                OutcomeKind::Unchanged,
                format!("deal {deal_id}: same content as last synced"),
            ));
        }
        let resubmission = last.is_some();
        let project = map_project(&ev.payload, Some(&install), resubmission);
        let data = serde_json::to_value(&project).unwrap_or(Value::Null);
        let conflicts: Vec<String> = ev.conflicts.iter().map(ToString::to_string).collect();
        Ok(Decision::Push(Box::new(Push {
            event_type: ev.event_type,
            source_event: ev.source_event,
            occurred_at: ev
                .payload
                .deal
                .as_ref()
                .and_then(|d| d.updated_at.as_deref())
                .and_then(parse_enerflo_time),
            kind: EntityKind::Project,
            enerflo: project_refs(&ev.payload, Some(&install)),
            link,
            remember: Remember {
                hash,
                data: data.clone(),
            },
            data,
            raw: kit.include_raw.then(|| {
                json!({
                    "webhook": serde_json::from_str::<Value>(msg.body).unwrap_or(Value::Null),
                    "install": install_body,
                })
            }),
            echo: None,
            subject: if conflicts.is_empty() {
                format!("deal {deal_id} (resubmission {resubmission})")
            } else {
                format!(
                    "deal {deal_id} (resubmission {resubmission}; conflict: {})",
                    conflicts.join("; ")
                )
            },
        })))
    }
}
