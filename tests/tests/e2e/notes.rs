//! Stage 5 end to end: CRM notes -> `POST /crm/installs/{install}/notes` -> Enerflo (wiremock), and
//! Enerflo `new_install_note` webhooks -> local runner -> CRM (wiremock), with both systems echoing
//! notes back the way the real ones do, and neither echo written again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enerflo_sync::classify::Stage;
use enerflo_sync::store::{EntityKind, IdForm, IdRef};
use enerflo_sync_local::LOCAL_CRM_TOKEN;
use serde_json::{Value, json};
use sync_tests::crm::{CrmIds, crm_accepts};
use sync_tests::enerflo::{accepts_notes, note_writes};
use sync_tests::{TOKEN, final_outcome, join_all, post_from_thread, start};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

const INSTALL: u64 = 700001;
const NOTES_PATH: &str = "/api/v3/installs/700001/notes";

fn note_webhook(note_id: u64, text: &str) -> String {
    json!({
        "webhook_event": "new_install_note",
        "install_id": INSTALL,
        "note": {"id": note_id, "note": text, "user": {"full_name": "Sam Installer"},
                 "created_at": "2025-03-01 10:00:00"}
    })
    .to_string()
}

#[tokio::test]
async fn crm_note_round_trip_creates_one_enerflo_note_and_its_echo_never_reaches_the_crm() {
    // GIVEN Enerflo accepts notes and the CRM project is linked to install 700001
    let h = start(&[]).await;
    accepts_notes(&h.enerflo, 30001).await;
    crm_accepts(&h.crm, CrmIds::Numbered("crm-note")).await;
    h.link_project(INSTALL, "crm-proj-1").await;

    // WHEN the CRM posts a note on its project
    let (status, body) = h
        .crm_post(
            "/crm/installs/crm-proj-1/notes",
            json!({"crm_note_id": "crm-n-1", "text": "Customer asked for a call", "author": "Ann"}),
        )
        .await;
    // THEN it is written to Enerflo once, text as given
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body,
        json!({"crm_note_id": "crm-n-1", "enerflo_note_id": 30001, "created": true})
    );
    let sent = h.enerflo.received_requests().await.unwrap();
    let sent: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(sent, json!({"note": "Customer asked for a call"}));

    // WHEN Enerflo fires new_install_note for it
    let (status, queued) = h
        .post_webhook(note_webhook(30001, "Customer asked for a call"))
        .await;
    assert_eq!((status, queued["stage"].as_str()), (202, Some("note")));
    h.settle().await;

    // THEN nothing reaches the CRM, and the event is logged as an echo
    assert_eq!(h.crm_events().await.len(), 0);
    assert_eq!(note_writes(&h.enerflo).await, 1);
    let log = h.event_log(&format!("install:{INSTALL}")).await;
    assert_eq!(log[0].outcome, "echo", "{log:?}");
}

#[tokio::test]
async fn enerflo_note_round_trip_reaches_the_crm_once_and_the_crm_echo_creates_nothing() {
    // GIVEN a linked project and a CRM that answers a new note id
    let h = start(&[]).await;
    accepts_notes(&h.enerflo, 30001).await;
    crm_accepts(&h.crm, CrmIds::Numbered("crm-note")).await;
    h.link_project(INSTALL, "crm-proj-1").await;

    // WHEN someone writes a note in Enerflo
    assert_eq!(
        h.post_webhook(note_webhook(41, " Permit  approved "))
            .await
            .0,
        202
    );
    h.settle().await;

    // THEN the CRM gets one note.created on the project
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["type"], "note.created");
    assert_eq!(e["source_event"], "new_install_note");
    assert_eq!(e["crm_id"], "crm-proj-1");
    assert_eq!(e["enerflo"]["install_id"], INSTALL);
    assert_eq!(
        e["data"],
        json!({"note": {"id": 41, "text": "Permit  approved", "author": "Sam Installer",
                        "created_at": "2025-03-01T10:00:00Z"}})
    );
    // ... and its CRM note id is linked to the Enerflo note
    let link = h
        .runner
        .ports
        .xref
        .resolve(EntityKind::Note, &IdRef::new(IdForm::EnerfloNote, 41))
        .await
        .unwrap()
        .expect("linked");
    assert_eq!(link.crm_id.as_deref(), Some("crm-note-1"));

    // WHEN the CRM's automation posts that note back, by project id and by enerflo:<id>
    for route in [
        "/crm/installs/crm-proj-1/notes",
        "/crm/installs/enerflo:700001/notes",
    ] {
        let (status, body) = h
            .crm_post(
                route,
                json!({"crm_note_id": "crm-note-1", "text": "Permit approved"}),
            )
            .await;
        // THEN it is recognised as an echo and Enerflo is not called
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("echo")),
            "{body}"
        );
    }
    assert_eq!(note_writes(&h.enerflo).await, 0);
    // ... and a repeat of the Enerflo event does not write the CRM again
    let again = json!({"webhook_event": "new_install_note", "epc_install_id": "700001",
                       "note_id": "41", "content": "Permit approved"});
    assert_eq!(h.post_webhook(again.to_string()).await.0, 202);
    h.settle().await;
    assert_eq!(h.crm_events().await.len(), 1);
}

