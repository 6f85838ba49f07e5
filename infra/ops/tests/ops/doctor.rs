//! `enerflo-sync-ops doctor`: it passes against the local runner's sandbox (and the URLs it
//! prints are the ones the runner accepts), and every failure it reports is reported, by name,
//! against wiremock fakes of Enerflo, the CRM, HubSpot and Salesforce that fail in that way.

use std::collections::BTreeMap;
use std::time::Duration;

use enerflo_sync::config::Config;
use enerflo_sync::crm::signature::verify;
use enerflo_sync_ops::doctor::{DoctorOptions, DoctorReport, Level, TEST_EVENT_TYPE, doctor};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_KEY: &str = "doctor-test-api-key";
const SECRET: &str = "whsec_ZG9jdG9yLXRlc3Qtc2lnbmluZy1rZXktMDAwMDAwMDA=";
const WEBHOOK_TOKEN: &str = "doctor-webhook-token-0123456789abcdef";
const CRM_TOKEN: &str = "doctor-crm-token-0123456789abcdef0123";

fn config(env: &[(&str, String)]) -> Config {
    let map: BTreeMap<&str, String> = env.iter().cloned().collect();
    Config::from_lookup(|k| map.get(k).cloned()).unwrap()
}

fn options() -> DoctorOptions {
    DoctorOptions {
        public_url: Some("https://api.example.test/prod".into()),
        install: Some(700_001),
        // Short: the failing fakes are retried within it.
        budget: Duration::from_secs(2),
    }
}

/// An Enerflo that knows the key: statuses, and install 700001 with three milestones.
async fn enerflo() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/install-statuses"))
        .and(header("api-key", API_KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"id": 1, "name": "New"}, {"id": 4, "name": "On Hold"},
            {"id": 5, "name": "Voided"}, {"id": 6, "name": "Completed"},
        ]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/installs/700001"))
        .and(header("api-key", API_KEY))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": 700001,
            "all_milestones": [
                {"id": 51, "milestone_id": 3901, "title": "Engineering"},
                {"id": 52, "milestone_id": 3902, "title": "Permitting"},
                {"id": 53, "milestone_id": 3905, "title": "Permission to Operate"},
            ]})),
        )
        .mount(&server)
        .await;
    server
}

/// A CRM receiver answering 200 with a crm_id.
async fn crm() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/enerflo"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"crm_id": "crm-1"})))
        .mount(&server)
        .await;
    server
}

fn env(enerflo: &MockServer, crm: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("ENERFLO_BASE_URL", enerflo.uri()),
        ("ENERFLO_API_KEY", API_KEY.into()),
        ("CRM_WEBHOOK_URL", format!("{}/hooks/enerflo", crm.uri())),
        ("CRM_WEBHOOK_SECRET", SECRET.into()),
        ("WEBHOOK_TOKEN", WEBHOOK_TOKEN.into()),
        ("CRM_INBOUND_TOKEN", CRM_TOKEN.into()),
        ("MILESTONE_KEY_MAP", "permits=3902,pto=3905".into()),
    ]
}

fn with(
    mut env: Vec<(&'static str, String)>,
    name: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    env.retain(|(k, _)| *k != name);
    if !value.is_empty() {
        env.push((name, value.to_owned()));
    }
    env
}

fn problems(report: &DoctorReport) -> Vec<&'static str> {
    report.named(Level::Problem)
}

fn detail<'a>(report: &'a DoctorReport, name: &str) -> &'a str {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.detail.as_str())
        .unwrap_or_else(|| panic!("no check {name}: {:#?}", report.checks))
}

/// An Enerflo whose every answer is `template`.
async fn enerflo_answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

