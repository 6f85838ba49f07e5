//! The connector's calls and its reading of HubSpot's answers, against wiremock. End-to-end
//! behaviour against the faithful fake is in the tests crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::canonical::EnerfloRefs;
use crate::crm::profile::HUBSPOT_DEFAULT;
use crate::secret::Secret;

const TOKEN: &str = "pat-na1-00000000-0000-0000-0000-000000000000";

fn connector(server: &MockServer) -> HubSpotConnector {
    let api = HubSpotApi::new(
        &server.uri(),
        Secret::new(TOKEN),
        Duration::from_secs(5),
        100,
    )
    .unwrap();
    let profile = Profile::parse("built-in hubspot", HUBSPOT_DEFAULT).unwrap();
    let mut keys = BTreeMap::new();
    keys.insert("pto".to_owned(), 77);
    HubSpotConnector::new(Arc::new(api), Arc::new(profile), "default", keys)
}

fn event(t: CrmEventType, crm_id: Option<&str>, data: Value) -> CrmEvent {
    CrmEvent {
        event_type: t,
        id: "evt_0123".into(),
        occurred_at: "2026-11-28T10:00:00Z".into(),
        source_event: "test".into(),
        crm_id: crm_id.map(str::to_owned),
        enerflo: EnerfloRefs {
            customer_id: Some(7),
            deal_id: Some("deal-uuid-1".into()),
            install_id: Some(42),
            ..EnerfloRefs::default()
        },
        data,
        raw: None,
    }
}

fn upserted(id: &str, new: bool) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "status": "COMPLETE",
        "results": [{"id": id, "new": new, "properties": {}}],
        "startedAt": "2026-11-28T10:00:00Z", "completedAt": "2026-11-28T10:00:00Z"
    }))
}

fn lead() -> CrmEvent {
    event(
        CrmEventType::LeadUpserted,
        None,
        json!({"first_name": "Jane", "last_name": "Doe", "email": "jane@example.test",
               "address": {"zip": "02110", "state": "MA"}}),
    )
}

#[tokio::test]
async fn a_lead_is_upserted_by_its_enerflo_customer_id_with_string_values() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/batch/upsert"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_partial_json(json!({"inputs": [{
            "idProperty": "enerflo_customer_id", "id": "7", "objectWriteTraceId": "evt_0123",
            "properties": {"firstname": "Jane", "zip": "02110", "email": "jane@example.test"}
        }]})))
        .respond_with(upserted("512", true))
        .expect(1)
        .mount(&server)
        .await;
    let ack = connector(&server).deliver(&lead()).await.unwrap();
    assert_eq!(ack.crm_id.as_deref(), Some("512"));
}

#[tokio::test]
async fn a_contact_that_exists_by_email_is_adopted_not_duplicated() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/batch/upsert"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "status": "error", "message": "Contact already exists. Existing ID: 901",
            "correlationId": "00000000-0000-0000-0000-000000000009", "category": "CONFLICT"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/crm/v3/objects/contacts/901"))
        .and(body_partial_json(
            json!({"properties": {"enerflo_customer_id": "7", "firstname": "Jane"}}),
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "901", "properties": {}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let ack = connector(&server).deliver(&lead()).await.unwrap();
    assert_eq!(ack.crm_id.as_deref(), Some("901"));
}

#[tokio::test]
async fn a_conflict_item_in_a_207_is_adopted_too() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/batch/upsert"))
        .respond_with(ResponseTemplate::new(207).set_body_json(json!({
            "status": "COMPLETE", "results": [], "numErrors": 1,
            "errors": [{"status": "error", "category": "CONFLICT",
                        "message": "Contact already exists. Existing ID: 902", "context": {"ids": ["7"]}}]})))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/crm/v3/objects/contacts/902"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "902"})))
        .expect(1)
        .mount(&server)
        .await;
    let ack = connector(&server).deliver(&lead()).await.unwrap();
    assert_eq!(ack.crm_id.as_deref(), Some("902"));
}

#[tokio::test]
async fn a_validation_error_is_permanent_and_names_the_property() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/batch/upsert"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "status": "error", "message": "Property values were not valid", "category": "VALIDATION_ERROR",
            "correlationId": "00000000-0000-0000-0000-00000000000a",
            "errors": [{"message": "Property \"enerflo_lead_source\" does not exist", "code": "PROPERTY_DOESNT_EXIST"}]})))
        .mount(&server)
        .await;
    let mut ev = lead();
    ev.data["lead_source"] = json!("Door knock");
    let err = connector(&server).deliver(&ev).await.unwrap_err();
    let CrmError::Rejected { status, message } = &err else {
        panic!("permanent expected, got {err:?}");
    };
    assert_eq!(*status, 400);
    assert!(message.contains("enerflo_lead_source"), "{message}");
    // The DLQ reason carries it (SyncError's cause), log lines do not.
    let sync: crate::error::SyncError = err.into();
    assert!(!sync.is_transient());
}

