//! The crate's integration tests, one test binary: the store and queue contracts (embedded and on
//! moto), the two-way install sync with in-process fakes, and the project mapping.

mod install_sync;
mod kit;
mod mapping_project;
mod queue;
mod store;
