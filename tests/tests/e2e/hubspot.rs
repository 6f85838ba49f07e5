//! `CRM_CONNECTOR=hubspot` end to end: Enerflo webhooks -> local runner -> the faithful HubSpot
//! fake (`enerflo_sync_local::fakes::hubspot`), asserting what HubSpot holds afterwards: records,
//! string properties, associations, stages, notes, and the calls and rate windows it saw.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use enerflo_sync::classify::Stage;
use enerflo_sync_local::fakes::hubspot::{
    FakeOptions, HubSpotFake, ObjectType, seed_profile, spawn,
};
use serde_json::json;
use sync_tests::enerflo::{SAMPLE_INSTALL, finds_installs, submission};
use sync_tests::{Harness, fixture, join_all, start};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const TOKEN: &str = "pat-na1-11111111-2222-3333-4444-555555555555";

/// A runner whose CRM is a HubSpot fake set up as `hubspot setup` leaves a portal for the
/// built-in profile (whatever profile the runner uses).
async fn hubspot(opts: FakeOptions, extra: &[(&str, &str)]) -> (Harness, Arc<HubSpotFake>) {
    let (url, fake) = spawn(FakeOptions {
        token: TOKEN.into(),
        ..opts
    })
    .await;
    let mut env = vec![
        ("CRM_CONNECTOR", "hubspot"),
        ("HUBSPOT_ACCESS_TOKEN", TOKEN),
        ("HUBSPOT_BASE_URL", url.as_str()),
        ("MILESTONE_KEY_MAP", "pto=3905"),
    ];
    env.extend_from_slice(extra);
    let h = start(&env).await;
    let default = enerflo_sync::crm::profile::Profile::parse(
        "built-in hubspot",
        enerflo_sync::crm::profile::HUBSPOT_DEFAULT,
    )
    .unwrap();
    seed_profile(&fake, &default);
    (h, fake)
}

fn status_event(id: u64, name: &str) -> String {
    json!({"webhook_event": "update_install", "id": SAMPLE_INSTALL, "status": {"id": id, "name": name},
           "timestamps": {"updated_at": "2025-04-01 10:00:00", "timezone": "UTC"}})
    .to_string()
}

