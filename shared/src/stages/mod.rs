//! The outbound stages, one `OutboundStage` (`crate::pipeline`) each: what is particular to a
//! stage (reading its event, naming its entity, deciding what to push). Everything they share is
//! in `crate::pipeline` and `crate::sync`; no stage imports another's helpers.

pub mod change_order;
pub mod leads;
pub mod milestone;
pub mod note;
pub mod project;
pub mod status;

pub use project::ProjectStage;
