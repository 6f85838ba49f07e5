//! `POST /enerflo/webhooks/{token}` behind API Gateway: acknowledge fast, enqueue per stage.

use std::sync::Arc;

use enerflo_sync::config::WebhookFunctionConfig;
use enerflo_sync::http::Router;
use enerflo_sync::{lambda, runtime, telemetry};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let function = WebhookFunctionConfig::from_env()?;
    let ports = runtime::aws_ports(&function.aws);
    let router = Router {
        webhook: Some(Arc::new(enerflo_sync::http::webhook::WebhookIngest {
            tokens: function.tokens,
            ..runtime::webhook_ingest(&function.settings, &ports)
        })),
        ..Router::default()
    };
    lambda::serve_http(router).await
}
