//! Content fingerprints both directions of a field compute alike: what the echo guard records
//! before a write and compares when the value comes back (`crate::sync::echo`).

use serde_json::json;

use crate::enerflo::api_milestone::DateChange;
use crate::enerflo::api_status::normalise_name;
use crate::hashing::content_hash;

/// The fingerprint of a status by its numeric id.
pub fn status_fingerprint(status_id: u64) -> String {
    content_hash(&status_id)
}

/// The fingerprint of a status by name, recorded beside the id's when we push, so a CRM sending
/// the name back is recognised without reading the status list from Enerflo.
pub fn status_name_fingerprint(name: &str) -> String {
    content_hash(&format!("name:{}", normalise_name(name)))
}

/// The fingerprint of a milestone write: `None` (not carried) hashes as `"*"`.
pub fn milestone_fingerprint(start: &DateChange, completed: &DateChange) -> String {
    let slot = |c: &DateChange| match c {
        None => json!("*"),
        Some(d) => json!(d),
    };
    content_hash(&json!({"start_date": slot(start), "completed_date": slot(completed)}))
}
