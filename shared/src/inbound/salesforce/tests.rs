//! The Salesforce inbound routes through the router, as their functions wire them
//! (`runtime::inbound_routes`), against a wiremock Enerflo and an in-memory store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::Method;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::soap::{envelope, fault_string, is_ack};
use crate::config::Config;
use crate::enerflo::client::HttpEnerfloClient;
use crate::http::{HttpRequest, HttpResponse, Router};
use crate::queue::embedded::EmbeddedQueue;
use crate::registry::Route;
use crate::runtime::{self, Ports};
use crate::store::embedded::{EmbeddedStore, open_database};
use crate::store::{EntityKind, IdForm, IdRef, XrefStore};
use crate::sync::fingerprints::{status_fingerprint, status_name_fingerprint};
use crate::sync::{Direction, EchoTarget};

const TOKEN: &str = "fake-inbound-token-0001";
const ORG: &str = "00D000000000001EAA";
const INSTALL: u64 = 700001;
const OPPORTUNITY: &str = "006000000000001AAA";
const LEAD_ADD: &str = "/api/v1/partner/action/lead/add";

struct Kit {
    enerflo: MockServer,
    store: Arc<EmbeddedStore>,
    router: Router,
    ports: Ports,
    config: Config,
}

/// The built-in Salesforce profile, with Cancelled also mapped to `Closed Lost` (beside
/// Voided): a stage two statuses share.
fn profile_file() -> String {
    let mut profile: Value = serde_json::from_str(crate::crm::profile::SALESFORCE_DEFAULT).unwrap();
    profile["stages"]["by_status"]["Cancelled"] = json!("Closed Lost");
    let path = std::env::temp_dir().join(format!("sfin-profile-{}.json", fastrand::u64(..)));
    std::fs::write(&path, profile.to_string()).unwrap();
    path.display().to_string()
}

