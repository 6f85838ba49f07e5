//! Scheduled (EventBridge, `HubSpotNotesPollSchedule`): notes written in HubSpot on synced deals
//! are written to Enerflo (HubSpot sends no webhook for notes; see
//! `enerflo_sync::inbound::hubspot_notes`).

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    enerflo_sync::lambda::run_hubspot_notes_poll().await
}
