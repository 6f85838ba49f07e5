//! The crate's integration tests, one test binary: the store and queue contracts (embedded and on
//! moto), the two-way install sync with in-process fakes, the project mapping, and the shared
//! transport (TLS verification, the AWS SDK's HTTP client).

mod ingest_calls;
mod install_sync;
mod kit;
mod mapping_project;
mod queue;
mod store;
mod transport;