/// A base URL nothing listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_healthy_setup_has_no_problem_and_the_crm_gets_a_test_event_it_can_verify() {
    let (enerflo, crm) = (enerflo().await, crm().await);
    let report = doctor(&config(&env(&enerflo, &crm)), &options()).await;
    assert!(!report.has_problems(), "{}", report.to_text());
    assert_eq!(report.statuses.len(), 4);
    assert_eq!(
        report.milestones,
        vec![
            (3901, "Engineering".to_owned()),
            (3902, "Permitting".to_owned()),
            (3905, "Permission to Operate".to_owned())
        ]
    );
    assert_eq!(
        report.crm_answer.as_deref(),
        Some("HTTP 200: {\"crm_id\":\"crm-1\"}")
    );
    let received = crm.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let req = &received[0];
    let h = |k: &str| req.headers.get(k).and_then(|v| v.to_str().ok());
    let key = enerflo_sync::config::SigningSecret::parse(SECRET).unwrap();
    verify(
        key.key(),
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
        &req.body,
        enerflo_sync::timefmt::now_unix(),
    )
    .unwrap();
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["type"], TEST_EVENT_TYPE);
    assert_eq!(body["id"].as_str(), h("webhook-id"));
    // No secret in what it prints, but the webhook token inside the URLs.
    let text = report.to_text();
    for secret in [API_KEY, SECRET, CRM_TOKEN] {
        assert!(!text.contains(secret), "{secret} printed");
    }
    assert!(text.contains(&format!(
        "https://api.example.test/prod/enerflo/webhooks/{WEBHOOK_TOKEN}?event=update_install"
    )));
}

#[tokio::test]
async fn every_registry_event_gets_its_exact_url_and_every_crm_route_its_url() {
    let (enerflo, crm) = (enerflo().await, crm().await);
    let report = doctor(&config(&env(&enerflo, &crm)), &options()).await;
    let base = format!("https://api.example.test/prod/enerflo/webhooks/{WEBHOOK_TOKEN}");
    let by_event: BTreeMap<&str, (&str, &str)> = report
        .subscriptions
        .iter()
        .map(|s| (s.event, (s.version, s.url.as_str())))
        .collect();
    for stage in &enerflo_sync::registry::STAGES {
        for event in stage.events {
            assert!(by_event.contains_key(event), "{event} has no URL");
        }
    }
    assert_eq!(by_event["deal.projectSubmitted"], ("2.0", base.as_str()));
    assert_eq!(by_event["customer.updated.v2"], ("2.0", base.as_str()));
    let change_order = format!("{base}?event=signed_change_order");
    assert_eq!(
        by_event["signed_change_order"],
        ("1.0", change_order.as_str())
    );
    let urls: Vec<String> = report
        .crm_routes
        .iter()
        .map(|r| format!("{} {}", r.method, r.url))
        .collect();
    assert_eq!(
        urls,
        [
            "POST https://api.example.test/prod/crm/leads",
            "PUT https://api.example.test/prod/crm/installs/{install}/milestones/{milestone}",
            "PUT https://api.example.test/prod/crm/installs/{install}/status",
            "POST https://api.example.test/prod/crm/installs/{install}/notes",
        ]
    );
    assert!(report.crm_auth.contains("Authorization: Bearer"));
}

