//! `CRM_CONNECTOR=salesforce` end to end: Enerflo webhooks -> local runner -> the faithful
//! Salesforce fake (`enerflo_sync_local::fakes::salesforce`), asserting what the org holds
//! afterwards and the calls it saw.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use enerflo_sync::classify::Stage;
use enerflo_sync_local::fakes::salesforce::{FakeOptions, Fault, FaultKind, SalesforceFake, spawn};
use serde_json::{Value, json};
use sync_tests::enerflo::{SAMPLE_INSTALL, finds_installs, submission};
use sync_tests::{Harness, fixture, join_all, start};

async fn salesforce(extra: &[(&str, &str)]) -> (Harness, Arc<SalesforceFake>) {
    let opts = FakeOptions::default().with_enerflo_fields();
    let (client_id, secret) = (opts.client_id.clone(), opts.client_secret.clone());
    let (url, fake) = spawn(opts).await;
    let mut env = vec![
        ("CRM_CONNECTOR", "salesforce"),
        ("SALESFORCE_LOGIN_URL", url.as_str()),
        ("SALESFORCE_CLIENT_ID", client_id.as_str()),
        ("SALESFORCE_CLIENT_SECRET", secret.as_str()),
    ];
    env.extend_from_slice(extra);
    (start(&env).await, fake)
}

fn text<'a>(r: &'a enerflo_sync_local::fakes::salesforce::RecordView, f: &str) -> Option<&'a str> {
    r.get(f).and_then(Value::as_str)
}

#[tokio::test]
async fn every_outbound_exchange_lands_in_salesforce_as_records() {
    let (h, fake) = salesforce(&[]).await;
    finds_installs(&h.enerflo).await;

    h.deliver(fixture("v1-new_customer.json")).await;
    let contacts = fake.records("Contact");
    assert_eq!(contacts.len(), 1, "{contacts:#?}");
    assert_eq!(text(&contacts[0], "Enerflo_Customer_Id__c"), Some("900001"));
    assert_eq!(text(&contacts[0], "LastName"), Some("Placeholder"));

    h.deliver(submission(1)).await;
    let opps = fake.records("Opportunity");
    assert_eq!(opps.len(), 1, "{opps:#?}");
    let opp = &opps[0];
    assert_eq!(text(opp, "StageName"), Some("Prospecting"));
    assert!(text(opp, "CloseDate").is_some(), "{opp:#?}");
    assert_eq!(
        opp.get("Panel_Count__c").and_then(Value::as_f64),
        Some(20.0)
    );
    assert_eq!(
        fake.records("Contact").len(),
        1,
        "the customer's contact was reused"
    );
    let roles = fake.records("OpportunityContactRole");
    assert_eq!(roles.len(), 1, "{roles:#?}");
    assert_eq!(text(&roles[0], "ContactId"), Some(contacts[0].id.as_str()));

    h.deliver(
        json!({"webhook_event": "update_install", "id": SAMPLE_INSTALL, "status": {"id": 9, "name": "Voided"},
               "timestamps": {"updated_at": "2025-04-01 10:00:00", "timezone": "UTC"}})
        .to_string(),
    )
    .await;
    let opp = fake.records("Opportunity").remove(0);
    assert_eq!(text(&opp, "StageName"), Some("Closed Lost"));
    assert_eq!(text(&opp, "Enerflo_Status__c"), Some("Voided"));

    h.deliver(
        json!({"webhook_event": "new_install_note", "install_id": SAMPLE_INSTALL,
               "note": {"id": 41, "note": "Permit approved", "user": {"full_name": "Sam Installer"},
                        "created_at": "2025-03-01 10:00:00"}})
        .to_string(),
    )
    .await;
    let notes = fake.notes_of(&opp.id);
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert_eq!(text(&notes[0].0, "Title"), Some("Enerflo note 41"));
    assert!(notes[0].1.contains("Permit approved"), "{}", notes[0].1);

    let (status, _) = h
        .post_webhook_with_token(
            &format!("{}?event=signed_change_order", sync_tests::TOKEN),
            fixture("v1-signed_change_order.json"),
        )
        .await;
    assert_eq!(status, 202);
    h.settle().await;
    let opp = fake.records("Opportunity").remove(0);
    assert!(opp.get("Last_Change_Order_Id__c").is_some(), "{opp:#?}");
    assert_eq!(fake.notes_of(&opp.id).len(), 2);
    for stage in [
        Stage::Leads,
        Stage::Project,
        Stage::Status,
        Stage::Note,
        Stage::ChangeOrder,
    ] {
        assert!(
            h.dead_letters(stage).is_empty(),
            "{stage:?}: {:#?}",
            h.dead_letters(stage)
        );
    }
}

