//! Load: `LOAD_EVENTS` mixed webhooks (default 2000; project submissions with distinct deals, the
//! other outbound stages, and events no stage handles) through the local runner over HTTP, at the
//! highest rate it sustains with 32 requests in flight (or paced at `LOAD_RATE` events/s). Counts
//! prove every routed event reached the CRM exactly once; throughput and end-to-end latency
//! (webhook POST -> CRM receipt) are printed, never asserted.
//!
//! The full figures, in release mode:
//!
//! ```text
//! LOAD_EVENTS=10000 cargo test --release -p sync-tests --test e2e -- load:: --nocapture
//! LOAD_EVENTS=3000 LOAD_RATE=100 cargo test --release -p sync-tests --test e2e -- load:: --nocapture
//! ```
//!
//! Enerflo (wiremock) answers `installs/find` at once, and the runner's Enerflo client has no
//! 240 requests/minute limit here: that limit (proven by client unit tests) would cap project
//! throughput at 4 events/s and measure Enerflo's quota, not the pipeline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sync_tests::crm::{CrmIds, crm_accepts};
use sync_tests::enerflo::{deal_id, finds_installs, submission};
use sync_tests::{TOKEN, start_unthrottled};

const IN_FLIGHT: usize = 32;

/// One generated webhook: the body, the query string, and the key its CRM event will carry
/// (`None` for an event no stage handles).
struct Webhook {
    body: String,
    query: &'static str,
    key: Option<String>,
}

/// Event `i` of the mix: half project submissions, the rest spread over the other stages and
/// ignored events. Every entity is distinct (no two events share an id form), so each routed
/// event is one CRM write.
fn webhook(i: usize) -> Webhook {
    let routed = |body: Value, key: String| Webhook {
        body: body.to_string(),
        query: "",
        key: Some(key),
    };
    match i % 10 {
        0..=4 => Webhook {
            body: submission(i as u64),
            query: "",
            key: Some(format!("project:{}", deal_id(i as u64))),
        },
        5 => routed(
            json!({"webhook_event": "new_customer", "id": 10_000_000 + i,
                   "first_name": "Pat", "last_name": "Placeholder",
                   "email": format!("lead{i}@example.com"), "phone": "(555) 010-0000",
                   "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX", "zip": "75001"},
                   "timestamps": {"created_at": "2025-01-01 12:00:00", "updated_at": "2025-01-01 12:00:00", "timezone": "UTC"}}),
            format!("lead:{}", 10_000_000 + i),
        ),
        6 => routed(
            json!({"webhook_event": "update_install", "id": 20_000_000 + i,
                   "status": {"id": 321, "name": "Example Custom Status"},
                   "timestamps": {"updated_at": "2025-04-01 10:00:00", "timezone": "UTC"}}),
            format!("status:{}", 20_000_000 + i),
        ),
        7 => routed(
            json!({"webhook_event": "new_install_note", "install_id": 30_000_000 + i,
                   "note": {"id": 30_000_000 + i, "note": format!("Load note {i}"),
                            "user": {"full_name": "Sam Installer"}, "created_at": "2025-03-01 10:00:00"}}),
            format!("note:{}", 30_000_000 + i),
        ),
        8 if i % 20 == 8 => routed(
            json!({"webhook_event": "project_milestone_updated", "install_id": 40_000_000 + i,
                   "milestone_id": 3901, "milestone": {"id": 3901, "title": "Engineering"},
                   "start_date": "2025-02-01", "completed_date": "2025-03-01",
                   "updated_at": "2025-04-01 10:00:00"}),
            format!("milestone:{}", 40_000_000 + i),
        ),
        8 => {
            let install = 50_000_000 + i;
            Webhook {
                body: json!({"id": install, "status": "complete",
                    "install": {"id": install, "solarData": {"panel_count": 20}},
                    "change_orders": [{"id": 60_000_000 + i, "epc_install_id": install,
                        "status": "complete", "signed_at": "2025-03-02 11:00:00", "deleted_at": null,
                        "change_values": {"panel_count": {"old": 18, "new": 20}}}]})
                .to_string(),
                query: "?event=signed_change_order",
                key: Some(format!("change_order:{install}")),
            }
        }
        _ => Webhook {
            body: json!({"webhook_event": "new_appointment", "id": i}).to_string(),
            query: "",
            key: None,
        },
    }
}

