//! Notes (object `0-46`): served by the objects routes like every type, with their own rule,
//! checked on every write: `hs_timestamp` is required (it places the note on the timeline).
//! `hs_note_body`'s limit of 65,536 characters is the limit of every text value, checked in
//! `store.rs`. Inline `associations` on create are handled by `associations.rs` (note -> deal is
//! type 214, note -> contact 202).

use std::collections::BTreeMap;

use super::errors::FieldError;

/// The documented limit of `hs_note_body` (and of any text value), in characters.
pub const NOTE_BODY_LIMIT: usize = 65_536;

pub fn check_note(props: &BTreeMap<String, String>, errors: &mut Vec<FieldError>) {
    if !props.contains_key("hs_timestamp") {
        errors.push(FieldError::new(
            "hs_timestamp",
            "REQUIRED_PROPERTY",
            "Property \"hs_timestamp\" is required for notes (epoch milliseconds or an ISO 8601 UTC time)",
        ));
    }
}
