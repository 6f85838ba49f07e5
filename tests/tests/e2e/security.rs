//! Security at the edges, through the local runner over HTTP: problem+json answers never echo a
//! credential, wherever the caller put it; a rotated `CRM_INBOUND_TOKEN` pair both work and
//! nothing else does; `/crm/*` bodies over `MAX_BODY_BYTES` are 413 and reach nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use enerflo_sync_local::LOCAL_CRM_TOKEN;
use http::Method;
use serde_json::{Value, json};
use sync_tests::enerflo::{LEAD_ADD, adds_leads};
use sync_tests::{Answer, Harness, TOKEN, start};

/// Both secrets of the harness: the webhook token and the CRM bearer.
const SECRETS: [&str; 2] = [TOKEN, LOCAL_CRM_TOKEN];

trait ProblemAnswer {
    /// Asserts a problem+json answer with `status` that quotes none of `secrets`.
    fn assert_problem_without(&self, status: u16, secrets: &[&str]);
}

impl ProblemAnswer for Answer {
    fn assert_problem_without(&self, status: u16, secrets: &[&str]) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.content_type, "application/problem+json",
            "{}",
            self.text
        );
        let body: Value = serde_json::from_str(&self.text).expect("problem+json body");
        assert_eq!(body["status"], status);
        for secret in secrets {
            assert!(
                !self.text.contains(secret),
                "the answer echoes a secret: {}",
                self.text
            );
        }
    }
}

fn lead(crm_id: &str) -> Value {
    json!({
        "crm_id": crm_id,
        "first_name": "Pat",
        "last_name": "Placeholder",
        "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX", "zip": "75001"},
        "email": "pat.placeholder@example.com",
        "mobile": "5550100000"
    })
}

async fn post(h: &Harness, route: &str, authorization: Option<&str>, body: String) -> Answer {
    h.request(Method::POST, route, authorization, body).await
}

