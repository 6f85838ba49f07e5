//! Stage 2 consumer: project submissions, hydrated and pushed to the CRM.

use enerflo_sync::registry::Stage;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    enerflo_sync::lambda::run_stage_consumer(Stage::Project).await
}
