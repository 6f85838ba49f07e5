//! Stage 4.2: v1 `update_install` / `restore_install` -> `status.changed` to the CRM, only when the
//! install's status differs from the last one synced for that install.
//!
//! Both known payload shapes are read (docs/enerflo-api.md 3.3): `status: {id, name}` (the real
//! 2024 capture) and a top-level `status_id` (the docs example), whose name comes from the
//! company's status list. The `on_hold` / `voided` / `completed` flags come from the status *name*
//! through configured name lists (ids are per company). A `restore_install` (a voided contract
//! recreated) is always told to the CRM as such, with `"restored": true` and the status before it.
//!
//! Echo fingerprints: target `status:install:<id>`, hash = content hash of the numeric status id
//! (towards the CRM also one of the name, which the CRM may send back instead). A fingerprint
//! counts only while no write in the other direction came after it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::canonical::CrmEventType;
use crate::config::EnerfloFields;
use crate::consumer::OutcomeKind;
use crate::enerflo::EnerfloApi;
use crate::enerflo::api_status::{StatusCatalog, name_in};
use crate::enerflo::lenient::{path, value_to_string, value_to_u64};
use crate::error::SyncError;
use crate::mapping::project::install_project_refs;
use crate::pipeline::{
    Decision, EntityKeys, Kit, OutboundStage, Push, ReadError, Remember, StageMessage,
};
use crate::registry::{STATUS_INSTALL_ID_PATHS, Stage, status_install_id};
use crate::store::{EntityKind, IdForm, IdRef, SyncState};
use crate::sync::fingerprints::{status_fingerprint, status_name_fingerprint};
use crate::sync::{Direction, EchoTarget, StateKey};
use crate::timefmt::parse_enerflo_time;

/// What one install event says about the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    pub install_id: u64,
    pub status_id: Option<u64>,
    pub status_name: Option<String>,
    pub restored: bool,
    pub updated_at: Option<String>,
    /// The webhook record, for `raw`.
    pub record: Value,
    pub event: String,
}

fn number_at<S: AsRef<str>>(root: &Value, paths: &[S]) -> Option<u64> {
    paths
        .iter()
        .find_map(|p| path(root, p.as_ref()).and_then(value_to_u64))
}

fn text_at<S: AsRef<str>>(root: &Value, paths: &[S]) -> Option<String> {
    paths
        .iter()
        .find_map(|p| path(root, p.as_ref()).and_then(value_to_string))
}

/// The status an install body carries: `status` as `{id, name}` (or a bare id or name), else
/// `status_id` / `status_name` at the top level or under `install` / `installDetails` / `data`.
pub fn read_status(body: &Value) -> (Option<u64>, Option<String>) {
    let (mut id, mut name) = (None, None);
    match body.get("status") {
        Some(obj @ Value::Object(_)) => {
            id = number_at(obj, &["id", "status_id"]);
            name = text_at(obj, &["name", "title", "status", "label"]);
        }
        Some(v @ Value::Number(_)) => id = value_to_u64(v),
        Some(Value::String(s)) if s.trim().bytes().all(|b| b.is_ascii_digit()) => {
            id = s.trim().parse().ok();
        }
        Some(v @ Value::String(_)) => name = value_to_string(v),
        _ => {}
    }
    let id = id.or_else(|| {
        number_at(
            body,
            &[
                "status_id",
                "install.status_id",
                "installDetails.status_id",
                "data.status_id",
            ],
        )
    });
    let name = name.or_else(|| {
        text_at(
            body,
            &[
                "status_name",
                "install.status_name",
                "installDetails.status_name",
                "data.status_name",
            ],
        )
    });
    (id, name)
}

/// Reads an `update_install` / `restore_install` body; the error says what is missing.
pub fn read_event(
    event: &str,
    record: &Value,
    install_id_paths: &[String],
) -> Result<StatusEvent, ReadError> {
    let install_id = status_install_id(record, install_id_paths).ok_or_else(|| {
        let looked: Vec<&str> = STATUS_INSTALL_ID_PATHS
            .iter()
            .copied()
            .chain(install_id_paths.iter().map(String::as_str))
            .collect();
        ReadError::Missing {
            event: event.to_owned(),
            what: vec![format!("no install id (looked at {})", looked.join(", "))],
        }
    })?;
    let (status_id, status_name) = read_status(record);
    Ok(StatusEvent {
        install_id,
        status_id,
        status_name,
        restored: event == "restore_install",
        updated_at: text_at(record, &["timestamps.updated_at", "updated_at"])
            .and_then(|t| parse_enerflo_time(&t)),
        record: record.clone(),
        event: event.to_owned(),
    })
}