#[tokio::test]
async fn a_webhook_with_the_wrong_token_in_the_path_and_the_right_one_in_the_body_is_404_without_either()
 {
    let h = start(&[]).await;
    // A near miss of the real token in the path, the real token and the bearer in the body.
    let near_miss = format!("{TOKEN}x");
    let body = json!({"webhook_event": "new_customer", "id": 1, "token": TOKEN,
                      "authorization": format!("Bearer {LOCAL_CRM_TOKEN}")});
    let answer = post(
        &h,
        &format!("/enerflo/webhooks/{near_miss}"),
        None,
        body.to_string(),
    )
    .await;
    answer.assert_problem_without(404, &[TOKEN, LOCAL_CRM_TOKEN, &near_miss]);
    assert_eq!(
        h.runner
            .queue
            .depth(enerflo_sync::classify::Stage::Leads)
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn malformed_and_unrecognisable_webhooks_carrying_secrets_are_400_without_them() {
    let h = start(&[]).await;
    let route = format!("/enerflo/webhooks/{TOKEN}");
    // Truncated JSON whose text holds both secrets.
    let truncated =
        format!("{{\"token\": \"{TOKEN}\", \"bearer\": \"{LOCAL_CRM_TOKEN}\", \"id\": ");
    post(&h, &route, None, truncated)
        .await
        .assert_problem_without(400, &SECRETS);
    // Valid JSON, but no envelope: the secrets sit where the event and its payload would be.
    let unrecognisable = json!({"event": TOKEN, "payload": LOCAL_CRM_TOKEN});
    post(&h, &route, None, unrecognisable.to_string())
        .await
        .assert_problem_without(400, &SECRETS);
    // Not even an object.
    post(
        &h,
        &route,
        None,
        json!([TOKEN, LOCAL_CRM_TOKEN]).to_string(),
    )
    .await
    .assert_problem_without(400, &SECRETS);
    assert_eq!(
        h.runner
            .queue
            .depth(enerflo_sync::classify::Stage::Leads)
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_lead_failing_validation_with_the_bearer_in_its_fields_is_422_without_either_secret() {
    let h = start(&[]).await;
    adds_leads(&h.enerflo, Duration::ZERO).await;
    // The bearer and the webhook token pasted into fields, each of which also fails validation.
    let mut body = lead(LOCAL_CRM_TOKEN);
    body["email"] = json!(format!("Bearer {LOCAL_CRM_TOKEN}"));
    body["first_name"] = json!(TOKEN.repeat(40));
    body["address"]["state"] = json!(TOKEN);
    body["address"]["zip"] = json!(LOCAL_CRM_TOKEN);
    let bearer = format!("Bearer {LOCAL_CRM_TOKEN}");
    let answer = post(&h, "/crm/leads", Some(&bearer), body.to_string()).await;
    answer.assert_problem_without(422, &SECRETS);
    let problem: Value = serde_json::from_str(&answer.text).unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    for field in ["email", "first_name", "address.state", "address.zip"] {
        assert!(fields.contains(&field), "{field} is named: {fields:?}");
    }
    assert_eq!(
        h.enerflo_calls(LEAD_ADD).await,
        0,
        "nothing reached Enerflo"
    );
}

#[tokio::test]
async fn bad_bearers_are_401_without_echoing_what_was_sent_or_the_real_token() {
    let h = start(&[]).await;
    adds_leads(&h.enerflo, Duration::ZERO).await;
    let body = lead("crm-lead-sec-1").to_string();
    let near_miss = format!("{LOCAL_CRM_TOKEN}x");
    for authorization in [
        Some(format!("Bearer {near_miss}")),
        Some(format!("Basic {LOCAL_CRM_TOKEN}")),
        Some(format!("Bearer {TOKEN}")),
        Some(LOCAL_CRM_TOKEN.to_owned()),
        None,
    ] {
        let answer = post(&h, "/crm/leads", authorization.as_deref(), body.clone()).await;
        answer.assert_problem_without(401, &[TOKEN, LOCAL_CRM_TOKEN, &near_miss]);
    }
    // The token in the query string authenticates nothing, and is not echoed either.
    let answer = post(
        &h,
        &format!("/crm/leads?access_token={LOCAL_CRM_TOKEN}"),
        None,
        body,
    )
    .await;
    answer.assert_problem_without(401, &SECRETS);
    assert_eq!(h.enerflo_calls(LEAD_ADD).await, 0);
}

#[tokio::test]
async fn both_values_of_a_rotated_crm_token_work_on_crm_leads_and_a_third_does_not() {
    const NEW: &str = "crm-token-new-3c9a51f0e27b4d68";
    const OLD: &str = "crm-token-old-a81d6e2f90c4b375";
    let h = start(&[("CRM_INBOUND_TOKEN", &format!("{NEW}, {OLD}"))]).await;
    adds_leads(&h.enerflo, Duration::ZERO).await;

    let new = post(
        &h,
        "/crm/leads",
        Some(&format!("Bearer {NEW}")),
        lead("crm-rot-1").to_string(),
    )
    .await;
    let old = post(
        &h,
        "/crm/leads",
        Some(&format!("Bearer {OLD}")),
        lead("crm-rot-2").to_string(),
    )
    .await;
    assert_eq!(
        (new.status, old.status),
        (201, 201),
        "{} / {}",
        new.text,
        old.text
    );

    // A third value, the local default, and the pair itself are refused.
    for third in [
        "crm-token-3rd-0000000000000000",
        LOCAL_CRM_TOKEN,
        &format!("{NEW},{OLD}"),
    ] {
        let answer = post(
            &h,
            "/crm/leads",
            Some(&format!("Bearer {third}")),
            lead("crm-rot-3").to_string(),
        )
        .await;
        answer.assert_problem_without(401, &[NEW, OLD]);
    }
    assert_eq!(
        h.enerflo_calls(LEAD_ADD).await,
        2,
        "one lead/add per accepted call"
    );
}

#[tokio::test]
async fn a_crm_body_over_max_body_bytes_is_413_problem_json_on_every_crm_route_and_reaches_nothing()
{
    let h = start(&[("MAX_BODY_BYTES", "2048")]).await;
    adds_leads(&h.enerflo, Duration::ZERO).await;
    let bearer = format!("Bearer {LOCAL_CRM_TOKEN}");
    let mut big = lead("crm-lead-big");
    big["notes"] = json!("x".repeat(4096));
    let big = big.to_string();

    let answer = post(&h, "/crm/leads", Some(&bearer), big.clone()).await;
    answer.assert_problem_without(413, &SECRETS);
    for (verb, route) in [
        ("PUT", "/crm/installs/enerflo:700001/status"),
        ("PUT", "/crm/installs/enerflo:700001/milestones/3905"),
        ("POST", "/crm/installs/enerflo:700001/notes"),
    ] {
        let resp = h
            .http
            .request(verb.parse().unwrap(), h.runner.url(route))
            .header("authorization", &bearer)
            .body(big.clone())
            .send()
            .await
            .unwrap();
        Answer::of(resp).await.assert_problem_without(413, &SECRETS);
    }
    // Without credentials too: the size is checked before the token, locally as in Lambda.
    post(&h, "/crm/leads", None, big)
        .await
        .assert_problem_without(413, &SECRETS);
    assert!(
        h.enerflo.received_requests().await.unwrap().is_empty(),
        "nothing reached Enerflo"
    );

    // A body under the limit is served.
    let small = post(
        &h,
        "/crm/leads",
        Some(&bearer),
        lead("crm-lead-small").to_string(),
    )
    .await;
    assert_eq!(small.status, 201, "{}", small.text);
}
