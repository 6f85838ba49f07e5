//! What the sweep compares, entity by entity, against the last synced state each stage keeps
//! (`crate::pipeline`), judged the way the stage judges "changed" (so an event the sweep enqueues
//! is one the stage will push, and one it would find unchanged is never enqueued):
//!
//! - **status** (`status#install:<id>`): the install's status id (its name when the row carries
//!   no id) against `data.status`; `update_install` when different or never synced.
//! - **milestone** (`milestone#install:<id>:<milestone>`): each listed milestone's completion date
//!   against `data.completed_date`; `project_milestone_updated` when it has one that is new or
//!   different (the stage pushes completions only: a milestone not completed, or whose date was
//!   cleared, is not pushed).
//! - **leads** (`lead#<customer entity>`): the customer's mapped fields (`crate::mapping::lead`),
//!   merged over the last synced state as the stage merges them, by the stage's state hash;
//!   `update_customer` when different, `new_customer` when never synced (unless too thin to make
//!   a contact of, which the stage would skip).
//!
//! Each synthetic body is shaped like the webhook the stage reads, with `"sync_source":
//! "reconcile"`. Its dedupe key is derived from the change: the entity, the last synced state it
//! differs from (sequence number and hash) and what it would become, so the same drift found by
//! two sweeps (or a sweep and a backfill) is enqueued once, while a later change of the same
//! entity (even back to an earlier value) gets a new key.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::{EnerfloFields, LeadFields};
use crate::enerflo::envelope::Envelope;
use crate::enerflo::lenient::{path, value_to_string, value_to_u64};
use crate::hashing::content_hash;
use crate::http::webhook::RECONCILE_KEY_PREFIX;
use crate::mapping::lead::{CustomerEvent, is_thin, merge_keep, phone_digits, state_hash};
use crate::registry::Stage;
use crate::stages::milestone::milestone_from_install;
use crate::stages::status::read_status;
use crate::store::{EntityKind, IdForm, IdRef, StoreError, SyncState, SyncStateStore, XrefStore};
use crate::sync::StateKey;

/// The mark every synthetic body carries at its root.
pub const SOURCE_FIELD: &str = "sync_source";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// Never synced by the stage.
    Created,
    /// Synced, and different now.
    Updated,
}

/// One difference, as the event that repairs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Drift {
    pub stage: Stage,
    pub kind: DriftKind,
    /// The entity (`install:7`, `install:7 milestone 3901`, `customer:9`), for reports.
    pub subject: String,
    /// What differs, without customer data (`status 1 -> 4`, `email, phone`).
    pub what: String,
    pub body: Value,
    pub dedupe_key: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Drift(Box<Drift>),
    Unchanged,
    /// Nothing the stage would push (the reason, for the report).
    Skipped(&'static str),
}

pub struct Comparer<'a> {
    pub state: &'a dyn SyncStateStore,
    pub xref: &'a dyn XrefStore,
    pub fields: &'a EnerfloFields,
    pub lead_fields: &'a LeadFields,
    pub install_id_paths: &'a [String],
}

/// `reconcile:<event>:<entity>:<24 hex of the change>`.
fn change_key(
    event: &str,
    entity: &str,
    stage: Stage,
    last: Option<&SyncState>,
    to: &Value,
) -> String {
    let from = last.map(|s| json!({"seq": s.seq, "hash": s.hash}));
    let h = content_hash(&json!({"stage": stage.as_str(), "from": from, "to": to}));
    format!("{RECONCILE_KEY_PREFIX}{event}:{entity}:{}", &h[..24])
}

/// Sets `dotted` in `root`, creating objects on the way (a non-object on the way is replaced).
fn put_at(root: &mut Value, dotted: &str, v: Value) {
    let mut cur = root;
    let mut parts = dotted.split('.').peekable();
    while let Some(key) = parts.next() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(map) = cur else { return };
        if parts.peek().is_none() {
            map.insert(key.to_owned(), v);
            return;
        }
        cur = map.entry(key.to_owned()).or_insert(Value::Null);
    }
}

