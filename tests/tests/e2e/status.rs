//! Stage 4 end to end, through the local runner over HTTP: Enerflo `update_install` /
//! `restore_install` webhooks -> `status.changed` to the (wiremock) CRM, and
//! `PUT /crm/installs/{install}/status` -> `PUT /api/v3/installs/{id}` on (wiremock or sandbox)
//! Enerflo, with no echo loop either way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use enerflo_sync::classify::Stage;
use serde_json::{Value, json};
use sync_tests::crm::crm_accepts;
use sync_tests::enerflo::{FiresWebhookFirst, accepts_install_updates, lists_statuses, writes};
use sync_tests::{TOKEN, fixture, start, start_with_sandbox};
use wiremock::Mock;
use wiremock::matchers::{method, path};

const INSTALL: u64 = 700001;

fn update_install(id: u64, name: &str) -> String {
    json!({"webhook_event": "update_install", "id": INSTALL, "status": {"id": id, "name": name},
           "timestamps": {"updated_at": "2025-04-01 10:00:00", "timezone": "UTC"}})
    .to_string()
}

#[tokio::test]
async fn the_real_update_install_shape_is_pushed_as_status_changed() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-1").await;
    let (status, answer) = h.post_webhook(fixture("v1-update_install.json")).await;
    assert_eq!((status, answer["stage"].as_str()), (202, Some("status")));
    h.drain(Duration::from_secs(10)).await;
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["type"], "status.changed");
    assert_eq!(e["source_event"], "update_install");
    assert_eq!(e["enerflo"]["install_id"], INSTALL);
    assert_eq!(
        e["data"],
        json!({"status": {"id": 321, "name": "Example Custom Status"}, "previous": null,
               "on_hold": false, "voided": false, "completed": false, "restored": false})
    );
    assert_eq!(
        h.enerflo.received_requests().await.unwrap().len(),
        0,
        "the status object needs no lookup"
    );
}

#[tokio::test]
async fn the_docs_update_install_shape_is_named_through_the_company_status_list() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-1").await;
    lists_statuses(&h.enerflo).await;
    // The docs body has no `webhook_event`: the subscription URL names the event.
    let (status, answer) = h
        .post_webhook_with_token(
            &format!("{TOKEN}?event=update_install"),
            fixture("v1-update_install.docs-variant.json"),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    h.drain(Duration::from_secs(10)).await;
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["data"]["status"],
        json!({"id": 4, "name": "On Hold"})
    );
    assert_eq!(events[0]["data"]["on_hold"], true);
    assert_eq!(h.enerflo_calls("/api/v3/install-statuses").await, 1);
}

#[tokio::test]
async fn a_status_change_is_pushed_once_and_an_unchanged_status_is_not_pushed() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-1").await;
    h.deliver(update_install(1, "New")).await;
    // A non-identical copy (another timestamp) with the same status: no change.
    let mut copy: Value = serde_json::from_str(&update_install(1, "New")).unwrap();
    copy["timestamps"]["updated_at"] = json!("2025-04-01 10:05:00");
    h.deliver(copy.to_string()).await;
    h.deliver(update_install(6, "Completed")).await;
    let events = h.crm_events().await;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(
        events[1]["data"]["previous"],
        json!({"id": 1, "name": "New"})
    );
    assert_eq!(
        events[1]["crm_id"], "crm-proj-1",
        "the project's CRM id is carried"
    );
    let log = h.event_log(&format!("install:{INSTALL}")).await;
    assert!(log.iter().any(|r| r.outcome == "unchanged"), "{log:#?}");
}

#[tokio::test]
async fn on_hold_voided_and_completed_set_their_flags() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-1").await;
    for (id, name) in [(4, "On Hold"), (5, "Voided"), (6, "Completed")] {
        h.deliver(update_install(id, name)).await;
    }
    let flags: Vec<Value> = h
        .crm_events()
        .await
        .iter()
        .map(|e| {
            json!([
                e["data"]["on_hold"],
                e["data"]["voided"],
                e["data"]["completed"]
            ])
        })
        .collect();
    assert_eq!(
        flags,
        [
            json!([true, false, false]),
            json!([false, true, false]),
            json!([false, false, true])
        ]
    );
}

#[tokio::test]
async fn a_void_then_restore_is_pushed_as_restored_with_previous_voided() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-1").await;
    h.deliver(update_install(5, "Voided")).await;
    let restore = update_install(1, "New").replace("update_install", "restore_install");
    h.deliver(restore).await;
    let events = h.crm_events().await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["source_event"], "restore_install");
    assert_eq!(events[1]["data"]["restored"], true);
    assert_eq!(events[1]["data"]["previous"]["name"], "Voided");
}

#[tokio::test]
async fn an_unknown_status_name_is_422_listing_the_valid_names() {
    let h = start(&[]).await;
    lists_statuses(&h.enerflo).await;
    accepts_install_updates(&h.enerflo).await;
    let (status, body) = h
        .crm_put(
            &format!("/crm/installs/enerflo:{INSTALL}/status"),
            json!({"status": "Finished"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "status");
    let message = body["errors"][0]["message"].as_str().unwrap();
    for name in [
        "New",
        "On Hold",
        "Voided",
        "Completed",
        "Example Custom Status",
    ] {
        assert!(message.contains(name), "{message}");
    }
    let (status, body) = h
        .crm_put(
            &format!("/crm/installs/enerflo:{INSTALL}/status"),
            json!({"status_id": "x"}),
        )
        .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("status_id"))
    );
    assert_eq!(writes(&h.enerflo).await, 0);
}

