//! The engine against an in-process Enerflo (paged lists, install objects, every call noted on
//! tokio's clock, which these tests pause) and the embedded store and queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::*;
use crate::config::Config;
use crate::enerflo::EnerfloError;
use crate::enerflo::client::ApiResponse;
use crate::mapping::lead::{CustomerEvent, state_hash};
use crate::queue::embedded::EmbeddedQueue;
use crate::registry::Stage;
use crate::runtime::Ports;
use crate::store::embedded::{EmbeddedStore, open_database};
use crate::store::{EntityKind, EventLog, IdForm, IdRef, SyncState, SyncStateStore, XrefStore};
use crate::sync::StateKey;

/// An Enerflo serving `GET /api/v3/installs?page&per_page`, `GET /api/v3/installs/{id}` and
/// `GET /api/v1/customers?page&pageSize`.
#[derive(Default)]
struct FakeEnerflo {
    installs: Mutex<Vec<Value>>,
    customers: Mutex<Vec<Value>>,
    calls: Mutex<Vec<(String, Instant)>>,
    /// List rows carry `all_milestones` (else only the install's own object does).
    rows_carry_milestones: bool,
    ignore_page: bool,
    /// A list request for this page never answers (the process is killed while it waits).
    hang_on_page: Mutex<Option<u64>>,
    hung: Notify,
}

fn query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn page_of(rows: &[Value], page: usize, size: usize) -> Vec<Value> {
    rows.iter()
        .skip((page - 1) * size)
        .take(size)
        .cloned()
        .collect()
}

#[async_trait]
impl EnerfloApi for FakeEnerflo {
    async fn send(
        &self,
        method: Method,
        path: &str,
        _body: Option<&Value>,
        _budget: Duration,
    ) -> Result<ApiResponse, EnerfloError> {
        assert_eq!(method, Method::GET, "the sweep only reads");
        self.calls
            .lock()
            .unwrap()
            .push((path.to_owned(), Instant::now()));
        let (base, q) = path.split_once('?').unwrap_or((path, ""));
        let q = query(q);
        let num = |k: &str| q.get(k).and_then(|v| v.parse::<usize>().ok());
        let ok = |body: Value| Ok(ApiResponse { status: 200, body });
        match base {
            "/api/v3/installs" => {
                let page = if self.ignore_page {
                    1
                } else {
                    num("page").unwrap()
                };
                if *self.hang_on_page.lock().unwrap() == Some(page as u64) {
                    self.hung.notify_one();
                    std::future::pending::<()>().await;
                }
                let all = self.installs.lock().unwrap().clone();
                let mut rows = page_of(&all, page, num("per_page").unwrap());
                if !self.rows_carry_milestones {
                    for r in &mut rows {
                        r.as_object_mut().unwrap().remove("all_milestones");
                    }
                }
                ok(json!({"total": all.len(), "results": rows}))
            }
            "/api/v1/customers" => {
                let all = self.customers.lock().unwrap().clone();
                let rows = page_of(&all, num("page").unwrap(), num("pageSize").unwrap());
                ok(json!({"dataCount": all.len(), "data": rows}))
            }
            _ => {
                let id: u64 = base
                    .strip_prefix("/api/v3/installs/")
                    .and_then(|i| i.parse().ok())
                    .expect("a known path");
                let found = self
                    .installs
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|i| i["id"] == json!(id))
                    .cloned();
                match found {
                    Some(i) => ok(i),
                    None => Err(EnerfloError::NotFound {
                        path: path.to_owned(),
                    }),
                }
            }
        }
    }
}

impl FakeEnerflo {
    fn list_calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .filter(|p| p.contains('?'))
            .collect()
    }
}

fn install(id: u64, status: u64, completed: &[(u64, &str)]) -> Value {
    let milestones: Vec<Value> = [3900u64, 3901, 3902]
        .iter()
        .map(|mid| {
            let done = completed.iter().find(|(m, _)| m == mid).map(|(_, d)| *d);
            json!({"id": 50_000 + mid, "milestone_id": mid, "title": format!("M{mid}"),
                   "start_date": null, "completed_date": done})
        })
        .collect();
    json!({"id": id, "status_id": status, "status_name": format!("S{status}"),
           "updated_at": "2025-02-01 10:00:00", "all_milestones": milestones})
}

