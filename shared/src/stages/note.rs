//! Stage 5.2: v1 `new_install_note` -> `note.created` to the CRM, run by the outbound pipeline
//! (`crate::pipeline`). The loop control both note directions share (note records, in-flight
//! marks) is in `crate::sync::notes`.
//!
//! Notes travel both ways, so each note remembers where it came from (sync state `note#...`,
//! written by this stage and by the inbound route `POST /crm/installs/{install}/notes`):
//! - a note the CRM created through us comes back from Enerflo as `new_install_note`: its Enerflo
//!   id is linked to a CRM note whose origin is `crm`, or (when the webhook overtakes Enerflo's
//!   answer) its text matches the fingerprint `enerflo:note:install:<id>` recorded before the
//!   write; it is dropped as an echo;
//! - a note we pushed to the CRM whose automation posts it back carries the CRM note id the CRM
//!   answered (origin `enerflo`), or matches `crm:note:install:<id>`, recorded before the push.
//!
//! The entity lease is the install's notes (`note#install:<id>`, as the FIFO group: both read the
//! install id with `crate::enerflo::install_note::install_id`); the synced state is the note
//! record under the note's Enerflo id (`note#enerflo_note:<id>`).

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::canonical::{CrmEventType, EnerfloRefs};
use crate::config::EnerfloFields;
use crate::consumer::OutcomeKind;
use crate::crm::CrmAck;
use crate::enerflo::envelope::Envelope;
use crate::enerflo::install_note::{InstallNote, install_id, note_text_hash};
use crate::error::SyncError;
use crate::pipeline::{
    Decision, EntityKeys, Kit, OutboundStage, Push, ReadError, Remember, StageMessage,
};
use crate::registry::Stage;
use crate::store::{EntityKind, EntityLink, IdForm, IdRef, StoreWrite, SyncState};
use crate::sync::notes::{
    NoteOrigin, NoteRecord, id_json, in_flight, in_flight_write, put_note_record,
};
use crate::sync::{Direction, EchoTarget, StateKey};

/// How long a push to the CRM is marked in flight at most (longer than any CRM timeout).
const PUSH_MARK_MS: i64 = 30_000;

pub struct NoteStage {
    pub fields: EnerfloFields,
    pub install_id_paths: Vec<String>,
}

/// A readable `new_install_note`: the install and text are known.
pub struct NoteEvent {
    pub install_id: u64,
    pub text: String,
    /// [`note_text_hash`] of the text: the content hash and echo fingerprint.
    pub hash: String,
    pub note: InstallNote,
    pub event: String,
    /// The webhook record, for `raw`.
    pub record: Value,
}

impl NoteEvent {
    fn label(&self) -> String {
        format!(
            "note {} on install {}",
            self.note.note_id.as_deref().unwrap_or("(no id)"),
            self.install_id
        )
    }

    fn record_of(&self, origin: NoteOrigin, crm_note_id: Option<String>) -> NoteRecord {
        NoteRecord {
            origin,
            install_id: self.install_id,
            enerflo_note_id: self.note.note_id.clone(),
            crm_note_id,
        }
    }

    /// The note record, as the synced state remembers it.
    fn remember(&self, origin: NoteOrigin, crm_note_id: Option<String>) -> Remember {
        Remember {
            hash: self.hash.clone(),
            data: self.record_of(origin, crm_note_id).to_data(),
        }
    }
}

#[async_trait]
impl OutboundStage for NoteStage {
    type Event = NoteEvent;

    fn stage(&self) -> Stage {
        Stage::Note
    }

    fn read(&self, msg: &StageMessage<'_>) -> Result<NoteEvent, ReadError> {
        let envelope =
            Envelope::parse(msg.body.as_bytes(), Some(&msg.meta.event)).map_err(|e| {
                ReadError::Unreadable {
                    event: msg.meta.event.clone(),
                    detail: e.to_string(),
                }
            })?;
        let mut note = InstallNote::read(&envelope.record, &self.fields, &self.install_id_paths);
        // The registry's note extractor (the FIFO group) reads the install the same way.
        note.install_id = install_id(&envelope.record, &self.install_id_paths);
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
        let (Some(install), Some(text)) = (note.install_id, note.text.clone()) else {
            return Err(ReadError::Missing {
                event: envelope.event,
                what: missing,
            });
        };
        Ok(NoteEvent {
            install_id: install,
            hash: note_text_hash(&text),
            text,
            note,
            event: envelope.event,
            record: envelope.record,
        })
    }

