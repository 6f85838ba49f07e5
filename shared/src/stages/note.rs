//! Stage 5.2: v1 `new_install_note` -> `note.created` to the CRM, with the loop control both note
//! directions share.
//!
//! Notes travel both ways, so each note remembers where it came from (sync state `note#...`,
//! written by this stage and by the inbound route `POST /crm/installs/{install}/notes`):
//! - a note the CRM created through us comes back from Enerflo as `new_install_note`: its Enerflo
//!   id is linked to a CRM note whose origin is `crm`, or (when the webhook overtakes Enerflo's
//!   answer) its text matches the fingerprint `enerflo:note:install:<id>` recorded before the
//!   write; it is dropped as an echo;
//! - a note we pushed to the CRM whose automation posts it back carries the CRM note id the CRM
//!   answered (origin `enerflo`), or matches `crm:note:install:<id>`, recorded before the push.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::lock::EntityLock;
use crate::canonical::{CrmEvent, CrmEventType, EnerfloRefs};
use crate::config::EnerfloFields;
use crate::consumer::{Outcome, OutcomeKind, StageHandler};
use crate::crm::CrmConnector;
use crate::enerflo::envelope::Envelope;
use crate::enerflo::install_note::{InstallNote, note_target, note_text_hash};
use crate::error::{StoreError, SyncError};
use crate::hashing::sha256_hex;
use crate::queue::MessageMeta;
use crate::store::{
    ClaimStore, EchoStore, EntityKind, IdForm, IdRef, SyncState, SyncStateStore, XrefStore,
};
use crate::timefmt::now_rfc3339;

/// Which system a synced note was first written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteOrigin {
    /// Created in the CRM and written to Enerflo by `POST /crm/installs/{install}/notes`.
    Crm,
    /// Created in Enerflo and pushed to the CRM by this stage.
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

/// State scope of a note by its Enerflo id.
pub fn enerflo_note_scope(note_id: &str) -> String {
    format!("note#enerflo_note:{note_id}")
}

/// State scope of a note by its CRM id.
pub fn crm_note_scope(crm_note_id: &str) -> String {
    format!("note#crm:{crm_note_id}")
}

pub async fn get_note_record(
    state: &dyn SyncStateStore,
    scope: &str,
) -> Result<Option<NoteRecord>, StoreError> {
    let Some(s) = state.get_state(scope).await? else {
        return Ok(None);
    };
    let text = |k: &str| {
        s.data
            .get(k)
            .and_then(crate::enerflo::lenient::value_to_string)
    };
    let origin = match s.data.get("origin").and_then(Value::as_str) {
        Some("crm") => NoteOrigin::Crm,
        _ => NoteOrigin::Enerflo,
    };
    Ok(Some(NoteRecord {
        origin,
        install_id: s
            .data
            .get("install_id")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        enerflo_note_id: text("enerflo_note_id"),
        crm_note_id: text("crm_note_id"),
    }))
}

pub async fn put_note_record(
    state: &dyn SyncStateStore,
    scope: &str,
    record: &NoteRecord,
    text_hash: &str,
) -> Result<(), StoreError> {
    state
        .put_state(
            scope,
            &SyncState {
                hash: text_hash.to_owned(),
                data: json!({
                    "origin": record.origin.as_str(),
                    "install_id": record.install_id,
                    "enerflo_note_id": record.enerflo_note_id,
                    "crm_note_id": record.crm_note_id,
                }),
                updated_at: now_rfc3339(),
                seq: 0,
            },
        )
        .await
}

/// How long a push to the CRM is marked in flight at most (longer than any CRM timeout).
const PUSH_MARK_MS: i64 = 30_000;

/// State scope marking a note on its way from `origin` to the other system for an install.
fn in_flight_scope(origin: NoteOrigin, install_id: u64) -> String {
    match origin {
        NoteOrigin::Crm => format!("note#writing:install:{install_id}"),
        NoteOrigin::Enerflo => format!("note#pushing:install:{install_id}"),
    }
}

/// Marks (until `until_ms`, Unix milliseconds; 0 clears) a note from `origin` being written to
/// the other system for `install_id`. While it is, a note coming back from that other system that
/// is not recognised yet may be its echo, whose id we do not know yet and whose text the other
/// system may have altered: it is held back (the note stage retries shortly; the inbound route
/// waits) instead of being written again. Concurrent writers may clear each other's mark; the
/// content fingerprint still covers that case.
pub async fn mark_in_flight(
    state: &dyn SyncStateStore,
    origin: NoteOrigin,
    install_id: u64,
    until_ms: i64,
) -> Result<(), StoreError> {
    state
        .put_state(
            &in_flight_scope(origin, install_id),
            &SyncState {
                hash: String::new(),
                data: json!({"until_ms": until_ms}),
                updated_at: now_rfc3339(),
                seq: 0,
            },
        )
        .await
}

