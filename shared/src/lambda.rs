//! Lambda glue shared by every binary: API Gateway requests to [`HttpRequest`] and back, and the
//! SQS event to [`Consumer`] batches with partial batch failures.

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

/// One SQS batch: every message that is not done is reported as a batch item failure.
pub async fn handle_sqs_batch(consumer: &Consumer, event: SqsEvent) -> SqsBatchResponse {
    let deliveries: Vec<_> = event.records.iter().map(delivery_from_lambda).collect();
    let dispositions = consumer.process_batch(&deliveries).await;
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
            async move {
                Ok::<_, lambda_runtime::Error>(handle_sqs_batch(&consumer, event.payload).await)
            }
        },
    ))
    .await
}

/// The whole `main` of an outbound stage's Lambda: configuration checked for what the stage
/// needs, adapters built once, then the SQS consumer served.
pub async fn run_stage_consumer(
    stage: crate::classify::Stage,
) -> Result<(), lambda_runtime::Error> {
    use crate::config::{Config, Need};
    use crate::runtime;

    crate::telemetry::init();
    let config = Config::from_env()?;
    config.require(&[
        Need::Table,
        Need::Queue(stage),
        Need::EnerfloApi,
        Need::CrmWebhook,
    ])?;
    let ports = runtime::aws_ports(&config).await?;
    let (enerflo, crm) = (
        runtime::enerflo_client(&config)?,
        runtime::crm_connector(&config)?,
    );
    let consumer = runtime::consumer_for(stage, &config, &ports, enerflo, crm)
        .ok_or_else(|| format!("this build has no consumer for stage {stage}"))?;
    serve_sqs(consumer).await
}

/// The whole `main` of an inbound route's Lambda: configuration checked for what a route needs,
/// adapters built once, then the one route served behind API Gateway.
pub async fn run_inbound_route(route: crate::registry::Route) -> Result<(), lambda_http::Error> {
    use crate::config::{Config, Need};
    use crate::runtime;

    crate::telemetry::init();
    let config = Config::from_env()?;
    config.require(&[Need::CrmInboundToken, Need::Table, Need::EnerfloApi])?;
    let ports = runtime::aws_ports(&config).await?;
    let enerflo = runtime::enerflo_client(&config)?;
    let handler = runtime::inbound_route(route, &config, &ports, enerflo);
    serve_http(Router::for_route(
        route,
        handler,
        config.crm_inbound_tokens.clone(),
        config.max_body_bytes,
    ))
    .await
}
