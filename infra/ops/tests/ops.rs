//! The operator tool's operations against both backends: the embedded store and queue of the
//! local runner, and DynamoDB + SQS on moto.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// A directory without main.rs: a module of this binary, not a test target of its own.
#[path = "ops/doctor.rs"]
mod doctor;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_config::{BehaviorVersion, Region};
use enerflo_sync::classify::Stage;
use enerflo_sync::queue::embedded::EmbeddedQueue;
use enerflo_sync::queue::sqs::{SqsEventQueue, create_queues};
use enerflo_sync::queue::{Delivery, EventQueue, MessageMeta, QueueMessage};
use enerflo_sync::store::dynamo::{DynamoStore, create_table};
use enerflo_sync::store::embedded::{EmbeddedStore, open_database};
use enerflo_sync::store::{EntityKind, EventRecord, IdForm, IdRef};
use enerflo_sync_ops::{
    Backend, Filter, entity_report, event_rerun, list_dead_letters, parse_time, replay,
};

fn meta(group: &str, key: &str) -> MessageMeta {
    MessageMeta {
        stage: Stage::Project,
        event: "deal.projectSubmitted".into(),
        dedupe_key: key.into(),
        group: group.into(),
        received_at: "2026-11-28T06:00:00Z".into(),
    }
}

fn record(key: &str, entity: &str, body: &str) -> EventRecord {
    EventRecord {
        dedupe_key: key.into(),
        event: "deal.projectSubmitted".into(),
        stage: Some("project".into()),
        entity: Some(entity.into()),
        received_at: "2026-11-28T06:00:00Z".into(),
        received_ms: 1_764_309_600_000,
        raw_body: body.into(),
        outcome: "dead_lettered".into(),
        detail: None,
        deliveries: 1,
        attempts: 3,
        history: Vec::new(),
    }
}

/// Puts two messages (two entities) in the project DLQ via the normal dead-letter path.
async fn seed_dead_letters(
    queue: &dyn EventQueue,
    receive: impl AsyncFn() -> Vec<Delivery>,
    ack: impl AsyncFn(String),
) {
    for (group, key) in [("deal:d-1", "k1"), ("deal:d-2", "k2")] {
        queue
            .send(&QueueMessage {
                meta: meta(group, key),
                body: format!("{{\"n\":\"{key}\"}}"),
            })
            .await
            .unwrap();
    }
    let mut dead = 0;
    for _ in 0..10 {
        for d in receive().await {
            queue
                .dead_letter(Stage::Project, &d, "CRM unavailable: HTTP 500")
                .await
                .unwrap();
            ack(d.receipt.clone()).await;
            dead += 1;
        }
        if dead == 2 {
            break;
        }
    }
    assert_eq!(dead, 2);
}

async fn contract(backend: &Backend, received: impl AsyncFn() -> Vec<Delivery>) {
    // list shows both with their reason
    let all = list_dead_letters(backend, &Filter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|d| d.reason == "CRM unavailable: HTTP 500"));

    // a time range that excludes them selects nothing
    let future = Filter {
        since: Some(parse_time("2999-01-01T00:00:00Z").unwrap()),
        ..Filter::default()
    };
    let (none, report) = replay(backend, &future, false, |_, _| {}).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(report.replayed, 0);

    // replay by entity moves exactly that one back, with a replay mark and the same log key
    let only_d1 = Filter {
        entity: Some("deal:d-1".into()),
        stage: Some(Stage::Project),
        ..Filter::default()
    };
    let mut progress = Vec::new();
    let (listed, report) = replay(backend, &only_d1, false, |done, total| {
        progress.push((done, total))
    })
    .await
    .unwrap();
    assert_eq!(
        (listed.len(), report.replayed, report.failed.len()),
        (1, 1, 0)
    );
    assert_eq!(progress, vec![(1, 1)]);
    let back = received().await;
    assert_eq!(back.len(), 1);
    let m = back[0].meta.as_ref().unwrap();
    assert_eq!(m.group, "deal:d-1");
    assert_eq!(m.log_key(), "k1");
    assert_ne!(m.dedupe_key, "k1");
    assert_eq!(back[0].body, "{\"n\":\"k1\"}");

    // the other stays in the DLQ; a dry run changes nothing
    let (listed, _) = replay(backend, &Filter::default(), true, |_, _| {})
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        list_dead_letters(backend, &Filter::default())
            .await
            .unwrap()
            .len(),
        1
    );

    // a confirmed set: exactly the message ids named are replayed, an unknown one matches nothing
    let chosen = |id: &str| Filter {
        message_ids: Some(BTreeSet::from([id.to_owned()])),
        ..Filter::default()
    };
    let (none, report) = replay(backend, &chosen("no-such-message"), false, |_, _| {})
        .await
        .unwrap();
    assert_eq!((none.len(), report.replayed), (0, 0));
    let (replayed, report) = replay(backend, &chosen(&listed[0].message_id), false, |_, _| {})
        .await
        .unwrap();
    assert_eq!((replayed.len(), report.replayed), (1, 1));
    assert_eq!(received().await.len(), 1, "back on its queue");
    assert!(
        list_dead_letters(backend, &Filter::default())
            .await
            .unwrap()
            .is_empty()
    );

    // entity report: cross-references and the event log
    backend
        .xref
        .link(
            EntityKind::Project,
            &[
                IdRef::new(IdForm::Deal, "d-9"),
                IdRef::new(IdForm::Install, 9),
            ],
        )
        .await
        .unwrap();
    backend
        .log
        .record(&record("k9", "install:9", "{\"raw\":true}"), 3600)
        .await
        .unwrap();
    let report = entity_report(backend, "deal:d-9", 10).await.unwrap();
    assert_eq!(report["links"][0]["key"], "deal:d-9");
    assert_eq!(report["events"][0]["dedupe_key"], "k9");

    // rerun one event from the log: the raw body goes back to its stage queue
    let meta = event_rerun(backend, "k9").await.unwrap();
    assert_eq!(meta.log_key(), "k9");
    let again = received().await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, "{\"raw\":true}");
    assert!(event_rerun(backend, "missing").await.is_err());
}

