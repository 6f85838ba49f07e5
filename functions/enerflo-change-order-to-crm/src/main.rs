//! Stage 6 consumer: signed change orders pushed to the CRM.

use enerflo_sync::registry::Stage;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    enerflo_sync::lambda::run_stage_consumer(Stage::ChangeOrder).await
}
