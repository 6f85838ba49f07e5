//! The one stage registry: per outbound stage its Enerflo events, the entity extractor (the same
//! for the FIFO group the webhook assigns and for the stage handler), its configuration prefix,
//! CRM event types and Lambda function; per inbound route its function and HTTP route. Webhook
//! ingest (`crate::classify`), the consumers (`crate::runtime`), the Lambda binaries and the
//! template checker (through `infra/stages.json`, kept equal to this list by a test) all read it.
//!
//! Adding a stage: a variant of [`Stage`], an entry in [`STAGES`], its module in `crate::stages`
//! (an `OutboundStage`), its function binary and its template blocks.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::canonical::CrmEventType;
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

    pub fn spec(self) -> &'static StageSpec {
        // Every variant has exactly one entry (checked by a test).
        STAGES
            .iter()
            .find(|s| s.stage == self)
            .unwrap_or(&STAGES[0])
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    pub fn parse(s: &str) -> Option<Self> {
        STAGES
            .iter()
            .find(|spec| spec.name == s.trim())
            .map(|spec| spec.stage)
    }

    /// Prefix of the configuration variables for this stage's queue (`PROJECT_QUEUE_URL`, ...).
    pub fn env_prefix(self) -> &'static str {
        self.spec().env_prefix
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Enerflo entity an event is about: its FIFO group, lease and state all follow from it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EntityId {
    /// A customer by its v1 id or v2 UUID.
    Customer(String),
    /// A v2 deal by its UUID.
    Deal(String),
    /// A v1 install.
    Install(u64),
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Customer(id) => write!(f, "customer:{id}"),
            Self::Deal(id) => write!(f, "deal:{id}"),
            Self::Install(id) => write!(f, "install:{id}"),
        }
    }
}

/// Reads an event's entity from its record (`Envelope::record`), given the configured
/// install-id paths (`ENERFLO_INSTALL_ID_PATHS`).
pub type EntityExtractor =
    fn(event: &str, record: &Value, install_id_paths: &[String]) -> Option<EntityId>;

pub struct StageSpec {
    pub stage: Stage,
    /// The stage's name in queues, logs and the event log.
    pub name: &'static str,
    /// The Enerflo events it handles (v1 `webhook_event` or v2 `event`).
    pub events: &'static [&'static str],
    pub env_prefix: &'static str,
    pub crm_events: &'static [CrmEventType],
    /// Its Lambda function (the binary and the template's `CodeUri` directory).
    pub function: &'static str,
    pub entity: EntityExtractor,
}

/// Where a status event names its install, before the configured paths.
pub const STATUS_INSTALL_ID_PATHS: &[&str] = &["id", "install.id", "installDetails.id"];

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

fn customer_entity(event: &str, r: &Value, _: &[String]) -> Option<EntityId> {
    let id = match event {
        "new_customer" | "update_customer" => number_at(r, &["id"]).map(|id| id.to_string()),
        "customer.created" => string_at(r, &["customer.id"]),
        _ => string_at(r, &["current.id", "customer.id", "previous.id"]),
    };
    id.map(EntityId::Customer)
}

fn deal_entity(_: &str, r: &Value, _: &[String]) -> Option<EntityId> {
    string_at(r, &["deal.id"]).map(EntityId::Deal)
}

/// The install of a status event: `id`, `install.id`, `installDetails.id`, then the configured
/// paths.
pub fn status_install_id(r: &Value, install_id_paths: &[String]) -> Option<u64> {
    number_at(r, STATUS_INSTALL_ID_PATHS).or_else(|| number_at(r, install_id_paths))
}

fn status_entity(_: &str, r: &Value, paths: &[String]) -> Option<EntityId> {
    status_install_id(r, paths).map(EntityId::Install)
}

/// The install of a milestone event: the first of the configured paths holding a number.
pub fn install_id_at(r: &Value, install_id_paths: &[String]) -> Option<u64> {
    number_at(r, install_id_paths)
}

