//! `POST /enerflo/webhooks/{token}` behind API Gateway: acknowledge fast, enqueue per stage.

use std::sync::Arc;

use enerflo_sync::config::{Config, Need};
use enerflo_sync::http::Router;
use enerflo_sync::{lambda, runtime, telemetry};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let config = Config::from_env()?;
    config.require(&[Need::WebhookToken, Need::Table])?;
    let ports = runtime::aws_ports(&config).await?;
    let router = Router {
        webhook: Some(Arc::new(runtime::webhook_ingest(&config, &ports))),
        ..Router::default()
    };
    lambda::serve_http(router).await
}
