//! Stages 3 and 4 without HTTP or threads: the consumers and inbound routes driven directly, on
//! the embedded store, with a scripted Enerflo and a recording CRM. Both directions and the echo
//! protection between them. (The same behaviours through the local runner over HTTP are in
//! `tests/tests/e2e/{status,milestone}.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use enerflo_sync::canonical::CrmEvent;
use enerflo_sync::classify::Stage;
use enerflo_sync::config::EnerfloFields;
use enerflo_sync::consumer::{Consumer, StageHandler};
use enerflo_sync::crm::{CrmAck, CrmConnector, CrmError};
use enerflo_sync::enerflo::api_status::StatusCatalog;
use enerflo_sync::enerflo::client::{ApiResponse, EnerfloApi, EnerfloError};
use enerflo_sync::http::router::Router;
use enerflo_sync::http::{HttpRequest, HttpResponse};
use enerflo_sync::inbound::milestone::MilestoneRoute;
use enerflo_sync::inbound::status::StatusRoute;
use enerflo_sync::pipeline::{Kit, Pipeline};
use enerflo_sync::queue::embedded::EmbeddedQueue;
use enerflo_sync::queue::{EventQueue, MessageMeta, QueueMessage};
use enerflo_sync::retry::RetryPolicy;
use enerflo_sync::secret::SecretSet;
use enerflo_sync::stages::milestone::MilestoneStage;
use enerflo_sync::stages::status::StatusStage;
use enerflo_sync::store::embedded::{EmbeddedStore, open_database};
use enerflo_sync::store::{EntityKind, IdForm, IdRef, XrefStore};
use reqwest::Method;
use serde_json::{Value, json};

use crate::kit::{PROJECT_SUBMITTED, UPDATE_INSTALL as REAL, UPDATE_INSTALL_DOCS as DOCS};

const TOKEN: &str = "test-crm-token";

/// Enerflo with a fixed status list and install object; records every call.
struct FakeEnerflo {
    calls: Mutex<Vec<(Method, String, Option<Value>)>>,
    install: Mutex<Value>,
    /// `installs/find/{deal}` answers by deal; unlisted deals get `install`.
    finds: Mutex<std::collections::HashMap<String, Value>>,
}

impl FakeEnerflo {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::new(Vec::new()),
            install: Mutex::new(json!({"id": 700001, "status_id": 1, "status_name": "New",
                "all_milestones": [
                    {"id": 51, "milestone_id": 3901, "title": "Engineering",
                     "start_date": "2025-02-01", "completed_date": "2025-03-01"}]})),
            finds: Mutex::new(std::collections::HashMap::new()),
        })
    }

    fn calls(&self, method: Method, prefix: &str) -> Vec<Option<Value>> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| *m == method && p.starts_with(prefix))
            .map(|(_, _, b)| b.clone())
            .collect()
    }

    fn writes(&self) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _, _)| *m != Method::GET)
            .count()
    }
}

#[async_trait]
impl EnerfloApi for FakeEnerflo {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        _budget: Duration,
    ) -> Result<ApiResponse, EnerfloError> {
        self.calls
            .lock()
            .unwrap()
            .push((method.clone(), path.to_owned(), body.cloned()));
        let body = match (method, path) {
            (Method::GET, "/api/v3/install-statuses") => json!([
                {"id": 1, "name": "New"}, {"id": 4, "name": "On Hold"},
                {"id": 5, "name": "Voided"}, {"id": 6, "name": "Completed"},
                {"id": 321, "name": "Example Custom Status"}]),
            (Method::GET, p)
                if p.strip_prefix("/api/v3/installs/find/")
                    .is_some_and(|d| self.finds.lock().unwrap().contains_key(d)) =>
            {
                let deal = p.trim_start_matches("/api/v3/installs/find/");
                self.finds.lock().unwrap()[deal].clone()
            }
            (Method::GET, p) if p.starts_with("/api/v3/installs/") => {
                self.install.lock().unwrap().clone()
            }
            _ => json!({}),
        };
        Ok(ApiResponse { status: 200, body })
    }
}

