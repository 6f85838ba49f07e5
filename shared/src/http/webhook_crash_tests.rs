//! The ingest path stopped between its calls (docs in README "Webhook ingest"): the event is
//! written (call 1) but never queued (call 2). A repeat delivery, or the sweep, sends it; the
//! consumer writes the CRM once however many copies reach it. Also: how many calls, one after
//! the other, the path makes (at most two).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::canonical::CrmEvent;
use crate::consumer::{Consumer, Disposition};
use crate::crm::{CrmAck, CrmConnector, CrmError};
use crate::embedded_db::open_database;
use crate::pipeline::{Kit, Pipeline};
use crate::queue::embedded::EmbeddedQueue;
use crate::queue::{Delivery, QueueError};
use crate::retry::RetryPolicy;
use crate::stages::change_order::ChangeOrderStage;
use crate::store::embedded::EmbeddedStore;
use crate::store::{OutcomeCounts, StoreError};

#[derive(Default)]
struct FakeCrm {
    events: Mutex<Vec<CrmEvent>>,
}

#[async_trait]
impl CrmConnector for FakeCrm {
    async fn deliver(&self, event: &CrmEvent) -> Result<CrmAck, CrmError> {
        self.events.lock().expect("lock").push(event.clone());
        Ok(CrmAck {
            status: 200,
            crm_id: Some("crm-proj-9".into()),
        })
    }
}

/// A signed change order: its stage needs no Enerflo call, so the whole way to the CRM runs
/// in process.
fn body() -> String {
    let mut v: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/enerflo/v1-signed_change_order.json"
    ))
    .expect("fixture");
    v["webhook_event"] = json!("signed_change_order");
    v.to_string()
}

fn post(body: &str) -> HttpRequest {
    HttpRequest {
        method: Method::POST,
        path: "/enerflo/webhooks/tok".into(),
        query: None,
        headers: HeaderMap::new(),
        body: Bytes::from(body.to_owned()),
    }
}

/// A queue whose send stops the process: what a crash between the write and the send leaves.
struct DiesOnSend;

#[async_trait]
impl EventQueue for DiesOnSend {
    async fn send(&self, _: &QueueMessage) -> Result<(), QueueError> {
        panic!("the process stops before its send reaches the queue");
    }
    fn has_stage(&self, _: Stage) -> bool {
        true
    }
    async fn defer(&self, _: Stage, _: &str, _: Duration) -> Result<(), QueueError> {
        Ok(())
    }
    async fn dead_letter(&self, _: Stage, _: &Delivery, _: &str) -> Result<(), QueueError> {
        Ok(())
    }
}

struct World {
    store: Arc<EmbeddedStore>,
    queue: Arc<EmbeddedQueue>,
    crm: Arc<FakeCrm>,
    consumer: Consumer,
}

fn world() -> World {
    let db = open_database(None).expect("db");
    let store = Arc::new(EmbeddedStore::new(db.clone()));
    let queue = Arc::new(EmbeddedQueue::new(db, [Stage::ChangeOrder]));
    let crm = Arc::new(FakeCrm::default());
    let consumer = Consumer {
        handler: Arc::new(Pipeline::new(
            ChangeOrderStage,
            Kit::on(store.clone(), crm.clone(), false),
        )),
        queue: queue.clone(),
        log: store.clone(),
        retry: RetryPolicy::default(),
    };
    World {
        store,
        queue,
        crm,
        consumer,
    }
}

fn ingest(w: &World, queue: Arc<dyn EventQueue>) -> WebhookIngest {
    WebhookIngest {
        tokens: SecretSet::parse("tok"),
        max_body_bytes: 1 << 20,
        install_id_paths: vec!["install_id".into()],
        queue,
        log: w.store.clone(),
        dedupe_ttl: Duration::from_secs(3600),
        log_ttl: Duration::from_secs(3600),
    }
}