    async fn resolve(
        &self,
        _kit: &Kit,
        _msg: &StageMessage<'_>,
        ev: &mut NoteEvent,
    ) -> Result<EntityKeys, SyncError> {
        // A note without an id is known by its install, time and text.
        let state = match &ev.note.note_id {
            Some(id) => StateKey::EnerfloNote(id.clone()),
            None => StateKey::NoteByContent {
                install: ev.install_id,
                created_at: ev.note.created_at.clone().unwrap_or_default(),
                hash: ev.hash.clone(),
            },
        };
        Ok(EntityKeys {
            lease: StateKey::Notes(ev.install_id),
            state,
        })
    }

    async fn decide(
        &self,
        kit: &Kit,
        _msg: &StageMessage<'_>,
        ev: NoteEvent,
        last: Option<&SyncState>,
    ) -> Result<Decision, SyncError> {
        let install_id = ev.install_id;
        let label = ev.label();
        if let Some(last) = last {
            let known = NoteRecord::from_data(&last.data);
            return Ok(match known.origin {
                NoteOrigin::Crm => Decision::skip(
                    OutcomeKind::Echo,
                    format!("{label} was written by us from the CRM"),
                ),
                NoteOrigin::Enerflo => Decision::skip(
                    OutcomeKind::Unchanged,
                    format!(
                        "{label} was already pushed (CRM note {})",
                        known.crm_note_id.as_deref().unwrap_or("unknown")
                    ),
                ),
            });
        }
        if let Some(id) = &ev.note.note_id
            && let Some(link) = kit
                .xref
                .resolve(EntityKind::Note, &IdRef::new(IdForm::EnerfloNote, id))
                .await?
            && link.crm_id.is_some()
        {
            return Ok(Decision::Skip {
                outcome: OutcomeKind::Echo,
                detail: format!(
                    "{label} is linked to CRM note {}",
                    link.crm_id.as_deref().unwrap_or("")
                ),
                remember: Some(ev.remember(NoteOrigin::Crm, link.crm_id.clone())),
            });
        }
        let target = EchoTarget::Notes(install_id);
        if kit
            .echo
            .fingerprinted(
                Direction::ToEnerflo,
                &target,
                std::slice::from_ref(&ev.hash),
            )
            .await?
        {
            // Remembered as the last synced state, so a later copy is not pushed either.
            return Ok(Decision::Skip {
                outcome: OutcomeKind::Echo,
                detail: format!("{label} matches a note we wrote to Enerflo"),
                remember: Some(ev.remember(NoteOrigin::Crm, None)),
            });
        }
        if in_flight(kit.state.as_ref(), Direction::ToEnerflo, install_id).await? {
            return Err(SyncError::transient_after(
                format!(
                    "{label}: a CRM note is being written to this install; waiting for its answer to tell an echo from a new note"
                ),
                Some(Duration::from_secs(1)),
            ));
        }

        let project = kit
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
        let enerflo = EnerfloRefs {
            install_id: Some(install_id),
            deal_id: project.as_ref().and_then(|p| p.id(IdForm::Deal)),
            survey_id: num(IdForm::Survey),
            ..EnerfloRefs::default()
        };
        // The project the note is on, for the event's `crm_id`; nothing is adopted on it (see
        // `adopts_crm_id`), so an install not linked yet stays unlinked.
        let link = project.unwrap_or_else(|| EntityLink {
            kind: EntityKind::Project,
            key: String::new(),
            ids: BTreeSet::new(),
            crm_id: None,
        });
        let data = json!({"note": {
            "id": ev.note.note_id.as_deref().map(id_json),
            "text": ev.text,
            "author": ev.note.author,
            "created_at": ev.note.created_at,
        }});

        Ok(Decision::Push(Box::new(Push {
            event_type: CrmEventType::NoteCreated,
            source_event: ev.event.clone(),
            occurred_at: ev
                .note
                .created_at
                .clone()
                .filter(|t| crate::timefmt::parse_enerflo_time(t).is_some()),
            kind: EntityKind::Project,
            link,
            enerflo,
            data,
            raw: kit.include_raw.then(|| json!({"webhook": ev.record})),
            remember: ev.remember(NoteOrigin::Enerflo, None),
            // Before the push: the CRM's automation may post the note back before it answers us.
            echo: Some((target, vec![ev.hash.clone()])),
            subject: label,
        })))
    }

    /// The CRM's answer names the CRM note, not the project.
    fn adopts_crm_id(&self) -> bool {
        false
    }

