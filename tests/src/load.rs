//! The webhook mix of the load test (`tests/tests/e2e/load.rs`) and the load benchmark
//! (`tests/benches/load.rs`): generated webhooks of every stage, each with the key its CRM event
//! answers to, and latency percentiles.

use std::time::Duration;

use serde_json::{Value, json};

use crate::enerflo::{deal_id, submission};

/// One generated webhook: the body, the query string, and the key its CRM event will carry
/// (`None` for an event no stage handles).
pub struct Webhook {
    pub body: String,
    pub query: &'static str,
    pub key: Option<String>,
}

/// Event `i` of the mix: half project submissions, the rest spread over the other stages and
/// ignored events. Every entity is distinct (no two events share an id form), so each routed
/// event is one CRM write.
pub fn webhook(i: usize) -> Webhook {
    let routed = |body: Value, key: String| Webhook {
        body: body.to_string(),
        query: "",
        key: Some(key),
    };
    match i % 10 {
        0..=4 => Webhook {
            body: submission(i as u64),
            query: "",
            key: Some(format!("project:{}", deal_id(i as u64))),
        },
        5 => routed(
            json!({"webhook_event": "new_customer", "id": 10_000_000 + i,
                   "first_name": "Pat", "last_name": "Placeholder",
                   "email": format!("lead{i}@example.com"), "phone": "(555) 010-0000",
                   "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX", "zip": "75001"},
                   "timestamps": {"created_at": "2025-01-01 12:00:00", "updated_at": "2025-01-01 12:00:00", "timezone": "UTC"}}),
            format!("lead:{}", 10_000_000 + i),
        ),
        6 => routed(
            json!({"webhook_event": "update_install", "id": 20_000_000 + i,
                   "status": {"id": 321, "name": "Example Custom Status"},
                   "timestamps": {"updated_at": "2025-04-01 10:00:00", "timezone": "UTC"}}),
            format!("status:{}", 20_000_000 + i),
        ),
        7 => routed(
            json!({"webhook_event": "new_install_note", "install_id": 30_000_000 + i,
                   "note": {"id": 30_000_000 + i, "note": format!("Load note {i}"),
                            "user": {"full_name": "Sam Installer"}, "created_at": "2025-03-01 10:00:00"}}),
            format!("note:{}", 30_000_000 + i),
        ),
        8 if i % 20 == 8 => routed(
            json!({"webhook_event": "project_milestone_updated", "install_id": 40_000_000 + i,
                   "milestone_id": 3901, "milestone": {"id": 3901, "title": "Engineering"},
                   "start_date": "2025-02-01", "completed_date": "2025-03-01",
                   "updated_at": "2025-04-01 10:00:00"}),
            format!("milestone:{}", 40_000_000 + i),
        ),
        8 => {
            let install = 50_000_000 + i;
            Webhook {
                body: json!({"id": install, "status": "complete",
                    "install": {"id": install, "solarData": {"panel_count": 20}},
                    "change_orders": [{"id": 60_000_000 + i, "epc_install_id": install,
                        "status": "complete", "signed_at": "2025-03-02 11:00:00", "deleted_at": null,
                        "change_values": {"panel_count": {"old": 18, "new": 20}}}]})
                .to_string(),
                query: "?event=signed_change_order",
                key: Some(format!("change_order:{install}")),
            }
        }
        _ => Webhook {
            body: json!({"webhook_event": "new_appointment", "id": i}).to_string(),
            query: "",
            key: None,
        },
    }
}

/// The key a CRM event answers to (the inverse of [`webhook`]'s keys).
pub fn key_of(event: &Value) -> String {
    let e = &event["enerflo"];
    let num = |v: &Value| v.as_u64().map(|n| n.to_string()).unwrap_or_default();
    match event["type"].as_str().unwrap_or_default() {
        "project.submitted" | "project.received" => {
            format!("project:{}", e["deal_id"].as_str().unwrap_or_default())
        }
        "lead.upserted" => format!("lead:{}", num(&e["customer_id"])),
        "status.changed" => format!("status:{}", num(&e["install_id"])),
        "note.created" => format!("note:{}", num(&event["data"]["note"]["id"])),
        "milestone.updated" => format!("milestone:{}", num(&e["install_id"])),
        "change_order.signed" => format!("change_order:{}", num(&e["install_id"])),
        other => format!("unknown:{other}"),
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Status change `i` (stage `status` only): install 20_000_000 + `i`, each its own FIFO group and
/// one CRM write.
pub fn status_change(i: usize) -> Webhook {
    let install = 20_000_000 + i;
    Webhook {
        body: json!({"webhook_event": "update_install", "id": install,
               "status": {"id": 321, "name": "Example Custom Status"},
               "timestamps": {"updated_at": "2025-04-01 10:00:00", "timezone": "UTC"}})
        .to_string(),
        query: "",
        key: Some(format!("status:{install}")),
    }
}
