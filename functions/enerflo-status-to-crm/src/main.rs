//! Stage 4.2 consumer: `update_install` / `restore_install` events from the FIFO queue; status changes pushed to the CRM.

use enerflo_sync::classify::Stage;
use enerflo_sync::config::{Config, Need};
use enerflo_sync::{lambda, runtime, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let config = Config::from_env()?;
    config.require(&[
        Need::Table,
        Need::Queue(Stage::Status),
        Need::EnerfloApi,
        Need::CrmWebhook,
    ])?;
    let ports = runtime::aws_ports(&config).await?;
    let (enerflo, crm) = (
        runtime::enerflo_client(&config)?,
        runtime::crm_connector(&config)?,
    );
    let consumer = runtime::consumer_for(Stage::Status, &config, &ports, enerflo, crm)
        .ok_or("no status consumer")?;
    lambda::serve_sqs(consumer).await
}
