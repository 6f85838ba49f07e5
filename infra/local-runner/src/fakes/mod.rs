//! Local stand-ins for the CRMs the native connectors write to, faithful to their documented
//! wire contracts, for contract tests of the connectors and for `make run` without credentials.

pub mod faults;
pub mod hubspot;
pub mod monday;
pub mod salesforce;