fn milestone_entity(_: &str, r: &Value, paths: &[String]) -> Option<EntityId> {
    install_id_at(r, paths).map(EntityId::Install)
}

fn note_entity(_: &str, r: &Value, paths: &[String]) -> Option<EntityId> {
    crate::enerflo::install_note::install_id(r, paths).map(EntityId::Install)
}

fn change_order_entity(_: &str, r: &Value, _: &[String]) -> Option<EntityId> {
    crate::mapping::change_order::install_id(r).map(EntityId::Install)
}

pub static STAGES: [StageSpec; 6] = [
    StageSpec {
        stage: Stage::Leads,
        name: "leads",
        events: &[
            "new_customer",
            "update_customer",
            "customer.created",
            "customer.updated.v2",
            "customer.updated",
        ],
        env_prefix: "LEADS",
        crm_events: &[CrmEventType::LeadUpserted],
        function: "enerflo-lead-to-crm",
        entity: customer_entity,
    },
    StageSpec {
        stage: Stage::Project,
        name: "project",
        events: &["deal.projectSubmitted", "deal.projectReceived"],
        env_prefix: "PROJECT",
        crm_events: &[
            CrmEventType::ProjectSubmitted,
            CrmEventType::ProjectReceived,
        ],
        function: "enerflo-project-to-crm",
        entity: deal_entity,
    },
    StageSpec {
        stage: Stage::Milestone,
        name: "milestone",
        events: &["project_milestone_updated"],
        env_prefix: "MILESTONE",
        crm_events: &[CrmEventType::MilestoneUpdated],
        function: "enerflo-milestone-to-crm",
        entity: milestone_entity,
    },
    StageSpec {
        stage: Stage::Status,
        name: "status",
        events: &["update_install", "restore_install"],
        env_prefix: "STATUS",
        crm_events: &[CrmEventType::StatusChanged],
        function: "enerflo-status-to-crm",
        entity: status_entity,
    },
    StageSpec {
        stage: Stage::Note,
        name: "note",
        events: &["new_install_note"],
        env_prefix: "NOTE",
        crm_events: &[CrmEventType::NoteCreated],
        function: "enerflo-note-to-crm",
        entity: note_entity,
    },
    StageSpec {
        stage: Stage::ChangeOrder,
        name: "change_order",
        events: &["signed_change_order"],
        env_prefix: "CHANGE_ORDER",
        crm_events: &[CrmEventType::ChangeOrderSigned],
        function: "enerflo-change-order-to-crm",
        entity: change_order_entity,
    },
];

/// The stage that handles an Enerflo event, if any.
pub fn stage_of(event: &str) -> Option<Stage> {
    STAGES
        .iter()
        .find(|s| s.events.contains(&event))
        .map(|s| s.stage)
}

/// The entity of an event of `stage`: the one extractor the FIFO group and the handler share.
pub fn entity_of(
    stage: Stage,
    event: &str,
    record: &Value,
    install_id_paths: &[String],
) -> Option<EntityId> {
    (stage.spec().entity)(event, record, install_id_paths)
}

/// The inbound (CRM -> Enerflo) routes. Each canonical route has its function; a HubSpot
/// workflow or Salesforce route is served by the function of the canonical route it translates
/// to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Leads,
    Milestone,
    Status,
    Note,
    /// `POST /crm/hubspot/lead` (a HubSpot workflow's "Send a webhook"), translated to `Leads`.
    HubSpotLead,
    /// `POST /crm/hubspot/status`, translated to `Status`.
    HubSpotStatus,
    /// `POST /crm/hubspot/milestone`, translated to `Milestone`.
    HubSpotMilestone,
    /// `POST /crm/monday/webhooks/{token}`: Monday.com board webhooks, translated to the routes
    /// above (`crate::inbound::monday`).
    Monday,
    /// `POST /crm/salesforce/lead` (a Flow HTTP Callout), translated to `Leads`.
    SalesforceLead,
    /// `POST /crm/salesforce/status`, translated to `Status`.
    SalesforceStatus,
    /// `POST /crm/salesforce/milestone`, translated to `Milestone`.
    SalesforceMilestone,
    /// `POST /crm/salesforce/note`, translated to `Note`.
    SalesforceNote,
    /// `POST /crm/salesforce/outbound-message` (SOAP Outbound Messages), translated to `Status`,
    /// `Milestone` and `Leads`; served by the status function, where most of them (stage
    /// changes) go.
    SalesforceOutboundMessage,
}

