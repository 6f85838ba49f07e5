//! `PUT /crm/installs/{install}/milestones/{milestone}` behind API Gateway (stage 3.1): milestone dates written to Enerflo.

use enerflo_sync::registry::Route;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    enerflo_sync::lambda::run_inbound_route(Route::Milestone).await
}
