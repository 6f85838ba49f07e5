//! `POST /crm/monday/webhooks/{token}` behind API Gateway: Monday.com board webhooks (a status
//! or date column changed, an update posted, a customer item created or edited) written to
//! Enerflo through the canonical routes.

use enerflo_sync::registry::Route;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    enerflo_sync::lambda::run_inbound_route(Route::Monday).await
}
