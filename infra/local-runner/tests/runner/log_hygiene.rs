//! Log hygiene: the local runner binary at `RUST_LOG=debug` writes JSON lines that carry ids and
//! outcomes only (no customer name, e-mail, phone, street, city or note text, and no secret, in
//! any line of stdout or stderr) through a full run (every stage's sample payloads, every inbound
//! route, rejected requests), and when Enerflo and the CRM refuse calls with error answers that
//! quote the customer data they were sent (retries, dead letters, failed inbound writes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::kit::{Process, data_dir, fixture};

// Secrets the runner is given, and credentials a caller tried: none may be logged.
const WEBHOOK_TOKEN: &str = "hygiene-webhook-token-6a1f0c3e9b7d4e2a5c8f";
const CRM_TOKEN_NEW: &str = "hygiene-crm-bearer-new-0f3b7c1d2e4a5968";
const CRM_TOKEN_OLD: &str = "hygiene-crm-bearer-old-81c4e6a2b9d05f37";
const WRONG_WEBHOOK_TOKEN: &str = "hygiene-wrong-webhook-token-d41d8cd98f00";
const WRONG_BEARER: &str = "hygiene-wrong-bearer-e3b0c44298fc1c14";
const OPS_TOKEN: &str = "hygiene-ops-console-token-5b2e9d7c41a0f6e3";
/// The runner's own sandbox key (`SANDBOX_API_KEY` in the runner).
const SANDBOX_API_KEY: &str = "sandbox-api-key";

// Customer data the requests carry, beyond what the fixtures hold.
const LEAD_NOTES: &str = "Prefers mornings, the roof faces south";
const CRM_NOTE_TEXT: &str = "Gate code 4417, dog in the yard";
const ENERFLO_NOTE_TEXT: &str = "Spoke with the homeowner about the inverter spot";
const NOTE_AUTHOR: &str = "Sam Installer";
const BAD_EMAIL: &str = "pat.placeholder(at)example";
const INSTALL: u64 = 700_001;

/// The runner binary at debug level, with the secrets above and a short retry budget.
struct Runner {
    process: Process,
    port: u16,
    data_dir: std::path::PathBuf,
}

