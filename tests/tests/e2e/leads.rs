//! Stage 1 end to end, through the local runner over HTTP: `POST /crm/leads` -> lead/add
//! (wiremock Enerflo, or the runner's own sandbox), and customer webhooks -> `lead.upserted`
//! (wiremock CRM), including the CRM -> Enerflo -> CRM echo.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use sync_tests::crm::crm_accepts;
use sync_tests::enerflo::{LEAD_ADD, adds_leads, lead_add_bodies};
use sync_tests::{Answer, Harness, fixture, fixture_json, join_all, start, start_with_sandbox};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const UUID: &str = "00000000-0000-4000-8000-000000000003";

fn lead() -> Value {
    json!({
        "crm_id": "crm-lead-0001",
        "first_name": "Pat",
        "last_name": "Placeholder",
        "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX", "zip": "75001"},
        "email": "pat.placeholder@example.com",
        "mobile": "5550100000",
        "rep_email": "closer@example.com",
        "setter_email": "setter@example.com",
        "lead_source": "CRM"
    })
}

async fn post_lead_with(h: &Harness, authorization: Option<&str>, body: &Value) -> Answer {
    h.request(Method::POST, "/crm/leads", authorization, body.to_string())
        .await
}

async fn post_lead(h: &Harness, body: &Value) -> Answer {
    h.crm_call(Method::POST, "/crm/leads", body.clone()).await
}

// ----- CRM -> Enerflo ---------------------------------------------------------------------------

#[tokio::test]
async fn invalid_lead_answers_422_naming_every_bad_field_and_calls_no_enerflo() {
    let h = start(&[]).await;
    adds_leads(&h.enerflo, Duration::ZERO).await;
    let bad = json!({"crm_id": "", "first_name": "Pat",
        "address": {"street": "1 Example Way", "city": "Exampleville", "state": "Texas", "zip": "7500X"},
        "email": "pat.placeholder@", "mobile": "5550100000"});

    let a = post_lead(&h, &bad).await;

    assert_eq!(a.status, 422, "{}", a.body);
    assert_eq!(a.content_type, "application/problem+json");
    let fields: Vec<&str> = a.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "crm_id",
            "last_name",
            "address.state",
            "address.zip",
            "email"
        ]
    );
    assert!(
        !a.body.to_string().contains("Texas") && !a.body.to_string().contains("pat.placeholder"),
        "no customer data in the error: {}",
        a.body
    );
    assert_eq!(h.enerflo_calls("/").await, 0);
}

#[tokio::test]
async fn missing_or_wrong_bearer_is_401_and_calls_no_enerflo() {
    let h = start(&[]).await;
    adds_leads(&h.enerflo, Duration::ZERO).await;
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some("Basic bG9jYWwtY3JtLXRva2Vu"),
        Some("Bearer"),
    ] {
        let a = post_lead_with(&h, auth, &lead()).await;
        assert_eq!(a.status, 401, "{auth:?}: {}", a.body);
        assert_eq!(a.content_type, "application/problem+json");
    }
    assert_eq!(h.enerflo_calls("/").await, 0);
}

#[tokio::test]
async fn a_new_lead_is_created_in_enerflo_and_answers_201_with_the_customer_id() {
    let h = start(&[]).await;
    adds_leads(&h.enerflo, Duration::ZERO).await;
    let mut body = lead();
    body["deal_type_id"] = json!(12);
    body["notes"] = json!("Prefers mornings");

    let a = post_lead(&h, &body).await;

    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"status": "created", "crm_id": "crm-lead-0001",
            "enerflo_customer_id": 900001, "created": true})
    );
    let sent = lead_add_bodies(&h.enerflo).await;
    assert_eq!(sent.len(), 1);
    let mut expected = fixture_json("api-lead-add.request.json");
    expected["lead"]["createDeal"] = json!(12);
    expected["lead"]["notes"] = json!("Prefers mornings");
    assert_eq!(sent[0], expected);
    let request = &h.enerflo.received_requests().await.unwrap()[0];
    assert_eq!(request.headers["api-key"], "fake-enerflo-key");
}

