//! Every key of the sync state, lease and echo tables, typed. The text forms are what the stores
//! hold (they must not change without a migration), and they are written in one place: here.

use std::fmt;

/// A sync-state (and lease) scope: what one stage or route last synced for one entity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StateKey {
    /// Stage 2: a project, by its cross-reference entity key (`project#deal:<uuid>`).
    Project(String),
    /// Stage 2's lease: a deal by its UUID (`project#<uuid>`).
    ProjectDeal(String),
    /// Stage 1.2: a customer, by its cross-reference entity key (`lead#customer_id:9`).
    Lead(String),
    /// Stage 1.1's claim: one CRM lead (`lead#<crm id>`).
    CrmLead(String),
    /// Stage 1.1: the hash of the last lead/add body sent for a CRM id (`lead-sent#<crm id>`).
    LeadSent(String),
    /// Stage 1.1: the CRM id a lead with this key hash was written to Enerflo for
    /// (`lead-written#<hash>`).
    LeadWritten(String),
    /// Stage 4: an install's status (`status#install:<id>`).
    Status(u64),
    /// Stage 3: one milestone of an install (`milestone#install:<id>:<milestone>`).
    Milestone {
        install: u64,
        milestone: u64,
    },
    /// Stage 6: an install's change orders (`change_order#install:<id>`).
    ChangeOrder(u64),
    /// Stage 5: the notes of an install, as one lease (`note#install:<id>`).
    Notes(u64),
    /// Stage 5: a note by its Enerflo id (`note#enerflo_note:<id>`).
    EnerfloNote(String),
    /// Stage 5.2: a note without an Enerflo id, by its install, creation time (as sent, may be
    /// empty) and text hash (`note#install:<id>:<created_at>:<hash>`).
    NoteByContent {
        install: u64,
        created_at: String,
        hash: String,
    },
    /// Stage 5: a note by its CRM id (`note#crm:<id>`).
    CrmNote(String),
    /// Stage 5.1's claim: one CRM note (`note#<crm note id>`).
    CrmNoteClaim(String),
    /// Stage 5: a note of an install on its way to the other system (`note#writing:...` for
    /// CRM -> Enerflo, `note#pushing:...` for Enerflo -> CRM).
    NoteInFlight(Direction, u64),
    /// When we last wrote `target` in a direction (`written#<target>`, `pushed#<target>`).
    LastWrite(Direction, EchoTarget),
    /// Where a reconciliation pass has got to, by the pass's name (`reconcile#cursor:sweep`,
    /// `reconcile#cursor:backfill`), and its run lease (`reconcile#run:<name>`).
    ReconcileCursor(String),
    ReconcileRun(String),
    /// The HubSpot notes poll: how far it has read (`hubspot-notes#watermark`), and its lease.
    HubSpotNotesWatermark,
    /// Monday.com: the item of a board found by an external id column's value, our own
    /// cross-reference of it (`monday-item#<board>:<column>:<value>`); also its creation lease.
    MondayItem {
        board: String,
        column: String,
        value: String,
    },
    /// Monday.com: the column values we last wrote to an item (`monday-wrote#<item>`), what its
    /// webhooks are compared with to recognise our own writes.
    MondayWrites(String),
    /// Monday.com: the update we posted on an item for a note key
    /// (`monday-update#<item>:<key>`).
    MondayUpdate {
        item: String,
        key: String,
    },
}

use super::echo::Direction;

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Project(entity) => write!(f, "project#{entity}"),
            Self::ProjectDeal(deal) => write!(f, "project#{deal}"),
            Self::Lead(entity) => write!(f, "lead#{entity}"),
            Self::CrmLead(crm_id) => write!(f, "lead#{crm_id}"),
            Self::LeadSent(crm_id) => write!(f, "lead-sent#{crm_id}"),
            Self::LeadWritten(hash) => write!(f, "lead-written#{hash}"),
            Self::Status(install) => write!(f, "status#install:{install}"),
            Self::Milestone { install, milestone } => {
                write!(f, "milestone#install:{install}:{milestone}")
            }
            Self::ChangeOrder(install) => write!(f, "change_order#install:{install}"),
            Self::Notes(install) => write!(f, "note#install:{install}"),
            Self::EnerfloNote(id) => write!(f, "note#enerflo_note:{id}"),
            Self::NoteByContent {
                install,
                created_at,
                hash,
            } => write!(f, "note#install:{install}:{created_at}:{hash}"),
            Self::CrmNote(id) => write!(f, "note#crm:{id}"),
            Self::CrmNoteClaim(id) => write!(f, "note#{id}"),
            Self::NoteInFlight(Direction::ToEnerflo, install) => {
                write!(f, "note#writing:install:{install}")
            }
            Self::NoteInFlight(Direction::ToCrm, install) => {
                write!(f, "note#pushing:install:{install}")
            }
            Self::LastWrite(Direction::ToEnerflo, target) => write!(f, "written#{target}"),
            Self::LastWrite(Direction::ToCrm, target) => write!(f, "pushed#{target}"),
            Self::ReconcileCursor(name) => write!(f, "reconcile#cursor:{name}"),
            Self::ReconcileRun(name) => write!(f, "reconcile#run:{name}"),
            Self::HubSpotNotesWatermark => f.write_str("hubspot-notes#watermark"),
            Self::MondayItem {
                board,
                column,
                value,
            } => write!(f, "monday-item#{board}:{column}:{value}"),
            Self::MondayWrites(item) => write!(f, "monday-wrote#{item}"),
            Self::MondayUpdate { item, key } => write!(f, "monday-update#{item}:{key}"),
        }
    }
}