impl Route {
    pub const ALL: [Route; 13] = [
        Route::Leads,
        Route::Milestone,
        Route::Status,
        Route::Note,
        Route::HubSpotLead,
        Route::HubSpotStatus,
        Route::HubSpotMilestone,
        Route::Monday,
        Route::SalesforceLead,
        Route::SalesforceStatus,
        Route::SalesforceMilestone,
        Route::SalesforceNote,
        Route::SalesforceOutboundMessage,
    ];

    pub fn spec(self) -> &'static RouteSpec {
        ROUTES
            .iter()
            .find(|r| r.route == self)
            .unwrap_or(&ROUTES[0])
    }

    /// Every route the function of `self` serves (`self` first): a canonical route and the
    /// HubSpot workflow and Salesforce routes that translate to it.
    pub fn served_with(self) -> Vec<Route> {
        let function = self.spec().function;
        let mut routes = vec![self];
        routes.extend(
            ROUTES
                .iter()
                .filter(|r| r.function == function && r.route != self)
                .map(|r| r.route),
        );
        routes
    }
}

/// An inbound (CRM -> Enerflo) route and its function.
pub struct RouteSpec {
    pub route: Route,
    pub name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub function: &'static str,
}

pub static ROUTES: [RouteSpec; 13] = [
    RouteSpec {
        route: Route::Leads,
        name: "leads",
        method: "POST",
        path: "/crm/leads",
        function: "crm-lead-to-enerflo",
    },
    RouteSpec {
        route: Route::Milestone,
        name: "milestone",
        method: "PUT",
        path: "/crm/installs/{install}/milestones/{milestone}",
        function: "crm-milestone-to-enerflo",
    },
    RouteSpec {
        route: Route::Status,
        name: "status",
        method: "PUT",
        path: "/crm/installs/{install}/status",
        function: "crm-status-to-enerflo",
    },
    RouteSpec {
        route: Route::Note,
        name: "note",
        method: "POST",
        path: "/crm/installs/{install}/notes",
        function: "crm-note-to-enerflo",
    },
    RouteSpec {
        route: Route::HubSpotLead,
        name: "hubspot_lead",
        method: "POST",
        path: "/crm/hubspot/lead",
        function: "crm-lead-to-enerflo",
    },
    RouteSpec {
        route: Route::HubSpotStatus,
        name: "hubspot_status",
        method: "POST",
        path: "/crm/hubspot/status",
        function: "crm-status-to-enerflo",
    },
    RouteSpec {
        route: Route::HubSpotMilestone,
        name: "hubspot_milestone",
        method: "POST",
        path: "/crm/hubspot/milestone",
        function: "crm-milestone-to-enerflo",
    },
    RouteSpec {
        route: Route::Monday,
        name: "monday",
        method: "POST",
        path: "/crm/monday/webhooks/{token}",
        function: "crm-monday-to-enerflo",
    },
    RouteSpec {
        route: Route::SalesforceLead,
        name: "salesforce_lead",
        method: "POST",
        path: "/crm/salesforce/lead",
        function: "crm-lead-to-enerflo",
    },
    RouteSpec {
        route: Route::SalesforceStatus,
        name: "salesforce_status",
        method: "POST",
        path: "/crm/salesforce/status",
        function: "crm-status-to-enerflo",
    },
    RouteSpec {
        route: Route::SalesforceMilestone,
        name: "salesforce_milestone",
        method: "POST",
        path: "/crm/salesforce/milestone",
        function: "crm-milestone-to-enerflo",
    },
    RouteSpec {
        route: Route::SalesforceNote,
        name: "salesforce_note",
        method: "POST",
        path: "/crm/salesforce/note",
        function: "crm-note-to-enerflo",
    },
    RouteSpec {
        route: Route::SalesforceOutboundMessage,
        name: "salesforce_outbound_message",
        method: "POST",
        path: "/crm/salesforce/outbound-message",
        function: "crm-status-to-enerflo",
    },
];

