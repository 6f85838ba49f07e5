//! Lambda glue shared by every binary: API Gateway requests to [`HttpRequest`] and back, and the
//! SQS event to [`Consumer`] batches with partial batch failures.
//!
//! Every `main` runs these on a current-thread runtime: Lambda hands a process one invocation at a
//! time, so worker threads would only add their start-up and memory to every cold start.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_http::{Body, RequestExt};
use lambda_runtime::LambdaEvent;

use crate::consumer::{Consumer, Disposition};
use crate::http::{HttpRequest, HttpResponse, Router};
use crate::queue::sqs::delivery_from_lambda;

pub fn from_lambda(req: lambda_http::Request) -> HttpRequest {
    let path = req.raw_http_path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let (parts, body) = req.into_parts();
    let body = match body {
        Body::Empty => bytes::Bytes::new(),
        Body::Text(t) => bytes::Bytes::from(t),
        Body::Binary(b) => bytes::Bytes::from(b),
        _ => bytes::Bytes::new(),
    };
    HttpRequest {
        method: parts.method,
        path,
        query,
        headers: parts.headers,
        body,
    }
}

pub fn to_lambda(resp: HttpResponse) -> lambda_http::Response<Body> {
    let mut out = lambda_http::Response::new(Body::Binary(resp.body.to_vec()));
    *out.status_mut() = resp.status;
    *out.headers_mut() = resp.headers;
    out
}

/// Serves `router` as an API Gateway (HTTP API) Lambda.
pub async fn serve_http(router: Router) -> Result<(), lambda_http::Error> {
    let router = Arc::new(router);
    lambda_http::run(lambda_http::service_fn(move |req: lambda_http::Request| {
        let router = router.clone();
        async move {
            Ok::<_, std::convert::Infallible>(to_lambda(router.handle(from_lambda(req)).await))
        }
    }))
    .await
}

/// One SQS batch: every message that is not done is reported as a batch item failure. The batch
/// must be answered before the invocation's deadline (`context.deadline`): messages there is no
/// time left for are reported too, untried, and calls are bounded by the time left.
pub async fn handle_sqs_batch(
    consumer: &Consumer,
    event: LambdaEvent<SqsEvent>,
) -> SqsBatchResponse {
    let deliveries: Vec<_> = event
        .payload
        .records
        .iter()
        .map(delivery_from_lambda)
        .collect();
    let dispositions = if event.context.deadline == 0 {
        // Lambda always sends a deadline; without one, nothing is bounded.
        tracing::warn!("the invocation names no deadline; processing the batch unbounded");
        consumer.process_batch(&deliveries).await
    } else {
        let deadline = crate::deadline::from_epoch_millis(event.context.deadline);
        consumer.process_batch_until(&deliveries, deadline).await
    };
    let mut response = SqsBatchResponse::default();
    for (delivery, disposition) in deliveries.iter().zip(dispositions) {
        if disposition == Disposition::Retry {
            response.add_failure(delivery.message_id.clone());
        }
    }
    response
}

/// Serves `consumer` as an SQS-triggered Lambda with `ReportBatchItemFailures`.
pub async fn serve_sqs(consumer: Consumer) -> Result<(), lambda_runtime::Error> {
    let consumer = Arc::new(consumer);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<SqsEvent>| {
            let consumer = consumer.clone();
            async move { Ok::<_, lambda_runtime::Error>(handle_sqs_batch(&consumer, event).await) }
        },
    ))
    .await
}

/// The whole `main` of an outbound stage's Lambda: configuration checked for what the stage
/// needs, adapters built once, then the SQS consumer served. Inlined, so that the stage's wiring
/// is picked at compile time and the binary carries that stage's code only.
#[inline(always)]
pub fn run_stage_consumer(
    stage: crate::classify::Stage,
) -> impl std::future::Future<Output = Result<(), lambda_runtime::Error>> {
    serve_stage(stage, crate::runtime::handler_wiring(stage))
}

async fn serve_stage(
    stage: crate::classify::Stage,
    wiring: crate::runtime::HandlerWiring,
) -> Result<(), lambda_runtime::Error> {
    use crate::runtime;

    crate::telemetry::init();
    let function = crate::config::StageFunctionConfig::from_env(stage)?;
    let ports = runtime::aws_ports(&function.aws);
    let (enerflo, crm) = (
        runtime::enerflo_client(&function.enerflo)?,
        runtime::crm_connector(&function.crm, &ports)?,
    );
    serve_sqs(runtime::consumer_with(
        wiring,
        &function.settings,
        &ports,
        enerflo,
        crm,
    ))
    .await
}

/// The whole `main` of an inbound route's Lambda: configuration checked for what a route needs,
/// adapters built once, then the route served behind API Gateway, with the HubSpot workflow and
/// Salesforce routes that translate into it (`Route::served_with`: one handler behind them all).
pub async fn run_inbound_route(route: crate::registry::Route) -> Result<(), lambda_http::Error> {
    use crate::runtime;

    crate::telemetry::init();
    let function = crate::config::InboundFunctionConfig::from_env(route)?;
    let config = &function.settings;
    let ports = runtime::aws_ports(&function.aws);
    let enerflo = runtime::enerflo_client(&function.enerflo)?;
    let mut routes =
        runtime::inbound_routes(route, config, &ports, enerflo, function.monday.as_ref())
            .into_iter();
    let Some((first, handler)) = routes.next() else {
        return Err(format!("no handler for route {route:?}").into());
    };
    let mut router = Router::for_route(
        first,
        handler,
        function.crm_tokens.clone(),
        config.max_body_bytes,
    );
    router.hubspot = runtime::hubspot_routes(config);
    for (other, handler) in routes {
        router.set(other, handler);
    }
    router.calls = Some(ports.call_log(config));
    serve_http(router).await
}

