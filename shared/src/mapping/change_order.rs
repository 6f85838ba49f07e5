//! Stage 6 mapping: a v1 `signed_change_order` event to the `change_order.signed` data (docs/design.md
//! 3.3). The event carries the install (`install.solarData`, assumed to show the system after the
//! change) and every change order of the install (`change_orders[]`); the signed one is the latest
//! complete one by `signed_at`. Only the adders' shape is documented (docs/enerflo-api.md 3.6), so
//! the rest is read tolerantly: a field that is absent is `null`, never invented.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::canonical::{Panel, clean};
use crate::enerflo::lenient::{path, value_to_f64, value_to_string, value_to_u64};
use crate::timefmt::parse_enerflo_time;

/// The `data` of a `change_order.signed` event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChangeOrderSigned {
    pub change_order: ChangeOrderRef,
    /// The panel type after the change.
    pub panel: Option<Panel>,
    pub panel_count: Option<u64>,
    /// Every battery field found (keys naming batteries, as Enerflo sent them), after the change.
    pub batteries: Option<Map<String, Value>>,
    /// The adders after the change (`{id, name, cost, quantity}`), when the change order lists them.
    pub adders: Option<Vec<Value>>,
    /// What changed: `{key: {old, new}}` per `change_values` key; for `adders` also `added`,
    /// `removed` and `updated`.
    pub changes: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChangeOrderRef {
    /// As Enerflo sent it (a number in v1).
    pub id: Value,
    /// RFC 3339.
    pub signed_at: String,
}

/// Why an event could not be mapped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeOrderError {
    #[error(
        "no complete signed change order in `change_orders` (needs a `signed_at` timestamp, status `complete` and no `deleted_at`; {0} element(s) seen)"
    )]
    NoCompleteChangeOrder(usize),
}

/// The install the event is about: `install.id`, the root `id` (the install id in v1), or the
/// change orders' `epc_install_id`.
pub fn install_id(record: &Value) -> Option<u64> {
    ["install.id", "id"]
        .iter()
        .find_map(|p| path(record, p).and_then(value_to_u64))
        .or_else(|| {
            change_orders(record)
                .into_iter()
                .find_map(|co| co.get("epc_install_id").and_then(value_to_u64))
        })
}

/// The v1 survey id and customer id of the install, when the event carries them.
pub fn install_refs(record: &Value) -> (Option<u64>, Option<u64>) {
    let num = |paths: &[&str]| {
        paths
            .iter()
            .find_map(|p| path(record, p).and_then(value_to_u64))
    };
    (
        num(&["install.survey_id", "survey_id"]),
        num(&[
            "install.customer_id",
            "install.customer.id",
            "customer.id",
            "customer_id",
        ]),
    )
}

/// `change_orders` as a list (tolerating an object keyed by id); non-objects are skipped.
fn change_orders(record: &Value) -> Vec<&Value> {
    match record.get("change_orders") {
        Some(Value::Array(items)) => items.iter().filter(|v| v.is_object()).collect(),
        Some(Value::Object(map)) => map.values().filter(|v| v.is_object()).collect(),
        _ => Vec::new(),
    }
}

