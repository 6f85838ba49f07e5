//! `POST /crm/installs/{install}/notes` behind API Gateway (stage 5.1): a CRM note created in Enerflo, once per crm_note_id.

use enerflo_sync::registry::Route;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    enerflo_sync::lambda::run_inbound_route(Route::Note).await
}