#[tokio::test]
async fn doctor_passes_against_the_local_runners_sandbox_and_its_urls_are_accepted() {
    let data_dir = std::env::temp_dir().join(format!(
        "doctor-sandbox-{}-{}",
        std::process::id(),
        enerflo_sync::timefmt::now_millis()
    ));
    let runner = enerflo_sync_local::start(config(&[
        ("DATA_DIR", data_dir.display().to_string()),
        ("LISTEN_ADDR", "127.0.0.1:0".into()),
        ("CRM_WEBHOOK_SECRET", SECRET.into()),
    ]))
    .await
    .unwrap();
    let base = runner.url("");
    // What `make run` serves: the sandbox, its key, the inbox, the local tokens.
    let env = vec![
        ("ENERFLO_BASE_URL", runner.url("/sandbox/enerflo")),
        ("ENERFLO_API_KEY", "sandbox-api-key".to_owned()),
        ("CRM_WEBHOOK_URL", runner.url("/crm-inbox/events")),
        ("CRM_WEBHOOK_SECRET", SECRET.into()),
        (
            "WEBHOOK_TOKEN",
            enerflo_sync_local::LOCAL_WEBHOOK_TOKEN.into(),
        ),
        (
            "CRM_INBOUND_TOKEN",
            enerflo_sync_local::LOCAL_CRM_TOKEN.into(),
        ),
        ("MILESTONE_KEY_MAP", "permits=3902".into()),
    ];
    let report = doctor(
        &config(&env),
        &DoctorOptions {
            public_url: Some(base.clone()),
            install: Some(700_001),
            ..DoctorOptions::default()
        },
    )
    .await;
    assert!(!report.has_problems(), "{}", report.to_text());
    assert!(
        report
            .statuses
            .iter()
            .any(|s| s.name == "Awaiting HOA Approval")
    );
    assert!(report.milestones.contains(&(3902, "Permitting".to_owned())));
    assert!(
        report
            .crm_answer
            .as_deref()
            .unwrap()
            .starts_with("HTTP 200")
    );
    let inbox = runner.inbox.as_ref().unwrap().events();
    assert!(inbox.iter().any(|e| e.event["type"] == TEST_EVENT_TYPE));

    // The URLs are exact: the runner accepts the samples posted to them.
    let http = enerflo_sync::wire::client();
    for (event, fixture) in [
        ("deal.projectSubmitted", "v2-deal.projectSubmitted.json"),
        ("signed_change_order", "v1-signed_change_order.json"),
    ] {
        let url = &report
            .subscriptions
            .iter()
            .find(|s| s.event == event)
            .unwrap()
            .url;
        let body = std::fs::read_to_string(format!(
            "{}/../../tests/fixtures/enerflo/{fixture}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let answer = http.post(url).body(body).send().await.unwrap();
        assert_eq!(answer.status(), 202, "{url}");
        let v: Value = answer.json().await.unwrap();
        assert_eq!(v["status"], "queued", "{url}: {v}");
    }
    runner.shutdown().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

// ---- Enerflo failures -----------------------------------------------------------------------

#[tokio::test]
async fn a_refused_key_is_enerflo_key_rejected() {
    let crm = crm().await;
    for status in [401, 403] {
        let enerflo = enerflo_answering(
            ResponseTemplate::new(status).set_body_json(json!({"message": "Unauthenticated."})),
        )
        .await;
        let report = doctor(&config(&env(&enerflo, &crm)), &options()).await;
        assert_eq!(problems(&report), ["enerflo-key-rejected"], "{status}");
        assert!(detail(&report, "enerflo-key-rejected").contains("ENERFLO_API_KEY"));
    }
}

#[tokio::test]
async fn a_missing_key_is_enerflo_api_key_missing() {
    let (enerflo, crm) = (enerflo().await, crm().await);
    let report = doctor(
        &config(&with(env(&enerflo, &crm), "ENERFLO_API_KEY", "")),
        &options(),
    )
    .await;
    assert_eq!(problems(&report), ["enerflo-api-key-missing"]);
    assert!(enerflo.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_base_url_that_is_not_the_api_is_enerflo_base_url_or_an_unexpected_answer() {
    let crm = crm().await;
    let not_found = enerflo_answering(ResponseTemplate::new(404)).await;
    let report = doctor(&config(&env(&not_found, &crm)), &options()).await;
    assert_eq!(problems(&report), ["enerflo-base-url"]);
    assert!(detail(&report, "enerflo-base-url").contains(&not_found.uri()));

    let html = enerflo_answering(
        ResponseTemplate::new(200).set_body_raw("<html>Maintenance</html>", "text/html"),
    )
    .await;
    let report = doctor(&config(&env(&html, &crm)), &options()).await;
    assert_eq!(problems(&report), ["enerflo-unexpected-answer"]);

    let no_list =
        enerflo_answering(ResponseTemplate::new(200).set_body_json(json!({"ok": true}))).await;
    let report = doctor(&config(&env(&no_list, &crm)), &options()).await;
    assert_eq!(problems(&report), ["enerflo-unexpected-answer"]);
}

#[tokio::test]
async fn no_answer_is_enerflo_unreachable_and_a_5xx_or_429_is_named() {
    let crm = crm().await;
    let mut unreachable = env(&crm, &crm);
    unreachable = with(unreachable, "ENERFLO_BASE_URL", &closed_port());
    let report = doctor(&config(&unreachable), &options()).await;
    assert_eq!(problems(&report), ["enerflo-unreachable"]);

    let down = enerflo_answering(ResponseTemplate::new(503)).await;
    let report = doctor(&config(&env(&down, &crm)), &options()).await;
    assert_eq!(problems(&report), ["enerflo-unavailable"]);

    let limited =
        enerflo_answering(ResponseTemplate::new(429).insert_header("retry-after", "120")).await;
    let report = doctor(&config(&env(&limited, &crm)), &options()).await;
    assert_eq!(problems(&report), ["enerflo-rate-limited"]);
}

#[tokio::test]
async fn status_names_the_company_does_not_use_are_a_warning_naming_the_variable() {
    let (enerflo, crm) = (enerflo().await, crm().await);
    let env = with(env(&enerflo, &crm), "STATUS_ON_HOLD_NAMES", "Paused,Parked");
    let report = doctor(&config(&env), &options()).await;
    assert!(!report.has_problems(), "{}", report.to_text());
    let warning = report
        .checks
        .iter()
        .find(|c| c.name == "status-names" && c.level == Level::Warning)
        .unwrap();
    assert!(
        warning
            .detail
            .contains("STATUS_ON_HOLD_NAMES (Paused, Parked)"),
        "{}",
        warning.detail
    );
}

#[tokio::test]
async fn an_unknown_install_and_a_milestone_key_it_lacks_are_named() {
    let (enerflo, crm) = (enerflo().await, crm().await);
    let report = doctor(
        &config(&env(&enerflo, &crm)),
        &DoctorOptions {
            install: Some(799_999),
            ..options()
        },
    )
    .await;
    assert_eq!(problems(&report), ["install-not-found"]);

    let env = with(
        env(&enerflo, &crm),
        "MILESTONE_KEY_MAP",
        "permits=3902,inspection=3904",
    );
    let report = doctor(&config(&env), &options()).await;
    assert_eq!(problems(&report), ["milestone-key-unknown"]);
    let text = detail(&report, "milestone-key-unknown");
    assert!(
        text.contains("inspection=3904") && text.contains("3901, 3902, 3905"),
        "{text}"
    );
}

// ---- CRM webhook failures -------------------------------------------------------------------

async fn crm_answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn each_way_the_crm_refuses_the_test_event_is_named_with_its_answer() {
    let enerflo = enerflo().await;
    for (status, name) in [
        (401, "crm-signature-rejected"),
        (403, "crm-signature-rejected"),
        (404, "crm-url-not-found"),
        (422, "crm-test-event-refused"),
        (500, "crm-unavailable"),
        (429, "crm-unavailable"),
    ] {
        let crm = crm_answering(
            ResponseTemplate::new(status).set_body_json(json!({"error": "no thanks"})),
        )
        .await;
        let report = doctor(&config(&env(&enerflo, &crm)), &options()).await;
        assert_eq!(problems(&report), [name], "{status}");
        assert_eq!(
            report.crm_answer.as_deref(),
            Some(format!("HTTP {status}: no thanks").as_str())
        );
    }
}

#[tokio::test]
async fn an_unreachable_or_unset_crm_is_named() {
    let enerflo = enerflo().await;
    let crm = crm().await;
    let env_ = with(
        env(&enerflo, &crm),
        "CRM_WEBHOOK_URL",
        &format!("{}/hooks", closed_port()),
    );
    let report = doctor(&config(&env_), &options()).await;
    assert_eq!(problems(&report), ["crm-unreachable"]);

    let report = doctor(
        &config(&with(env(&enerflo, &crm), "CRM_WEBHOOK_URL", "")),
        &options(),
    )
    .await;
    assert_eq!(problems(&report), ["crm-webhook-url-missing"]);
    let report = doctor(
        &config(&with(env(&enerflo, &crm), "CRM_WEBHOOK_SECRET", "")),
        &options(),
    )
    .await;
    assert_eq!(problems(&report), ["crm-webhook-secret-missing"]);
}

#[tokio::test]
async fn missing_tokens_are_named_and_a_missing_public_url_is_a_warning() {
    let (enerflo, crm) = (enerflo().await, crm().await);
    let report = doctor(
        &config(&with(env(&enerflo, &crm), "WEBHOOK_TOKEN", "")),
        &options(),
    )
    .await;
    assert_eq!(problems(&report), ["webhook-token-missing"]);
    let report = doctor(
        &config(&with(env(&enerflo, &crm), "CRM_INBOUND_TOKEN", "")),
        &options(),
    )
    .await;
    assert_eq!(problems(&report), ["crm-inbound-token-missing"]);
    let report = doctor(
        &config(&env(&enerflo, &crm)),
        &DoctorOptions {
            public_url: None,
            ..options()
        },
    )
    .await;
    assert!(!report.has_problems());
    assert!(report.named(Level::Warning).contains(&"public-url"));
    assert!(
        report.subscriptions[0]
            .url
            .starts_with("<ApiBaseUrl>/enerflo/webhooks/")
    );
}

// ---- HubSpot and Salesforce -----------------------------------------------------------------

fn hubspot_env(enerflo: &MockServer, hubspot: &MockServer) -> Vec<(&'static str, String)> {
    let mut env = env(enerflo, enerflo);
    env.retain(|(k, _)| !k.starts_with("CRM_WEBHOOK"));
    env.extend([
        ("CRM_CONNECTOR", "hubspot".to_owned()),
        ("HUBSPOT_ACCESS_TOKEN", "pat-doctor-test".to_owned()),
        ("HUBSPOT_BASE_URL", hubspot.uri()),
        ("HUBSPOT_PIPELINE", "sales".to_owned()),
    ]);
    env
}

async fn hubspot_answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/crm/v3/pipelines/deals/sales"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn hubspot_token_scope_and_pipeline_are_checked_with_one_read() {
    let enerflo = enerflo().await;
    let good = hubspot_answering(
        ResponseTemplate::new(200)
            .set_body_json(json!({"id": "sales", "stages": [{"id": "a"}, {"id": "b"}]})),
    )
    .await;
    let report = doctor(&config(&hubspot_env(&enerflo, &good)), &options()).await;
    assert!(!report.has_problems(), "{}", report.to_text());
    assert_eq!(good.received_requests().await.unwrap().len(), 1);
    assert!(
        report
            .crm_routes
            .iter()
            .all(|r| r.url.contains("/crm/hubspot/"))
    );

    for (status, name) in [
        (401, "hubspot-token-invalid"),
        (403, "hubspot-scope-missing"),
        (404, "hubspot-pipeline-not-found"),
    ] {
        let hubspot = hubspot_answering(
            ResponseTemplate::new(status)
                .set_body_json(json!({"message": "nope", "category": "X"})),
        )
        .await;
        let report = doctor(&config(&hubspot_env(&enerflo, &hubspot)), &options()).await;
        assert_eq!(problems(&report), [name], "{status}");
    }
    let report = doctor(&config(&hubspot_env(&enerflo, &good)), &options()).await;
    assert!(detail(&report, "hubspot-token").contains("sales"));
}

fn salesforce_env(enerflo: &MockServer, login: &str) -> Vec<(&'static str, String)> {
    let mut env = env(enerflo, enerflo);
    env.retain(|(k, _)| !k.starts_with("CRM_WEBHOOK"));
    env.extend([
        ("CRM_CONNECTOR", "salesforce".to_owned()),
        ("SALESFORCE_LOGIN_URL", login.to_owned()),
        ("SALESFORCE_CLIENT_ID", "doctor-client".to_owned()),
        (
            "SALESFORCE_CLIENT_SECRET",
            "doctor-client-secret".to_owned(),
        ),
    ]);
    env
}

#[tokio::test]
async fn salesforce_credentials_are_checked_with_one_token_fetch() {
    let enerflo = enerflo().await;
    let login = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "00Dxx!doctor", "instance_url": "https://acme.my.salesforce.example",
        })))
        .mount(&login)
        .await;
    let report = doctor(&config(&salesforce_env(&enerflo, &login.uri())), &options()).await;
    assert!(!report.has_problems(), "{}", report.to_text());
    assert_eq!(login.received_requests().await.unwrap().len(), 1);
    assert!(!report.crm_routes.is_empty());
    assert!(
        report
            .crm_routes
            .iter()
            .all(|r| r.url.contains("/crm/salesforce/")),
        "{:?}",
        report.crm_routes
    );

    let refusing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_client", "error_description": "invalid client credentials",
        })))
        .mount(&refusing)
        .await;
    let report = doctor(
        &config(&salesforce_env(&enerflo, &refusing.uri())),
        &options(),
    )
    .await;
    assert_eq!(problems(&report), ["salesforce-credentials-refused"]);
    assert!(detail(&report, "salesforce-credentials-refused").contains("invalid_client"));

    let report = doctor(
        &config(&salesforce_env(&enerflo, &closed_port())),
        &options(),
    )
    .await;
    assert_eq!(problems(&report), ["salesforce-unreachable"]);
}