fn unix(rfc3339: &str) -> Option<i64> {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// `signed_at` as RFC 3339, when the change order is complete: signed, status `complete` (or no
/// status at all), not deleted.
fn complete_signed_at(co: &Value) -> Option<String> {
    if co.get("deleted_at").is_some_and(|v| !v.is_null()) {
        return None;
    }
    let status_ok = match co.get("status") {
        None | Some(Value::Null) => true,
        Some(v) => value_to_string(v).is_some_and(|s| {
            matches!(
                s.to_ascii_lowercase().as_str(),
                "complete" | "completed" | "signed"
            )
        }),
    };
    if !status_ok {
        return None;
    }
    co.get("signed_at")
        .and_then(value_to_string)
        .and_then(|s| parse_enerflo_time(&s))
}

/// The signed change order: the latest complete one by `signed_at` (ties: the higher id).
pub fn latest_complete(record: &Value) -> Result<(&Value, String), ChangeOrderError> {
    let all = change_orders(record);
    all.iter()
        .filter_map(|co| complete_signed_at(co).map(|at| (*co, at)))
        .max_by_key(|(co, at)| {
            (
                unix(at).unwrap_or(i64::MIN),
                co.get("id").and_then(value_to_u64).unwrap_or(0),
            )
        })
        .ok_or(ChangeOrderError::NoCompleteChangeOrder(all.len()))
}

/// Maps the event. `Err` only when no complete change order is present.
pub fn map_change_order(record: &Value) -> Result<ChangeOrderSigned, ChangeOrderError> {
    let (co, signed_at) = latest_complete(record)?;
    let solar = path(record, "install.solarData").filter(|v| v.is_object());
    let values = co.get("change_values").filter(|v| v.is_object());

    let mut changes = Map::new();
    let mut adders = None;
    if let Some(Value::Object(values)) = values {
        for (key, value) in values {
            if key.eq_ignore_ascii_case("adders") {
                let diff = AdderDiff::from_change(value);
                adders = Some(diff.result.clone());
                changes.insert(key.clone(), diff.into_value());
            } else {
                let (old, new) = old_and_new(value);
                changes.insert(
                    key.clone(),
                    serde_json::json!({"old": old.clone(), "new": new.clone()}),
                );
            }
        }
    }

    // The change order's own new value wins over solarData (which may or may not be updated yet).
    let changed = |names: &[&str]| -> Option<Value> {
        names.iter().find_map(|n| {
            changes
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .and_then(|(_, v)| v.get("new").filter(|v| !v.is_null()).cloned())
        })
    };
    let from_solar = |key: &str| solar.and_then(|s| s.get(key)).filter(|v| !v.is_null());

    let panel = changed(&["panel", "panel_type", "module"])
        .as_ref()
        .and_then(read_panel)
        .or_else(|| from_solar("panel").and_then(read_panel));
    let panel_count = changed(&["panel_count", "module_count", "num_panels"])
        .as_ref()
        .and_then(value_to_u64)
        .or_else(|| from_solar("panel_count").and_then(value_to_u64));

    let mut batteries = Map::new();
    if let Some(Value::Object(s)) = solar {
        for (k, v) in s {
            if names_batteries(k) && !v.is_null() {
                batteries.insert(k.clone(), v.clone());
            }
        }
    }
    for (k, v) in &changes {
        if names_batteries(k) {
            // A change to null (batteries removed) is kept as null: it is what the order says.
            batteries.insert(k.clone(), v.get("new").cloned().unwrap_or(Value::Null));
        }
    }

    Ok(ChangeOrderSigned {
        change_order: ChangeOrderRef {
            id: co.get("id").cloned().unwrap_or(Value::Null),
            signed_at,
        },
        panel,
        panel_count,
        batteries: (!batteries.is_empty()).then_some(batteries),
        adders,
        changes,
    })
}

fn names_batteries(key: &str) -> bool {
    key.to_ascii_lowercase().contains("batter")
}

/// A `change_values` entry as (old, new): `{new, old}` objects, else the value itself is the new one.
fn old_and_new(value: &Value) -> (Value, Value) {
    match value {
        Value::Object(m) if m.contains_key("new") || m.contains_key("old") => (
            m.get("old").cloned().unwrap_or(Value::Null),
            m.get("new").cloned().unwrap_or(Value::Null),
        ),
        other => (Value::Null, other.clone()),
    }
}

fn read_panel(v: &Value) -> Option<Panel> {
    if let Some(name) = v.as_str() {
        return clean(Some(name)).map(|name| Panel {
            name: Some(name),
            ..Panel::default()
        });
    }
    let text = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| v.get(*k).and_then(value_to_string))
    };
    let panel = Panel {
        name: text(&["name", "title", "panel_name"]),
        manufacturer: text(&["manufacturer", "make", "brand"]),
        model: text(&["model"]),
        capacity_watts: ["capacity", "capacity_watts", "watts", "wattage", "output"]
            .iter()
            .find_map(|k| v.get(*k).and_then(value_to_f64)),
    };
    (panel != Panel::default()).then_some(panel)
}