fn customer(id: u64, email: &str) -> Value {
    json!({"id": id, "first_name": "Pat", "last_name": "Placeholder", "email": email,
           "phone": "(555) 010-0000",
           "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX", "zip": "75001"},
           "timestamps": {"updated_at": "2025-02-01 10:00:00"}})
}

struct World {
    enerflo: Arc<FakeEnerflo>,
    store: Arc<EmbeddedStore>,
    queue: Arc<EmbeddedQueue>,
    ports: Ports,
    config: Config,
}

impl World {
    fn new(enerflo: FakeEnerflo, env: &[(&str, &str)]) -> Self {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
        let db = open_database(None).unwrap();
        let store = Arc::new(EmbeddedStore::new(db.clone()));
        let queue = Arc::new(EmbeddedQueue::new(db, Stage::ALL));
        let ports = Ports::one_store(store.clone(), queue.clone());
        Self {
            enerflo: Arc::new(enerflo),
            store,
            queue,
            ports,
            config,
        }
    }

    /// A fresh engine on the same store, as a new process (or the next Lambda invocation) has.
    fn reconciler(&self) -> Reconciler {
        Reconciler::from_config(&self.config, &self.ports, self.enerflo.clone())
    }

    async fn synced_status(&self, install: u64, status: u64) {
        let data = json!({"status": {"id": status, "name": format!("S{status}")}, "previous": null, "restored": false});
        self.put(&StateKey::Status(install), data).await;
    }

    async fn synced_milestone(&self, install: u64, milestone: u64, done: &str) {
        let data =
            json!({"milestone": {"id": milestone}, "start_date": null, "completed_date": done});
        self.put(&StateKey::Milestone { install, milestone }, data)
            .await;
    }

    async fn synced_customer(&self, row: &Value) {
        let mut body = row.clone();
        body["webhook_event"] = json!("new_customer");
        let env = crate::enerflo::envelope::Envelope::from_value(body, None).unwrap();
        let c = CustomerEvent::from_envelope(&env, &crate::config::LeadFields::default());
        let link = self
            .store
            .link(
                EntityKind::Customer,
                &[IdRef::new(IdForm::CustomerId, c.ids.customer_id.unwrap())],
            )
            .await
            .unwrap();
        let data = serde_json::to_value(&c.lead).unwrap();
        let state = SyncState {
            hash: state_hash(&data),
            data,
            updated_at: "2025-02-01T10:00:00Z".into(),
            seq: 1,
        };
        self.store
            .put_state(&StateKey::Lead(link.key).scope(), &state)
            .await
            .unwrap();
    }

    async fn put(&self, key: &StateKey, data: Value) {
        let state = SyncState {
            hash: crate::hashing::content_hash(&data),
            data,
            updated_at: "2025-02-01T10:00:00Z".into(),
            seq: 1,
        };
        self.store.put_state(&key.scope(), &state).await.unwrap();
    }

    /// Every message on a stage queue (the first of each FIFO group; read once per test): (event,
    /// group, dedupe key, body).
    async fn queued(&self, stage: Stage) -> Vec<(String, String, String, Value)> {
        let got = self
            .queue
            .receive(stage, 1000, Duration::from_secs(1))
            .await
            .unwrap();
        got.into_iter()
            .map(|d| {
                let m = d.meta.unwrap();
                (
                    m.event,
                    m.group,
                    m.dedupe_key,
                    serde_json::from_str(&d.body).unwrap(),
                )
            })
            .collect()
    }

    async fn cursor(&self, name: &str) -> Option<Cursor> {
        self.store
            .get_state(&StateKey::ReconcileCursor(name.into()).scope())
            .await
            .unwrap()
            .map(|s| serde_json::from_value(s.data).unwrap())
    }
}

fn sweep() -> RunOptions {
    RunOptions::new("sweep", &SWEEPABLE)
}

