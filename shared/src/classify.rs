//! Which stage handles an Enerflo event, and which entity it belongs to (the FIFO group).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::enerflo::envelope::Envelope;
use crate::enerflo::lenient::{first_path, value_to_string, value_to_u64};

/// The outbound (Enerflo -> CRM) stages, one queue and one consumer each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Leads,
    Project,
    Milestone,
    Status,
    Note,
    ChangeOrder,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Leads,
        Stage::Project,
        Stage::Milestone,
        Stage::Status,
        Stage::Note,
        Stage::ChangeOrder,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Leads => "leads",
            Stage::Project => "project",
            Stage::Milestone => "milestone",
            Stage::Status => "status",
            Stage::Note => "note",
            Stage::ChangeOrder => "change_order",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s.trim())
    }

    /// Prefix of the configuration variables for this stage's queue (`PROJECT_QUEUE_URL`, ...).
    pub fn env_prefix(self) -> &'static str {
        match self {
            Stage::Leads => "LEADS",
            Stage::Project => "PROJECT",
            Stage::Milestone => "MILESTONE",
            Stage::Status => "STATUS",
            Stage::Note => "NOTE",
            Stage::ChangeOrder => "CHANGE_ORDER",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Candidate locations of the install id in v1 install-level events whose shape is not documented
/// (`project_milestone_updated`, `new_install_note`). Overridable by configuration.
pub const DEFAULT_INSTALL_ID_PATHS: &[&str] = &[
    "epc_install_id",
    "install_id",
    "installDetails.id",
    "install.id",
    "install_details.id",
    "project_id",
];

/// The result of classifying one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classification {
    /// A stage handles it. `entity` is the FIFO group (`deal:<uuid>`, `install:<id>`, ...);
    /// `None` when the id could not be found, which the consumer turns into a DLQ entry with a
    /// reason rather than the webhook rejecting a delivery whose shape we only guess.
    Routed {
        stage: Stage,
        entity: Option<String>,
    },
    /// No stage handles this event name.
    Ignored,
}

pub fn classify(env: &Envelope, install_id_paths: &[String]) -> Classification {
    let r = &env.record;
    let routed = |stage, entity| Classification::Routed { stage, entity };
    match env.event.as_str() {
        "new_customer" | "update_customer" => routed(
            Stage::Leads,
            number_at(r, &["id"]).map(|id| format!("customer:{id}")),
        ),
        "customer.created" => routed(
            Stage::Leads,
            string_at(r, &["customer.id"]).map(|id| format!("customer:{id}")),
        ),
        "customer.updated.v2" | "customer.updated" => routed(
            Stage::Leads,
            string_at(r, &["current.id", "customer.id", "previous.id"])
                .map(|id| format!("customer:{id}")),
        ),
        "deal.projectSubmitted" | "deal.projectReceived" => routed(
            Stage::Project,
            string_at(r, &["deal.id"]).map(|id| format!("deal:{id}")),
        ),
        "update_install" | "restore_install" => routed(
            Stage::Status,
            number_at(r, &["id", "install.id"]).map(|id| format!("install:{id}")),
        ),
        "signed_change_order" => routed(
            Stage::ChangeOrder,
            number_at(r, &["install.id", "id", "change_orders.0.epc_install_id"])
                .map(|id| format!("install:{id}")),
        ),
        "project_milestone_updated" => routed(
            Stage::Milestone,
            number_at(r, install_id_paths).map(|id| format!("install:{id}")),
        ),
        "new_install_note" => routed(
            Stage::Note,
            number_at(r, install_id_paths).map(|id| format!("install:{id}")),
        ),
        _ => Classification::Ignored,
    }
}

fn number_at<S: AsRef<str>>(r: &Value, paths: &[S]) -> Option<u64> {
    paths
        .iter()
        .find_map(|p| first_path(r, &[p.as_ref()]).and_then(|(v, _)| value_to_u64(v)))
}

fn string_at(r: &Value, paths: &[&str]) -> Option<String> {
    paths
        .iter()
        .find_map(|p| first_path(r, &[*p]).and_then(|(v, _)| value_to_string(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn classify_json(v: Value) -> Classification {
        let paths: Vec<String> = DEFAULT_INSTALL_ID_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect();
        classify(&Envelope::from_value(v, None).expect("envelope"), &paths)
    }

    #[test]
    fn every_design_event_reaches_its_stage() {
        let cases = [
            (
                json!({"webhook_event":"new_customer","id":9}),
                Stage::Leads,
                "customer:9",
            ),
            (
                json!({"webhook_event":"update_customer","id":"9"}),
                Stage::Leads,
                "customer:9",
            ),
            (
                json!({"event":"customer.created","payload":{"customer":{"id":"u1"}}}),
                Stage::Leads,
                "customer:u1",
            ),
            (
                json!({"event":"customer.updated.v2","payload":{"current":{"id":"u1"}}}),
                Stage::Leads,
                "customer:u1",
            ),
            (
                json!({"event":"deal.projectSubmitted","payload":{"deal":{"id":"d1"}}}),
                Stage::Project,
                "deal:d1",
            ),
            (
                json!({"event":"deal.projectReceived","payload":{"deal":{"id":"d1"}}}),
                Stage::Project,
                "deal:d1",
            ),
            (
                json!({"webhook_event":"update_install","id":7}),
                Stage::Status,
                "install:7",
            ),
            (
                json!({"webhook_event":"restore_install","id":7}),
                Stage::Status,
                "install:7",
            ),
            (
                json!({"webhook_event":"signed_change_order","id":7,"install":{"id":7}}),
                Stage::ChangeOrder,
                "install:7",
            ),
            (
                json!({"webhook_event":"project_milestone_updated","install_id":7}),
                Stage::Milestone,
                "install:7",
            ),
            (
                json!({"webhook_event":"new_install_note","epc_install_id":"7"}),
                Stage::Note,
                "install:7",
            ),
        ];
        for (body, stage, entity) in cases {
            assert_eq!(
                classify_json(body.clone()),
                Classification::Routed {
                    stage,
                    entity: Some(entity.into())
                },
                "{body}"
            );
        }
    }

    #[test]
    fn unknown_events_are_ignored_and_missing_ids_still_route() {
        assert_eq!(
            classify_json(json!({"webhook_event":"new_appointment","id":1})),
            Classification::Ignored
        );
        assert_eq!(
            classify_json(json!({"event":"deal.projectSubmitted","payload":{"deal":{}}})),
            Classification::Routed {
                stage: Stage::Project,
                entity: None
            }
        );
    }
}
