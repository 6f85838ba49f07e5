//! Load: `LOAD_EVENTS` mixed webhooks (default 2000; project submissions with distinct deals, the
//! other outbound stages, and events no stage handles) through the local runner over HTTP, at the
//! highest rate it sustains with 32 requests in flight (or paced at `LOAD_RATE` events/s). Counts
//! prove every routed event reached the CRM exactly once; throughput and end-to-end latency
//! (webhook POST -> CRM receipt) are printed, never asserted.
//!
//! The full figures, in release mode:
//!
//! ```text
//! LOAD_EVENTS=10000 cargo test --release -p sync-tests --test load -- --nocapture
//! LOAD_EVENTS=3000 LOAD_RATE=100 cargo test --release -p sync-tests --test load -- --nocapture
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

use enerflo_sync::config::Config;
use enerflo_sync::enerflo::{EnerfloApi, HttpEnerfloClient};
use enerflo_sync::secret::Secret;
use serde_json::{Value, json};
use sync_tests::{CRM_SECRET, Harness, TOKEN, fixture, temp_dir};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const IN_FLIGHT: usize = 32;

/// One generated webhook: the body, the query string, and the key its CRM event will carry
/// (`None` for an event no stage handles).
struct Webhook {
    body: String,
    query: &'static str,
    key: Option<String>,
}

fn deal_id(n: usize) -> String {
    format!("00000000-0000-4000-9000-{n:012}")
}

/// Event `i` of the mix: half project submissions, the rest spread over the other stages and
/// ignored events. Every entity is distinct (no two events share an id form), so each routed
/// event is one CRM write.
fn webhook(i: usize, sample: &str) -> Webhook {
    let routed = |body: Value, key: String| Webhook {
        body: body.to_string(),
        query: "",
        key: Some(key),
    };
    match i % 10 {
        0..=4 => Webhook {
            body: sample
                .replace("00000000-0000-4000-8000-000000000010", &deal_id(i))
                .replace("abc123xyz", &format!("sc{i:010}"))
                .replace(
                    "00000000-0000-4000-8000-000000000003",
                    &format!("00000000-0000-4000-a000-{i:012}"),
                ),
            query: "",
            key: Some(format!("project:{}", deal_id(i))),
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

/// The CRM: timestamps each arrival by the key of its event, and accepts it.
#[derive(Clone, Default)]
struct TimestampingCrm {
    arrivals: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Respond for TimestampingCrm {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let now = Instant::now();
        let event: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let key = key_of(&event);
        let crm_id = format!("crm-{key}");
        self.arrivals.lock().unwrap().push((key, now));
        ResponseTemplate::new(200).set_body_json(json!({"crm_id": crm_id}))
    }
}

/// `installs/find/{deal}`: at once, a distinct install per deal.
struct FindsInstalls;

impl Respond for FindsInstalls {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let n: u64 = req
            .url
            .path()
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        ResponseTemplate::new(200).set_body_json(json!({
            "id": 700_000 + n, "survey_id": 4_000_000 + n, "customer_id": 900_000 + n,
            "customer": {"id": 900_000 + n, "first_name": "Pat", "last_name": "Placeholder"}
        }))
    }
}

/// A runner like the harness's, but with an Enerflo client without the per-minute limit.
async fn start_unthrottled() -> Harness {
    let enerflo = MockServer::start().await;
    let crm = MockServer::start().await;
    let env: HashMap<&str, String> = HashMap::from([
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("DATA_DIR", temp_dir("load").display().to_string()),
        ("WEBHOOK_TOKEN", TOKEN.to_owned()),
        ("ENERFLO_BASE_URL", enerflo.uri()),
        ("ENERFLO_API_KEY", "fake-enerflo-key".to_owned()),
        ("CRM_WEBHOOK_URL", format!("{}/crm/events", crm.uri())),
        ("CRM_WEBHOOK_SECRET", CRM_SECRET.to_owned()),
    ]);
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
    let client: Arc<dyn EnerfloApi> = Arc::new(
        HttpEnerfloClient::new(
            &enerflo.uri(),
            Secret::new("fake-enerflo-key"),
            Duration::from_secs(5),
            usize::MAX,
        )
        .expect("client"),
    );
    let runner = enerflo_sync_local::start_with_enerflo(config, Some(client))
        .await
        .expect("runner starts");
    Harness {
        runner,
        enerflo,
        crm,
        http: reqwest::Client::new(),
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
    let crm = TimestampingCrm::default();
    Mock::given(method("GET"))
        .and(path_regex("^/api/v3/installs/find/"))
        .respond_with(FindsInstalls)
        .mount(&h.enerflo)
        .await;
    Mock::given(method("POST"))
        .and(path("/crm/events"))
        .respond_with(crm.clone())
        .mount(&h.crm)
        .await;

    // GIVEN `total` webhooks of every kind
    let sample = fixture("v2-deal.projectSubmitted.json");
    let webhooks: Arc<Vec<Webhook>> = Arc::new((0..total).map(|i| webhook(i, &sample)).collect());
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
        let arrived = crm.arrivals.lock().unwrap().len();
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
    h.drain(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let arrivals = crm.arrivals.lock().unwrap().clone();
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
        let dead = h.runner.queue.dead_letters(*stage).unwrap();
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
