//! A webhook that got a 202 survives `kill -9` of the local runner and is delivered after a
//! restart: the embedded queue commits before the answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(data_dir: &std::path::Path, port: u16, enerflo_key: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_enerflo-sync-local"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(key) = enerflo_key {
        // A wrong key makes the sandbox answer 401, so nothing is delivered before the kill.
        cmd.env("ENERFLO_API_KEY", key).env(
            "ENERFLO_BASE_URL",
            format!("http://127.0.0.1:{port}/sandbox/enerflo"),
        );
    }
    let mut child = cmd.spawn().expect("runner starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(Ok(line)) = lines.next()
            && line.contains("listening on")
        {
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("runner did not start");
}

#[tokio::test]
async fn an_accepted_webhook_survives_kill_9_and_is_delivered_after_restart() {
    let dir =
        std::env::temp_dir().join(format!("durability-{}-{}", std::process::id(), free_port()));
    let port = free_port();
    // No pooled connections: the second runner listens on the port the killed one used.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/enerflo/v2-deal.projectSubmitted.json"
    ))
    .unwrap();

    // GIVEN a runner whose Enerflo calls fail (sandbox rejects the key), so the event stays queued
    let mut first = spawn(&dir, port, Some("wrong-key"));
    let resp = http
        .post(format!(
            "http://127.0.0.1:{port}/enerflo/webhooks/local-webhook-token"
        ))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    // WHEN it is killed without any chance to clean up
    first.kill().unwrap();
    first.wait().unwrap();

    // THEN a restarted runner (with working sandbox credentials) delivers it to the CRM inbox
    let mut second = spawn(&dir, port, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut count = 0;
    while Instant::now() < deadline {
        let inbox: serde_json::Value = http
            .get(format!("http://127.0.0.1:{port}/crm-inbox/events"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        count = inbox["count"].as_u64().unwrap_or(0);
        if count > 0 {
            assert_eq!(inbox["events"][0]["event"]["type"], "project.submitted");
            assert_eq!(inbox["rejected"], 0, "the inbox verified the signature");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.kill().unwrap();
    second.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        count, 1,
        "the accepted event reached the CRM exactly once after the restart"
    );
}
