//! Stage 4.2: v1 `update_install` / `restore_install` -> `status.changed` to the CRM, only when the
//! install's status differs from the last one synced for that install.
//!
//! Both known payload shapes are read (ENERFLO_API.md 3.3): `status: {id, name}` (the real 2024
//! capture) and a top-level `status_id` (the docs example), whose name comes from the company's
//! status list. The `on_hold` / `voided` / `completed` flags come from the status *name* through
//! configured name lists (ids are per company). A `restore_install` (a voided contract recreated)
//! is always told to the CRM as such, with `"restored": true` and the status before it.
//!
//! Echo fingerprints: target `status:install:<id>`, hash = content hash of the numeric status id
//! (towards the CRM also one of the name, which the CRM may send back instead). A fingerprint
//! counts only while no write in the other direction came after it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::milestone::{
    Direction, LOCK_WAIT, acquire_within, mark_write, project_refs, still_ours,
};
use crate::canonical::{CrmEvent, CrmEventType};
use crate::config::EnerfloFields;
use crate::consumer::{Outcome, StageHandler};
use crate::crm::CrmConnector;
use crate::enerflo::EnerfloApi;
use crate::enerflo::api_status::{StatusCatalog, name_in, normalise_name};
use crate::enerflo::envelope::Envelope;
use crate::enerflo::lenient::{path, value_to_string, value_to_u64};
use crate::error::SyncError;
use crate::hashing::{content_hash, sha256_hex};
use crate::queue::MessageMeta;
use crate::store::{
    ClaimStore, EchoStore, EntityKind, IdForm, IdRef, SyncState, SyncStateStore, XrefStore,
};
use crate::timefmt::{now_rfc3339, parse_enerflo_time};

const LOCK_LEASE: Duration = Duration::from_secs(60);

/// `status:install:<id>`: the echo target (prefixed `enerflo:` / `crm:`).
pub fn status_target(install_id: u64) -> String {
    format!("status:install:{install_id}")
}

/// The last-synced-state scope and lock scope of an install's status.
pub fn status_scope(install_id: u64) -> String {
    format!("status#install:{install_id}")
}

pub fn status_fingerprint(status_id: u64) -> String {
    content_hash(&status_id)
}

/// The fingerprint of a status by name, recorded beside the id's when we push, so a CRM sending
/// the name back is recognised without reading the status list from Enerflo.
pub fn status_name_fingerprint(name: &str) -> String {
    content_hash(&format!("name:{}", normalise_name(name)))
}

/// What one install event says about the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    pub install_id: u64,
    pub status_id: Option<u64>,
    pub status_name: Option<String>,
    pub restored: bool,
    pub updated_at: Option<String>,
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
) -> Result<StatusEvent, String> {
    let mut id_paths: Vec<&str> = vec!["id", "install.id", "installDetails.id"];
    id_paths.extend(install_id_paths.iter().map(String::as_str));
    let install_id = number_at(record, &id_paths).ok_or_else(|| {
        format!(
            "{event} carries no install id (looked at {})",
            id_paths.join(", ")
        )
    })?;
    let (status_id, status_name) = read_status(record);
    Ok(StatusEvent {
        install_id,
        status_id,
        status_name,
        restored: event == "restore_install",
        updated_at: text_at(record, &["timestamps.updated_at", "updated_at"])
            .and_then(|t| parse_enerflo_time(&t)),
    })
}

/// `{id, name}` as the CRM sees a status.
fn status_json(id: u64, name: Option<&str>) -> Value {
    json!({"id": id, "name": name})
}

pub struct StatusStage {
    pub enerflo: Arc<dyn EnerfloApi>,
    pub crm: Arc<dyn CrmConnector>,
    pub xref: Arc<dyn XrefStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub state: Arc<dyn SyncStateStore>,
    pub echo: Arc<dyn EchoStore>,
    pub catalog: Arc<StatusCatalog>,
    pub fields: EnerfloFields,
    pub install_id_paths: Vec<String>,
    pub include_raw: bool,
    pub echo_ttl: Duration,
    pub call_budget: Duration,
}

#[async_trait]
impl StageHandler for StatusStage {
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
            "update_install" | "restore_install"
        ) {
            return Err(SyncError::permanent(format!(
                "the status stage does not handle `{}`",
                envelope.event
            )));
        }
        let event = read_event(&envelope.event, &envelope.record, &self.install_id_paths)
            .map_err(SyncError::permanent)?;
        let lock = acquire_within(
            &self.claims,
            &status_scope(event.install_id),
            LOCK_LEASE,
            LOCK_WAIT,
        )
        .await?;
        let result = self.sync(&envelope, event, meta).await;
        lock.release().await;
        result
    }
}

impl StatusStage {
    /// Whether `status_id` arriving from Enerflo is our own inbound write echoing: its fingerprint
    /// is recorded, and no push to the CRM happened after that write.
    async fn is_our_write(&self, install_id: u64, status_id: u64) -> Result<bool, SyncError> {
        let target = status_target(install_id);
        if !self
            .echo
            .is_echo(&format!("enerflo:{target}"), &status_fingerprint(status_id))
            .await?
        {
            return Ok(false);
        }
        Ok(still_ours(self.state.as_ref(), Direction::ToEnerflo, &target).await?)
    }

