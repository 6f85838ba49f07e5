//! `CRM_CONNECTOR=monday` end to end, both directions: Enerflo webhooks -> local runner -> the
//! faithful Monday.com fake (`enerflo_sync_local::fakes::monday`), and the fake's board webhooks
//! -> `POST /crm/monday/webhooks/{token}` -> the wiremock Enerflo; asserting what the boards hold,
//! what Enerflo was asked, and what the fake saw (calls, limits, deliveries).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use enerflo_sync::classify::Stage;
use enerflo_sync_local::fakes::monday::{
    FakeOptions, Fault, MondayFake, jwt, seed_profile, seed_webhooks, spawn,
};
use serde_json::{Value, json};
use sync_tests::enerflo::{
    SAMPLE_INSTALL, accepts_install_updates, accepts_milestone_writes, accepts_notes, adds_leads,
    finds_installs, lead_add_bodies, note_writes, submission, writes,
};
use sync_tests::{Harness, eventually, fixture, join_all, start};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const TOKEN: &str = "fake-monday-token-1111";
const HOOK_TOKEN: &str = "monday-hook-token-0123456789abcdef";
/// A person on the account (not the sync's token user).
const PERSON: u64 = 4_444_444;

struct Monday {
    h: Harness,
    fake: Arc<MondayFake>,
    customers: u64,
    projects: u64,
}

/// A runner whose CRM is a Monday fake set up as `monday setup` leaves an account for the
/// built-in profile: its two boards, their columns and labels, and the webhooks to the runner.
async fn monday(opts: FakeOptions, extra: &[(&str, &str)]) -> Monday {
    let (url, fake) = spawn(FakeOptions {
        token: TOKEN.into(),
        ..opts
    })
    .await;
    let profile = enerflo_sync::crm::profile::Profile::parse(
        "built-in monday",
        enerflo_sync::crm::profile::MONDAY_DEFAULT,
    )
    .unwrap();
    let (customers, projects) = seed_profile(&fake, &profile);
    let api = format!("{url}/v2");
    let (c, p) = (customers.to_string(), projects.to_string());
    let mut env = vec![
        ("CRM_CONNECTOR", "monday"),
        ("MONDAY_API_TOKEN", TOKEN),
        ("MONDAY_API_URL", api.as_str()),
        ("MONDAY_CUSTOMERS_BOARD", c.as_str()),
        ("MONDAY_PROJECTS_BOARD", p.as_str()),
        ("MONDAY_WEBHOOK_TOKEN", HOOK_TOKEN),
        ("MILESTONE_KEY_MAP", "permit=3902,pto=3905"),
    ];
    env.extend_from_slice(extra);
    let h = start(&env).await;
    let boards: BTreeMap<String, u64> = [
        ("customers".to_owned(), customers),
        ("projects".to_owned(), projects),
    ]
    .into();
    seed_webhooks(
        &fake,
        &profile,
        &boards,
        &h.runner.url(&format!("/crm/monday/webhooks/{HOOK_TOKEN}")),
    );
    Monday {
        h,
        fake,
        customers,
        projects,
    }
}

impl Monday {
    fn the_item(&self, board: u64) -> enerflo_sync_local::fakes::monday::Item {
        let items = self.fake.items(board);
        assert_eq!(items.len(), 1, "{items:#?}");
        items[0].clone()
    }

    fn text(&self, item: u64, column: &str) -> Option<String> {
        self.fake.text(item, column)
    }

    /// Waits until every webhook the fake emitted got an answer, then until the runner is quiet.
    async fn webhooks_answered(&self) {
        let answered = eventually(Duration::from_secs(20), || async {
            self.fake
                .deliveries()
                .iter()
                .all(|d| !d.attempts.is_empty())
                .then_some(())
        })
        .await;
        assert!(answered.is_some(), "{:#?}", self.fake.deliveries());
        self.h.settle().await;
    }

    async fn post_hook(&self, token: &str, body: Value, auth: Option<&str>) -> (u16, Value) {
        let a = self
            .h
            .request(
                http::Method::POST,
                &format!("/crm/monday/webhooks/{token}"),
                auth,
                body.to_string(),
            )
            .await;
        (a.status, a.body)
    }
}

