//! The queue contract: one suite, run against the embedded (redb) queue and the SQS FIFO adapter
//! (against moto: `MOTO_URL`, which `make test` exports). Without `MOTO_URL` the SQS runs skip
//! with a note, except in CI (`CI=true`), where they fail.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use enerflo_sync::classify::Stage;
use enerflo_sync::queue::embedded::EmbeddedQueue;
use enerflo_sync::queue::sqs::{
    SqsEventQueue, SqsStageQueues, create_queues, delivery_from_lambda,
};
use enerflo_sync::queue::{
    DeadLetter, Delivery, EventQueue, MAX_MESSAGE_BYTES, MessageMeta, QueueError, QueueMessage,
};
use enerflo_sync::store::embedded::open_database;

use crate::kit::{moto_sdk, unique_name};

const STAGE: Stage = Stage::Project;
const VISIBILITY: Duration = Duration::from_secs(30);

// ----- harness ------------------------------------------------------------------------------------

/// What the tests need besides the port: receiving, acknowledging and reading dead letters, which
/// each adapter offers as inherent methods (SQS: async, embedded: sync).
#[async_trait]
trait TestQueue: EventQueue {
    async fn receive(&self, max: usize, visibility: Duration) -> Vec<Delivery>;
    async fn ack(&self, receipt: &str);
    async fn dead_letters(&self) -> Vec<DeadLetter>;
}

#[async_trait]
impl TestQueue for EmbeddedQueue {
    async fn receive(&self, max: usize, visibility: Duration) -> Vec<Delivery> {
        EmbeddedQueue::receive(self, STAGE, max, visibility)
            .await
            .expect("receive")
    }

    async fn ack(&self, receipt: &str) {
        EmbeddedQueue::ack(self, STAGE, receipt).await.expect("ack");
    }

    async fn dead_letters(&self) -> Vec<DeadLetter> {
        EmbeddedQueue::dead_letters(self, STAGE).expect("dead letters")
    }
}

#[async_trait]
impl TestQueue for SqsEventQueue {
    async fn receive(&self, max: usize, visibility: Duration) -> Vec<Delivery> {
        let secs = u32::try_from(visibility.as_secs()).expect("visibility fits");
        SqsEventQueue::receive(self, STAGE, max, 0, secs)
            .await
            .expect("receive")
    }

    async fn ack(&self, receipt: &str) {
        SqsEventQueue::ack(self, STAGE, receipt).await.expect("ack");
    }

    async fn dead_letters(&self) -> Vec<DeadLetter> {
        SqsEventQueue::dead_letters(self, STAGE, 10)
            .await
            .expect("dead letters")
    }
}

fn embedded() -> EmbeddedQueue {
    EmbeddedQueue::new(open_database(None).expect("in-memory database"), [STAGE])
}

async fn sqs(test: &str) -> Option<SqsEventQueue> {
    let (client, queues) = sqs_parts(test).await?;
    Some(SqsEventQueue::new(
        client,
        BTreeMap::from([(STAGE, queues)]),
    ))
}

/// A client on moto and a fresh pair of queues, for tests that look at the wire form.
async fn sqs_parts(test: &str) -> Option<(aws_sdk_sqs::Client, SqsStageQueues)> {
    let sdk = moto_sdk(test).await?;
    let client = aws_sdk_sqs::Client::new(&sdk);
    let queues = create_queues(&client, &unique_name(test))
        .await
        .expect("create queues in moto");
    Some((client, queues))
}