#[tokio::test]
async fn repeated_crm_note_calls_create_one_enerflo_note() {
    let h = start(&[]).await;
    accepts_notes(&h.enerflo, 30001).await;
    let body = json!({"crm_note_id": "crm-n-5", "text": "Roof photos uploaded"});
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(
            h.crm_post("/crm/installs/enerflo:700001/notes", body.clone())
                .await,
        );
    }
    assert_eq!(answers[0].0, 201);
    for (status, answer) in &answers[1..] {
        assert_eq!(*status, 200);
        assert_eq!(
            answer,
            &json!({"crm_note_id": "crm-n-5", "enerflo_note_id": 30001, "created": false})
        );
    }
    assert_eq!(note_writes(&h.enerflo).await, 1);
}

#[tokio::test]
async fn concurrent_crm_note_calls_create_one_enerflo_note() {
    let h = start(&[]).await;
    // A slow Enerflo, so the calls overlap.
    Mock::given(method("POST"))
        .and(path(NOTES_PATH))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"data": {"id": 30009}}))
                .set_delay(Duration::from_millis(400)),
        )
        .mount(&h.enerflo)
        .await;
    let body = json!({"crm_note_id": "crm-n-6", "text": "Same note, five times"});
    let calls: Vec<_> = (0..5)
        .map(|_| h.crm_post("/crm/installs/enerflo:700001/notes", body.clone()))
        .collect();
    let mut statuses = Vec::new();
    for (status, answer) in join_all(calls).await {
        assert_eq!(answer["enerflo_note_id"], 30009, "{answer}");
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 200, 200, 200, 201]);
    assert_eq!(note_writes(&h.enerflo).await, 1);
}

#[tokio::test]
async fn invalid_note_bodies_are_422_naming_every_field_and_unlinked_installs_404() {
    let h = start(&[]).await;
    accepts_notes(&h.enerflo, 30001).await;
    let (status, body) = h
        .crm_post(
            "/crm/installs/enerflo:700001/notes",
            json!({"text": " ", "author": ["x"]}),
        )
        .await;
    assert_eq!(status, 422);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, vec!["crm_note_id", "text", "author"]);
    let (status, _) = h
        .crm_post(
            "/crm/installs/crm-proj-unknown/notes",
            json!({"crm_note_id": "n", "text": "x"}),
        )
        .await;
    assert_eq!(status, 404);
    let unauthorised = h
        .http
        .post(h.runner.url("/crm/installs/enerflo:700001/notes"))
        .json(&json!({"crm_note_id": "n", "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status().as_u16(), 401);
    assert_eq!(note_writes(&h.enerflo).await, 0);
}

#[tokio::test]
async fn a_note_event_without_a_recognisable_install_id_is_dead_lettered_with_the_reason() {
    let h = start(&[]).await;
    crm_accepts(&h.crm, CrmIds::Numbered("crm-note")).await;
    let body = json!({"webhook_event": "new_install_note", "note": {"id": 3, "note": "Orphan"}})
        .to_string();
    assert_eq!(h.post_webhook(body.clone()).await.0, 202);
    let no_text =
        json!({"webhook_event": "new_install_note", "install_id": 700001, "note": {"id": 4}})
            .to_string();
    assert_eq!(h.post_webhook(no_text).await.0, 202);
    h.drain(Duration::from_secs(10)).await;

    let dead = h.dead_letters(Stage::Note);
    assert_eq!(dead.len(), 2, "{dead:?}");
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("no install id") && !r.contains("no note text")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("no note text") && !r.contains("no install id")),
        "{reasons:?}"
    );
    assert!(
        dead.iter().any(|d| d.body == body),
        "the raw body is kept for replay"
    );
    assert_eq!(h.crm_events().await.len(), 0);
}

/// Enerflo as it behaves: a note written through the API fires `new_install_note` at once, here
/// even before the API call answers (the hardest case for loop control).
struct EchoingEnerflo {
    webhook_url: String,
    next_id: AtomicU64,
    /// Store the text as HTML, as some systems do, so only the ids can tell the echo.
    as_html: bool,
}