#[tokio::test]
async fn dlq_list_replay_entity_and_rerun_work_on_the_local_runner_state() {
    let dir = std::env::temp_dir().join(format!(
        "ops-test-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    let db = open_database(Some(&dir)).unwrap();
    let store = Arc::new(EmbeddedStore::new(db.clone()));
    let queue = Arc::new(EmbeddedQueue::new(db, [Stage::Project]));
    let backend = Backend {
        xref: store.clone(),
        log: store.clone(),
        state: store,
        queue: queue.clone(),
        dlq: queue.clone(),
        stages: vec![Stage::Project],
    };
    let (q, qa) = (queue.clone(), queue.clone());
    seed_dead_letters(
        queue.as_ref(),
        async move || {
            q.receive(Stage::Project, 10, std::time::Duration::from_secs(60))
                .await
                .unwrap()
        },
        async move |r: String| qa.ack(Stage::Project, &r).await.unwrap(),
    )
    .await;
    let q2 = queue.clone();
    contract(&backend, async move || {
        let got = q2
            .receive(Stage::Project, 10, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        for d in &got {
            q2.ack(Stage::Project, &d.receipt).await.unwrap();
        }
        got
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn dlq_list_replay_entity_and_rerun_work_on_dynamodb_and_sqs() {
    let Ok(url) = std::env::var("MOTO_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "MOTO_URL must be set in CI (make test starts moto)"
        );
        eprintln!("MOTO_URL unset: skipping the AWS backend test");
        return;
    };
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&url)
        .region(Region::new("us-east-1"))
        .test_credentials()
        .load()
        .await;
    let suffix = format!("{}-{}", std::process::id(), fastrand_suffix() % 1_000_000);
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("ops-{suffix}");
    create_table(&ddb, &table).await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let urls = create_queues(&sqs, &format!("ops-{suffix}")).await.unwrap();
    let store = Arc::new(DynamoStore::new(ddb, table));
    let queue = Arc::new(SqsEventQueue::new(
        sqs,
        BTreeMap::from([(Stage::Project, urls)]),
    ));
    let backend = Backend {
        xref: store.clone(),
        log: store.clone(),
        state: store,
        queue: queue.clone(),
        dlq: queue.clone(),
        stages: vec![Stage::Project],
    };
    let (q, qa) = (queue.clone(), queue.clone());
    seed_dead_letters(
        queue.as_ref(),
        async move || q.receive(Stage::Project, 10, 1, 60).await.unwrap(),
        async move |r: String| qa.ack(Stage::Project, &r).await.unwrap(),
    )
    .await;
    let q2 = queue.clone();
    contract(&backend, async move || {
        let got = q2.receive(Stage::Project, 10, 1, 60).await.unwrap();
        for d in &got {
            q2.ack(Stage::Project, &d.receipt).await.unwrap();
        }
        got
    })
    .await;
}

// ---- hubspot setup, against a small stateful HubSpot (properties, groups, pipelines) ----

mod hubspot_portal {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};
    use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

    pub const TOKEN: &str = "pat-na1-test-fake-token";

    /// What the portal holds: property groups and property definitions per object, and the deal
    /// pipelines. Answers like HubSpot's properties and pipelines APIs (docs/crm-connectors.md
    /// 2.4, 2.7): 404 for a missing property, 409 for a name that exists, 401 for another token.
    #[derive(Default)]
    pub struct Portal {
        pub groups: Mutex<BTreeSet<(String, String)>>,
        pub properties: Mutex<BTreeMap<(String, String), Value>>,
        pub pipelines: Mutex<Value>,
    }

    impl Portal {
        /// A fresh portal: its standard properties and the default pipeline.
        pub fn standard() -> Arc<Self> {
            let p = Self::default();
            for (object, name, kind, field_type) in [
                ("contacts", "email", "string", "text"),
                ("contacts", "firstname", "string", "text"),
                ("contacts", "lastname", "string", "text"),
                ("contacts", "phone", "string", "text"),
                ("contacts", "address", "string", "text"),
                ("contacts", "city", "string", "text"),
                ("contacts", "state", "string", "text"),
                ("contacts", "zip", "string", "text"),
                ("contacts", "country", "string", "text"),
                ("deals", "dealname", "string", "text"),
                ("deals", "amount", "number", "number"),
                ("notes", "hs_note_body", "string", "html"),
                ("notes", "hs_timestamp", "datetime", "date"),
            ] {
                p.properties.lock().unwrap().insert(
                    (object.into(), name.into()),
                    json!({"name": name, "label": name, "type": kind, "fieldType": field_type,
                           "groupName": "standard", "hasUniqueValue": false, "hubspotDefined": true,
                           "options": []}),
                );
            }
            *p.pipelines.lock().unwrap() = json!({"results": [pipeline(
                "default",
                "Sales Pipeline",
                &["appointmentscheduled", "qualifiedtobuy", "contractsent", "closedwon", "closedlost"],
            )]});
            Arc::new(p)
        }

        /// A custom property as HubSpot returns it.
        pub fn put_custom(
            &self,
            object: &str,
            name: &str,
            kind: &str,
            field_type: &str,
            unique: bool,
        ) {
            self.properties.lock().unwrap().insert(
                (object.into(), name.into()),
                json!({"name": name, "label": name, "type": kind, "fieldType": field_type,
                       "groupName": "enerflo", "hasUniqueValue": unique, "hubspotDefined": false,
                       "options": []}),
            );
        }

        pub fn property(&self, object: &str, name: &str) -> Option<Value> {
            self.properties
                .lock()
                .unwrap()
                .get(&(object.to_owned(), name.to_owned()))
                .cloned()
        }

        pub async fn serve(self: &Arc<Self>) -> MockServer {
            let server = MockServer::start().await;
            Mock::given(any())
                .respond_with(Responder(self.clone()))
                .mount(&server)
                .await;
            server
        }
    }

    pub fn pipeline(id: &str, label: &str, stages: &[&str]) -> Value {
        json!({"id": id, "label": label, "displayOrder": 0, "archived": false,
               "stages": stages.iter().enumerate().map(|(i, s)| json!({
                   "id": s, "label": s, "displayOrder": i, "archived": false,
                   "metadata": {"isClosed": "false", "probability": "0.5"}})).collect::<Vec<_>>()})
    }

    struct Responder(Arc<Portal>);

    fn error(status: u16, category: &str, message: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(json!({
            "status": "error", "message": message, "category": category,
            "correlationId": "00000000-0000-0000-0000-000000000000"}))
    }

    impl Respond for Responder {
        fn respond(&self, req: &Request) -> ResponseTemplate {
            let auth = req
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if auth != format!("Bearer {TOKEN}") {
                return error(
                    401,
                    "INVALID_AUTHENTICATION",
                    "Authentication credentials not found.",
                );
            }
            let segs: Vec<&str> = req.url.path().trim_matches('/').split('/').collect();
            let portal = &self.0;
            match (req.method.as_str(), segs.as_slice()) {
                ("GET", ["crm", "v3", "pipelines", "deals"]) => ResponseTemplate::new(200)
                    .set_body_json(portal.pipelines.lock().unwrap().clone()),
                ("POST", ["crm", "v3", "properties", object, "groups"]) => {
                    let body: Value = req.body_json().unwrap();
                    let name = body["name"].as_str().unwrap().to_owned();
                    if portal
                        .groups
                        .lock()
                        .unwrap()
                        .insert(((*object).into(), name.clone()))
                    {
                        ResponseTemplate::new(201).set_body_json(body)
                    } else {
                        error(
                            409,
                            "CONFLICT",
                            &format!("A property group named '{name}' already exists."),
                        )
                    }
                }
                ("GET", ["crm", "v3", "properties", object, "groups", name]) => {
                    if portal
                        .groups
                        .lock()
                        .unwrap()
                        .contains(&((*object).into(), (*name).into()))
                    {
                        ResponseTemplate::new(200).set_body_json(json!({"name": name}))
                    } else {
                        error(404, "OBJECT_NOT_FOUND", "no such group")
                    }
                }
                ("GET", ["crm", "v3", "properties", object, name]) => {
                    match portal.property(object, name) {
                        Some(p) => ResponseTemplate::new(200).set_body_json(p),
                        None => error(
                            404,
                            "OBJECT_NOT_FOUND",
                            &format!("Unable to find property {name}"),
                        ),
                    }
                }
                ("POST", ["crm", "v3", "properties", object]) => {
                    let mut body: Value = req.body_json().unwrap();
                    let name = body["name"].as_str().unwrap().to_owned();
                    let group = body["groupName"].as_str().unwrap_or("").to_owned();
                    if !portal
                        .groups
                        .lock()
                        .unwrap()
                        .contains(&((*object).into(), group.clone()))
                    {
                        return error(
                            400,
                            "VALIDATION_ERROR",
                            &format!("group {group} does not exist"),
                        );
                    }
                    let mut props = portal.properties.lock().unwrap();
                    let key = ((*object).to_owned(), name.clone());
                    if props.contains_key(&key) {
                        return error(
                            409,
                            "CONFLICT",
                            &format!("A property named '{name}' already exists."),
                        );
                    }
                    body["hubspotDefined"] = json!(false);
                    props.insert(key, body.clone());
                    ResponseTemplate::new(201).set_body_json(body)
                }
                _ => error(404, "OBJECT_NOT_FOUND", "no such route in this test portal"),
            }
        }
    }

    /// The requests that would change the portal (anything but GET).
    pub async fn writes(server: &MockServer) -> Vec<Request> {
        server
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.method.as_str() != "GET")
            .collect()
    }
}

fn hubspot_env(server: &wiremock::MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("HUBSPOT_ACCESS_TOKEN", hubspot_portal::TOKEN.to_owned()),
        ("HUBSPOT_BASE_URL", server.uri()),
        (
            "HUBSPOT_PUBLIC_URL",
            "https://hooks.example.test/prod".to_owned(),
        ),
        ("HUBSPOT_RATE_LIMIT", "10000".to_owned()),
    ]
}

fn hubspot_config(env: &[(&'static str, String)]) -> enerflo_sync::config::Config {
    let map: BTreeMap<&str, String> = env.iter().cloned().collect();
    enerflo_sync_ops::hubspot::config_from(|k| map.get(k).cloned()).unwrap()
}

/// The POSTed property definitions, by `object.name`.
async fn created_properties(server: &wiremock::MockServer) -> BTreeMap<String, serde_json::Value> {
    hubspot_portal::writes(server)
        .await
        .iter()
        .filter_map(|r| {
            let segs: Vec<&str> = r.url.path().trim_matches('/').split('/').collect();
            match segs.as_slice() {
                ["crm", "v3", "properties", object] => {
                    let body: serde_json::Value = r.body_json().unwrap();
                    Some((format!("{object}.{}", body["name"].as_str().unwrap()), body))
                }
                _ => None,
            }
        })
        .collect()
}

#[tokio::test]
async fn hubspot_setup_creates_the_group_and_every_custom_property_then_a_second_run_creates_nothing()
 {
    use enerflo_sync_ops::hubspot::{SetupOptions, setup};
    let portal = hubspot_portal::Portal::standard();
    let server = portal.serve().await;
    let config = hubspot_config(&hubspot_env(&server));

    let first = setup(&config, &SetupOptions::default()).await.unwrap();
    assert!(!first.has_problems(), "{}", first.to_text());
    for object in ["contacts", "deals", "notes"] {
        assert!(
            portal
                .groups
                .lock()
                .unwrap()
                .contains(&(object.to_owned(), "enerflo".to_owned())),
            "group enerflo on {object}"
        );
    }
    let groups: Vec<serde_json::Value> = hubspot_portal::writes(&server)
        .await
        .iter()
        .filter(|r| r.url.path().ends_with("/groups"))
        .map(|r| r.body_json().unwrap())
        .collect();
    assert_eq!(groups.len(), 3);
    assert!(
        groups
            .iter()
            .all(|g| g["name"] == "enerflo" && g["label"] == "Enerflo")
    );

    let made = created_properties(&server).await;
    // The key properties are unique; the rest are not.
    for key in [
        "contacts.enerflo_customer_id",
        "contacts.enerflo_customer_uuid",
        "deals.enerflo_deal_id",
        "deals.enerflo_install_id",
        "notes.enerflo_note_id",
    ] {
        let p = made.get(key).unwrap_or_else(|| panic!("{key} created"));
        assert_eq!(p["hasUniqueValue"], true, "{key}");
        assert_eq!(
            (p["type"].as_str(), p["fieldType"].as_str()),
            (Some("string"), Some("text")),
            "{key}"
        );
    }
    assert_eq!(
        made["contacts.enerflo_customer_id"]["label"],
        "Enerflo customer ID"
    );
    let kinds = |key: &str| {
        let p = &made[key];
        assert_eq!(p["groupName"], "enerflo", "{key}");
        assert_eq!(p["hasUniqueValue"], false, "{key}");
        (
            p["type"].as_str().unwrap().to_owned(),
            p["fieldType"].as_str().unwrap().to_owned(),
        )
    };
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(kinds("deals.enerflo_panel"), pair("string", "text"));
    assert_eq!(
        kinds("deals.enerflo_system_size_kw"),
        pair("number", "number")
    );
    assert_eq!(kinds("deals.enerflo_pto_date"), pair("date", "date"));
    assert_eq!(
        kinds("deals.enerflo_status_changed_at"),
        pair("datetime", "date")
    );
    assert_eq!(kinds("deals.enerflo_adders"), pair("string", "textarea"));
    assert_eq!(
        kinds("deals.enerflo_adders_json"),
        pair("string", "textarea")
    );
    assert_eq!(
        kinds("deals.enerflo_resubmission"),
        pair("bool", "booleancheckbox")
    );
    let values: Vec<&str> = made["deals.enerflo_resubmission"]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["true", "false"]);
    assert_eq!(
        made["deals.enerflo_system_size_kw"]["label"],
        "Enerflo system size kW"
    );
    // HubSpot's own properties are checked, never created.
    for standard in [
        "contacts.email",
        "contacts.firstname",
        "deals.dealname",
        "deals.amount",
        "notes.hs_note_body",
        "notes.hs_timestamp",
    ] {
        assert!(
            !made.contains_key(standard),
            "{standard} must not be created"
        );
    }
    assert!(
        first
            .created()
            .contains(&"property contacts.enerflo_lead_source")
    );
    assert_eq!(first.created().len(), 3 + made.len());
    let lead = &first.workflows[0];
    assert_eq!(lead.url, "https://hooks.example.test/prod/crm/hubspot/lead");
    assert_eq!(
        first.workflows[1].url,
        "https://hooks.example.test/prod/crm/hubspot/status"
    );
    assert_eq!(
        first.workflows[2].url,
        "https://hooks.example.test/prod/crm/hubspot/milestone"
    );
    let keys: Vec<&str> = lead.body_keys.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        [
            "hs_object_id",
            "firstname",
            "lastname",
            "email",
            "phone",
            "address",
            "city",
            "state",
            "zip",
            "lead_source",
            "rep_email"
        ]
    );
    assert!(first.to_text().contains("X-Sync-Token"));

    // Run again: nothing is written, and the summary says so.
    let writes_before = hubspot_portal::writes(&server).await.len();
    let second = setup(&config, &SetupOptions::default()).await.unwrap();
    let writes_after = hubspot_portal::writes(&server).await;
    let new_property_writes = writes_after[writes_before..]
        .iter()
        .filter(|r| !r.url.path().ends_with("/groups"))
        .count();
    assert_eq!(new_property_writes, 0);
    assert!(second.created().is_empty(), "{:?}", second.created());
    assert!(!second.has_problems(), "{}", second.to_text());
    assert!(
        second
            .summary()
            .contains("created nothing: everything was already in place"),
        "{}",
        second.summary()
    );
}

#[tokio::test]
async fn hubspot_setup_reports_a_property_of_another_type_and_a_key_that_is_not_unique_and_changes_neither()
 {
    let portal = hubspot_portal::Portal::standard();
    portal.put_custom("deals", "enerflo_panel_count", "string", "text", false);
    portal.put_custom("contacts", "enerflo_customer_id", "string", "text", false);
    let server = portal.serve().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_enerflo-sync-ops"))
        .env_clear()
        .envs(hubspot_env(&server))
        .args(["hubspot", "setup"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |needle: &str| {
        stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle} in:\n{stdout}"))
            .to_owned()
    };
    let panel = line("deals.enerflo_panel_count");
    assert!(
        panel.contains("PROBLEM")
            && panel.contains("exists as string/text")
            && panel.contains("number/number"),
        "{panel}"
    );
    let key = line("contacts.enerflo_customer_id");
    assert!(
        key.contains("PROBLEM") && key.contains("hasUniqueValue"),
        "{key}"
    );
    assert!(line("hubspot setup:").contains("2 problem(s)"), "{stdout}");
    // Both stay as they were; the rest was still created.
    assert_eq!(
        portal.property("deals", "enerflo_panel_count").unwrap()["type"],
        "string"
    );
    assert_eq!(
        portal.property("contacts", "enerflo_customer_id").unwrap()["hasUniqueValue"],
        false
    );
    let made = created_properties(&server).await;
    assert!(!made.contains_key("deals.enerflo_panel_count"));
    assert!(!made.contains_key("contacts.enerflo_customer_id"));
    assert!(made.contains_key("deals.enerflo_deal_id"));
    assert!(
        hubspot_portal::writes(&server)
            .await
            .iter()
            .all(|r| r.method.as_str() == "POST"),
        "setup only ever creates"
    );
}

#[tokio::test]
async fn hubspot_setup_reports_a_missing_stage_with_the_stage_ids_that_exist() {
    use enerflo_sync_ops::hubspot::{Outcome, SetupOptions, setup};
    let portal = hubspot_portal::Portal::standard();
    *portal.pipelines.lock().unwrap() = serde_json::json!({"results": [hubspot_portal::pipeline(
        "default",
        "Sales Pipeline",
        &["appointmentscheduled", "contractsent", "closedwon"],
    )]});
    let server = portal.serve().await;
    let report = setup(
        &hubspot_config(&hubspot_env(&server)),
        &SetupOptions::default(),
    )
    .await
    .unwrap();
    let problems: Vec<_> = report.problems().collect();
    assert_eq!(problems.len(), 1, "{}", report.to_text());
    assert_eq!(problems[0].subject, "stage default/closedlost");
    assert!(
        problems[0].detail.contains("stages.by_status \"voided\"")
            && problems[0]
                .detail
                .contains("appointmentscheduled, contractsent, closedwon"),
        "{}",
        problems[0].detail
    );
    let in_place: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.outcome == Outcome::InPlace && f.subject.starts_with("stage "))
        .map(|f| f.subject.as_str())
        .collect();
    assert_eq!(
        in_place,
        [
            "stage default/appointmentscheduled",
            "stage default/closedwon"
        ]
    );
}

#[tokio::test]
async fn hubspot_setup_reports_an_unknown_pipeline_with_the_pipelines_that_exist() {
    use enerflo_sync_ops::hubspot::{SetupOptions, setup};
    let portal = hubspot_portal::Portal::standard();
    let server = portal.serve().await;
    let mut env = hubspot_env(&server);
    env.push(("HUBSPOT_PIPELINE", "solar".to_owned()));
    let report = setup(&hubspot_config(&env), &SetupOptions::default())
        .await
        .unwrap();
    let problems: Vec<_> = report.problems().collect();
    assert_eq!(problems.len(), 1, "{}", report.to_text());
    assert_eq!(problems[0].subject, "pipeline solar");
    assert!(
        problems[0].detail.contains("default (Sales Pipeline)"),
        "{}",
        problems[0].detail
    );
}

#[tokio::test]
async fn hubspot_setup_dry_run_writes_nothing_and_lists_what_a_real_run_then_creates() {
    use enerflo_sync_ops::hubspot::{SetupOptions, setup};
    let portal = hubspot_portal::Portal::standard();
    let server = portal.serve().await;
    let config = hubspot_config(&hubspot_env(&server));
    let dry = setup(
        &config,
        &SetupOptions {
            dry_run: true,
            public_url: None,
        },
    )
    .await
    .unwrap();
    assert!(hubspot_portal::writes(&server).await.is_empty());
    assert!(portal.groups.lock().unwrap().is_empty());
    assert!(portal.property("deals", "enerflo_deal_id").is_none());
    assert!(dry.created().is_empty());
    assert!(dry.would_create().contains(&"group contacts.enerflo"));
    assert!(
        dry.would_create()
            .contains(&"property deals.enerflo_deal_id")
    );
    assert!(
        dry.summary().contains("dry run: would create"),
        "{}",
        dry.summary()
    );

    let real = setup(&config, &SetupOptions::default()).await.unwrap();
    assert_eq!(dry.would_create(), real.created());
}

#[tokio::test]
async fn hubspot_setup_names_a_missing_or_invalid_token() {
    use enerflo_sync_ops::hubspot::{SetupOptions, config_from, setup};
    let err = config_from(|_| None).unwrap_err().to_string();
    assert!(err.contains("HUBSPOT_ACCESS_TOKEN"), "{err}");

    let portal = hubspot_portal::Portal::standard();
    let server = portal.serve().await;
    let mut env = hubspot_env(&server);
    env[0].1 = "pat-na1-some-other-fake".into();
    let err = setup(&hubspot_config(&env), &SetupOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("token invalid"), "{err}");
    // The run stops at the first 401.
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    assert!(portal.groups.lock().unwrap().is_empty());
}

// ---- salesforce setup, against a wiremock org serving describe ---------------------------------

mod salesforce_org {
    use std::collections::BTreeMap;

    use enerflo_sync::crm::profile::{Profile, SALESFORCE_DEFAULT};
    use serde_json::{Value, json};
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    pub const ORG: &str = "00D000000000001EAA";

    /// Per object, the describe `fields` of an org set up as the default profile needs: every
    /// field of the type `salesforce_type` accepts, keys External ID and Unique, and the stage
    /// picklist with every stage the profile names.
    pub fn complete() -> BTreeMap<String, Vec<Value>> {
        let profile = Profile::parse("built-in salesforce", SALESFORCE_DEFAULT).unwrap();
        let keys = [
            "Enerflo_Customer_Id__c",
            "Enerflo_Customer_Uuid__c",
            "Enerflo_Deal_Id__c",
            "Enerflo_Install_Id__c",
        ];
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (object, props) in profile.properties_by_object() {
            let fields = out.entry(object.clone()).or_default();
            fields.push(
                json!({"name": "Id", "type": "id", "updateable": false, "createable": false}),
            );
            for (name, conversion) in props {
                let kind = enerflo_sync_ops::salesforce::salesforce_type(&conversion).1[0];
                let key = keys.contains(&name.as_str());
                fields.push(
                    json!({"name": name, "type": kind, "externalId": key, "unique": key,
                                   "updateable": true, "createable": true}),
                );
            }
        }
        out.get_mut("ContentNote").unwrap().push(
            json!({"name": "Title", "type": "string", "updateable": true, "createable": true}),
        );
        out.get_mut("Opportunity").unwrap().push(json!({
        "name": "StageName", "type": "picklist", "updateable": true, "createable": true,
        "picklistValues": [
            {"value": "Prospecting", "active": true},
            {"value": "Closed Won", "active": true},
            {"value": "Closed Lost", "active": true}
        ]}));
        out
    }

    pub async fn serve(objects: BTreeMap<String, Vec<Value>>) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/services/oauth2/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "00D000000000001!fake-token", "instance_url": server.uri(),
                "token_type": "Bearer", "issued_at": "1764324000000"})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/services/data/v66.0/query"))
            .and(query_param("q", "SELECT Id FROM Organization"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "totalSize": 1, "done": true,
                "records": [{"attributes": {"type": "Organization"}, "Id": ORG}]})))
            .mount(&server)
            .await;
        for (object, fields) in objects {
            Mock::given(method("GET"))
                .and(path(format!(
                    "/services/data/v66.0/sobjects/{object}/describe"
                )))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"name": object, "fields": fields})),
                )
                .mount(&server)
                .await;
        }
        // Anything else (an object the org lacks) is Salesforce's 404.
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!([
                {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])))
            .with_priority(10)
            .mount(&server)
            .await;
        server
    }

    pub fn config(server: &MockServer, org: Option<&str>) -> enerflo_sync::config::Config {
        let mut env: BTreeMap<&str, String> = BTreeMap::from([
            ("SALESFORCE_LOGIN_URL", server.uri()),
            ("SALESFORCE_CLIENT_ID", "3MVG9-test-client".to_owned()),
            (
                "SALESFORCE_CLIENT_SECRET",
                "test-secret-not-real".to_owned(),
            ),
            ("CRM_INBOUND_TOKEN", "fake-inbound-token-0001".to_owned()),
        ]);
        if let Some(org) = org {
            env.insert("SALESFORCE_ORG_ID", org.to_owned());
        }
        enerflo_sync_ops::salesforce::config_from(|k| env.get(k).cloned()).unwrap()
    }
}