/// Two tests per contract: the embedded queue and the SQS adapter.
macro_rules! contract {
    ($contract:ident: $embedded:ident, $sqs:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $embedded() {
            $contract(&embedded()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqs() {
            let Some(queue) = sqs(stringify!($sqs)).await else {
                return;
            };
            $contract(&queue).await;
        }
    };
}

fn message(dedupe_key: &str, group: &str, body: &str) -> QueueMessage {
    QueueMessage {
        meta: MessageMeta {
            stage: STAGE,
            event: "install.updated".into(),
            dedupe_key: dedupe_key.to_owned(),
            group: group.to_owned(),
            received_at: "2025-01-02T03:04:05Z".into(),
        },
        body: body.to_owned(),
    }
}

fn bodies(deliveries: &[Delivery]) -> Vec<&str> {
    deliveries.iter().map(|d| d.body.as_str()).collect()
}

// ----- contracts ----------------------------------------------------------------------------------

contract!(queue_send_then_receive_yields_body_and_meta:
    embedded_queue_send_then_receive_yields_body_and_meta,
    sqs_queue_send_then_receive_yields_body_and_meta);

async fn queue_send_then_receive_yields_body_and_meta(queue: &dyn TestQueue) {
    assert!(queue.has_stage(STAGE));
    assert!(!queue.has_stage(Stage::Note));

    let body = "{\"customer\":\"O'Brien \\\"Sunny\\\"\",\"note\":\"naïve ☀ 日本\"}";
    let msg = message("evt-1", "install:700001", body);
    queue.send(&msg).await.expect("send");

    let got = queue.receive(10, VISIBILITY).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let delivery = &got[0];
    assert_eq!(delivery.body, body);
    assert_eq!(delivery.meta.as_ref().expect("meta reads"), &msg.meta);
    assert_eq!(delivery.receive_count, 1);
    assert_eq!(
        delivery.attributes.get("dedupe_key").map(String::as_str),
        Some("evt-1")
    );
    assert!(!delivery.message_id.is_empty() && !delivery.receipt.is_empty());

    queue.ack(&delivery.receipt).await;
    assert!(
        queue.receive(10, VISIBILITY).await.is_empty(),
        "acknowledged messages are gone"
    );

    let other_stage = QueueMessage {
        meta: MessageMeta {
            stage: Stage::Note,
            ..msg.meta.clone()
        },
        body: "{}".into(),
    };
    assert!(
        matches!(queue.send(&other_stage).await, Err(QueueError::Invalid(_))),
        "no queue for that stage"
    );
}

contract!(queue_same_dedupe_id_twice_within_the_window_yields_one_message:
    embedded_queue_same_dedupe_id_twice_within_the_window_yields_one_message,
    sqs_queue_same_dedupe_id_twice_within_the_window_yields_one_message);

async fn queue_same_dedupe_id_twice_within_the_window_yields_one_message(queue: &dyn TestQueue) {
    queue
        .send(&message("evt-dup", "install:2", "{\"v\":1}"))
        .await
        .expect("send");
    queue
        .send(&message("evt-dup", "install:2", "{\"v\":2}"))
        .await
        .expect("send the repeat");

    let got = queue.receive(10, VISIBILITY).await;
    assert_eq!(bodies(&got), ["{\"v\":1}"]);
    queue.ack(&got[0].receipt).await;
    assert!(
        queue.receive(10, VISIBILITY).await.is_empty(),
        "the repeat was dropped"
    );
}

contract!(queue_group_waits_while_its_head_is_in_flight_other_groups_do_not:
    embedded_queue_group_waits_while_its_head_is_in_flight_other_groups_do_not,
    sqs_queue_group_waits_while_its_head_is_in_flight_other_groups_do_not);

/// FIFO per group. One receive of SQS may return several messages of a group (in order), so the
/// head is received alone first; then its group is locked while the other group flows.
async fn queue_group_waits_while_its_head_is_in_flight_other_groups_do_not(queue: &dyn TestQueue) {
    for (key, group) in [
        ("A1", "install:A"),
        ("A2", "install:A"),
        ("B1", "install:B"),
    ] {
        queue.send(&message(key, group, key)).await.expect("send");
    }

    let head = queue.receive(1, VISIBILITY).await;
    assert_eq!(bodies(&head), ["A1"]);
    let next = queue.receive(10, VISIBILITY).await;
    assert_eq!(
        bodies(&next),
        ["B1"],
        "A2 waits behind the in-flight A1; group B is not blocked"
    );
    assert!(queue.receive(10, VISIBILITY).await.is_empty());

    queue.ack(&head[0].receipt).await;
    let after = queue.receive(10, VISIBILITY).await;
    assert_eq!(
        bodies(&after),
        ["A2"],
        "after A1 is acknowledged, A2 arrives"
    );
}

contract!(queue_defer_hides_the_message_for_the_delay_then_redelivers_it:
    embedded_queue_defer_hides_the_message_for_the_delay_then_redelivers_it,
    sqs_queue_defer_hides_the_message_for_the_delay_then_redelivers_it);

async fn queue_defer_hides_the_message_for_the_delay_then_redelivers_it(queue: &dyn TestQueue) {
    queue
        .send(&message("evt-defer", "install:3", "{\"retry\":true}"))
        .await
        .expect("send");
    let first = queue.receive(10, VISIBILITY).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);

    queue
        .defer(STAGE, &first[0].receipt, Duration::from_secs(2))
        .await
        .expect("defer");
    assert!(
        queue.receive(10, VISIBILITY).await.is_empty(),
        "hidden during the delay"
    );

    tokio::time::sleep(Duration::from_millis(2300)).await;
    let again = queue.receive(10, VISIBILITY).await;
    assert_eq!(again.len(), 1, "redelivered after the delay");
    assert_eq!(again[0].message_id, first[0].message_id);
    assert_eq!(again[0].body, first[0].body);
    assert_eq!(again[0].receive_count, 2);
}

contract!(queue_dead_letter_keeps_the_reason_attributes_and_body:
    embedded_queue_dead_letter_keeps_the_reason_attributes_and_body,
    sqs_queue_dead_letter_keeps_the_reason_attributes_and_body);

async fn queue_dead_letter_keeps_the_reason_attributes_and_body(queue: &dyn TestQueue) {
    let msg = message("evt-dead", "install:4", "{\"bad\":\"it's \\\"bad\\\"\"}");
    queue.send(&msg).await.expect("send");
    let got = queue.receive(10, VISIBILITY).await;
    assert_eq!(got.len(), 1);
    let reason = "permanent: CRM rejected the project (422): \"address\" is required";
    queue
        .dead_letter(STAGE, &got[0], reason)
        .await
        .expect("dead letter");
    queue.ack(&got[0].receipt).await;

    let dead = queue.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let dead = &dead[0];
    assert_eq!(dead.reason, reason);
    assert_eq!(dead.stage, STAGE);
    assert_eq!(dead.body, msg.body);
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.message_id, got[0].message_id);
    assert!(!dead.failed_at.is_empty());
    let meta =
        MessageMeta::from_attributes(|k| dead.attributes.get(k).cloned()).expect("attributes kept");
    assert_eq!(meta, msg.meta, "a replay can rebuild the message");

    assert!(
        queue.receive(10, VISIBILITY).await.is_empty(),
        "the original is gone from the queue"
    );
}