impl Respond for EchoingEnerflo {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let install: u64 = request
            .url
            .path()
            .split('/')
            .nth(4)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let text = if self.as_html {
            json!(format!(
                "<p>{}</p>",
                body["note"].as_str().unwrap_or_default()
            ))
        } else {
            body["note"].clone()
        };
        let hook = json!({
            "webhook_event": "new_install_note", "install_id": install,
            "note": {"id": id, "note": text, "user": {"full_name": "API"},
                     "created_at": "2025-03-01 10:00:00"}
        });
        let url = self.webhook_url.clone();
        post_from_thread(url, None, hook);
        ResponseTemplate::new(201)
            .set_body_json(json!({"id": id}))
            .set_delay(Duration::from_millis(300))
    }
}

/// A CRM whose automation posts every note it receives back to `POST /crm/installs/.../notes`,
/// before it answers the webhook with the new note's id.
struct EchoingCrm {
    runner: String,
    next_id: AtomicU64,
    echoes: Arc<Mutex<Vec<(u16, Value)>>>,
    /// Prefix the text, as a CRM template might, so only the ids can tell the echo.
    prefix: &'static str,
}

impl Respond for EchoingCrm {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let event: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        if event["type"] != "note.created" {
            return ResponseTemplate::new(200).set_body_json(json!({"crm_id": "crm-proj-1"}));
        }
        let crm_note_id = format!("crm-note-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let url = format!(
            "{}/crm/installs/enerflo:{}/notes",
            self.runner, event["enerflo"]["install_id"]
        );
        let text = format!(
            "{}{}",
            self.prefix,
            event["data"]["note"]["text"].as_str().unwrap_or_default()
        );
        let body = json!({"crm_note_id": crm_note_id, "text": text, "author": "CRM automation"});
        let echoes = self.echoes.clone();
        std::thread::spawn(move || {
            let answer = post_from_thread(url, Some(LOCAL_CRM_TOKEN), body).join();
            echoes.lock().unwrap().push(answer.expect("echo posted"));
        });
        ResponseTemplate::new(200)
            .set_body_json(json!({"crm_id": crm_note_id}))
            .set_delay(Duration::from_millis(300))
    }
}