impl World {
    /// Stops a delivery after its write, before its send (the first crash window).
    async fn crash_after_write(&self) -> String {
        let dying = Arc::new(ingest(self, Arc::new(DiesOnSend)));
        let task = tokio::spawn(async move { dying.handle(&post(&body()), "tok").await });
        assert!(task.await.expect_err("stopped").is_panic());
        assert_eq!(self.queue.depth(Stage::ChangeOrder).expect("depth"), 0);
        let key = self.only_event_key().await;
        let rec = self.store.get(&key).await.expect("get").expect("written");
        assert_eq!(
            (rec.outcome.as_str(), rec.raw_body == body()),
            ("queued", true),
            "written with its raw body, not queued"
        );
        key
    }

    async fn only_event_key(&self) -> String {
        let events = self
            .store
            .unsent(Stage::ChangeOrder.as_str(), i64::MAX, 10)
            .await
            .expect("unsent");
        assert_eq!(events.len(), 1, "{events:?}");
        events[0].dedupe_key.clone()
    }

    /// Every message on the queue, through the consumer (acknowledged as it says).
    async fn consume(&self) -> usize {
        let mut taken = 0;
        loop {
            let batch = self
                .queue
                .receive(Stage::ChangeOrder, 10, Duration::from_secs(30))
                .await
                .expect("receive");
            if batch.is_empty() {
                return taken;
            }
            for (delivery, done) in batch.iter().zip(self.consumer.process_batch(&batch).await) {
                assert_eq!(done, Disposition::Done);
                self.queue
                    .ack(Stage::ChangeOrder, &delivery.receipt)
                    .await
                    .expect("ack");
                taken += 1;
            }
        }
    }

    fn crm_writes(&self) -> usize {
        self.crm.events.lock().expect("lock").len()
    }
}

#[tokio::test]
async fn stopped_between_write_and_send_the_repeat_delivery_sends_it_and_the_crm_is_written_once() {
    let w = world();
    let key = w.crash_after_write().await;
    // WHEN Enerflo, never answered, delivers again
    let live = ingest(&w, w.queue.clone());
    let again = live.handle(&post(&body()), "tok").await;
    // THEN it is the same answer a repeat always gets, and the event is on the queue once
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(
        (
            again.body_json()["status"].as_str(),
            again.body_json()["dedupe_key"].as_str()
        ),
        (Some("duplicate"), Some(key.as_str()))
    );
    assert_eq!(w.queue.depth(Stage::ChangeOrder).expect("depth"), 1);
    assert_eq!(w.consume().await, 1);
    assert_eq!(w.crm_writes(), 1);
    // ... and once taken, neither another repeat nor the sweep sends it again
    let third = live.handle(&post(&body()), "tok").await;
    assert_eq!(third.body_json()["status"], "duplicate");
    assert_eq!(live.resend_unsent(Duration::ZERO, 10).await.resent, 0);
    assert_eq!(w.queue.depth(Stage::ChangeOrder).expect("depth"), 0);
    assert_eq!(w.crm_writes(), 1);
}

#[tokio::test]
async fn stopped_between_write_and_send_and_never_repeated_the_sweep_sends_it_and_the_crm_is_written_once()
 {
    let w = world();
    let key = w.crash_after_write().await;
    let live = ingest(&w, w.queue.clone());
    // WHEN the sweep runs before the event is old enough, it waits
    assert_eq!(
        live.resend_unsent(RESEND_AFTER, 10).await,
        Resent::default()
    );
    assert_eq!(w.queue.depth(Stage::ChangeOrder).expect("depth"), 0);
    // ... and once it is, it sends it (and notes the re-send in the event's history)
    assert_eq!(
        live.resend_unsent(Duration::ZERO, 10).await,
        Resent {
            resent: 1,
            failed: 0
        }
    );
    let rec = w.store.get(&key).await.expect("get").expect("kept");
    assert!(
        rec.detail
            .as_deref()
            .is_some_and(|d| d.starts_with("re-sent by the sweep")),
        "{rec:?}"
    );
    assert_eq!(w.consume().await, 1);
    assert_eq!(w.crm_writes(), 1);
    let rec = w.store.get(&key).await.expect("get").expect("kept");
    assert_eq!(rec.outcome, "delivered");
    // THEN a late repeat is a duplicate and nothing is left to sweep
    let late = live.handle(&post(&body()), "tok").await;
    assert_eq!(late.body_json()["status"], "duplicate");
    assert_eq!(live.resend_unsent(Duration::ZERO, 10).await.resent, 0);
    assert_eq!(w.consume().await, 0);
    assert_eq!(w.crm_writes(), 1);
}

