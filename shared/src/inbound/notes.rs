//! Stage 5.1: `POST /crm/installs/{install}/notes` -> `POST /api/v3/installs/{id}/notes`.
//!
//! Idempotent on `crm_note_id`: repeats and concurrent calls create one Enerflo note (a claim on
//! `note#<crm_note_id>`; the loser waits for the winner and answers its result). A note that came
//! from Enerflo through us (its CRM id was answered to our `note.created`, or its text matches the
//! fingerprint `crm:note:install:<id>` recorded before the push) answers 200 `{"status":"echo"}`
//! and creates nothing. See [`crate::stages::note`] for the other direction, and
//! [`crate::sync::notes`] for what both directions share.

// A route's error is the problem+json answer itself, built once per request.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::StatusCode;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::config::EnerfloFields;
use crate::enerflo::EnerfloApi;
use crate::enerflo::api_notes::{note_body, note_id_from_answer};
use crate::enerflo::install_note::note_text_hash;
use crate::http::inbound::{enerflo_problem, json_object, resolve_install, store_problem};
use crate::http::problem::FieldError;
use crate::http::router::{InboundRoute, RouteParams};
use crate::http::{HttpRequest, HttpResponse, Problem};
use crate::ids::CrmId;
use crate::store::{Claim, ClaimStore, EntityKind, IdForm, IdRef, SyncStateStore, XrefStore};
use crate::sync::notes::{
    NoteOrigin, NoteRecord, get_note_record, id_json, in_flight, mark_in_flight, put_note_record,
};
use crate::sync::{Direction, EchoGuard, EchoTarget, StateKey};

/// How often a concurrent caller looks whether the winner has finished.
const CLAIM_POLL: Duration = Duration::from_millis(100);

pub struct NotesRoute {
    pub enerflo: Arc<dyn EnerfloApi>,
    pub xref: Arc<dyn XrefStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub state: Arc<dyn SyncStateStore>,
    pub echo: EchoGuard,
    pub fields: EnerfloFields,
    /// The longest this route waits on Enerflo (and on a concurrent call of the same note).
    pub budget: Duration,
    pub idempotency_ttl: Duration,
}

/// A validated request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteInput {
    pub crm_note_id: String,
    /// Exactly as given (sent to Enerflo untouched); never blank.
    pub text: String,
    pub author: Option<String>,
}

/// Checks the body; names every bad field at once.
pub fn validate(body: &Map<String, Value>) -> Result<NoteInput, Problem> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: &str| {
        errors.push(FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        })
    };
    let crm_note_id = match body.get("crm_note_id") {
        None | Some(Value::Null) => {
            bad("crm_note_id", "is required");
            None
        }
        Some(Value::String(s)) => {
            let id = CrmId::parse(s).map(|id| id.to_string());
            if id.is_none() {
                bad(
                    "crm_note_id",
                    "must be a non-blank id of at most 256 characters without control characters",
                );
            }
            id
        }
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        Some(_) => {
            bad("crm_note_id", "must be a string");
            None
        }
    };
    let text = match body.get("text") {
        None | Some(Value::Null) => {
            bad("text", "is required");
            None
        }
        Some(Value::String(s)) if s.trim().is_empty() => {
            bad("text", "must not be empty");
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            bad("text", "must be a string");
            None
        }
    };
    let author = match body.get("author") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => crate::canonical::clean(Some(s)),
        Some(_) => {
            bad("author", "must be a string or null");
            None
        }
    };
    match (crm_note_id, text) {
        (Some(crm_note_id), Some(text)) if errors.is_empty() => Ok(NoteInput {
            crm_note_id,
            text,
            author,
        }),
        _ => Err(Problem::validation(errors)),
    }
}

fn created(crm_note_id: &str, enerflo_note_id: Option<&str>) -> HttpResponse {
    HttpResponse::json(
        StatusCode::CREATED,
        &json!({"crm_note_id": crm_note_id, "enerflo_note_id": enerflo_note_id.map(id_json), "created": true}),
    )
}

fn repeat(crm_note_id: &str, enerflo_note_id: Option<&str>) -> HttpResponse {
    HttpResponse::json(
        StatusCode::OK,
        &json!({"crm_note_id": crm_note_id, "enerflo_note_id": enerflo_note_id.map(id_json), "created": false}),
    )
}

fn echo(crm_note_id: &str, enerflo_note_id: Option<&str>) -> HttpResponse {
    HttpResponse::json(
        StatusCode::OK,
        &json!({"status": "echo", "crm_note_id": crm_note_id, "enerflo_note_id": enerflo_note_id.map(id_json), "created": false}),
    )
}

