//! The webhook route's edge behaviour over real HTTP: tokens, malformed bodies, size limits,
//! unknown events, problem+json.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use sync_tests::{TOKEN, fixture, start};

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
    assert!(
        h.runner
            .ports
            .log
            .for_entity("deal:d-big", 5)
            .await
            .unwrap()
            .is_empty()
    );
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