/// A function run on a schedule (an EventBridge rule), by neither a queue nor a route.
pub struct ScheduledSpec {
    pub name: &'static str,
    pub function: &'static str,
    /// The template parameter holding its schedule expression.
    pub schedule_parameter: &'static str,
}

pub static SCHEDULED: [ScheduledSpec; 2] = [
    ScheduledSpec {
        name: "hubspot_notes_poll",
        function: "hubspot-notes-poll",
        schedule_parameter: "HubSpotNotesPollSchedule",
    },
    // The reconciliation sweep (`crate::reconcile`); `ReconcileSchedule` = `disabled` leaves its
    // rule out (a Condition), so it has an AWS::Events::Rule of its own, not a SAM Schedule event.
    ScheduledSpec {
        name: "reconcile",
        function: "enerflo-reconcile",
        schedule_parameter: "ReconcileSchedule",
    },
];

/// The registry as `infra/stages.json` holds it, for the template checker.
pub fn to_json() -> Value {
    json!({
        "outbound": STAGES.iter().map(|s| json!({
            "stage": s.name,
            "env_prefix": s.env_prefix,
            "function": s.function,
            "events": s.events,
            "crm_events": s.crm_events.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "inbound": ROUTES.iter().map(|r| json!({
            "route": r.name,
            "method": r.method,
            "path": r.path,
            "function": r.function,
        })).collect::<Vec<_>>(),
        "scheduled": SCHEDULED.iter().map(|s| json!({
            "name": s.name,
            "function": s.function,
            "schedule_parameter": s.schedule_parameter,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_has_one_entry_and_every_event_one_stage() {
        for stage in Stage::ALL {
            assert_eq!(
                STAGES.iter().filter(|s| s.stage == stage).count(),
                1,
                "{stage:?}"
            );
            assert_eq!(Stage::parse(stage.as_str()), Some(stage));
        }
        let mut events: Vec<_> = STAGES.iter().flat_map(|s| s.events.iter()).collect();
        let n = events.len();
        events.sort();
        events.dedup();
        assert_eq!(events.len(), n, "an event is listed by two stages");
        for route in Route::ALL {
            assert_eq!(ROUTES.iter().filter(|r| r.route == route).count(), 1);
            assert_eq!(route.spec().route, route);
        }
        assert_eq!(ROUTES.len(), Route::ALL.len());
        assert_eq!(
            Route::Status.served_with(),
            [
                Route::Status,
                Route::HubSpotStatus,
                Route::SalesforceStatus,
                Route::SalesforceOutboundMessage
            ]
        );
        assert_eq!(
            Route::Note.served_with(),
            [Route::Note, Route::SalesforceNote]
        );
    }

    /// `infra/stages.json` is what the template checker compares `template.yaml` with; it must be
    /// this registry. Regenerate with `UPDATE_STAGES_JSON=1 cargo test -p enerflo-sync registry`.
    #[test]
    fn infra_stages_json_is_the_registry() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/stages.json");
        let want = serde_json::to_string_pretty(&to_json()).expect("json") + "\n";
        if std::env::var_os("UPDATE_STAGES_JSON").is_some() {
            std::fs::write(path, &want).expect("write infra/stages.json");
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "infra/stages.json differs from the stage registry (shared/src/registry.rs); \
             regenerate it with UPDATE_STAGES_JSON=1 cargo test -p enerflo-sync registry"
        );
    }
}
