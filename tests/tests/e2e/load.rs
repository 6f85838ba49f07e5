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

use serde_json::Value;
use sync_tests::crm::{CrmIds, crm_accepts};
use sync_tests::enerflo::finds_installs;
use sync_tests::load::{Webhook, key_of, percentile, webhook};
use sync_tests::{TOKEN, start_unthrottled};

const IN_FLIGHT: usize = 32;

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