    /// Records and links the CRM note id the CRM answered.
    async fn delivered(
        &self,
        kit: &Kit,
        push: &Push,
        crm_id: Option<&str>,
        _ack: &CrmAck,
    ) -> Result<(), SyncError> {
        let Some(crm_note_id) = crm_id else {
            return Ok(());
        };
        let mut pushed = NoteRecord::from_data(&push.remember.data);
        pushed.crm_note_id = Some(crm_note_id.to_owned());
        // The origin first, then the link: whoever finds the link finds the origin too.
        put_note_record(
            kit.state.as_ref(),
            &StateKey::CrmNote(crm_note_id.to_owned()),
            &pushed,
            &push.remember.hash,
        )
        .await?;
        let mut ids = Vec::new();
        if let Some(id) = &pushed.enerflo_note_id {
            ids.push(IdRef::new(IdForm::EnerfloNote, id));
        }
        ids.push(IdRef::new(IdForm::Crm, crm_note_id));
        kit.xref.link(EntityKind::Note, &ids).await?;
        Ok(())
    }

    /// The note record under its Enerflo id, with the CRM note id answered.
    fn remember(&self, push: &Push, crm_id: Option<&str>) -> Remember {
        let mut pushed = NoteRecord::from_data(&push.remember.data);
        pushed.crm_note_id = crm_id.map(str::to_owned);
        Remember {
            hash: push.remember.hash.clone(),
            data: pushed.to_data(),
        }
    }

    /// Marked in flight until the CRM's note id is linked, so a post-back the fingerprint does
    /// not recognise (the CRM altered the text) waits for the link instead of writing. Written
    /// with the echo fingerprint, under the install's lease, before the delivery: the mark is up
    /// before the CRM can see the note; [`settle_writes`](Self::settle_writes) clears it whether
    /// the push then succeeds or fails.
    fn before_delivery(&self, _kit: &Kit, push: &Push) -> Vec<StoreWrite> {
        let install_id = NoteRecord::from_data(&push.remember.data).install_id;
        vec![in_flight_write(
            Direction::ToCrm,
            install_id,
            crate::timefmt::now_millis() + PUSH_MARK_MS,
        )]
    }