#[tokio::test]
async fn every_difference_and_entity_never_synced_is_enqueued_as_the_webhook_its_stage_reads() {
    // GIVEN install 1 synced as status 1 with milestone 3900 completed 2025-01-01, now status 4 with
    // 3901 completed too; install 2 never synced; customer 9 synced, customer 10 never synced
    let enerflo = FakeEnerflo {
        rows_carry_milestones: true,
        ..FakeEnerflo::default()
    };
    *enerflo.installs.lock().unwrap() = vec![
        install(1, 4, &[(3900, "2025-01-01"), (3901, "2025-03-01")]),
        install(2, 1, &[(3900, "2025-01-05")]),
    ];
    *enerflo.customers.lock().unwrap() = vec![
        customer(9, "pat.placeholder@example.com"),
        customer(10, "sam.sample@example.com"),
    ];
    let w = World::new(enerflo, &[]);
    w.synced_status(1, 1).await;
    w.synced_milestone(1, 3900, "2025-01-01").await;
    w.synced_customer(&customer(9, "pat.placeholder@example.com"))
        .await;

    // WHEN one sweep runs
    let report = w.reconciler().run(&sweep()).await;

    // THEN it counted what differs, per stage, and completed the pass
    assert!(report.complete && report.stopped.is_none(), "{report:?}");
    let c = |s: Stage| report.stages.get(&s).copied().unwrap_or_default();
    assert_eq!(
        c(Stage::Status),
        StageCounts {
            created: 1,
            updated: 1,
            unchanged: 0,
            skipped: 0
        }
    );
    assert_eq!(
        c(Stage::Milestone),
        StageCounts {
            created: 2,
            updated: 0,
            unchanged: 1,
            skipped: 3
        }
    );
    assert_eq!(
        c(Stage::Leads),
        StageCounts {
            created: 1,
            updated: 0,
            unchanged: 1,
            skipped: 0
        }
    );
    assert_eq!(report.enqueued, 5);
    // ... and enqueued the webhook each stage reads, in its entity's FIFO group, keyed `reconcile:`
    let status = w.queued(Stage::Status).await;
    let groups: Vec<&str> = status.iter().map(|(_, g, _, _)| g.as_str()).collect();
    assert_eq!(groups, ["install:1", "install:2"]);
    for (event, _, key, body) in &status {
        assert_eq!(event, "update_install");
        assert!(
            key.starts_with("reconcile:update_install:install:"),
            "{key}"
        );
        assert_eq!(body["sync_source"], "reconcile");
        let ev = crate::stages::status::read_event(event, body, &w.config.install_id_paths)
            .expect("the status stage reads it");
        assert!(ev.status_id.is_some() && ev.status_name.is_some(), "{body}");
    }
    assert_eq!(status[0].3["status"]["id"], 4);
    let milestones = w.queued(Stage::Milestone).await;
    let read: Vec<(u64, u64, Option<Option<String>>)> = milestones
        .iter()
        .map(|(_, _, _, body)| {
            let ev = crate::stages::milestone::read_event(
                body,
                &w.config.fields,
                &w.config.install_id_paths,
            )
            .expect("the milestone stage reads it");
            assert_eq!(
                ev.start,
                Some(None),
                "dates present: the stage does not hydrate"
            );
            (ev.install_id, ev.milestone_id, ev.completed)
        })
        .collect();
    assert_eq!(
        read,
        [
            (1, 3901, Some(Some("2025-03-01".into()))),
            (2, 3900, Some(Some("2025-01-05".into())))
        ]
    );
    let leads = w.queued(Stage::Leads).await;
    assert_eq!(leads.len(), 1);
    assert_eq!(
        (leads[0].0.as_str(), leads[0].1.as_str()),
        ("new_customer", "customer:10")
    );
    // ... and the event log keeps each one, raw, as queued
    let logged = w.store.get(&leads[0].2).await.unwrap().expect("logged");
    assert_eq!(logged.outcome, "queued");
    assert!(logged.raw_body.contains("\"sync_source\":\"reconcile\""));
}