#[tokio::test]
async fn a_ten_secondly_429_pauses_every_caller_and_a_daily_one_backs_off_long() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/batch/upsert"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "status": "error", "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING",
            "correlationId": "00000000-0000-0000-0000-00000000000b"})))
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    let err = c.deliver(&lead()).await.unwrap_err();
    match &err {
        CrmError::Unavailable {
            status: Some(429),
            retry_after: Some(wait),
            detail,
        } => {
            assert_eq!(*wait, Duration::from_secs(10));
            assert!(detail.contains("TEN_SECONDLY_ROLLING"), "{detail}");
        }
        other => panic!("transient 429 expected, got {other:?}"),
    }
    // The next delivery does not go out during the window (the mock expects one call).
    let held = c.deliver(&lead()).await.unwrap_err();
    assert!(
        matches!(held, CrmError::Unavailable { status: None, .. }),
        "{held:?}"
    );

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "status": "error", "message": "You have reached your daily limit.",
            "errorType": "RATE_LIMIT", "policyName": "DAILY"})))
        .mount(&server)
        .await;
    let err = connector(&server).deliver(&lead()).await.unwrap_err();
    match &err {
        CrmError::Unavailable {
            retry_after: Some(wait),
            detail,
            ..
        } => {
            assert!(*wait >= Duration::from_secs(3600), "{wait:?}");
            assert!(detail.contains("daily"), "{detail}");
        }
        other => panic!("transient expected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_new_project_upserts_contact_and_deal_in_the_first_stage_and_associates_them() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/batch/upsert"))
        .and(body_partial_json(
            json!({"inputs": [{"idProperty": "enerflo_customer_id", "id": "7"}]}),
        ))
        .respond_with(upserted("512", true))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/deals/batch/upsert"))
        .and(body_partial_json(json!({"inputs": [{
            "idProperty": "enerflo_deal_id", "id": "deal-uuid-1",
            "properties": {"pipeline": "default", "dealstage": "appointmentscheduled",
                           "enerflo_install_id": "42", "enerflo_system_size_kw": "8.4"}}]})))
        .respond_with(upserted("9001", true))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(
            "/crm/v4/objects/deals/9001/associations/default/contacts/512",
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": "COMPLETE", "results": []})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let ev = event(
        CrmEventType::ProjectSubmitted,
        None,
        json!({"customer": {"first_name": "Jane", "email": "jane@example.test"},
               "system": {"size_watts": 8400}}),
    );
    let ack = connector(&server).deliver(&ev).await.unwrap();
    assert_eq!(ack.crm_id.as_deref(), Some("9001"));
}

#[tokio::test]
async fn a_linked_project_keeps_its_stage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/batch/upsert"))
        .respond_with(upserted("512", false))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/crm/v3/objects/deals/9001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "9001"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&server)
        .await;
    let ev = event(
        CrmEventType::ProjectReceived,
        Some("9001"),
        json!({"customer": {"first_name": "Jane"}, "resubmission": true}),
    );
    connector(&server).deliver(&ev).await.unwrap();
    let patch = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.method.as_str() == "PATCH")
        .unwrap();
    let body: Value = serde_json::from_slice(&patch.body).unwrap();
    assert!(body["properties"].get("dealstage").is_none(), "{body}");
    assert!(body["properties"].get("pipeline").is_none(), "{body}");
    assert_eq!(body["properties"]["enerflo_resubmission"], "true");
}

#[tokio::test]
async fn a_status_moves_the_stage_through_the_map_and_an_unmapped_one_leaves_it() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/crm/v3/objects/deals/9001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "9001"})))
        .mount(&server)
        .await;
    let c = connector(&server);
    for name in ["Voided", "Permitting"] {
        let ev = event(
            CrmEventType::StatusChanged,
            Some("9001"),
            json!({"status": {"id": 3, "name": name}, "on_hold": false}),
        );
        c.deliver(&ev).await.unwrap();
    }
    let bodies: Vec<Value> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(bodies[0]["properties"]["dealstage"], "closedlost");
    assert_eq!(bodies[0]["properties"]["enerflo_project_status"], "Voided");
    assert!(bodies[1]["properties"].get("dealstage").is_none());
    assert_eq!(
        bodies[1]["properties"]["enerflo_project_status"],
        "Permitting"
    );
}

