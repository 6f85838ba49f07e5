//! DynamoDB calls per outbound event, happy path: each stage's consumer wired as its Lambda
//! function wires it (`runtime::consumer_for` on the DynamoDB and SQS adapters over
//! `runtime::lambda_sdk_config`), against moto (`MOTO_URL`) through a counting proxy
//! (`sync_tests::ddb_calls`). Each test delivers a first event of an entity (it is synced and
//! linked) and then a change of it, and counts the DynamoDB calls the consumer makes for each,
//! from the received SQS message to its recorded outcome. The bounds are the README's table
//! ("DynamoDB calls per outbound event, happy path", the "after" columns): a test fails when a
//! call is added back. Run with `--no-capture` to see each call and the keys it names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enerflo_sync::classify::Stage;
use enerflo_sync::consumer::{Consumer, Disposition};
use enerflo_sync::queue::sqs::{SqsEventQueue, create_queues};
use enerflo_sync::store::dynamo::{DynamoStore, create_table};
use serde_json::{Value, json};
use sync_tests::crm::{CrmIds, crm_accepts};
use sync_tests::ddb_calls::{Calls, DynamoCalls};
use sync_tests::enerflo::{finds_installs, submission_json};
use sync_tests::{TOKEN, fixture_json};
use wiremock::MockServer;

/// One stage's consumer on moto, as its Lambda function runs it.
struct Lambda {
    stage: Stage,
    counter: DynamoCalls,
    queue: Arc<SqsEventQueue>,
    ingest: enerflo_sync::http::webhook::WebhookIngest,
    consumer: Consumer,
    crm: MockServer,
    _enerflo: MockServer,
}

impl Lambda {
    /// `None` (skip, with a note) without `MOTO_URL`, except in CI.
    async fn start(test: &str, stage: Stage, crm_ids: CrmIds) -> Option<Self> {
        let moto = match std::env::var("MOTO_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{test}: MOTO_URL is not set, and CI=true requires this test to run"
                );
                eprintln!("note: {test} skipped: MOTO_URL is not set");
                return None;
            }
        };
        let enerflo = MockServer::start().await;
        let crm = MockServer::start().await;
        finds_installs(&enerflo).await;
        crm_accepts(&crm, crm_ids).await;
        let env: BTreeMap<&str, String> = BTreeMap::from([
            ("ENERFLO_BASE_URL", enerflo.uri()),
            ("ENERFLO_API_KEY", "fake-enerflo-key".to_owned()),
            ("CRM_WEBHOOK_URL", format!("{}/crm/events", crm.uri())),
            ("CRM_WEBHOOK_SECRET", sync_tests::CRM_SECRET.to_owned()),
            ("WEBHOOK_TOKEN", TOKEN.to_owned()),
        ]);
        let config =
            enerflo_sync::config::Config::from_lookup(|k| env.get(k).cloned()).expect("config");
        let counter = DynamoCalls::in_front_of(&moto).await;
        let sdk = enerflo_sync::runtime::lambda_sdk_config(
            "us-east-1".to_owned(),
            Some(counter.uri()),
            aws_sdk_dynamodb::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "ddb-calls",
            ),
        );
        let name = format!(
            "ddb-{}-{}-{:06x}",
            stage.as_str().replace('_', "-"),
            std::process::id(),
            fastrand::u32(..0xff_ffff)
        );
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        create_table(&dynamo, &name).await.expect("create table");
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let queues = create_queues(&sqs, &name).await.expect("create queues");
        let store = Arc::new(DynamoStore::new(dynamo, name));
        let queue = Arc::new(SqsEventQueue::new(sqs, BTreeMap::from([(stage, queues)])));
        let ports = enerflo_sync::runtime::Ports::one_store(store, queue.clone());
        let ingest = enerflo_sync::runtime::webhook_ingest(&config, &ports);
        let consumer = enerflo_sync::runtime::consumer_for(
            stage,
            &config,
            &ports,
            enerflo_sync::runtime::enerflo_client(
                &config.enerflo_access().expect("Enerflo access"),
            )
            .expect("Enerflo client"),
            enerflo_sync::runtime::crm_connector(&config.crm_access().expect("CRM access"), &ports)
                .expect("CRM connector"),
        )
        .expect("a consumer for the stage");
        Some(Self {
            stage,
            counter,
            queue,
            ingest,
            consumer,
            crm,
            _enerflo: enerflo,
        })
    }

    /// Ingests `body` as Enerflo's webhook, receives its message as Lambda's event source
    /// mapping does, and processes it: the DynamoDB calls of that processing (the consumer's,
    /// from the attempt count to the recorded outcome), and the outcome it recorded.
    async fn event(&self, body: &Value) -> (Calls, String) {
        let req = enerflo_sync::http::HttpRequest {
            method: http::Method::POST,
            path: format!("/enerflo/webhooks/{TOKEN}"),
            query: None,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
        };
        let resp = self.ingest.handle(&req, TOKEN).await;
        assert_eq!(resp.status.as_u16(), 202, "{body}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let batch = loop {
            let got = self
                .queue
                .receive(self.stage, 10, 0, 30)
                .await
                .expect("receive");
            if !got.is_empty() {
                break got;
            }
            assert!(Instant::now() < deadline, "the message never arrived");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(batch.len(), 1, "one message at a time");
        let mark = self.counter.mark();
        let dispositions = self.consumer.process_batch(&batch).await;
        let calls = self.counter.since(mark);
        assert_eq!(dispositions, [Disposition::Done], "{}", calls.describe());
        self.queue
            .ack(self.stage, &batch[0].receipt)
            .await
            .expect("delete");
        let meta = batch[0].meta.as_ref().expect("readable message");
        let outcome = enerflo_sync::store::EventLog::get(&*self.consumer.log, meta.log_key())
            .await
            .expect("event log")
            .map(|r| r.outcome)
            .unwrap_or_default();
        (calls, outcome)
    }

    async fn crm_events(&self) -> Vec<Value> {
        sync_tests::crm::events(&self.crm).await
    }
}