#[tokio::test]
async fn notes_echoed_back_by_both_systems_before_they_answer_do_not_loop() {
    // GIVEN an Enerflo and a CRM that both echo every note back, before answering
    let h = start(&[]).await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/api/v3/installs/\d+/notes$"))
        .respond_with(EchoingEnerflo {
            webhook_url: h.runner.url(&format!("/enerflo/webhooks/{TOKEN}")),
            next_id: AtomicU64::new(30001),
            as_html: false,
        })
        .mount(&h.enerflo)
        .await;
    let echoes = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path("/crm/events"))
        .respond_with(EchoingCrm {
            runner: h.runner.url(""),
            next_id: AtomicU64::new(1),
            echoes: echoes.clone(),
            prefix: "",
        })
        .mount(&h.crm)
        .await;

    // WHEN a note starts in the CRM, and another one in Enerflo
    let (status, body) = h
        .crm_post(
            "/crm/installs/enerflo:700001/notes",
            json!({"crm_note_id": "crm-origin-1", "text": "Started in the CRM"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        h.post_webhook(note_webhook(41, "Started in Enerflo"))
            .await
            .0,
        202
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while echoes.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.settle().await;

    // THEN each system was written exactly once: no echo went back
    assert_eq!(
        note_writes(&h.enerflo).await,
        1,
        "one Enerflo note (from the CRM)"
    );
    let events = h.crm_events().await;
    assert_eq!(events.len(), 1, "one CRM note (from Enerflo): {events:#?}");
    assert_eq!(events[0]["data"]["note"]["text"], "Started in Enerflo");
    let echoes = echoes.lock().unwrap().clone();
    assert_eq!(echoes.len(), 1);
    assert_eq!(
        (echoes[0].0, echoes[0].1["status"].as_str()),
        (200, Some("echo")),
        "{echoes:?}"
    );
    // ... and once the answers are in, the ids link both notes in both directions
    let from_crm = h
        .runner
        .ports
        .xref
        .resolve(EntityKind::Note, &IdRef::new(IdForm::Crm, "crm-origin-1"))
        .await
        .unwrap()
        .expect("linked");
    assert_eq!(from_crm.id(IdForm::EnerfloNote).as_deref(), Some("30001"));
    let from_enerflo = h
        .runner
        .ports
        .xref
        .resolve(EntityKind::Note, &IdRef::new(IdForm::EnerfloNote, 41))
        .await
        .unwrap()
        .expect("linked");
    assert_eq!(from_enerflo.crm_id.as_deref(), Some("crm-note-1"));
}

#[tokio::test]
async fn crm_include_raw_sends_the_note_webhook_along() {
    let h = start(&[("CRM_INCLUDE_RAW", "true")]).await;
    crm_accepts(&h.crm, CrmIds::Numbered("crm-note")).await;
    assert_eq!(h.post_webhook(note_webhook(42, "Raw please")).await.0, 202);
    h.settle().await;
    let events = h.crm_events().await;
    assert_eq!(events[0]["raw"]["webhook"]["note"]["id"], 42);
    assert_eq!(
        events[0]["crm_id"],
        Value::Null,
        "install not linked: no project id"
    );
}

#[tokio::test]
async fn with_the_local_sandbox_and_inbox_a_crm_note_is_echoed_back_by_the_sandbox_and_dropped() {
    // GIVEN `make run` defaults: no Enerflo or CRM credentials, so the sandbox and the inbox serve
    let data_dir = sync_tests::temp_dir("notes-sandbox");
    let env = std::collections::HashMap::from([
        ("LISTEN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("DATA_DIR".to_owned(), data_dir.display().to_string()),
    ]);
    let config = enerflo_sync::config::Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    let runner = enerflo_sync_local::start(config).await.unwrap();
    let http = enerflo_sync::wire::client();
    let post = |route: &str, body: Value| {
        http.post(runner.url(route))
            .bearer_auth(LOCAL_CRM_TOKEN)
            .json(&body)
            .send()
    };

    // WHEN the CRM posts a note
    let resp = post(
        "/crm/installs/enerflo:700001/notes",
        json!({"crm_note_id": "crm-n-1", "text": "Hello from the CRM"}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let answer: Value = resp.json().await.unwrap();
    let enerflo_note_id = answer["enerflo_note_id"].clone();
    assert!(enerflo_note_id.is_u64(), "{answer}");

    // THEN the sandbox stored it and fired new_install_note, which the runner drops as an echo
    let outcome = final_outcome(
        &runner,
        "install:700001",
        "new_install_note",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        outcome.as_deref(),
        Some("echo"),
        "the sandbox webhook was processed as an echo"
    );
    let inbox = runner.inbox.clone().expect("local inbox");
    assert_eq!(inbox.events().len(), 0, "nothing went to the CRM");
    let listed: Value = http
        .get(runner.url("/sandbox/enerflo/api/v3/installs/700001/notes"))
        .header("api-key", "sandbox-api-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["id"], enerflo_note_id);
    assert_eq!(listed["data"][0]["note"], "Hello from the CRM");
    runner.shutdown().await;
}

#[tokio::test]
async fn an_enerflo_echo_with_altered_text_that_overtakes_the_answer_is_still_not_pushed() {
    // GIVEN an Enerflo that fires new_install_note before answering, with the text as HTML
    let h = start(&[]).await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/api/v3/installs/\d+/notes$"))
        .respond_with(EchoingEnerflo {
            webhook_url: h.runner.url(&format!("/enerflo/webhooks/{TOKEN}")),
            next_id: AtomicU64::new(30001),
            as_html: true,
        })
        .mount(&h.enerflo)
        .await;
    crm_accepts(&h.crm, CrmIds::Numbered("crm-note")).await;

    // WHEN the CRM writes a note
    let (status, _) = h
        .crm_post(
            "/crm/installs/enerflo:700001/notes",
            json!({"crm_note_id": "crm-origin-2", "text": "Plain text"}),
        )
        .await;
    assert_eq!(status, 201);
    h.settle().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.settle().await;

    // THEN the echo was held back until the ids were linked, then dropped
    assert_eq!(h.crm_events().await.len(), 0);
    assert!(h.dead_letters(Stage::Note).is_empty());
    let log = h.event_log(&format!("install:{INSTALL}")).await;
    assert_eq!(log[0].outcome, "echo", "{log:?}");
}

#[tokio::test]
async fn a_crm_echo_with_altered_text_that_overtakes_the_answer_creates_nothing_in_enerflo() {
    // GIVEN a CRM that posts every note back, prefixed, before answering with its id
    let h = start(&[]).await;
    accepts_notes(&h.enerflo, 30001).await;
    let echoes = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path("/crm/events"))
        .respond_with(EchoingCrm {
            runner: h.runner.url(""),
            next_id: AtomicU64::new(1),
            echoes: echoes.clone(),
            prefix: "From Enerflo: ",
        })
        .mount(&h.crm)
        .await;

    // WHEN a note is written in Enerflo
    assert_eq!(h.post_webhook(note_webhook(43, "Meter set")).await.0, 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    while echoes.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.settle().await;

    // THEN the CRM got it once, and its post-back waited for the link and answered echo
    assert_eq!(h.crm_events().await.len(), 1);
    let echoes = echoes.lock().unwrap().clone();
    assert_eq!(
        (echoes[0].0, echoes[0].1["status"].as_str()),
        (200, Some("echo")),
        "{echoes:?}"
    );
    assert_eq!(note_writes(&h.enerflo).await, 0);
}