contract!(queue_oversized_body_is_refused_naming_its_size:
    embedded_queue_oversized_body_is_refused_naming_its_size,
    sqs_queue_oversized_body_is_refused_naming_its_size);

async fn queue_oversized_body_is_refused_naming_its_size(queue: &dyn TestQueue) {
    // 1 MiB that gzip cannot shrink enough: no message of the queue can hold it.
    let huge = incompressible(MAX_MESSAGE_BYTES);
    let refused = queue.send(&message("evt-huge", "install:5", &huge)).await;
    match refused {
        Err(QueueError::Invalid(why)) => assert!(
            why.contains(&huge.len().to_string()) && why.contains("1048576"),
            "names the size and the limit: {why}"
        ),
        other => panic!("an incompressible 1 MiB body must be refused, got {other:?}"),
    }
    assert!(queue.receive(10, VISIBILITY).await.is_empty());
}

contract!(queue_a_1_mib_body_round_trips_intact_through_receive_and_dead_letter:
    embedded_queue_a_1_mib_body_round_trips_intact_through_receive_and_dead_letter,
    sqs_queue_a_1_mib_body_round_trips_intact_through_receive_and_dead_letter);

/// A body of SQS's whole message size: with its attributes it only fits compressed, and every
/// reader sees it as it was sent.
async fn queue_a_1_mib_body_round_trips_intact_through_receive_and_dead_letter(
    queue: &dyn TestQueue,
) {
    let body = json_of_len(MAX_MESSAGE_BYTES);
    let msg = message("evt-1mib", "install:6", &body);
    queue.send(&msg).await.expect("a 1 MiB body is accepted");

    let got = queue.receive(10, VISIBILITY).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].body == body, "the body arrives intact");
    assert_eq!(got[0].meta.as_ref().expect("meta reads"), &msg.meta);
    assert_eq!(
        got[0].attributes.get("body_encoding"),
        None,
        "the encoding is the queue's business, not the reader's"
    );

    // A long reason (cut to 1,000 bytes) takes more room than the original attributes did.
    let reason = format!("permanent: CRM rejected it: {}", "r".repeat(2_000));
    queue
        .dead_letter(STAGE, &got[0], &reason)
        .await
        .expect("a 1 MiB body is dead-lettered");
    queue.ack(&got[0].receipt).await;
    let dead = queue.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].body == body,
        "the dead letter keeps the body intact"
    );
    assert_eq!(dead[0].attributes.get("body_encoding"), None);
    let meta = MessageMeta::from_attributes(|k| dead[0].attributes.get(k).cloned())
        .expect("attributes kept");
    assert_eq!(meta, msg.meta, "a replay can rebuild the message");
}

