//! Stage 2 end to end: webhook -> local runner -> installs/find (wiremock Enerflo) -> signed
//! CRM webhook (wiremock CRM).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use enerflo_sync::classify::Stage;
use serde_json::{Value, json};
use sync_tests::crm::crm_accepts;
use sync_tests::enerflo::{SAMPLE_DEAL, finds_installs};
use sync_tests::{fixture, fixture_json, join_all, start};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

const DEAL: &str = SAMPLE_DEAL;

fn submitted() -> String {
    fixture("v2-deal.projectSubmitted.json")
}

#[tokio::test]
async fn sample_submission_reaches_the_crm_as_a_hydrated_project_event() {
    // GIVEN Enerflo knows the install and the CRM accepts events
    let h = start(&[]).await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, "crm-proj-1").await;

    // WHEN the sample project submission is delivered
    let (status, body) = h.post_webhook(submitted()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["stage"], "project");
    h.drain(Duration::from_secs(10)).await;

    // THEN the CRM received one project.submitted with the mapped and hydrated fields
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["type"], "project.submitted");
    assert_eq!(e["source_event"], "deal.projectSubmitted");
    assert_eq!(e["crm_id"], Value::Null);
    assert_eq!(e["enerflo"]["deal_id"], DEAL);
    assert_eq!(e["enerflo"]["install_id"], 700001);
    assert_eq!(e["enerflo"]["survey_id"], 4000001);
    assert_eq!(e["data"]["system"]["panel_count"], 20);
    assert_eq!(e["data"]["system"]["panel"]["name"], "405W Example Module");
    assert_eq!(e["data"]["address"]["zip"], "75001");
    assert_eq!(
        e["data"]["customer"]["email"], "pat.placeholder@example.com",
        "hydrated from installs/find"
    );
    assert_eq!(e["data"]["resubmission"], false);
    assert!(e.get("raw").is_none(), "raw only with CRM_INCLUDE_RAW=true");
    assert_eq!(h.enerflo_calls("/api/v3/installs/find/").await, 1);
    // ... and the CRM id it answered is linked to every id form of the project
    let link = h
        .runner
        .ports
        .xref
        .resolve(
            enerflo_sync::store::EntityKind::Project,
            &enerflo_sync::store::IdRef::new(enerflo_sync::store::IdForm::Install, 700001),
        )
        .await
        .unwrap()
        .expect("linked");
    assert_eq!(link.crm_id.as_deref(), Some("crm-proj-1"));
}

#[tokio::test]
async fn duplicate_delivery_three_times_in_sequence_writes_the_crm_once() {
    let h = start(&[]).await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, "crm-proj-1").await;

    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, body) = h.post_webhook(submitted()).await;
        statuses.push((
            status,
            body["status"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    assert_eq!(statuses[0], (202, "queued".into()));
    assert_eq!(statuses[1], (202, "duplicate".into()));
    assert_eq!(statuses[2], (202, "duplicate".into()));
    h.settle().await;
    assert_eq!(h.crm_events().await.len(), 1);
}

#[tokio::test]
async fn duplicate_delivery_three_times_concurrently_writes_the_crm_once() {
    let h = start(&[]).await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, "crm-proj-1").await;

    // Same content, different key order and whitespace: still the same event.
    let reordered =
        serde_json::to_string_pretty(&fixture_json("v2-deal.projectSubmitted.json")).unwrap();
    let bodies = [submitted(), submitted(), reordered];
    let results = join_all(bodies.iter().map(|b| h.post_webhook(b.clone()))).await;
    for (status, body) in &results {
        assert!(*status == 202 || *status == 503, "{status} {body}");
    }
    // A 503 asks Enerflo to retry; do what Enerflo would.
    for (status, _) in &results {
        if *status == 503 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (s, b) = h.post_webhook(submitted()).await;
            assert_eq!((s, b["status"].as_str()), (202, Some("duplicate")));
        }
    }
    h.settle().await;
    assert_eq!(h.crm_events().await.len(), 1);
}