/// `{id, name}` as the CRM sees a status.
fn status_json(id: u64, name: Option<&str>) -> Value {
    json!({"id": id, "name": name})
}

pub struct StatusStage {
    pub enerflo: Arc<dyn EnerfloApi>,
    pub catalog: Arc<StatusCatalog>,
    pub fields: EnerfloFields,
    pub install_id_paths: Vec<String>,
    pub call_budget: Duration,
}

#[async_trait]
impl OutboundStage for StatusStage {
    type Event = StatusEvent;

    fn stage(&self) -> Stage {
        Stage::Status
    }

    fn read(&self, msg: &StageMessage<'_>) -> Result<StatusEvent, ReadError> {
        let envelope = msg.envelope()?;
        read_event(&envelope.event, &envelope.record, &self.install_id_paths)
    }

    async fn resolve(
        &self,
        _kit: &Kit,
        _msg: &StageMessage<'_>,
        ev: &mut StatusEvent,
    ) -> Result<EntityKeys, SyncError> {
        let (id, name) = self.resolve_status(ev).await?;
        (ev.status_id, ev.status_name) = (Some(id), name);
        Ok(EntityKeys::same(StateKey::Status(ev.install_id)))
    }

    async fn decide(
        &self,
        kit: &Kit,
        _msg: &StageMessage<'_>,
        ev: StatusEvent,
        last: Option<&SyncState>,
    ) -> Result<Decision, SyncError> {
        let install_id = ev.install_id;
        let (id, name) = (ev.status_id.unwrap_or_default(), ev.status_name.clone());
        let last_data = last.map(|s| s.data.clone()).unwrap_or(Value::Null);
        let last_status = last_data.get("status").cloned().filter(|v| !v.is_null());
        let last_id = last_status
            .as_ref()
            .and_then(|s| s.get("id"))
            .and_then(value_to_u64);
        let same = last_id == Some(id);
        let status = status_json(id, name.as_deref());
        let target = EchoTarget::Status(install_id);

        if ev.restored {
            // A restore is news even when the status value is not: the contract was voided and
            // recreated. Only a repeat of the same restore is unchanged.
            if same && last_data.get("restored") == Some(&Value::Bool(true)) {
                return Ok(Decision::skip(
                    OutcomeKind::Unchanged,
                    format!("install {install_id}: restore to status {id} already synced"),
                ));
            }
        } else if same {
            return Ok(Decision::skip(
                OutcomeKind::Unchanged,
                format!("install {install_id}: status {id} already synced"),
            ));
        } else if kit
            .echo
            .is_ours(Direction::ToEnerflo, &target, &[status_fingerprint(id)])
            .await?
        {
            // The CRM set this status through us: it has it; remember it as synced. A restore is
            // never our echo: a status write fires `update_install`.
            return Ok(Decision::Skip {
                outcome: OutcomeKind::Echo,
                detail: format!("install {install_id}: status {id} was our own write"),
                remember: Some(Remember {
                    hash: status_fingerprint(id),
                    data: json!({"status": status, "previous": last_status, "restored": false}),
                }),
            });
        }
        // What the CRM had before: for a restore that repeats the current value (an
        // `update_install` got there first), the status before that one.
        let previous = if ev.restored && same {
            last_data.get("previous").cloned().filter(|v| !v.is_null())
        } else {
            last_status
        };
        let flag = |names: &[String]| name.as_deref().is_some_and(|n| name_in(n, names));
        let data = json!({
            "status": status,
            "previous": previous,
            "on_hold": flag(&self.fields.on_hold_names),
            "voided": flag(&self.fields.voided_names),
            "completed": flag(&self.fields.completed_names),
            "restored": ev.restored,
        });
        let link = kit
            .xref
            .link(
                EntityKind::Project,
                &[IdRef::new(IdForm::Install, install_id)],
            )
            .await?;
        let previous_id = previous
            .as_ref()
            .and_then(|p| p.get("id"))
            .and_then(value_to_u64);
        // The CRM may send the status back by id or by name.
        let mut fingerprints = vec![status_fingerprint(id)];
        fingerprints.extend(name.as_deref().map(status_name_fingerprint));
        Ok(Decision::Push(Box::new(Push {
            event_type: CrmEventType::StatusChanged,
            source_event: ev.event.clone(),
            occurred_at: ev.updated_at.clone(),
            kind: EntityKind::Project,
            enerflo: install_project_refs(&link, install_id),
            link,
            remember: Remember {
                hash: status_fingerprint(id),
                data: json!({"status": data["status"], "previous": data["previous"],
                             "restored": ev.restored}),
            },
            data,
            raw: kit.include_raw.then(|| json!({"webhook": ev.record})),
            echo: Some((target, fingerprints)),
            subject: format!(
                "install {install_id} to {id} (previous {}, restored {})",
                previous_id.map_or_else(|| "none".to_owned(), |p| p.to_string()),
                ev.restored
            ),
        })))
    }
}