/// A CRM that accepts everything and answers a fixed project id. With `callback` set, its
/// automation calls our inbound route with the value it got *before* answering the push.
#[derive(Default)]
struct RecordingCrm {
    events: Mutex<Vec<CrmEvent>>,
    callback: OnceLock<(Arc<Router>, String, Value)>,
    callback_answers: Mutex<Vec<Value>>,
    /// Answer the next push with a 503 (after recording it, as a CRM that got it but failed).
    fail_next: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl CrmConnector for RecordingCrm {
    async fn deliver(&self, event: &CrmEvent) -> Result<CrmAck, CrmError> {
        self.events.lock().unwrap().push(event.clone());
        if self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(CrmError::Unavailable {
                status: Some(503),
                detail: "unavailable".into(),
                retry_after: None,
            });
        }
        if let Some((router, path, body)) = self.callback.get() {
            let answer = put(router, path, body.clone()).await;
            self.callback_answers
                .lock()
                .unwrap()
                .push(json!([answer.0, answer.1]));
        }
        Ok(CrmAck {
            status: 200,
            crm_id: Some("crm-proj-1".into()),
        })
    }
}

struct World {
    store: Arc<EmbeddedStore>,
    enerflo: Arc<FakeEnerflo>,
    crm: Arc<RecordingCrm>,
    status: Pipeline<StatusStage>,
    milestone: Pipeline<MilestoneStage>,
    router: Arc<Router>,
}

fn world() -> World {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let enerflo = FakeEnerflo::new();
    let crm = Arc::new(RecordingCrm::default());
    let mut fields = EnerfloFields::default();
    fields.milestone_keys.insert("engineering".into(), 3901);
    let install_id_paths: Vec<String> = enerflo_sync::classify::DEFAULT_INSTALL_ID_PATHS
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let budget = Duration::from_secs(2);
    let kit = Kit::on(store.clone(), crm.clone(), false);
    let status = Pipeline::new(
        StatusStage {
            enerflo: enerflo.clone(),
            catalog: Arc::new(StatusCatalog::default()),
            fields: fields.clone(),
            install_id_paths: install_id_paths.clone(),
            call_budget: budget,
        },
        kit.clone(),
    );
    let milestone = Pipeline::new(
        MilestoneStage {
            enerflo: enerflo.clone(),
            fields: fields.clone(),
            install_id_paths,
            call_budget: budget,
        },
        kit.clone(),
    );
    let router = Arc::new(Router {
        crm_tokens: SecretSet::parse(TOKEN),
        milestones: Some(Arc::new(MilestoneRoute {
            enerflo: enerflo.clone(),
            xref: store.clone(),
            claims: store.clone(),
            echo: kit.echo.clone(),
            fields: fields.clone(),
            budget,
        })),
        status: Some(Arc::new(StatusRoute {
            enerflo: enerflo.clone(),
            xref: store.clone(),
            claims: store.clone(),
            echo: kit.echo.clone(),
            catalog: Arc::new(StatusCatalog::default()),
            status_field: fields.status_field.clone(),
            budget,
        })),
        ..Router::default()
    });
    World {
        store,
        enerflo,
        crm,
        status,
        milestone,
        router,
    }
}

/// A CRM call to an inbound route.
async fn put(router: &Router, path: &str, body: Value) -> (u16, Value) {
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let resp: HttpResponse = router
        .handle(HttpRequest {
            method: http::Method::PUT,
            path: path.into(),
            query: None,
            headers,
            body: bytes::Bytes::from(body.to_string()),
        })
        .await;
    (resp.status.as_u16(), resp.body_json())
}

