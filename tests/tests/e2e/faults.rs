//! Fault injection: nothing lost, nothing duplicated when Enerflo, the CRM or DynamoDB misbehave.
//!
//! Each case drives the local runner over HTTP (or the Lambda-side consumer against a moto server
//! of its own), with a [`FaultyServer`] between the runner and the wiremock Enerflo or CRM, and
//! asserts counts of writes on both sides. Phases switch on observed progress (requests seen),
//! never on tight timings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enerflo_sync::classify::Stage;
use enerflo_sync::queue::{EventQueue, MessageMeta, QueueMessage};
use serde_json::{Value, json};
use sync_tests::crm::{CrmIds, EVENTS_PATH, crm_accepts, deliveries};
use sync_tests::enerflo::{deal_id, finds_installs, submission, submission_json};
use sync_tests::faulty::{FaultyServer, Mode};
use sync_tests::{Harness, start, wait_until};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

// ----- fixtures and mocks -------------------------------------------------------------------------

/// Project `n` with `panels` modules in its signed design.
fn submission_with_panels(n: u64, panels: u64) -> Value {
    let mut v = submission_json(n);
    v["payload"]["proposal"]["pricingOutputs"]["design"]["arrays"][0]["moduleCount"] =
        json!(panels);
    v
}

/// Accepted CRM writes per deal id.
fn per_deal(events: &[(String, Value)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, e) in events {
        let deal = e["enerflo"]["deal_id"].as_str().unwrap_or("?").to_owned();
        *out.entry(deal).or_insert(0) += 1;
    }
    out
}

/// Which fake a [`FaultyServer`] stands in front of.
enum Behind {
    Enerflo,
    Crm,
}

/// A runner with an ample retry budget (1000 attempts) whose Enerflo or CRM is a faulty server
/// (passing requests through until told otherwise) in front of the fake; the fake Enerflo finds
/// every project's install and the fake CRM keeps one record per deal.
async fn start_behind_faulty(side: Behind) -> (FaultyServer, Harness) {
    start_behind_faulty_with(side, &[]).await
}

/// [`start_behind_faulty`] with `extra` settings.
async fn start_behind_faulty_with(side: Behind, extra: &[(&str, &str)]) -> (FaultyServer, Harness) {
    let faulty = FaultyServer::start().await;
    let (setting, value) = match side {
        Behind::Enerflo => ("ENERFLO_BASE_URL", faulty.uri()),
        Behind::Crm => ("CRM_WEBHOOK_URL", format!("{}{EVENTS_PATH}", faulty.uri())),
    };
    let mut settings = vec![(setting, value.as_str()), ("RETRY_MAX_ATTEMPTS", "1000")];
    settings.extend_from_slice(extra);
    let h = start(&settings).await;
    faulty.set_upstream(&match side {
        Behind::Enerflo => h.enerflo.uri(),
        Behind::Crm => h.crm.uri(),
    });
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, CrmIds::per_deal()).await;
    (faulty, h)
}

async fn post_queued(h: &Harness, body: String) {
    let (status, answer) = h.post_webhook(body).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("queued")),
        "{answer}"
    );
}

// ----- Enerflo down -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enerflo_refusing_connections_then_answering_503_loses_and_duplicates_nothing() {
    // GIVEN Enerflo refuses connections (behind a faulty server), and the retry budget is ample
    let (enerflo, h) = start_behind_faulty(Behind::Enerflo).await;
    enerflo.set_mode(Mode::Refuse).await;

    // WHEN 20 projects are submitted while it is down, it then answers 503 for a while, and
    // then comes back
    for n in 1..=20 {
        post_queued(&h, submission(n)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    enerflo
        .set_mode(Mode::Status {
            code: 503,
            retry_after: Some(1),
            html: true,
        })
        .await;
    wait_until(Duration::from_secs(20), "Enerflo answered 503s", || async {
        enerflo.count("status") >= 2
    })
    .await;
    assert!(
        deliveries(&h.crm).await.is_empty(),
        "nothing reaches the CRM while Enerflo is down"
    );
    enerflo.set_mode(Mode::Pass).await;

    // THEN every project reaches the CRM exactly once
    wait_until(Duration::from_secs(60), "20 CRM writes", || async {
        deliveries(&h.crm).await.len() >= 20
    })
    .await;
    h.settle().await;
    let events = deliveries(&h.crm).await;
    let deals = per_deal(&events);
    assert_eq!(deals.len(), 20, "{deals:?}");
    assert!(deals.values().all(|&c| c == 1), "{deals:?}");
    let ids: BTreeSet<_> = events.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), 20);
    assert!(h.dead_letters(Stage::Project).is_empty());
    assert!(
        enerflo.count("pass") >= 20,
        "each project was hydrated once Enerflo was back: {:?}",
        enerflo.counts()
    );
}