    /// Completes the status: hydrates when the event has none, names an id through the company
    /// list, finds the id of a bare name.
    async fn resolve(&self, ev: &mut StatusEvent) -> Result<(u64, Option<String>), SyncError> {
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

    async fn sync(
        &self,
        envelope: &Envelope,
        mut ev: StatusEvent,
        meta: &MessageMeta,
    ) -> Result<Outcome, SyncError> {
        let install_id = ev.install_id;
        let (id, name) = self.resolve(&mut ev).await?;
        let scope = status_scope(install_id);
        let last = self.state.get_state(&scope).await?;
        let last_data = last.as_ref().map(|s| s.data.clone()).unwrap_or(Value::Null);
        let last_status = last_data.get("status").cloned().filter(|v| !v.is_null());
        let last_id = last_status
            .as_ref()
            .and_then(|s| s.get("id"))
            .and_then(value_to_u64);
        let same = last_id == Some(id);
        let status = status_json(id, name.as_deref());

        if ev.restored {
            // A restore is news even when the status value is not: the contract was voided and
            // recreated. Only a repeat of the same restore is unchanged.
            if same && last_data.get("restored") == Some(&Value::Bool(true)) {
                return Ok(Outcome::new(
                    "unchanged",
                    format!("install {install_id}: restore to status {id} already synced"),
                ));
            }
        } else if same {
            return Ok(Outcome::new(
                "unchanged",
                format!("install {install_id}: status {id} already synced"),
            ));
        } else if self.is_our_write(install_id, id).await? {
            // The CRM set this status through us: it has it; remember it as synced. A restore is
            // never our echo: a status write fires `update_install`.
            let state = SyncState {
                hash: status_fingerprint(id),
                data: json!({"status": status, "previous": last_status, "restored": false}),
                updated_at: now_rfc3339(),
            };
            self.state.put_state(&scope, &state).await?;
            return Ok(Outcome::new(
                "echo",
                format!("install {install_id}: status {id} was our own write"),
            ));
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

        let link = self
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
        let event = CrmEvent {
            event_type: CrmEventType::StatusChanged,
            id: format!(
                "evt_{}",
                &sha256_hex(
                    format!(
                        "status.changed|{install_id}|{id}|{}|{}",
                        previous_id.map_or_else(|| "none".to_owned(), |p| p.to_string()),
                        ev.restored
                    )
                    .as_bytes()
                )[..32]
            ),
            occurred_at: ev
                .updated_at
                .clone()
                .or_else(|| Some(meta.received_at.clone()).filter(|s| !s.is_empty()))
                .unwrap_or_else(now_rfc3339),
            source_event: envelope.event.clone(),
            crm_id: link.crm_id.clone(),
            enerflo: project_refs(&link, install_id),
            data,
            raw: self
                .include_raw
                .then(|| json!({"webhook": envelope.record})),
        };
        // Recorded before the push: the CRM's automation may send the status straight back before
        // it answers. A push that then fails leaves a fingerprint of a status Enerflo already has.
        let target = status_target(install_id);
        let mut fingerprints = vec![status_fingerprint(id)];
        fingerprints.extend(name.as_deref().map(status_name_fingerprint));
        for fingerprint in &fingerprints {
            self.echo
                .record_write(
                    &format!("crm:{target}"),
                    fingerprint,
                    self.echo_ttl.as_secs(),
                )
                .await?;
        }
        mark_write(
            self.state.as_ref(),
            Direction::ToCrm,
            &target,
            &status_fingerprint(id),
        )
        .await?;
        let ack = self.crm.deliver(&event).await?;
        let crm_id = match &ack.crm_id {
            Some(c) if link.crm_id.as_deref() != Some(c.as_str()) => {
                self.xref
                    .set_crm_id(EntityKind::Project, &link.key, c)
                    .await?;
                Some(c.clone())
            }
            Some(c) => Some(c.clone()),
            None => link.crm_id.clone(),
        };
        self.state
            .put_state(
                &scope,
                &SyncState {
                    hash: status_fingerprint(id),
                    data: json!({"status": event.data["status"], "previous": event.data["previous"],
                                 "restored": ev.restored}),
                    updated_at: now_rfc3339(),
                },
            )
            .await?;
        Ok(Outcome::new(
            "delivered",
            format!(
                "status.changed for install {install_id} to {id} (previous {}, restored {}, crm_id {}, event {})",
                previous_id.map_or_else(|| "none".to_owned(), |p| p.to_string()),
                ev.restored,
                crm_id.as_deref().unwrap_or("none"),
                event.id
            ),
        ))
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
            .expect_err("unusable");
        assert!(err.contains("no install id"), "{err}");
        assert!(
            read_event("restore_install", &json!({"id": 1}), &paths())
                .expect("readable")
                .restored
        );
    }
}