fn meta(stage: Stage, event: &str) -> MessageMeta {
    MessageMeta {
        stage,
        event: event.into(),
        dedupe_key: format!("{event}:test:{}", fastrand_suffix()),
        group: "install:700001".into(),
        received_at: "2025-04-01T00:00:00Z".into(),
    }
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

fn update_install(status_id: u64, name: &str) -> String {
    json!({"webhook_event": "update_install", "id": 700001,
           "status": {"id": status_id, "name": name}})
    .to_string()
}

fn milestone_event(start: Value, completed: Value) -> String {
    json!({"webhook_event": "project_milestone_updated", "install_id": 700001,
           "milestone_id": 3901, "milestone": {"id": 3901, "title": "Engineering"},
           "start_date": start, "completed_date": completed})
    .to_string()
}

impl World {
    async fn status_event(&self, event: &str, body: &str) -> &'static str {
        self.status
            .handle(&meta(Stage::Status, event), body, 1)
            .await
            .expect("handled")
            .status
            .as_str()
    }

    async fn milestone_event(&self, body: &str) -> &'static str {
        self.milestone
            .handle(
                &meta(Stage::Milestone, "project_milestone_updated"),
                body,
                1,
            )
            .await
            .expect("handled")
            .status
            .as_str()
    }

    fn crm_events(&self) -> Vec<CrmEvent> {
        self.crm.events.lock().unwrap().clone()
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        put(&self.router, path, body).await
    }

    /// Links install 700001 to CRM project `crm-proj-1`, as a synced project would be.
    async fn link_project(&self) {
        let link = self
            .store
            .link(EntityKind::Project, &[IdRef::new(IdForm::Install, 700001)])
            .await
            .unwrap();
        self.store
            .set_crm_id(EntityKind::Project, &link.key, "crm-proj-1")
            .await
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 4.2: Enerflo status -> CRM
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn real_update_install_shape_pushes_the_status_object_it_carries() {
    let w = world();
    assert_eq!(w.status_event("update_install", REAL).await, "delivered");
    let events = w.crm_events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.event_type.as_str(), "status.changed");
    assert_eq!(
        e.data["status"],
        json!({"id": 321, "name": "Example Custom Status"})
    );
    assert_eq!(e.data["previous"], Value::Null);
    assert_eq!(e.data["restored"], false);
    assert_eq!(e.enerflo.install_id, Some(700001));
    assert_eq!(e.occurred_at, "2025-01-02T09:30:00Z");
    assert!(
        w.enerflo.calls(Method::GET, "/").is_empty(),
        "the real shape needs no Enerflo call"
    );
}

#[tokio::test]
async fn docs_update_install_shape_names_its_status_id_through_the_status_list() {
    let w = world();
    // The docs example carries no `webhook_event`: the subscription's `?event=` names it.
    assert_eq!(w.status_event("update_install", DOCS).await, "delivered");
    let e = &w.crm_events()[0];
    assert_eq!(e.data["status"], json!({"id": 4, "name": "On Hold"}));
    assert_eq!(e.data["on_hold"], true);
    assert_eq!(
        w.enerflo
            .calls(Method::GET, "/api/v3/install-statuses")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_status_change_is_pushed_once_and_an_unchanged_status_is_not_pushed() {
    let w = world();
    assert_eq!(
        w.status_event("update_install", &update_install(1, "New"))
            .await,
        "delivered"
    );
    assert_eq!(
        w.status_event("update_install", &update_install(1, "New"))
            .await,
        "unchanged"
    );
    // The docs shape with the same id is the same status.
    let same_in_docs_shape = json!({"id": 700001, "status_id": 1}).to_string();
    assert_eq!(
        w.status_event("update_install", &same_in_docs_shape).await,
        "unchanged"
    );
    assert_eq!(
        w.status_event("update_install", &update_install(4, "On Hold"))
            .await,
        "delivered"
    );
    let events = w.crm_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].data["previous"], json!({"id": 1, "name": "New"}));
    assert_ne!(events[0].id, events[1].id);
}