#[async_trait]
impl InboundRoute for NotesRoute {
    async fn handle(&self, req: &HttpRequest, params: &RouteParams) -> HttpResponse {
        match self.run(req, params).await {
            Ok(resp) => resp,
            Err(problem) => problem.into_response(),
        }
    }
}

impl NotesRoute {
    async fn run(&self, req: &HttpRequest, params: &RouteParams) -> Result<HttpResponse, Problem> {
        let input = validate(&json_object(req)?)?;
        let target =
            resolve_install(self.xref.as_ref(), params.install.as_deref().unwrap_or("")).await?;
        let install_id = target.install_id;
        let span = tracing::info_span!("crm_note", install_id, crm_note_id = %input.crm_note_id);
        self.decide(&input, install_id).instrument(span).await
    }

    async fn decide(&self, input: &NoteInput, install_id: u64) -> Result<HttpResponse, Problem> {
        let crm_note_id = input.crm_note_id.as_str();
        let hash = note_text_hash(&input.text);
        if let Some(answer) = self.known(crm_note_id).await? {
            return Ok(answer);
        }
        if self
            .echo
            .fingerprinted(
                Direction::ToCrm,
                &EchoTarget::Notes(install_id),
                std::slice::from_ref(&hash),
            )
            .await
            .map_err(store_problem)?
        {
            tracing::info!(outcome = "echo", "crm note matches a note we pushed");
            return Ok(echo(crm_note_id, None));
        }
        // A note of this install is being pushed to the CRM right now: this may be its echo, with
        // its text altered by the CRM. Wait for the push to link its CRM id, then look again.
        let deadline = Instant::now() + self.budget;
        let mut waited = false;
        while in_flight(self.state.as_ref(), Direction::ToCrm, install_id)
            .await
            .map_err(store_problem)?
        {
            if Instant::now() + CLAIM_POLL >= deadline {
                return Err(Problem::unavailable(
                    "A note of this install is being pushed to the CRM; retry.",
                    Duration::from_secs(2),
                ));
            }
            waited = true;
            tokio::time::sleep(CLAIM_POLL).await;
        }
        if waited && let Some(answer) = self.known(crm_note_id).await? {
            return Ok(answer);
        }

        let key = StateKey::CrmNoteClaim(crm_note_id.to_owned()).scope();
        loop {
            let claim = self
                .claims
                .claim(
                    &key,
                    self.budget.as_secs() + 10,
                    self.idempotency_ttl.as_secs(),
                )
                .await
                .map_err(store_problem)?;
            match claim {
                Claim::Acquired => return self.create(input, install_id, &hash, &key).await,
                Claim::Completed { outcome } => {
                    let done: Value = serde_json::from_str(&outcome).unwrap_or(Value::Null);
                    tracing::info!(outcome = "repeat", "crm note");
                    return Ok(repeat(
                        crm_note_id,
                        done.get("enerflo_note_id")
                            .and_then(crate::enerflo::lenient::value_to_string)
                            .as_deref(),
                    ));
                }
                Claim::InProgress if Instant::now() + CLAIM_POLL < deadline => {
                    tokio::time::sleep(CLAIM_POLL).await;
                }
                Claim::InProgress => {
                    return Err(Problem::unavailable(
                        "A request with this crm_note_id is still being written to Enerflo; retry.",
                        Duration::from_secs(2),
                    ));
                }
            }
        }
    }

    /// The answer for a CRM note id we already know: our own push coming back (echo), or a
    /// repeat of a note written from the CRM.
    async fn known(&self, crm_note_id: &str) -> Result<Option<HttpResponse>, Problem> {
        if let Some(known) = get_note_record(
            self.state.as_ref(),
            &StateKey::CrmNote(crm_note_id.to_owned()),
        )
        .await
        .map_err(store_problem)?
        {
            let e = known.enerflo_note_id.as_deref();
            tracing::info!(outcome = "known", origin = ?known.origin, "crm note");
            return Ok(Some(match known.origin {
                NoteOrigin::Enerflo => echo(crm_note_id, e),
                NoteOrigin::Crm => repeat(crm_note_id, e),
            }));
        }
        if let Some(link) = self
            .xref
            .resolve(EntityKind::Note, &IdRef::new(IdForm::Crm, crm_note_id))
            .await
            .map_err(store_problem)?
        {
            tracing::info!(outcome = "linked", "crm note");
            return Ok(Some(repeat(
                crm_note_id,
                link.id(IdForm::EnerfloNote).as_deref(),
            )));
        }
        Ok(None)
    }