#[tokio::test]
async fn repeated_posts_with_one_crm_id_create_one_enerflo_lead() {
    let h = start(&[]).await;
    adds_leads(&h.enerflo, Duration::ZERO).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let a = post_lead(&h, &lead()).await;
        answers.push((
            a.status,
            a.body["created"].clone(),
            a.body["enerflo_customer_id"].clone(),
        ));
    }
    assert_eq!(
        answers,
        [
            (201, json!(true), json!(900001)),
            (200, json!(false), json!(900001)),
            (200, json!(false), json!(900001))
        ]
    );
    assert_eq!(h.enerflo_calls(LEAD_ADD).await, 1);
}

#[tokio::test]
async fn concurrent_posts_with_one_crm_id_create_one_enerflo_lead() {
    let h = start(&[]).await;
    adds_leads(&h.enerflo, Duration::from_millis(400)).await;
    let body = lead();
    let answers = join_all((0..6).map(|_| post_lead(&h, &body))).await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 201]);
    for a in &answers {
        assert_eq!(a.body["enerflo_customer_id"], 900001, "{}", a.body);
    }
    assert_eq!(h.enerflo_calls(LEAD_ADD).await, 1);
}

#[tokio::test]
async fn a_changed_lead_is_sent_as_an_update_of_the_same_enerflo_lead() {
    let h = start(&[]).await;
    adds_leads(&h.enerflo, Duration::ZERO).await;
    assert_eq!(post_lead(&h, &lead()).await.status, 201);
    let mut changed = lead();
    changed["email"] = json!("pat.new@example.com");

    let a = post_lead(&h, &changed).await;

    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], "updated");
    assert_eq!(a.body["created"], false);
    let sent = lead_add_bodies(&h.enerflo).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1]["lead"]["integration_record_id"], "crm-lead-0001");
    assert_eq!(sent[1]["lead"]["email"], "pat.new@example.com");
}

#[tokio::test]
async fn enerflo_429_answers_429_with_its_retry_after_and_links_nothing() {
    let h = start(&[]).await;
    Mock::given(method("POST"))
        .and(path(LEAD_ADD))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "41")
                .insert_header("content-type", "text/html; charset=UTF-8")
                .set_body_string("<!DOCTYPE html><html><body>Too many requests</body></html>"),
        )
        .mount(&h.enerflo)
        .await;

    let a = post_lead(&h, &lead()).await;

    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.retry_after.as_deref(), Some("41"));
    assert_eq!(a.content_type, "application/problem+json");
    assert_eq!(
        h.enerflo_calls(LEAD_ADD).await,
        1,
        "a 41 s wait exceeds the inbound budget: no retry inside the request"
    );
    let link = h
        .runner
        .ports
        .xref
        .resolve(
            enerflo_sync::store::EntityKind::Customer,
            &enerflo_sync::store::IdRef::new(
                enerflo_sync::store::IdForm::Integration,
                "crm-lead-0001",
            ),
        )
        .await
        .unwrap();
    assert!(
        link.and_then(|l| l.id(enerflo_sync::store::IdForm::CustomerId))
            .is_none()
    );
}

#[tokio::test]
async fn enerflo_5xx_is_retried_then_answers_502_with_retry_after() {
    let h = start(&[]).await;
    Mock::given(method("POST"))
        .and(path(LEAD_ADD))
        .respond_with(
            ResponseTemplate::new(503).set_body_string("<html>Service Unavailable</html>"),
        )
        .mount(&h.enerflo)
        .await;

    let a = post_lead(&h, &lead()).await;

    assert_eq!(a.status, 502, "{}", a.body);
    assert!(a.retry_after.is_some());
    assert!(
        h.enerflo_calls(LEAD_ADD).await >= 2,
        "retried within the budget"
    );
}

#[tokio::test]
async fn an_enerflo_5xx_then_success_creates_the_lead_once() {
    let h = start(&[]).await;
    Mock::given(method("POST"))
        .and(path(LEAD_ADD))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&h.enerflo)
        .await;
    adds_leads(&h.enerflo, Duration::ZERO).await;

    let a = post_lead(&h, &lead()).await;

    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(h.enerflo_calls(LEAD_ADD).await, 2);
}

#[tokio::test]
async fn enerflo_timing_out_answers_503_with_retry_after() {
    let h = start(&[("INBOUND_WAIT_SECS", "3")]).await;
    adds_leads(&h.enerflo, Duration::from_secs(4)).await;

    let a = post_lead(&h, &lead()).await;

    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.retry_after.is_some());
}