#[tokio::test]
async fn on_hold_voided_and_completed_flags_follow_the_status_name() {
    let w = world();
    for (id, name) in [
        (4, "on hold"),
        (5, "Voided"),
        (6, "COMPLETED"),
        (321, "Example Custom Status"),
    ] {
        assert_eq!(
            w.status_event("update_install", &update_install(id, name))
                .await,
            "delivered"
        );
    }
    let flags: Vec<(bool, bool, bool)> = w
        .crm_events()
        .iter()
        .map(|e| {
            (
                e.data["on_hold"].as_bool().unwrap(),
                e.data["voided"].as_bool().unwrap(),
                e.data["completed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            (true, false, false),
            (false, true, false),
            (false, false, true),
            (false, false, false)
        ]
    );
}

#[tokio::test]
async fn a_void_then_restore_reaches_the_crm_as_restored_from_voided() {
    let w = world();
    w.status_event("update_install", &update_install(6, "Completed"))
        .await;
    w.status_event("update_install", &update_install(5, "Voided"))
        .await;
    let restore = json!({"webhook_event": "restore_install", "id": 700001,
                         "status": {"id": 1, "name": "New"}})
    .to_string();
    assert_eq!(
        w.status_event("restore_install", &restore).await,
        "delivered"
    );
    assert_eq!(
        w.status_event("restore_install", &restore).await,
        "unchanged"
    );
    let events = w.crm_events();
    assert_eq!(events.len(), 3);
    let e = &events[2];
    assert_eq!(e.source_event, "restore_install");
    assert_eq!(e.data["restored"], true);
    assert_eq!(e.data["previous"], json!({"id": 5, "name": "Voided"}));
    assert_eq!(e.data["status"], json!({"id": 1, "name": "New"}));
}

#[tokio::test]
async fn a_restore_after_its_update_install_is_still_told_with_previous_voided() {
    let w = world();
    w.status_event("update_install", &update_install(5, "Voided"))
        .await;
    w.status_event("update_install", &update_install(1, "New"))
        .await;
    let restore = json!({"webhook_event": "restore_install", "id": 700001,
                         "status": {"id": 1, "name": "New"}})
    .to_string();
    assert_eq!(
        w.status_event("restore_install", &restore).await,
        "delivered"
    );
    let e = w.crm_events().pop().unwrap();
    assert_eq!(
        (
            e.data["restored"].clone(),
            e.data["previous"]["name"].clone()
        ),
        (json!(true), json!("Voided"))
    );
}

#[tokio::test]
async fn the_linked_crm_project_id_is_carried_on_status_events() {
    let w = world();
    w.link_project().await;
    w.status_event("update_install", REAL).await;
    assert_eq!(w.crm_events()[0].crm_id.as_deref(), Some("crm-proj-1"));
}

// ---------------------------------------------------------------------------------------------
// Stage 4.1: CRM status -> Enerflo, and the echo protection in both directions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_status_name_is_422_listing_the_valid_names_and_writes_nothing() {
    let w = world();
    w.link_project().await;
    let (status, body) = w
        .put(
            "/crm/installs/crm-proj-1/status",
            json!({"status": "Finished"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "status");
    let msg = body["errors"][0]["message"].as_str().unwrap();
    for name in [
        "New",
        "On Hold",
        "Voided",
        "Completed",
        "Example Custom Status",
    ] {
        assert!(msg.contains(name), "{msg}");
    }
    let (status, body) = w
        .put("/crm/installs/crm-proj-1/status", json!({"status_id": 99}))
        .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("status_id"))
    );
    let (status, _) = w.put("/crm/installs/crm-proj-1/status", json!({})).await;
    assert_eq!(status, 422);
    assert_eq!(w.enerflo.writes(), 0);
}

#[tokio::test]
async fn crm_status_by_name_is_written_with_the_company_status_id() {
    let w = world();
    w.link_project().await;
    let (status, body) = w
        .put(
            "/crm/installs/crm-proj-1/status",
            json!({"status": "completed"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["install_status"],
        json!({"id": 6, "name": "Completed"})
    );
    assert_eq!(
        w.enerflo.calls(Method::PUT, "/api/v3/installs/700001"),
        [Some(json!({"status_id": 6}))]
    );
}

#[tokio::test]
async fn crm_status_round_trip_writes_enerflo_once_and_its_webhook_is_not_pushed_back() {
    let w = world();
    w.link_project().await;
    // GIVEN the CRM last heard "New" from us
    w.status_event("update_install", &update_install(1, "New"))
        .await;
    // WHEN the CRM sets Completed, and Enerflo fires update_install for that write
    let (status, _) = w
        .put(
            "/crm/installs/crm-proj-1/status",
            json!({"status": "Completed"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        w.status_event("update_install", &update_install(6, "Completed"))
            .await,
        "echo"
    );
    // THEN the CRM was written once (the first "New") and Enerflo once
    assert_eq!(w.crm_events().len(), 1);
    assert_eq!(w.enerflo.writes(), 1);
    // ... and a later real change is pushed with the echoed status as previous
    assert_eq!(
        w.status_event("update_install", &update_install(4, "On Hold"))
            .await,
        "delivered"
    );
    assert_eq!(w.crm_events()[1].data["previous"]["name"], "Completed");
}

#[tokio::test]
async fn enerflo_status_round_trip_pushes_once_and_the_crm_sending_it_back_is_an_echo() {
    let w = world();
    w.link_project().await;
    w.status_event("update_install", &update_install(4, "On Hold"))
        .await;
    for body in [
        json!({"status": "On Hold"}),
        json!({"status_id": 4}),
        json!({"status": "on hold", "status_id": "4"}),
    ] {
        let (status, answer) = w.put("/crm/installs/crm-proj-1/status", body).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("echo")),
            "{answer}"
        );
    }
    // A late copy of an older push, sent back by name after Enerflo moved on, is still ours.
    w.status_event("update_install", &update_install(6, "Completed"))
        .await;
    let (_, answer) = w
        .put(
            "/crm/installs/crm-proj-1/status",
            json!({"status": "ON HOLD"}),
        )
        .await;
    assert_eq!(answer["status"], "echo", "{answer}");
    assert_eq!(
        w.enerflo.calls.lock().unwrap().len(),
        0,
        "no Enerflo call at all, not even the status list"
    );
    assert_eq!(w.crm_events().len(), 2);
}

#[tokio::test]
async fn an_unlinked_install_is_404_on_both_routes() {
    let w = world();
    let (s1, b1) = w
        .put(
            "/crm/installs/crm-unknown/status",
            json!({"status": "Completed"}),
        )
        .await;
    let (s2, b2) = w
        .put(
            "/crm/installs/crm-unknown/milestones/3901",
            json!({"completed_date": "2025-03-01"}),
        )
        .await;
    assert_eq!((s1, s2), (404, 404), "{b1} {b2}");
    assert_eq!(b1["type"], "urn:enerflo-crm-sync:problem:unlinked-install");
    assert_eq!(w.enerflo.calls.lock().unwrap().len(), 0);
}

// ---------------------------------------------------------------------------------------------
// Stage 3.2: Enerflo milestone -> CRM
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_milestone_completion_date_is_pushed_once() {
    let w = world();
    w.link_project().await;
    let done = milestone_event(json!("2025-02-01"), json!("2025-03-01"));
    assert_eq!(w.milestone_event(&done).await, "delivered");
    assert_eq!(w.milestone_event(&done).await, "unchanged");
    // Same completion, another start date: not a completion change.
    let moved = milestone_event(json!("2025-02-02"), json!("2025-03-01 10:00:00"));
    assert_eq!(w.milestone_event(&moved).await, "unchanged");
    let events = w.crm_events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.event_type.as_str(), "milestone.updated");
    assert_eq!(e.crm_id.as_deref(), Some("crm-proj-1"));
    assert_eq!(
        e.data,
        json!({"milestone": {"id": 3901, "title": "Engineering", "external_id": "engineering"},
               "start_date": "2025-02-01", "completed_date": "2025-03-01"})
    );
    // A changed completion date is pushed again.
    let redone = milestone_event(json!("2025-02-01"), json!("2025-03-05"));
    assert_eq!(w.milestone_event(&redone).await, "delivered");
    assert_eq!(w.crm_events().len(), 2);
}

#[tokio::test]
async fn milestone_edits_without_a_completion_date_push_nothing() {
    let w = world();
    for body in [
        milestone_event(json!("2025-02-01"), Value::Null),
        milestone_event(json!("2025-02-03"), json!("")),
    ] {
        assert_eq!(w.milestone_event(&body).await, "no_completion");
    }
    assert!(w.crm_events().is_empty());
}

#[tokio::test]
async fn a_milestone_event_without_dates_is_hydrated_from_the_install() {
    let w = world();
    let thin = json!({"webhook_event": "project_milestone_updated", "install_id": 700001,
                      "milestone_id": "3901"})
    .to_string();
    assert_eq!(w.milestone_event(&thin).await, "delivered");
    assert_eq!(
        w.enerflo
            .calls(Method::GET, "/api/v3/installs/700001")
            .len(),
        1
    );
    let e = &w.crm_events()[0];
    assert_eq!(e.data["completed_date"], "2025-03-01");
    assert_eq!(e.data["start_date"], "2025-02-01");
    assert_eq!(e.data["milestone"]["title"], "Engineering");
}

#[tokio::test]
async fn an_unparseable_milestone_event_is_dead_lettered_with_the_reason() {
    let w = world();
    let db = open_database(None).unwrap();
    let queue = Arc::new(EmbeddedQueue::new(db, [Stage::Milestone]));
    let body = json!({"webhook_event": "project_milestone_updated", "something": 1}).to_string();
    queue
        .send(&QueueMessage {
            meta: meta(Stage::Milestone, "project_milestone_updated"),
            body: body.clone(),
        })
        .await
        .unwrap();
    let consumer = Consumer {
        handler: Arc::new(w.milestone),
        queue: queue.clone(),
        log: w.store.clone(),
        retry: RetryPolicy::default(),
    };
    let batch = queue
        .receive(Stage::Milestone, 10, Duration::from_secs(30))
        .await
        .unwrap();
    consumer.process_batch(&batch).await;
    let dead = queue.dead_letters(Stage::Milestone).unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("no install id"),
        "{}",
        dead[0].reason
    );
    assert!(
        dead[0].reason.contains("no milestone id"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].body, body, "the raw body is kept for replay");
    assert!(w.crm.events.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Stage 3.1: CRM milestone -> Enerflo, and the echo protection in both directions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn crm_milestone_dates_are_written_under_the_configured_field_names() {
    let w = world();
    w.link_project().await;
    let (status, body) = w
        .put(
            "/crm/installs/crm-proj-1/milestones/engineering",
            json!({"completed_date": "2025-03-01", "start_date": null, "crm_update_id": "u-1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "updated", "install_id": 700001, "milestone_id": 3901,
               "start_date": null, "completed_date": "2025-03-01", "crm_update_id": "u-1"})
    );
    assert_eq!(
        w.enerflo
            .calls(Method::PUT, "/api/v3/installs/700001/milestones/3901"),
        [Some(
            json!({"start_date": null, "completed_date": "2025-03-01"})
        )]
    );
}

#[tokio::test]
async fn malformed_milestone_requests_are_rejected_without_a_write() {
    let w = world();
    w.link_project().await;
    let (status, body) = w
        .put(
            "/crm/installs/crm-proj-1/milestones/3901",
            json!({"start_date": "2025-13-01", "completed_date": "yesterday"}),
        )
        .await;
    assert_eq!(status, 422);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["start_date", "completed_date"]);
    let (status, _) = w
        .put(
            "/crm/installs/crm-proj-1/milestones/3901",
            json!({"note": "x"}),
        )
        .await;
    assert_eq!(status, 422, "a body with neither date");
    let (status, body) = w
        .put(
            "/crm/installs/crm-proj-1/milestones/permits",
            json!({"completed_date": "2025-03-01"}),
        )
        .await;
    assert_eq!(status, 404, "an unmapped milestone key: {body}");
    assert_eq!(w.enerflo.writes(), 0);
}

#[tokio::test]
async fn crm_milestone_round_trip_writes_enerflo_once_and_its_webhook_is_not_pushed_back() {
    let w = world();
    w.link_project().await;
    // The CRM sends only the completion date; Enerflo's webhook carries the start date it had.
    let (status, _) = w
        .put(
            "/crm/installs/crm-proj-1/milestones/3901",
            json!({"completed_date": "2025-03-01"}),
        )
        .await;
    assert_eq!(status, 200);
    let echoed = milestone_event(json!("2025-01-15"), json!("2025-03-01"));
    assert_eq!(w.milestone_event(&echoed).await, "echo");
    assert!(
        w.crm_events().is_empty(),
        "the CRM's own date is not pushed back"
    );
    assert_eq!(w.enerflo.writes(), 1);
    // A later real completion change in Enerflo is pushed.
    let changed = milestone_event(json!("2025-01-15"), json!("2025-03-09"));
    assert_eq!(w.milestone_event(&changed).await, "delivered");
}

#[tokio::test]
async fn a_crm_start_date_echo_does_not_hide_a_later_completion_in_enerflo() {
    let w = world();
    w.link_project().await;
    w.put(
        "/crm/installs/crm-proj-1/milestones/3901",
        json!({"start_date": "2025-02-01"}),
    )
    .await;
    assert_eq!(
        w.milestone_event(&milestone_event(json!("2025-02-01"), Value::Null))
            .await,
        "echo"
    );
    // The installer completes it in Enerflo: same start date, new completion.
    assert_eq!(
        w.milestone_event(&milestone_event(json!("2025-02-01"), json!("2025-03-01")))
            .await,
        "delivered"
    );
}

#[tokio::test]
async fn enerflo_milestone_round_trip_pushes_once_and_the_crm_sending_it_back_is_an_echo() {
    let w = world();
    w.link_project().await;
    let done = milestone_event(json!("2025-02-01"), json!("2025-03-01"));
    assert_eq!(w.milestone_event(&done).await, "delivered");
    for body in [
        json!({"start_date": "2025-02-01", "completed_date": "2025-03-01"}),
        json!({"completed_date": "2025-03-01"}),
    ] {
        let (status, answer) = w
            .put("/crm/installs/crm-proj-1/milestones/3901", body)
            .await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("echo")),
            "{answer}"
        );
    }
    assert_eq!(w.enerflo.calls.lock().unwrap().len(), 0);
    assert_eq!(w.crm_events().len(), 1);
}