    /// The winner of the claim writes the note.
    async fn create(
        &self,
        input: &NoteInput,
        install_id: u64,
        hash: &str,
        key: &str,
    ) -> Result<HttpResponse, Problem> {
        let crm_note_id = input.crm_note_id.as_str();
        // Before the write: Enerflo's webhook for the new note may arrive before its answer.
        if let Err(e) = self
            .echo
            .record(
                Direction::ToEnerflo,
                &EchoTarget::Notes(install_id),
                &[hash.to_owned()],
            )
            .await
        {
            self.release(key).await;
            return Err(store_problem(e));
        }
        let until = crate::timefmt::now_millis()
            + i64::try_from(self.budget.as_millis()).unwrap_or(i64::MAX / 2)
            + 2_000;
        if let Err(e) =
            mark_in_flight(self.state.as_ref(), Direction::ToEnerflo, install_id, until).await
        {
            tracing::warn!(error = %e, "note write not marked in flight");
        }
        let body = note_body(&self.fields, &input.text, input.author.as_deref());
        let written = self
            .enerflo
            .add_install_note(install_id, &body, self.budget)
            .await;
        let answer = match written {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %e, "enerflo note write failed");
                self.clear_mark(install_id).await;
                self.release(key).await;
                return Err(enerflo_problem(e));
            }
        };
        let enerflo_note_id = note_id_from_answer(&answer);
        if enerflo_note_id.is_none() {
            tracing::warn!(
                "Enerflo's answer to the note write carries no note id; echoes are recognised by content only"
            );
        }
        // The note exists now: whatever the store does next, the answer is 201 (a retry would
        // find the claim or the state and create nothing).
        let outcome = json!({"enerflo_note_id": enerflo_note_id, "install_id": install_id});
        if let Err(e) = self
            .claims
            .complete(key, &outcome.to_string(), self.idempotency_ttl.as_secs())
            .await
        {
            tracing::error!(error = %e, "note claim not completed");
        }
        let record = NoteRecord {
            origin: NoteOrigin::Crm,
            install_id,
            enerflo_note_id: enerflo_note_id.clone(),
            crm_note_id: Some(crm_note_id.to_owned()),
        };
        let mut keys = vec![StateKey::CrmNote(crm_note_id.to_owned())];
        if let Some(e) = &enerflo_note_id {
            keys.push(StateKey::EnerfloNote(e.clone()));
        }
        for key in keys {
            if let Err(e) = put_note_record(self.state.as_ref(), &key, &record, hash).await {
                tracing::error!(error = %e, "note origin not stored");
            }
        }
        if let Some(e) = &enerflo_note_id
            && let Err(err) = self
                .xref
                .link(
                    EntityKind::Note,
                    &[
                        IdRef::new(IdForm::EnerfloNote, e),
                        IdRef::new(IdForm::Crm, crm_note_id),
                    ],
                )
                .await
        {
            tracing::error!(error = %err, "note ids not linked");
        }
        // Only now: until the link exists, the note stage holds back unrecognised notes.
        self.clear_mark(install_id).await;
        tracing::info!(
            outcome = "created",
            enerflo_note_id = enerflo_note_id.as_deref().unwrap_or(""),
            "crm note"
        );
        Ok(created(crm_note_id, enerflo_note_id.as_deref()))
    }

    async fn clear_mark(&self, install_id: u64) {
        if let Err(e) =
            mark_in_flight(self.state.as_ref(), Direction::ToEnerflo, install_id, 0).await
        {
            tracing::warn!(error = %e, "note write mark not cleared; it expires by itself");
        }
    }

    async fn release(&self, key: &str) {
        if let Err(e) = self.claims.release(key).await {
            tracing::error!(error = %e, "note claim not released; a retry waits for its lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enerflo::EnerfloError;
    use crate::enerflo::client::ApiResponse;
    use crate::store::EchoStore;
    use crate::store::embedded::EmbeddedStore;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Enerflo's notes endpoint: answers `{"id": N}` after `delay`, or the error queued first.
    struct FakeEnerflo {
        calls: Mutex<Vec<(String, Value)>>,
        next_id: AtomicU64,
        delay: Duration,
        fail_first: Mutex<Option<EnerfloError>>,
    }

    impl FakeEnerflo {
        fn new(delay: Duration) -> Arc<Self> {
            Arc::new(Self {
                calls: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(500),
                delay,
                fail_first: Mutex::new(None),
            })
        }

        fn calls(&self) -> Vec<(String, Value)> {
            self.calls.lock().expect("lock").clone()
        }
    }

    #[async_trait]
    impl EnerfloApi for FakeEnerflo {
        async fn send(
            &self,
            _method: reqwest::Method,
            path: &str,
            body: Option<&Value>,
            _budget: Duration,
        ) -> Result<ApiResponse, EnerfloError> {
            self.calls
                .lock()
                .expect("lock")
                .push((path.to_owned(), body.cloned().unwrap_or(Value::Null)));
            tokio::time::sleep(self.delay).await;
            if let Some(e) = self.fail_first.lock().expect("lock").take() {
                return Err(e);
            }
            let id = self.next_id.fetch_add(1, Ordering::SeqCst);
            Ok(ApiResponse {
                status: 201,
                body: json!({"id": id, "note": "as stored"}),
            })
        }
    }

    struct Kit {
        route: Arc<NotesRoute>,
        enerflo: Arc<FakeEnerflo>,
        store: Arc<EmbeddedStore>,
    }

    fn kit(delay: Duration) -> Kit {
        let store = Arc::new(EmbeddedStore::in_memory().expect("store"));
        let enerflo = FakeEnerflo::new(delay);
        Kit {
            route: Arc::new(NotesRoute {
                enerflo: enerflo.clone(),
                xref: store.clone(),
                claims: store.clone(),
                state: store.clone(),
                echo: EchoGuard::new(store.clone(), store.clone(), Duration::from_secs(3600)),
                fields: EnerfloFields::default(),
                budget: Duration::from_secs(5),
                idempotency_ttl: Duration::from_secs(86_400),
            }),
            enerflo,
            store,
        }
    }

    fn request(body: Value) -> HttpRequest {
        HttpRequest {
            method: http::Method::POST,
            path: "/crm/installs/enerflo:700001/notes".into(),
            query: None,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    fn install(raw: &str) -> RouteParams {
        RouteParams {
            install: Some(raw.into()),
            milestone: None,
        }
    }

    async fn post(route: &NotesRoute, body: Value) -> (u16, Value) {
        let resp = route
            .handle(&request(body), &install("enerflo:700001"))
            .await;
        (resp.status.as_u16(), resp.body_json())
    }

    #[tokio::test]
    async fn validation_names_every_bad_field_and_calls_nothing() {
        let k = kit(Duration::ZERO);
        let (status, body) = post(&k.route, json!({"text": "   ", "author": 5})).await;
        assert_eq!(status, 422);
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert_eq!(fields, vec!["crm_note_id", "text", "author"]);
        let (status, _) = post(&k.route, json!({"crm_note_id": "", "text": 3})).await;
        assert_eq!(status, 422);
        assert!(k.enerflo.calls().is_empty());
    }

    #[tokio::test]
    async fn a_crm_note_is_written_once_and_a_repeat_answers_the_same_enerflo_note() {
        let k = kit(Duration::ZERO);
        let body = json!({"crm_note_id": "c-1", "text": "  Site visit booked ", "author": "Ann"});
        let (s1, b1) = post(&k.route, body.clone()).await;
        let (s2, b2) = post(&k.route, body).await;
        assert_eq!((s1, s2), (201, 200));
        assert_eq!(
            b1,
            json!({"crm_note_id": "c-1", "enerflo_note_id": 500, "created": true})
        );
        assert_eq!(
            b2,
            json!({"crm_note_id": "c-1", "enerflo_note_id": 500, "created": false})
        );
        let calls = k.enerflo.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, "/api/v3/installs/700001/notes");
        assert_eq!(
            calls[0].1,
            json!({"note": "  Site visit booked "}),
            "text sent as given"
        );
        // The Enerflo note is linked to the CRM note, and its echo is recognisable.
        let link = k
            .store
            .resolve(EntityKind::Note, &IdRef::new(IdForm::EnerfloNote, 500))
            .await
            .expect("resolve")
            .expect("linked");
        assert_eq!(link.crm_id.as_deref(), Some("c-1"));
        assert!(
            k.store
                .is_echo(
                    "enerflo:note:install:700001",
                    &note_text_hash("Site visit booked")
                )
                .await
                .expect("read")
        );
    }

    #[tokio::test]
    async fn concurrent_calls_with_one_crm_note_id_create_one_enerflo_note() {
        let k = kit(Duration::from_millis(300));
        let body = json!({"crm_note_id": 77, "text": "Same note"});
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let route = k.route.clone();
                let body = body.clone();
                tokio::spawn(async move { post(&route, body).await })
            })
            .collect();
        let mut statuses = Vec::new();
        for c in calls {
            let (status, body) = c.await.expect("join");
            assert_eq!(body["enerflo_note_id"], json!(500), "{body}");
            statuses.push(status);
        }
        statuses.sort_unstable();
        assert_eq!(statuses, vec![200, 200, 200, 201]);
        assert_eq!(k.enerflo.calls().len(), 1);
    }

    #[tokio::test]
    async fn a_note_we_pushed_to_the_crm_coming_back_is_an_echo() {
        let k = kit(Duration::ZERO);
        // By id: stage 5.2 pushed Enerflo note 9 and the CRM answered c-9.
        put_note_record(
            k.store.as_ref(),
            &StateKey::CrmNote("c-9".into()),
            &NoteRecord {
                origin: NoteOrigin::Enerflo,
                install_id: 700001,
                enerflo_note_id: Some("9".into()),
                crm_note_id: Some("c-9".into()),
            },
            &note_text_hash("From Enerflo"),
        )
        .await
        .expect("state");
        let (s1, b1) = post(
            &k.route,
            json!({"crm_note_id": "c-9", "text": "From Enerflo"}),
        )
        .await;
        // By fingerprint: the CRM's automation posted back before the CRM answered us.
        k.store
            .record_write("crm:note:install:700001", &note_text_hash("Racing"), 60)
            .await
            .expect("fingerprint");
        let (s2, b2) = post(&k.route, json!({"crm_note_id": "c-10", "text": " Racing "})).await;
        assert_eq!((s1, s2), (200, 200));
        assert_eq!(
            (b1["status"].as_str(), b2["status"].as_str()),
            (Some("echo"), Some("echo"))
        );
        assert_eq!(b1["enerflo_note_id"], json!(9));
        assert!(k.enerflo.calls().is_empty());
    }

    #[tokio::test]
    async fn a_post_back_during_a_push_waits_for_the_push_and_is_then_an_echo() {
        // GIVEN Enerflo note 21 is being pushed to the CRM
        let k = kit(Duration::ZERO);
        let far = crate::timefmt::now_millis() + 5_000;
        mark_in_flight(k.store.as_ref(), Direction::ToCrm, 700001, far)
            .await
            .expect("mark");
        // WHEN the CRM's automation posts it back, text altered, before the CRM answered us
        let route = k.route.clone();
        let call = tokio::spawn(async move {
            post(
                &route,
                json!({"crm_note_id": "c-21", "text": "Enerflo: Permit approved"}),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // ... and then the push completes: the CRM answered c-21
        put_note_record(
            k.store.as_ref(),
            &StateKey::CrmNote("c-21".into()),
            &NoteRecord {
                origin: NoteOrigin::Enerflo,
                install_id: 700001,
                enerflo_note_id: Some("21".into()),
                crm_note_id: Some("c-21".into()),
            },
            &note_text_hash("Permit approved"),
        )
        .await
        .expect("state");
        mark_in_flight(k.store.as_ref(), Direction::ToCrm, 700001, 0)
            .await
            .expect("clear");
        // THEN the post-back answers echo and Enerflo is not called
        let (status, body) = call.await.expect("join");
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("echo")),
            "{body}"
        );
        assert_eq!(body["enerflo_note_id"], json!(21));
        assert!(k.enerflo.calls().is_empty());
        // ... while a genuinely new CRM note after the push is written
        let (status, _) = post(&k.route, json!({"crm_note_id": "c-22", "text": "New"})).await;
        assert_eq!(status, 201);
    }

    #[tokio::test]
    async fn an_unlinked_install_is_404_without_an_enerflo_call() {
        let k = kit(Duration::ZERO);
        let resp = k
            .route
            .handle(
                &request(json!({"crm_note_id": "c-1", "text": "x"})),
                &install("crm-project-unknown"),
            )
            .await;
        assert_eq!(resp.status.as_u16(), 404);
        assert!(k.enerflo.calls().is_empty());
    }

    #[tokio::test]
    async fn enerflo_rate_limiting_answers_429_and_a_retry_can_still_create_the_note() {
        let k = kit(Duration::ZERO);
        *k.enerflo.fail_first.lock().expect("lock") = Some(EnerfloError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        });
        let body = json!({"crm_note_id": "c-2", "text": "Retry me"});
        let resp = k
            .route
            .handle(&request(body.clone()), &install("enerflo:700001"))
            .await;
        assert_eq!(resp.status.as_u16(), 429);
        assert_eq!(
            resp.headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("7")
        );
        let (status, answer) = post(&k.route, body).await;
        assert_eq!((status, answer["created"].as_bool()), (201, Some(true)));
        assert_eq!(k.enerflo.calls().len(), 2);
    }
}
