//! Stage 3.2 consumer: `project_milestone_updated` events from the FIFO queue; new completion dates pushed to the CRM.

use enerflo_sync::classify::Stage;
use enerflo_sync::config::{Config, Need};
use enerflo_sync::{lambda, runtime, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let config = Config::from_env()?;
    config.require(&[
        Need::Table,
        Need::Queue(Stage::Milestone),
        Need::EnerfloApi,
        Need::CrmWebhook,
    ])?;
    let ports = runtime::aws_ports(&config).await?;
    let (enerflo, crm) = (
        runtime::enerflo_client(&config)?,
        runtime::crm_connector(&config)?,
    );
    let consumer = runtime::consumer_for(Stage::Milestone, &config, &ports, enerflo, crm)
        .ok_or("no milestone consumer")?;
    lambda::serve_sqs(consumer).await
}
