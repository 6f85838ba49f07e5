//! The reconciliation sweep and the backfill end to end: the local runner on its Enerflo sandbox
//! (seeded fake installs and customers, paged lists, webhooks lost on command) and a wiremock CRM
//! that counts every write. The engine runs as the scheduled sweep runs it (`Reconciler::run`),
//! through `/local/reconcile` (what `enerflo-sync-ops --runner <url> backfill` drives), and on
//! the runner's own interval. The per-minute call budget and a run killed mid-pass are pinned by
//! the engine's tests (`shared/src/reconcile/tests.rs`, on a paused clock).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use enerflo_sync::reconcile::{Report, RunOptions, SWEEPABLE};
use enerflo_sync::registry::Stage;
use serde_json::{Value, json};
use sync_tests::{Harness, start_with_sandbox};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, ResponseTemplate};

const FIRST_INSTALL: u64 = enerflo_sync_local::sandbox::FIRST_SEEDED_INSTALL;
const FIRST_CUSTOMER: u64 = enerflo_sync_local::sandbox::FIRST_SEEDED_CUSTOMER;
const DRAIN: Duration = Duration::from_secs(120);

/// A CRM answering each record with a stable id of its own (its Enerflo install or customer).
async fn crm_accepts(h: &Harness) {
    Mock::given(method("POST"))
        .and(path("/crm/events"))
        .respond_with(|req: &Request| {
            let e: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let id = match (
                e["enerflo"]["install_id"].as_u64(),
                e["enerflo"]["customer_id"].as_u64(),
            ) {
                (Some(i), _) => format!("crm-project-{i}"),
                (None, Some(c)) => format!("crm-contact-{c}"),
                _ => "crm-other".into(),
            };
            ResponseTemplate::new(200).set_body_json(json!({"crm_id": id}))
        })
        .mount(&h.crm)
        .await;
}

async fn start(records: usize, extra: &[(&str, &str)]) -> Harness {
    let h = start_with_sandbox(extra).await;
    h.runner.sandbox.as_ref().unwrap().seed(records);
    crm_accepts(&h).await;
    h
}