/// `preferred` when it is one of the configured paths, else the first configured one.
fn where_to_write<'p>(paths: &'p [String], preferred: &'p str) -> &'p str {
    paths
        .iter()
        .find(|p| p.as_str() == preferred)
        .or_else(|| paths.first())
        .map_or(preferred, String::as_str)
}

/// When a row says it last changed, as it says it (for the synthetic event's `updated_at`).
pub fn updated_at(row: &Value, paths: &[String]) -> Option<String> {
    paths
        .iter()
        .find_map(|p| path(row, p).and_then(value_to_string))
}

/// The milestone ids an install object lists (`all_milestones[]`, `milestones[]`,
/// `install_milestones[]`, bare or under `data` / `install`), each by `milestone_id` or, lacking
/// one, its `id`: the entries the milestone stage matches. `None` when it has no such list.
pub fn listed_milestones(install: &Value) -> Option<Vec<u64>> {
    let mut found = false;
    let mut ids = Vec::new();
    for root in [Some(install), install.get("data"), install.get("install")]
        .into_iter()
        .flatten()
    {
        for key in ["all_milestones", "milestones", "install_milestones"] {
            if let Some(entries) = root.get(key).and_then(Value::as_array) {
                found = true;
                for e in entries {
                    let id = ["milestone_id", "milestone.id", "id"]
                        .iter()
                        .find_map(|p| path(e, p).and_then(value_to_u64));
                    if let Some(id) = id
                        && !ids.contains(&id)
                    {
                        ids.push(id);
                    }
                }
            }
        }
    }
    found.then_some(ids)
}

fn status_text(id: Option<u64>, name: Option<&str>) -> String {
    match (id, name) {
        (Some(id), _) => id.to_string(),
        (None, Some(n)) => format!("`{n}`"),
        (None, None) => "none".into(),
    }
}

fn kind_of(last: &Option<SyncState>) -> DriftKind {
    if last.is_some() {
        DriftKind::Updated
    } else {
        DriftKind::Created
    }
}