#[tokio::test]
async fn enerflo_4xx_rejection_answers_422_with_its_reason_as_text() {
    let h = start(&[]).await;
    Mock::given(method("POST"))
        .and(path(LEAD_ADD))
        .respond_with(
            ResponseTemplate::new(422)
                .set_body_json(json!({"message": "The assign to email must be a valid user."})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&h.enerflo)
        .await;
    Mock::given(method("POST"))
        .and(path(LEAD_ADD))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("content-type", "text/html")
                .set_body_string(
                    "<html><head><style>h1{}</style></head><body><h1>Bad Request</h1><p>Missing lead.</p></body></html>",
                ),
        )
        .mount(&h.enerflo)
        .await;

    let json_reason = post_lead(&h, &lead()).await;
    let html_reason = post_lead(&h, &lead()).await;

    assert_eq!(json_reason.status, 422, "{}", json_reason.body);
    assert!(
        json_reason.body["detail"]
            .as_str()
            .unwrap()
            .contains("The assign to email must be a valid user."),
        "{}",
        json_reason.body
    );
    assert_eq!(html_reason.status, 422, "{}", html_reason.body);
    let detail = html_reason.body["detail"].as_str().unwrap();
    assert!(detail.contains("Bad Request Missing lead."), "{detail}");
    assert!(!detail.contains('<'), "{detail}");
    assert_eq!(h.enerflo_calls(LEAD_ADD).await, 2, "4xx is not retried");
}

// ----- Enerflo -> CRM ---------------------------------------------------------------------------

/// Delivers one webhook body to a fresh runner and returns the CRM events it caused.
async fn crm_events_for(bodies: &[String]) -> Vec<Value> {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-contact-1").await;
    for body in bodies {
        let (status, answer) = h.post_webhook(body.clone()).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["stage"], "leads", "{answer}");
        h.drain(Duration::from_secs(10)).await;
    }
    h.settle().await;
    h.crm_events().await
}

fn full_v1_lead(zip: &str, lat: f64, lng: f64, timezone: &str) -> Value {
    json!({"first_name": "Pat", "last_name": "Placeholder",
        "email": "pat.placeholder@example.com", "phone": "(555) 010-0000",
        "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX",
            "zip": zip, "country": null, "lat": lat, "lng": lng},
        "lead_source": null, "timezone": timezone, "owner": null})
}

#[tokio::test]
async fn v1_new_customer_reaches_the_crm_as_lead_upserted() {
    let events = crm_events_for(&[fixture("v1-new_customer.json")]).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["type"], "lead.upserted");
    assert_eq!(e["source_event"], "new_customer");
    assert_eq!(e["crm_id"], Value::Null);
    assert_eq!(e["enerflo"]["customer_id"], 900001);
    assert_eq!(e["occurred_at"], "2025-01-01T12:00:00Z");
    assert_eq!(
        e["data"],
        full_v1_lead("75001", 32.0, -97.0, "America/Chicago")
    );
}

#[tokio::test]
async fn v1_update_customer_reaches_the_crm_as_lead_upserted() {
    let mut body = fixture_json("v1-update_customer.json");
    body["address"]["zip"] = json!(1234);
    body["address"]["state"] = json!("MA");
    body["address"]["latitude"] = json!("42.36010000");
    body["address"]["longitude"] = json!("-71.05890000");
    let events = crm_events_for(&[body.to_string()]).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["source_event"], "update_customer");
    assert_eq!(e["enerflo"]["customer_id"], 900001);
    assert_eq!(e["occurred_at"], "2025-01-02T09:30:00Z");
    assert_eq!(e["data"]["address"]["zip"], "01234", "zero-padded string");
    assert_eq!(e["data"]["address"]["lat"], 42.3601, "number from a string");
    assert_eq!(e["data"]["address"]["lng"], -71.0589);
}

