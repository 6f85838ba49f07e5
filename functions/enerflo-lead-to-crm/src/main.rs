//! Stage 1.2 consumer: v1/v2 customer events, upserted as CRM contacts.

use enerflo_sync::registry::Stage;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    enerflo_sync::lambda::run_stage_consumer(Stage::Leads).await
}