#[tokio::test]
async fn stopped_after_the_send_a_repeat_within_the_dedupe_window_adds_no_message() {
    let w = world();
    let live = ingest(&w, w.queue.clone());
    // The second crash window: sent, but the answer never reached Enerflo.
    let first = live.handle(&post(&body()), "tok").await;
    assert_eq!(first.body_json()["status"], "queued");
    let again = live.handle(&post(&body()), "tok").await;
    assert_eq!(again.body_json()["status"], "duplicate");
    assert_eq!(
        w.queue.depth(Stage::ChangeOrder).expect("depth"),
        1,
        "the re-send has the first send's dedupe id"
    );
    assert_eq!(w.consume().await, 1);
    assert_eq!(w.crm_writes(), 1);
}

#[tokio::test]
async fn a_resend_past_the_dedupe_window_of_an_event_already_taken_is_dropped_by_the_consumer() {
    let w = world();
    let live = ingest(&w, w.queue.clone());
    let first = live.handle(&post(&body()), "tok").await;
    let key = first.body_json()["dedupe_key"]
        .as_str()
        .expect("key")
        .to_owned();
    assert_eq!(w.consume().await, 1);
    assert_eq!(w.crm_writes(), 1);
    // WHEN a re-send arrives after the queue's dedupe window (a fresh queue has none), e.g.
    // the sweep's of an event whose consumer outcome was written after the sweep listed it
    let rec = w.store.get(&key).await.expect("get").expect("kept");
    let late = World {
        queue: Arc::new(EmbeddedQueue::new(
            open_database(None).expect("db"),
            [Stage::ChangeOrder],
        )),
        ..w
    };
    let resend = QueueMessage {
        meta: MessageMeta {
            stage: Stage::ChangeOrder,
            event: rec.event.clone(),
            dedupe_key: key.clone(),
            group: rec.entity.clone().expect("group"),
            received_at: rec.received_at.clone(),
        }
        .for_resend(),
        body: rec.raw_body.clone(),
    };
    late.queue.send(&resend).await.expect("send");
    // THEN the consumer takes it and drops it unhandled (so it can never write older content
    // over a later change): no CRM write, no new outcome in the event's history
    assert_eq!(late.consume().await, 1);
    assert_eq!(late.crm_writes(), 1);
    let after = late.store.get(&key).await.expect("get").expect("kept");
    assert_eq!(
        (after.outcome.as_str(), after.history.len(), after.attempts),
        (rec.outcome.as_str(), rec.history.len(), rec.attempts)
    );
}

// ----- calls one after the other ------------------------------------------------------------------

/// Counts calls to the store and queue ports and how many of them ran one after the other: a
/// call that starts while another is in flight runs beside it, not after it. Each call yields
/// once before and after the inner call, so calls the code runs together overlap here too.
#[derive(Default)]
struct Calls {
    in_flight: AtomicUsize,
    sequential: AtomicUsize,
    names: Mutex<Vec<&'static str>>,
}

impl Calls {
    async fn around<T>(&self, name: &'static str, call: impl Future<Output = T>) -> T {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.sequential.fetch_add(1, Ordering::SeqCst);
        }
        self.names.lock().expect("lock").push(name);
        tokio::task::yield_now().await;
        let out = call.await;
        tokio::task::yield_now().await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        out
    }

    fn take(&self) -> (usize, Vec<&'static str>) {
        let mut names = std::mem::take(&mut *self.names.lock().expect("lock"));
        names.sort_unstable();
        (self.sequential.swap(0, Ordering::SeqCst), names)
    }
}

