//! The webhook route's edge behaviour over real HTTP: tokens, malformed bodies, size limits,
//! unknown events, problem+json.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use sync_tests::crm::crm_accepts;
use sync_tests::enerflo::{SAMPLE_DEAL, finds_installs};
use sync_tests::{TOKEN, fixture, fixture_json, start};

/// `MAX_BODY_BYTES` by default: the README's and the template's 1 MiB.
const MAX_BODY_BYTES: usize = 1_048_576;
const DEAL: &str = SAMPLE_DEAL;

#[tokio::test]
async fn a_wrong_token_is_404_problem_json_and_enqueues_nothing() {
    let h = start(&[]).await;
    let resp = h
        .http
        .post(h.runner.url("/enerflo/webhooks/not-the-token"))
        .body(fixture("v2-deal.projectSubmitted.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], 404);
    assert!(!body.to_string().contains(TOKEN));
    assert_eq!(
        h.runner
            .queue
            .depth(enerflo_sync::classify::Stage::Project)
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_rotated_pair_of_tokens_both_work_during_rotation() {
    let h = start(&[(
        "WEBHOOK_TOKEN",
        "new-token-aaaaaaaaaaaaaaaa,old-token-bbbbbbbbbbbbbbbb",
    )])
    .await;
    let body = json!({"webhook_event": "new_appointment", "id": 1}).to_string();
    assert_eq!(
        h.post_webhook_with_token("new-token-aaaaaaaaaaaaaaaa", body.clone())
            .await
            .0,
        202
    );
    assert_eq!(
        h.post_webhook_with_token("old-token-bbbbbbbbbbbbbbbb", body.clone())
            .await
            .0,
        202
    );
    assert_eq!(
        h.post_webhook_with_token("new-token-aaaaaaaaaaaaaaa", body)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn malformed_json_is_400_problem_json() {
    let h = start(&[]).await;
    let (status, body) = h
        .post_webhook("{\"event\": \"deal.projectSubmitted\", ")
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["type"],
        "urn:enerflo-crm-sync:problem:malformed-request"
    );
    assert!(body["detail"].as_str().unwrap().contains("not valid JSON"));
}

#[tokio::test]
async fn an_unrecognisable_envelope_is_400_naming_what_is_expected() {
    let h = start(&[]).await;
    let (status, body) = h.post_webhook(json!({"hello": "world"}).to_string()).await;
    assert_eq!(status, 400);
    assert!(
        body["detail"].as_str().unwrap().contains("webhook_event"),
        "{body}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_not_logged() {
    let h = start(&[("MAX_BODY_BYTES", "4096")]).await;
    let big = json!({"event": "deal.projectSubmitted", "payload": {"deal": {"id": "d-big"}, "pad": "x".repeat(5000)}});
    let (status, body) = h.post_webhook(big.to_string()).await;
    assert_eq!(status, 413);
    assert_eq!(body["status"], 413);
    assert!(h.event_log("deal:d-big").await.is_empty());
}

#[tokio::test]
async fn an_event_no_stage_handles_is_202_ignored_and_still_logged() {
    let h = start(&[]).await;
    let body = json!({"webhook_event": "new_appointment", "id": 31337});
    let (status, answer) = h.post_webhook(body.to_string()).await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")));
    let key = enerflo_sync::http::webhook::dedupe_key("new_appointment", None, &body);
    let logged = h.runner.ports.log.get(&key).await.unwrap().expect("logged");
    assert_eq!(logged.outcome, "ignored");
    assert_eq!(logged.raw_body, body.to_string());
}

#[tokio::test]
async fn every_routed_event_is_kept_in_the_event_log_with_its_raw_body_and_entity() {
    let h = start(&[]).await;
    let body = fixture("v1-update_install.json");
    let (status, answer) = h.post_webhook(body.clone()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["stage"], "status");
    let key = answer["dedupe_key"].as_str().unwrap();
    let logged = h.runner.ports.log.get(key).await.unwrap().expect("logged");
    assert_eq!(logged.raw_body, body);
    assert_eq!(logged.entity.as_deref(), Some("install:700001"));
}

#[tokio::test]
async fn an_unknown_route_is_404_and_a_wrong_method_is_405() {
    let h = start(&[]).await;
    let resp = h.http.get(h.runner.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let resp = h
        .http
        .get(h.runner.url(&format!("/enerflo/webhooks/{TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// The sample project submission with a string field (`payload.deal.padding`) of `pad(n)` (`n`
/// ASCII characters, none needing a JSON escape) making the body exactly `len` bytes.
fn submission_of_len(len: usize, pad: impl Fn(usize) -> String) -> String {
    let mut body = fixture_json("v2-deal.projectSubmitted.json");
    body["payload"]["deal"]["padding"] = json!("");
    let bare = body.to_string().len();
    body["payload"]["deal"]["padding"] = json!(pad(len - bare));
    let text = body.to_string();
    assert_eq!(text.len(), len);
    text
}

fn compressible(n: usize) -> String {
    "x".repeat(n)
}

/// `n` printable ASCII characters other than `"` and `\\`, from a fixed pseudo-random sequence:
/// text that gzip barely shrinks.
fn incompressible(n: usize) -> String {
    let alphabet: Vec<char> = (' '..='~').filter(|c| !matches!(c, '"' | '\\')).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize]
        })
        .collect()
}

#[tokio::test]
async fn a_body_of_exactly_max_body_bytes_is_accepted_and_reaches_the_crm_intact() {
    // GIVEN the default limit, and an Enerflo and a CRM that work (the CRM gets the raw payload)
    let h = start(&[("CRM_INCLUDE_RAW", "true")]).await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, "crm-big-1").await;
    let body = submission_of_len(MAX_BODY_BYTES, compressible);

    // WHEN a project submission of exactly MAX_BODY_BYTES arrives
    let (status, answer) = h.post_webhook(body.clone()).await;

    // THEN it is queued, logged as it came, and delivered to the CRM with its body intact
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("queued")),
        "{answer}"
    );
    let logged = h
        .runner
        .ports
        .log
        .get(answer["dedupe_key"].as_str().unwrap())
        .await
        .unwrap()
        .expect("logged");
    assert_eq!(logged.raw_body, body);
    h.drain(Duration::from_secs(30)).await;
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1, "one CRM event");
    assert_eq!(events[0]["type"], "project.submitted");
    let sent: Value = serde_json::from_str(&body).unwrap();
    assert!(
        events[0]["raw"]["webhook"] == sent,
        "the CRM got the body as it was posted"
    );
}

#[tokio::test]
async fn a_body_one_byte_over_max_body_bytes_is_413_naming_the_limit() {
    let h = start(&[]).await;
    let (status, answer) = h
        .post_webhook(submission_of_len(MAX_BODY_BYTES + 1, compressible))
        .await;
    assert_eq!(status, 413);
    assert_eq!(
        answer["type"],
        "urn:enerflo-crm-sync:problem:body-too-large"
    );
    assert!(
        answer["detail"].as_str().unwrap().contains("1048576"),
        "{answer}"
    );
    assert!(h.event_log(&format!("deal:{DEAL}")).await.is_empty());
}

#[tokio::test]
async fn a_body_within_the_limit_that_no_queue_message_holds_even_compressed_is_413_and_leaves_nothing_behind()
 {
    let h = start(&[]).await;
    // GIVEN a body of MAX_BODY_BYTES that gzip cannot shrink enough to fit with its attributes
    let body = submission_of_len(MAX_BODY_BYTES, incompressible);

    // WHEN it arrives
    let (status, answer) = h.post_webhook(body.clone()).await;

    // THEN it is refused with a 413 naming the queue's limit
    assert_eq!(status, 413, "{answer}");
    assert_eq!(
        answer["type"],
        "urn:enerflo-crm-sync:problem:body-too-large"
    );
    assert!(
        answer["detail"].as_str().unwrap().contains("1048576"),
        "{answer}"
    );
    // ... and nothing was written: no event log record, no message, no claim on its dedupe key
    assert!(h.event_log(&format!("deal:{DEAL}")).await.is_empty());
    assert_eq!(
        h.runner
            .queue
            .depth(enerflo_sync::classify::Stage::Project)
            .unwrap(),
        0
    );
    let key = enerflo_sync::http::webhook::dedupe_key(
        "deal.projectSubmitted",
        Some(&format!("deal:{DEAL}")),
        &serde_json::from_str(&body).unwrap(),
    );
    assert!(
        matches!(
            h.runner
                .ports
                .claims
                .claim(&format!("webhook#{key}"), 30, 60)
                .await
                .unwrap(),
            enerflo_sync::store::Claim::Acquired
        ),
        "no claim left behind on {key}"
    );
}