/// The bound on one event's calls: at most `total`, and at most the given count of each
/// operation named (an operation not named may not be called at all).
fn assert_within(what: &str, calls: &Calls, total: usize, per_op: &[(&str, usize)]) {
    assert!(
        calls.total() <= total,
        "{what}: {} DynamoDB calls, at most {total} expected\n{}",
        calls.total(),
        calls.describe()
    );
    for (op, n) in calls.by_operation() {
        let bound = per_op
            .iter()
            .find(|(name, _)| *name == op)
            .map_or(0, |(_, b)| *b);
        assert!(
            n <= bound,
            "{what}: {n} {op}, at most {bound} expected\n{}",
            calls.describe()
        );
    }
}

/// Both events reached the CRM and were recorded as delivered.
async fn both_delivered(lambda: &Lambda, outcomes: [&str; 2]) {
    assert_eq!(outcomes, ["delivered", "delivered"]);
    assert_eq!(lambda.crm_events().await.len(), 2);
}

#[tokio::test]
async fn a_project_event_makes_a_bounded_number_of_dynamodb_calls() {
    let Some(lambda) =
        Lambda::start("ddb_calls::project", Stage::Project, CrmIds::per_deal()).await
    else {
        return;
    };
    let first = submission_json(1);
    let mut change = first.clone();
    change["payload"]["proposal"]["pricingOutputs"]["design"]["arrays"][0]["moduleCount"] =
        json!(30);
    let (a, first_outcome) = lambda.event(&first).await;
    let (b, change_outcome) = lambda.event(&change).await;
    both_delivered(&lambda, [&first_outcome, &change_outcome]).await;
    eprintln!("{}\n{}", a.describe(), b.describe());
    assert_within(
        "project, first sync",
        &a,
        20,
        &[
            ("GetItem", 11),
            ("PutItem", 2),
            ("TransactWriteItems", 3),
            ("UpdateItem", 4),
        ],
    );
    assert_within(
        "project, a change",
        &b,
        11,
        &[
            ("GetItem", 5),
            ("PutItem", 1),
            ("TransactWriteItems", 1),
            ("UpdateItem", 4),
        ],
    );
}

fn update_install(id: u64, name: &str) -> Value {
    json!({"webhook_event": "update_install", "id": 700001, "status": {"id": id, "name": name},
           "timestamps": {"updated_at": "2025-04-01 10:00:00", "timezone": "UTC"}})
}

#[tokio::test]
async fn a_status_event_makes_a_bounded_number_of_dynamodb_calls() {
    let Some(lambda) = Lambda::start("ddb_calls::status", Stage::Status, "crm-proj-1".into()).await
    else {
        return;
    };
    let (a, first_outcome) = lambda
        .event(&update_install(321, "Example Custom Status"))
        .await;
    let (b, change_outcome) = lambda.event(&update_install(4, "On Hold")).await;
    both_delivered(&lambda, [&first_outcome, &change_outcome]).await;
    eprintln!("{}\n{}", a.describe(), b.describe());
    assert_within(
        "status, first sync",
        &a,
        12,
        &[
            ("GetItem", 3),
            ("PutItem", 2),
            ("TransactWriteItems", 3),
            ("UpdateItem", 4),
        ],
    );
    assert_within(
        "status, a change",
        &b,
        10,
        &[
            ("GetItem", 3),
            ("PutItem", 1),
            ("TransactWriteItems", 2),
            ("UpdateItem", 4),
        ],
    );
}

fn milestone(completed: &str) -> Value {
    json!({"webhook_event": "project_milestone_updated", "install_id": 700001,
           "milestone_id": 3901, "milestone": {"id": 3901, "title": "Engineering"},
           "start_date": "2025-02-01", "completed_date": completed,
           "updated_at": "2025-04-01 10:00:00"})
}

