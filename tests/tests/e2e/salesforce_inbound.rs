//! Salesforce drives Enerflo, end to end through the local runner over HTTP: Flow HTTP Callouts
//! on `POST /crm/salesforce/{lead|status|milestone|note}` reach the same Enerflo calls as the
//! canonical `/crm/*` routes, and Outbound Messages on `POST /crm/salesforce/outbound-message`
//! are acknowledged only once Enerflo has the write, once per notification, from the configured
//! org only, with a stage the sync itself set writing nothing back. Against wiremock, and against
//! the faithful Salesforce fake (`enerflo_sync_local::fakes::salesforce`) and its emitters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use enerflo_sync::inbound::salesforce::soap::{envelope, fault_string, is_ack};
use enerflo_sync::store::{EntityKind, IdForm, IdRef};
use enerflo_sync_local::fakes::salesforce::{
    FakeOptions, NamedCredential, OutboundOptions, RetrySchedule, SalesforceFake, spawn,
};
use serde_json::{Value, json};
use sync_tests::enerflo::{
    SAMPLE_INSTALL, accepts_install_updates, accepts_milestone_writes, accepts_notes, adds_leads,
    finds_installs, lead_add_bodies, lists_statuses, submission, writes,
};
use sync_tests::{Answer, Harness, start};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ORG: &str = "00D000000000001EAA";
const OPPORTUNITY: &str = "006000000000001AAA";

async fn harness(extra: &[(&str, &str)]) -> Harness {
    let mut env = vec![
        ("SALESFORCE_ORG_ID", ORG),
        ("MILESTONE_KEY_MAP", "pto=3905"),
    ];
    env.extend_from_slice(extra);
    start(&env).await
}

/// The sample install linked to the Opportunity, as the project stage leaves it.
async fn link_opportunity(h: &Harness) {
    h.runner
        .ports
        .xref
        .link(
            EntityKind::Project,
            &[
                IdRef::new(IdForm::Install, SAMPLE_INSTALL),
                IdRef::new(IdForm::Crm, OPPORTUNITY),
            ],
        )
        .await
        .unwrap();
}

/// An Outbound Message as Salesforce posts it, to the endpoint URL `setup` prints.
async fn outbound(h: &Harness, xml: &str) -> Answer {
    let token = enerflo_sync_local::LOCAL_CRM_TOKEN;
    let resp = h
        .http
        .post(
            h.runner
                .url(&format!("/crm/salesforce/outbound-message?token={token}")),
        )
        .header("content-type", "text/xml; charset=utf-8")
        .header("soapaction", "\"\"")
        .body(xml.to_owned())
        .send()
        .await
        .unwrap();
    let a = Answer::of(resp).await;
    assert_eq!(a.content_type, "text/xml; charset=utf-8", "{}", a.text);
    a
}

fn stage_message(notification: &str, stage: &str) -> String {
    envelope(
        ORG,
        &[(
            notification,
            "Opportunity",
            vec![
                ("Id", Some(OPPORTUNITY)),
                ("StageName", Some(stage)),
                ("PTO_Date__c", None),
            ],
        )],
    )
}