#[tokio::test]
async fn an_unlinked_install_finds_its_deal_by_enerflo_id_or_waits_for_it() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/crm/v3/objects/deals/deal-uuid-1"))
        .and(query_param("idProperty", "enerflo_deal_id"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"status": "error", "message": "Object not found", "category": "OBJECT_NOT_FOUND"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/crm/v3/objects/deals/42"))
        .and(query_param("idProperty", "enerflo_install_id"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "9001", "properties": {}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/crm/v3/objects/deals/9001"))
        .and(body_partial_json(
            json!({"properties": {"enerflo_pto_date": "1797292800000"}}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "9001"})))
        .expect(1)
        .mount(&server)
        .await;
    let ev = event(
        CrmEventType::MilestoneUpdated,
        None,
        json!({"milestone": {"id": 77, "title": "PTO"}, "completed_date": "2026-12-15"}),
    );
    let ack = connector(&server).deliver(&ev).await.unwrap();
    assert_eq!(ack.crm_id.as_deref(), Some("9001"));

    let empty = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "not found"})))
        .mount(&empty)
        .await;
    let err = connector(&empty).deliver(&ev).await.unwrap_err();
    assert!(
        matches!(
            err,
            CrmError::Unavailable {
                status: Some(404),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_retried_note_finds_the_note_it_made_and_creates_no_second() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/crm/v4/objects/deals/9001/associations/notes"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "results": [{"toObjectId": 301, "associationTypes": []}, {"toObjectId": 302, "associationTypes": []}]})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/notes/batch/read"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"status": "COMPLETE", "results": [
            {"id": "301", "properties": {"enerflo_note_id": "54"}},
            {"id": "302", "properties": {"enerflo_note_id": "55"}}]}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/notes"))
        .and(body_partial_json(json!({"properties": {"enerflo_note_id": "56"},
            "associations": [{"to": {"id": "9001"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 214}]}]})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "303", "properties": {}})))
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    let note = |id: u64| {
        event(
            CrmEventType::NoteCreated,
            Some("9001"),
            json!({"note": {"id": id, "text": "Permit <submitted>", "author": "Sam",
                            "created_at": "2026-11-28T10:15:00Z"}}),
        )
    };
    assert_eq!(
        c.deliver(&note(55)).await.unwrap().crm_id.as_deref(),
        Some("302")
    );
    assert_eq!(
        c.deliver(&note(56)).await.unwrap().crm_id.as_deref(),
        Some("303")
    );
    let create = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.url.path() == "/crm/v3/objects/notes")
        .unwrap();
    let body: Value = serde_json::from_slice(&create.body).unwrap();
    let html = body["properties"]["hs_note_body"].as_str().unwrap();
    assert!(
        html.starts_with("<p>Permit &lt;submitted&gt;</p>"),
        "{html}"
    );
    assert_eq!(body["properties"]["hs_timestamp"], "1795860900000");
}

#[tokio::test]
async fn a_signed_change_order_updates_the_deal_and_notes_what_changed() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/crm/v3/objects/deals/9001"))
        .and(body_partial_json(json!({"properties": {"enerflo_panel_count": "24", "enerflo_last_change_order_id": "5"}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "9001"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/crm/v4/objects/deals/9001/associations/notes"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": []})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/notes"))
        .and(body_partial_json(
            json!({"properties": {"enerflo_note_id": "change_order:5"}}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "310"})))
        .expect(1)
        .mount(&server)
        .await;
    let ev = event(
        CrmEventType::ChangeOrderSigned,
        Some("9001"),
        json!({"change_order": {"id": 5, "signed_at": "2026-11-28T10:15:00Z"}, "panel_count": 24,
               "changes": {"panel_count": {"old": 20, "new": 24}}}),
    );
    let ack = connector(&server).deliver(&ev).await.unwrap();
    assert_eq!(ack.crm_id.as_deref(), Some("9001"));
    let note = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.url.path() == "/crm/v3/objects/notes")
        .unwrap();
    let body: Value = serde_json::from_slice(&note.body).unwrap();
    assert!(
        body["properties"]["hs_note_body"]
            .as_str()
            .unwrap()
            .contains("panel_count: 20 -&gt; 24"),
        "{body}"
    );
}