#[tokio::test]
async fn a_second_sweep_before_the_stages_ran_enqueues_nothing_new() {
    let enerflo = FakeEnerflo {
        rows_carry_milestones: true,
        ..FakeEnerflo::default()
    };
    *enerflo.installs.lock().unwrap() = vec![install(1, 4, &[(3901, "2025-03-01")])];
    let w = World::new(enerflo, &[]);
    let first = w.reconciler().run(&sweep()).await;
    assert_eq!(first.enqueued, 2);

    // WHEN the same drift is found again, its events still queued
    let second = w.reconciler().run(&sweep()).await;

    // THEN its change-derived keys are duplicates: nothing more is queued
    assert_eq!(
        (second.enqueued, second.duplicates, second.drift()),
        (0, 2, 2)
    );
    assert_eq!(
        w.queued(Stage::Status).await.len() + w.queued(Stage::Milestone).await.len(),
        2
    );
}

#[tokio::test]
async fn a_sweep_over_synced_entities_enqueues_nothing() {
    let enerflo = FakeEnerflo {
        rows_carry_milestones: true,
        ..FakeEnerflo::default()
    };
    *enerflo.installs.lock().unwrap() = vec![install(1, 4, &[(3901, "2025-03-01")])];
    *enerflo.customers.lock().unwrap() = vec![customer(9, "pat.placeholder@example.com")];
    let w = World::new(enerflo, &[]);
    w.synced_status(1, 4).await;
    w.synced_milestone(1, 3901, "2025-03-01").await;
    w.synced_customer(&customer(9, "pat.placeholder@example.com"))
        .await;

    let report = w.reconciler().run(&sweep()).await;

    assert!(report.complete, "{report:?}");
    assert_eq!(
        (report.drift(), report.enqueued, report.duplicates),
        (0, 0, 0)
    );
    for stage in SWEEPABLE {
        assert!(w.queued(stage).await.is_empty(), "{stage}");
    }
}

#[tokio::test]
async fn a_changed_customer_field_is_an_update_naming_the_field_not_its_value() {
    let enerflo = FakeEnerflo::default();
    *enerflo.customers.lock().unwrap() = vec![customer(9, "new.address@example.com")];
    let w = World::new(enerflo, &[]);
    w.synced_customer(&customer(9, "pat.placeholder@example.com"))
        .await;

    let report = w
        .reconciler()
        .run(&RunOptions::new("sweep", &[Stage::Leads]))
        .await;

    assert_eq!(report.stages[&Stage::Leads].updated, 1);
    let ex = &report.examples[&Stage::Leads][0];
    assert_eq!(
        (ex.subject.as_str(), ex.what.as_str()),
        ("customer:9", "email")
    );
    let queued = w.queued(Stage::Leads).await;
    assert_eq!(queued[0].0, "update_customer");
    assert!(
        report.installs == 0
            && w.enerflo
                .list_calls()
                .iter()
                .all(|c| c.starts_with("/api/v1/customers"))
    );
}