/// Every Enerflo write (anything but `GET`), as (method path, body), in order.
async fn enerflo_writes(enerflo: &MockServer) -> Vec<(String, Value)> {
    enerflo
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() != "GET")
        .map(|r| {
            (
                format!("{} {}", r.method, r.url.path()),
                serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_flow_callout_per_route_reaches_the_same_enerflo_call_as_the_crm_route() {
    let h = harness(&[]).await;
    link_opportunity(&h).await;
    adds_leads(&h.enerflo, Duration::ZERO).await;
    lists_statuses(&h.enerflo).await;
    accepts_install_updates(&h.enerflo).await;
    accepts_milestone_writes(&h.enerflo).await;
    accepts_notes(&h.enerflo, 5001).await;
    let lead = |id: &str| {
        json!({"first_name": "Pat", "last_name": "Placeholder", "email": "pat.placeholder@example.com",
               "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX", "zip": "75001"},
               "crm_id": id})
    };
    let install = format!("/crm/installs/enerflo:{SAMPLE_INSTALL}");
    let pairs: Vec<(http::Method, String, Value, &str, Value)> = vec![
        (
            http::Method::POST,
            "/crm/leads".into(),
            lead("003000000000001AAA"),
            "lead",
            {
                let mut l = lead("");
                l.as_object_mut().unwrap().remove("crm_id");
                l["record_id"] = json!("003000000000002AAA");
                l
            },
        ),
        (
            http::Method::PUT,
            format!("{install}/status"),
            json!({"status": "Completed"}),
            "status",
            json!({"record_id": OPPORTUNITY, "StageName": "Closed Won"}),
        ),
        (
            http::Method::PUT,
            format!("{install}/milestones/pto"),
            json!({"completed_date": "2026-03-01"}),
            "milestone",
            json!({"record_id": OPPORTUNITY, "PTO_Date__c": "2026-03-01"}),
        ),
        (
            http::Method::POST,
            format!("{install}/notes"),
            json!({"crm_note_id": "note-1", "text": "Site survey booked"}),
            "note",
            json!({"record_id": OPPORTUNITY, "crm_note_id": "069000000000001AAA", "text": "Site survey booked"}),
        ),
    ];
    for (verb, canonical, body, action, flow_body) in pairs {
        let before = enerflo_writes(&h.enerflo).await.len();
        let a = h.crm_call(verb, &canonical, body).await;
        assert!(a.status < 300, "{canonical}: {} {}", a.status, a.text);
        let b = h
            .crm_call(
                http::Method::POST,
                &format!("/crm/salesforce/{action}"),
                flow_body,
            )
            .await;
        assert_eq!(b.status, a.status, "{action}: {}", b.text);
        let w = enerflo_writes(&h.enerflo).await;
        assert_eq!(
            w.len(),
            before + 2,
            "{action}: one Enerflo write each: {w:#?}"
        );
        let (via_crm, via_flow) = (&w[before], &w[before + 1]);
        assert_eq!(via_crm.0, via_flow.0, "{action}: the same Enerflo call");
        if action == "lead" {
            let mut one = via_crm.1["lead"].clone();
            let mut other = via_flow.1["lead"].clone();
            assert_eq!(other["integration_record_id"], "003000000000002AAA");
            one["integration_record_id"] = Value::Null;
            other["integration_record_id"] = Value::Null;
            assert_eq!(one, other, "the same lead");
        } else {
            assert_eq!(via_crm.1, via_flow.1, "{action}: the same body");
        }
    }
    assert_eq!(lead_add_bodies(&h.enerflo).await.len(), 2);
}

#[tokio::test]
async fn an_outbound_message_is_acked_only_after_the_enerflo_write_and_a_repeat_writes_nothing() {
    let h = harness(&[]).await;
    link_opportunity(&h).await;
    lists_statuses(&h.enerflo).await;
    // Enerflo is down for the first delivery.
    Mock::given(method("PUT"))
        .and(path(format!("/api/v3/installs/{SAMPLE_INSTALL}")))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(4)
        .with_priority(1)
        .mount(&h.enerflo)
        .await;
    accepts_install_updates(&h.enerflo).await;
    let xml = stage_message("04l000000000001AAA", "Closed Won");

    let first = outbound(&h, &xml).await;
    assert_eq!(first.status, 503, "{}", first.text);
    assert!(!is_ack(first.text.as_bytes()));
    assert!(
        fault_string(first.text.as_bytes())
            .unwrap()
            .contains("04l000000000001AAA")
    );

    // Salesforce's retry: acknowledged, and by then Enerflo has taken the write.
    let retry = outbound(&h, &xml).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert!(is_ack(retry.text.as_bytes()), "{}", retry.text);
    let taken = h
        .enerflo
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "PUT")
        .count();
    assert!(
        taken >= 2,
        "the 503s and the accepted write, before the ack"
    );
    let after_ack = writes(&h.enerflo).await;

    // Duplicates (at-least-once delivery) are acknowledged and write nothing.
    for _ in 0..2 {
        let again = outbound(&h, &xml).await;
        assert_eq!(again.status, 200);
        assert!(is_ack(again.text.as_bytes()));
    }
    assert_eq!(writes(&h.enerflo).await, after_ack);
}

#[tokio::test]
async fn a_wrong_org_is_refused_and_a_malformed_envelope_faulted_with_nothing_written() {
    let h = harness(&[]).await;
    link_opportunity(&h).await;
    lists_statuses(&h.enerflo).await;
    accepts_install_updates(&h.enerflo).await;
    let other_org = envelope(
        "00D000000000009EAA",
        &[(
            "04l000000000002AAA",
            "Opportunity",
            vec![("Id", Some(OPPORTUNITY)), ("StageName", Some("Closed Won"))],
        )],
    );
    let refused = outbound(&h, &other_org).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.text.contains("soapenv:Fault"));
    for malformed in [
        "<notifications>".to_owned(),
        stage_message("04l000000000003AAA", "Closed Won").replace("<OrganizationId>", "<Org>"),
    ] {
        let faulted = outbound(&h, &malformed).await;
        assert_eq!(faulted.status, 400, "{}", faulted.text);
        assert!(
            fault_string(faulted.text.as_bytes())
                .unwrap()
                .starts_with("Malformed Outbound Message")
        );
    }
    assert_eq!(h.enerflo.received_requests().await.unwrap().len(), 0);
}

