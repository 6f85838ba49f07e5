//! Stage 3.2: v1 `project_milestone_updated` -> `milestone.updated` to the CRM, only when the
//! milestone's completion date is new or changed against what the CRM last got from us.
//!
//! No sample of this payload is known (docs/enerflo-api.md 3.4): the install id, milestone id and
//! dates are read from candidate paths in configuration, and when the payload carries no dates they
//! are read from `GET /api/v3/installs/{id}` (`all_milestones[]` / `milestones[]`). An event
//! without an install id or a milestone id is dead-lettered with a reason naming what was missing.
//!
//! Echo fingerprints (target `milestone:install:<id>:<milestone id>`): the hash covers
//! `{"start_date", "completed_date"}` as `YYYY-MM-DD` or null, and a date a write did not carry
//! hashes as `"*"`, so a fingerprint covers only the fields written (docs/design.md 3.5). A fingerprint
//! counts only while no write in the other direction came after it ([`still_ours`]). The echo and
//! lock helpers here serve stage 4 (status) too.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::canonical::CrmEventType;
use crate::config::EnerfloFields;
use crate::consumer::OutcomeKind;
use crate::enerflo::EnerfloApi;
use crate::enerflo::api_milestone::DateChange;
use crate::enerflo::lenient::{path, value_to_string, value_to_u64};
use crate::error::SyncError;
use crate::hashing::content_hash;
use crate::mapping::project::install_project_refs;
use crate::pipeline::{
    Decision, EntityKeys, Kit, OutboundStage, Push, ReadError, Remember, StageMessage,
};
use crate::registry::Stage;
use crate::store::{EntityKind, IdForm, IdRef, SyncState};
pub use crate::sync::fingerprints::milestone_fingerprint;
use crate::sync::{Direction, EchoTarget, StateKey};
use crate::timefmt::{enerflo_date, parse_enerflo_time};

pub const EVENT: &str = "project_milestone_updated";

/// What one `project_milestone_updated` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MilestoneEvent {
    pub install_id: u64,
    pub milestone_id: u64,
    pub title: Option<String>,
    pub external_id: Option<String>,
    /// `None`: the payload does not say (hydrate); `Some(None)`: no date.
    pub start: DateChange,
    pub completed: DateChange,
    pub updated_at: Option<String>,
    /// The webhook record, and the install it was completed from (for `raw`).
    pub record: Value,
    pub hydrated: Option<Value>,
}

const TITLE_PATHS: &[&str] = &[
    "milestone.title",
    "milestone_title",
    "milestone.name",
    "install_milestone.title",
    "title",
];
const EXTERNAL_ID_PATHS: &[&str] = &[
    "milestone.external_id",
    "milestone.external_system_id",
    "milestone_external_id",
    "install_milestone.external_id",
];
const UPDATED_PATHS: &[&str] = &[
    "updated_at",
    "milestone.updated_at",
    "install_milestone.updated_at",
    "timestamps.updated_at",
];

/// Walks a dotted path like [`path`], but finds an explicit `null` too.
fn present<'a>(root: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(root, |cur, key| match cur {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
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

/// The first candidate holding a date; `Some(None)` when a candidate is there but holds none
/// (null, blank, not a date); `None` when no candidate is there at all.
fn date_at<S: AsRef<str>>(root: &Value, paths: &[S]) -> DateChange {
    let mut seen = false;
    for p in paths {
        if let Some(v) = present(root, p.as_ref()) {
            if let Some(d) = enerflo_date(v) {
                return Some(Some(d));
            }
            seen = true;
        }
    }
    seen.then_some(None)
}

