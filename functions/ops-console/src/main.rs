//! `GET /ops`, `ANY /ops/{proxy+}` behind API Gateway: the operator console (infra/console) over
//! the table's event log, cross-references and sync state and the stage DLQs. Its role may only
//! read the table (GetItem, Query on gsi1), receive / release / delete dead letters and send
//! replays to the stage queues (template.yaml, OpsConsoleRole).

use std::sync::Arc;

use enerflo_sync::config::OpsConsoleConfig;
use enerflo_sync::{lambda, ops, telemetry};
use enerflo_sync_console::{Console, Scheme};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let config = OpsConsoleConfig::from_env()?;
    let backend = ops::Backend::aws(&config.table)
        .await
        .map_err(|e| -> lambda_http::Error { e.into() })?;
    let console = Arc::new(Console::new(backend, config.ops_tokens, Scheme::Https));
    lambda_http::run(lambda_http::service_fn(move |req: lambda_http::Request| {
        let console = console.clone();
        async move {
            Ok::<_, std::convert::Infallible>(lambda::to_lambda(
                console.handle(lambda::from_lambda(req)).await,
            ))
        }
    }))
    .await
}