    /// Only now (the CRM note id linked and the record saved, in the same commit) is the
    /// in-flight mark cleared.
    fn settle_writes(&self, _kit: &Kit, push: &Push) -> Vec<StoreWrite> {
        let install_id = NoteRecord::from_data(&push.remember.data).install_id;
        vec![in_flight_write(Direction::ToCrm, install_id, 0)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::CrmEvent;
    use crate::classify::DEFAULT_INSTALL_ID_PATHS;
    use crate::consumer::StageHandler;
    use crate::crm::{CrmConnector, CrmError};
    use crate::pipeline::Pipeline;
    use crate::queue::MessageMeta;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{EchoStore, XrefStore};
    use crate::sync::notes::{get_note_record, mark_in_flight};
    use std::sync::{Arc, Mutex};

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

    struct Setup {
        stage: Pipeline<NoteStage>,
        crm: Arc<FakeCrm>,
        store: Arc<EmbeddedStore>,
    }

    /// Install 700001 linked to CRM project `crm-proj-1`, as a synced project is.
    async fn link_project(k: &Setup) {
        k.store
            .link(EntityKind::Project, &[IdRef::new(IdForm::Install, 700001)])
            .await
            .expect("link");
        k.store
            .set_crm_id(EntityKind::Project, "install:700001", "crm-proj-1")
            .await
            .expect("crm id");
    }

    fn kit() -> Setup {
        let store = Arc::new(EmbeddedStore::in_memory().expect("store"));
        let crm = Arc::new(FakeCrm::default());
        Setup {
            stage: Pipeline::new(
                NoteStage {
                    fields: EnerfloFields::default(),
                    install_id_paths: DEFAULT_INSTALL_ID_PATHS
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                },
                Kit::on(store.clone(), crm.clone(), false),
            ),
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
        link_project(&k).await;
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
        let origin = get_note_record(k.store.as_ref(), &StateKey::CrmNote("crm-note-1".into()))
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
            &StateKey::EnerfloNote("56".into()),
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
            Direction::ToEnerflo,
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
        mark_in_flight(k.store.as_ref(), Direction::ToEnerflo, 700001, 0)
            .await
            .expect("clear");
        let out = k.stage.handle(&meta(), &body, 2).await.expect("ok");
        // THEN it is an echo, never pushed
        assert_eq!(out.status, "echo");
        assert!(k.crm.events.lock().expect("lock").is_empty());
        // ... while an expired mark holds nothing back
        mark_in_flight(
            k.store.as_ref(),
            Direction::ToEnerflo,
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

    /// A CRM that notes, on each delivery, whether the push was marked in flight, and then
    /// answers a CRM note id or fails.
    struct ProbeCrm {
        store: Arc<EmbeddedStore>,
        fail: bool,
        marked: Mutex<Vec<bool>>,
    }

    #[async_trait]
    impl CrmConnector for ProbeCrm {
        async fn deliver(&self, _event: &CrmEvent) -> Result<CrmAck, CrmError> {
            let marked = in_flight(self.store.as_ref(), Direction::ToCrm, 700001)
                .await
                .expect("read");
            self.marked.lock().expect("lock").push(marked);
            if self.fail {
                return Err(CrmError::Unavailable {
                    status: Some(503),
                    detail: "crm down".into(),
                    retry_after: None,
                });
            }
            Ok(CrmAck {
                status: 200,
                crm_id: Some("crm-note-9".into()),
            })
        }
    }

    fn probed(fail: bool) -> (Pipeline<NoteStage>, Arc<ProbeCrm>, Arc<EmbeddedStore>) {
        let store = Arc::new(EmbeddedStore::in_memory().expect("store"));
        let crm = Arc::new(ProbeCrm {
            store: store.clone(),
            fail,
            marked: Mutex::new(Vec::new()),
        });
        let stage = Pipeline::new(
            kit().stage.stage,
            Kit::on(store.clone(), crm.clone(), false),
        );
        (stage, crm, store)
    }

    #[tokio::test]
    async fn a_push_is_marked_in_flight_while_delivering_and_the_mark_is_cleared_after() {
        // GIVEN a CRM that answers
        let (stage, crm, store) = probed(false);
        // WHEN a new note is pushed
        let out = stage
            .handle(&meta(), &note_event(70, "Meter set"), 1)
            .await
            .expect("ok");
        // THEN the mark was up during the delivery and is down after it
        assert_eq!(out.status, "delivered");
        assert_eq!(*crm.marked.lock().expect("lock"), vec![true]);
        assert!(
            !in_flight(store.as_ref(), Direction::ToCrm, 700001)
                .await
                .expect("read")
        );
    }

    #[tokio::test]
    async fn a_failed_push_clears_its_in_flight_mark_and_records_no_note() {
        // GIVEN a CRM that is down
        let (stage, crm, store) = probed(true);
        // WHEN a new note is pushed
        let err = stage
            .handle(&meta(), &note_event(71, "Meter set"), 1)
            .await
            .expect_err("fails");
        // THEN it is retried later, the mark does not hold the inbound route back, and no note
        // record says it was pushed
        assert!(err.is_transient(), "{err}");
        assert_eq!(*crm.marked.lock().expect("lock"), vec![true]);
        assert!(
            !in_flight(store.as_ref(), Direction::ToCrm, 700001)
                .await
                .expect("read")
        );
        assert_eq!(
            get_note_record(store.as_ref(), &StateKey::EnerfloNote("71".into()))
                .await
                .expect("read"),
            None
        );
    }

    #[tokio::test]
    async fn a_pushed_note_keeps_its_crm_note_id_and_leaves_the_projects_crm_id_alone() {
        // GIVEN install 700001 linked to CRM project crm-proj-1
        let k = kit();
        link_project(&k).await;
        // WHEN a note is pushed and the CRM answers the CRM note's id
        let out = k
            .stage
            .handle(&meta(), &note_event(72, "Panels delivered"), 1)
            .await
            .expect("ok");
        assert_eq!(out.status, "delivered");
        // THEN the project keeps its CRM id
        let project = k
            .store
            .resolve(EntityKind::Project, &IdRef::new(IdForm::Install, 700001))
            .await
            .expect("resolve")
            .expect("linked");
        assert_eq!(project.crm_id.as_deref(), Some("crm-proj-1"));
        // ... and the note is remembered under its Enerflo id with the CRM note id answered
        let record = get_note_record(k.store.as_ref(), &StateKey::EnerfloNote("72".into()))
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(
            record,
            NoteRecord {
                origin: NoteOrigin::Enerflo,
                install_id: 700001,
                enerflo_note_id: Some("72".into()),
                crm_note_id: Some("crm-note-1".into()),
            }
        );
        let again = k
            .stage
            .handle(&meta(), &note_event(72, "Panels delivered"), 1)
            .await
            .expect("ok");
        assert!(
            again.detail.contains("CRM note crm-note-1"),
            "{}",
            again.detail
        );
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