/// A number as sent, or a numeric string as a number; anything else `null`.
fn number(v: Option<&Value>) -> Value {
    match v {
        Some(n @ Value::Number(_)) => n.clone(),
        Some(Value::String(s)) => {
            let t = s.trim();
            t.parse::<u64>()
                .map(Value::from)
                .or_else(|_| t.parse::<i64>().map(Value::from))
                .ok()
                .or_else(|| {
                    t.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                })
                .unwrap_or(Value::Null)
        }
        _ => Value::Null,
    }
}

/// One adder of a change order, keyed by its id.
struct AdderEntry {
    active: bool,
    /// `{id, name, cost, quantity}`.
    view: Value,
}

fn adder_entries(v: Option<&Value>) -> BTreeMap<String, AdderEntry> {
    let items: Vec<(Option<&String>, &Value)> = match v {
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (Some(k), v)).collect(),
        // PHP serialises an empty map as `[]`; a list is tolerated too.
        Some(Value::Array(a)) => a.iter().map(|v| (None, v)).collect(),
        _ => Vec::new(),
    };
    items
        .into_iter()
        .filter(|(_, a)| a.is_object())
        .filter_map(|(key, a)| {
            let id = a
                .get("id")
                .filter(|v| !v.is_null())
                .cloned()
                .or_else(|| key.map(|k| Value::String(k.clone())));
            let id_text = id.as_ref().and_then(value_to_string)?;
            let id = match number(id.as_ref()) {
                Value::Null => Value::String(id_text.clone()),
                n => n,
            };
            let active = match a.get("active") {
                Some(Value::Bool(b)) => *b,
                Some(Value::Number(n)) => n.as_f64() != Some(0.0),
                Some(Value::String(s)) => {
                    !matches!(s.trim().to_ascii_lowercase().as_str(), "false" | "0" | "no")
                }
                _ => true,
            };
            let view = serde_json::json!({
                "id": id,
                "name": a.get("name").and_then(value_to_string),
                "cost": number(a.get("cost")),
                "quantity": number(a.get("quantity")),
            });
            Some((id_text, AdderEntry { active, view }))
        })
        .collect()
}

/// The adder part of a change order: the resulting list and what was added, removed or updated.
struct AdderDiff {
    old: Vec<Value>,
    result: Vec<Value>,
    added: Vec<Value>,
    removed: Vec<Value>,
    updated: Vec<Value>,
}

impl AdderDiff {
    /// An adder in `new` and active is in the result; one in `old` but not in `new`, or in `new`
    /// with `active: false`, is removed; one active in `new` but not active in `old` is added.
    fn from_change(value: &Value) -> Self {
        let (old_v, new_v) = old_and_new(value);
        let old = adder_entries(Some(&old_v));
        let new = adder_entries(Some(&new_v));
        let mut diff = AdderDiff {
            old: old.values().map(|e| e.view.clone()).collect(),
            result: Vec::new(),
            added: Vec::new(),
            removed: Vec::new(),
            updated: Vec::new(),
        };
        for (id, entry) in &new {
            if !entry.active {
                diff.removed.push(entry.view.clone());
                continue;
            }
            diff.result.push(entry.view.clone());
            match old.get(id) {
                Some(before) if before.active => {
                    if before.view != entry.view {
                        diff.updated.push(serde_json::json!({
                            "id": entry.view["id"].clone(),
                            "old": before.view.clone(),
                            "new": entry.view.clone(),
                        }));
                    }
                }
                _ => diff.added.push(entry.view.clone()),
            }
        }
        for (id, entry) in &old {
            if !new.contains_key(id) {
                diff.removed.push(entry.view.clone());
            }
        }
        diff
    }