/// SQS specifically: the 1 MiB body travels gzip + base64 with a `body_encoding` attribute, the
/// whole message (body, attribute names, types and values) within SQS's limit, and the record
/// Lambda hands a consumer decodes to the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_a_1_mib_body_travels_compressed_within_the_message_limit_and_lambda_records_decode() {
    let Some((client, queues)) = sqs_parts("sqs_1mib_wire").await else {
        return;
    };
    let queue = SqsEventQueue::new(client.clone(), BTreeMap::from([(STAGE, queues.clone())]));
    let body = json_of_len(MAX_MESSAGE_BYTES);
    let msg = message("evt-wire", "install:7", &body);
    queue.send(&msg).await.expect("send");

    let out = client
        .receive_message()
        .queue_url(&queues.url)
        .message_attribute_names("All")
        .visibility_timeout(30)
        .send()
        .await
        .expect("receive");
    let wire = &out.messages.unwrap_or_default()[0];
    let attributes: BTreeMap<String, String> = wire
        .message_attributes()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.string_value().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(
        attributes.get("body_encoding").map(String::as_str),
        Some("gzip+base64")
    );
    let wire_body = wire.body().unwrap_or_default();
    let size = wire_body.len()
        + attributes
            .iter()
            .map(|(k, v)| k.len() + "String".len() + v.len())
            .sum::<usize>();
    assert!(size <= MAX_MESSAGE_BYTES, "{size} bytes on the wire");

    // The record as the Lambda event source mapping delivers it.
    let message_attributes: serde_json::Map<String, serde_json::Value> = attributes
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::json!({"stringValue": v, "dataType": "String"}),
            )
        })
        .collect();
    let record: aws_lambda_events::event::sqs::SqsMessage =
        serde_json::from_value(serde_json::json!({
            "messageId": wire.message_id(),
            "receiptHandle": wire.receipt_handle(),
            "body": wire_body,
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": message_attributes,
        }))
        .expect("a Lambda SQS record");
    let delivery = delivery_from_lambda(&record);
    assert!(delivery.body == body, "the consumer sees the original body");
    assert_eq!(delivery.meta.as_ref().expect("meta reads"), &msg.meta);
    assert_eq!(delivery.attributes.get("body_encoding"), None);
}

/// A JSON body of exactly `len` bytes, multi-byte characters included.
fn json_of_len(len: usize) -> String {
    let head = "{\"note\":\"naïve ☀ 日本 ";
    let tail = "\"}";
    let mut body = String::with_capacity(len);
    body.push_str(head);
    body.push_str(&"x".repeat(len - head.len() - tail.len()));
    body.push_str(tail);
    assert_eq!(body.len(), len);
    body
}

/// `n` printable ASCII characters from a fixed pseudo-random sequence: text gzip barely shrinks.
fn incompressible(n: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b' ' + (x % 95) as u8)
        })
        .collect()
}
