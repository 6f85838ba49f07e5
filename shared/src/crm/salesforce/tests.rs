//! The connector's calls and its reading of Salesforce's answers, against wiremock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use ring::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
use serde_json::json;
use wiremock::matchers::{
    body_partial_json, body_string_contains, header, method, path, query_param,
};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::auth::{Authenticator, Grant};
use super::*;
use crate::canonical::EnerfloRefs;
use crate::crm::profile::SALESFORCE_DEFAULT;
use crate::secret::Secret;

const V: &str = "/services/data/v66.0";

async fn token_endpoint(server: &MockServer, tokens: &[&str]) {
    for (i, t) in tokens.iter().enumerate() {
        Mock::given(method("POST"))
            .and(path("/services/oauth2/token"))
            .and(body_string_contains("grant_type=client_credentials"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": t, "instance_url": server.uri(), "token_type": "Bearer",
                "issued_at": "1764324000000", "signature": "bm90LXJlYWw="})))
            .up_to_n_times(1)
            .with_priority(i as u8 + 1)
            .mount(server)
            .await;
    }
}

fn api(server: &MockServer) -> Arc<SalesforceApi> {
    let http = crate::wire::http_client(Duration::from_secs(5)).unwrap();
    let auth = Authenticator::new(
        http.clone(),
        &server.uri(),
        Grant::ClientCredentials {
            client_id: "3MVG9-test-client".into(),
            client_secret: Secret::new("test-secret-not-real"),
        },
    );
    Arc::new(SalesforceApi::new(http, auth, "66.0", 50))
}

fn connector(server: &MockServer) -> SalesforceConnector {
    let profile = Profile::parse("built-in salesforce", SALESFORCE_DEFAULT).unwrap();
    SalesforceConnector::new(api(server), Arc::new(profile), BTreeMap::new())
}

fn event(t: CrmEventType, crm_id: Option<&str>, data: Value) -> CrmEvent {
    CrmEvent {
        event_type: t,
        id: "evt_0456".into(),
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
        json!({"first_name": "Jane", "last_name": "Doe", "email": "jane@example.test"}),
    )
}

#[test]
fn the_built_in_salesforce_profile_is_valid() {
    let p = Profile::parse("built-in salesforce", SALESFORCE_DEFAULT).unwrap();
    assert_eq!(p.stages.property, "StageName");
    assert_eq!(
        p.event(CrmEventType::ProjectSubmitted).object,
        "Opportunity"
    );
    assert!(matches!(
        p.event(CrmEventType::ProjectSubmitted).link,
        Some(Link::ContactRole { .. })
    ));
}

