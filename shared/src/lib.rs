//! Enerflo <-> CRM sync: everything the Lambda binaries and the local runner share.
//!
//! The binaries in `functions/` are thin: they load [`config::Config`], build the adapters once and
//! call a handler from [`stages`] or [`http`]. Handlers only see the ports in [`store`], [`queue`],
//! [`enerflo::EnerfloApi`] and [`crm::CrmConnector`], never an AWS SDK type.

pub mod canonical;
pub mod classify;
pub mod config;
pub mod consumer;
pub mod crm;
pub mod deadline;
pub mod embedded_db;
pub mod enerflo;
pub mod error;
pub mod hashing;
pub mod http;
pub mod ids;
pub mod inbound;
pub mod lambda;
pub mod mapping;
pub mod metrics;
pub mod ops;
pub mod pipeline;
pub mod queue;
pub mod reconcile;
pub mod registry;
pub mod retry;
pub mod runtime;
pub mod secret;
pub mod stages;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod timefmt;
pub mod wire;