struct CountedLog(Arc<EmbeddedStore>, Arc<Calls>);
struct CountedQueue(Arc<EmbeddedQueue>, Arc<Calls>);

#[async_trait]
impl EventLog for CountedLog {
    async fn record(&self, e: &EventRecord, ttl: u64) -> Result<(), StoreError> {
        self.1.around("record", self.0.record(e, ttl)).await
    }
    async fn accept(&self, e: &EventRecord, ttl: u64) -> Result<Acceptance, StoreError> {
        self.1.around("accept", self.0.accept(e, ttl)).await
    }
    async fn tally(&self, e: &EventRecord, repeat: bool) -> Result<(), StoreError> {
        self.1.around("tally", self.0.tally(e, repeat)).await
    }
    async fn unsent(&self, s: &str, b: i64, l: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.1.around("unsent", self.0.unsent(s, b, l)).await
    }
    async fn set_outcome(&self, k: &str, o: &str, d: Option<&str>) -> Result<(), StoreError> {
        self.1
            .around("set_outcome", self.0.set_outcome(k, o, d))
            .await
    }
    async fn get(&self, k: &str) -> Result<Option<EventRecord>, StoreError> {
        self.1.around("get", self.0.get(k)).await
    }
    async fn for_entity(&self, e: &str, l: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.1.around("for_entity", self.0.for_entity(e, l)).await
    }
    async fn count_attempt(&self, k: &str, ttl: u64) -> Result<u32, StoreError> {
        self.1
            .around("count_attempt", self.0.count_attempt(k, ttl))
            .await
    }
    async fn outcome_counts(&self, l: &str, s: i64) -> Result<Vec<OutcomeCounts>, StoreError> {
        self.1
            .around("outcome_counts", self.0.outcome_counts(l, s))
            .await
    }
}

#[async_trait]
impl EventQueue for CountedQueue {
    async fn send(&self, msg: &QueueMessage) -> Result<(), QueueError> {
        self.1.around("send", self.0.send(msg)).await
    }
    fn has_stage(&self, stage: Stage) -> bool {
        self.0.has_stage(stage)
    }
    async fn defer(&self, s: Stage, r: &str, d: Duration) -> Result<(), QueueError> {
        self.1.around("defer", self.0.defer(s, r, d)).await
    }
    async fn dead_letter(&self, s: Stage, d: &Delivery, r: &str) -> Result<(), QueueError> {
        self.1
            .around("dead_letter", self.0.dead_letter(s, d, r))
            .await
    }
}

#[tokio::test]
async fn a_new_event_takes_two_sequential_calls_and_a_repeat_two() {
    let w = world();
    let calls = Arc::new(Calls::default());
    let mut counted = ingest(&w, Arc::new(CountedQueue(w.queue.clone(), calls.clone())));
    counted.log = Arc::new(CountedLog(w.store.clone(), calls.clone()));

    let first = counted.handle(&post(&body()), "tok").await;
    assert_eq!(first.body_json()["status"], "queued");
    assert_eq!(calls.take(), (2, vec!["accept", "send", "tally"]));

    // A repeat before any consumer took it: found, sent again (dropped by the dedupe id).
    let again = counted.handle(&post(&body()), "tok").await;
    assert_eq!(again.body_json()["status"], "duplicate");
    assert_eq!(calls.take(), (2, vec!["accept", "send", "tally"]));

    // A repeat after a consumer took it: found, only counted.
    assert_eq!(w.consume().await, 1);
    let late = counted.handle(&post(&body()), "tok").await;
    assert_eq!(late.body_json()["status"], "duplicate");
    assert_eq!(calls.take(), (2, vec!["accept", "tally"]));
    assert_eq!(w.crm_writes(), 1);
}
