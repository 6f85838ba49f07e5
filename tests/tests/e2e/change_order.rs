//! Stage 6 end to end: `signed_change_order` webhook -> local runner -> `change_order.signed` to
//! the CRM (wiremock), from the sample and from hand-made variants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use enerflo_sync::classify::Stage;
use enerflo_sync::store::{EntityKind, IdForm, IdRef};
use serde_json::{Value, json};
use sync_tests::crm::crm_accepts;
use sync_tests::{Harness, TOKEN, fixture, fixture_json, start};

const INSTALL: u64 = 700001;

/// The sample as delivered: its body has no `webhook_event`, so the subscription URL names it.
async fn deliver(h: &Harness, body: &Value) -> (u16, Value) {
    h.post_webhook_with_token(
        &format!("{TOKEN}?event=signed_change_order"),
        body.to_string(),
    )
    .await
}

fn sample() -> Value {
    fixture_json("v1-signed_change_order.json")
}

fn change_order(id: u64, status: &str, signed_at: &str, values: Value) -> Value {
    json!({"id": id, "epc_install_id": INSTALL, "status": status, "signed_at": signed_at,
           "deleted_at": null, "change_values": values})
}

fn ids(list: &Value) -> Vec<Value> {
    list.as_array()
        .map(|a| a.iter().map(|x| x["id"].clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_sample_change_order_reaches_the_crm_and_links_the_unlinked_install() {
    // GIVEN an install the sync has never seen and a CRM that answers a project id
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-co").await;

    // WHEN the sample signed_change_order is delivered
    let (status, body) = h
        .post_webhook_with_token(
            &format!("{TOKEN}?event=signed_change_order"),
            fixture("v1-signed_change_order.json"),
        )
        .await;
    assert_eq!(
        (status, body["stage"].as_str()),
        (202, Some("change_order")),
        "{body}"
    );
    h.drain(Duration::from_secs(10)).await;

    // THEN the CRM gets one change_order.signed with the resulting system and what changed
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["type"], "change_order.signed");
    assert_eq!(e["source_event"], "signed_change_order");
    assert_eq!(e["crm_id"], Value::Null);
    assert_eq!(e["occurred_at"], "2025-03-02T11:00:00Z");
    assert_eq!(e["enerflo"]["install_id"], INSTALL);
    assert_eq!(e["enerflo"]["survey_id"], 4000001);
    assert_eq!(e["enerflo"]["customer_id"], 900001);
    let d = &e["data"];
    assert_eq!(
        d["change_order"],
        json!({"id": 8000001, "signed_at": "2025-03-02T11:00:00Z"})
    );
    assert_eq!(d["panel_count"], 20);
    assert_eq!(
        d["panel"],
        Value::Null,
        "the sample's panel is {{}}: not invented"
    );
    assert_eq!(d["batteries"], Value::Null);
    assert_eq!(d["adders"], json!([]));
    assert_eq!(
        d["changes"]["adders"]["removed"],
        json!([{"id": 111, "name": "Example Adder", "cost": 300, "quantity": 1}]),
        "an adder with active: false is removed"
    );
    // ... and the install is now a linked project carrying the CRM's id
    let link = h
        .runner
        .ports
        .xref
        .resolve(EntityKind::Project, &IdRef::new(IdForm::Install, INSTALL))
        .await
        .unwrap()
        .expect("linked");
    assert_eq!(link.crm_id.as_deref(), Some("crm-proj-co"));
    assert_eq!(link.id(IdForm::Survey).as_deref(), Some("4000001"));
}

#[tokio::test]
async fn a_repeat_of_the_same_change_order_writes_nothing() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-co").await;
    let first = sample();
    // A later delivery of the same change order with unrelated parts changed (not a webhook
    // duplicate: the body differs).
    let mut again = sample();
    again["driveFolders"] = json!({"root": "elsewhere"});
    again["install"]["updated_at"] = json!("2025-03-03 08:00:00");
    assert_eq!(deliver(&h, &first).await.0, 202);
    h.drain(Duration::from_secs(10)).await;
    let (status, body) = deliver(&h, &again).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("queued")));
    h.drain(Duration::from_secs(10)).await;
    assert_eq!(h.crm_events().await.len(), 1);
    let log = h.event_log(&format!("install:{INSTALL}")).await;
    assert_eq!(log[0].outcome, "unchanged", "{log:?}");
}