// ----- CRM failing --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_500s_timeouts_and_lost_acks_then_recovery_deliver_every_event_once() {
    // GIVEN the CRM (behind a faulty server) answers 500
    let (crm, h) = start_behind_faulty(Behind::Crm).await;
    crm.set_mode(Mode::status(500)).await;

    // WHEN 10 projects are submitted, the CRM answers 500s, then hangs past the connector's
    // timeout (2 s), then accepts two writes whose acknowledgements are lost, then recovers
    for n in 1..=10 {
        post_queued(&h, submission(n)).await;
    }
    wait_until(Duration::from_secs(20), "CRM answered 500s", || async {
        crm.count("status") >= 10
    })
    .await;
    crm.set_mode(Mode::Hang(Duration::from_secs(4))).await;
    wait_until(Duration::from_secs(30), "CRM hung twice", || async {
        crm.count("hang") >= 2
    })
    .await;
    crm.script(Mode::Swallow(Duration::from_secs(4)), 2);
    crm.set_mode(Mode::Pass).await;
    wait_until(Duration::from_secs(60), "10 projects accepted", || async {
        per_deal(&deliveries(&h.crm).await).len() >= 10
    })
    .await;
    h.settle().await;

    // THEN the CRM holds one record per event: every accepted write of a project carries the
    // same webhook-id (a CRM deduplicating on it, like the local inbox, keeps one record), and
    // only the writes whose acknowledgement was lost were sent again
    let events = deliveries(&h.crm).await;
    let mut ids_per_deal: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, e) in &events {
        assert_eq!(
            e["id"].as_str(),
            Some(id.as_str()),
            "webhook-id is the event id"
        );
        ids_per_deal
            .entry(e["enerflo"]["deal_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(id.clone());
    }
    assert_eq!(ids_per_deal.len(), 10);
    assert!(
        ids_per_deal.values().all(|ids| ids.len() == 1),
        "one event id per project: {ids_per_deal:?}"
    );
    let swallowed = crm.count("swallow");
    assert_eq!(swallowed, 2, "{:?}", crm.counts());
    assert_eq!(
        events.len(),
        10 + swallowed,
        "a write the CRM acknowledged is never sent again"
    );
    let deals = per_deal(&events);
    assert_eq!(deals.values().filter(|&&c| c == 2).count(), swallowed);
    assert!(h.dead_letters(Stage::Project).is_empty());
}

// ----- Enerflo 429 storm --------------------------------------------------------------------------

/// Requests to the faulty server that came sooner after a 429 than its `Retry-After` allowed.
fn retry_after_violations(server: &FaultyServer) -> Vec<String> {
    let requests = server.requests();
    let mut out = Vec::new();
    for pair in requests.windows(2) {
        if let Mode::Status {
            code: 429,
            retry_after: Some(secs),
            ..
        } = pair[0].mode
        {
            let gap = pair[1].at.duration_since(pair[0].at);
            if gap < Duration::from_secs(secs) {
                out.push(format!(
                    "{} {} came {gap:?} after a 429 with Retry-After: {secs}",
                    pair[1].method,
                    pair[1].path()
                ));
            }
        }
    }
    out
}

/// Six projects submitted while Enerflo (behind a faulty server) answers its next `storm`
/// requests with an HTML 429 page and `Retry-After: 2`; asserts nothing was dropped or
/// duplicated and that the rate stayed under Enerflo's 300 a minute. Returns the requests that
/// came sooner after a 429 than its `Retry-After` allowed.
///
/// One worker per stage: with several, calls already in flight when the 429 comes arrive after
/// it, which no client can prevent; what is checked here is that the client starts none.
async fn survive_429_storm(storm: usize) -> Vec<String> {
    let (enerflo, h) =
        start_behind_faulty_with(Behind::Enerflo, &[("WORKERS_PER_STAGE", "1")]).await;
    enerflo.script(
        Mode::Status {
            code: 429,
            retry_after: Some(2),
            html: true,
        },
        storm,
    );

    for n in 1..=6 {
        post_queued(&h, submission(n)).await;
    }
    wait_until(Duration::from_secs(60), "6 projects delivered", || async {
        deliveries(&h.crm).await.len() >= 6
    })
    .await;
    h.settle().await;

    assert_eq!(enerflo.count("status"), storm, "{:?}", enerflo.counts());
    let deals = per_deal(&deliveries(&h.crm).await);
    assert_eq!(deals.len(), 6, "{deals:?}");
    assert!(
        deals.values().all(|&c| c == 1),
        "one CRM write each: {deals:?}"
    );
    assert!(enerflo.max_requests_in_any(Duration::from_secs(60)) <= 300);
    retry_after_violations(&enerflo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enerflo_429_storm_is_waited_out_per_retry_after_and_drops_nothing() {
    // GIVEN/WHEN three 429s in a row (within the client's four attempts of one call)
    let violations = survive_429_storm(3).await;
    // THEN no request followed a 429 before its Retry-After elapsed
    assert!(violations.is_empty(), "{violations:#?}");
}

/// Once a call gives up (4 attempts), the consumer moves on to the next entity: its first request
/// must still wait out the Retry-After, which `HttpEnerfloClient` keeps as a "not before" instant
/// shared by every call (shared/src/enerflo/client.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enerflo_429_storm_longer_than_one_call_is_still_waited_out_per_retry_after() {
    let violations = survive_429_storm(6).await;
    assert!(violations.is_empty(), "{violations:#?}");
}

// ----- poison messages ----------------------------------------------------------------------------

fn poison(n: u64, event: &str, body: &str) -> QueueMessage {
    QueueMessage {
        meta: MessageMeta {
            stage: Stage::Project,
            event: event.to_owned(),
            dedupe_key: format!("poison-{n}"),
            group: format!("poison:{n}"),
            received_at: "2025-01-01T00:00:00Z".to_owned(),
        },
        body: body.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_with_a_reason_and_never_block_other_entities() {
    // GIVEN a runner with a retry budget of 30 attempts, and one deal Enerflo never finds
    const BUDGET: u32 = 30;
    let budget = BUDGET.to_string();
    let h = start(&[("RETRY_MAX_ATTEMPTS", budget.as_str())]).await;
    let missing = deal_id(999);
    Mock::given(method("GET"))
        .and(path(format!("/api/v3/installs/find/{missing}")))
        .respond_with(ResponseTemplate::new(404))
        .with_priority(1)
        .mount(&h.enerflo)
        .await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, CrmIds::per_deal()).await;

    // WHEN poison reaches the project queue: straight onto it (unreadable JSON, an unknown shape,
    // an event the stage does not handle, a payload without its deal), through the webhook (a
    // submission without a deal id), and a deal whose install never appears (transient, retried)
    let direct = [
        poison(1, "deal.projectSubmitted", "{not json"),
        poison(2, "deal.projectSubmitted", "[1, 2, 3]"),
        poison(
            3,
            "deal.somethingNew",
            &submission(3).replace("deal.projectSubmitted", "deal.somethingNew"),
        ),
        poison(
            4,
            "deal.projectSubmitted",
            r#"{"event":"deal.projectSubmitted","payload":{"deal":{"shortCode":"x"}}}"#,
        ),
    ];
    for msg in &direct {
        h.runner.queue.send(msg).await.unwrap();
    }
    let mut no_deal = submission_json(5);
    no_deal["payload"]["deal"]
        .as_object_mut()
        .unwrap()
        .remove("id");
    post_queued(&h, no_deal.to_string()).await;
    let (status, _) = h.post_webhook("{\"event\": \"deal.projectSubm").await;
    assert_eq!(
        status, 400,
        "malformed JSON is refused at the door, never queued"
    );
    post_queued(&h, submission(999)).await;
    wait_until(
        Duration::from_secs(20),
        "the missing deal retried",
        || async {
            h.enerflo_calls(&format!("/api/v3/installs/find/{missing}"))
                .await
                >= 2
        },
    )
    .await;

    // ... while good events of other entities arrive
    for n in 10..20 {
        post_queued(&h, submission(n)).await;
    }

    // THEN the good events are delivered while the transient poison is still being retried
    wait_until(
        Duration::from_secs(30),
        "10 good projects delivered",
        || async { deliveries(&h.crm).await.len() >= 10 },
    )
    .await;
    let dead = h.dead_letters(Stage::Project);
    assert!(
        dead.iter().all(|d| !d.body.contains(&missing)),
        "the retried poison did not hold the other entities back"
    );
    // ... and every poison ends in the DLQ with its reason, the transient one after the budget
    wait_until(Duration::from_secs(60), "6 dead letters", || async {
        h.dead_letters(Stage::Project).len() >= 6
    })
    .await;
    h.settle().await;
    let dead = h.dead_letters(Stage::Project);
    assert_eq!(dead.len(), 6, "{dead:#?}");
    let reason_of = |pred: &dyn Fn(&enerflo_sync::queue::DeadLetter) -> bool| {
        let d = dead.iter().find(|d| pred(d)).expect("dead letter present");
        (d.reason.clone(), d.attempts)
    };
    for (i, expected) in [
        (0, "body unreadable"),
        (1, "body unreadable"),
        (2, "does not handle `deal.somethingNew`"),
        (3, "payload.deal.id is missing"),
    ] {
        let dedupe = direct[i].meta.dedupe_key.clone();
        let (reason, attempts) = reason_of(&|d| d.attributes.get("dedupe_key") == Some(&dedupe));
        assert!(reason.contains(expected), "{dedupe}: {reason}");
        assert_eq!(attempts, 1, "a permanent failure is not retried: {reason}");
    }
    let (reason, attempts) = reason_of(&|d| {
        d.attributes
            .get("group")
            .is_some_and(|g| g.starts_with("unidentified:"))
    });
    assert!(reason.contains("payload.deal.id is missing"), "{reason}");
    assert_eq!(attempts, 1);
    let (reason, attempts) = reason_of(&|d| d.body.contains(&missing));
    assert!(
        reason.contains(&format!("retry budget of {BUDGET} attempts exhausted")),
        "{reason}"
    );
    assert!(reason.contains("not created yet"), "{reason}");
    assert_eq!(attempts, BUDGET);
    // Exactly the good events reached the CRM, once each.
    let deals = per_deal(&deliveries(&h.crm).await);
    let expected: BTreeMap<String, usize> = (10..20).map(|n| (deal_id(n), 1)).collect();
    assert_eq!(deals, expected);
}

// ----- duplicate storms and out-of-order deliveries ----------------------------------------------

/// Posts `body` the way Enerflo retries: again after a 503, until it is accepted.
async fn deliver_until_accepted(http: reqwest::Client, url: String, body: String) -> String {
    for _ in 0..50 {
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        match status {
            202 => return answer["status"].as_str().unwrap_or_default().to_owned(),
            503 => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    panic!("never accepted");
}

/// Every body delivered `copies` times at once; the answers' statuses.
async fn storm(h: &Harness, bodies: &[String], copies: usize) -> Vec<String> {
    let url = h
        .runner
        .url(&format!("/enerflo/webhooks/{}", sync_tests::TOKEN));
    let mut tasks = tokio::task::JoinSet::new();
    for body in bodies {
        for _ in 0..copies {
            tasks.spawn(deliver_until_accepted(
                h.http.clone(),
                url.clone(),
                body.clone(),
            ));
        }
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_storm_five_concurrent_copies_of_many_entities_writes_each_once() {
    let h = start(&[]).await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, CrmIds::per_deal()).await;

    // WHEN 6 projects are each delivered 5 times at once
    let bodies: Vec<String> = (1..=6).map(submission).collect();
    let answers = storm(&h, &bodies, 5).await;

    // THEN each is queued once and acknowledged as a duplicate otherwise
    assert_eq!(
        answers.iter().filter(|s| *s == "queued").count(),
        6,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| *s == "duplicate").count(),
        24,
        "{answers:?}"
    );
    h.drain(Duration::from_secs(30)).await;

    // ... and a second storm after processing, plus a copy differing only in a field we do not
    // map (a new dedupe key, the same content), change nothing
    let answers = storm(&h, &bodies, 5).await;
    assert!(answers.iter().all(|s| s == "duplicate"), "{answers:?}");
    let mut reshaped = submission_json(1);
    reshaped["payload"]["initiatedBy"] = json!("00000000-0000-4000-8000-0000000000ff");
    post_queued(&h, reshaped.to_string()).await;
    h.settle().await;

    let events = deliveries(&h.crm).await;
    let deals = per_deal(&events);
    assert_eq!(deals.len(), 6, "{deals:?}");
    assert!(
        deals.values().all(|&c| c == 1),
        "one CRM write each: {deals:?}"
    );
    assert_eq!(
        h.enerflo_calls("/api/v3/installs/find/").await,
        7,
        "one hydration per queued message, none for duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_project_deliveries_end_with_the_last_delivered_content_written_once_each() {
    // The project stage has no reliable change time to judge staleness by (real submissions
    // carry no deal.updatedAt), so FIFO arrival order per deal is authoritative: the CRM ends
    // with the content of the last delivered change, and no change is written twice.
    let h = start(&[]).await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, CrmIds::per_deal()).await;
    let deal = deal_id(42);
    let older = submission_with_panels(42, 20);
    let newer = submission_with_panels(42, 24);
    // The older content again, as the installer side's event arriving last.
    let older_late = older
        .to_string()
        .replace("deal.projectSubmitted", "deal.projectReceived");

    // WHEN the older, the newer, a byte-identical late copy of the older, and the older content
    // under another event arrive in that order, back to back
    post_queued(&h, older.to_string()).await;
    post_queued(&h, newer.to_string()).await;
    let (status, answer) = h.post_webhook(older.to_string()).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("duplicate")),
        "a repeat of an already accepted delivery is dropped at the door: {answer}"
    );
    post_queued(&h, older_late).await;
    h.settle().await;

    // THEN the CRM got each distinct change once, in arrival order, the last one winning
    let events = deliveries(&h.crm).await;
    let panels: Vec<_> = events
        .iter()
        .map(|(_, e)| e["data"]["system"]["panel_count"].as_u64())
        .collect();
    assert_eq!(panels, [Some(20), Some(24), Some(20)], "{events:#?}");
    let ids: BTreeSet<_> = events.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), 3, "no change written twice");
    assert!(events.iter().all(|(_, e)| e["enerflo"]["deal_id"] == deal));
    assert_eq!(events[2].1["type"], "project.received");
    assert_eq!(events[2].1["crm_id"], format!("crm-{deal}"));
}

// ----- DynamoDB unavailable (Lambda side, against a moto server of its own) ----------------------

/// A `moto_server` of this test's own, so it can be frozen (`SIGSTOP`) without disturbing the
/// other tests' moto. Stopped and reaped on drop.
struct Moto {
    child: std::process::Child,
    url: String,
}

impl Moto {
    /// `None` (skip, with a note) when `moto_server` is not installed, except in CI.
    async fn start(test: &str) -> Option<Moto> {
        use std::os::unix::process::CommandExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spawned = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Its own process group: a pyenv shim may stand between us and the server.
            .process_group(0)
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{test}: moto_server is not installed, and CI=true requires this test to run"
                );
                eprintln!("note: {test} skipped: moto_server is not installed");
                return None;
            }
            Err(e) => panic!("moto_server does not start: {e}"),
        };
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = enerflo_sync::wire::client();
        let ready = || async {
            http.get(format!("{}/moto-api/", moto.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        };
        wait_until(Duration::from_secs(30), "moto_server answers", ready).await;
        Some(moto)
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([
                format!("-{signal}"),
                "--".to_owned(),
                format!("-{}", self.child.id()),
            ])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.signal("CONT");
        self.signal("KILL");
        let _ = self.child.wait();
    }
}

