//! The webhook ingest path's AWS calls, counted on the wire (an SDK interceptor on the DynamoDB
//! and SQS clients, against moto): at most two one after the other, for a new event and for a
//! repeat; and the sweep re-sends, over the real index, what a stopped delivery left unsent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use enerflo_sync::classify::{DEFAULT_INSTALL_ID_PATHS, Stage};
use enerflo_sync::http::HttpRequest;
use enerflo_sync::http::webhook::WebhookIngest;
use enerflo_sync::queue::sqs::{SqsEventQueue, create_queues};
use enerflo_sync::queue::{Delivery, EventQueue, QueueError, QueueMessage};
use enerflo_sync::secret::SecretSet;
use enerflo_sync::store::EventLog;
use enerflo_sync::store::dynamo::{DynamoStore, create_table};
use http::{HeaderMap, Method};

use crate::kit::{PROJECT_SUBMITTED, moto_sdk, unique_name};

/// Every AWS call, and how many ran one after the other: a call starting while another is in
/// flight runs beside it.
#[derive(Debug, Default)]
struct Wire {
    in_flight: AtomicUsize,
    sequential: AtomicUsize,
    calls: Mutex<Vec<String>>,
}

#[derive(Clone, Debug, Default)]
struct Counter(Arc<Wire>);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "call-counter"
    }

    fn read_before_execution(
        &self,
        _: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let _ = cfg;
        if self.0.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.0.sequential.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// The operation, as the wire names it (`X-Amz-Target: DynamoDB_20120810.PutItem`,
    /// `AmazonSQS.SendMessage`).
    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context.request().headers().get("x-amz-target");
        let op = target
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("unknown")
            .to_owned();
        self.0.calls.lock().expect("lock").push(op);
        Ok(())
    }

    fn read_after_execution(
        &self,
        _: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

impl Counter {
    /// (calls one after the other, every call sorted by name) since the last take.
    fn take(&self) -> (usize, Vec<String>) {
        let mut calls = std::mem::take(&mut *self.0.calls.lock().expect("lock"));
        calls.sort_unstable();
        (self.0.sequential.swap(0, Ordering::SeqCst), calls)
    }
}

struct Aws {
    counter: Counter,
    log: Arc<DynamoStore>,
    queue: Arc<SqsEventQueue>,
}

async fn aws(test: &str) -> Option<Aws> {
    let sdk = moto_sdk(test).await?;
    let name = unique_name(test);
    create_table(&aws_sdk_dynamodb::Client::new(&sdk), &name)
        .await
        .expect("table");
    let queues = create_queues(&aws_sdk_sqs::Client::new(&sdk), &name)
        .await
        .expect("queues");
    let counter = Counter::default();
    let dynamo = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build(),
    );
    Some(Aws {
        counter,
        log: Arc::new(DynamoStore::new(dynamo, name)),
        queue: Arc::new(SqsEventQueue::new(
            sqs,
            BTreeMap::from([(Stage::Project, queues)]),
        )),
    })
}

fn ingest(log: Arc<DynamoStore>, queue: Arc<dyn EventQueue>) -> WebhookIngest {
    WebhookIngest {
        tokens: SecretSet::parse("tok"),
        max_body_bytes: 1 << 20,
        install_id_paths: DEFAULT_INSTALL_ID_PATHS
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        queue,
        log,
        dedupe_ttl: Duration::from_secs(3600),
        log_ttl: Duration::from_secs(3600),
    }
}

fn post() -> HttpRequest {
    HttpRequest {
        method: Method::POST,
        path: "/enerflo/webhooks/tok".into(),
        query: None,
        headers: HeaderMap::new(),
        body: Bytes::from_static(PROJECT_SUBMITTED.as_bytes()),
    }
}

fn names(calls: &[&str]) -> Vec<String> {
    calls.iter().map(|c| (*c).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_makes_two_sequential_aws_calls_for_a_new_event_and_for_a_repeat() {
    let Some(aws) = aws("ingest_two_sequential_calls").await else {
        return;
    };
    let ingest = ingest(aws.log.clone(), aws.queue.clone());

    let first = ingest.handle(&post(), "tok").await;
    assert_eq!(
        first.body_json()["status"],
        "queued",
        "{:?}",
        first.body_json()
    );
    assert_eq!(
        aws.counter.take(),
        (2, names(&["PutItem", "SendMessage", "UpdateItem"])),
        "the conditional put, then the send beside the counts"
    );

    let again = ingest.handle(&post(), "tok").await;
    assert_eq!(again.body_json()["status"], "duplicate");
    assert_eq!(
        aws.counter.take(),
        (2, names(&["PutItem", "SendMessage", "UpdateItem"])),
        "found unsent: re-sent beside the delivery count"
    );
    let on_queue = aws
        .queue
        .receive(Stage::Project, 10, 0, 30)
        .await
        .expect("receive");
    assert_eq!(on_queue.len(), 1, "the re-send has the same dedupe id");
    aws.counter.take();

    // Once a consumer recorded an outcome, a repeat is only counted.
    let key = first.body_json()["dedupe_key"]
        .as_str()
        .expect("key")
        .to_owned();
    aws.log
        .set_outcome(&key, "delivered", None)
        .await
        .expect("outcome");
    aws.counter.take();
    let late = ingest.handle(&post(), "tok").await;
    assert_eq!(late.body_json()["status"], "duplicate");
    assert_eq!(aws.counter.take(), (2, names(&["PutItem", "UpdateItem"])));
}

/// A queue whose send stops the process.
struct DiesOnSend;

#[async_trait]
impl EventQueue for DiesOnSend {
    async fn send(&self, _: &QueueMessage) -> Result<(), QueueError> {
        panic!("the process stops before its send");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_and_sqs_the_sweep_sends_what_a_delivery_stopped_before_its_send_left() {
    let Some(aws) = aws("ingest_sweep_resends").await else {
        return;
    };
    let dying = Arc::new(ingest(aws.log.clone(), Arc::new(DiesOnSend)));
    let task = tokio::spawn(async move { dying.handle(&post(), "tok").await });
    assert!(task.await.expect_err("stopped").is_panic());

    let live = ingest(aws.log.clone(), aws.queue.clone());
    let swept = live.resend_unsent(Duration::ZERO, 10).await;
    assert_eq!((swept.resent, swept.failed), (1, 0));
    let on_queue = aws
        .queue
        .receive(Stage::Project, 10, 0, 30)
        .await
        .expect("receive");
    assert_eq!(on_queue.len(), 1);
    let meta = on_queue[0].meta.as_ref().expect("meta");
    assert!(meta.is_resend(), "{meta:?}");
    assert_eq!(on_queue[0].body, PROJECT_SUBMITTED);
    // Noted, and waiting again: a second sweep right away sends nothing.
    assert_eq!(
        live.resend_unsent(Duration::from_secs(60), 10).await.resent,
        0
    );
}