    fn into_value(self) -> Value {
        serde_json::json!({
            "old": self.old,
            "new": self.result,
            "added": self.added,
            "removed": self.removed,
            "updated": self.updated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        let text = include_str!("../../../tests/fixtures/enerflo/v1-signed_change_order.json");
        serde_json::from_str(text).expect("fixture is JSON")
    }

    fn co(id: u64, status: &str, signed_at: Option<&str>, values: Value) -> Value {
        json!({"id": id, "epc_install_id": 700001, "status": status, "signed_at": signed_at,
               "deleted_at": null, "change_values": values})
    }

    #[test]
    fn the_sample_maps_panel_count_and_a_deactivated_adder_as_removed() {
        let data = map_change_order(&sample()).expect("maps");
        assert_eq!(install_id(&sample()), Some(700001));
        assert_eq!(install_refs(&sample()), (Some(4000001), Some(900001)));
        assert_eq!(data.change_order.id, json!(8000001));
        assert_eq!(data.change_order.signed_at, "2025-03-02T11:00:00Z");
        assert_eq!(data.panel_count, Some(20));
        assert_eq!(
            data.panel, None,
            "solarData.panel is {{}}: unknown, not invented"
        );
        assert_eq!(data.batteries, None, "the sample has no battery field");
        assert_eq!(data.adders, Some(vec![]), "the only adder is inactive");
        let adders = &data.changes["adders"];
        assert_eq!(
            adders["removed"],
            json!([{"id": 111, "name": "Example Adder", "cost": 300, "quantity": 1}])
        );
        assert_eq!(adders["added"], json!([]));
    }

    #[test]
    fn a_hand_made_change_with_panels_batteries_and_adders_added_and_removed() {
        let mut record = sample();
        record["install"]["solarData"]["panel"] =
            json!({"name": "410W Module", "manufacturer": "Example Solar", "capacity": 410});
        record["install"]["solarData"]["panel_count"] = json!(24);
        record["install"]["solarData"]["battery_count"] = json!(1);
        record["change_orders"] = json!([co(
            8000002,
            "complete",
            Some("2025-04-01 09:00:00"),
            json!({
                "panel_count": {"old": 20, "new": "24"},
                "Batteries": {"old": [], "new": [{"name": "Example Battery 13.5", "quantity": 2}]},
                "battery_count": {"old": 0, "new": 2},
                "adders": {
                    "old": {"111": {"id": 111, "name": "Trenching", "cost": 300, "active": true, "quantity": 1},
                            "112": {"id": 112, "name": "Critter guard", "cost": "150.5", "active": true, "quantity": 1}},
                    "new": {"112": {"id": 112, "name": "Critter guard", "cost": 175, "active": true, "quantity": 1},
                            "113": {"id": "113", "name": "Main panel upgrade", "cost": 2000, "active": 1, "quantity": 1}}
                }
            })
        )]);
        let data = map_change_order(&record).expect("maps");
        assert_eq!(data.panel_count, Some(24));
        let panel = data.panel.expect("panel");
        assert_eq!(panel.name.as_deref(), Some("410W Module"));
        assert_eq!(panel.capacity_watts, Some(410.0));
        let batteries = data.batteries.expect("batteries");
        assert_eq!(
            batteries["battery_count"],
            json!(2),
            "the change order wins"
        );
        assert_eq!(batteries["Batteries"][0]["quantity"], json!(2));
        let ids = |v: &Value| -> Vec<Value> {
            v.as_array()
                .map(|a| a.iter().map(|x| x["id"].clone()).collect())
                .unwrap_or_default()
        };
        let result = data.adders.expect("adders");
        assert_eq!(ids(&json!(result)), vec![json!(112), json!(113)]);
        let adders = &data.changes["adders"];
        assert_eq!(ids(&adders["added"]), vec![json!(113)]);
        assert_eq!(ids(&adders["removed"]), vec![json!(111)]);
        assert_eq!(adders["updated"][0]["old"]["cost"], json!(150.5));
        assert_eq!(adders["updated"][0]["new"]["cost"], json!(175));
        assert_eq!(data.changes["panel_count"], json!({"old": 20, "new": "24"}));
    }

    #[test]
    fn without_batteries_or_adders_those_fields_are_null() {
        let mut record = sample();
        record["change_orders"] = json!([co(
            8000003,
            "complete",
            Some("2025-04-01T09:00:00Z"),
            json!({"system_size": {"old": 8.1, "new": 9.72}})
        )]);
        let data = map_change_order(&record).expect("maps");
        assert_eq!(data.batteries, None);
        assert_eq!(data.adders, None);
        assert_eq!(data.panel_count, Some(20), "from solarData");
        assert_eq!(
            data.changes["system_size"],
            json!({"old": 8.1, "new": 9.72})
        );
        let text = serde_json::to_value(&data).expect("serialises");
        assert_eq!(text["batteries"], Value::Null);
        assert_eq!(text["adders"], Value::Null);
        assert_eq!(text["panel"], Value::Null);
    }

    #[test]
    fn the_latest_complete_change_order_wins_and_incomplete_later_ones_are_ignored() {
        let mut record = sample();
        record["change_orders"] = json!([
            co(
                1,
                "complete",
                Some("2025-03-01 10:00:00"),
                json!({"panel_count": {"old": 20, "new": 22}})
            ),
            co(
                3,
                "complete",
                Some("2025-03-05 10:00:00"),
                json!({"panel_count": {"old": 22, "new": 26}})
            ),
            co(
                2,
                "complete",
                Some("2025-03-03 10:00:00"),
                json!({"panel_count": {"old": 22, "new": 24}})
            ),
            co(
                4,
                "pending",
                Some("2025-03-09 10:00:00"),
                json!({"panel_count": {"old": 26, "new": 30}})
            ),
            co(
                5,
                "complete",
                None,
                json!({"panel_count": {"old": 26, "new": 31}})
            ),
            json!({"id": 6, "status": "complete", "signed_at": "2025-03-10 10:00:00",
                   "deleted_at": "2025-03-11 10:00:00", "change_values": {"panel_count": {"new": 32}}}),
            json!("not an object"),
        ]);
        let data = map_change_order(&record).expect("maps");
        assert_eq!(data.change_order.id, json!(3));
        assert_eq!(data.panel_count, Some(26));
    }

    #[test]
    fn timestamps_in_different_styles_compare_as_instants() {
        let mut record = sample();
        record["change_orders"] = json!([
            co(1, "complete", Some("2025-03-05T12:00:00+02:00"), json!({})),
            co(2, "Complete", Some("2025-03-05 11:00:00"), json!({})),
        ]);
        // 12:00+02:00 is 10:00Z, earlier than 11:00Z.
        assert_eq!(
            map_change_order(&record).expect("maps").change_order.id,
            json!(2)
        );
    }

    #[test]
    fn no_complete_change_order_is_an_error_naming_what_was_seen() {
        let mut record = sample();
        record["change_orders"] = json!([co(1, "pending", Some("2025-03-05 11:00:00"), json!({}))]);
        let err = map_change_order(&record).expect_err("nothing signed");
        assert_eq!(err, ChangeOrderError::NoCompleteChangeOrder(1));
        assert!(err.to_string().contains("signed_at"));
        record["change_orders"] = json!({});
        assert_eq!(
            map_change_order(&record).expect_err("none"),
            ChangeOrderError::NoCompleteChangeOrder(0)
        );
    }

    #[test]
    fn an_empty_old_list_and_string_keyed_ids_are_tolerated() {
        let mut record = sample();
        record["change_orders"] = json!([co(
            1,
            "complete",
            Some("2025-03-05 11:00:00"),
            json!({
                "adders": {"old": [], "new": {"7": {"name": "EV charger", "cost": "900"}}}
            })
        )]);
        let data = map_change_order(&record).expect("maps");
        assert_eq!(
            data.adders,
            Some(vec![
                json!({"id": 7, "name": "EV charger", "cost": 900, "quantity": null})
            ])
        );
    }
}
