//! Mapping from Enerflo payloads (plus hydrated records) to canonical records.

pub mod change_order;
pub mod lead;
pub mod project;
