//! Per-stage handlers: one typed message in, an [`Outcome`](crate::consumer::Outcome) or a
//! classified error out.

pub mod lock;
pub mod project;

pub use project::ProjectStage;