#[tokio::test]
async fn submitted_then_received_for_the_same_submission_writes_one_crm_record() {
    let h = start(&[]).await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, "crm-proj-1").await;

    let received = submitted().replace("deal.projectSubmitted", "deal.projectReceived");
    assert_eq!(h.post_webhook(submitted()).await.0, 202);
    assert_eq!(h.post_webhook(received).await.0, 202);
    h.drain(Duration::from_secs(10)).await;
    let events = h.crm_events().await;
    assert_eq!(
        events.len(),
        1,
        "the unchanged received copy must not write again: {events:#?}"
    );
    let log = h.event_log(&format!("deal:{DEAL}")).await;
    let outcomes: Vec<_> = log
        .iter()
        .map(|e| (e.event.as_str(), e.outcome.as_str()))
        .collect();
    assert!(
        outcomes.contains(&("deal.projectReceived", "unchanged")),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("deal.projectSubmitted", "delivered")),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn a_changed_resubmission_updates_the_linked_record_flagged_as_resubmission() {
    let h = start(&[]).await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, "crm-proj-77").await;

    assert_eq!(h.post_webhook(submitted()).await.0, 202);
    h.drain(Duration::from_secs(10)).await;
    // After a void, the deal is re-signed with 24 panels.
    let mut changed = fixture_json("v2-deal.projectSubmitted.json");
    changed["payload"]["proposal"]["pricingOutputs"]["design"]["arrays"][0]["moduleCount"] =
        json!(24);
    assert_eq!(h.post_webhook(changed.to_string()).await.0, 202);
    h.drain(Duration::from_secs(10)).await;

    let events = h.crm_events().await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["data"]["resubmission"], false);
    assert_eq!(events[1]["data"]["resubmission"], true);
    assert_eq!(
        events[1]["crm_id"], "crm-proj-77",
        "the second push targets the linked record"
    );
    assert_eq!(events[1]["data"]["system"]["panel_count"], 24);
    assert_ne!(events[0]["id"], events[1]["id"]);
}

#[tokio::test]
async fn installs_find_404_then_200_is_retried_until_it_succeeds() {
    let h = start(&[]).await;
    Mock::given(method("GET"))
        .and(path_regex("^/api/v3/installs/find/"))
        .respond_with(ResponseTemplate::new(404).set_body_string("<html>Not Found</html>"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&h.enerflo)
        .await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, "crm-proj-1").await;

    assert_eq!(h.post_webhook(submitted()).await.0, 202);
    h.drain(Duration::from_secs(15)).await;
    assert_eq!(h.enerflo_calls("/api/v3/installs/find/").await, 3);
    assert_eq!(h.crm_events().await.len(), 1);
    assert!(h.dead_letters(Stage::Project).is_empty());
}

#[tokio::test]
async fn installs_find_404_past_the_retry_budget_dead_letters_with_the_reason() {
    let h = start(&[("RETRY_MAX_ATTEMPTS", "3")]).await;
    Mock::given(method("GET"))
        .and(path_regex("^/api/v3/installs/find/"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&h.enerflo)
        .await;
    crm_accepts(&h.crm, "crm-proj-1").await;

    assert_eq!(h.post_webhook(submitted()).await.0, 202);
    h.drain(Duration::from_secs(15)).await;
    let dead = h.dead_letters(Stage::Project);
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("not created yet"),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].reason.contains("3 attempts"), "{}", dead[0].reason);
    assert_eq!(dead[0].body, submitted(), "the raw body is kept for replay");
    assert_eq!(h.crm_events().await.len(), 0);
}