/// Whether a note from `origin` is being written to the other system for `install_id`.
pub async fn in_flight(
    state: &dyn SyncStateStore,
    origin: NoteOrigin,
    install_id: u64,
) -> Result<bool, StoreError> {
    Ok(state
        .get_state(&in_flight_scope(origin, install_id))
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

pub struct NoteStage {
    pub crm: Arc<dyn CrmConnector>,
    pub xref: Arc<dyn XrefStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub state: Arc<dyn SyncStateStore>,
    pub echo: Arc<dyn EchoStore>,
    pub fields: EnerfloFields,
    pub install_id_paths: Vec<String>,
    pub include_raw: bool,
    pub echo_ttl: Duration,
}

#[async_trait]
impl StageHandler for NoteStage {
    async fn handle(
        &self,
        meta: &MessageMeta,
        body: &str,
        _attempt: u32,
    ) -> Result<Outcome, SyncError> {
        let envelope = Envelope::parse(body.as_bytes(), Some(&meta.event))
            .map_err(|e| SyncError::permanent(format!("{} body unreadable: {e}", meta.event)))?;
        if envelope.event != "new_install_note" {
            return Err(SyncError::permanent(format!(
                "the note stage does not handle `{}`",
                envelope.event
            )));
        }
        let note = InstallNote::read(&envelope.record, &self.fields, &self.install_id_paths);
        let mut missing = Vec::new();
        if note.install_id.is_none() {
            missing.push(format!(
                "no install id (looked at {}, also inside `note`)",
                self.install_id_paths.join(", ")
            ));
        }
        if note.text.is_none() {
            missing.push(format!(
                "no note text (looked at {}, also inside `note`)",
                self.fields.note_text_paths.join(", ")
            ));
        }
        let (Some(install_id), Some(text)) = (note.install_id, note.text.clone()) else {
            return Err(SyncError::permanent(format!(
                "new_install_note not recognisable: {}",
                missing.join("; ")
            )));
        };

        let lock = EntityLock::acquire(
            &self.claims,
            &format!("note#install:{install_id}"),
            Duration::from_secs(60),
        )
        .await?;
        let result = self.sync(&envelope, &note, install_id, &text, meta).await;
        lock.release().await;
        result
    }
}

impl NoteStage {
    async fn sync(
        &self,
        envelope: &Envelope,
        note: &InstallNote,
        install_id: u64,
        text: &str,
        meta: &MessageMeta,
    ) -> Result<Outcome, SyncError> {
        let hash = note_text_hash(text);
        let label = format!(
            "note {} on install {install_id}",
            note.note_id.as_deref().unwrap_or("(no id)")
        );
        // A note without an id is known by its install, time and text.
        let scope = match &note.note_id {
            Some(id) => enerflo_note_scope(id),
            None => format!(
                "note#install:{install_id}:{}:{hash}",
                note.created_at.as_deref().unwrap_or("")
            ),
        };
        if let Some(known) = get_note_record(self.state.as_ref(), &scope).await? {
            return Ok(match known.origin {
                NoteOrigin::Crm => Outcome::new(
                    OutcomeKind::Echo,
                    format!("{label} was written by us from the CRM"),
                ),
                NoteOrigin::Enerflo => Outcome::new(
                    OutcomeKind::Unchanged,
                    format!(
                        "{label} was already pushed (CRM note {})",
                        known.crm_note_id.as_deref().unwrap_or("unknown")
                    ),
                ),
            });
        }
        let ours = |crm_note_id: Option<String>| NoteRecord {
            origin: NoteOrigin::Crm,
            install_id,
            enerflo_note_id: note.note_id.clone(),
            crm_note_id,
        };
        if let Some(id) = &note.note_id
            && let Some(link) = self
                .xref
                .resolve(EntityKind::Note, &IdRef::new(IdForm::EnerfloNote, id))
                .await?
            && link.crm_id.is_some()
        {
            put_note_record(
                self.state.as_ref(),
                &scope,
                &ours(link.crm_id.clone()),
                &hash,
            )
            .await?;
            return Ok(Outcome::new(
                OutcomeKind::Echo,
                format!(
                    "{label} is linked to CRM note {}",
                    link.crm_id.as_deref().unwrap_or("")
                ),
            ));
        }
        if self
            .echo
            .is_echo(&format!("enerflo:{}", note_target(install_id)), &hash)
            .await?
        {
            // Remembered as the last synced state, so a later copy is not pushed either.
            put_note_record(self.state.as_ref(), &scope, &ours(None), &hash).await?;
            return Ok(Outcome::new(
                OutcomeKind::Echo,
                format!("{label} matches a note we wrote to Enerflo"),
            ));
        }
        if in_flight(self.state.as_ref(), NoteOrigin::Crm, install_id).await? {
            return Err(SyncError::transient_after(
                format!(
                    "{label}: a CRM note is being written to this install; waiting for its answer to tell an echo from a new note"
                ),
                Some(Duration::from_secs(1)),
            ));
        }

        let project = self
            .xref
            .resolve(
                EntityKind::Project,
                &IdRef::new(IdForm::Install, install_id),
            )
            .await?;
        let num = |form| {
            project
                .as_ref()
                .and_then(|p| p.id(form))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let refs = EnerfloRefs {
            install_id: Some(install_id),
            deal_id: project.as_ref().and_then(|p| p.id(IdForm::Deal)),
            survey_id: num(IdForm::Survey),
            ..EnerfloRefs::default()
        };
        let event = CrmEvent {
            event_type: CrmEventType::NoteCreated,
            id: format!(
                "evt_{}",
                &sha256_hex(
                    format!(
                        "note.created|{install_id}|{}|{hash}",
                        note.note_id.as_deref().unwrap_or("")
                    )
                    .as_bytes()
                )[..32]
            ),
            occurred_at: note
                .created_at
                .clone()
                .filter(|t| crate::timefmt::parse_enerflo_time(t).is_some())
                .or_else(|| Some(meta.received_at.clone()).filter(|s| !s.is_empty()))
                .unwrap_or_else(now_rfc3339),
            source_event: envelope.event.clone(),
            crm_id: project.as_ref().and_then(|p| p.crm_id.clone()),
            enerflo: refs,
            data: json!({"note": {
                "id": note.note_id.as_deref().map(id_json),
                "text": text,
                "author": note.author,
                "created_at": note.created_at,
            }}),
            raw: self
                .include_raw
                .then(|| json!({"webhook": envelope.record})),
        };

        // Before the push: the CRM's automation may post the note back before it answers us.
        self.echo
            .record_write(
                &format!("crm:{}", note_target(install_id)),
                &hash,
                self.echo_ttl.as_secs(),
            )
            .await?;
        // Marked in flight until the CRM's note id is linked, so a post-back the fingerprint
        // does not recognise (the CRM altered the text) waits for the link instead of writing.
        mark_in_flight(
            self.state.as_ref(),
            NoteOrigin::Enerflo,
            install_id,
            crate::timefmt::now_millis() + PUSH_MARK_MS,
        )
        .await?;
        let pushed = self.push(&event, note, install_id, &scope, &hash).await;
        if let Err(e) =
            mark_in_flight(self.state.as_ref(), NoteOrigin::Enerflo, install_id, 0).await
        {
            tracing::warn!(error = %e, "note push mark not cleared; it expires by itself");
        }
        let crm_note_id = pushed?;
        Ok(Outcome::new(
            OutcomeKind::Delivered,
            format!(
                "note.created for {label} (CRM note {}, event {})",
                crm_note_id.as_deref().unwrap_or("none"),
                event.id
            ),
        ))
    }

    /// Delivers the event, then records and links the CRM note id it answered.
    async fn push(
        &self,
        event: &CrmEvent,
        note: &InstallNote,
        install_id: u64,
        scope: &str,
        hash: &str,
    ) -> Result<Option<String>, SyncError> {
        let ack = self.crm.deliver(event).await?;
        let pushed = NoteRecord {
            origin: NoteOrigin::Enerflo,
            install_id,
            enerflo_note_id: note.note_id.clone(),
            crm_note_id: ack.crm_id.clone(),
        };
        if let Some(crm_note_id) = &ack.crm_id {
            // The origin first, then the link: whoever finds the link finds the origin too.
            put_note_record(
                self.state.as_ref(),
                &crm_note_scope(crm_note_id),
                &pushed,
                hash,
            )
            .await?;
            let mut ids = Vec::new();
            if let Some(id) = &note.note_id {
                ids.push(IdRef::new(IdForm::EnerfloNote, id));
            }
            ids.push(IdRef::new(IdForm::Crm, crm_note_id));
            self.xref.link(EntityKind::Note, &ids).await?;
        }
        put_note_record(self.state.as_ref(), scope, &pushed, hash).await?;
        Ok(ack.crm_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{DEFAULT_INSTALL_ID_PATHS, Stage};
    use crate::crm::{CrmAck, CrmError};
    use crate::store::embedded::EmbeddedStore;
    use std::sync::Mutex;

    /// A CRM that answers a new note id per event and remembers what it got.
    #[derive(Default)]
    struct FakeCrm {
        events: Mutex<Vec<CrmEvent>>,
    }

    #[async_trait]
    impl CrmConnector for FakeCrm {
        async fn deliver(&self, event: &CrmEvent) -> Result<CrmAck, CrmError> {
            let mut events = self.events.lock().expect("lock");
            events.push(event.clone());
            Ok(CrmAck {
                status: 200,
                crm_id: Some(format!("crm-note-{}", events.len())),
            })
        }
    }

    struct Kit {
        stage: NoteStage,
        crm: Arc<FakeCrm>,
        store: Arc<EmbeddedStore>,
    }

    fn kit() -> Kit {
        let store = Arc::new(EmbeddedStore::in_memory().expect("store"));
        let crm = Arc::new(FakeCrm::default());
        Kit {
            stage: NoteStage {
                crm: crm.clone(),
                xref: store.clone(),
                claims: store.clone(),
                state: store.clone(),
                echo: store.clone(),
                fields: EnerfloFields::default(),
                install_id_paths: DEFAULT_INSTALL_ID_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                include_raw: false,
                echo_ttl: Duration::from_secs(3600),
            },
            crm,
            store,
        }
    }

    fn meta() -> MessageMeta {
        MessageMeta {
            stage: Stage::Note,
            event: "new_install_note".into(),
            dedupe_key: "k".into(),
            group: "install:700001".into(),
            received_at: "2025-03-01T10:00:00Z".into(),
        }
    }

    fn note_event(id: u64, text: &str) -> String {
        json!({
            "webhook_event": "new_install_note", "install_id": 700001,
            "note": {"id": id, "note": text, "user": {"full_name": "Sam Installer"},
                     "created_at": "2025-03-01 09:59:00"}
        })
        .to_string()
    }

    #[tokio::test]
    async fn a_new_enerflo_note_is_pushed_once_and_linked_to_the_crm_note() {
        // GIVEN a note written in Enerflo on a project the CRM knows
        let k = kit();
        k.store
            .link(EntityKind::Project, &[IdRef::new(IdForm::Install, 700001)])
            .await
            .expect("link");
        k.store
            .set_crm_id(EntityKind::Project, "install:700001", "crm-proj-1")
            .await
            .expect("crm id");
        // WHEN its event arrives twice
        let first = k
            .stage
            .handle(&meta(), &note_event(55, " Permit  submitted "), 1)
            .await
            .expect("ok");
        let second = k
            .stage
            .handle(&meta(), &note_event(55, "Permit submitted"), 1)
            .await
            .expect("ok");
        // THEN one note.created went to the CRM, on the project, and the CRM note is linked
        assert_eq!([first.status, second.status], ["delivered", "unchanged"]);
        let events = k.crm.events.lock().expect("lock").clone();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.event_type, CrmEventType::NoteCreated);
        assert_eq!(e.crm_id.as_deref(), Some("crm-proj-1"));
        assert_eq!(e.enerflo.install_id, Some(700001));
        assert_eq!(e.occurred_at, "2025-03-01T09:59:00Z");
        assert_eq!(
            e.data,
            json!({"note": {"id": 55, "text": "Permit  submitted", "author": "Sam Installer",
                            "created_at": "2025-03-01T09:59:00Z"}})
        );
        let link = k
            .store
            .resolve(EntityKind::Note, &IdRef::new(IdForm::EnerfloNote, 55))
            .await
            .expect("resolve")
            .expect("linked");
        assert_eq!(link.crm_id.as_deref(), Some("crm-note-1"));
        let origin = get_note_record(k.store.as_ref(), &crm_note_scope("crm-note-1"))
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(origin.origin, NoteOrigin::Enerflo);
        // ... and the push left a CRM-side fingerprint for the inbound route
        assert!(
            k.store
                .is_echo(
                    "crm:note:install:700001",
                    &note_text_hash("Permit submitted")
                )
                .await
                .expect("read")
        );
    }

    #[tokio::test]
    async fn a_note_we_wrote_from_the_crm_is_an_echo_by_id_or_by_fingerprint() {
        let k = kit();
        // By id: 5.1 stored the origin of Enerflo note 56.
        put_note_record(
            k.store.as_ref(),
            &enerflo_note_scope("56"),
            &NoteRecord {
                origin: NoteOrigin::Crm,
                install_id: 700001,
                enerflo_note_id: Some("56".into()),
                crm_note_id: Some("c-1".into()),
            },
            &note_text_hash("From the CRM"),
        )
        .await
        .expect("state");
        let by_id = k
            .stage
            .handle(&meta(), &note_event(56, "From the CRM"), 1)
            .await
            .expect("ok");
        // By fingerprint: the webhook overtook Enerflo's answer, so no id is known yet.
        k.store
            .record_write(
                "enerflo:note:install:700001",
                &note_text_hash("Racing  note"),
                60,
            )
            .await
            .expect("fingerprint");
        let by_text = k
            .stage
            .handle(&meta(), &note_event(57, "Racing note"), 1)
            .await
            .expect("ok");
        let again = k
            .stage
            .handle(&meta(), &note_event(57, "Racing note"), 1)
            .await
            .expect("ok");
        assert_eq!(
            [by_id.status, by_text.status, again.status],
            ["echo", "echo", "echo"]
        );
        assert!(k.crm.events.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn a_note_event_without_install_id_or_text_fails_permanently_naming_what_is_missing() {
        let k = kit();
        let no_install =
            json!({"webhook_event": "new_install_note", "note": {"id": 1, "note": "x"}})
                .to_string();
        let err = k
            .stage
            .handle(&meta(), &no_install, 1)
            .await
            .expect_err("fails");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("no install id"), "{err}");
        assert!(!err.to_string().contains("no note text"), "{err}");
        let neither = json!({"webhook_event": "new_install_note", "note": {"id": 1}}).to_string();
        let err = k
            .stage
            .handle(&meta(), &neither, 1)
            .await
            .expect_err("fails");
        assert!(
            err.to_string().contains("no install id") && err.to_string().contains("no note text"),
            "{err}"
        );
        assert!(k.crm.events.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn an_unrecognised_note_during_a_crm_note_write_waits_and_is_then_recognised_by_id() {
        // GIVEN a CRM note is being written to install 700001 (its Enerflo id not known yet)
        let k = kit();
        mark_in_flight(
            k.store.as_ref(),
            NoteOrigin::Crm,
            700001,
            crate::timefmt::now_millis() + 5_000,
        )
        .await
        .expect("mark");
        // WHEN Enerflo's webhook for it arrives first, with the text altered
        let body = note_event(60, "<p>From the CRM</p>");
        let err = k
            .stage
            .handle(&meta(), &body, 1)
            .await
            .expect_err("held back");
        // THEN it is retried later rather than pushed
        assert!(err.is_transient(), "{err}");
        assert!(k.crm.events.lock().expect("lock").is_empty());
        // WHEN the write completes (ids linked, mark cleared) and the event is retried
        k.store
            .link(
                EntityKind::Note,
                &[
                    IdRef::new(IdForm::EnerfloNote, 60),
                    IdRef::new(IdForm::Crm, "c-60"),
                ],
            )
            .await
            .expect("link");
        mark_in_flight(k.store.as_ref(), NoteOrigin::Crm, 700001, 0)
            .await
            .expect("clear");
        let out = k.stage.handle(&meta(), &body, 2).await.expect("ok");
        // THEN it is an echo, never pushed
        assert_eq!(out.status, "echo");
        assert!(k.crm.events.lock().expect("lock").is_empty());
        // ... while an expired mark holds nothing back
        mark_in_flight(
            k.store.as_ref(),
            NoteOrigin::Crm,
            700001,
            crate::timefmt::now_millis() - 1,
        )
        .await
        .expect("mark");
        let other = k
            .stage
            .handle(&meta(), &note_event(61, "New"), 1)
            .await
            .expect("ok");
        assert_eq!(other.status, "delivered");
    }

    #[tokio::test]
    async fn a_note_on_an_unlinked_install_goes_with_a_null_crm_id() {
        let k = kit();
        let out = k
            .stage
            .handle(&meta(), &note_event(58, "Hello"), 1)
            .await
            .expect("ok");
        assert_eq!(out.status, "delivered");
        let events = k.crm.events.lock().expect("lock").clone();
        assert_eq!(events[0].crm_id, None);
    }
}
