//! The operator logic behind `enerflo-sync-ops` lives in the shared crate
//! ([`enerflo_sync::ops`]), where the operator console uses it too; re-exported here under the
//! names the CLI and its tests have always used. [`hubspot::setup`] readies a HubSpot portal for
//! `CRM_CONNECTOR=hubspot`; [`salesforce::setup`] checks a Salesforce org for
//! `CRM_CONNECTOR=salesforce`; [`doctor::doctor`] checks a deployment's Enerflo key and CRM
//! connector and prints what to subscribe.

pub mod doctor;
pub mod hubspot;
pub mod monday;
pub mod salesforce;

pub mod backfill;

pub use enerflo_sync::ops::*;