#[tokio::test]
async fn an_unlinked_install_is_404() {
    let h = start(&[]).await;
    let (status, body) = h
        .crm_put(
            "/crm/installs/crm-nobody/status",
            json!({"status": "Completed"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        body["type"],
        "urn:enerflo-crm-sync:problem:unlinked-install"
    );
    assert_eq!(h.enerflo.received_requests().await.unwrap().len(), 0);
}

#[tokio::test]
async fn crm_to_enerflo_to_webhook_writes_the_crm_nothing() {
    // GIVEN a project whose CRM id is known and whose status the CRM last heard as New
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-5").await;
    lists_statuses(&h.enerflo).await;
    accepts_install_updates(&h.enerflo).await;
    h.deliver(update_install(1, "New")).await;
    assert_eq!(h.crm_events().await.len(), 1);

    // WHEN the CRM sets Completed on its project, and Enerflo fires update_install for it
    let (status, body) = h
        .crm_put(
            "/crm/installs/crm-proj-5/status",
            json!({"status": "completed"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["install_status"],
        json!({"id": 6, "name": "Completed"})
    );
    let puts = h.enerflo.received_requests().await.unwrap();
    let put = puts.iter().find(|r| r.method.as_str() == "PUT").unwrap();
    assert_eq!(put.body_json::<Value>().unwrap(), json!({"status_id": 6}));
    h.deliver(update_install(6, "Completed")).await;

    // THEN Enerflo was written once and the CRM got nothing more
    assert_eq!(writes(&h.enerflo).await, 1);
    assert_eq!(h.crm_events().await.len(), 1);
    assert!(
        h.wait_for_event_outcome(
            &format!("install:{INSTALL}"),
            "update_install",
            "echo",
            Duration::from_secs(5)
        )
        .await
    );
}

#[tokio::test]
async fn enerflo_to_crm_to_inbound_call_writes_enerflo_nothing() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-6").await;
    lists_statuses(&h.enerflo).await;
    accepts_install_updates(&h.enerflo).await;
    h.deliver(update_install(4, "On Hold")).await;
    assert_eq!(h.crm_events().await.len(), 1);
    // The CRM's automation sends the status it just received straight back.
    for body in [json!({"status": "On Hold"}), json!({"status_id": 4})] {
        let (status, answer) = h.crm_put("/crm/installs/crm-proj-6/status", body).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("echo")),
            "{answer}"
        );
    }
    assert_eq!(h.enerflo.received_requests().await.unwrap().len(), 0);
}

#[tokio::test]
async fn against_an_enerflo_that_fires_webhooks_the_crm_status_write_does_not_loop() {
    // The sandbox answers the status PUT and, like Enerflo, fires update_install back.
    let h = start_with_sandbox(&[]).await;
    crm_accepts(&h.crm, "crm-proj-7").await;
    let (status, body) = h
        .crm_put(
            &format!("/crm/installs/enerflo:{INSTALL}/status"),
            json!({"status": "On Hold"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        h.wait_for_event_outcome(
            &format!("install:{INSTALL}"),
            "update_install",
            "echo",
            Duration::from_secs(10)
        )
        .await,
        "the sandbox's webhook is recognised as our own write"
    );
    h.drain(Duration::from_secs(10)).await;
    assert_eq!(
        h.crm_events().await.len(),
        0,
        "nothing pushed back to the CRM"
    );
    let calls = h.runner.sandbox.as_ref().unwrap().calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("PUT /api/v3/installs/"))
            .count(),
        1
    );
    // A later change made in Enerflo is pushed, with the echoed status as previous.
    h.deliver(update_install(6, "Completed")).await;
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["previous"]["name"], "On Hold");
    assert!(h.dead_letters(Stage::Status).is_empty());
}

#[tokio::test]
async fn an_enerflo_firing_its_webhook_before_answering_the_write_is_still_recognised() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-8").await;
    lists_statuses(&h.enerflo).await;
    Mock::given(method("PUT"))
        .and(path(format!("/api/v3/installs/{INSTALL}")))
        .respond_with(FiresWebhookFirst {
            runner: h.runner.addr,
            webhook: serde_json::from_str(&update_install(6, "Completed")).unwrap(),
        })
        .mount(&h.enerflo)
        .await;
    let (status, body) = h
        .crm_put(
            &format!("/crm/installs/enerflo:{INSTALL}/status"),
            json!({"status_id": 6}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        h.wait_for_event_outcome(
            &format!("install:{INSTALL}"),
            "update_install",
            "echo",
            Duration::from_secs(15)
        )
        .await
    );
    assert_eq!(h.crm_events().await.len(), 0);
    assert_eq!(writes(&h.enerflo).await, 1);
}
