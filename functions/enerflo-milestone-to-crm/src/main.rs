//! Stage 3.2 consumer: milestone completions pushed to the CRM.

use enerflo_sync::registry::Stage;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    enerflo_sync::lambda::run_stage_consumer(Stage::Milestone).await
}