#[tokio::test]
async fn the_latest_complete_change_order_wins_with_batteries_and_adders_added_and_removed() {
    // GIVEN the project is already linked to a CRM record (stage 2 ran)
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-1").await;
    h.link_project(INSTALL, "crm-proj-1").await;

    // WHEN a change order event lists three change orders: an older complete one, the latest
    // complete one, and a later one still awaiting signature
    let mut body = sample();
    body["webhook_event"] = json!("signed_change_order");
    body["install"]["solarData"]["panel"] = json!({"name": "410W Module", "manufacturer": "Example Solar", "model": "EX-410", "capacity": 410});
    body["install"]["solarData"]["panel_count"] = json!(24);
    body["change_orders"] = json!([
        change_order(
            8000001,
            "complete",
            "2025-03-02 11:00:00",
            json!({
                "panel_count": {"old": 20, "new": 22}
            })
        ),
        change_order(
            8000003,
            "pending",
            "2025-03-20 11:00:00",
            json!({
                "panel_count": {"old": 24, "new": 30}
            })
        ),
        change_order(
            8000002,
            "complete",
            "2025-03-10 11:00:00",
            json!({
                "panel_count": {"old": 22, "new": 24},
                "battery_count": {"old": 0, "new": 2},
                "battery": {"old": null, "new": {"name": "Example Battery 13.5 kWh", "quantity": 2}},
                "adders": {
                    "old": {"111": {"id": 111, "name": "Trenching", "cost": 300, "active": true, "quantity": 1}},
                    "new": {"112": {"id": 112, "name": "Main panel upgrade", "cost": 2000, "active": true, "quantity": 1}}
                }
            })
        ),
    ]);
    assert_eq!(h.post_webhook(body.to_string()).await.0, 202);
    h.drain(Duration::from_secs(10)).await;

    // THEN the CRM record gets the system after change order 8000002
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["crm_id"], "crm-proj-1");
    let d = &e["data"];
    assert_eq!(d["change_order"]["id"], 8000002);
    assert_eq!(d["panel_count"], 24);
    assert_eq!(d["panel"]["name"], "410W Module");
    assert_eq!(d["panel"]["capacity_watts"], 410.0);
    assert_eq!(d["batteries"]["battery_count"], 2);
    assert_eq!(
        d["batteries"]["battery"]["name"],
        "Example Battery 13.5 kWh"
    );
    assert_eq!(ids(&d["adders"]), vec![json!(112)]);
    assert_eq!(ids(&d["changes"]["adders"]["added"]), vec![json!(112)]);
    assert_eq!(ids(&d["changes"]["adders"]["removed"]), vec![json!(111)]);
    assert_eq!(d["changes"]["panel_count"], json!({"old": 22, "new": 24}));
    assert_eq!(d["changes"]["battery_count"], json!({"old": 0, "new": 2}));
}

#[tokio::test]
async fn a_change_order_without_batteries_or_adders_sends_them_as_null() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-1").await;
    let mut body = sample();
    body["change_orders"] = json!([change_order(
        8000004,
        "complete",
        "2025-04-01T09:00:00Z",
        json!({
            "system_size": {"old": 8.1, "new": 9.72}
        })
    )]);
    assert_eq!(deliver(&h, &body).await.0, 202);
    h.drain(Duration::from_secs(10)).await;
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1);
    let d = &events[0]["data"];
    assert_eq!(d["batteries"], Value::Null);
    assert_eq!(d["adders"], Value::Null);
    assert_eq!(d["panel_count"], 20);
    assert_eq!(
        d["changes"],
        json!({"system_size": {"old": 8.1, "new": 9.72}})
    );
}

#[tokio::test]
async fn a_change_order_event_with_nothing_signed_is_dead_lettered_with_the_reason() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, "crm-proj-1").await;
    let mut body = sample();
    body["change_orders"][0]["status"] = json!("pending");
    assert_eq!(deliver(&h, &body).await.0, 202);
    h.drain(Duration::from_secs(10)).await;
    let dead = h.dead_letters(Stage::ChangeOrder);
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("no complete signed change order"),
        "{}",
        dead[0].reason
    );
    assert_eq!(h.crm_events().await.len(), 0);
}