/// The whole `main` of `hubspot-notes-poll`: one poll per scheduled invocation (EventBridge),
/// answering what it did; a failure fails the invocation (logged, and the next run goes on from
/// the stored watermark).
pub async fn run_hubspot_notes_poll() -> Result<(), lambda_runtime::Error> {
    use crate::runtime;

    crate::telemetry::init();
    let function = crate::config::NotesPollConfig::from_env()?;
    let ports = runtime::aws_ports(&function.aws);
    let enerflo = runtime::enerflo_client(&function.enerflo)?;
    let poll = Arc::new(runtime::hubspot_notes_poll(
        &function.settings,
        &ports,
        enerflo,
        runtime::hubspot_api(&function.hubspot.api)?,
    ));
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<serde_json::Value>| {
            let poll = poll.clone();
            async move {
                if event.context.deadline != 0 {
                    let deadline = crate::deadline::from_epoch_millis(event.context.deadline);
                    return crate::deadline::scope(
                        deadline,
                        poll.run_once(crate::timefmt::now_millis()),
                    )
                    .await
                    .map_err(lambda_runtime::Error::from);
                }
                poll.run_once(crate::timefmt::now_millis())
                    .await
                    .map_err(lambda_runtime::Error::from)
            }
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use async_trait::async_trait;
    use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
    use tokio::time::Instant;

    use super::*;
    use crate::classify::Stage;
    use crate::consumer::{Outcome, OutcomeKind, StageHandler};
    use crate::error::SyncError;
    use crate::queue::{Delivery, EventQueue, MessageMeta, QueueError, QueueMessage};
    use crate::retry::RetryPolicy;
    use crate::store::embedded::EmbeddedStore;

    /// Answers every message after `takes`, like an Enerflo answering in 12 s.
    struct Slow {
        takes: Duration,
        started: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl StageHandler for Slow {
        async fn handle(&self, meta: &MessageMeta, _: &str, _: u32) -> Result<Outcome, SyncError> {
            self.started.lock().unwrap().push(meta.dedupe_key.clone());
            tokio::time::sleep(self.takes).await;
            Ok(Outcome::new(OutcomeKind::Delivered, "ok"))
        }
    }

    struct NoQueue;

    #[async_trait]
    impl EventQueue for NoQueue {
        async fn send(&self, _: &QueueMessage) -> Result<(), QueueError> {
            Ok(())
        }
        fn has_stage(&self, _: Stage) -> bool {
            true
        }
        async fn defer(&self, _: Stage, receipt: &str, _: Duration) -> Result<(), QueueError> {
            panic!("nothing here fails, so nothing is deferred ({receipt})")
        }
        async fn dead_letter(&self, _: Stage, d: &Delivery, _: &str) -> Result<(), QueueError> {
            panic!(
                "nothing here fails, so nothing is dead-lettered ({})",
                d.message_id
            )
        }
    }

    fn record(n: usize) -> SqsMessage {
        let meta = MessageMeta {
            stage: Stage::Project,
            event: "deal_updated".into(),
            dedupe_key: format!("evt-{n}"),
            group: format!("deal:{n}"),
            received_at: "2025-01-01T00:00:00Z".into(),
        };
        let mut msg = SqsMessage::default();
        msg.message_id = Some(format!("m-{n}"));
        msg.receipt_handle = Some(format!("r-{n}"));
        msg.body = Some("{}".into());
        msg.attributes
            .insert("ApproximateReceiveCount".into(), "1".into());
        msg.message_attributes = meta
            .to_attributes()
            .into_iter()
            .map(|(k, v)| {
                let mut a = SqsMessageAttribute::default();
                a.string_value = Some(v);
                a.data_type = Some("String".into());
                (k.to_owned(), a)
            })
            .collect::<HashMap<_, _>>();
        msg
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_cannot_finish_before_the_deadline_reports_the_unstarted_messages() {
        // GIVEN a handler that takes 12 s a message, and a batch of 4 with 40 s left (room for 3)
        let handler = Arc::new(Slow {
            takes: Duration::from_secs(12),
            started: Mutex::default(),
        });
        let consumer = Consumer {
            handler: handler.clone(),
            queue: Arc::new(NoQueue),
            log: Arc::new(EmbeddedStore::in_memory().unwrap()),
            retry: RetryPolicy::default(),
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut event = SqsEvent::default();
        event.records = (1..=4).map(record).collect();
        let mut context = lambda_runtime::Context::default();
        context.deadline = now_ms + 40_000;
        let started = Instant::now();

        // WHEN Lambda invokes the consumer
        let response = handle_sqs_batch(&consumer, LambdaEvent::new(event, context)).await;

        // THEN it started the 3 that fit, reported the 4th as a batch item failure, and was done
        // before the deadline
        let failures: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failures, ["m-4"]);
        assert_eq!(
            *handler.started.lock().unwrap(),
            ["evt-1", "evt-2", "evt-3"]
        );
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{:?}",
            started.elapsed()
        );
    }
}
