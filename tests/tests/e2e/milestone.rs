//! Stage 3 end to end, through the local runner over HTTP: Enerflo `project_milestone_updated`
//! webhooks -> `milestone.updated` to the (wiremock) CRM when a completion date is new, and
//! `PUT /crm/installs/{install}/milestones/{milestone}` -> Enerflo (wiremock or sandbox), with no
//! echo loop either way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use enerflo_sync::classify::Stage;
use serde_json::{Value, json};
use sync_tests::crm::crm_accepts;
use sync_tests::enerflo::{FiresWebhookFirst, accepts_milestone_writes, writes};
use sync_tests::{start, start_with_sandbox};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const INSTALL: u64 = 700001;
const KEYS: (&str, &str) = ("MILESTONE_KEY_MAP", "engineering=3901,pto=3905");

fn milestone_event(start: Value, completed: Value) -> String {
    json!({"webhook_event": "project_milestone_updated", "install_id": INSTALL,
           "milestone_id": 3901, "milestone": {"id": 3901, "title": "Engineering"},
           "start_date": start, "completed_date": completed,
           "updated_at": "2025-04-01 10:00:00"})
    .to_string()
}

#[tokio::test]
async fn a_completion_date_is_pushed_once_and_edits_without_one_are_not() {
    let h = start(&[KEYS]).await;
    crm_accepts(&h.crm, "crm-proj-1").await;
    // Started, not completed: nothing to tell the CRM.
    h.deliver(milestone_event(json!("2025-02-01"), Value::Null))
        .await;
    assert_eq!(h.crm_events().await.len(), 0);
    // Completed: pushed.
    h.deliver(milestone_event(json!("2025-02-01"), json!("2025-03-01")))
        .await;
    // The same completion again, with another start date and timestamp style: not pushed.
    h.deliver(milestone_event(
        json!("2025-02-02"),
        json!("2025-03-01 00:00:00"),
    ))
    .await;
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["type"], "milestone.updated");
    assert_eq!(e["source_event"], "project_milestone_updated");
    assert_eq!(e["occurred_at"], "2025-04-01T10:00:00Z");
    assert_eq!(e["enerflo"]["install_id"], INSTALL);
    assert_eq!(
        e["data"],
        json!({"milestone": {"id": 3901, "title": "Engineering", "external_id": "engineering"},
               "start_date": "2025-02-01", "completed_date": "2025-03-01"})
    );
    // A new completion date is pushed again, to the linked CRM record.
    h.deliver(milestone_event(json!("2025-02-01"), json!("2025-03-04")))
        .await;
    let events = h.crm_events().await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["crm_id"], "crm-proj-1");
}

#[tokio::test]
async fn an_event_without_dates_is_hydrated_from_the_install() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-1").await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v3/installs/{INSTALL}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {
            "id": INSTALL,
            "all_milestones": [
                {"id": 77, "milestone_id": 3901, "title": "Engineering",
                 "start_date": "2025-02-01 00:00:00", "completed_at": "2025-03-01 16:30:00"}]}})))
        .mount(&h.enerflo)
        .await;
    let thin = json!({"webhook_event": "project_milestone_updated", "install_id": INSTALL,
                      "milestone": {"id": "3901"}});
    h.deliver(thin.to_string()).await;
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["completed_date"], "2025-03-01");
    assert_eq!(events[0]["data"]["start_date"], "2025-02-01");
    assert_eq!(
        h.enerflo_calls(&format!("/api/v3/installs/{INSTALL}"))
            .await,
        1
    );
}

#[tokio::test]
async fn an_event_that_cannot_be_understood_is_dead_lettered_with_what_was_missing() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-1").await;
    let body = json!({"webhook_event": "project_milestone_updated", "milestone": {"title": "?"}})
        .to_string();
    h.deliver(body.clone()).await;
    let dead = h.dead_letters(Stage::Milestone);
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("no install id"),
        "{}",
        dead[0].reason
    );
    assert!(
        dead[0].reason.contains("no milestone id"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].body, body);
    assert_eq!(h.crm_events().await.len(), 0);
}

#[tokio::test]
async fn bad_milestone_requests_are_rejected_and_write_nothing() {
    let h = start(&[KEYS]).await;
    accepts_milestone_writes(&h.enerflo).await;
    let url = format!("/crm/installs/enerflo:{INSTALL}/milestones/engineering");
    let (status, body) = h
        .crm_put(
            &url,
            json!({"start_date": "2025/02/01", "completed_date": "2025-02-30"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["start_date", "completed_date"]);
    let (status, _) = h.crm_put(&url, json!({"crm_update_id": "u1"})).await;
    assert_eq!(status, 422, "neither date");
    let (status, body) = h
        .crm_put(
            &format!("/crm/installs/enerflo:{INSTALL}/milestones/permits"),
            json!({"completed_date": "2025-03-01"}),
        )
        .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (404, Some("urn:enerflo-crm-sync:problem:unknown-milestone"))
    );
    let (status, body) = h
        .crm_put(
            "/crm/installs/crm-nobody/milestones/3901",
            json!({"completed_date": "2025-03-01"}),
        )
        .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (404, Some("urn:enerflo-crm-sync:problem:unlinked-install"))
    );
    assert_eq!(writes(&h.enerflo).await, 0);
}