async fn admin(h: &Harness, route: &str, body: Value) -> Value {
    let resp = h
        .http
        .post(h.runner.url(&format!("/sandbox/enerflo/admin/{route}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "admin {route}: {}",
        resp.status()
    );
    resp.json().await.unwrap()
}

/// One scheduled-sweep run, as the Lambda and the runner's interval run it.
async fn sweep(h: &Harness) -> Report {
    h.runner
        .reconciler
        .run(&RunOptions::new("sweep", &SWEEPABLE))
        .await
}

fn bearer() -> String {
    format!("Bearer {}", enerflo_sync_local::LOCAL_CRM_TOKEN)
}

/// Starts a run at `/local/reconcile` (the `enerflo-sync-ops --runner` path).
async fn start_backfill(h: &Harness, body: Value) {
    let resp = h
        .http
        .post(h.runner.url("/local/reconcile"))
        .header("authorization", bearer())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        202,
        "{}",
        resp.text().await.unwrap()
    );
}

async fn reconcile_state(h: &Harness) -> Value {
    h.http
        .get(h.runner.url("/local/reconcile"))
        .header("authorization", bearer())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits for the run's report.
async fn backfill_report(h: &Harness) -> Report {
    let deadline = Instant::now() + DRAIN;
    loop {
        let state = reconcile_state(h).await;
        if state["running"] == json!(false) && !state["report"].is_null() {
            return serde_json::from_value(state["report"].clone()).unwrap();
        }
        assert!(Instant::now() < deadline, "no report: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn backfill(h: &Harness, body: Value) -> Report {
    start_backfill(h, body).await;
    backfill_report(h).await
}

/// Everything the CRM received, by type.
async fn crm_by_type(h: &Harness) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in h.crm_events().await {
        out.entry(e["type"].as_str().unwrap_or("?").to_owned())
            .or_default()
            .push(e);
    }
    out
}

fn count(events: &BTreeMap<String, Vec<Value>>, kind: &str) -> usize {
    events.get(kind).map_or(0, Vec::len)
}

fn queue_depth(h: &Harness) -> usize {
    enerflo_sync_local::CONSUMER_STAGES
        .iter()
        .map(|s| h.runner.queue.depth(*s).unwrap())
        .sum()
}

fn dead_letters(h: &Harness) -> usize {
    enerflo_sync_local::CONSUMER_STAGES
        .iter()
        .map(|s| h.runner.queue.dead_letters(*s).unwrap().len())
        .sum()
}

/// Completed milestones of the seeded installs, as the sandbox serves them.
async fn completed_milestones(h: &Harness) -> usize {
    let body: Value = h
        .http
        .get(
            h.runner
                .url("/sandbox/enerflo/api/v3/installs?page=1&per_page=1000"),
        )
        .header("api-key", "sandbox-api-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["all_milestones"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["completed_date"].is_string())
        .count()
}

/// Waits until a webhook (not a synthetic event) of `entity` has `outcome` in the event log.
async fn webhook_outcome(h: &Harness, entity: &str, event: &str, outcome: &str) -> bool {
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline {
        let log = h.runner.ports.log.for_entity(entity, 100).await.unwrap();
        if log.iter().any(|r| {
            !r.dedupe_key.starts_with("reconcile:") && r.event == event && r.outcome == outcome
        }) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Syncs every seeded record (a backfill) and waits until the CRM has it all.
async fn synced(h: &Harness) -> usize {
    let report = backfill(h, json!({})).await;
    assert!(report.complete, "{report:?}");
    h.drain(DRAIN).await;
    assert_eq!(dead_letters(h), 0);
    h.crm_events().await.len()
}

#[tokio::test]
async fn a_status_change_and_a_milestone_completion_whose_webhooks_were_lost_reach_the_crm_within_one_sweep()
 {
    // GIVEN five installs, all synced, and an Enerflo that loses its webhooks from now on
    let h = start(5, &[]).await;
    let before = synced(&h).await;
    let install = FIRST_INSTALL + 1; // two milestones along, the third started
    admin(&h, "webhooks/lose", json!({})).await;
    // WHEN a user puts it On Hold and completes its third milestone (Permitting) in Enerflo
    admin(
        &h,
        &format!("installs/{install}/status"),
        json!({"status_id": 4}),
    )
    .await;
    admin(
        &h,
        &format!("installs/{install}/milestones/3902"),
        json!({"completed_date": "2025-04-15"}),
    )
    .await;
    let lost = admin(&h, "webhooks/deliver", json!({})).await;
    assert_eq!(
        lost["lost"],
        json!(["update_install", "project_milestone_updated"])
    );
    h.drain(DRAIN).await;
    assert_eq!(
        h.crm_events().await.len(),
        before,
        "no webhook, no CRM write"
    );

    // THEN one sweep finds both, and the CRM gets both, once
    let report = sweep(&h).await;
    assert!(report.complete && !report.failure, "{report:?}");
    assert_eq!(
        (
            report.stages[&Stage::Status].updated,
            report.stages[&Stage::Milestone].created,
            report.drift(),
            report.enqueued
        ),
        (1, 1, 2, 2)
    );
    h.drain(DRAIN).await;
    let events = h.crm_events().await;
    let new: Vec<&Value> = events[before..].iter().collect();
    assert_eq!(new.len(), 2, "{new:?}");
    let status = new
        .iter()
        .find(|e| e["type"] == "status.changed")
        .expect("status");
    assert_eq!(
        (
            status["enerflo"]["install_id"].as_u64(),
            status["data"]["status"]["id"].as_u64(),
            status["data"]["previous"]["id"].as_u64(),
            status["crm_id"].as_str()
        ),
        (
            Some(install),
            Some(4),
            Some(2),
            Some(format!("crm-project-{install}").as_str())
        )
    );
    let milestone = new
        .iter()
        .find(|e| e["type"] == "milestone.updated")
        .expect("milestone");
    assert_eq!(
        (
            milestone["enerflo"]["install_id"].as_u64(),
            milestone["data"]["milestone"]["id"].as_u64(),
            milestone["data"]["completed_date"].as_str()
        ),
        (Some(install), Some(3902), Some("2025-04-15"))
    );
    // ... recorded in the event log as the sweep's, delivered
    let log = h
        .runner
        .ports
        .log
        .for_entity(&format!("install:{install}"), 50)
        .await
        .unwrap();
    let swept: Vec<(&str, &str)> = log
        .iter()
        .filter(|r| r.dedupe_key.starts_with("reconcile:") && r.received_ms > 0)
        .filter(|r| r.raw_body.contains("2025-04-15") || r.raw_body.contains("\"id\":4"))
        .map(|r| (r.event.as_str(), r.outcome.as_str()))
        .collect();
    assert!(
        swept.contains(&("update_install", "delivered"))
            && swept.contains(&("project_milestone_updated", "delivered")),
        "{swept:?}"
    );
}

#[tokio::test]
async fn a_sweep_over_an_unchanged_enerflo_writes_nothing() {
    let h = start(20, &[]).await;
    let before = synced(&h).await;
    let logged_before = h
        .runner
        .ports
        .log
        .for_entity(&format!("install:{FIRST_INSTALL}"), 100)
        .await
        .unwrap()
        .len();

    let report = sweep(&h).await;

    assert!(report.complete, "{report:?}");
    assert_eq!(
        (report.drift(), report.enqueued, report.duplicates),
        (0, 0, 0)
    );
    assert_eq!(report.stages[&Stage::Status].unchanged, 20);
    assert_eq!(report.stages[&Stage::Leads].unchanged, 20);
    assert_eq!(queue_depth(&h), 0, "nothing queued");
    h.drain(DRAIN).await;
    assert_eq!(
        h.crm_events().await.len(),
        before,
        "nothing written to the CRM"
    );
    let logged_after = h
        .runner
        .ports
        .log
        .for_entity(&format!("install:{FIRST_INSTALL}"), 100)
        .await
        .unwrap()
        .len();
    assert_eq!(logged_after, logged_before, "no event logged");
}

#[tokio::test]
async fn a_change_arriving_by_webhook_and_by_sweep_is_written_to_the_crm_once() {
    let h = start(3, &[]).await;
    let before = synced(&h).await;
    let sandbox = h.runner.sandbox.clone().unwrap();

    // The sweep first, the webhook late: install 1 completed in Enerflo, its webhook held back
    let late = FIRST_INSTALL;
    sandbox.lose_webhooks(true);
    admin(
        &h,
        &format!("installs/{late}/status"),
        json!({"status_id": 6}),
    )
    .await;
    let report = sweep(&h).await;
    assert_eq!(report.enqueued, 1, "{report:?}");
    sandbox.lose_webhooks(false);
    assert_eq!(sandbox.redeliver_lost(), 1);
    assert!(
        webhook_outcome(
            &h,
            &format!("install:{late}"),
            "update_install",
            "unchanged"
        )
        .await,
        "the late webhook is processed, and finds the change synced"
    );

    // The webhook first, the sweep after: install 2 put on hold, its webhook delivered
    let prompt = FIRST_INSTALL + 1;
    admin(
        &h,
        &format!("installs/{prompt}/status"),
        json!({"status_id": 4}),
    )
    .await;
    assert!(
        webhook_outcome(
            &h,
            &format!("install:{prompt}"),
            "update_install",
            "delivered"
        )
        .await
    );
    let report = sweep(&h).await;
    assert_eq!((report.drift(), report.enqueued), (0, 0), "{report:?}");

    h.drain(DRAIN).await;
    let events = h.crm_events().await;
    let status_of = |install: u64| {
        events[before..]
            .iter()
            .filter(|e| {
                e["type"] == "status.changed" && e["enerflo"]["install_id"] == json!(install)
            })
            .map(|e| e["data"]["status"]["id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(status_of(late), [6], "written once");
    assert_eq!(status_of(prompt), [4], "written once");
    assert_eq!(events.len(), before + 2);
}

#[tokio::test]
async fn a_backfill_stopped_midway_resumes_from_its_cursor_and_syncs_each_install_once() {
    // GIVEN 200 installs in pages of 40, each page answered slowly
    let h = start(200, &[("RECONCILE_INSTALLS_PAGE_SIZE", "40")]).await;
    let sandbox = h.runner.sandbox.clone().unwrap();
    sandbox.set_list_latency(500);

    // WHEN a backfill is stopped (Ctrl-C in the tool: DELETE /local/reconcile) once it is under way
    start_backfill(&h, json!({"stages": ["status"]})).await;
    let deadline = Instant::now() + DRAIN;
    while reconcile_state(&h).await["progress"]["done"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resp = h
        .http
        .delete(h.runner.url("/local/reconcile"))
        .header("authorization", bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let first = backfill_report(&h).await;
    assert_eq!(
        first.stopped.as_deref(),
        Some("stopped on request"),
        "{first:?}"
    );
    assert!(!first.complete && first.installs < 200, "{first:?}");

    // THEN the next run resumes where it stopped (its first read is the cursor's page, no row is
    // done twice), and completes
    sandbox.set_list_latency(0);
    let calls_before = sandbox.calls().len();
    let second = backfill(&h, json!({"stages": ["status"]})).await;
    assert!(second.complete, "{second:?}");
    let from = second.resumed_from.clone().expect("resumed");
    let page = from
        .strip_prefix("installs page ")
        .and_then(|r| r.split(',').next())
        .expect("installs page N, row M");
    assert_eq!(
        sandbox.calls()[calls_before],
        format!("GET /api/v3/installs?page={page}"),
        "resumed from {from}"
    );
    assert_eq!(
        first.installs + second.installs,
        200,
        "{first:?} {second:?}"
    );
    assert_eq!(second.pass[&Stage::Status].created, 200);
    h.drain(DRAIN).await;
    let events = crm_by_type(&h).await;
    let mut installs: Vec<u64> = events["status.changed"]
        .iter()
        .map(|e| e["enerflo"]["install_id"].as_u64().unwrap())
        .collect();
    installs.sort_unstable();
    installs.dedup();
    assert_eq!(
        (installs.len(), count(&events, "status.changed")),
        (200, 200)
    );
}

#[tokio::test]
async fn a_dry_run_writes_nothing_to_the_crm_the_queues_or_the_store() {
    // GIVEN 30 installs whose statuses are synced, one since changed without a webhook
    let h = start(30, &[]).await;
    let report = backfill(&h, json!({"stages": ["status"]})).await;
    assert!(report.complete);
    h.drain(DRAIN).await;
    let sandbox = h.runner.sandbox.clone().unwrap();
    sandbox.lose_webhooks(true);
    admin(
        &h,
        &format!("installs/{FIRST_INSTALL}/status"),
        json!({"status_id": 5}),
    )
    .await;
    let crm_before = h.crm.received_requests().await.unwrap().len();
    let db = h.runner.config.data_dir.join("sync.redb");
    let bytes_before = std::fs::read(&db).unwrap();

    // WHEN a dry run of every stage runs
    let report = backfill(&h, json!({"dry_run": true})).await;

    // THEN it reports what a real run would do, per stage, with examples ...
    assert!(report.complete && report.dry_run, "{report:?}");
    assert_eq!(report.stages[&Stage::Status].updated, 1);
    assert_eq!(report.stages[&Stage::Status].unchanged, 29);
    assert_eq!(report.stages[&Stage::Leads].created, 30);
    assert!(report.stages[&Stage::Milestone].created > 0);
    assert_eq!(
        report.examples[&Stage::Status][0].subject,
        format!("install:{FIRST_INSTALL}")
    );
    assert_eq!(report.examples[&Stage::Leads].len(), 5);
    assert_eq!((report.enqueued, report.duplicates), (0, 0));
    // ... and wrote nothing: no CRM call, no queued or dead-lettered message, the store's file
    // byte for byte as it was (no cursor, no claim, no event log entry)
    assert_eq!(h.crm.received_requests().await.unwrap().len(), crm_before);
    assert_eq!((queue_depth(&h), dead_letters(&h)), (0, 0));
    assert!(
        std::fs::read(&db).unwrap() == bytes_before,
        "the store changed"
    );
}

// Two workers: the runner's consumers, its HTTP server and the backfill share this runtime, and
// the embedded store commits to disk synchronously.
#[tokio::test]
async fn a_backfill_of_a_few_hundred_installs_creates_each_crm_record_once_and_a_second_run_creates_none()
 {
    let h = start(300, &[]).await;
    let milestones = completed_milestones(&h).await;
    assert!(milestones > 300, "{milestones}");

    let first = backfill(&h, json!({})).await;
    assert!(first.complete && !first.failure, "{first:?}");
    let created = |r: &Report, s: Stage| r.stages.get(&s).map_or(0, |c| c.created);
    assert_eq!(
        (
            created(&first, Stage::Status),
            created(&first, Stage::Leads),
            created(&first, Stage::Milestone)
        ),
        (300, 300, milestones as u64)
    );
    h.drain(DRAIN).await;
    assert_eq!(dead_letters(&h), 0);
    let events = crm_by_type(&h).await;
    let unique = |kind: &str, key: &dyn Fn(&Value) -> String| {
        let mut keys: Vec<String> = events.get(kind).into_iter().flatten().map(key).collect();
        keys.sort();
        keys.dedup();
        keys.len()
    };
    assert_eq!(count(&events, "status.changed"), 300);
    assert_eq!(
        unique("status.changed", &|e| e["enerflo"]["install_id"]
            .to_string()),
        300
    );
    assert_eq!(count(&events, "lead.upserted"), 300);
    assert_eq!(
        unique("lead.upserted", &|e| e["enerflo"]["customer_id"]
            .to_string()),
        300
    );
    assert!(events["lead.upserted"].iter().all(|e| {
        let id = e["enerflo"]["customer_id"].as_u64().unwrap();
        (FIRST_CUSTOMER..FIRST_CUSTOMER + 300).contains(&id)
    }));
    assert_eq!(count(&events, "milestone.updated"), milestones);
    assert_eq!(
        unique("milestone.updated", &|e| format!(
            "{}:{}",
            e["enerflo"]["install_id"], e["data"]["milestone"]["id"]
        )),
        milestones
    );
    let total = h.crm_events().await.len();

    // A second run finds everything synced and writes nothing
    let second = backfill(&h, json!({})).await;
    assert!(second.complete, "{second:?}");
    assert_eq!((second.drift(), second.enqueued), (0, 0), "{second:?}");
    h.drain(DRAIN).await;
    assert_eq!(h.crm_events().await.len(), total);
}

#[tokio::test]
async fn the_runner_sweeps_on_its_interval_and_repairs_a_lost_webhook() {
    // GIVEN a runner sweeping every second, three installs, and webhooks lost
    let h = start(3, &[("RECONCILE_INTERVAL_SECS", "1")]).await;
    let sandbox = h.runner.sandbox.clone().unwrap();
    sandbox.lose_webhooks(true);
    let install = FIRST_INSTALL + 2;

    // WHEN a user changes a status in Enerflo
    admin(
        &h,
        &format!("installs/{install}/status"),
        json!({"status_id": 323}),
    )
    .await;

    // THEN, with no call from anyone, the CRM gets it
    let deadline = Instant::now() + DRAIN;
    loop {
        let events = h.crm_events().await;
        if events.iter().any(|e| {
            e["type"] == "status.changed"
                && e["enerflo"]["install_id"] == json!(install)
                && e["data"]["status"]["id"] == json!(323)
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the interval sweep never repaired it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sandbox.lost_webhooks(), ["update_install"]);
}
