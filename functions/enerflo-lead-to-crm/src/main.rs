//! Stage 1.2 consumer: v1/v2 customer events from the FIFO queue, upserted as CRM contacts.

use enerflo_sync::classify::Stage;
use enerflo_sync::config::{Config, Need};
use enerflo_sync::{lambda, runtime, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let config = Config::from_env()?;
    config.require(&[
        Need::Table,
        Need::Queue(Stage::Leads),
        Need::EnerfloApi,
        Need::CrmWebhook,
    ])?;
    let ports = runtime::aws_ports(&config).await?;
    let (enerflo, crm) = (
        runtime::enerflo_client(&config)?,
        runtime::crm_connector(&config)?,
    );
    let consumer = runtime::consumer_for(Stage::Leads, &config, &ports, enerflo, crm)
        .ok_or("no leads consumer")?;
    lambda::serve_sqs(consumer).await
}