impl Comparer<'_> {
    async fn last(&self, key: &StateKey) -> Result<Option<SyncState>, StoreError> {
        self.state.get_state(&key.scope()).await
    }

    /// Stage 4.2: the install's status. `source` is its list row or its own object.
    pub async fn status(
        &self,
        install_id: u64,
        source: &Value,
        updated: Option<&str>,
    ) -> Result<Verdict, StoreError> {
        let (id, name) = read_status(source);
        if id.is_none() && name.is_none() {
            return Ok(Verdict::Skipped("no status on the install"));
        }
        let last = self.last(&StateKey::Status(install_id)).await?;
        let synced = last
            .as_ref()
            .and_then(|s| s.data.get("status"))
            .filter(|v| !v.is_null());
        let (last_id, last_name) = (
            synced.and_then(|s| s.get("id")).and_then(value_to_u64),
            synced.and_then(|s| s.get("name")).and_then(value_to_string),
        );
        let same = match (id, name.as_deref()) {
            (Some(id), _) => last_id == Some(id),
            (None, Some(n)) => last_name
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case(n)),
            (None, None) => true,
        };
        if last.is_some() && same {
            return Ok(Verdict::Unchanged);
        }
        let entity = format!("install:{install_id}");
        let mut body = json!({
            "webhook_event": "update_install",
            "id": install_id,
            "status": {"id": id, "name": name},
            SOURCE_FIELD: "reconcile",
        });
        if let Some(t) = updated {
            body["updated_at"] = json!(t);
        }
        let to = json!({"status_id": id, "status_name": name});
        let what = match &last {
            Some(_) => format!(
                "status {} -> {}",
                status_text(last_id, last_name.as_deref()),
                status_text(id, name.as_deref())
            ),
            None => format!("status {} never synced", status_text(id, name.as_deref())),
        };
        Ok(Verdict::Drift(Box::new(Drift {
            stage: Stage::Status,
            kind: kind_of(&last),
            what,
            dedupe_key: change_key("update_install", &entity, Stage::Status, last.as_ref(), &to),
            subject: entity,
            body,
        })))
    }

    /// Stage 3.2: every milestone the install object lists. `None` when it lists none at all (the
    /// caller fetches the install's own object, or skips).
    pub async fn milestones(
        &self,
        install_id: u64,
        install: &Value,
        updated: Option<&str>,
    ) -> Result<Option<Vec<Verdict>>, StoreError> {
        let Some(ids) = listed_milestones(install) else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(ids.len());
        for mid in ids {
            let Some(m) = milestone_from_install(install, mid, self.fields) else {
                continue;
            };
            let Some(done) = m.completed.clone() else {
                out.push(Verdict::Skipped("milestone not completed"));
                continue;
            };
            let last = self
                .last(&StateKey::Milestone {
                    install: install_id,
                    milestone: mid,
                })
                .await?;
            let last_done = last
                .as_ref()
                .and_then(|s| s.data.get("completed_date"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if last.is_some() && last_done.as_deref() == Some(done.as_str()) {
                out.push(Verdict::Unchanged);
                continue;
            }
            let f = self.fields;
            let mut body = json!({
                "webhook_event": "project_milestone_updated",
                "milestone": {"id": mid, "title": m.title},
                SOURCE_FIELD: "reconcile",
            });
            if let Some(ext) = &m.external_id {
                body["milestone"]["external_id"] = json!(ext);
            }
            put_at(
                &mut body,
                where_to_write(self.install_id_paths, "install_id"),
                json!(install_id),
            );
            put_at(
                &mut body,
                where_to_write(&f.milestone_id_paths, "milestone_id"),
                json!(mid),
            );
            // Both dates present (an unknown start as null), so the stage does not hydrate.
            put_at(
                &mut body,
                where_to_write(&f.milestone_start_paths, "start_date"),
                json!(m.start),
            );
            put_at(
                &mut body,
                where_to_write(&f.milestone_completed_paths, "completed_date"),
                json!(done),
            );
            if let Some(t) = updated {
                body["updated_at"] = json!(t);
            }
            let entity = format!("install:{install_id}");
            let to = json!({"milestone_id": mid, "completed_date": done});
            out.push(Verdict::Drift(Box::new(Drift {
                stage: Stage::Milestone,
                kind: kind_of(&last),
                subject: format!("install:{install_id} milestone {mid}"),
                what: format!(
                    "completed {done} (synced: {})",
                    last_done.as_deref().unwrap_or("none")
                ),
                dedupe_key: change_key(
                    "project_milestone_updated",
                    &entity,
                    Stage::Milestone,
                    last.as_ref(),
                    &to,
                ),
                body,
            })));
        }
        Ok(Some(out))
    }

    /// Stage 1.2: one row of the v1 customer list.
    pub async fn customer(&self, row: &Value) -> Result<Verdict, StoreError> {
        let mut body = match row {
            Value::Object(_) => row.clone(),
            _ => return Ok(Verdict::Skipped("customer row is not an object")),
        };
        body["webhook_event"] = json!("update_customer");
        body[SOURCE_FIELD] = json!("reconcile");
        let Ok(env) = Envelope::from_value(body.clone(), None) else {
            return Ok(Verdict::Skipped("customer row is not an object"));
        };
        let customer = CustomerEvent::from_envelope(&env, self.lead_fields);
        let Some(customer_id) = customer.ids.customer_id else {
            return Ok(Verdict::Skipped("customer row without an id"));
        };
        let mut ids = Vec::new();
        if let Some(ext) = &customer.ids.external_id {
            ids.push(IdRef::new(IdForm::Integration, ext));
        }
        ids.push(IdRef::new(IdForm::CustomerId, customer_id));
        let mut link = None;
        for id in &ids {
            if let Some(l) = self.xref.resolve(EntityKind::Customer, id).await? {
                link = Some(l);
                break;
            }
        }
        let last = match &link {
            Some(l) => self.last(&StateKey::Lead(l.key.clone())).await?,
            None => None,
        };
        let fresh = serde_json::to_value(&customer.lead).unwrap_or(Value::Null);
        let entity = format!("customer:{customer_id}");
        let (hash, what) = match &last {
            None if is_thin(&customer.lead) => {
                return Ok(Verdict::Skipped(
                    "customer too thin to create a contact from (no name or no contact data)",
                ));
            }
            None => (state_hash(&fresh), "never synced".to_owned()),
            Some(l) => {
                let merged = merge_keep(&fresh, &l.data);
                let hash = state_hash(&merged);
                if hash == l.hash {
                    return Ok(Verdict::Unchanged);
                }
                let changed = changed_fields(&merged, &l.data);
                let what = if changed.is_empty() {
                    "mapped fields changed".to_owned()
                } else {
                    changed.join(", ")
                };
                (hash, what)
            }
        };
        let kind = kind_of(&last);
        let event = match kind {
            DriftKind::Created => "new_customer",
            DriftKind::Updated => "update_customer",
        };
        body["webhook_event"] = json!(event);
        Ok(Verdict::Drift(Box::new(Drift {
            stage: Stage::Leads,
            kind,
            what,
            dedupe_key: change_key(event, &entity, Stage::Leads, last.as_ref(), &json!(hash)),
            subject: entity,
            body,
        })))
    }
}

/// The names of the lead fields that differ (`address.zip`), never their values.
fn changed_fields(now: &Value, was: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let (Some(n), Some(w)) = (now.as_object(), was.as_object()) else {
        return out;
    };
    let keys: std::collections::BTreeSet<&String> = n.keys().chain(w.keys()).collect();
    for k in keys {
        let (a, b) = (
            n.get(k).unwrap_or(&Value::Null),
            w.get(k).unwrap_or(&Value::Null),
        );
        if k == "phone" {
            if phone_digits(a.as_str()) != phone_digits(b.as_str()) {
                out.push(k.clone());
            }
        } else if a.is_object() || b.is_object() {
            out.extend(
                changed_fields(a, b)
                    .into_iter()
                    .map(|sub| format!("{k}.{sub}")),
            );
        } else if a != b {
            out.push(k.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_at_builds_nested_paths_without_losing_siblings() {
        let mut v = json!({"milestone": {"id": 1, "title": "T"}});
        put_at(&mut v, "milestone.completed_date", json!("2025-03-01"));
        put_at(&mut v, "install.id", json!(7));
        assert_eq!(
            v,
            json!({"milestone": {"id": 1, "title": "T", "completed_date": "2025-03-01"},
                   "install": {"id": 7}})
        );
    }

    #[test]
    fn listed_milestones_reads_every_list_shape_and_tells_none_from_empty() {
        let install = json!({"data": {"all_milestones": [
            {"id": 50001, "milestone_id": 3900}, {"milestone": {"id": 3901}}, {"id": 3902}
        ]}});
        assert_eq!(listed_milestones(&install), Some(vec![3900, 3901, 3902]));
        assert_eq!(listed_milestones(&json!({"milestones": []})), Some(vec![]));
        assert_eq!(listed_milestones(&json!({"id": 7})), None);
    }

    #[test]
    fn changed_fields_names_fields_not_values() {
        let now = json!({"email": "b@example.com", "phone": "5550100000",
                         "address": {"zip": "75002", "city": "X"}});
        let was = json!({"email": "a@example.com", "phone": "(555) 010-0000",
                         "address": {"zip": "75001", "city": "X"}});
        assert_eq!(changed_fields(&now, &was), ["address.zip", "email"]);
    }
}