/// A Salesforce org with one Opportunity for the sample install: a token endpoint, the
/// Opportunity found by `Enerflo_Install_Id__c`, and its updates accepted (204).
async fn salesforce_org() -> MockServer {
    let sf = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "00D000000000001!fake-token", "instance_url": sf.uri(),
            "token_type": "Bearer", "issued_at": "1764324000000"})))
        .mount(&sf)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/services/data/v[0-9.]+/sobjects/Opportunity/Enerflo_Install_Id__c/700001$",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "attributes": {"type": "Opportunity"}, "Id": OPPORTUNITY})))
        .mount(&sf)
        .await;
    Mock::given(method("PATCH"))
        .and(path_regex(format!(
            r"^/services/data/v[0-9.]+/sobjects/Opportunity/{OPPORTUNITY}$"
        )))
        .respond_with(ResponseTemplate::new(204))
        .mount(&sf)
        .await;
    sf
}

#[tokio::test]
async fn the_echo_of_a_stage_the_sync_set_writes_nothing_to_enerflo() {
    let sf = salesforce_org().await;
    let login = sf.uri();
    let h = harness(&[
        ("CRM_CONNECTOR", "salesforce"),
        ("SALESFORCE_LOGIN_URL", login.as_str()),
        ("SALESFORCE_CLIENT_ID", "3MVG9-test-client"),
        ("SALESFORCE_CLIENT_SECRET", "test-secret-not-real"),
    ])
    .await;
    lists_statuses(&h.enerflo).await;
    accepts_install_updates(&h.enerflo).await;

    // Enerflo completes the install; the sync moves the Opportunity to Closed Won.
    h.deliver(
        json!({"webhook_event": "update_install", "id": SAMPLE_INSTALL,
               "status": {"id": 6, "name": "Completed"},
               "timestamps": {"updated_at": "2025-04-01 10:00:00", "timezone": "UTC"}})
        .to_string(),
    )
    .await;
    let patches: Vec<Value> = sf
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(patches.len(), 1, "{patches:#?}");
    assert_eq!(patches[0]["StageName"], "Closed Won");

    // The org's Outbound Message fires on that change and sends the stage back.
    let xml = envelope(
        ORG,
        &[(
            "04l000000000004AAA",
            "Opportunity",
            vec![
                ("Id", Some(OPPORTUNITY)),
                ("Enerflo_Install_Id__c", Some("700001")),
                ("StageName", Some("Closed Won")),
            ],
        )],
    );
    let answer = outbound(&h, &xml).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(is_ack(answer.text.as_bytes()));
    h.settle().await;
    assert_eq!(writes(&h.enerflo).await, 0, "nothing written to Enerflo");

    // A stage a user sets in Salesforce is written.
    let user = outbound(
        &h,
        &envelope(
            ORG,
            &[(
                "04l000000000005AAA",
                "Opportunity",
                vec![
                    ("Id", Some(OPPORTUNITY)),
                    ("Enerflo_Install_Id__c", Some("700001")),
                    ("StageName", Some("Closed Lost")),
                ],
            )],
        ),
    )
    .await;
    assert_eq!(user.status, 200, "{}", user.text);
    assert_eq!(
        enerflo_writes(&h.enerflo).await,
        [(
            format!("PUT /api/v3/installs/{SAMPLE_INSTALL}"),
            json!({"status_id": 5})
        )]
    );
}

// ---- against the faithful Salesforce fake and its emitters ---------------------------------

/// A runner whose CRM is the Salesforce fake (set up with the profile's fields), accepting the
/// fake org's Outbound Messages; the fake delivers each message twice more after its ack.
async fn with_fake_org() -> (Harness, Arc<SalesforceFake>, String) {
    let opts = FakeOptions {
        outbound: OutboundOptions {
            schedule: RetrySchedule::compressed(1000),
            duplicates: 2,
            ..OutboundOptions::default()
        },
        ..FakeOptions::default()
    }
    .with_enerflo_fields();
    let (client_id, secret, org) = (
        opts.client_id.clone(),
        opts.client_secret.clone(),
        opts.org_id.clone(),
    );
    let (url, fake) = spawn(opts).await;
    let h = start(&[
        ("CRM_CONNECTOR", "salesforce"),
        ("SALESFORCE_LOGIN_URL", url.as_str()),
        ("SALESFORCE_CLIENT_ID", client_id.as_str()),
        ("SALESFORCE_CLIENT_SECRET", secret.as_str()),
        ("SALESFORCE_ORG_ID", org.as_str()),
        ("MILESTONE_KEY_MAP", "pto=3905"),
    ])
    .await;
    (h, fake, url)
}