#[tokio::test]
async fn a_lead_is_upserted_by_external_id_and_204_is_read_back() {
    let server = MockServer::start().await;
    token_endpoint(&server, &["00D-token-1"]).await;
    Mock::given(method("PATCH"))
        .and(path(format!(
            "{V}/sobjects/Contact/Enerflo_Customer_Id__c/7"
        )))
        .and(header("authorization", "Bearer 00D-token-1"))
        .and(body_partial_json(
            json!({"LastName": "Doe", "Email": "jane@example.test"}),
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "{V}/sobjects/Contact/Enerflo_Customer_Id__c/7"
        )))
        .and(query_param("fields", "Id"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "attributes": {"type": "Contact"}, "Id": "003000000000001AAA"})))
        .expect(1)
        .mount(&server)
        .await;
    let ack = connector(&server).deliver(&lead()).await.unwrap();
    assert_eq!(ack.crm_id.as_deref(), Some("003000000000001AAA"));
    let patch = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.method.as_str() == "PATCH")
        .unwrap();
    let body: Value = serde_json::from_slice(&patch.body).unwrap();
    assert!(
        body.get("Enerflo_Customer_Id__c").is_none(),
        "the external id stays in the URL: {body}"
    );
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_call_repeated() {
    let server = MockServer::start().await;
    token_endpoint(&server, &["00D-token-old", "00D-token-new"]).await;
    Mock::given(method("PATCH"))
        .and(header("authorization", "Bearer 00D-token-old"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!([
            {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(header("authorization", "Bearer 00D-token-new"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "003000000000002AAA", "success": true, "errors": [], "created": true})))
        .expect(1)
        .mount(&server)
        .await;
    let ack = connector(&server).deliver(&lead()).await.unwrap();
    assert_eq!(ack.crm_id.as_deref(), Some("003000000000002AAA"));
}

#[tokio::test]
async fn a_missing_picklist_value_is_permanent_and_names_the_field() {
    let server = MockServer::start().await;
    token_endpoint(&server, &["00D-token-1"]).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!([{
            "message": "bad value for restricted picklist field: Door knock",
            "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "fields": ["LeadSource"]}])))
        .mount(&server)
        .await;
    let mut ev = lead();
    ev.data["lead_source"] = json!("Door knock");
    let err = connector(&server).deliver(&ev).await.unwrap_err();
    let CrmError::Rejected { message, .. } = &err else {
        panic!("permanent expected: {err:?}");
    };
    assert!(
        message.contains("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        "{message}"
    );
    assert!(message.contains("LeadSource"), "{message}");
}

#[tokio::test]
async fn the_daily_limit_is_transient_and_the_budget_share_is_never_passed() {
    let server = MockServer::start().await;
    token_endpoint(&server, &["00D-token-1"]).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!([{
            "message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])))
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    let err = c.deliver(&lead()).await.unwrap_err();
    match &err {
        CrmError::Unavailable {
            retry_after: Some(wait),
            detail,
            ..
        } => {
            assert!(*wait >= Duration::from_secs(3600));
            assert!(detail.contains("REQUEST_LIMIT_EXCEEDED"), "{detail}");
        }
        other => panic!("transient expected: {other:?}"),
    }
    // Held: the next event does not call Salesforce (the mock expects one call).
    assert!(c.deliver(&lead()).await.is_err());

    let server = MockServer::start().await;
    token_endpoint(&server, &["00D-token-1"]).await;
    Mock::given(method("PATCH"))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("Sforce-Limit-Info", "api-usage=50000/100000")
                .set_body_json(json!({"id": "003000000000003AAA", "success": true, "errors": [], "created": true})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    c.deliver(&lead()).await.unwrap();
    let err = c.deliver(&lead()).await.unwrap_err();
    assert!(
        matches!(&err, CrmError::Unavailable { detail, .. } if detail.contains("share of Salesforce's daily API allocation")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_new_project_upserts_contact_and_opportunity_and_adds_one_contact_role() {
    let server = MockServer::start().await;
    token_endpoint(&server, &["00D-token-1"]).await;
    Mock::given(method("PATCH"))
        .and(path(format!(
            "{V}/sobjects/Contact/Enerflo_Customer_Id__c/7"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "003000000000001AAA", "success": true, "errors": [], "created": false})))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!(
            "{V}/sobjects/Opportunity/Enerflo_Deal_Id__c/deal-uuid-1"
        )))
        .and(body_partial_json(
            json!({"StageName": "Prospecting", "CloseDate": "2026-11-28",
            "System_Size_kW__c": 8.4, "Enerflo_Install_Id__c": "42"}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "006000000000001AAA", "success": true, "errors": [], "created": true})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{V}/query")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"totalSize": 0, "done": true, "records": []})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{V}/sobjects/OpportunityContactRole")))
        .and(body_partial_json(
            json!({"OpportunityId": "006000000000001AAA", "ContactId": "003000000000001AAA"}),
        ))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"id": "00K000000000001AAA", "success": true, "errors": []})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let ev = event(
        CrmEventType::ProjectSubmitted,
        None,
        json!({"customer": {"first_name": "Jane", "last_name": "Doe"}, "system": {"size_watts": 8400}}),
    );
    let ack = connector(&server).deliver(&ev).await.unwrap();
    assert_eq!(ack.crm_id.as_deref(), Some("006000000000001AAA"));
}

#[tokio::test]
async fn a_note_is_one_composite_call_and_a_retry_finds_it() {
    let server = MockServer::start().await;
    token_endpoint(&server, &["00D-token-1"]).await;
    Mock::given(method("GET"))
        .and(path(format!("{V}/query")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"totalSize": 1, "done": true,
            "records": [{"attributes": {"type": "ContentDocumentLink"}, "ContentDocumentId": "069000000000009AAA"}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{V}/sobjects/ContentNote/069000000000009AAA")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"Id": "069000000000009AAA", "Title": "Enerflo note 55"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{V}/composite")))
        .and(body_partial_json(json!({"allOrNone": true, "compositeRequest": [
            {"referenceId": "note", "body": {"Title": "Enerflo note 56"}},
            {"referenceId": "link", "body": {"ContentDocumentId": "@{note.id}", "LinkedEntityId": "006000000000001AAA"}}]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"compositeResponse": [
            {"body": {"id": "069000000000010AAA", "success": true, "errors": []}, "httpHeaders": {}, "httpStatusCode": 201, "referenceId": "note"},
            {"body": {"id": "06A000000000010AAA", "success": true, "errors": []}, "httpHeaders": {}, "httpStatusCode": 201, "referenceId": "link"}]})))
        .expect(1)
        .mount(&server)
        .await;
    let c = connector(&server);
    let note = |id: u64| {
        event(
            CrmEventType::NoteCreated,
            Some("006000000000001AAA"),
            json!({"note": {"id": id, "text": "Permit <submitted>", "author": "Sam"}}),
        )
    };
    assert_eq!(
        c.deliver(&note(55)).await.unwrap().crm_id.as_deref(),
        Some("069000000000009AAA")
    );
    assert_eq!(
        c.deliver(&note(56)).await.unwrap().crm_id.as_deref(),
        Some("069000000000010AAA")
    );
    let composite = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.url.path().ends_with("/composite"))
        .unwrap();
    let body: Value = serde_json::from_slice(&composite.body).unwrap();
    let content = body["compositeRequest"][0]["body"]["Content"]
        .as_str()
        .unwrap();
    let html = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(content)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(html, "<p>Permit &lt;submitted&gt;</p><p>Sam</p>");
}

#[tokio::test]
async fn a_composite_that_rolls_back_names_the_failing_item() {
    let server = MockServer::start().await;
    token_endpoint(&server, &["00D-token-1"]).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"records": []})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{V}/composite")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"compositeResponse": [
            {"body": [{"errorCode": "PROCESSING_HALTED", "message": "The transaction was rolled back since another operation in the same transaction failed."}], "httpStatusCode": 400, "referenceId": "note"},
            {"body": [{"errorCode": "FIELD_INTEGRITY_EXCEPTION", "message": "Linked Entity ID: id value of incorrect type", "fields": ["LinkedEntityId"]}], "httpStatusCode": 400, "referenceId": "link"}]})))
        .mount(&server)
        .await;
    let ev = event(
        CrmEventType::NoteCreated,
        Some("006000000000001AAA"),
        json!({"note": {"id": 57, "text": "x"}}),
    );
    let err = connector(&server).deliver(&ev).await.unwrap_err();
    let CrmError::Rejected { message, .. } = &err else {
        panic!("permanent expected: {err:?}");
    };
    assert!(
        message.contains("FIELD_INTEGRITY_EXCEPTION") && message.contains("LinkedEntityId"),
        "{message}"
    );
}

#[test]
fn the_jwt_assertion_is_rs256_over_the_documented_claims() {
    // ring cannot generate RSA keys: aws-lc-rs (a dev-dependency) makes the throwaway one.
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = pair.as_der().unwrap();
    let key = RsaKeyPair::from_pkcs8(der.as_ref()).unwrap();
    let jwt = auth::assertion(
        "3MVG9-test-client",
        "int@example.test",
        "https://login.salesforce.com",
        &key,
    )
    .unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    assert_eq!(b64.decode(parts[0]).unwrap(), br#"{"alg":"RS256"}"#);
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], "3MVG9-test-client");
    assert_eq!(claims["sub"], "int@example.test");
    assert_eq!(claims["aud"], "https://login.salesforce.com");
    let exp = claims["exp"].as_i64().unwrap();
    let now = crate::timefmt::now_unix();
    assert!(
        exp > now && exp <= now + 180,
        "exp {exp} within three minutes of {now}"
    );
    let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key().as_ref());
    public
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &b64.decode(parts[2]).unwrap(),
        )
        .expect("the signature verifies with the key's public half");
}