#[tokio::test]
async fn an_enerflo_install_id_addresses_the_install_without_a_link() {
    // `enerflo:<id>` addresses the install directly (percent-encoded colon included).
    let w = world();
    let (status, body) = w
        .put(
            "/crm/installs/enerflo%3A700001/milestones/3901",
            json!({"completed_date": "2025-03-01"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

// ---------------------------------------------------------------------------------------------
// Fingerprints never hide a change people made after the write they record (A -> B -> A)
// ---------------------------------------------------------------------------------------------

async fn tick() {
    // Writes in both directions are ordered by millisecond timestamps.
    tokio::time::sleep(Duration::from_millis(5)).await;
}

#[tokio::test]
async fn enerflo_returning_to_a_status_the_crm_set_earlier_is_pushed() {
    let w = world();
    w.link_project().await;
    w.put(
        "/crm/installs/crm-proj-1/status",
        json!({"status": "Completed"}),
    )
    .await;
    assert_eq!(
        w.status_event("update_install", &update_install(6, "Completed"))
            .await,
        "echo"
    );
    tick().await;
    assert_eq!(
        w.status_event("update_install", &update_install(4, "On Hold"))
            .await,
        "delivered"
    );
    tick().await;
    // Someone in Enerflo sets Completed again: the CRM has On Hold, so this is news.
    assert_eq!(
        w.status_event("update_install", &update_install(6, "Completed"))
            .await,
        "delivered"
    );
    assert_eq!(w.crm_events().len(), 2);
}

#[tokio::test]
async fn the_crm_returning_to_a_status_we_pushed_earlier_is_written() {
    let w = world();
    w.link_project().await;
    w.status_event("update_install", &update_install(4, "On Hold"))
        .await;
    tick().await;
    let (status, _) = w
        .put(
            "/crm/installs/crm-proj-1/status",
            json!({"status": "Completed"}),
        )
        .await;
    assert_eq!(status, 200);
    tick().await;
    // Someone in the CRM sets On Hold again: Enerflo has Completed, so it must be written.
    let (status, body) = w
        .put("/crm/installs/crm-proj-1/status", json!({"status_id": 4}))
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("updated")));
    assert_eq!(w.enerflo.writes(), 2);
}

#[tokio::test]
async fn the_crm_returning_to_a_milestone_date_we_pushed_earlier_is_written() {
    let w = world();
    w.link_project().await;
    w.milestone_event(&milestone_event(json!("2025-02-01"), json!("2025-03-01")))
        .await;
    tick().await;
    let url = "/crm/installs/crm-proj-1/milestones/3901";
    let (_, body) = w.put(url, json!({"completed_date": "2025-03-09"})).await;
    assert_eq!(body["status"], "updated");
    tick().await;
    let (_, body) = w.put(url, json!({"completed_date": "2025-03-01"})).await;
    assert_eq!(body["status"], "updated", "not an echo any more: {body}");
    assert_eq!(w.enerflo.writes(), 2);
}

#[tokio::test]
async fn a_crm_that_sends_the_status_back_before_answering_the_push_gets_echo() {
    let w = world();
    w.link_project().await;
    let _ = w.crm.callback.set((
        w.router.clone(),
        "/crm/installs/crm-proj-1/status".into(),
        json!({"status": "On Hold"}),
    ));
    assert_eq!(
        w.status_event("update_install", &update_install(4, "On Hold"))
            .await,
        "delivered"
    );
    let answers = w.crm.callback_answers.lock().unwrap().clone();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0][0], 200);
    assert_eq!(answers[0][1]["status"], "echo", "{answers:?}");
    assert_eq!(w.enerflo.writes(), 0);
}

