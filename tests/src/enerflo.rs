//! The fake Enerflo: what the wiremock Enerflo (`Harness::enerflo`) answers to the runner's API
//! calls, what it was asked, and the test projects it knows: the sample submission
//! (`fixtures/enerflo/v2-deal.projectSubmitted.json`, deal [`SAMPLE_DEAL`], install
//! [`SAMPLE_INSTALL`]) and numbered copies of it ([`submission`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::{TOKEN, fixture, post_from_thread};

/// The deal of the sample submission.
pub const SAMPLE_DEAL: &str = "00000000-0000-4000-8000-000000000010";
/// The install Enerflo finds for the sample deal (survey 4000001, customer 900001).
pub const SAMPLE_INSTALL: u64 = 700001;
/// Enerflo's lead/add (stage 1, CRM -> Enerflo).
pub const LEAD_ADD: &str = "/api/v1/partner/action/lead/add";

/// The deal UUID of test project `n` (the last group carries `n`, so the fake answers per deal).
pub fn deal_id(n: u64) -> String {
    format!("00000000-0000-4000-9000-{n:012}")
}

/// The sample submission turned into project `n`: its own deal, short code and customer, so no
/// two projects share an id form (they would be one entity in the cross-reference table).
pub fn submission(n: u64) -> String {
    fixture("v2-deal.projectSubmitted.json")
        .replace(SAMPLE_DEAL, &deal_id(n))
        .replace("abc123xyz", &format!("sc{n:010}"))
        .replace(
            "00000000-0000-4000-8000-000000000003",
            &format!("00000000-0000-4000-a000-{n:012}"),
        )
}

pub fn submission_json(n: u64) -> Value {
    serde_json::from_str(&submission(n)).unwrap()
}

/// The install `installs/find` answers for project `n`: install 700000+n, survey 4000000+n,
/// customer 900000+n. The sample deal's is `install(1)`, so a test mixes the sample with
/// numbered projects from 2 on.
pub fn install(n: u64) -> Value {
    json!({
        "id": 700_000 + n, "survey_id": 4_000_000 + n, "customer_id": 900_000 + n,
        "customer": {"id": 900_000 + n, "first_name": "Pat", "last_name": "Placeholder",
                     "email": "pat.placeholder@example.com", "phone": "(555) 010-0000",
                     "customer_timezone": "America/Chicago"}
    })
}

/// `installs/find/{deal}`: [`install`] of the sample deal or of [`deal_id`]`(n)`; 404 for any
/// other deal.
pub struct FindsInstalls;

impl Respond for FindsInstalls {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let deal = req.url.path().rsplit('/').next().unwrap_or_default();
        let n = if deal == SAMPLE_DEAL {
            Some(1)
        } else {
            deal.strip_prefix("00000000-0000-4000-9000-")
                .and_then(|n| n.parse().ok())
        };
        match n {
            Some(n) => ResponseTemplate::new(200).set_body_json(install(n)),
            None => ResponseTemplate::new(404).set_body_string("<html>Not Found</html>"),
        }
    }
}

/// Mounts [`FindsInstalls`] on `installs/find`.
pub async fn finds_installs(enerflo: &MockServer) {
    Mock::given(method("GET"))
        .and(path_regex("^/api/v3/installs/find/"))
        .respond_with(FindsInstalls)
        .mount(enerflo)
        .await;
}

/// lead/add: one customer per CRM lead (`lead.integration_record_id`), ids from 900001 in order
/// of first appearance, answered after `delay`.
pub async fn adds_leads(enerflo: &MockServer, delay: Duration) {
    let customers: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    Mock::given(method("POST"))
        .and(path(LEAD_ADD))
        .respond_with(move |req: &Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let lead = body["lead"]["integration_record_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let mut customers = customers.lock().unwrap();
            let next = 900_001 + customers.len() as u64;
            let id = *customers.entry(lead).or_insert(next);
            ResponseTemplate::new(200)
                .set_body_json(json!({"status": "success", "customer_id": id}))
                .set_delay(delay)
        })
        .mount(enerflo)
        .await;
}

/// The lead/add bodies `enerflo` received, in order.
pub async fn lead_add_bodies(enerflo: &MockServer) -> Vec<Value> {
    enerflo
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == LEAD_ADD)
        .filter_map(|r| serde_json::from_slice(&r.body).ok())
        .collect()
}

/// Install notes: every note written is created (201) with the next id from `first_id`.
pub async fn accepts_notes(enerflo: &MockServer, first_id: u64) {
    let next = AtomicU64::new(first_id);
    Mock::given(method("POST"))
        .and(path_regex(r"^/api/v3/installs/\d+/notes$"))
        .respond_with(move |_: &Request| {
            let id = next.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(201).set_body_json(json!({"id": id, "note": "stored"}))
        })
        .mount(enerflo)
        .await;
}

/// How many notes `enerflo` was asked to write.
pub async fn note_writes(enerflo: &MockServer) -> usize {
    enerflo
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/notes"))
        .count()
}

/// The company's install statuses in Enerflo's `{data: [...]}` shape, one entry as `{id, status}`.
pub async fn lists_statuses(enerflo: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/api/v3/install-statuses"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"id": 1, "name": "New"}, {"id": 4, "name": "On Hold"},
            {"id": 5, "name": "Voided"}, {"id": 6, "status": "Completed"},
            {"id": 321, "name": "Example Custom Status"}]})))
        .mount(enerflo)
        .await;
}

/// `PUT /api/v3/installs/{SAMPLE_INSTALL}` (a status write) is accepted.
pub async fn accepts_install_updates(enerflo: &MockServer) {
    Mock::given(method("PUT"))
        .and(path(format!("/api/v3/installs/{SAMPLE_INSTALL}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": SAMPLE_INSTALL})))
        .mount(enerflo)
        .await;
}

/// `PUT /api/v3/installs/{install}/milestones/{milestone}` is accepted.
pub async fn accepts_milestone_writes(enerflo: &MockServer) {
    Mock::given(method("PUT"))
        .and(path_regex(r"^/api/v3/installs/\d+/milestones/\d+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(enerflo)
        .await;
}

/// How many writes (anything but `GET`) `enerflo` received.
pub async fn writes(enerflo: &MockServer) -> usize {
    enerflo
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() != "GET")
        .count()
}

/// A wiremock answer for an Enerflo write that, like an Enerflo firing webhooks synchronously,
/// first delivers `webhook` to the runner (and waits for its 202), then answers 200. Wiremock
/// serves from its own thread, so the blocking call does not stall the runner.
pub struct FiresWebhookFirst {
    pub runner: SocketAddr,
    pub webhook: Value,
}

impl Respond for FiresWebhookFirst {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let url = format!("http://{}/enerflo/webhooks/{TOKEN}", self.runner);
        let (status, answer) = post_from_thread(url, None, self.webhook.clone())
            .join()
            .expect("webhook sent");
        assert_eq!(status, 202, "webhook not accepted: {answer}");
        ResponseTemplate::new(200).set_body_json(json!({"ok": true}))
    }
}
