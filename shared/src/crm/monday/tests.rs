//! The connector's calls and its reading of Monday.com's answers, against wiremock. End-to-end
//! behaviour against the faithful fake is in the tests crate (`tests/tests/e2e/monday.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{body_string_contains, header, header_exists, method};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::api::DailyBudget;
use super::*;
use crate::canonical::EnerfloRefs;
use crate::crm::profile::{FieldValue, MONDAY_DEFAULT};
use crate::secret::Secret;
use crate::store::embedded::EmbeddedStore;

const TOKEN: &str = "fake-monday-token-0000";

struct Kit {
    connector: MondayConnector,
    store: Arc<EmbeddedStore>,
}

fn kit(server: &MockServer, daily: Option<u32>) -> Kit {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let api = MondayApi::new(
        &server.uri(),
        Secret::new(TOKEN),
        "2026-10",
        Duration::from_secs(5),
        100,
        daily.map(|limit| DailyBudget {
            counter: store.clone(),
            limit,
        }),
    )
    .unwrap();
    let profile = Profile::parse("built-in monday", MONDAY_DEFAULT).unwrap();
    let boards: BTreeMap<String, String> = [
        ("customers".to_owned(), "1001".to_owned()),
        ("projects".to_owned(), "2002".to_owned()),
    ]
    .into();
    let mut keys = BTreeMap::new();
    keys.insert("permit".to_owned(), 3902);
    let connector = MondayConnector::new(
        Arc::new(api),
        Arc::new(profile),
        boards,
        keys,
        MondayStores {
            xref: store.clone(),
            state: store.clone(),
            claims: store.clone(),
        },
    );
    Kit { connector, store }
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

fn lead() -> CrmEvent {
    event(
        CrmEventType::LeadUpserted,
        None,
        json!({"first_name": "Jane", "last_name": "Doe", "email": "jane@example.test",
               "phone": "(555) 010-0000", "address": {"zip": "02110", "state": "MA"}}),
    )
}

fn data(v: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"data": v,
        "extensions": {"request_id": "00000000-0000-0000-0000-000000000000"}}))
}

fn body(req: &Request) -> Value {
    serde_json::from_slice(&req.body).unwrap()
}

async fn calls(server: &MockServer, op: &str) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(body)
        .filter(|b| b["query"].as_str().unwrap_or("").contains(op))
        .collect()
}