#[tokio::test]
async fn a_crm_that_sends_the_milestone_back_before_answering_the_push_gets_echo() {
    let w = world();
    w.link_project().await;
    let _ = w.crm.callback.set((
        w.router.clone(),
        "/crm/installs/crm-proj-1/milestones/engineering".into(),
        json!({"completed_date": "2025-03-01"}),
    ));
    w.milestone_event(&milestone_event(json!("2025-02-01"), json!("2025-03-01")))
        .await;
    let answers = w.crm.callback_answers.lock().unwrap().clone();
    assert_eq!(answers[0][1]["status"], "echo", "{answers:?}");
    assert_eq!(w.enerflo.writes(), 0);
}

/// A Standard Webhooks receiver dedupes on `webhook-id`: an id reused for a new change would be
/// dropped, leaving the CRM on the wrong status.
#[tokio::test]
async fn a_status_that_returns_to_earlier_values_gets_a_new_event_id_every_change() {
    let w = world();
    let flips = [
        (1, "Active"),
        (4, "On Hold"),
        (1, "Active"),
        (4, "On Hold"),
        (1, "Active"),
    ];
    for (id, name) in flips {
        assert_eq!(
            w.status_event("update_install", &update_install(id, name))
                .await,
            "delivered",
            "{name}"
        );
    }
    let ids: Vec<String> = w.crm_events().into_iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 5);
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 5, "an event id was reused: {ids:?}");
}