/// Enerflo's answers to everything both directions ask of it.
async fn enerflo_answers(h: &Harness) {
    finds_installs(&h.enerflo).await;
    accepts_install_updates(&h.enerflo).await;
    accepts_milestone_writes(&h.enerflo).await;
    accepts_notes(&h.enerflo, 30_001).await;
    adds_leads(&h.enerflo, Duration::ZERO).await;
    Mock::given(method("GET"))
        .and(path("/api/v3/install-statuses"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"id": 1, "name": "New"}, {"id": 4, "name": "On Hold"}, {"id": 5, "name": "Voided"},
            {"id": 6, "name": "Completed"}, {"id": 12, "name": "Permitting Complete"}]})))
        .mount(&h.enerflo)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/api/v3/installs/{SAMPLE_INSTALL}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {
            "id": SAMPLE_INSTALL,
            "all_milestones": [{"milestone_id": 3902, "title": "Permit", "completed_date": "2025-05-02"}]
        }})))
        .mount(&h.enerflo)
        .await;
}

fn status_event(id: u64, name: &str) -> String {
    json!({"webhook_event": "update_install", "id": SAMPLE_INSTALL, "status": {"id": id, "name": name},
           "timestamps": {"updated_at": "2025-04-01 10:00:00", "timezone": "UTC"}})
    .to_string()
}

fn no_dead_letters(h: &Harness) {
    for stage in Stage::ALL {
        assert!(
            h.dead_letters(stage).is_empty(),
            "{stage:?}: {:#?}",
            h.dead_letters(stage)
        );
    }
}