#[tokio::test]
async fn v2_customer_created_reaches_the_crm_as_lead_upserted() {
    let events = crm_events_for(&[fixture("v2-customer.created.json")]).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["source_event"], "customer.created");
    assert_eq!(e["enerflo"]["customer_uuid"], UUID);
    assert_eq!(e["enerflo"]["customer_id"], Value::Null);
    assert_eq!(
        e["data"],
        json!({"first_name": "Pat", "last_name": "Placeholder",
            "email": "pat.placeholder@example.com", "phone": "5550100000",
            "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX",
                "zip": "75001", "country": null, "lat": null, "lng": null},
            "lead_source": null, "timezone": null, "owner": null})
    );
}

#[tokio::test]
async fn v2_customer_updated_reaches_the_crm_as_lead_upserted_with_the_current_values() {
    let events = crm_events_for(&[fixture("v2-customer.updated.v2.json")]).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["source_event"], "customer.updated.v2");
    assert_eq!(e["enerflo"]["customer_uuid"], UUID);
    assert_eq!(e["data"]["email"], "pat.placeholder@example.com");
}

#[tokio::test]
async fn customer_updated_v2_pushes_only_when_a_mapped_field_changed() {
    let created = fixture("v2-customer.created.json");
    let same = fixture("v2-customer.updated.v2.json");
    let mut unmapped = fixture_json("v2-customer.updated.v2.json");
    unmapped["payload"]["current"]["status"] = json!("INACTIVE");
    unmapped["payload"]["changes"] = json!({"status": "INACTIVE"});
    let mut phone = fixture_json("v2-customer.updated.v2.json");
    phone["payload"]["current"]["phone"] = json!("5550109999");
    phone["payload"]["current"]["mobile"] = json!("5550109999");

    let events = crm_events_for(&[created, same, unmapped.to_string(), phone.to_string()]).await;

    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[1]["source_event"], "customer.updated.v2");
    assert_eq!(events[1]["data"]["phone"], "5550109999");
    assert_eq!(
        events[1]["crm_id"], "crm-contact-1",
        "updates the linked contact"
    );
}

fn near_empty_created() -> String {
    let mut v = fixture_json("v2-customer.created.json");
    let c = &mut v["payload"]["customer"];
    for k in ["firstName", "lastName", "email", "phone", "mobile", "tz"] {
        c[k] = Value::Null;
    }
    c["address"] = json!({"line1": null, "line2": null, "line3": null, "city": null,
        "state": null, "country": null, "postalCode": null, "lat": null, "lng": null,
        "fullAddress": null});
    v.to_string()
}

/// A full copy that differs from the fixture in bytes only (so the webhook does not drop it as
/// a duplicate delivery).
fn full_created_again() -> String {
    let mut v = fixture_json("v2-customer.created.json");
    v["payload"]["customer"]
        .as_object_mut()
        .unwrap()
        .remove("integrationIds");
    v.to_string()
}

async fn burst(bodies: [String; 3]) -> Vec<Value> {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-contact-1").await;
    for body in bodies {
        let (status, answer) = h.post_webhook(body).await;
        assert_eq!(status, 202, "{answer}");
    }
    h.settle().await;
    h.crm_events().await
}

#[tokio::test]
async fn customer_created_burst_with_a_near_empty_first_copy_writes_the_crm_once_with_full_data() {
    let events = burst([
        near_empty_created(),
        fixture("v2-customer.created.json"),
        full_created_again(),
    ])
    .await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["data"]["email"], "pat.placeholder@example.com");
    assert_eq!(events[0]["data"]["first_name"], "Pat");
    assert_eq!(events[0]["data"]["address"]["zip"], "75001");
}

#[tokio::test]
async fn customer_created_burst_with_a_near_empty_middle_copy_writes_the_crm_once_with_full_data() {
    let events = burst([
        fixture("v2-customer.created.json"),
        near_empty_created(),
        full_created_again(),
    ])
    .await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["data"]["email"], "pat.placeholder@example.com");
    assert_eq!(events[0]["data"]["last_name"], "Placeholder");
}

