//! Inbound (CRM -> Enerflo) route handlers, one file per stage; the shared helpers are in
//! [`crate::http::inbound`].

pub mod hubspot;
pub mod hubspot_notes;
pub mod leads;
pub mod milestone;
pub mod monday;
pub mod notes;
pub mod salesforce;
pub mod status;