/// What Enerflo was asked to write, as (method, path, body).
async fn enerflo_writes(h: &Harness) -> Vec<(String, String, Value)> {
    h.enerflo
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() != "GET")
        .map(|r| {
            (
                r.method.to_string(),
                r.url.path().to_owned(),
                serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_outbound_exchange_lands_on_the_boards_and_its_echo_writes_nothing() {
    let m = monday(FakeOptions::default(), &[]).await;
    enerflo_answers(&m.h).await;

    // 1.2: a customer becomes an item of the customers board, each column in its format.
    m.h.deliver(fixture("v1-new_customer.json")).await;
    let customer = m.the_item(m.customers);
    assert_eq!(customer.name, "Pat Placeholder");
    assert_eq!(
        m.text(customer.id, "enerflo_customer_id").as_deref(),
        Some("900001")
    );
    assert_eq!(m.text(customer.id, "zip").as_deref(), Some("75001"));
    assert!(m.text(customer.id, "email").unwrap().contains('@'));

    // 2: the submission becomes a project item in the first label, linked to that customer.
    m.h.deliver(submission(1)).await;
    let project = m.the_item(m.projects);
    assert_eq!(m.text(project.id, "project_status").as_deref(), Some("New"));
    assert_eq!(
        m.text(project.id, "enerflo_install_id").as_deref(),
        Some("700001")
    );
    assert_eq!(m.text(project.id, "panel_count").as_deref(), Some("20"));
    assert_eq!(
        m.text(project.id, "customer").as_deref(),
        Some(customer.id.to_string().as_str())
    );
    assert_eq!(
        m.fake.items(m.customers).len(),
        1,
        "the customer's item was reused"
    );

    // 4.2: a status through the status map; one it does not map leaves the label alone.
    m.h.deliver(status_event(5, "Voided")).await;
    assert_eq!(
        m.text(project.id, "project_status").as_deref(),
        Some("Voided")
    );
    m.h.deliver(status_event(321, "Example Custom Status"))
        .await;
    assert_eq!(
        m.text(project.id, "project_status").as_deref(),
        Some("Voided")
    );
    assert_eq!(
        m.text(project.id, "enerflo_status").as_deref(),
        Some("Example Custom Status")
    );

    // 3.2: a milestone mapped through MILESTONE_KEY_MAP sets its date column.
    m.h.deliver(
        json!({"webhook_event": "project_milestone_updated", "install_id": SAMPLE_INSTALL,
               "milestone_id": 3902, "milestone": {"id": 3902, "title": "Permit"},
               "completed_date": "2025-05-02", "updated_at": "2025-05-02 10:00:00"})
        .to_string(),
    )
    .await;
    assert_eq!(
        m.text(project.id, "date_permit").as_deref(),
        Some("2025-05-02")
    );

    // 5.2: an Enerflo note becomes an update on the project's item.
    m.h.deliver(
        json!({"webhook_event": "new_install_note", "install_id": SAMPLE_INSTALL,
               "note": {"id": 41, "note": "Permit approved", "user": {"full_name": "Sam Installer"},
                        "created_at": "2025-03-01 10:00:00"}})
        .to_string(),
    )
    .await;
    let updates = m.fake.updates(project.id);
    assert_eq!(updates.len(), 1, "{updates:#?}");
    assert!(updates[0].text_body.contains("Permit approved"));

    // 6: the signed change order writes its columns and an update of what changed.
    let (status, _) =
        m.h.post_webhook_with_token(
            &format!("{}?event=signed_change_order", sync_tests::TOKEN),
            fixture("v1-signed_change_order.json"),
        )
        .await;
    assert_eq!(status, 202);
    m.h.settle().await;
    assert!(m.text(project.id, "last_change_order").is_some());
    let updates = m.fake.updates(project.id);
    assert_eq!(updates.len(), 2, "{updates:#?}");
    assert!(updates[1].text_body.contains("Change order"));
    no_dead_letters(&m.h);

    // Every write above fired the boards' webhooks back into the runner: all were our own.
    m.webhooks_answered().await;
    assert!(!m.fake.deliveries().is_empty());
    assert_eq!(
        writes(&m.h.enerflo).await,
        0,
        "{:#?}",
        enerflo_writes(&m.h).await
    );
    // Every mutation carried an Idempotency-Key.
    for c in m.fake.calls() {
        if c.query.trim_start().starts_with("mutation") {
            assert!(c.idempotency_key.is_some(), "{c:#?}");
        }
    }
}

#[tokio::test]
async fn every_inbound_exchange_reaches_enerflo() {
    let m = monday(FakeOptions::default(), &[]).await;
    enerflo_answers(&m.h).await;
    m.h.deliver(submission(1)).await;
    let project = m.the_item(m.projects);
    m.webhooks_answered().await;

    // 3.1: a person sets the permit date.
    m.fake
        .user_sets(
            project.id,
            "date_permit",
            json!({"date": "2025-06-03"}),
            PERSON,
        )
        .unwrap();
    // 5.1: ... posts an update.
    let update = m
        .fake
        .user_posts_update(project.id, "<p>HOA approved the panels</p>", PERSON)
        .unwrap();
    // 1.1: ... and adds a customer with every column the lead needs.
    m.fake
        .user_creates_item(
            m.customers,
            "Robin Example",
            json!({"first_name": "Robin", "last_name": "Example", "street": "2 Placeholder Ave",
                   "city": "Austin", "state": "TX", "zip": "78701",
                   "email": {"email": "robin@example.test", "text": "Robin"}}),
            PERSON,
        )
        .unwrap();
    m.webhooks_answered().await;

    let w = enerflo_writes(&m.h).await;
    let milestone = w
        .iter()
        .find(|(_, p, _)| p.ends_with("/milestones/3902"))
        .unwrap_or_else(|| panic!("{w:#?}"));
    assert_eq!(
        milestone.1,
        format!("/api/v3/installs/{SAMPLE_INSTALL}/milestones/3902")
    );
    assert!(milestone.2.to_string().contains("2025-06-03"), "{w:#?}");
    assert_eq!(note_writes(&m.h.enerflo).await, 1);
    let leads = lead_add_bodies(&m.h.enerflo).await;
    assert_eq!(leads.len(), 1, "{leads:#?}");
    assert_eq!(leads[0]["lead"]["first_name"], "Robin");
    assert_eq!(leads[0]["lead"]["zip"], "78701");
    assert_eq!(leads[0]["lead"]["email"], "robin@example.test");
    // Monday retrying the update's delivery writes no second note.
    let first = m
        .fake
        .deliveries()
        .into_iter()
        .find(|d| d.body["event"]["updateId"] == json!(update))
        .unwrap();
    let (status, _) = m.post_hook(HOOK_TOKEN, first.body.clone(), None).await;
    assert_eq!(status, 200);
    assert_eq!(note_writes(&m.h.enerflo).await, 1);
}

#[tokio::test]
async fn permitting_complete_on_monday_updates_the_enerflo_status() {
    // Enerflo's integration guide: "when a rep updates my Monday.com project and sets a project's
    // status to permitting complete, then update the Enerflo record".
    let m = monday(FakeOptions::default(), &[]).await;
    enerflo_answers(&m.h).await;
    m.h.deliver(submission(1)).await;
    let project = m.the_item(m.projects);
    m.webhooks_answered().await;
    m.fake
        .user_sets(
            project.id,
            "project_status",
            json!({"label": "Permitting Complete"}),
            PERSON,
        )
        .unwrap();
    m.webhooks_answered().await;
    let w = enerflo_writes(&m.h).await;
    let status: Vec<_> = w
        .iter()
        .filter(|(meth, p, _)| meth == "PUT" && *p == format!("/api/v3/installs/{SAMPLE_INSTALL}"))
        .collect();
    assert_eq!(status.len(), 1, "{w:#?}");
    assert!(
        status[0].2.to_string().contains("12"),
        "status id 12: {:?}",
        status[0].2
    );
}

#[tokio::test]
async fn repeated_and_concurrent_deliveries_make_one_item_even_while_the_search_lags() {
    let m = monday(
        FakeOptions {
            search_lag: Duration::from_secs(3600),
            ..FakeOptions::default()
        },
        &[],
    )
    .await;
    enerflo_answers(&m.h).await;
    // The customer both as a lead and inside the submission, at once, several times each.
    let posts = (0..4)
        .map(|_| m.h.post_webhook(submission(1)))
        .chain((0..4).map(|_| m.h.post_webhook(fixture("v1-new_customer.json"))));
    join_all(posts).await;
    m.h.settle().await;
    assert_eq!(
        m.fake.items(m.projects).len(),
        1,
        "{:#?}",
        m.fake.items(m.projects)
    );
    assert_eq!(
        m.fake.items(m.customers).len(),
        1,
        "{:#?}",
        m.fake.items(m.customers)
    );
    // A later redelivery with another customer update: still one item each.
    m.h.deliver(fixture("v1-new_customer.json").replace("\"Pat\"", "\"Patricia\""))
        .await;
    assert_eq!(m.fake.items(m.customers).len(), 1);
    no_dead_letters(&m.h);
}

#[tokio::test]
async fn a_wrong_column_value_format_dead_letters_the_event_naming_the_column() {
    // A profile writing the text column `panel` as a long text: Monday refuses the value.
    let dir = sync_tests::temp_dir("monday-profile");
    let profile = enerflo_sync::crm::profile::MONDAY_DEFAULT.replacen(
        "\"panel\": {\"field\": \"system.panel.name\"}",
        "\"panel\": {\"field\": \"system.panel.name\", \"column\": \"long_text\"}",
        1,
    );
    assert!(profile.contains("long_text"));
    let file = dir.join("profile.json");
    std::fs::write(&file, profile).unwrap();
    let file = file.display().to_string();
    let m = monday(
        FakeOptions::default(),
        &[("CRM_MAPPING_FILE", file.as_str())],
    )
    .await;
    enerflo_answers(&m.h).await;
    m.h.deliver(submission(1)).await;
    let dead = m.h.dead_letters(Stage::Project);
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert!(
        dead[0].reason.contains("ColumnValueException"),
        "{}",
        dead[0].reason
    );
    assert!(
        dead[0].reason.contains("column panel"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].attempts, 1, "permanent: not retried");
    assert!(m.fake.items(m.projects).is_empty());
}

#[tokio::test]
async fn a_complexity_error_waits_and_loses_nothing() {
    let m = monday(FakeOptions::default(), &[]).await;
    enerflo_answers(&m.h).await;
    m.fake.fail_next(Fault::Complexity { retry_in: 2 });
    m.fake.fail_next(Fault::Complexity { retry_in: 2 });
    m.h.deliver(submission(1)).await;
    m.h.settle().await;
    assert_eq!(m.fake.items(m.projects).len(), 1);
    assert_eq!(m.fake.items(m.customers).len(), 1);
    let calls = m.fake.calls();
    let limited: Vec<_> = calls.iter().filter(|c| c.status == 429).collect();
    assert_eq!(limited.len(), 2, "{calls:#?}");
    // The call after a 429 waited the time Monday gave.
    let first = calls.iter().position(|c| c.status == 429).unwrap();
    let after = calls
        .iter()
        .skip(first + 2)
        .find(|c| c.status == 200)
        .unwrap();
    assert!(after.at_ms - calls[first].at_ms >= 2000, "{calls:#?}");
    no_dead_letters(&m.h);
}

#[tokio::test]
async fn the_challenge_is_answered_and_a_forged_webhook_is_rejected() {
    let secret = "fake-monday-signing-secret";
    let m = monday(
        FakeOptions {
            signing_secret: Some(secret.into()),
            ..FakeOptions::default()
        },
        &[("MONDAY_SIGNING_SECRET", secret)],
    )
    .await;
    enerflo_answers(&m.h).await;
    let (status, body) = m
        .post_hook(HOOK_TOKEN, json!({"challenge": "abc123"}), None)
        .await;
    assert_eq!((status, body), (200, json!({"challenge": "abc123"})));
    // A wrong path token is an unknown path.
    let (status, _) = m
        .post_hook("wrong-token", json!({"challenge": "abc123"}), None)
        .await;
    assert_eq!(status, 404);

    m.h.deliver(submission(1)).await;
    let project = m.the_item(m.projects);
    m.webhooks_answered().await;
    let event = json!({"event": {"type": "update_column_value", "boardId": m.projects,
        "pulseId": project.id, "columnId": "project_status", "columnType": "color",
        "value": {"label": {"index": 2, "text": "Voided"}}, "userId": PERSON,
        "triggerUuid": "0123456789abcdef0123456789abcdef", "subscriptionId": 1}});
    // No JWT, and a JWT signed with another secret: refused, Enerflo untouched.
    let (status, _) = m.post_hook(HOOK_TOKEN, event.clone(), None).await;
    assert_eq!(status, 401);
    let aud =
        m.h.runner
            .url(&format!("/crm/monday/webhooks/{HOOK_TOKEN}"));
    let now = enerflo_sync::timefmt::now_unix();
    let claims =
        json!({"accountId": 1, "userId": PERSON, "aud": aud, "exp": now + 300, "iat": now});
    let forged = jwt(b"not-the-secret", &claims);
    let (status, _) = m.post_hook(HOOK_TOKEN, event.clone(), Some(&forged)).await;
    assert_eq!(status, 401);
    assert_eq!(writes(&m.h.enerflo).await, 0);
    // The fake's own (signed) deliveries were accepted: they were answered 200.
    assert!(
        m.fake
            .deliveries()
            .iter()
            .all(|d| d.authorization.is_some() && d.attempts.contains(&200))
    );
    // Signed with the secret, the same event goes through.
    let (status, _) = m
        .post_hook(HOOK_TOKEN, event, Some(&jwt(secret.as_bytes(), &claims)))
        .await;
    assert_eq!(status, 200);
    let puts = enerflo_writes(&m.h).await;
    assert_eq!(puts.len(), 1, "{puts:#?}");
}

#[tokio::test]
async fn an_unlinked_item_is_answered_503_so_monday_retries_it() {
    let m = monday(FakeOptions::default(), &[]).await;
    enerflo_answers(&m.h).await;
    let item = m
        .fake
        .user_creates_item(m.projects, "Someone else's project", json!({}), PERSON)
        .unwrap();
    let event = json!({"event": {"type": "update_column_value", "boardId": m.projects,
        "pulseId": item, "columnId": "project_status", "columnType": "color",
        "value": {"label": {"index": 2, "text": "Voided"}}, "userId": PERSON,
        "triggerUuid": "11111111111111111111111111111111", "subscriptionId": 1}});
    let a =
        m.h.request(
            http::Method::POST,
            &format!("/crm/monday/webhooks/{HOOK_TOKEN}"),
            None,
            event.to_string(),
        )
        .await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert!(a.retry_after.is_some());
    assert_eq!(writes(&m.h.enerflo).await, 0);
    // An unknown status label is refused for good: answered 200 so Monday stops retrying.
    let mut odd = event.clone();
    odd["event"]["pulseId"] = json!(item);
    odd["event"]["triggerUuid"] = json!("22222222222222222222222222222222");
    m.h.link_project(SAMPLE_INSTALL, &item.to_string()).await;
    odd["event"]["value"] = json!({"label": {"index": 9, "text": "Waiting On Utility"}});
    let (status, body) = m.post_hook(HOOK_TOKEN, odd, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "rejected", "{body}");
}