impl StatusStage {
    /// Completes the status: hydrates when the event has none, names an id through the company
    /// list, finds the id of a bare name.
    async fn resolve_status(
        &self,
        ev: &mut StatusEvent,
    ) -> Result<(u64, Option<String>), SyncError> {
        let install_id = ev.install_id;
        if ev.status_id.is_none() && ev.status_name.is_none() {
            let install = self
                .enerflo
                .get_install(install_id, self.call_budget)
                .await?
                .ok_or_else(|| {
                    SyncError::transient(format!(
                        "install {install_id} not found (GET /api/v3/installs/{install_id} answered 404)"
                    ))
                })?;
            (ev.status_id, ev.status_name) = read_status(&install);
        }
        match (ev.status_id, ev.status_name.clone()) {
            (Some(id), Some(name)) => Ok((id, Some(name))),
            (Some(id), None) => {
                let found = self
                    .catalog
                    .by_id(self.enerflo.as_ref(), id, self.call_budget)
                    .await?;
                if found.is_none() {
                    tracing::warn!(
                        install_id,
                        status_id = id,
                        "status id not in Enerflo's install status list; pushed without a name"
                    );
                }
                Ok((id, found.map(|s| s.name)))
            }
            (None, Some(name)) => {
                let found = self
                    .catalog
                    .by_name(self.enerflo.as_ref(), &name, self.call_budget)
                    .await?
                    .ok_or_else(|| {
                        SyncError::permanent(format!(
                            "install {install_id}: status `{name}` has no id and is not in Enerflo's install status list"
                        ))
                    })?;
                Ok((found.id, Some(found.name)))
            }
            (None, None) => Err(SyncError::permanent(format!(
                "install {install_id}: no status in the event nor in GET /api/v3/installs/{install_id} (looked at status, status_id, status_name)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Vec<String> {
        crate::classify::DEFAULT_INSTALL_ID_PATHS
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    fn fixture(name: &str) -> Value {
        let text = match name {
            "real" => include_str!("../../../tests/fixtures/enerflo/v1-update_install.json"),
            _ => {
                include_str!("../../../tests/fixtures/enerflo/v1-update_install.docs-variant.json")
            }
        };
        serde_json::from_str(text).expect("fixture is JSON")
    }

    #[test]
    fn the_real_capture_shape_carries_status_as_an_object() {
        let ev = read_event("update_install", &fixture("real"), &paths()).expect("readable");
        assert_eq!(ev.install_id, 700001);
        assert_eq!(ev.status_id, Some(321));
        assert_eq!(ev.status_name.as_deref(), Some("Example Custom Status"));
        assert!(!ev.restored);
        assert_eq!(ev.updated_at.as_deref(), Some("2025-01-02T09:30:00Z"));
    }

    #[test]
    fn the_docs_shape_carries_a_top_level_status_id_without_a_name() {
        let ev = read_event("update_install", &fixture("docs"), &paths()).expect("readable");
        assert_eq!(ev.install_id, 700001);
        assert_eq!((ev.status_id, ev.status_name), (Some(4), None));
    }

    #[test]
    fn odd_status_forms_are_tolerated() {
        assert_eq!(
            read_status(&json!({"status": "On Hold"})),
            (None, Some("On Hold".into()))
        );
        assert_eq!(read_status(&json!({"status": "4"})), (Some(4), None));
        assert_eq!(
            read_status(&json!({"status": {"id": "6"}, "status_name": "Completed"})),
            (Some(6), Some("Completed".into()))
        );
        assert_eq!(read_status(&json!({"status": []})), (None, None));
    }

    #[test]
    fn an_event_without_an_install_id_is_unusable() {
        let err = read_event("update_install", &json!({"status": {"id": 1}}), &paths())
            .expect_err("unusable")
            .to_string();
        assert!(err.contains("no install id"), "{err}");
        assert!(
            read_event("restore_install", &json!({"id": 1}), &paths())
                .expect("readable")
                .restored
        );
    }
}