#[tokio::test]
async fn a_milestone_event_makes_a_bounded_number_of_dynamodb_calls() {
    let Some(lambda) = Lambda::start(
        "ddb_calls::milestone",
        Stage::Milestone,
        "crm-proj-1".into(),
    )
    .await
    else {
        return;
    };
    let (a, first_outcome) = lambda.event(&milestone("2025-03-01")).await;
    let (b, change_outcome) = lambda.event(&milestone("2025-03-05")).await;
    both_delivered(&lambda, [&first_outcome, &change_outcome]).await;
    eprintln!("{}\n{}", a.describe(), b.describe());
    assert_within(
        "milestone, first sync",
        &a,
        13,
        &[
            ("GetItem", 4),
            ("PutItem", 2),
            ("TransactWriteItems", 3),
            ("UpdateItem", 4),
        ],
    );
    assert_within(
        "milestone, a change",
        &b,
        11,
        &[
            ("GetItem", 4),
            ("PutItem", 1),
            ("TransactWriteItems", 2),
            ("UpdateItem", 4),
        ],
    );
}

fn note(id: u64, text: &str) -> Value {
    json!({"webhook_event": "new_install_note", "install_id": 700001,
           "note": {"id": id, "note": text, "user": {"full_name": "Sam Installer"},
                    "created_at": "2025-03-01 10:00:00"}})
}

#[tokio::test]
async fn a_note_event_makes_a_bounded_number_of_dynamodb_calls() {
    let Some(lambda) =
        Lambda::start("ddb_calls::note", Stage::Note, CrmIds::Numbered("crm-note")).await
    else {
        return;
    };
    let (a, first_outcome) = lambda.event(&note(30001, "Panels delivered")).await;
    let (b, change_outcome) = lambda.event(&note(30002, "Inspection booked")).await;
    both_delivered(&lambda, [&first_outcome, &change_outcome]).await;
    eprintln!("{}\n{}", a.describe(), b.describe());
    assert_within(
        "note, first note",
        &a,
        15,
        &[
            ("GetItem", 7),
            ("PutItem", 2),
            ("TransactWriteItems", 3),
            ("UpdateItem", 3),
        ],
    );
    assert_within(
        "note, a later note",
        &b,
        15,
        &[
            ("GetItem", 7),
            ("PutItem", 2),
            ("TransactWriteItems", 3),
            ("UpdateItem", 3),
        ],
    );
}

#[tokio::test]
async fn a_change_order_event_makes_a_bounded_number_of_dynamodb_calls() {
    let Some(lambda) = Lambda::start(
        "ddb_calls::change_order",
        Stage::ChangeOrder,
        "crm-proj-co".into(),
    )
    .await
    else {
        return;
    };
    let mut first = fixture_json("v1-signed_change_order.json");
    first["webhook_event"] = json!("signed_change_order");
    let mut change = first.clone();
    change["change_orders"][0]["signed_at"] = json!("2025-03-09 11:00:00");
    change["change_orders"][0]["id"] = json!(8000002);
    let (a, first_outcome) = lambda.event(&first).await;
    let (b, change_outcome) = lambda.event(&change).await;
    both_delivered(&lambda, [&first_outcome, &change_outcome]).await;
    eprintln!("{}\n{}", a.describe(), b.describe());
    assert_within(
        "change_order, first sync",
        &a,
        15,
        &[
            ("GetItem", 6),
            ("PutItem", 2),
            ("TransactWriteItems", 3),
            ("UpdateItem", 4),
        ],
    );
    assert_within(
        "change_order, a change",
        &b,
        10,
        &[
            ("GetItem", 4),
            ("PutItem", 1),
            ("TransactWriteItems", 1),
            ("UpdateItem", 4),
        ],
    );
}

#[tokio::test]
async fn a_leads_event_makes_a_bounded_number_of_dynamodb_calls() {
    let Some(lambda) =
        Lambda::start("ddb_calls::leads", Stage::Leads, "crm-contact-1".into()).await
    else {
        return;
    };
    let first = fixture_json("v1-new_customer.json");
    let mut change = fixture_json("v1-update_customer.json");
    change["email"] = json!("pat.new@example.com");
    let (a, first_outcome) = lambda.event(&first).await;
    let (b, change_outcome) = lambda.event(&change).await;
    both_delivered(&lambda, [&first_outcome, &change_outcome]).await;
    eprintln!("{}\n{}", a.describe(), b.describe());
    assert_within(
        "leads, first sync",
        &a,
        15,
        &[
            ("GetItem", 6),
            ("PutItem", 3),
            ("TransactWriteItems", 2),
            ("UpdateItem", 4),
        ],
    );
    assert_within(
        "leads, a change",
        &b,
        11,
        &[
            ("GetItem", 5),
            ("PutItem", 1),
            ("TransactWriteItems", 2),
            ("UpdateItem", 3),
        ],
    );
}