#[tokio::test]
async fn every_outbound_exchange_lands_in_hubspot_as_records() {
    let (h, fake) = hubspot(FakeOptions::default(), &[]).await;
    finds_installs(&h.enerflo).await;

    // Stage 1.2: a customer created in Enerflo becomes a contact.
    h.deliver(fixture("v1-new_customer.json")).await;
    let contacts = fake.records(ObjectType::Contact);
    assert_eq!(contacts.len(), 1, "{contacts:#?}");
    assert_eq!(contacts[0].get("enerflo_customer_id"), Some("900001"));
    assert_eq!(contacts[0].get("firstname"), Some("Pat"));
    assert_eq!(contacts[0].get("zip"), Some("75001"));

    // Stage 2: the submission becomes a deal in the first stage, associated with that contact.
    h.deliver(submission(1)).await;
    let deals = fake.records(ObjectType::Deal);
    assert_eq!(deals.len(), 1, "{deals:#?}");
    let deal = &deals[0];
    assert_eq!(deal.get("dealstage"), Some("appointmentscheduled"));
    assert_eq!(deal.get("pipeline"), Some("default"));
    assert_eq!(deal.get("enerflo_install_id"), Some("700001"));
    assert_eq!(deal.get("enerflo_panel_count"), Some("20"));
    assert_eq!(
        fake.records(ObjectType::Contact).len(),
        1,
        "the customer's contact was reused"
    );
    let assoc = fake.associations(ObjectType::Deal, &deal.id);
    assert!(
        assoc
            .iter()
            .any(|a| a.to_type == ObjectType::Contact && a.to_id == contacts[0].id),
        "{assoc:#?}"
    );

    // Stage 4: a status in the stage map moves the deal; the name lands in a property.
    h.deliver(status_event(9, "Voided")).await;
    let deal = fake.record(ObjectType::Deal, &deal.id).unwrap();
    assert_eq!(deal.get("dealstage"), Some("closedlost"));
    assert_eq!(deal.get("enerflo_project_status"), Some("Voided"));
    // ... one that is not in it leaves the stage alone.
    h.deliver(status_event(4, "On Hold")).await;
    let deal = fake.record(ObjectType::Deal, &deal.id).unwrap();
    assert_eq!(deal.get("dealstage"), Some("closedlost"));
    assert_eq!(deal.get("enerflo_project_status"), Some("On Hold"));

    // Stage 3.2: a milestone mapped through MILESTONE_KEY_MAP (pto=3905) sets its date property
    // (the stage reads the install's milestones from Enerflo).
    Mock::given(method("GET"))
        .and(path(format!("/api/v3/installs/{SAMPLE_INSTALL}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {
            "id": SAMPLE_INSTALL,
            "all_milestones": [{"milestone_id": 3905, "title": "PTO", "completed_date": "2025-05-02"}]
        }})))
        .mount(&h.enerflo)
        .await;
    h.deliver(
        json!({"webhook_event": "project_milestone_updated", "install_id": SAMPLE_INSTALL,
               "milestone_id": 3905, "milestone": {"id": 3905, "title": "PTO"},
               "completed_date": "2025-05-02", "updated_at": "2025-05-02 10:00:00"})
        .to_string(),
    )
    .await;
    let deal = fake.record(ObjectType::Deal, &deal.id).unwrap();
    assert_eq!(deal.get("enerflo_pto_date"), Some("2025-05-02"));
    assert_eq!(deal.get("enerflo_last_milestone"), Some("PTO"));

    // Stage 5.2: an Enerflo note becomes a HubSpot note on the deal, at the note's time.
    h.deliver(
        json!({"webhook_event": "new_install_note", "install_id": SAMPLE_INSTALL,
               "note": {"id": 41, "note": "Permit approved", "user": {"full_name": "Sam Installer"},
                        "created_at": "2025-03-01 10:00:00"}})
        .to_string(),
    )
    .await;
    let notes = fake.records(ObjectType::Note);
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(
        notes[0]
            .get("hs_note_body")
            .unwrap()
            .contains("Permit approved")
    );
    assert_eq!(notes[0].get("enerflo_note_id"), Some("41"));
    assert!(
        notes[0]
            .get("hs_timestamp")
            .unwrap()
            .starts_with("2025-03-01T10:00:00")
    );
    let note_assoc = fake.associations(ObjectType::Note, &notes[0].id);
    assert!(
        note_assoc
            .iter()
            .any(|a| a.to_type == ObjectType::Deal && a.to_id == deal.id),
        "{note_assoc:#?}"
    );

    // Stage 6: the signed change order updates the deal and notes what changed.
    // (the sample carries no webhook_event: the subscription URL names it)
    let (status, _) = h
        .post_webhook_with_token(
            &format!("{}?event=signed_change_order", sync_tests::TOKEN),
            fixture("v1-signed_change_order.json"),
        )
        .await;
    assert_eq!(status, 202);
    h.settle().await;
    let deal = fake.record(ObjectType::Deal, &deal.id).unwrap();
    assert!(
        deal.get("enerflo_last_change_order_id").is_some(),
        "{deal:#?}"
    );
    let notes = fake.records(ObjectType::Note);
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(
        notes
            .iter()
            .any(|n| n.get("hs_note_body").unwrap().contains("Change order")),
        "{notes:#?}"
    );
    // Nothing was dead-lettered on the way.
    for stage in [
        Stage::Leads,
        Stage::Project,
        Stage::Status,
        Stage::Milestone,
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
    let (h, fake) = hubspot(FakeOptions::default(), &[]).await;
    finds_installs(&h.enerflo).await;
    // The same submission five times at once, and the same customer event five times.
    let posts = (0..5).map(|_| h.post_webhook(submission(1)));
    join_all(posts).await;
    let posts = (0..5).map(|_| h.post_webhook(fixture("v1-new_customer.json")));
    join_all(posts).await;
    h.settle().await;
    assert_eq!(fake.records(ObjectType::Deal).len(), 1);
    assert_eq!(fake.records(ObjectType::Contact).len(), 1);
    // A later redelivery (a new dedupe window) is recognised as unchanged and writes nothing.
    fake.clear_calls();
    h.deliver(submission(1)).await;
    assert!(
        fake.calls().iter().all(|c| c.method == "GET"),
        "{:#?}",
        fake.calls()
    );
}

#[tokio::test]
async fn a_contact_that_exists_by_email_is_adopted_not_duplicated() {
    let (h, fake) = hubspot(FakeOptions::default(), &[]).await;
    let existing = fake
        .seed_record(
            ObjectType::Contact,
            &[
                ("email", "pat.placeholder@example.com"),
                ("firstname", "Patricia"),
            ],
        )
        .unwrap();
    h.deliver(fixture("v1-new_customer.json")).await;
    let contacts = fake.records(ObjectType::Contact);
    assert_eq!(contacts.len(), 1, "{contacts:#?}");
    assert_eq!(contacts[0].id, existing);
    assert_eq!(contacts[0].get("enerflo_customer_id"), Some("900001"));
    // The contact id is what the cross-reference holds.
    let link = h
        .runner
        .ports
        .xref
        .resolve(
            enerflo_sync::store::EntityKind::Customer,
            &enerflo_sync::store::IdRef::new(enerflo_sync::store::IdForm::CustomerId, 900001),
        )
        .await
        .unwrap()
        .expect("linked");
    assert_eq!(link.crm_id.as_deref(), Some(existing.as_str()));
}