/// DynamoDB + SQS adapters on `moto` (a fresh table and project queue named `name`), with
/// timeouts short enough that a frozen server fails each call within about a second (the Lambdas
/// use `runtime::aws_sdk_config`: the same idea, in seconds). The SQS adapter is returned too,
/// for the calls Lambda's event source mapping makes (receive, delete).
async fn moto_ports(
    moto: &Moto,
    name: &str,
) -> (
    enerflo_sync::runtime::Ports,
    Arc<enerflo_sync::queue::sqs::SqsEventQueue>,
) {
    use aws_config::timeout::TimeoutConfig;
    use aws_config::{BehaviorVersion, Region, retry::RetryConfig};
    use enerflo_sync::queue::sqs::{SqsEventQueue, create_queues};
    use enerflo_sync::store::dynamo::{DynamoStore, create_table};
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(1))
        .operation_timeout(Duration::from_secs(1))
        .build();
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&moto.url)
        .region(Region::new("us-east-1"))
        .test_credentials()
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .load()
        .await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    create_table(&dynamo, name).await.expect("create table");
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queues = create_queues(&sqs, name).await.expect("create queues");
    let store = Arc::new(DynamoStore::new(dynamo, name));
    let queue = Arc::new(SqsEventQueue::new(
        sqs,
        BTreeMap::from([(Stage::Project, queues)]),
    ));
    let ports = enerflo_sync::runtime::Ports::one_store(store, queue.clone());
    (ports, queue)
}

