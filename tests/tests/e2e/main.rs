//! The end-to-end suite, one test binary: the local runner over HTTP against wiremock Enerflo and
//! CRM servers (the kit in `tests/src/`), one module per stage or concern. nextest runs each test
//! in its own process; `cargo nextest run -p sync-tests -E 'test(/^leads::/)'` runs one module.

mod change_order;
mod console;
mod ddb_calls;
mod faults;
mod hubspot;
mod lambda_path;
mod leads;
mod load;
mod milestone;
mod monday;
mod notes;
mod project;
mod reconcile;
mod salesforce;
mod salesforce_inbound;
mod security;
mod signature_interop;
mod status;
mod webhook_edge;