#[tokio::test]
async fn a_milestone_date_that_returns_to_an_earlier_value_gets_a_new_event_id() {
    let w = world();
    w.link_project().await;
    for completed in ["2025-03-01", "2025-03-05", "2025-03-01"] {
        let body = milestone_event(json!("2025-02-01"), json!(completed));
        assert_eq!(w.milestone_event(&body).await, "delivered", "{completed}");
    }
    let ids: Vec<String> = w.crm_events().into_iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 3);
    assert_ne!(ids[0], ids[2], "X -> Y -> X reused the first id");
}

/// A push that failed is retried with the same id: the CRM can dedupe the retry.
#[tokio::test]
async fn a_retried_change_keeps_its_event_id() {
    let w = world();
    assert_eq!(
        w.status_event("update_install", &update_install(1, "Active"))
            .await,
        "delivered"
    );
    w.crm
        .fail_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let body = update_install(4, "On Hold");
    w.status
        .handle(&meta(Stage::Status, "update_install"), &body, 1)
        .await
        .expect_err("the CRM failed");
    assert_eq!(w.status_event("update_install", &body).await, "delivered");
    let events = w.crm_events();
    assert_eq!(
        events.len(),
        3,
        "two attempts of the second change reached the CRM"
    );
    assert_eq!(events[1].id, events[2].id);
    assert_ne!(events[0].id, events[1].id);
}

