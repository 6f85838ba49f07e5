//! The loop control both note directions share: stage 5.2 (`crate::stages::note`, Enerflo -> CRM)
//! and stage 5.1 (`crate::inbound::notes`, CRM -> Enerflo).
//!
//! Each synced note remembers where it came from, under both of its ids (sync state
//! [`StateKey::EnerfloNote`] and [`StateKey::CrmNote`]), and a note on its way to the other system
//! is marked in flight for its install ([`StateKey::NoteInFlight`]), so a copy coming back before
//! its id is known is held back instead of being written again.

use serde_json::{Value, json};

use super::echo::Direction;
use super::keys::StateKey;
use crate::store::{StoreError, StoreWrite, SyncState, SyncStateStore};
use crate::timefmt::now_rfc3339;

/// Which system a synced note was first written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteOrigin {
    /// Created in the CRM and written to Enerflo by `POST /crm/installs/{install}/notes`.
    Crm,
    /// Created in Enerflo and pushed to the CRM by stage 5.2.
    Enerflo,
}

impl NoteOrigin {
    fn as_str(self) -> &'static str {
        match self {
            Self::Crm => "crm",
            Self::Enerflo => "enerflo",
        }
    }
}

/// What is remembered about one synced note, under both of its ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteRecord {
    pub origin: NoteOrigin,
    pub install_id: u64,
    pub enerflo_note_id: Option<String>,
    pub crm_note_id: Option<String>,
}

impl NoteRecord {
    /// The record as the sync state holds it (`data` of a note's state).
    pub fn to_data(&self) -> Value {
        json!({
            "origin": self.origin.as_str(),
            "install_id": self.install_id,
            "enerflo_note_id": self.enerflo_note_id,
            "crm_note_id": self.crm_note_id,
        })
    }

    /// Reads a record back from its state `data`; an unknown origin reads as Enerflo.
    pub fn from_data(data: &Value) -> Self {
        let text = |k: &str| {
            data.get(k)
                .and_then(crate::enerflo::lenient::value_to_string)
        };
        let origin = match data.get("origin").and_then(Value::as_str) {
            Some("crm") => NoteOrigin::Crm,
            _ => NoteOrigin::Enerflo,
        };
        Self {
            origin,
            install_id: data.get("install_id").and_then(Value::as_u64).unwrap_or(0),
            enerflo_note_id: text("enerflo_note_id"),
            crm_note_id: text("crm_note_id"),
        }
    }
}

pub async fn get_note_record(
    state: &dyn SyncStateStore,
    key: &StateKey,
) -> Result<Option<NoteRecord>, StoreError> {
    Ok(state
        .get_state(&key.scope())
        .await?
        .map(|s| NoteRecord::from_data(&s.data)))
}

pub async fn put_note_record(
    state: &dyn SyncStateStore,
    key: &StateKey,
    record: &NoteRecord,
    text_hash: &str,
) -> Result<(), StoreError> {
    state
        .put_state(
            &key.scope(),
            &SyncState {
                hash: text_hash.to_owned(),
                data: record.to_data(),
                updated_at: now_rfc3339(),
                seq: 0,
            },
        )
        .await
}

/// Marks (until `until_ms`, Unix milliseconds; 0 clears) a note being written in `direction` for
/// `install_id`. While it is, a note coming back from the system written to that is not
/// recognised yet may be its echo, whose id we do not know yet and whose text that system may
/// have altered: it is held back (the note stage retries shortly; the inbound route waits)
/// instead of being written again. Concurrent writers may clear each other's mark; the content
/// fingerprint still covers that case.
pub async fn mark_in_flight(
    state: &dyn SyncStateStore,
    direction: Direction,
    install_id: u64,
    until_ms: i64,
) -> Result<(), StoreError> {
    let StoreWrite::State { scope, state: mark } = in_flight_write(direction, install_id, until_ms)
    else {
        return Ok(());
    };
    state.put_state(&scope, &mark).await
}

/// What [`mark_in_flight`] writes, for a caller that commits it with other writes.
pub fn in_flight_write(direction: Direction, install_id: u64, until_ms: i64) -> StoreWrite {
    StoreWrite::State {
        scope: StateKey::NoteInFlight(direction, install_id).scope(),
        state: SyncState {
            hash: String::new(),
            data: json!({"until_ms": until_ms}),
            updated_at: now_rfc3339(),
            seq: 0,
        },
    }
}

/// Whether a note is being written in `direction` for `install_id`.
pub async fn in_flight(
    state: &dyn SyncStateStore,
    direction: Direction,
    install_id: u64,
) -> Result<bool, StoreError> {
    Ok(state
        .get_state(&StateKey::NoteInFlight(direction, install_id).scope())
        .await?
        .and_then(|s| s.data.get("until_ms").and_then(Value::as_i64))
        .is_some_and(|until| until > crate::timefmt::now_millis()))
}

/// A note id as JSON: a number when it is one (Enerflo's v1 ids are), else text.
pub fn id_json(id: &str) -> Value {
    id.parse::<u64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::String(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn a_note_record_is_stored_under_its_key_and_read_back() {
        let store = EmbeddedStore::in_memory().expect("store");
        let record = NoteRecord {
            origin: NoteOrigin::Crm,
            install_id: 7,
            enerflo_note_id: Some("5".into()),
            crm_note_id: Some("c5".into()),
        };
        let key = StateKey::EnerfloNote("5".into());
        put_note_record(&store, &key, &record, "h")
            .await
            .expect("put");
        let stored = store
            .get_state("note#enerflo_note:5")
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stored.hash, "h");
        assert_eq!(
            stored.data,
            json!({"origin": "crm", "install_id": 7, "enerflo_note_id": "5", "crm_note_id": "c5"})
        );
        assert_eq!(
            get_note_record(&store, &key).await.expect("get"),
            Some(record)
        );
    }

    #[tokio::test]
    async fn an_in_flight_mark_holds_until_it_expires_or_is_cleared_per_direction() {
        let store = EmbeddedStore::in_memory().expect("store");
        let far = crate::timefmt::now_millis() + 5_000;
        mark_in_flight(&store, Direction::ToCrm, 7, far)
            .await
            .expect("mark");
        assert!(
            store
                .get_state("note#pushing:install:7")
                .await
                .expect("get")
                .is_some()
        );
        assert!(in_flight(&store, Direction::ToCrm, 7).await.expect("read"));
        assert!(
            !in_flight(&store, Direction::ToEnerflo, 7)
                .await
                .expect("read")
        );
        mark_in_flight(&store, Direction::ToCrm, 7, 0)
            .await
            .expect("clear");
        assert!(!in_flight(&store, Direction::ToCrm, 7).await.expect("read"));
    }
}