#[tokio::test]
async fn salesforce_setup_finds_nothing_to_fix_in_an_org_set_up_for_the_profile() {
    use enerflo_sync_ops::salesforce::{SetupOptions, setup};
    let server = salesforce_org::serve(salesforce_org::complete()).await;
    let config = salesforce_org::config(&server, Some(salesforce_org::ORG));
    let report = setup(
        &config,
        &SetupOptions {
            public_url: Some("https://api.example.test/".into()),
        },
    )
    .await
    .unwrap();
    assert!(!report.has_problems(), "{}", report.to_text());
    assert_eq!(report.org_id.as_deref(), Some(salesforce_org::ORG));
    let urls: Vec<&str> = report.callouts.iter().map(|c| c.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://api.example.test/crm/salesforce/lead",
            "https://api.example.test/crm/salesforce/status",
            "https://api.example.test/crm/salesforce/milestone",
            "https://api.example.test/crm/salesforce/note",
        ]
    );
    let opp = report
        .outbound
        .iter()
        .find(|m| m.object == "Opportunity")
        .unwrap();
    assert_eq!(
        opp.url,
        "https://api.example.test/crm/salesforce/outbound-message?token=<a CRM_INBOUND_TOKEN value>"
    );
    for field in ["Id", "Enerflo_Install_Id__c", "StageName", "PTO_Date__c"] {
        assert!(
            opp.fields.iter().any(|f| f == field),
            "{field}: {:?}",
            opp.fields
        );
    }
    let text = report.to_text();
    assert!(text.contains("Authorization: Bearer"), "{text}");
    // Only reads: setup changes nothing in Salesforce.
    let writes = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() != "GET" && r.url.path() != "/services/oauth2/token")
        .count();
    assert_eq!(writes, 0);
}