impl Runner {
    /// A runner logging at debug level; with no `extra` Enerflo or CRM settings it serves its own
    /// sandbox and inbox.
    fn start(extra: &[(&str, String)]) -> Self {
        let data_dir = data_dir("log-hygiene");
        let mut env = vec![
            ("WEBHOOK_TOKEN", WEBHOOK_TOKEN.to_owned()),
            // A rotation in progress: both values are secrets.
            (
                "CRM_INBOUND_TOKEN",
                format!("{CRM_TOKEN_NEW},{CRM_TOKEN_OLD}"),
            ),
            // The operator console's token: a secret too (the banner only names it).
            ("OPS_TOKEN", OPS_TOKEN.to_owned()),
            // Failing events reach the DLQ (and its log line) within seconds.
            ("RETRY_MAX_ATTEMPTS", "2".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        // Port 0: the runner binds a free port and names it in its banner (no race for one).
        let mut process = Process::spawn(&data_dir, "127.0.0.1:0", "debug", &env);
        let port = process.wait_listening(Duration::from_secs(30));
        Self {
            process,
            port,
            data_dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until every event the webhook queued (at least `min_queued`, plus whatever the
    /// sandbox fires back) is processed or dead-lettered, and nothing new came for a while.
    async fn wait_drained(&self, min_queued: usize) {
        let deadline = Instant::now() + Duration::from_secs(45);
        let mut settled: Option<(BTreeSet<String>, Instant)> = None;
        loop {
            let lines = self.process.lines();
            let (queued, finished) = queued_and_finished(&lines);
            let drained = queued.len() >= min_queued && queued.is_subset(&finished);
            settled = match settled {
                Some((before, since)) if drained && before == queued => {
                    if since.elapsed() > Duration::from_millis(1500) {
                        return;
                    }
                    Some((before, since))
                }
                _ if drained => Some((queued.clone(), Instant::now())),
                _ => None,
            };
            assert!(
                Instant::now() < deadline,
                "not drained: {} queued (at least {min_queued} expected), unfinished {:?}; webhooks: {:?}",
                queued.len(),
                queued.difference(&finished).collect::<Vec<_>>(),
                webhook_outcomes(&lines)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the runner and returns everything it wrote.
    fn stop(mut self) -> Vec<String> {
        let lines = self.process.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        lines
    }
}

fn full_lead() -> Value {
    json!({
        "crm_id": "crm-lead-hygiene-1",
        "first_name": "Pat",
        "last_name": "Placeholder",
        "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX", "zip": "75001"},
        "email": "pat.placeholder@example.com",
        "mobile": "(555) 010-0000",
        "rep_email": "riley.rep@example.com",
        "setter_email": "setter@example.com",
        "lead_source": "CRM",
        "notes": LEAD_NOTES
    })
}

/// The log as JSON values, asserting that every line but the start-up banner is a JSON object.
fn json_log(lines: &[String]) -> Vec<Value> {
    let banner = [
        "enerflo-crm-sync local runner listening on",
        "  data dir:",
        "  metrics:",
        "  Enerflo webhook:",
        "  Enerflo:",
        "  CRM:",
        "  Console:",
    ];
    for line in lines {
        let is_json = serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object());
        assert!(
            is_json || banner.iter().any(|b| line.starts_with(b)),
            "not a JSON log line: {line}"
        );
    }
    json_lines(lines)
}

/// Fails, quoting every offending line, when any line matches a forbidden pattern (or one of the
/// `extra_secrets`).
fn assert_no_leak(lines: &[String], extra_secrets: &[&'static str]) {
    let mut patterns = forbidden();
    patterns.extend(
        extra_secrets
            .iter()
            .map(|s| ("a secret", Pattern::Literal(s))),
    );
    let mut leaks = Vec::new();
    for (what, pattern) in &patterns {
        for line in lines.iter().filter(|l| pattern.is_match(l)) {
            leaks.push(format!("{what}: {line}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaking log line(s):\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

/// The JSON log lines (the start-up banner is plain text) as values.
fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

fn span_key(line: &Value) -> Option<String> {
    line.pointer("/span/dedupe_key")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// (event, outcome) of every webhook the runner answered, for failure messages.
fn webhook_outcomes(lines: &[String]) -> Vec<(String, String)> {
    json_lines(lines)
        .iter()
        .filter(|l| l["message"] == "webhook")
        .map(|l| {
            let event = l.pointer("/span/event").or_else(|| l.get("event"));
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("?").to_owned();
            (text(event), text(l.get("outcome")))
        })
        .collect()
}

/// Dedupe keys queued by the webhook, and those a consumer finished (processed or dead-lettered).
fn queued_and_finished(lines: &[String]) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut queued, mut finished) = (BTreeSet::new(), BTreeSet::new());
    for line in json_lines(lines) {
        match (line["message"].as_str(), line["outcome"].as_str()) {
            (Some("webhook"), Some("queued")) => queued.extend(span_key(&line)),
            (Some("processed" | "dead-lettered"), _) => finished.extend(span_key(&line)),
            _ => {}
        }
    }
    (queued, finished)
}

/// How one kind of forbidden content is recognised in a line.
enum Pattern {
    /// Anywhere.
    Literal(&'static str),
    /// As a whole word (so "Pat" does not match "Path").
    Word(&'static str),
    /// Any e-mail address.
    Email,
    /// These digits, whatever punctuation separates them: 5550100000, (555) 010-0000,
    /// 555.010.0000, +1 555 010 0000.
    Phone(&'static str),
}

impl Pattern {
    fn is_match(&self, line: &str) -> bool {
        match self {
            Self::Literal(s) => line.contains(s),
            Self::Word(s) => line.match_indices(s).any(|(at, _)| {
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !word(line[..at].chars().next_back()) && !word(line[at + s.len()..].chars().next())
            }),
            Self::Email => line.match_indices('@').any(|(at, _)| {
                let local = line[..at].chars().next_back();
                let domain: String = line[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                local.is_some_and(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c))
                    && domain.trim_end_matches('.').contains('.')
            }),
            Self::Phone(digits) => line
                .chars()
                .filter(|c| !" .-()+".contains(*c))
                .collect::<String>()
                .contains(digits),
        }
    }
}

/// Everything that must never appear in a log line, with what it stands for.
fn forbidden() -> Vec<(&'static str, Pattern)> {
    use Pattern::{Email, Literal, Phone, Word};
    vec![
        // Secrets, and credentials callers tried.
        ("the webhook token", Literal(WEBHOOK_TOKEN)),
        ("the new CRM bearer", Literal(CRM_TOKEN_NEW)),
        ("the old CRM bearer", Literal(CRM_TOKEN_OLD)),
        ("a wrong webhook token", Literal(WRONG_WEBHOOK_TOKEN)),
        ("a wrong bearer", Literal(WRONG_BEARER)),
        ("the operator console token", Literal(OPS_TOKEN)),
        ("the Enerflo API key", Literal(SANDBOX_API_KEY)),
        ("a signing secret", Literal("whsec_")),
        // Names.
        ("a first name", Word("Pat")),
        ("a last name", Word("Placeholder")),
        ("a rep's name", Word("Riley")),
        ("a note author", Literal(NOTE_AUTHOR)),
        // E-mails, valid or not.
        ("an e-mail address", Email),
        ("an invalid e-mail", Literal(BAD_EMAIL)),
        // Phones.
        ("the customer's phone", Phone("5550100000")),
        ("the rep's phone", Phone("5550100001")),
        // Addresses.
        ("a street", Literal("Example Way")),
        ("a city", Word("Exampleville")),
        ("a county", Literal("Example County")),
        ("a zip", Word("75001")),
        // Free text.
        ("lead notes", Literal(LEAD_NOTES)),
        ("a CRM note", Literal(CRM_NOTE_TEXT)),
        ("an Enerflo note", Literal(ENERFLO_NOTE_TEXT)),
    ]
}

#[test]
fn the_scanner_recognises_each_form_it_looks_for() {
    let cases = [
        (Pattern::Word("Pat"), "name=Pat Placeholder", true),
        (Pattern::Word("Pat"), "\"path\":\"/Path/x\"", false),
        (Pattern::Email, "to pat.placeholder@example.com now", true),
        (Pattern::Email, "user@host", false),
        (Pattern::Phone("5550100000"), "phone (555) 010-0000", true),
        (Pattern::Phone("5550100000"), "+1 555.010.0000", true),
        (Pattern::Phone("5550100000"), "555 010 0001", false),
        (Pattern::Word("75001"), "zip 75001,", true),
        (Pattern::Word("75001"), "id 7500123", false),
    ];
    for (pattern, line, expected) in cases {
        assert_eq!(pattern.is_match(line), expected, "{line}");
    }
}

#[tokio::test]
async fn a_full_run_at_debug_level_logs_json_ids_and_outcomes_but_no_pii_or_secret() {
    // GIVEN a runner on its own sandbox and inbox, logging everything at debug level
    let runner = Runner::start(&[]);
    let http = enerflo_sync::wire::client();
    let webhook = |body: String, query: &str| {
        http.post(runner.url(&format!("/enerflo/webhooks/{WEBHOOK_TOKEN}{query}")))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    // WHEN every stage's sample payloads arrive as webhooks
    let mut posted = 0;
    for (name, query) in [
        ("v2-deal.projectSubmitted.json", ""),
        ("v1-new_customer.json", ""),
        ("v1-update_customer.json", ""),
        ("v2-customer.created.json", ""),
        ("v2-customer.updated.v2.json", ""),
        ("v1-update_install.json", ""),
        (
            "v1-update_install.docs-variant.json",
            "?event=update_install",
        ),
        ("v1-signed_change_order.json", "?event=signed_change_order"),
    ] {
        let resp = webhook(fixture(name), query).await.unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{name}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["status"], "queued", "{name}: {answer}");
        posted += 1;
    }
    for body in [
        json!({"webhook_event": "project_milestone_updated", "install_id": INSTALL,
               "milestone_id": 3903, "milestone": {"id": 3903, "title": "Installation"},
               "start_date": "2025-04-01", "completed_date": "2025-04-02",
               "updated_at": "2025-04-02 10:00:00"}),
        json!({"webhook_event": "new_install_note", "install_id": INSTALL,
               "note": {"id": 88001, "note": ENERFLO_NOTE_TEXT,
                        "user": {"full_name": NOTE_AUTHOR}, "created_at": "2025-03-01 10:00:00"}}),
    ] {
        let resp = webhook(body.to_string(), "").await.unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{body}");
        posted += 1;
    }

    // AND the CRM calls every inbound route (each write makes the sandbox fire a webhook back)
    let crm = |method: reqwest::Method, path: &str, bearer: &str, body: Value| {
        http.request(method, runner.url(path))
            .bearer_auth(bearer)
            .json(&body)
            .send()
    };
    let install = format!("/crm/installs/enerflo:{INSTALL}");
    let calls = [
        (
            reqwest::Method::POST,
            "/crm/leads".to_owned(),
            full_lead(),
            201,
        ),
        (
            reqwest::Method::PUT,
            format!("{install}/status"),
            json!({"status": "In Progress"}),
            200,
        ),
        (
            reqwest::Method::PUT,
            format!("{install}/milestones/3905"),
            json!({"start_date": "2025-05-01", "completed_date": "2025-05-20"}),
            200,
        ),
        (
            reqwest::Method::POST,
            format!("{install}/notes"),
            json!({"crm_note_id": "crm-note-hygiene-1", "text": CRM_NOTE_TEXT, "author": NOTE_AUTHOR}),
            201,
        ),
    ];
    for (method, path, body, status) in calls {
        let resp = crm(method, &path, CRM_TOKEN_OLD, body).await.unwrap();
        let got = resp.status().as_u16();
        assert_eq!(got, status, "{path}: {}", resp.text().await.unwrap());
    }
    // Each route wrote through to Enerflo (the sandbox), so no answer came from a shortcut.
    let calls: Value = http
        .get(runner.url("/sandbox/enerflo/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for write in [
        "POST /api/v1/partner/action/lead/add".to_owned(),
        format!("PUT /api/v3/installs/{INSTALL}"),
        format!("PUT /api/v3/installs/{INSTALL}/milestones/3905"),
        format!("POST /api/v3/installs/{INSTALL}/notes"),
    ] {
        assert!(
            calls["calls"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c.as_str() == Some(write.as_str())),
            "{write} in {calls}"
        );
    }

    // AND requests that are turned away
    let project = fixture("v2-deal.projectSubmitted.json");
    let resp = http
        .post(runner.url(&format!("/enerflo/webhooks/{WRONG_WEBHOOK_TOKEN}")))
        .body(project)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let truncated = format!("{{\"first_name\": \"Pat\", \"email\": \"{BAD_EMAIL}\", \"mobile\": ");
    let resp = webhook(truncated, "").await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = crm(
        reqwest::Method::POST,
        "/crm/leads",
        WRONG_BEARER,
        full_lead(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let mut bad = full_lead();
    bad["email"] = json!(BAD_EMAIL);
    bad["address"]["state"] = json!("Texas");
    let resp = crm(reqwest::Method::POST, "/crm/leads", CRM_TOKEN_NEW, bad)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);

    // THEN, once every queued event (ours, and the one webhook the sandbox fired back after each
    // of the four inbound writes) is processed or dead-lettered ...
    runner.wait_drained(posted + 4).await;
    let inbox: Value = http
        .get(runner.url("/crm-inbox/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delivered: BTreeSet<&str> = inbox["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.pointer("/event/type").and_then(Value::as_str))
        .collect();
    for kind in [
        "project.submitted",
        "lead.upserted",
        "status.changed",
        "milestone.updated",
        "note.created",
        "change_order.signed",
    ] {
        assert!(
            delivered.contains(kind),
            "{kind} reached the CRM inbox: {delivered:?}"
        );
    }
    // ... and an operator signs in to the console, searches by an e-mail address and reads the
    // install's timeline (pages full of customer data: the access log must carry none of it)
    let browser = enerflo_sync::wire::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let origin = runner.url("");
    let login = browser
        .post(runner.url("/ops/login"))
        .header("origin", origin.trim_end_matches('/'))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={OPS_TOKEN}&next=%2Fops%2F"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 303, "signed in");
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    for page in [
        "/ops/search?q=pat.placeholder%40example.com".to_owned(),
        format!("/ops/entity?ref=install%3A{INSTALL}"),
        "/ops/".to_owned(),
    ] {
        let resp = browser
            .get(runner.url(&page))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{page}");
    }
    let lines = runner.stop();

    // ... the log is JSON lines (apart from the start-up banner) ...
    let logs = json_log(&lines);
    assert!(
        logs.iter()
            .any(|l| l["message"] == "console request" && l["page"] == "entity"),
        "console access is logged"
    );

    // ... that traces every event by id and outcome (so it cannot pass on an empty log) ...
    let has = |pred: &dyn Fn(&Value) -> bool| logs.iter().any(pred);
    assert!(has(&|l| l["level"] == "DEBUG"), "debug level is on");
    assert!(
        has(&|l| span_key(l).is_some_and(|k| k.starts_with("deal.projectSubmitted:"))),
        "the project submission is traced by its dedupe key"
    );
    for outcome in ["delivered", "echo"] {
        assert!(
            has(&|l| l["message"] == "processed" && l["outcome"] == outcome),
            "a `{outcome}` outcome is logged"
        );
    }
    for stage in [
        "project",
        "leads",
        "status",
        "milestone",
        "note",
        "change_order",
    ] {
        assert!(
            has(&|l| l["message"] == "processed" && l.pointer("/span/stage") == Some(&json!(stage))),
            "stage {stage} logged a processed event"
        );
    }

    // ... and no line holds customer data or a secret
    assert_no_leak(&lines, &[]);
}

const STUB_ENERFLO_KEY: &str = "stub-enerflo-api-key-5b2f9e0c7a13d846";
/// `whsec_` + base64 of 32 bytes of 0x42: obviously fake.
const STUB_CRM_SECRET: &str = "whsec_QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

fn text_at<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A CRM and an Enerflo that refuse everything, quoting the customer data they were sent back
/// in their error answers (as real CRMs do: "Contact Pat Placeholder <pat@...> already exists").
async fn start_echoing_stub() -> std::net::SocketAddr {
    use axum::http::StatusCode;
    use axum::routing::post;

    async fn crm(axum::Json(event): axum::Json<Value>) -> (StatusCode, axum::Json<Value>) {
        let who = format!(
            "{} {} <{}> {}",
            text_at(&event, "/data/first_name"),
            text_at(&event, "/data/last_name"),
            text_at(&event, "/data/email"),
            text_at(&event, "/data/phone"),
        );
        if event["source_event"] == "customer.created" {
            let message = format!("Timed out saving contact {who}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"message": message})),
            )
        } else {
            let message = format!("Contact {who} already exists");
            let errors = json!({"email": [format!("{} is taken", text_at(&event, "/data/email"))]});
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"message": message, "errors": errors})),
            )
        }
    }
    async fn lead_add(axum::Json(body): axum::Json<Value>) -> (StatusCode, axum::Json<Value>) {
        let message = format!(
            "Could not store lead {} {} at {}, {}",
            text_at(&body, "/lead/first_name"),
            text_at(&body, "/lead/last_name"),
            text_at(&body, "/lead/address"),
            text_at(&body, "/lead/city"),
        );
        (
            StatusCode::BAD_GATEWAY,
            axum::Json(json!({"message": message})),
        )
    }
    async fn note(axum::Json(body): axum::Json<Value>) -> (StatusCode, axum::Json<Value>) {
        let quoted = body
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" / ");
        let errors = json!({"note": [format!("The note \"{quoted}\" contains a blocked word.")]});
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"message": "The given data was invalid.", "errors": errors})),
        )
    }

    let app = axum::Router::new()
        .route("/crm/events", post(crm))
        .route("/enerflo/api/v1/partner/action/lead/add", post(lead_add))
        .route("/enerflo/api/v3/installs/{id}/notes", post(note));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test]
async fn error_answers_quoting_customer_data_are_not_logged_on_retry_or_dead_letter() {
    // GIVEN an Enerflo and a CRM that refuse everything and quote the customer data back
    let stub = start_echoing_stub().await;
    let runner = Runner::start(&[
        ("ENERFLO_BASE_URL", format!("http://{stub}/enerflo")),
        ("ENERFLO_API_KEY", STUB_ENERFLO_KEY.to_owned()),
        ("CRM_WEBHOOK_URL", format!("http://{stub}/crm/events")),
        ("CRM_WEBHOOK_SECRET", STUB_CRM_SECRET.to_owned()),
        ("INBOUND_WAIT_SECS", "2".to_owned()),
    ]);
    let http = enerflo_sync::wire::client();

    // WHEN customer events are pushed to that CRM (a 422 dead-letters at once, a 503 is retried
    // and then dead-lettered)
    for name in ["v1-new_customer.json", "v2-customer.created.json"] {
        let resp = http
            .post(runner.url(&format!("/enerflo/webhooks/{WEBHOOK_TOKEN}")))
            .body(fixture(name))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{name}");
    }
    runner.wait_drained(2).await;
    // AND the CRM's lead and note are refused by Enerflo (a 502 retried within the budget, a 422)
    let lead = http
        .post(runner.url("/crm/leads"))
        .bearer_auth(CRM_TOKEN_NEW)
        .json(&full_lead())
        .send()
        .await
        .unwrap();
    assert!(
        [502, 503].contains(&lead.status().as_u16()),
        "{}",
        lead.text().await.unwrap()
    );
    let note = http
        .post(runner.url(&format!("/crm/installs/enerflo:{INSTALL}/notes")))
        .bearer_auth(CRM_TOKEN_OLD)
        .json(&json!({"crm_note_id": "crm-note-hygiene-2", "text": CRM_NOTE_TEXT, "author": NOTE_AUTHOR}))
        .send()
        .await
        .unwrap();
    assert_eq!(note.status().as_u16(), 422);
    let lines = runner.stop();

    // THEN the failures are logged, by kind and status ...
    let logs = json_log(&lines);
    let has = |pred: &dyn Fn(&Value) -> bool| logs.iter().any(pred);
    assert_eq!(
        logs.iter()
            .filter(|l| l["message"] == "dead-lettered")
            .count(),
        2,
        "both events were dead-lettered"
    );
    assert!(
        has(&|l| l["message"] == "will retry"),
        "the 503 was retried"
    );
    assert!(
        has(&|l| l["message"] == "retrying enerflo call"),
        "lead/add was retried"
    );
    // ... and the quoted customer data and the credentials are not
    assert_no_leak(&lines, &[STUB_ENERFLO_KEY]);
}
