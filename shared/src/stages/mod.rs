//! Per-stage handlers: one typed message in, an [`Outcome`](crate::consumer::Outcome) or a
//! classified error out.

pub mod change_order;
pub mod leads;
pub mod lock;
pub mod milestone;
pub mod note;
pub mod project;
pub mod status;

pub use project::ProjectStage;
