//! `PUT /crm/installs/{install}/status` behind API Gateway (stage 4.1): an install status written to Enerflo.

use enerflo_sync::registry::Route;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    enerflo_sync::lambda::run_inbound_route(Route::Status).await
}