#[tokio::test]
async fn crm_to_enerflo_to_webhook_writes_the_crm_nothing() {
    let h = start(&[KEYS]).await;
    crm_accepts(&h.crm, "crm-proj-2").await;
    accepts_milestone_writes(&h.enerflo).await;
    // GIVEN the project is linked to its CRM record (a status event linked it)
    let status = json!({"webhook_event": "update_install", "id": INSTALL,
                        "status": {"id": 1, "name": "New"}});
    h.deliver(status.to_string()).await;
    assert_eq!(h.crm_events().await.len(), 1);

    // WHEN the CRM completes the milestone by its own key, and Enerflo fires the webhook
    let (status, body) = h
        .crm_put(
            "/crm/installs/crm-proj-2/milestones/engineering",
            json!({"completed_date": "2025-03-01", "crm_update_id": "hs-991"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "updated", "install_id": INSTALL, "milestone_id": 3901,
               "completed_date": "2025-03-01", "crm_update_id": "hs-991"})
    );
    let requests = h.enerflo.received_requests().await.unwrap();
    let put = requests
        .iter()
        .find(|r| r.method.as_str() == "PUT")
        .unwrap();
    assert_eq!(
        put.url.path(),
        format!("/api/v3/installs/{INSTALL}/milestones/3901")
    );
    assert_eq!(
        put.body_json::<Value>().unwrap(),
        json!({"completed_date": "2025-03-01"})
    );
    h.deliver(milestone_event(json!("2025-01-20"), json!("2025-03-01")))
        .await;

    // THEN Enerflo was written once and the CRM got nothing more
    assert_eq!(writes(&h.enerflo).await, 1);
    assert_eq!(h.crm_events().await.len(), 1);
    assert!(
        h.wait_for_event_outcome(
            &format!("install:{INSTALL}"),
            "project_milestone_updated",
            "echo",
            Duration::from_secs(5)
        )
        .await
    );
}

#[tokio::test]
async fn enerflo_to_crm_to_inbound_call_writes_enerflo_nothing() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-3").await;
    accepts_milestone_writes(&h.enerflo).await;
    h.deliver(milestone_event(json!("2025-02-01"), json!("2025-03-01")))
        .await;
    assert_eq!(h.crm_events().await.len(), 1);
    // The CRM's automation sends what it received straight back, in full or only the completion.
    for body in [
        json!({"start_date": "2025-02-01", "completed_date": "2025-03-01"}),
        json!({"completed_date": "2025-03-01"}),
    ] {
        let (status, answer) = h
            .crm_put("/crm/installs/crm-proj-3/milestones/3901", body)
            .await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("echo")),
            "{answer}"
        );
    }
    assert_eq!(h.enerflo.received_requests().await.unwrap().len(), 0);
}

#[tokio::test]
async fn against_an_enerflo_that_fires_webhooks_the_crm_milestone_write_does_not_loop() {
    let h = start_with_sandbox(&[KEYS]).await;
    crm_accepts(&h.crm, "crm-proj-4").await;
    let url = format!("/crm/installs/enerflo:{INSTALL}/milestones/pto");
    // Two writes in a row, each fires a webhook carrying the milestone's full state.
    let (status, body) = h.crm_put(&url, json!({"start_date": "2025-05-01"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h
        .crm_put(&url, json!({"completed_date": "2025-05-20"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let entity = format!("install:{INSTALL}");
    // The sandbox fires both webhooks together, so either may be queued first. The one with the
    // completion is our write coming back: an echo. The start-date-only one is an echo when it
    // comes first; after the completion's, its state is older than the one synced, and without a
    // completion there is nothing to push either way.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let webhooks = loop {
        let log = h.event_log(&entity).await;
        let webhooks: Vec<_> = log
            .into_iter()
            .filter(|r| r.stage.is_some() && r.outcome != "queued")
            .collect();
        if webhooks.len() == 2 {
            break webhooks;
        }
        assert!(std::time::Instant::now() < deadline, "{webhooks:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for w in &webhooks {
        let completed = w.raw_body.contains("\"completed_date\":\"2025-05-20\"");
        let allowed: &[&str] = if completed {
            &["echo"]
        } else {
            &["echo", "no_completion"]
        };
        assert!(allowed.contains(&w.outcome.as_str()), "{w:#?}");
    }
    h.drain(Duration::from_secs(10)).await;
    assert_eq!(
        h.crm_events().await.len(),
        0,
        "nothing pushed back to the CRM"
    );
    let calls = h.runner.sandbox.as_ref().unwrap().calls();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("PUT ")).count(),
        2,
        "{calls:?}"
    );
    // A completion changed later in Enerflo is pushed.
    let mut changed: Value =
        serde_json::from_str(&milestone_event(json!("2025-05-01"), json!("2025-05-22"))).unwrap();
    changed["milestone_id"] = json!(3905);
    changed["milestone"] = json!({"id": 3905, "title": "Permission to Operate"});
    h.deliver(changed.to_string()).await;
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["milestone"]["external_id"], "pto");
}

#[tokio::test]
async fn an_enerflo_firing_its_webhook_before_answering_the_write_is_still_recognised() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-8").await;
    Mock::given(method("PUT"))
        .and(path(format!("/api/v3/installs/{INSTALL}/milestones/3901")))
        .respond_with(FiresWebhookFirst {
            runner: h.runner.addr,
            webhook: serde_json::from_str(&milestone_event(
                json!("2025-02-01"),
                json!("2025-03-01"),
            ))
            .unwrap(),
        })
        .mount(&h.enerflo)
        .await;
    let (status, body) = h
        .crm_put(
            &format!("/crm/installs/enerflo:{INSTALL}/milestones/3901"),
            json!({"completed_date": "2025-03-01"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        h.wait_for_event_outcome(
            &format!("install:{INSTALL}"),
            "project_milestone_updated",
            "echo",
            Duration::from_secs(15)
        )
        .await
    );
    assert_eq!(h.crm_events().await.len(), 0);
}
