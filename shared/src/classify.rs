//! Which stage handles an Enerflo event, and which entity it belongs to (the FIFO group), both
//! from the stage registry (`crate::registry`).

use crate::enerflo::envelope::Envelope;

pub use crate::registry::Stage;

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
    match crate::registry::stage_of(&env.event) {
        Some(stage) => Classification::Routed {
            stage,
            entity: crate::registry::entity_of(stage, &env.event, &env.record, install_id_paths)
                .map(|e| e.to_string()),
        },
        None => Classification::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

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

    #[test]
    fn a_status_event_naming_its_install_only_in_install_details_gets_that_install_as_group() {
        // The status stage reads installDetails.id and the configured paths: so must the group,
        // or per-install ordering is lost to an `unidentified:` group.
        assert_eq!(
            classify_json(
                json!({"webhook_event":"update_install","installDetails":{"id":7},
                                 "status":{"id":1,"name":"Active"}})
            ),
            Classification::Routed {
                stage: Stage::Status,
                entity: Some("install:7".into())
            }
        );
        assert_eq!(
            classify_json(json!({"webhook_event":"update_install","epc_install_id":"8"})),
            Classification::Routed {
                stage: Stage::Status,
                entity: Some("install:8".into())
            }
        );
        // A note nested under `note` (which the note stage reads) is grouped by its install too.
        assert_eq!(
            classify_json(json!({"webhook_event":"new_install_note","note":{"install_id":9}})),
            Classification::Routed {
                stage: Stage::Note,
                entity: Some("install:9".into())
            }
        );
    }
}
