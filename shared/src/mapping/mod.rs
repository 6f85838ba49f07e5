//! Mapping from Enerflo payloads (plus hydrated records) to canonical records.

pub mod project;