// ----- Both ways ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_crm_lead_echoing_back_from_enerflo_produces_no_crm_write() {
    // GIVEN a lead created in Enerflo from the CRM
    let h = start(&[]).await;
    adds_leads(&h.enerflo, Duration::ZERO).await;
    crm_accepts(&h.crm, "crm-lead-0001").await;
    assert_eq!(post_lead(&h, &lead()).await.status, 201);

    // WHEN Enerflo fires its customer events for it (v1 with the integration id, v2 without)
    let mut v1 = fixture_json("v1-new_customer.json");
    v1["external_id"] = json!("crm-lead-0001");
    assert_eq!(h.post_webhook(v1.to_string()).await.0, 202);
    assert_eq!(
        h.post_webhook(fixture("v2-customer.created.json")).await.0,
        202
    );
    h.settle().await;

    // THEN the CRM gets nothing back
    assert_eq!(h.crm_events().await.len(), 0);
    let log = h.event_log("customer:900001").await;
    assert_eq!(log[0].outcome, "echo", "{log:#?}");

    // ... while a real change made in Enerflo later updates the CRM record the lead came from
    let mut changed = fixture_json("v1-update_customer.json");
    changed["external_id"] = json!("crm-lead-0001");
    changed["email"] = json!("pat.new@example.com");
    assert_eq!(h.post_webhook(changed.to_string()).await.0, 202);
    h.settle().await;
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["crm_id"], "crm-lead-0001");
    assert_eq!(events[0]["data"]["email"], "pat.new@example.com");
    assert_eq!(events[0]["enerflo"]["customer_id"], 900001);
    assert_eq!(events[0]["enerflo"]["customer_uuid"], UUID);
}

#[tokio::test]
async fn the_crm_sending_back_a_lead_we_pushed_answers_echo_without_calling_enerflo() {
    // GIVEN an Enerflo customer pushed to the CRM, which answered contact crm-contact-77
    let h = start(&[]).await;
    adds_leads(&h.enerflo, Duration::ZERO).await;
    crm_accepts(&h.crm, "crm-contact-77").await;
    assert_eq!(h.post_webhook(fixture("v1-new_customer.json")).await.0, 202);
    h.settle().await;
    assert_eq!(h.crm_events().await.len(), 1);

    // WHEN the CRM's automation sends that contact to POST /crm/leads
    let mut back = lead();
    back["crm_id"] = json!("crm-contact-77");
    back["mobile"] = json!("(555) 010-0000");
    let a = post_lead(&h, &back).await;

    // THEN it is recognised as our own write: no lead/add
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], "echo");
    assert_eq!(a.body["enerflo_customer_id"], 900001);
    assert_eq!(h.enerflo_calls(LEAD_ADD).await, 0);
}

#[tokio::test]
async fn sandbox_round_trip_creates_one_lead_and_its_echo_writes_the_crm_nothing() {
    // GIVEN the runner on its own Enerflo sandbox, which fires new_customer after lead/add
    let h = start_with_sandbox(&[]).await;
    crm_accepts(&h.crm, "crm-lead-0001").await;
    let sandbox = h.runner.sandbox.clone().unwrap();

    // WHEN the CRM posts a lead, twice
    let first = post_lead(&h, &lead()).await;
    let again = post_lead(&h, &lead()).await;

    // THEN Enerflo (the sandbox) has one lead, and its echo is recognised
    assert_eq!(first.status, 201, "{}", first.body);
    let id = first.body["enerflo_customer_id"].as_u64().unwrap();
    assert_eq!(
        (again.status, again.body["status"].as_str()),
        (200, Some("unchanged"))
    );
    let entity = format!("customer:{id}");
    let outcome = h.final_outcome(&entity, "new_customer").await;
    assert!(
        matches!(outcome.as_deref(), Some("echo" | "unchanged")),
        "the sandbox's new_customer must be recognised as our write: {outcome:?}"
    );
    let lead_adds = sandbox
        .calls()
        .iter()
        .filter(|c| c.contains("lead/add"))
        .count();
    assert_eq!(lead_adds, 1);

    // WHEN the CRM changes the lead: an update of the same Enerflo lead, whose echo is ours too
    let mut changed = lead();
    changed["email"] = json!("pat.new@example.com");
    let update = post_lead(&h, &changed).await;
    assert_eq!(
        (update.status, update.body["enerflo_customer_id"].as_u64()),
        (200, Some(id))
    );
    let outcome = h.final_outcome(&entity, "update_customer").await;
    assert!(
        matches!(outcome.as_deref(), Some("echo" | "unchanged")),
        "{outcome:?}"
    );
    h.settle().await;
    assert_eq!(h.crm_events().await.len(), 0);
}