impl StateKey {
    /// The text the stores hold.
    pub fn scope(&self) -> String {
        self.to_string()
    }
}

/// What an echo fingerprint is about: one field of one entity as both systems hold it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EchoTarget {
    /// A CRM lead / Enerflo customer, by the CRM id (`lead:<crm id>`).
    Lead(String),
    /// An install's status (`status:install:<id>`).
    Status(u64),
    /// One milestone's dates (`milestone:install:<id>:<milestone>`).
    Milestone { install: u64, milestone: u64 },
    /// The notes of an install (`note:install:<id>`).
    Notes(u64),
}

impl fmt::Display for EchoTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lead(crm_id) => write!(f, "lead:{crm_id}"),
            Self::Status(install) => write!(f, "status:install:{install}"),
            Self::Milestone { install, milestone } => {
                write!(f, "milestone:install:{install}:{milestone}")
            }
            Self::Notes(install) => write!(f, "note:install:{install}"),
        }
    }
}

impl EchoTarget {
    /// The fingerprint key of a write of ours into the system `direction` points at
    /// (`enerflo:<target>` / `crm:<target>`).
    pub fn written(&self, direction: Direction) -> String {
        match direction {
            Direction::ToEnerflo => format!("enerflo:{self}"),
            Direction::ToCrm => format!("crm:{self}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_key_forms_are_the_documented_ones() {
        let t = EchoTarget::Milestone {
            install: 7,
            milestone: 3901,
        };
        let cases = [
            (StateKey::Project("deal:d1".into()), "project#deal:d1"),
            (StateKey::ProjectDeal("d1".into()), "project#d1"),
            (StateKey::Lead("customer_id:9".into()), "lead#customer_id:9"),
            (StateKey::Status(7), "status#install:7"),
            (
                StateKey::Milestone {
                    install: 7,
                    milestone: 3901,
                },
                "milestone#install:7:3901",
            ),
            (StateKey::ChangeOrder(7), "change_order#install:7"),
            (StateKey::Notes(7), "note#install:7"),
            (StateKey::EnerfloNote("5".into()), "note#enerflo_note:5"),
            (
                StateKey::NoteByContent {
                    install: 7,
                    created_at: "2025-03-01T09:59:00Z".into(),
                    hash: "h1".into(),
                },
                "note#install:7:2025-03-01T09:59:00Z:h1",
            ),
            (StateKey::CrmNote("c5".into()), "note#crm:c5"),
            (StateKey::CrmNoteClaim("c5".into()), "note#c5"),
            (
                StateKey::MondayItem {
                    board: "111".into(),
                    column: "enerflo_deal_id".into(),
                    value: "d1".into(),
                },
                "monday-item#111:enerflo_deal_id:d1",
            ),
            (StateKey::MondayWrites("222".into()), "monday-wrote#222"),
            (
                StateKey::MondayUpdate {
                    item: "222".into(),
                    key: "41".into(),
                },
                "monday-update#222:41",
            ),
            (
                StateKey::NoteInFlight(Direction::ToEnerflo, 7),
                "note#writing:install:7",
            ),
            (
                StateKey::NoteInFlight(Direction::ToCrm, 7),
                "note#pushing:install:7",
            ),
            (
                StateKey::LastWrite(Direction::ToEnerflo, t.clone()),
                "written#milestone:install:7:3901",
            ),
            (
                StateKey::LastWrite(Direction::ToCrm, t.clone()),
                "pushed#milestone:install:7:3901",
            ),
            (
                StateKey::ReconcileCursor("sweep".into()),
                "reconcile#cursor:sweep",
            ),
            (
                StateKey::ReconcileRun("sweep".into()),
                "reconcile#run:sweep",
            ),
            (StateKey::HubSpotNotesWatermark, "hubspot-notes#watermark"),
        ];
        for (key, text) in cases {
            assert_eq!(key.scope(), text);
        }
        assert_eq!(
            EchoTarget::Status(7).written(Direction::ToEnerflo),
            "enerflo:status:install:7"
        );
        assert_eq!(
            EchoTarget::Lead("c1".into()).written(Direction::ToCrm),
            "crm:lead:c1"
        );
        assert_eq!(
            EchoTarget::Notes(7).written(Direction::ToCrm),
            "crm:note:install:7"
        );
    }
}
