//! `PUT /crm/installs/{install}/milestones/{milestone}` behind API Gateway: milestone dates written to Enerflo.

use enerflo_sync::config::{Config, Need};
use enerflo_sync::http::Router;
use enerflo_sync::{lambda, runtime, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let config = Config::from_env()?;
    config.require(&[Need::CrmInboundToken, Need::Table, Need::EnerfloApi])?;
    let ports = runtime::aws_ports(&config).await?;
    let enerflo = runtime::enerflo_client(&config)?;
    let router = Router {
        crm_tokens: config.crm_inbound_tokens.clone(),
        max_body_bytes: Some(config.max_body_bytes),
        milestones: Some(runtime::milestone_route(&config, &ports, enerflo)),
        ..Router::default()
    };
    lambda::serve_http(router).await
}