/// Two deals that share a `shortCode` (a re-used code, a copy) are two projects: the second is
/// neither merged into the first nor pushed as its resubmission, and the conflict is recorded.
#[tokio::test]
async fn two_deals_sharing_a_short_code_stay_two_projects() {
    let w = world();
    let project = Pipeline::new(
        enerflo_sync::stages::project::ProjectStage {
            enerflo: w.enerflo.clone(),
            call_budget: Duration::from_secs(2),
        },
        Kit::on(w.store.clone(), w.crm.clone(), false),
    );
    let fixture: Value = serde_json::from_str(PROJECT_SUBMITTED).unwrap();
    let mut outcomes = Vec::new();
    for (deal, install) in [("deal-aaaa", 700101), ("deal-bbbb", 700102)] {
        let mut body = fixture.clone();
        body["payload"]["deal"]["id"] = json!(deal);
        body["payload"]["deal"]["shortCode"] = json!("SAME-CODE");
        w.enerflo.finds.lock().unwrap().insert(
            deal.into(),
            json!({"id": install, "survey_id": install + 1000}),
        );
        let out = project
            .handle(
                &meta(Stage::Project, "deal.projectSubmitted"),
                &body.to_string(),
                1,
            )
            .await
            .expect("handled");
        outcomes.push(out);
    }
    assert_eq!(outcomes[0].status, "delivered");
    assert_eq!(outcomes[1].status, "delivered");
    assert!(
        outcomes[1].detail.contains("conflict") && outcomes[1].detail.contains("SAME-CODE"),
        "{}",
        outcomes[1].detail
    );
    let events = w.crm_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].enerflo.deal_id.as_deref(), Some("deal-bbbb"));
    assert_eq!(events[1].data["resubmission"], json!(false));
    assert_eq!(events[1].crm_id, None, "not the first deal's CRM record");
    let a = w
        .store
        .resolve(EntityKind::Project, &IdRef::new(IdForm::Deal, "deal-aaaa"))
        .await
        .unwrap()
        .unwrap();
    let b = w
        .store
        .resolve(EntityKind::Project, &IdRef::new(IdForm::Deal, "deal-bbbb"))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(a.key, b.key);
    assert_eq!(b.id(IdForm::Install).as_deref(), Some("700102"));
    assert_eq!(a.id(IdForm::ShortCode).as_deref(), Some("SAME-CODE"));
}