/// Receives until `n` project messages are in hand (FIFO may hand them out a few at a time).
async fn receive_n(
    queue: &enerflo_sync::queue::sqs::SqsEventQueue,
    n: usize,
    visibility_secs: u32,
) -> Vec<enerflo_sync::queue::Delivery> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages received",
            out.len()
        );
        // No long polling: it would outlast the 1 s operation timeout.
        let got = queue
            .receive(Stage::Project, 10, 0, visibility_secs)
            .await
            .expect("receive");
        if got.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        out.extend(got);
    }
    out
}

fn webhook_request(body: String) -> enerflo_sync::http::HttpRequest {
    enerflo_sync::http::HttpRequest {
        method: http::Method::POST,
        path: format!("/enerflo/webhooks/{}", sync_tests::TOKEN),
        query: None,
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::from(body),
    }
}

/// Receives and processes until `n` messages are done (deleted), as Lambda would.
async fn process_until_done(
    queue: &enerflo_sync::queue::sqs::SqsEventQueue,
    consumer: &enerflo_sync::consumer::Consumer,
    n: usize,
    timeout: Duration,
) {
    use enerflo_sync::consumer::Disposition;
    let deadline = Instant::now() + timeout;
    let mut done = 0;
    while done < n {
        assert!(
            Instant::now() < deadline,
            "{done} of {n} processed in {timeout:?}"
        );
        let batch = queue
            .receive(Stage::Project, 10, 0, 30)
            .await
            .expect("receive");
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let dispositions = consumer.process_batch(&batch).await;
        for (delivery, disposition) in batch.iter().zip(dispositions) {
            if disposition == Disposition::Done {
                queue
                    .ack(Stage::Project, &delivery.receipt)
                    .await
                    .expect("delete");
                done += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_unavailable_mid_batch_retries_every_message_and_never_writes_a_second_record() {
    use enerflo_sync::consumer::Disposition;
    let Some(moto) = Moto::start("dynamodb_unavailable_mid_batch").await else {
        return;
    };
    let enerflo = wiremock::MockServer::start().await;
    let crm = wiremock::MockServer::start().await;
    finds_installs(&enerflo).await;
    crm_accepts(&crm, CrmIds::per_deal()).await;
    let env: BTreeMap<&str, String> = BTreeMap::from([
        ("ENERFLO_BASE_URL", enerflo.uri()),
        ("ENERFLO_API_KEY", "fake-enerflo-key".to_owned()),
        ("CRM_WEBHOOK_URL", format!("{}/crm/events", crm.uri())),
        ("CRM_WEBHOOK_SECRET", sync_tests::CRM_SECRET.to_owned()),
        ("WEBHOOK_TOKEN", sync_tests::TOKEN.to_owned()),
        ("RETRY_MAX_ATTEMPTS", "100".to_owned()),
    ]);
    let mut config = enerflo_sync::config::Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    config.retry.base = Duration::from_millis(250);
    config.retry.cap = Duration::from_secs(2);
    let name = format!(
        "faults-{}-{:06x}",
        std::process::id(),
        fastrand::u32(..0xff_ffff)
    );
    let (ports, queue) = moto_ports(&moto, &name).await;
    let ingest = enerflo_sync::runtime::webhook_ingest(&config, &ports);
    let consumer = enerflo_sync::runtime::consumer_for(
        Stage::Project,
        &config,
        &ports,
        enerflo_sync::runtime::enerflo_client(&config.enerflo_access().unwrap()).unwrap(),
        enerflo_sync::runtime::crm_connector(&config.crm_access().unwrap(), &ports).unwrap(),
    )
    .unwrap();
    let crm_events = || sync_tests::crm::events(&crm);
    let ingest_all = |bodies: Vec<String>| {
        let ingest = &ingest;
        async move {
            for body in bodies {
                let resp = ingest
                    .handle(&webhook_request(body), sync_tests::TOKEN)
                    .await;
                assert_eq!(resp.status.as_u16(), 202);
            }
        }
    };

    // GIVEN three projects already synced: each linked to its CRM record
    ingest_all((1..=3).map(submission).collect()).await;
    process_until_done(&queue, &consumer, 3, Duration::from_secs(30)).await;
    assert_eq!(crm_events().await.len(), 3);

    // ... and a changed resubmission of each, accepted and received by the consumer
    ingest_all(
        (1..=3)
            .map(|n| submission_with_panels(n, 30).to_string())
            .collect(),
    )
    .await;
    let batch = receive_n(&queue, 3, 5).await;

    // WHEN DynamoDB (the whole moto server) freezes while the batch is processed
    moto.signal("STOP");
    let frozen = Instant::now();
    let dispositions = consumer.process_batch(&batch).await;
    let frozen_for = frozen.elapsed();
    moto.signal("CONT");

    // THEN every message comes back for a retry, and the CRM saw nothing new
    assert_eq!(
        dispositions,
        vec![Disposition::Retry; 3],
        "after {frozen_for:?}"
    );
    assert_eq!(
        crm_events().await.len(),
        3,
        "no CRM write without the state store"
    );

    // ... and once DynamoDB is back, each resubmission updates its linked record exactly once:
    // an unreadable cross-reference was never taken for "not linked yet" (a second record).
    // A lock claim that timed out may still have landed; it is waited out (60 s lease).
    process_until_done(&queue, &consumer, 3, Duration::from_secs(120)).await;
    let events = crm_events().await;
    assert_eq!(events.len(), 6, "{events:#?}");
    for n in 1..=3 {
        let deal = deal_id(n);
        let writes: Vec<&Value> = events
            .iter()
            .filter(|e| e["enerflo"]["deal_id"] == deal.as_str())
            .collect();
        assert_eq!(writes.len(), 2, "{deal}: {writes:#?}");
        assert_eq!(
            writes[1]["crm_id"],
            format!("crm-{deal}"),
            "the linked record"
        );
        assert_eq!(writes[1]["data"]["resubmission"], true);
        assert_eq!(writes[1]["data"]["system"]["panel_count"], 30);
        assert_ne!(writes[0]["id"], writes[1]["id"]);
    }
    eprintln!(
        "frozen batch failed in {frozen_for:?}; all delivered {:?} after the freeze",
        frozen.elapsed()
    );
}