async fn search_finds(server: &MockServer, ids: &[&str]) {
    let items: Vec<Value> = ids.iter().map(|i| json!({"id": i})).collect();
    Mock::given(method("POST"))
        .and(body_string_contains("items_page_by_column_values"))
        .respond_with(data(
            json!({"items_page_by_column_values": {"cursor": null, "items": items}}),
        ))
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_new_lead_is_looked_up_then_created_once_in_each_column_s_format() {
    let server = MockServer::start().await;
    search_finds(&server, &[]).await;
    Mock::given(method("POST"))
        .and(body_string_contains("create_item"))
        .and(header("authorization", TOKEN))
        .and(header("api-version", "2026-10"))
        .and(header_exists("idempotency-key"))
        .respond_with(data(json!({"create_item": {"id": "5551"}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("change_multiple_column_values"))
        .respond_with(data(
            json!({"change_multiple_column_values": {"id": "5551"}}),
        ))
        .mount(&server)
        .await;
    let k = kit(&server, None);
    let ack = k.connector.deliver(&lead()).await.unwrap();
    assert_eq!(ack.crm_id.as_deref(), Some("5551"));
    let create = &calls(&server, "create_item").await[0];
    assert_eq!(create["variables"]["b"], "1001");
    assert_eq!(create["variables"]["n"], "Jane Doe");
    assert!(create["query"].as_str().unwrap().contains("complexity"));
    let values: Value = serde_json::from_str(create["variables"]["v"].as_str().unwrap()).unwrap();
    assert_eq!(values["enerflo_customer_id"], "7");
    assert_eq!(
        values["email"],
        json!({"email": "jane@example.test", "text": "jane@example.test"})
    );
    assert_eq!(
        values["phone"],
        json!({"phone": "+15550100000", "countryShortName": "US"})
    );
    assert_eq!(values["zip"], "02110");
    let search = &calls(&server, "items_page_by_column_values").await[0];
    assert_eq!(
        search["variables"]["c"],
        json!([{"column_id": "enerflo_customer_id", "column_values": ["7"]}])
    );

    // The retry of a lost answer, while Monday's search still lags: our own record of the
    // item finds it, and no second item is created.
    let again = k.connector.deliver(&lead()).await.unwrap();
    assert_eq!(again.crm_id.as_deref(), Some("5551"));
    assert_eq!(calls(&server, "create_item").await.len(), 1);
    assert_eq!(
        calls(&server, "change_multiple_column_values").await.len(),
        1
    );
    drop(k.store);
}

#[tokio::test]
async fn a_status_sets_the_label_of_the_status_map_creating_none() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("change_multiple_column_values"))
        .respond_with(data(
            json!({"change_multiple_column_values": {"id": "777"}}),
        ))
        .mount(&server)
        .await;
    let k = kit(&server, None);
    let ev = event(
        CrmEventType::StatusChanged,
        Some("777"),
        json!({"status": {"id": 9, "name": "permitting complete"}}),
    );
    k.connector.deliver(&ev).await.unwrap();
    let sent = calls(&server, "change_multiple_column_values").await;
    assert_eq!(sent.len(), 1, "a linked item costs one call");
    let values: Value = serde_json::from_str(sent[0]["variables"]["v"].as_str().unwrap()).unwrap();
    assert_eq!(
        values["project_status"],
        json!({"label": "Permitting Complete"})
    );
    assert_eq!(values["enerflo_status"], "permitting complete");
    assert_eq!(sent[0]["variables"]["l"], false, "no label is created");
}

#[tokio::test]
async fn a_column_value_error_is_permanent_and_names_the_column() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": {"change_multiple_column_values": null},
            "errors": [{"message": "invalid value - label does not exist in column",
                "path": ["change_multiple_column_values"],
                "extensions": {"code": "ColumnValueException", "status_code": 200,
                    "error_data": {"column_id": "project_status", "column_type": "color"}}}]})))
        .mount(&server)
        .await;
    let k = kit(&server, None);
    let ev = event(
        CrmEventType::StatusChanged,
        Some("777"),
        json!({"status": {"name": "Voided"}}),
    );
    match k.connector.deliver(&ev).await.unwrap_err() {
        CrmError::Rejected { message, .. } => {
            assert!(message.contains("ColumnValueException"), "{message}");
            assert!(message.contains("project_status"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_value_that_does_not_fit_its_column_is_refused_before_sending() {
    let server = MockServer::start().await;
    let k = kit(&server, None);
    let ev = event(
        CrmEventType::LeadUpserted,
        Some("5551"),
        json!({"first_name": "Jane", "phone": "12"}),
    );
    match k.connector.deliver(&ev).await.unwrap_err() {
        CrmError::Rejected { message, .. } => {
            assert!(
                message.contains("column `phone` (phone column)"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_complexity_error_waits_the_time_monday_gives_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({"errors": [{
            "message": "Complexity budget exhausted",
            "extensions": {"code": "COMPLEXITY_BUDGET_EXHAUSTED", "retry_in_seconds": 1}}]})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(data(json!({"change_multiple_column_values": {"id": "777"},
            "complexity": {"after": 9_000_000, "reset_in_x_seconds": 30}})))
        .mount(&server)
        .await;
    let k = kit(&server, None);
    let ev = event(
        CrmEventType::StatusChanged,
        Some("777"),
        json!({"status": {"name": "Voided"}}),
    );
    let started = std::time::Instant::now();
    k.connector.deliver(&ev).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_long_limit_error_is_transient_with_monday_s_wait_and_holds_every_caller() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({"errors": [{
            "message": "Daily limit exceeded",
            "extensions": {"code": "DAILY_LIMIT_EXCEEDED", "retry_in_seconds": 3599}}]})))
        .mount(&server)
        .await;
    let k = kit(&server, None);
    let ev = event(
        CrmEventType::StatusChanged,
        Some("777"),
        json!({"status": {"name": "Voided"}}),
    );
    match k.connector.deliver(&ev).await.unwrap_err() {
        CrmError::Unavailable {
            retry_after,
            detail,
            ..
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(3599)));
            assert!(detail.contains("daily call limit"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // The next event is not sent at all while the pause holds.
    assert!(k.connector.deliver(&ev).await.is_err());
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn past_the_daily_call_budget_nothing_is_sent_and_the_reason_names_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(data(
            json!({"change_multiple_column_values": {"id": "777"}}),
        ))
        .mount(&server)
        .await;
    let k = kit(&server, Some(2));
    let ev = event(
        CrmEventType::StatusChanged,
        Some("777"),
        json!({"status": {"name": "Voided"}}),
    );
    k.connector.deliver(&ev).await.unwrap();
    k.connector.deliver(&ev).await.unwrap();
    match k.connector.deliver(&ev).await.unwrap_err() {
        CrmError::Unavailable {
            detail,
            retry_after,
            ..
        } => {
            assert!(detail.contains("MONDAY_DAILY_CALL_BUDGET"), "{detail}");
            assert!(retry_after.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_note_is_posted_once_as_an_update_with_our_marker() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("create_update"))
        .and(header_exists("idempotency-key"))
        .respond_with(data(json!({"create_update": {"id": "9001"}})))
        .expect(1)
        .mount(&server)
        .await;
    let k = kit(&server, None);
    let ev = event(
        CrmEventType::NoteCreated,
        Some("777"),
        json!({"note": {"id": 41, "text": "Permit <approved>", "author": "Sam"}}),
    );
    assert_eq!(
        k.connector.deliver(&ev).await.unwrap().crm_id.as_deref(),
        Some("9001")
    );
    assert_eq!(
        k.connector.deliver(&ev).await.unwrap().crm_id.as_deref(),
        Some("9001")
    );
    let posted = &calls(&server, "create_update").await[0];
    let body = posted["variables"]["b"].as_str().unwrap();
    assert!(body.contains("Permit &lt;approved&gt;"), "{body}");
    assert!(body.contains("Enerflo note 41"), "{body}");
    assert!(is_our_update(body));
    assert!(!is_our_update("Enerflo note: call the customer"));
}

#[tokio::test]
async fn an_install_event_without_its_item_waits_for_the_project() {
    let server = MockServer::start().await;
    search_finds(&server, &[]).await;
    let k = kit(&server, None);
    let ev = event(
        CrmEventType::StatusChanged,
        None,
        json!({"status": {"name": "Voided"}}),
    );
    match k.connector.deliver(&ev).await.unwrap_err() {
        CrmError::Unavailable { detail, .. } => {
            assert!(detail.contains("enerflo_deal_id=deal-uuid-1"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_column_type_gets_its_own_value_format() {
    let t = |s: &str| FieldValue::Text(s.into());
    assert_eq!(t("x").monday("text").unwrap(), json!("x"));
    assert_eq!(
        t("a\nb").monday("long_text").unwrap(),
        json!({"text": "a\nb"})
    );
    assert_eq!(
        FieldValue::Number(8.4).monday("numbers").unwrap(),
        json!("8.4")
    );
    assert!(t("eight").monday("numbers").is_err());
    assert_eq!(
        t("Done").monday("status").unwrap(),
        json!({"label": "Done"})
    );
    assert_eq!(
        t("2026-03-04").monday("date").unwrap(),
        json!({"date": "2026-03-04"})
    );
    assert!(t("soon").monday("date").is_err());
    let at = crate::crm::profile::convert_one(
        &Conversion::DateTime,
        &json!("2026-03-04T18:00:00-02:00"),
    )
    .unwrap();
    assert_eq!(
        at.monday("date").unwrap(),
        json!({"date": "2026-03-04", "time": "20:00:00"})
    );
    assert_eq!(
        t("+44 20 7946 0000").monday("phone").unwrap(),
        json!({"phone": "+442079460000"})
    );
    assert_eq!(
        t("29.9, -95.3, 1 Placeholder Way")
            .monday("location")
            .unwrap(),
        json!({"lat": "29.9", "lng": "-95.3", "address": "1 Placeholder Way"})
    );
    assert!(t("1 Placeholder Way").monday("location").is_err());
    assert_eq!(
        t("Roof; Battery").monday("dropdown").unwrap(),
        json!({"labels": ["Roof", "Battery"]})
    );
    assert_eq!(
        t("https://app.example.test/p/1").monday("link").unwrap(),
        json!({"url": "https://app.example.test/p/1", "text": "https://app.example.test/p/1"})
    );
    assert_eq!(
        FieldValue::Bool(true).monday("checkbox").unwrap(),
        json!({"checked": "true"})
    );
    assert_eq!(
        FieldValue::Bool(false).monday("checkbox").unwrap(),
        Value::Null
    );
    assert_eq!(
        t("55").monday("board_relation").unwrap(),
        json!({"item_ids": [55]})
    );
}

#[test]
fn the_built_in_monday_profile_is_valid_and_names_its_boards() {
    let p = Profile::parse("built-in monday", MONDAY_DEFAULT).unwrap();
    let mut objects = p.objects();
    objects.sort();
    assert_eq!(objects, ["customers", "projects"]);
    assert_eq!(p.stages.property, "project_status");
    assert!(!p.stages.create_labels);
    assert_eq!(
        p.event(CrmEventType::LeadUpserted).properties["email"].column_type(),
        "email"
    );
    assert_eq!(
        p.event(CrmEventType::ProjectSubmitted).properties["gross_cost"].column_type(),
        "numbers"
    );
    let bad = MONDAY_DEFAULT.replace("\"column\": \"email\"", "\"column\": \"e-mail\"");
    let err = Profile::parse("x", &bad).unwrap_err();
    assert!(
        err.to_string().contains("column: `e-mail` is not one of"),
        "{err}"
    );
}