#[tokio::test]
async fn enerflo_429_with_retry_after_is_honoured() {
    let h = start(&[]).await;
    Mock::given(method("GET"))
        .and(path_regex("^/api/v3/installs/find/"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "2")
                .insert_header("content-type", "text/html; charset=UTF-8")
                .set_body_string("<!DOCTYPE html><html><body>Too many requests</body></html>"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&h.enerflo)
        .await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, "crm-proj-1").await;

    let start = Instant::now();
    assert_eq!(h.post_webhook(submitted()).await.0, 202);
    h.drain(Duration::from_secs(15)).await;
    let requests = h.enerflo.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(h.crm_events().await.len(), 1);
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "retried before Retry-After: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn crm_500_is_retried_then_dead_lettered_with_the_reason() {
    let h = start(&[("RETRY_MAX_ATTEMPTS", "3")]).await;
    finds_installs(&h.enerflo).await;
    Mock::given(method("POST"))
        .and(path("/crm/events"))
        .respond_with(ResponseTemplate::new(500).set_body_string("internal error"))
        .mount(&h.crm)
        .await;

    assert_eq!(h.post_webhook(submitted()).await.0, 202);
    h.drain(Duration::from_secs(15)).await;
    let events = h.crm_events().await;
    assert_eq!(events.len(), 3, "one CRM attempt per delivery attempt");
    assert!(
        events.windows(2).all(|w| w[0]["id"] == w[1]["id"]),
        "the event id is stable across retries"
    );
    let dead = h.dead_letters(Stage::Project);
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("CRM unavailable: HTTP 500"),
        "{}",
        dead[0].reason
    );
    let logged = h.event_log(&format!("deal:{DEAL}")).await;
    assert_eq!(logged[0].outcome, "dead_lettered");
}

#[tokio::test]
async fn crm_include_raw_sends_the_enerflo_payload_along() {
    let h = start(&[("CRM_INCLUDE_RAW", "true")]).await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, "crm-proj-1").await;
    assert_eq!(h.post_webhook(submitted()).await.0, 202);
    h.drain(Duration::from_secs(10)).await;
    let events = h.crm_events().await;
    assert_eq!(events[0]["raw"]["webhook"]["payload"]["deal"]["id"], DEAL);
    assert_eq!(events[0]["raw"]["install"]["id"], 700001);
}

#[tokio::test]
async fn installs_find_200_without_an_install_id_makes_no_crm_write_and_dead_letters_with_the_reason()
 {
    // GIVEN installs/find answers 200 with a body that holds no install
    let h = start(&[("RETRY_MAX_ATTEMPTS", "3")]).await;
    Mock::given(method("GET"))
        .and(path_regex("^/api/v3/installs/find/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&h.enerflo)
        .await;
    crm_accepts(&h.crm, "crm-proj-1").await;

    // WHEN the submission is delivered
    assert_eq!(h.post_webhook(submitted()).await.0, 202);
    h.drain(Duration::from_secs(15)).await;

    // THEN nothing reached the CRM; the event was retried, then dead-lettered with the reason
    assert_eq!(h.crm_events().await.len(), 0);
    assert_eq!(h.enerflo_calls("/api/v3/installs/find/").await, 3);
    let dead = h.dead_letters(Stage::Project);
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains(&format!(
            "installs/find for deal {DEAL} answered 200 without an install id"
        )),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].reason.contains("3 attempts"), "{}", dead[0].reason);
    assert_eq!(dead[0].body, submitted(), "the raw body is kept for replay");
}

#[tokio::test]
async fn a_200_html_maintenance_page_then_the_install_writes_the_crm_once() {
    // GIVEN installs/find first answers 200 with an HTML maintenance page, then the install
    let h = start(&[]).await;
    Mock::given(method("GET"))
        .and(path_regex("^/api/v3/installs/find/"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<!DOCTYPE html><html><body><h1>Down for maintenance</h1></body></html>",
            "text/html; charset=UTF-8",
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&h.enerflo)
        .await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, "crm-proj-1").await;

    // WHEN the submission is delivered
    assert_eq!(h.post_webhook(submitted()).await.0, 202);
    h.drain(Duration::from_secs(15)).await;

    // THEN the page was retried past, and the CRM got exactly one hydrated write
    assert_eq!(h.enerflo_calls("/api/v3/installs/find/").await, 2);
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["enerflo"]["install_id"], 700001);
    assert!(h.dead_letters(Stage::Project).is_empty());
}