/// Reads the event tolerantly; the error names everything missing that makes it unusable.
pub fn read_event(
    record: &Value,
    fields: &EnerfloFields,
    install_id_paths: &[String],
) -> Result<MilestoneEvent, ReadError> {
    let install_id = crate::registry::install_id_at(record, install_id_paths);
    let milestone_id = number_at(record, &fields.milestone_id_paths);
    match (install_id, milestone_id) {
        (Some(install_id), Some(milestone_id)) => Ok(MilestoneEvent {
            install_id,
            milestone_id,
            title: text_at(record, TITLE_PATHS),
            external_id: text_at(record, EXTERNAL_ID_PATHS),
            start: date_at(record, &fields.milestone_start_paths),
            completed: date_at(record, &fields.milestone_completed_paths),
            updated_at: text_at(record, UPDATED_PATHS).and_then(|t| parse_enerflo_time(&t)),
            record: record.clone(),
            hydrated: None,
        }),
        _ => {
            let mut missing = Vec::new();
            if install_id.is_none() {
                missing.push(format!(
                    "no install id (looked at {}; configure ENERFLO_INSTALL_ID_PATHS)",
                    install_id_paths.join(", ")
                ));
            }
            if milestone_id.is_none() {
                missing.push(format!(
                    "no milestone id (looked at {}; configure ENERFLO_MILESTONE_ID_PATHS)",
                    fields.milestone_id_paths.join(", ")
                ));
            }
            Err(ReadError::Missing {
                event: EVENT.to_owned(),
                what: missing,
            })
        }
    }
}

/// One milestone as listed on the install object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallMilestone {
    pub start: Option<String>,
    pub completed: Option<String>,
    pub title: Option<String>,
    pub external_id: Option<String>,
}

/// Candidate names inside an install's milestone entry: each configured path as is and its last
/// segment (`milestone.completed_date` -> `completed_date`).
fn entry_paths(paths: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in paths {
        for c in [p.as_str(), p.rsplit('.').next().unwrap_or(p)] {
            if !out.iter().any(|o| o == c) {
                out.push(c.to_owned());
            }
        }
    }
    out
}

/// Finds `milestone_id` in the install object's `all_milestones[]` / `milestones[]` /
/// `install_milestones[]` (bare or wrapped in `data` / `install`). An entry is matched by its
/// `milestone_id` (an install-milestone row) or, lacking one, its `id`.
pub fn milestone_from_install(
    install: &Value,
    milestone_id: u64,
    fields: &EnerfloFields,
) -> Option<InstallMilestone> {
    let roots = [Some(install), install.get("data"), install.get("install")];
    let entry = roots.into_iter().flatten().find_map(|root| {
        ["all_milestones", "milestones", "install_milestones"]
            .iter()
            .filter_map(|k| root.get(*k).and_then(Value::as_array))
            .flatten()
            .find(|e| number_at(e, &["milestone_id", "milestone.id", "id"]) == Some(milestone_id))
    })?;
    let mut title_paths = vec!["title", "name"];
    title_paths.extend_from_slice(TITLE_PATHS);
    let mut external_paths = vec!["external_id", "external_system_id"];
    external_paths.extend_from_slice(EXTERNAL_ID_PATHS);
    Some(InstallMilestone {
        start: date_at(entry, &entry_paths(&fields.milestone_start_paths)).flatten(),
        completed: date_at(entry, &entry_paths(&fields.milestone_completed_paths)).flatten(),
        title: text_at(entry, &title_paths),
        external_id: text_at(entry, &external_paths),
    })
}

pub struct MilestoneStage {
    pub enerflo: Arc<dyn EnerfloApi>,
    pub fields: EnerfloFields,
    pub install_id_paths: Vec<String>,
    /// How long one Enerflo call may retry in-process before the queue's backoff takes over.
    pub call_budget: Duration,
}

#[async_trait]
impl OutboundStage for MilestoneStage {
    type Event = MilestoneEvent;

    fn stage(&self) -> Stage {
        Stage::Milestone
    }

    fn read(&self, msg: &StageMessage<'_>) -> Result<MilestoneEvent, ReadError> {
        let envelope = msg.envelope()?;
        read_event(&envelope.record, &self.fields, &self.install_id_paths)
    }

    async fn resolve(
        &self,
        _kit: &Kit,
        _msg: &StageMessage<'_>,
        ev: &mut MilestoneEvent,
    ) -> Result<EntityKeys, SyncError> {
        let (install_id, mid) = (ev.install_id, ev.milestone_id);
        if ev.start.is_none() || ev.completed.is_none() {
            let install = self
                .enerflo
                .get_install(install_id, self.call_budget)
                .await?
                .ok_or_else(|| {
                    SyncError::transient(format!(
                        "install {install_id} not found (GET /api/v3/installs/{install_id} answered 404)"
                    ))
                })?;
            let found = milestone_from_install(&install, mid, &self.fields).ok_or_else(|| {
                SyncError::permanent(format!(
                    "{EVENT} for install {install_id} carries no milestone dates, and milestone {mid} is not among the install's all_milestones/milestones"
                ))
            })?;
            ev.start.get_or_insert(found.start);
            ev.completed.get_or_insert(found.completed);
            ev.title = ev.title.take().or(found.title);
            ev.external_id = ev.external_id.take().or(found.external_id);
            ev.hydrated = Some(install);
        }
        Ok(EntityKeys::same(StateKey::Milestone {
            install: install_id,
            milestone: mid,
        }))
    }