#[tokio::test]
async fn salesforce_setup_reports_missing_fields_keys_and_stage_values_with_what_to_create() {
    use enerflo_sync_ops::salesforce::{Outcome, SetupOptions, setup};
    let mut objects = salesforce_org::complete();
    let opp = objects.get_mut("Opportunity").unwrap();
    // PTO_Date__c and Net_PPW__c missing, the deal key not unique, Closed Won not a stage.
    opp.retain(|f| f["name"] != "PTO_Date__c" && f["name"] != "Net_PPW__c");
    for f in opp.iter_mut() {
        if f["name"] == "Enerflo_Deal_Id__c" {
            f["unique"] = serde_json::json!(false);
        }
        if f["name"] == "StageName" {
            f["picklistValues"] = serde_json::json!([
                {"value": "Prospecting", "active": true},
                {"value": "Closed Lost", "active": false}]);
        }
    }
    // The Contact's Enerflo id exists but is not an external id.
    for f in objects.get_mut("Contact").unwrap().iter_mut() {
        if f["name"] == "Enerflo_Customer_Id__c" {
            f["externalId"] = serde_json::json!(false);
            f["unique"] = serde_json::json!(false);
        }
    }
    objects.remove("ContentNote");
    let server = salesforce_org::serve(objects).await;
    let config = salesforce_org::config(&server, None);
    let report = setup(&config, &SetupOptions::default()).await.unwrap();
    assert!(report.has_problems());
    let problem = |subject: &str| -> String {
        let f = report
            .finding(subject)
            .unwrap_or_else(|| panic!("no finding {subject}:\n{}", report.to_text()));
        assert_eq!(f.outcome, Outcome::Problem, "{subject}: {}", f.detail);
        f.detail.clone()
    };
    assert!(problem("field Opportunity.PTO_Date__c").contains("create it as Date"));
    assert!(problem("field Opportunity.Net_PPW__c").contains("create it as Number(18, 2)"));
    assert!(problem("field Opportunity.Enerflo_Deal_Id__c").contains("not Unique"));
    assert!(problem("field Contact.Enerflo_Customer_Id__c").contains("not External ID and Unique"));
    let won = problem("picklist value Opportunity.StageName \"Closed Won\"");
    assert!(
        won.contains("missing") && won.contains("\"completed\""),
        "{won}"
    );
    assert!(problem("picklist value Opportunity.StageName \"Closed Lost\"").contains("inactive"));
    assert!(problem("object ContentNote").contains("404"));
    assert!(problem("org").contains(&format!("SALESFORCE_ORG_ID={}", salesforce_org::ORG)));
    assert_eq!(
        report
            .finding("field Opportunity.Install_Date__c")
            .map(|f| f.outcome),
        Some(Outcome::InPlace)
    );
    let json = report.to_json();
    assert_eq!(json["problems"], report.problems().count());
}