async fn kit_with(extra: &[(&str, &str)]) -> Kit {
    let enerflo = MockServer::start().await;
    let uri = enerflo.uri();
    let profile = profile_file();
    let mut vars: BTreeMap<String, String> = [
        ("ENERFLO_BASE_URL", uri.as_str()),
        ("ENERFLO_API_KEY", "fake-enerflo-key"),
        ("CRM_CONNECTOR", "salesforce"),
        ("CRM_INBOUND_TOKEN", TOKEN),
        ("SALESFORCE_ORG_ID", ORG),
        ("MILESTONE_KEY_MAP", "pto=3905,design=3902"),
        ("INBOUND_WAIT_SECS", "2"),
        ("CRM_MAPPING_FILE", profile.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        match *v {
            "" => vars.remove(*k),
            v => vars.insert((*k).to_owned(), v.to_owned()),
        };
    }
    let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("config");
    let _ = std::fs::remove_file(&profile);
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let ports = Ports::one_store(
        store.clone(),
        Arc::new(EmbeddedQueue::new(open_database(None).unwrap(), [])),
    );
    let client = HttpEnerfloClient::for_tests(&uri);
    let mut router = Router {
        crm_tokens: config.crm_inbound_tokens.clone(),
        max_body_bytes: Some(config.max_body_bytes),
        ..Router::default()
    };
    for canonical in [Route::Leads, Route::Status, Route::Milestone, Route::Note] {
        for (route, handler) in
            runtime::inbound_routes(canonical, &config, &ports, client.clone(), None)
        {
            router.set(route, handler);
        }
    }
    Kit {
        enerflo,
        store,
        router,
        ports,
        config,
    }
}

async fn kit() -> Kit {
    kit_with(&[]).await
}

impl Kit {
    async fn link_opportunity(&self) {
        self.store
            .link(
                EntityKind::Project,
                &[
                    IdRef::new(IdForm::Install, INSTALL),
                    IdRef::new(IdForm::Deal, "deal-uuid-0001"),
                    IdRef::new(IdForm::Crm, OPPORTUNITY),
                ],
            )
            .await
            .unwrap();
    }

    async fn statuses(&self) {
        Mock::given(method("GET"))
            .and(path("/api/v3/install-statuses"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([
                {"id": 1, "name": "New"}, {"id": 6, "name": "Completed"},
                {"id": 7, "name": "Voided"}, {"id": 8, "name": "Cancelled"}
            ])))
            .mount(&self.enerflo)
            .await;
    }

    async fn accepts_writes(&self) {
        Mock::given(method("PUT"))
            .and(path_regex(r"^/api/v3/installs/\d+(/milestones/\d+)?$"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
            .mount(&self.enerflo)
            .await;
        Mock::given(method("POST"))
            .and(path(LEAD_ADD))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"status": "success", "customer_id": 900001})),
            )
            .mount(&self.enerflo)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/api/v3/installs/\d+/notes$"))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 5501})))
            .mount(&self.enerflo)
            .await;
    }

    /// Records what the status stage records when it pushes `id`/`name` to the Opportunity.
    async fn pushed_status(&self, id: u64, name: &str) {
        self.ports
            .echo_guard(&self.config)
            .record(
                Direction::ToCrm,
                &EchoTarget::Status(INSTALL),
                &[status_fingerprint(id), status_name_fingerprint(name)],
            )
            .await
            .unwrap();
    }

    /// Every Enerflo write: (method path, body).
    async fn writes(&self) -> Vec<(String, Value)> {
        self.enerflo
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

    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: &str,
    ) -> HttpResponse {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path.to_owned(), None),
        };
        let mut headers = http::HeaderMap::new();
        if let Some(b) = bearer {
            headers.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(&format!("Bearer {b}")).unwrap(),
            );
        }
        self.router
            .handle(HttpRequest {
                method,
                path,
                query,
                headers,
                body: bytes::Bytes::from(body.to_owned()),
            })
            .await
    }

    async fn flow(&self, action: &str, body: Value) -> (u16, Value) {
        let resp = self
            .call(
                Method::POST,
                &format!("/crm/salesforce/{action}"),
                Some(TOKEN),
                &body.to_string(),
            )
            .await;
        (resp.status.as_u16(), resp.body_json())
    }

    async fn outbound(&self, xml: &str) -> (u16, String) {
        let resp = self
            .call(
                Method::POST,
                &format!("/crm/salesforce/outbound-message?token={TOKEN}"),
                None,
                xml,
            )
            .await;
        assert_eq!(
            resp.headers.get("content-type").unwrap(),
            "text/xml; charset=utf-8"
        );
        (
            resp.status.as_u16(),
            String::from_utf8(resp.body.to_vec()).unwrap(),
        )
    }
}

fn opportunity(notification: &str, fields: Vec<(&'static str, Option<&'static str>)>) -> String {
    let mut all = vec![("Id", Some(OPPORTUNITY))];
    all.extend(fields);
    envelope(ORG, &[(notification, "Opportunity", all)])
}

// ---- Flow HTTP Callout --------------------------------------------------------------------

#[tokio::test]
async fn a_flow_lead_callout_sends_the_record_id_as_the_enerflo_integration_record_id() {
    let k = kit().await;
    k.accepts_writes().await;
    let (status, body) = k
        .flow(
            "lead",
            json!({"record_id": "003000000000001AAA", "first_name": "Pat", "last_name": "Placeholder",
                   "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX", "zip": "75001"},
                   "email": "pat.placeholder@example.com"}),
        )
        .await;
    assert!(status == 201 || status == 200, "{status} {body}");
    let writes = k.writes().await;
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(writes[0].0, format!("POST {LEAD_ADD}"));
    assert_eq!(
        writes[0].1["lead"]["integration_record_id"],
        "003000000000001AAA"
    );
}

