//! `POST /crm/leads` behind API Gateway (stage 1.1): a CRM lead created or updated in Enerflo, once per crm_id.

use enerflo_sync::registry::Route;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    enerflo_sync::lambda::run_inbound_route(Route::Leads).await
}