#[tokio::test]
async fn repeated_and_concurrent_deliveries_make_one_record() {
    let (h, fake) = salesforce(&[]).await;
    finds_installs(&h.enerflo).await;
    join_all((0..5).map(|_| h.post_webhook(submission(1)))).await;
    join_all((0..5).map(|_| h.post_webhook(fixture("v1-new_customer.json")))).await;
    h.settle().await;
    assert_eq!(fake.records("Opportunity").len(), 1);
    assert_eq!(fake.records("Contact").len(), 1);
    assert_eq!(fake.records("OpportunityContactRole").len(), 1);
}

#[tokio::test]
async fn a_token_that_expires_mid_run_is_refreshed_once() {
    let (h, fake) = salesforce(&[]).await;
    finds_installs(&h.enerflo).await;
    h.deliver(fixture("v1-new_customer.json")).await;
    let issued = fake.tokens_issued();
    fake.expire_tokens();
    h.deliver(submission(1)).await;
    assert_eq!(fake.records("Opportunity").len(), 1);
    assert_eq!(fake.tokens_issued(), issued + 1, "one new token");
    assert!(
        h.dead_letters(Stage::Leads).is_empty(),
        "{:#?}",
        h.dead_letters(Stage::Leads)
    );
}

#[tokio::test]
async fn a_missing_picklist_value_dead_letters_naming_it() {
    let (h, fake) = salesforce(&[]).await;
    finds_installs(&h.enerflo).await;
    h.deliver(submission(1)).await;
    // The org's StageName picklist lacks the stage the profile maps Voided to.
    fake.set_picklist("Opportunity", "StageName", &["Prospecting", "Closed Won"])
        .unwrap();
    h.deliver(
        json!({"webhook_event": "update_install", "id": SAMPLE_INSTALL, "status": {"id": 9, "name": "Voided"},
               "timestamps": {"updated_at": "2025-04-01 10:00:00", "timezone": "UTC"}})
        .to_string(),
    )
    .await;
    let dead = h.dead_letters(Stage::Status);
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert!(
        dead[0]
            .reason
            .contains("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].reason.contains("StageName"), "{}", dead[0].reason);
}

#[tokio::test]
async fn the_daily_limit_loses_nothing() {
    let (h, fake) = salesforce(&[("RETRY_MAX_ATTEMPTS", "6")]).await;
    // The daily allocation is spent.
    fake.script(Fault::new("/services/data/**", FaultKind::RequestLimitExceeded).times(1));
    assert_eq!(h.post_webhook(fixture("v1-new_customer.json")).await.0, 202);
    // Held for a retry after the limit's window, not dead-lettered, not dropped.
    let retrying = sync_tests::eventually(std::time::Duration::from_secs(10), || async {
        let log = h.event_log("customer:900001").await;
        log.iter()
            .find(|r| r.outcome == "retrying")
            .map(|r| r.detail.clone().unwrap_or_default())
    })
    .await
    .expect("the event is retrying");
    assert!(retrying.contains("REQUEST_LIMIT_EXCEEDED"), "{retrying}");
    assert!(fake.records("Contact").is_empty());
    assert!(h.dead_letters(Stage::Leads).is_empty());
    assert_eq!(h.queued(), 1, "the event waits in its queue");
}