/// The key a CRM event answers to (the inverse of [`webhook`]'s keys).
fn key_of(event: &Value) -> String {
    let e = &event["enerflo"];
    let num = |v: &Value| v.as_u64().map(|n| n.to_string()).unwrap_or_default();
    match event["type"].as_str().unwrap_or_default() {
        "project.submitted" | "project.received" => {
            format!("project:{}", e["deal_id"].as_str().unwrap_or_default())
        }
        "lead.upserted" => format!("lead:{}", num(&e["customer_id"])),
        "status.changed" => format!("status:{}", num(&e["install_id"])),
        "note.created" => format!("note:{}", num(&event["data"]["note"]["id"])),
        "milestone.updated" => format!("milestone:{}", num(&e["install_id"])),
        "change_order.signed" => format!("change_order:{}", num(&e["install_id"])),
        other => format!("unknown:{other}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_mixed_webhooks_every_routed_event_reaches_the_crm_exactly_once() {
    let total = env_number("LOAD_EVENTS", 2000);
    let rate = env_number("LOAD_RATE", 0);
    let h = Arc::new(start_unthrottled().await);
    finds_installs(&h.enerflo).await;
    // The CRM names each record by its event's key, and keeps when each event arrived.
    let crm = crm_accepts(&h.crm, CrmIds::PerEvent(|e| format!("crm-{}", key_of(e)))).await;

    // GIVEN `total` webhooks of every kind
    let webhooks: Arc<Vec<Webhook>> = Arc::new((0..total).map(webhook).collect());
    let expected: BTreeMap<String, usize> = webhooks
        .iter()
        .filter_map(|w| w.key.clone().map(|k| (k, 1)))
        .collect();
    let mut per_stage: BTreeMap<String, usize> = BTreeMap::new();
    for key in expected.keys() {
        *per_stage
            .entry(key.split(':').next().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }

    // WHEN they are posted with IN_FLIGHT requests at a time (paced at `rate`/s when set)
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut posters = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (h, webhooks, sent_at, next) =
            (h.clone(), webhooks.clone(), sent_at.clone(), next.clone());
        posters.spawn(async move {
            let mut answers: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(w) = webhooks.get(i) else {
                    return answers;
                };
                if rate > 0 {
                    let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let url = h
                    .runner
                    .url(&format!("/enerflo/webhooks/{TOKEN}{}", w.query));
                if let Some(key) = &w.key {
                    sent_at.lock().unwrap().insert(key.clone(), Instant::now());
                }
                let resp = h
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(w.body.clone())
                    .send()
                    .await
                    .expect("webhook request");
                let status = resp.status().as_u16();
                let answer: Value = resp.json().await.unwrap_or(Value::Null);
                assert_eq!(status, 202, "event {i}: {answer}");
                let kind = answer["status"].as_str().unwrap_or("?").to_owned();
                *answers.entry(kind).or_insert(0) += 1;
            }
        });
    }
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(done) = posters.join_next().await {
        for (k, v) in done.unwrap() {
            *answers.entry(k).or_insert(0) += v;
        }
    }
    let ingested_in = started.elapsed();

    // THEN every routed event reaches the CRM, exactly once
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let arrived = crm.len();
        if arrived >= expected.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{arrived} of {} events reached the CRM; queues {:?}",
            expected.len(),
            enerflo_sync_local::CONSUMER_STAGES
                .iter()
                .map(|s| (s.as_str(), h.runner.queue.depth(*s).unwrap_or(0)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    h.settle().await;

    let arrivals: Vec<(String, Instant)> = crm
        .all()
        .iter()
        .map(|(event, at)| (key_of(event), *at))
        .collect();
    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    for (key, _) in &arrivals {
        *received.entry(key.clone()).or_insert(0) += 1;
    }
    let routed = expected.len();
    assert_eq!(
        answers.get("queued").copied().unwrap_or(0),
        routed,
        "{answers:?}"
    );
    assert_eq!(
        answers.get("ignored").copied().unwrap_or(0),
        total - routed,
        "{answers:?}"
    );
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !received.contains_key(*k))
        .take(10)
        .collect();
    let doubled: Vec<_> = received.iter().filter(|(_, c)| **c > 1).take(10).collect();
    let unexpected: Vec<_> = received
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && doubled.is_empty() && unexpected.is_empty(),
        "missing {missing:?}, written more than once {doubled:?}, unexpected {unexpected:?}"
    );
    assert_eq!(received, expected);
    for stage in enerflo_sync_local::CONSUMER_STAGES {
        let dead = h.dead_letters(*stage);
        assert!(
            dead.is_empty(),
            "{stage}: {:?}",
            dead.first().map(|d| &d.reason)
        );
    }

    // Figures (printed, never asserted).
    let sent_at = sent_at.lock().unwrap();
    let mut latencies: Vec<Duration> = arrivals
        .iter()
        .filter_map(|(key, at)| sent_at.get(key).map(|s| at.saturating_duration_since(*s)))
        .collect();
    latencies.sort();
    let last_arrival = arrivals.iter().map(|(_, at)| *at).max().unwrap_or(started);
    let span = last_arrival.duration_since(started).as_secs_f64();
    println!(
        "load: {total} webhooks ({routed} routed: {per_stage:?}; {} ignored), {IN_FLIGHT} in flight{}",
        total - routed,
        if rate > 0 {
            format!(", paced at {rate}/s")
        } else {
            String::new()
        }
    );
    println!(
        "load: ingest {:.0} webhooks/s ({:.1} s); end to end {:.0} events/s ({routed} CRM writes in {span:.1} s; all done after {:.1} s)",
        total as f64 / ingested_in.as_secs_f64(),
        ingested_in.as_secs_f64(),
        routed as f64 / span,
        elapsed.as_secs_f64()
    );
    println!(
        "load: latency webhook POST -> CRM receipt: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}
