//! Stage 5.2 consumer: install notes pushed to the CRM.

use enerflo_sync::registry::Stage;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    enerflo_sync::lambda::run_stage_consumer(Stage::Note).await
}