#[tokio::test(start_paused = true)]
async fn calls_never_exceed_the_per_minute_budget_in_any_window() {
    // GIVEN 30 installs whose list rows carry no milestones (one install object call each), a
    // budget of 10 calls a minute, pages of 5: 37 calls (6 install pages, 30 install objects, a
    // customer page), more than three minutes' worth
    let enerflo = FakeEnerflo::default();
    *enerflo.installs.lock().unwrap() = (1..=30).map(|i| install(i, 1, &[])).collect();
    let w = World::new(
        enerflo,
        &[
            ("RECONCILE_ENERFLO_PER_MINUTE", "10"),
            ("RECONCILE_INSTALLS_PAGE_SIZE", "5"),
        ],
    );

    // WHEN a backfill-style run (no deadline) sweeps them all
    let report = w.reconciler().run(&sweep()).await;

    // THEN every call was made, and no 60-second window holds more than 10
    assert!(report.complete, "{report:?}");
    let at: Vec<Instant> = w
        .enerflo
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| *t)
        .collect();
    assert_eq!((at.len(), report.enerflo_calls), (37, 37));
    for (i, start) in at.iter().enumerate() {
        let in_window = at[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < Duration::from_secs(60))
            .count();
        assert!(
            in_window <= 10,
            "{in_window} calls in the minute from call {i}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_sweep_stops_before_its_deadline_and_the_next_run_continues_where_it_stopped() {
    // GIVEN 20 installs needing 24 calls at 5 a minute (almost five minutes), and a run with 90 s
    let enerflo = FakeEnerflo::default();
    *enerflo.installs.lock().unwrap() = (1..=20).map(|i| install(i, 2, &[])).collect();
    let w = World::new(
        enerflo,
        &[
            ("RECONCILE_ENERFLO_PER_MINUTE", "5"),
            ("RECONCILE_INSTALLS_PAGE_SIZE", "5"),
        ],
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);

    // WHEN the run is scoped to its deadline
    let first = crate::deadline::scope(deadline, w.reconciler().run(&sweep())).await;

    // THEN it stopped with its margin left, and saved where it was
    assert!(!first.complete && !first.failure, "{first:?}");
    assert!(
        first.stopped.as_deref().unwrap_or("").contains("deadline"),
        "{first:?}"
    );
    assert!(
        Instant::now() <= deadline - engine::STOP_MARGIN + Duration::from_secs(1),
        "ran until {:?} of 90 s",
        Instant::now().duration_since(started)
    );
    let cursor = w.cursor("sweep").await.expect("saved");
    assert!(cursor.done > 0 && cursor.done < 20, "{cursor:?}");
    // ... and the next runs continue from there until the pass is complete, each row once
    let mut runs = vec![first];
    while !runs.last().unwrap().complete {
        assert!(runs.len() < 10, "no progress: {runs:?}");
        let deadline = Instant::now() + Duration::from_secs(90);
        let next = crate::deadline::scope(deadline, w.reconciler().run(&sweep())).await;
        assert!(next.resumed_from.is_some(), "{next:?}");
        runs.push(next);
    }
    let enqueued: u64 = runs.iter().map(|r| r.enqueued).sum();
    let duplicates: u64 = runs.iter().map(|r| r.duplicates).sum();
    assert_eq!((enqueued, duplicates), (20, 0));
    assert_eq!(w.queued(Stage::Status).await.len(), 20);
}

#[tokio::test]
async fn a_run_killed_mid_pass_resumes_from_the_page_its_cursor_saved() {
    // GIVEN 20 installs in pages of 5, and an Enerflo on which page 3 hangs
    let enerflo = FakeEnerflo {
        rows_carry_milestones: true,
        ..FakeEnerflo::default()
    };
    *enerflo.installs.lock().unwrap() = (1..=20).map(|i| install(i, 2, &[])).collect();
    *enerflo.hang_on_page.lock().unwrap() = Some(3);
    let w = World::new(enerflo, &[("RECONCILE_INSTALLS_PAGE_SIZE", "5")]);

    // WHEN the run is killed while it waits for page 3 (its future dropped: no cleanup runs)
    let reconciler = w.reconciler();
    let opts = RunOptions::new("sweep", &[Stage::Status]);
    tokio::select! {
        _ = reconciler.run(&opts) => panic!("page 3 never answers"),
        _ = w.enerflo.hung.notified() => {}
    }
    *w.enerflo.hang_on_page.lock().unwrap() = None;

    // THEN a new process resumes at page 3, and every install is enqueued once
    let report = w.reconciler().run(&opts).await;
    assert!(report.complete, "{report:?}");
    assert_eq!(
        report.resumed_from.as_deref(),
        Some("installs page 3, row 0")
    );
    let pages: Vec<String> = w.enerflo.list_calls();
    assert_eq!(
        pages,
        [1, 2, 3, 3, 4]
            .iter()
            .map(|p| format!("/api/v3/installs?page={p}&per_page=5&sort_by=id"))
            .collect::<Vec<_>>()
    );
    assert_eq!((report.enqueued, report.duplicates), (10, 0));
    assert_eq!(w.queued(Stage::Status).await.len(), 20);
    assert_eq!(
        report.pass[&Stage::Status].created,
        20,
        "the pass counts both runs"
    );
}

#[tokio::test]
async fn a_stop_request_saves_the_row_it_reached_and_the_next_run_starts_there() {
    let enerflo = FakeEnerflo {
        rows_carry_milestones: true,
        ..FakeEnerflo::default()
    };
    *enerflo.installs.lock().unwrap() = (1..=20).map(|i| install(i, 2, &[])).collect();
    let w = World::new(enerflo, &[("RECONCILE_INSTALLS_PAGE_SIZE", "5")]);
    let mut opts = RunOptions::new("backfill", &[Stage::Status]);
    let stop = opts.stop.clone();
    opts.progress = Some(Arc::new(move |p: &Progress| {
        if p.done == 7 {
            stop.store(true, Ordering::SeqCst);
        }
    }));

    let first = w.reconciler().run(&opts).await;
    assert_eq!(first.stopped.as_deref(), Some("stopped on request"));
    assert_eq!((first.enqueued, first.failure), (7, false));

    opts.stop.store(false, Ordering::SeqCst);
    opts.progress = None;
    let second = w.reconciler().run(&opts).await;
    assert_eq!(
        second.resumed_from.as_deref(),
        Some("installs page 2, row 2")
    );
    assert!(second.complete);
    assert_eq!((second.enqueued, second.duplicates), (13, 0));
    let cursor = w.cursor("backfill").await.expect("reset");
    assert!(
        cursor.completed_at.is_some() && cursor.done == 0,
        "{cursor:?}"
    );
}

#[tokio::test]
async fn a_dry_run_enqueues_nothing_and_keeps_no_cursor() {
    let enerflo = FakeEnerflo {
        rows_carry_milestones: true,
        ..FakeEnerflo::default()
    };
    *enerflo.installs.lock().unwrap() =
        vec![install(1, 4, &[(3901, "2025-03-01")]), install(2, 1, &[])];
    *enerflo.customers.lock().unwrap() = vec![customer(9, "pat.placeholder@example.com")];
    let w = World::new(enerflo, &[]);
    w.synced_status(2, 1).await;
    let mut opts = RunOptions::new("backfill", &SWEEPABLE);
    opts.dry_run = true;
    opts.lease = Some(Duration::from_secs(60));

    let report = w.reconciler().run(&opts).await;

    assert!(report.complete && report.dry_run);
    assert_eq!(
        report.stages[&Stage::Status],
        StageCounts {
            created: 1,
            updated: 0,
            unchanged: 1,
            skipped: 0
        }
    );
    assert_eq!(report.examples[&Stage::Status][0].subject, "install:1");
    assert_eq!((report.enqueued, report.duplicates), (0, 0));
    for stage in Stage::ALL {
        assert!(w.queued(stage).await.is_empty(), "{stage}");
    }
    assert!(w.cursor("backfill").await.is_none());
    assert!(
        w.store
            .for_entity("install:1", 10)
            .await
            .unwrap()
            .is_empty(),
        "no event logged"
    );
}

#[tokio::test]
async fn an_api_that_ignores_the_page_parameter_stops_the_pass_naming_the_parameter() {
    let enerflo = FakeEnerflo {
        rows_carry_milestones: true,
        ignore_page: true,
        ..FakeEnerflo::default()
    };
    *enerflo.installs.lock().unwrap() = (1..=10).map(|i| install(i, 2, &[])).collect();
    let w = World::new(enerflo, &[("RECONCILE_INSTALLS_PAGE_SIZE", "5")]);

    let report = w
        .reconciler()
        .run(&RunOptions::new("sweep", &[Stage::Status]))
        .await;

    assert!(report.failure && !report.complete);
    let why = report.stopped.unwrap_or_default();
    assert!(
        why.contains("RECONCILE_INSTALLS_PAGE_PARAM") && why.contains("`page`"),
        "{why}"
    );
    assert_eq!(
        w.queued(Stage::Status).await.len(),
        5,
        "the first page was enqueued once"
    );
}

#[tokio::test]
async fn a_second_run_while_one_holds_the_lease_does_nothing() {
    let enerflo = FakeEnerflo {
        rows_carry_milestones: true,
        ..FakeEnerflo::default()
    };
    *enerflo.installs.lock().unwrap() = vec![install(1, 4, &[])];
    let w = World::new(enerflo, &[]);
    let key = StateKey::ReconcileRun("sweep".into()).scope();
    use crate::store::ClaimStore;
    w.store.claim(&key, 600, 600).await.unwrap();
    let mut opts = sweep();
    opts.lease = Some(Duration::from_secs(600));

    let report = w.reconciler().run(&opts).await;

    assert_eq!(
        report.stopped.as_deref(),
        Some("another run of this pass holds its lease")
    );
    assert!(w.enerflo.calls.lock().unwrap().is_empty());
}