    async fn decide(
        &self,
        kit: &Kit,
        _msg: &StageMessage<'_>,
        ev: MilestoneEvent,
        last: Option<&SyncState>,
    ) -> Result<Decision, SyncError> {
        let (install_id, mid) = (ev.install_id, ev.milestone_id);
        let start = ev.start.clone().flatten();
        let completed = ev.completed.clone().flatten();
        let external_id = ev.external_id.clone().or_else(|| {
            self.fields
                .milestone_keys
                .iter()
                .find(|(_, id)| **id == mid)
                .map(|(k, _)| k.clone())
        });
        let dates = json!({"start_date": start, "completed_date": completed});
        let data = json!({
            "milestone": {"id": mid, "title": ev.title, "external_id": external_id},
            "start_date": start,
            "completed_date": completed,
        });
        let last_completed = last
            .and_then(|s| s.data.get("completed_date"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let completion_unchanged = last.is_some() && completed == last_completed;

        // Our own write coming back: the full state we wrote, or a write that set this completion
        // date (whatever the start date), or one that set this start date when the completion is
        // what the CRM already has.
        let target = EchoTarget::Milestone {
            install: install_id,
            milestone: mid,
        };
        let (s, c) = (Some(start.clone()), Some(completed.clone()));
        let mut forms = vec![
            milestone_fingerprint(&s, &c),
            milestone_fingerprint(&None, &c),
        ];
        if completion_unchanged || (last.is_none() && completed.is_none()) {
            forms.push(milestone_fingerprint(&s, &None));
        }
        let remember = Remember {
            hash: content_hash(&dates),
            data: data.clone(),
        };
        if kit
            .echo
            .is_ours(Direction::ToEnerflo, &target, &forms)
            .await?
        {
            // The CRM set these dates itself: it has them; remember them as synced.
            return Ok(Decision::Skip {
                outcome: OutcomeKind::Echo,
                detail: format!("install {install_id} milestone {mid}: our own write echoed back"),
                remember: Some(remember),
            });
        }
        let Some(done) = completed.clone() else {
            return Ok(Decision::skip(
                OutcomeKind::NoCompletion,
                format!(
                    "install {install_id} milestone {mid}: no completion date; nothing to push"
                ),
            ));
        };
        if completion_unchanged {
            return Ok(Decision::skip(
                OutcomeKind::Unchanged,
                format!(
                    "install {install_id} milestone {mid}: completion date {done} already synced"
                ),
            ));
        }
        let link = kit
            .xref
            .link(
                EntityKind::Project,
                &[IdRef::new(IdForm::Install, install_id)],
            )
            .await?;
        // The CRM's automation may send these dates straight back to the inbound route (even
        // before it answers this push), in full or only one of them: every projection of what it
        // will have is ours.
        let echo_forms = vec![
            milestone_fingerprint(&s, &c),
            milestone_fingerprint(&None, &c),
            milestone_fingerprint(&s, &None),
        ];
        Ok(Decision::Push(Box::new(Push {
            event_type: CrmEventType::MilestoneUpdated,
            source_event: EVENT.to_owned(),
            occurred_at: ev.updated_at.clone(),
            kind: EntityKind::Project,
            enerflo: install_project_refs(&link, install_id),
            link,
            remember,
            data,
            raw: kit
                .include_raw
                .then(|| json!({"webhook": ev.record, "install": ev.hydrated})),
            echo: Some((target, echo_forms)),
            subject: format!("install {install_id} milestone {mid}"),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> EnerfloFields {
        EnerfloFields::default()
    }

    fn install_paths() -> Vec<String> {
        crate::classify::DEFAULT_INSTALL_ID_PATHS
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    #[test]
    fn dates_are_read_from_every_known_style() {
        use crate::timefmt::iso_date;
        assert_eq!(iso_date("2025-03-01").as_deref(), Some("2025-03-01"));
        assert_eq!(iso_date("2025-02-30"), None);
        assert_eq!(iso_date("03/01/2025"), None);
        assert_eq!(iso_date("2025-03-01T00:00:00Z"), None);
        for v in [
            json!("2025-03-01"),
            json!("2025-03-01 10:00:00"),
            json!("2025-03-01T10:00:00.000Z"),
            json!({"date": "2025-03-01 10:00:00.000000", "timezone": "UTC"}),
        ] {
            assert_eq!(enerflo_date(&v).as_deref(), Some("2025-03-01"), "{v}");
        }
        for v in [json!("0000-00-00"), json!(""), json!(20250301), json!(null)] {
            assert_eq!(enerflo_date(&v), None, "{v}");
        }
    }

    #[test]
    fn the_sandbox_shape_is_read_with_explicit_nulls_kept() {
        let ev = read_event(
            &json!({"webhook_event": EVENT, "install_id": "700001", "milestone_id": 3901,
                    "milestone": {"id": 3901, "title": "Engineering"},
                    "start_date": null, "completed_date": "2025-03-01"}),
            &fields(),
            &install_paths(),
        )
        .expect("readable");
        assert_eq!((ev.install_id, ev.milestone_id), (700001, 3901));
        assert_eq!(ev.title.as_deref(), Some("Engineering"));
        assert_eq!(
            ev.start,
            Some(None),
            "present but null: known, no hydration"
        );
        assert_eq!(ev.completed, Some(Some("2025-03-01".into())));
    }

    #[test]
    fn nested_shapes_and_absent_dates_are_told_apart() {
        let ev = read_event(
            &json!({"installDetails": {"id": 7}, "install_milestone": {"milestone_id": "12",
                    "completed_at": "2025-03-01 10:00:00"}}),
            &fields(),
            &install_paths(),
        )
        .expect("readable");
        assert_eq!((ev.install_id, ev.milestone_id), (7, 12));
        assert_eq!(ev.completed, Some(Some("2025-03-01".into())));
        assert_eq!(ev.start, None, "absent: hydrate");
    }

    #[test]
    fn an_event_without_ids_names_everything_missing() {
        let err = read_event(
            &json!({"webhook_event": EVENT}),
            &fields(),
            &install_paths(),
        )
        .expect_err("unusable")
        .to_string();
        assert!(err.contains("no install id"), "{err}");
        assert!(err.contains("no milestone id"), "{err}");
        assert!(err.contains("ENERFLO_MILESTONE_ID_PATHS"), "{err}");
        let err = read_event(&json!({"install_id": 7}), &fields(), &install_paths())
            .expect_err("unusable")
            .to_string();
        assert!(
            !err.contains("no install id") && err.contains("no milestone id"),
            "{err}"
        );
    }

    #[test]
    fn milestones_are_found_on_the_install_object() {
        let install = json!({"data": {"id": 7, "all_milestones": [
            {"id": 1, "milestone_id": 3900, "title": "Survey", "completed_date": "2025-01-01"},
            {"id": 2, "milestone_id": 3901, "milestone": {"title": "Engineering"},
             "start_date": "2025-02-01 00:00:00", "completed_at": null}
        ]}});
        let m = milestone_from_install(&install, 3901, &fields()).expect("found");
        assert_eq!(m.start.as_deref(), Some("2025-02-01"));
        assert_eq!(m.completed, None);
        assert_eq!(m.title.as_deref(), Some("Engineering"));
        assert!(milestone_from_install(&install, 2, &fields()).is_none());
        let plain = json!({"milestones": [{"id": 3901, "title": "Engineering", "completed_date": "2025-03-01"}]});
        let m = milestone_from_install(&plain, 3901, &fields()).expect("found");
        assert_eq!(m.completed.as_deref(), Some("2025-03-01"));
    }

    #[test]
    fn fingerprints_cover_only_the_written_fields() {
        let d = |s: &str| Some(Some(s.to_owned()));
        let full = milestone_fingerprint(&d("2025-01-01"), &d("2025-03-01"));
        assert_eq!(
            full,
            content_hash(&json!({"start_date": "2025-01-01", "completed_date": "2025-03-01"}))
        );
        assert_ne!(full, milestone_fingerprint(&None, &d("2025-03-01")));
        assert_ne!(
            milestone_fingerprint(&Some(None), &d("2025-03-01")),
            milestone_fingerprint(&None, &d("2025-03-01"))
        );
    }
}
