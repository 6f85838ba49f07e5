//! Everything about Enerflo: webhook envelopes, typed event models, the install object and the
//! REST client.

pub mod api_leads;
pub mod api_milestone;
pub mod api_notes;
pub mod api_status;
pub mod client;
pub mod envelope;
pub mod install;
pub mod install_note;
pub mod lenient;
pub mod project;

pub use client::{EnerfloApi, EnerfloError, HttpEnerfloClient};
pub use envelope::{Envelope, EnvelopeError, Generation};