fn endpoint(h: &Harness) -> String {
    h.runner.url(&format!(
        "/crm/salesforce/outbound-message?token={}",
        enerflo_sync_local::LOCAL_CRM_TOKEN
    ))
}

#[tokio::test]
async fn the_fake_orgs_outbound_messages_write_a_users_stage_once_and_the_syncs_own_stage_never() {
    let (h, fake, url) = with_fake_org().await;
    finds_installs(&h.enerflo).await;
    lists_statuses(&h.enerflo).await;
    accepts_install_updates(&h.enerflo).await;

    // The project lands as an Opportunity; Enerflo voids it, the sync moves it to Closed Lost.
    h.deliver(submission(1)).await;
    h.deliver(
        json!({"webhook_event": "update_install", "id": SAMPLE_INSTALL,
               "status": {"id": 5, "name": "Voided"},
               "timestamps": {"updated_at": "2025-04-01 10:00:00", "timezone": "UTC"}})
        .to_string(),
    )
    .await;
    let opp = fake.records("Opportunity").remove(0);
    assert_eq!(opp.str("StageName"), Some("Closed Lost"));

    // The org's Outbound Message on that change (values read at send time, delivered 3 times).
    let fields = ["Enerflo_Install_Id__c", "StageName"];
    let msg = fake
        .outbound_message("Opportunity", &[opp.id.as_str()], &fields)
        .unwrap();
    let sent = fake.send_outbound(&endpoint(&h), &msg).await;
    assert!(sent.acked, "{sent:#?}");
    assert_eq!(sent.duplicates_sent, 2);
    h.settle().await;
    assert_eq!(
        writes(&h.enerflo).await,
        0,
        "the sync's own stage wrote nothing"
    );

    // A user wins the deal in Salesforce; the message (and its duplicates) writes it once.
    let token = fake.issue_token();
    let patched = enerflo_sync::wire::client()
        .patch(format!(
            "{url}/services/data/v66.0/sobjects/Opportunity/{}",
            opp.id
        ))
        .bearer_auth(&token)
        .json(&json!({"StageName": "Closed Won"}))
        .send()
        .await
        .unwrap();
    assert!(patched.status().is_success(), "{}", patched.status());
    let msg = fake
        .outbound_message("Opportunity", &[opp.id.as_str()], &fields)
        .unwrap();
    let sent = fake.send_outbound(&endpoint(&h), &msg).await;
    assert!(sent.acked, "{sent:#?}");
    assert_eq!(sent.attempts.len(), 3, "acked at once, then 2 duplicates");
    h.settle().await;
    assert_eq!(
        enerflo_writes(&h.enerflo).await,
        [(
            format!("PUT /api/v3/installs/{SAMPLE_INSTALL}"),
            json!({"status_id": 6})
        )]
    );
}

#[tokio::test]
async fn the_fake_orgs_flow_callout_with_its_named_credential_sets_the_milestone() {
    let (h, fake, _) = with_fake_org().await;
    finds_installs(&h.enerflo).await;
    accepts_milestone_writes(&h.enerflo).await;
    h.deliver(submission(1)).await;
    let opp = fake.records("Opportunity").remove(0);
    let credential =
        NamedCredential::bearer(&h.runner.url(""), enerflo_sync_local::LOCAL_CRM_TOKEN);
    let result = fake
        .flow_callout(
            &credential,
            "POST",
            "/crm/salesforce/milestone",
            &json!({"record_id": opp.id, "PTO_Date__c": "2026-03-01"}),
        )
        .await;
    assert_eq!(result.status, Some(200), "{result:#?}");
    assert_eq!(
        enerflo_writes(&h.enerflo).await,
        [(
            format!("PUT /api/v3/installs/{SAMPLE_INSTALL}/milestones/3905"),
            json!({"completed_date": "2026-03-01"})
        )]
    );
    let wrong = NamedCredential::bearer(&h.runner.url(""), "not-the-token");
    let refused = fake
        .flow_callout(
            &wrong,
            "POST",
            "/crm/salesforce/milestone",
            &json!({"record_id": opp.id, "PTO_Date__c": "2026-03-02"}),
        )
        .await;
    assert_eq!(refused.status, Some(401));
}