#[tokio::test]
async fn a_flow_lead_without_a_record_id_is_422_naming_record_id() {
    let k = kit().await;
    let (status, body) = k
        .flow(
            "lead",
            json!({"first_name": "Pat", "last_name": "Placeholder"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(fields.contains(&"record_id"), "{fields:?}");
    assert!(!fields.contains(&"crm_id"), "{fields:?}");
    assert!(k.writes().await.is_empty());
}

#[tokio::test]
async fn a_flow_stage_name_maps_back_to_its_one_status() {
    let k = kit().await;
    k.link_opportunity().await;
    k.statuses().await;
    k.accepts_writes().await;
    let (status, body) = k
        .flow(
            "status",
            json!({"record_id": OPPORTUNITY, "StageName": "Closed Won"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["install_status"],
        json!({"id": 6, "name": "Completed"})
    );
    assert_eq!(
        k.writes().await,
        [(
            format!("PUT /api/v3/installs/{INSTALL}"),
            json!({"status_id": 6})
        )]
    );
}

#[tokio::test]
async fn a_flow_status_name_or_enerflo_install_id_needs_no_mapping() {
    let k = kit().await;
    k.statuses().await;
    k.accepts_writes().await;
    let (status, body) = k
        .flow(
            "status",
            json!({"enerflo_install_id": INSTALL.to_string(), "status": "Completed"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(k.writes().await.len(), 1);
}

#[tokio::test]
async fn a_stage_two_statuses_share_is_422_naming_both_unless_one_is_ours() {
    let k = kit().await;
    k.link_opportunity().await;
    k.statuses().await;
    k.accepts_writes().await;
    let (status, body) = k
        .flow(
            "status",
            json!({"record_id": OPPORTUNITY, "StageName": "Closed Lost"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "StageName");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("cancelled") && message.contains("voided"),
        "{message}"
    );
    assert!(k.writes().await.is_empty());

    // We pushed Voided: the stage coming back is its echo.
    k.pushed_status(7, "Voided").await;
    let (status, body) = k
        .flow(
            "status",
            json!({"record_id": OPPORTUNITY, "StageName": "Closed Lost"}),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("echo")),
        "{body}"
    );
    assert!(k.writes().await.is_empty());
}

#[tokio::test]
async fn an_unmapped_stage_is_422_listing_the_mapped_stages() {
    let k = kit().await;
    k.link_opportunity().await;
    let (status, body) = k
        .flow(
            "status",
            json!({"record_id": OPPORTUNITY, "StageName": "Prospecting"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("Closed Won") && message.contains("Closed Lost"),
        "{message}"
    );
}

#[tokio::test]
async fn a_flow_milestone_by_key_or_by_date_field_writes_the_milestone() {
    let k = kit().await;
    k.link_opportunity().await;
    k.accepts_writes().await;
    let (status, body) = k
        .flow(
            "milestone",
            json!({"record_id": OPPORTUNITY, "milestone": "pto", "completed_date": "2026-03-01T00:00:00.000Z"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = k
        .flow(
            "milestone",
            json!({"record_id": OPPORTUNITY, "Design_Date__c": "2026-02-01", "PTO_Date__c": null}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        k.writes().await,
        [
            (
                format!("PUT /api/v3/installs/{INSTALL}/milestones/3905"),
                json!({"completed_date": "2026-03-01"})
            ),
            (
                format!("PUT /api/v3/installs/{INSTALL}/milestones/3902"),
                json!({"completed_date": "2026-02-01"})
            ),
        ]
    );
}

#[tokio::test]
async fn a_flow_note_is_written_to_the_install_once() {
    let k = kit().await;
    k.link_opportunity().await;
    k.accepts_writes().await;
    let note = json!({"record_id": OPPORTUNITY, "crm_note_id": "069000000000001AAA", "text": "Site survey booked"});
    let (status, body) = k.flow("note", note.clone()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = k.flow("note", note).await;
    assert_eq!(
        (status, body["created"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    let writes = k.writes().await;
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(
        writes[0].0,
        format!("POST /api/v3/installs/{INSTALL}/notes")
    );
}

#[tokio::test]
async fn a_flow_callout_without_the_bearer_token_is_401() {
    let k = kit().await;
    for bearer in [None, Some("wrong-token")] {
        let resp = k
            .call(
                Method::POST,
                "/crm/salesforce/status",
                bearer,
                r#"{"record_id":"006000000000001AAA","status":"Completed"}"#,
            )
            .await;
        assert_eq!(resp.status.as_u16(), 401);
    }
    assert!(k.enerflo.received_requests().await.unwrap().is_empty());
}

// ---- Outbound Messages --------------------------------------------------------------------

/// Enerflo answers `PUT {path}` with 503 until the returned flag is cleared, then 200, however
/// often it is tried meanwhile. (A count, `up_to_n_times`, would make the test depend on how many
/// tries the client's own retries fit into one delivery on this machine; and wiremock's scoped
/// mocks cannot be used beside priorities: sorting by priority moves the mock a guard removes.)
async fn enerflo_down(k: &Kit, path_: &str) -> Arc<AtomicBool> {
    let down = Arc::new(AtomicBool::new(true));
    let flag = down.clone();
    Mock::given(method("PUT"))
        .and(path(path_))
        .respond_with(move |_: &wiremock::Request| {
            if flag.load(Ordering::SeqCst) {
                ResponseTemplate::new(503)
            } else {
                ResponseTemplate::new(200).set_body_json(json!({"ok": true}))
            }
        })
        .with_priority(1)
        .mount(&k.enerflo)
        .await;
    down
}

#[tokio::test]
async fn an_outbound_message_is_acked_only_once_enerflo_has_the_write() {
    let k = kit().await;
    k.link_opportunity().await;
    k.statuses().await;
    // Enerflo is down for the first delivery (all the tries the client's retries fit into it).
    let down = enerflo_down(&k, &format!("/api/v3/installs/{INSTALL}")).await;
    k.accepts_writes().await;
    let xml = opportunity(
        "04l000000000001AAA",
        vec![("StageName", Some("Closed Won"))],
    );
    let (status, body) = k.outbound(&xml).await;
    assert_eq!(status, 503, "{body}");
    assert!(!is_ack(body.as_bytes()));
    let why = fault_string(body.as_bytes()).unwrap();
    assert!(why.contains("04l000000000001AAA"), "{why}");

    // Salesforce retries; Enerflo takes it now.
    down.store(false, Ordering::SeqCst);
    let (status, body) = k.outbound(&xml).await;
    assert_eq!(status, 200, "{body}");
    assert!(is_ack(body.as_bytes()), "{body}");
    let puts: Vec<_> = k
        .writes()
        .await
        .into_iter()
        .filter(|(_, b)| *b == json!({"status_id": 6}))
        .collect();
    assert!(
        puts.len() >= 2,
        "the write was answered 200 before the ack: {puts:?}"
    );
}

#[tokio::test]
async fn a_repeated_notification_is_acked_and_writes_nothing() {
    let k = kit().await;
    k.link_opportunity().await;
    k.statuses().await;
    k.accepts_writes().await;
    let xml = opportunity(
        "04l000000000002AAA",
        vec![
            ("StageName", Some("Closed Won")),
            ("PTO_Date__c", Some("2026-03-01")),
        ],
    );
    let (status, _) = k.outbound(&xml).await;
    assert_eq!(status, 200);
    assert_eq!(k.writes().await.len(), 2, "the status and the PTO date");
    for _ in 0..2 {
        let (status, body) = k.outbound(&xml).await;
        assert_eq!(status, 200);
        assert!(is_ack(body.as_bytes()));
    }
    assert_eq!(k.writes().await.len(), 2, "the repeats wrote nothing");
}

#[tokio::test]
async fn after_a_partial_failure_the_retry_repeats_only_what_was_not_done() {
    let k = kit().await;
    k.link_opportunity().await;
    k.statuses().await;
    // The milestone fails for the whole first delivery, however many tries the client's own
    // retries fit into it (a count of failures would depend on the machine's speed), and
    // succeeds once Salesforce retries.
    let milestone_down =
        enerflo_down(&k, &format!("/api/v3/installs/{INSTALL}/milestones/3905")).await;
    k.accepts_writes().await;
    let xml = opportunity(
        "04l000000000003AAA",
        vec![
            ("StageName", Some("Closed Won")),
            ("PTO_Date__c", Some("2026-03-01")),
        ],
    );
    let (status, _) = k.outbound(&xml).await;
    assert_eq!(status, 503);
    milestone_down.store(false, Ordering::SeqCst);
    let (status, body) = k.outbound(&xml).await;
    assert_eq!(status, 200, "{body}");
    let statuses = k
        .writes()
        .await
        .iter()
        .filter(|(p, _)| *p == format!("PUT /api/v3/installs/{INSTALL}"))
        .count();
    assert_eq!(statuses, 1, "the status was written once");
}

#[tokio::test]
async fn the_echo_of_a_stage_we_set_is_acked_and_writes_nothing_to_enerflo() {
    let k = kit().await;
    k.link_opportunity().await;
    k.statuses().await;
    k.accepts_writes().await;
    k.pushed_status(6, "Completed").await;
    let xml = opportunity(
        "04l000000000004AAA",
        vec![("StageName", Some("Closed Won"))],
    );
    let (status, body) = k.outbound(&xml).await;
    assert_eq!(status, 200, "{body}");
    assert!(is_ack(body.as_bytes()));
    assert!(k.writes().await.is_empty(), "{:?}", k.writes().await);
}

#[tokio::test]
async fn another_org_is_refused_with_a_403_fault_and_nothing_written() {
    let k = kit().await;
    k.link_opportunity().await;
    k.accepts_writes().await;
    let xml = envelope(
        "00D000000000009EAA",
        &[(
            "04l000000000005AAA",
            "Opportunity",
            vec![("Id", Some(OPPORTUNITY)), ("StageName", Some("Closed Won"))],
        )],
    );
    let (status, body) = k.outbound(&xml).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        fault_string(body.as_bytes())
            .unwrap()
            .contains("00D000000000009EAA")
    );
    assert!(k.enerflo.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_15_character_org_id_is_the_same_org() {
    let k = kit_with(&[("SALESFORCE_ORG_ID", "00D000000000001")]).await;
    k.link_opportunity().await;
    let xml = opportunity(
        "04l000000000006AAA",
        vec![("StageName", Some("Prospecting"))],
    );
    let (status, body) = k.outbound(&xml).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn without_salesforce_org_id_every_message_is_refused_with_a_503_fault() {
    let k = kit_with(&[("SALESFORCE_ORG_ID", "")]).await;
    let xml = opportunity(
        "04l000000000007AAA",
        vec![("StageName", Some("Closed Won"))],
    );
    let (status, body) = k.outbound(&xml).await;
    assert_eq!(status, 503);
    assert!(
        fault_string(body.as_bytes())
            .unwrap()
            .contains("SALESFORCE_ORG_ID")
    );
}

#[tokio::test]
async fn a_malformed_envelope_is_a_400_fault_naming_what_is_wrong() {
    let k = kit().await;
    for (xml, names) in [
        ("not xml at all", "text outside the root element"),
        ("<a><b></a>", "not well-formed"),
        (
            r#"<Envelope xmlns="urn:other"><Body/></Envelope>"#,
            "not a SOAP 1.1 Envelope",
        ),
        (
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>00D000000000001EAA</OrganizationId></notifications></s:Body></s:Envelope>"#,
            "no Notification",
        ),
    ] {
        let (status, body) = k.outbound(xml).await;
        assert_eq!(status, 400, "{xml}: {body}");
        let why = fault_string(body.as_bytes()).unwrap();
        assert!(why.contains(names), "{xml}: {why}");
    }
}

#[tokio::test]
async fn an_outbound_message_without_the_token_is_a_401_fault() {
    let k = kit().await;
    let xml = opportunity(
        "04l000000000008AAA",
        vec![("StageName", Some("Closed Won"))],
    );
    for path in [
        "/crm/salesforce/outbound-message".to_owned(),
        "/crm/salesforce/outbound-message?token=wrong".to_owned(),
    ] {
        let resp = k.call(Method::POST, &path, None, &xml).await;
        assert_eq!(resp.status.as_u16(), 401, "{path}");
        assert!(fault_string(&resp.body).is_some());
    }
    assert!(k.enerflo.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_contact_notification_becomes_the_lead_with_its_fields_read_back() {
    let k = kit().await;
    k.accepts_writes().await;
    let xml = envelope(
        ORG,
        &[(
            "04l000000000009AAA",
            "Contact",
            vec![
                ("Id", Some("003000000000001AAA")),
                ("FirstName", Some("Pat")),
                ("LastName", Some("Placeholder")),
                ("Email", Some("pat.placeholder@example.com")),
                ("Phone", Some("(555) 010-0000")),
                ("MailingStreet", Some("1 Example Way")),
                ("MailingCity", Some("Exampleville")),
                ("MailingState", Some("TX")),
                ("MailingPostalCode", Some("75001")),
                ("LeadSource", None),
            ],
        )],
    );
    let (status, body) = k.outbound(&xml).await;
    assert_eq!(status, 200, "{body}");
    let writes = k.writes().await;
    assert_eq!(writes.len(), 1, "{writes:#?}");
    let lead = &writes[0].1["lead"];
    assert_eq!(lead["integration_record_id"], "003000000000001AAA");
    assert_eq!(lead["first_name"], "Pat");
    assert_eq!(lead["zip"], "75001", "{lead}");
}

#[tokio::test]
async fn an_sobject_the_profile_does_not_map_is_a_fault_naming_it_and_nothing_is_written() {
    let k = kit().await;
    k.accepts_writes().await;
    let xml = envelope(
        ORG,
        &[(
            "04l00000000000AAAA",
            "Account",
            vec![("Id", Some("001000000000001AAA"))],
        )],
    );
    let (status, body) = k.outbound(&xml).await;
    assert_eq!(status, 500, "{body}");
    let why = fault_string(body.as_bytes()).unwrap();
    assert!(
        why.contains("Account") && why.contains("04l00000000000AAAA"),
        "{why}"
    );
    assert!(body.contains("soapenv:Client"));
    assert!(k.writes().await.is_empty());
}

#[tokio::test]
async fn an_unlinked_opportunity_is_a_retryable_fault_until_its_project_is_synced() {
    let k = kit().await;
    k.statuses().await;
    k.accepts_writes().await;
    let xml = opportunity(
        "04l00000000000BAAA",
        vec![("StageName", Some("Closed Won"))],
    );
    let (status, body) = k.outbound(&xml).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("soapenv:Server"));
    k.link_opportunity().await;
    let (status, _) = k.outbound(&xml).await;
    assert_eq!(status, 200);
    assert_eq!(k.writes().await.len(), 1);
}

#[tokio::test]
async fn the_enerflo_ids_on_the_opportunity_address_the_install_without_its_link() {
    let k = kit().await;
    k.statuses().await;
    k.accepts_writes().await;
    let xml = envelope(
        ORG,
        &[(
            "04l00000000000CAAA",
            "Opportunity",
            vec![
                ("Id", Some("006000000000777AAA")),
                ("Enerflo_Install_Id__c", Some("700001")),
                ("StageName", Some("Closed Won")),
                ("PTO_Date__c", None),
            ],
        )],
    );
    let (status, body) = k.outbound(&xml).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        k.writes().await,
        [(
            format!("PUT /api/v3/installs/{INSTALL}"),
            json!({"status_id": 6})
        )],
        "an empty date field clears nothing"
    );
}
