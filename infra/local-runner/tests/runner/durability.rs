//! A webhook that got a 202 survives `kill -9` of the local runner and is delivered after a
//! restart: the embedded queue commits before the answer. SIGTERM stops the runner gracefully
//! (exit 0), and a second runner on the same `DATA_DIR` refuses to start, saying it is in use.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::kit::{Process, data_dir, fixture, free_port, inbox, post_webhook};

/// A runner on `port` logging at `rust_log`, with no Enerflo settings but `enerflo`: without any,
/// it serves its own sandbox and CRM inbox.
fn spawn(data_dir: &Path, port: u16, rust_log: &str, enerflo: &[(&str, String)]) -> Process {
    Process::spawn(data_dir, &format!("127.0.0.1:{port}"), rust_log, enerflo)
}

/// A runner whose own sandbox is called with `key`: a wrong key makes the sandbox answer 401, so
/// nothing is delivered (the events stay queued).
fn sandbox_key(port: u16, key: &str) -> [(&'static str, String); 2] {
    [
        ("ENERFLO_API_KEY", key.to_owned()),
        (
            "ENERFLO_BASE_URL",
            format!("http://127.0.0.1:{port}/sandbox/enerflo"),
        ),
    ]
}

/// A runner on `port` that is listening, at `RUST_LOG=warn`.
fn started(data_dir: &Path, port: u16, enerflo: &[(&str, String)]) -> Process {
    let mut runner = spawn(data_dir, port, "warn", enerflo);
    runner.wait_listening(Duration::from_secs(20));
    runner
}

#[tokio::test]
async fn an_accepted_webhook_survives_kill_9_and_is_delivered_after_restart() {
    let dir = data_dir("durability");
    let port = free_port();
    // No pooled connections: the second runner listens on the port the killed one used.
    let http = enerflo_sync::wire::client_builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let body = fixture("v2-deal.projectSubmitted.json");

    // GIVEN a runner whose Enerflo calls fail (sandbox rejects the key), so the event stays queued
    let mut first = started(&dir, port, &sandbox_key(port, "wrong-key"));
    assert_eq!(post_webhook(&http, port, body).await, 202);
    // WHEN it is killed without any chance to clean up
    first.kill();

    // THEN a restarted runner (with working sandbox credentials) delivers it to the CRM inbox
    let mut second = started(&dir, port, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut count = 0;
    while Instant::now() < deadline {
        let inbox = inbox(&http, port).await;
        count = inbox["count"].as_u64().unwrap_or(0);
        if count > 0 {
            assert_eq!(inbox["events"][0]["event"]["type"], "project.submitted");
            assert_eq!(inbox["rejected"], 0, "the inbox verified the signature");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.kill();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        count, 1,
        "the accepted event reached the CRM exactly once after the restart"
    );
}

/// A runner listening on `port` whose Enerflo is at `enerflo_url` (any API key); the CRM inbox
/// is local.
fn started_against(data_dir: &Path, port: u16, enerflo_url: &str) -> Process {
    started(
        data_dir,
        port,
        &[
            ("ENERFLO_BASE_URL", enerflo_url.to_owned()),
            ("ENERFLO_API_KEY", "slow-enerflo-key".to_owned()),
        ],
    )
}

fn deal_id(n: u64) -> String {
    format!("00000000-0000-4000-9000-{n:012}")
}

/// An Enerflo that takes 100 ms per `installs/find` (so a kill lands mid-batch) and answers a
/// distinct install per deal.
async fn slow_enerflo() -> String {
    use axum::extract::Path;
    async fn find(Path(deal): Path<String>) -> axum::Json<serde_json::Value> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n: u64 = deal
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        axum::Json(serde_json::json!({
            "id": 700_000 + n, "survey_id": 4_000_000 + n, "customer_id": 900_000 + n,
            "customer": {"id": 900_000 + n, "first_name": "Pat", "last_name": "Placeholder"}
        }))
    }
    let app = axum::Router::new().route("/api/v3/installs/find/{deal}", axum::routing::get(find));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_then_restart_loses_no_acknowledged_event_and_duplicates_none() {
    let dir = data_dir("kill-mid-batch");
    let port = free_port();
    let http = enerflo_sync::wire::client_builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let sample = fixture("v2-deal.projectSubmitted.json");
    let enerflo = slow_enerflo().await;

    // GIVEN a runner that accepted 30 project submissions (distinct deals, short codes, customers)
    let mut first = started_against(&dir, port, &enerflo);
    for n in 1..=30u64 {
        let body = sample
            .replace("00000000-0000-4000-8000-000000000010", &deal_id(n))
            .replace("abc123xyz", &format!("sc{n:010}"))
            .replace(
                "00000000-0000-4000-8000-000000000003",
                &format!("00000000-0000-4000-a000-{n:012}"),
            );
        assert_eq!(post_webhook(&http, port, body).await, 202);
    }

    // WHEN it is killed with SIGKILL while it works through them
    let deadline = Instant::now() + Duration::from_secs(30);
    let at_kill = loop {
        let count = inbox(&http, port).await["count"].as_u64().unwrap_or(0);
        if count >= 5 {
            break count;
        }
        assert!(
            Instant::now() < deadline,
            "nothing was delivered before the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    first.kill();
    assert!(
        at_kill < 30,
        "the kill came after the work was done ({at_kill})"
    );

    // THEN a restarted runner delivers the rest, and the inbox holds each event exactly once
    let mut second = started_against(&dir, port, &enerflo);
    let deadline = Instant::now() + Duration::from_secs(60);
    let restarted = Instant::now();
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        last = inbox(&http, port).await;
        if last["count"].as_u64() == Some(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("all delivered {:?} after restart", restarted.elapsed());
    // Let any redelivery still under way land before judging "exactly once".
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = inbox(&http, port).await;
    second.kill();
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(
        last["count"], 30,
        "every accepted event reached the CRM: {last}"
    );
    assert_eq!(
        settled["count"], 30,
        "and no event arrived twice as a new record"
    );
    assert_eq!(settled["rejected"], 0, "the inbox verified every signature");
    let events = settled["events"].as_array().unwrap();
    let deals: std::collections::BTreeSet<_> = events
        .iter()
        .map(|e| {
            e["event"]["enerflo"]["deal_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let webhook_ids: std::collections::BTreeSet<_> = events
        .iter()
        .map(|e| e["webhook_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deals.len(), 30, "one CRM record per deal");
    assert_eq!(webhook_ids.len(), 30);
    assert!(
        events
            .iter()
            .all(|e| e["event"]["type"] == "project.submitted")
    );
}

#[tokio::test]
async fn sigterm_shuts_the_runner_down_gracefully_and_an_event_accepted_before_it_is_delivered_after_restart()
 {
    let dir = data_dir("sigterm");
    let port = free_port();
    let http = enerflo_sync::wire::client_builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let body = fixture("v2-deal.projectSubmitted.json");

    // GIVEN a runner whose Enerflo calls fail (sandbox rejects the key), holding an accepted event
    let mut first = spawn(&dir, port, "info", &sandbox_key(port, "wrong-key"));
    first.wait_listening(Duration::from_secs(20));
    assert_eq!(post_webhook(&http, port, body).await, 202);

    // WHEN it is sent SIGTERM (what supervisors, `docker stop` and `kill` send)
    let kill = Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    // THEN it logs its graceful shutdown and exits 0
    let (status, lines) = first.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "exit {status:?}; output: {lines:#?}"
    );
    let logged: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        logged
            .iter()
            .any(|l| l["signal"] == "SIGTERM" && l["message"] == "shutting down"),
        "the graceful shutdown is logged: {lines:#?}"
    );
    assert!(
        logged.iter().any(|l| l["message"] == "stopped"),
        "and its end: {lines:#?}"
    );

    // AND a restarted runner (with working sandbox credentials) delivers the event exactly once
    let mut second = started(&dir, port, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        last = inbox(&http, port).await;
        if last["count"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.kill();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(last["count"], 1, "delivered after the restart: {last}");
    assert_eq!(last["events"][0]["event"]["type"], "project.submitted");
}

#[tokio::test]
async fn a_second_runner_on_the_same_data_dir_exits_non_zero_naming_the_directory_as_in_use() {
    let dir = data_dir("in-use");
    let port = free_port();
    let http = enerflo_sync::wire::client();

    // GIVEN a runner on a data dir
    let mut first = spawn(&dir, port, "info", &[]);
    first.wait_listening(Duration::from_secs(20));

    // WHEN a second runner starts on the same data dir (on another port)
    let mut second = spawn(&dir, free_port(), "info", &[]);
    let (status, lines) = second.wait_exit(Duration::from_secs(20));

    // THEN it exits non-zero, saying the directory is in use and what to do
    let said = lines.join("\n");
    assert!(!status.success(), "the second runner must not run: {said}");
    assert!(
        said.contains(&format!(
            "DATA_DIR {} is in use by another process",
            dir.display()
        )),
        "names the directory as in use: {said}"
    );
    assert!(
        said.contains("stop the other runner")
            && said.contains("set DATA_DIR to another directory"),
        "says what to do: {said}"
    );
    // ... and the first runner is unharmed
    let answer = http
        .get(format!("http://127.0.0.1:{port}/crm-inbox/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Posts `body` to the webhook route of the runner on `port`; `None` when no answer came (the
/// runner stopped listening).
async fn try_post_webhook(http: &reqwest::Client, port: u16, body: String) -> Option<u16> {
    http.post(format!(
        "http://127.0.0.1:{port}/enerflo/webhooks/local-webhook-token"
    ))
    .body(body)
    .send()
    .await
    .ok()
    .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_then_restart_writes_every_accepted_event_exactly_once() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = data_dir("sigterm-mid-load");
    let port = free_port();
    let http = enerflo_sync::wire::client_builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let sample = fixture("v2-deal.projectSubmitted.json");
    let enerflo = slow_enerflo().await;

    // GIVEN a runner taking project submissions (distinct deals) from 4 posters, faster than its
    // workers get through them (Enerflo takes 100 ms per call)
    let mut first = started_against(&dir, port, &enerflo);
    let next = Arc::new(AtomicU64::new(1));
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut posters = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (http, sample, next, accepted) =
            (http.clone(), sample.clone(), next.clone(), accepted.clone());
        posters.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n > 2000 {
                    return;
                }
                let body = sample
                    .replace("00000000-0000-4000-8000-000000000010", &deal_id(n))
                    .replace("abc123xyz", &format!("sc{n:010}"))
                    .replace(
                        "00000000-0000-4000-8000-000000000003",
                        &format!("00000000-0000-4000-a000-{n:012}"),
                    );
                match try_post_webhook(&http, port, body).await {
                    Some(202) => accepted.lock().unwrap().push(deal_id(n)),
                    // Stopped listening: the runner is shutting down.
                    None => return,
                    Some(other) => panic!("webhook {n} answered {other}"),
                }
            }
        });
    }

    // WHEN it is sent SIGTERM once some events reached the CRM, while posts keep coming
    let deadline = Instant::now() + Duration::from_secs(30);
    let (written_at_term, accepted_at_term) = loop {
        let count = inbox(&http, port).await["count"].as_u64().unwrap_or(0);
        if count >= 5 {
            break (count as usize, accepted.lock().unwrap().len());
        }
        assert!(Instant::now() < deadline, "nothing reached the CRM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let kill = Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    while let Some(done) = posters.join_next().await {
        done.unwrap();
    }
    let (status, lines) = first.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "exit {status:?}; output: {lines:#?}"
    );
    assert!(
        written_at_term < accepted_at_term,
        "the SIGTERM came after the work was done ({written_at_term} of {accepted_at_term})"
    );
    let accepted: Vec<String> = accepted.lock().unwrap().clone();

    // THEN a restarted runner writes the rest: every accepted event reaches the CRM, once
    let mut second = started_against(&dir, port, &enerflo);
    let deadline = Instant::now() + Duration::from_secs(120);
    let seen = loop {
        let now = inbox(&http, port).await;
        if now["count"].as_u64().unwrap_or(0) as usize >= accepted.len() {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted events reached the CRM",
            now["count"],
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for e in seen["events"].as_array().unwrap() {
        assert_eq!(e["deliveries"], 1, "delivered more than once: {e}");
    }
    // ... and once it stopped with nothing left queued, nothing more can come
    Command::new("kill")
        .args(["-TERM", &second.child.id().to_string()])
        .status()
        .unwrap();
    let (status, lines) = second.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "exit {status:?}; output: {lines:#?}"
    );
    {
        let db = enerflo_sync::store::embedded::open_database(Some(&dir)).unwrap();
        let queue = enerflo_sync::queue::embedded::EmbeddedQueue::new(
            db,
            enerflo_sync_local::CONSUMER_STAGES.iter().copied(),
        );
        for stage in enerflo_sync_local::CONSUMER_STAGES {
            assert_eq!(
                queue.depth(*stage).unwrap(),
                0,
                "{stage} still holds messages"
            );
            assert!(queue.dead_letters(*stage).unwrap().is_empty(), "{stage}");
        }
    }
    let file = std::fs::read_to_string(dir.join("crm-inbox.jsonl")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let written: Vec<serde_json::Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let deals: std::collections::BTreeSet<String> = written
        .iter()
        .map(|e| {
            e["event"]["enerflo"]["deal_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(deals.len(), written.len(), "a deal was written twice");
    for deal in &accepted {
        assert!(
            deals.contains(deal),
            "accepted {deal} never reached the CRM"
        );
    }
    // A post cut off by the shutdown (one per poster at most) may have been queued without its
    // 202 reaching us.
    assert!(
        written.len() <= accepted.len() + 4,
        "{} written, {} accepted",
        written.len(),
        accepted.len()
    );
}