#[tokio::test]
async fn salesforce_setup_against_the_faithful_fake_finds_the_profile_in_place_and_a_removed_stage_missing()
 {
    use enerflo_sync_local::fakes::salesforce::{FakeOptions, spawn};
    use enerflo_sync_ops::salesforce::{Outcome, SetupOptions, setup};
    let opts = FakeOptions::default().with_enerflo_fields();
    let (client_id, secret, org) = (
        opts.client_id.clone(),
        opts.client_secret.clone(),
        opts.org_id.clone(),
    );
    let (url, _fake) = spawn(opts).await;
    let env: BTreeMap<&str, String> = BTreeMap::from([
        ("SALESFORCE_LOGIN_URL", url.clone()),
        ("SALESFORCE_CLIENT_ID", client_id.clone()),
        ("SALESFORCE_CLIENT_SECRET", secret.clone()),
        ("SALESFORCE_ORG_ID", org.clone()),
        ("CRM_INBOUND_TOKEN", "fake-inbound-token-0001".to_owned()),
    ]);
    let config = enerflo_sync_ops::salesforce::config_from(|k| env.get(k).cloned()).unwrap();
    let report = setup(&config, &SetupOptions::default()).await.unwrap();
    assert!(!report.has_problems(), "{}", report.to_text());
    // The fake answers no SOQL on Organization: the org id is left unchecked, with a warning.
    assert!(
        report.org_id.as_deref() == Some(org.as_str())
            || report
                .warnings
                .iter()
                .any(|w| w.contains("SALESFORCE_ORG_ID is not checked")),
        "{}",
        report.to_text()
    );

    // A profile naming a stage the org's picklist lacks.
    let mut profile: serde_json::Value =
        serde_json::from_str(enerflo_sync::crm::profile::SALESFORCE_DEFAULT).unwrap();
    profile["stages"]["by_status"]["On Hold"] = serde_json::json!("Paused");
    profile["milestone_dates"]["roof"] = serde_json::json!("Roof_Date__c");
    let path = std::env::temp_dir().join(format!("sf-setup-profile-{}.json", fastrand_suffix()));
    std::fs::write(&path, profile.to_string()).unwrap();
    let mut env = env;
    env.insert("CRM_MAPPING_FILE", path.display().to_string());
    let config = enerflo_sync_ops::salesforce::config_from(|k| env.get(k).cloned()).unwrap();
    let _ = std::fs::remove_file(&path);
    let report = setup(&config, &SetupOptions::default()).await.unwrap();
    let paused = report
        .finding("picklist value Opportunity.StageName \"Paused\"")
        .unwrap();
    assert_eq!(paused.outcome, Outcome::Problem);
    let roof = report.finding("field Opportunity.Roof_Date__c").unwrap();
    assert_eq!(roof.outcome, Outcome::Problem);
    assert!(roof.detail.contains("create it as Date"), "{}", roof.detail);
    assert_eq!(report.problems().count(), 2, "{}", report.to_text());
}