#[tokio::test]
async fn a_burst_never_exceeds_the_ten_second_budget_and_loses_nothing() {
    // HubSpot allows 10 calls per 10 s here, and so does the connector.
    let (h, fake) = hubspot(
        FakeOptions {
            ten_second_limit: Some(10),
            ..FakeOptions::default()
        },
        &[("HUBSPOT_RATE_LIMIT", "10"), ("RETRY_MAX_ATTEMPTS", "12")],
    )
    .await;
    finds_installs(&h.enerflo).await;
    // Four projects: 12 calls (contact, deal, association each), more than one window holds.
    for n in [1, 2, 3, 4] {
        assert_eq!(h.post_webhook(submission(n)).await.0, 202);
    }
    h.drain(Duration::from_secs(60)).await;
    assert_eq!(
        fake.records(ObjectType::Deal).len(),
        4,
        "every project arrived"
    );
    assert!(
        fake.max_requests_in_any_window(Duration::from_secs(10)) <= 10,
        "at most 10 counted calls in any 10 s window"
    );
    assert!(
        fake.calls().iter().all(|c| c.status != 429),
        "the budget kept every call under HubSpot's limit: {:#?}",
        fake.calls()
            .iter()
            .filter(|c| c.status == 429)
            .collect::<Vec<_>>()
    );
    assert!(h.dead_letters(Stage::Project).is_empty());
}

#[tokio::test]
async fn a_validation_error_dead_letters_the_event_naming_the_property() {
    // A profile naming a deal property the portal does not have.
    let dir = sync_tests::temp_dir("hs-profile");
    let profile = enerflo_sync::crm::profile::HUBSPOT_DEFAULT.replace(
        "\"enerflo_panel_count\": {\"field\": \"system.panel_count\"",
        "\"panel_cnt\": {\"field\": \"system.panel_count\"",
    );
    assert!(profile.contains("panel_cnt"));
    let file = dir.join("profile.json");
    std::fs::write(&file, profile).unwrap();
    let file = file.display().to_string();
    let (h, fake) = hubspot(
        FakeOptions::default(),
        &[("CRM_MAPPING_FILE", file.as_str())],
    )
    .await;
    finds_installs(&h.enerflo).await;
    h.deliver(submission(1)).await;
    let dead = h.dead_letters(Stage::Project);
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert!(dead[0].reason.contains("panel_cnt"), "{}", dead[0].reason);
    assert!(
        dead[0].reason.contains("VALIDATION_ERROR"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].attempts, 1, "permanent: not retried");
    assert!(fake.records(ObjectType::Deal).is_empty());
}

#[tokio::test]
async fn a_stage_set_from_enerflo_sent_back_by_a_signed_workflow_writes_nothing_to_enerflo() {
    const CLIENT_SECRET: &str = "fake-client-secret-e2e-0001";
    let (h, fake) = hubspot(
        FakeOptions::default(),
        &[("HUBSPOT_CLIENT_SECRET", CLIENT_SECRET)],
    )
    .await;
    finds_installs(&h.enerflo).await;
    sync_tests::enerflo::lists_statuses(&h.enerflo).await;
    sync_tests::enerflo::accepts_install_updates(&h.enerflo).await;
    h.deliver(submission(1)).await;
    h.deliver(status_event(5, "Voided")).await;
    let deal = fake.records(ObjectType::Deal).remove(0);
    assert_eq!(deal.get("dealstage"), Some("closedlost"));

    // HubSpot's workflow fires on the stage change we made and calls us, signed (v3) by the
    // fake's emitter, an implementation independent of our verifier.
    let url = h.runner.url("/crm/hubspot/status");
    let sent = fake
        .emit_workflow(
            &url,
            &json!({"hs_object_id": deal.id, "dealstage": "closedlost"}),
            enerflo_sync_local::fakes::hubspot::EmitAuth::SignatureV3 {
                client_secret: CLIENT_SECRET.into(),
            },
        )
        .await;
    assert!(sent.delivered, "{sent:#?}");
    let answer: serde_json::Value =
        serde_json::from_str(&sent.attempts.last().unwrap().response).unwrap();
    assert_eq!(answer["status"], "echo", "{answer}");
    assert_eq!(
        sync_tests::enerflo::writes(&h.enerflo).await,
        0,
        "nothing written to Enerflo"
    );

    // A stage a person set in HubSpot is news: it reaches Enerflo as the mapped status.
    let sent = fake
        .emit_workflow(
            &url,
            &json!({"hs_object_id": deal.id, "dealstage": "closedwon"}),
            enerflo_sync_local::fakes::hubspot::EmitAuth::SignatureV3 {
                client_secret: CLIENT_SECRET.into(),
            },
        )
        .await;
    assert!(sent.delivered, "{sent:#?}");
    let puts: Vec<serde_json::Value> = h
        .enerflo
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "PUT")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(puts.len(), 1, "{puts:#?}");
    assert_eq!(
        puts[0]["status_id"], 6,
        "Completed, through the profile's stage map"
    );

    // A wrong secret is refused and not retried (4xx), and writes nothing.
    let refused = fake
        .emit_workflow(
            &url,
            &json!({"hs_object_id": deal.id, "dealstage": "closedlost"}),
            enerflo_sync_local::fakes::hubspot::EmitAuth::SignatureV3 {
                client_secret: "another-app-secret".into(),
            },
        )
        .await;
    assert!(!refused.delivered);
    assert_eq!(refused.attempts.len(), 1);
    assert_eq!(refused.attempts[0].status, Some(401));
}
