//! Reconciliation: nothing drifts even when a webhook never came. One engine
//! ([`engine::Reconciler`]) pages Enerflo's install and customer lists, compares each install's
//! status and milestone completions and each customer's mapped fields with the last state the
//! stages synced ([`compare`]), and enqueues, for every difference or entity never synced, a
//! synthetic event shaped like the webhook the stage reads, through the webhook's own enqueue
//! path (dedupe key derived from the change, FIFO group of the entity, event log). The stages
//! then do exactly what they do for a webhook, so a change that arrives both by webhook and by
//! sweep is written to the CRM once.
//!
//! Run by `functions/enerflo-reconcile` on a schedule ([`lambda::serve`]), by the local runner on
//! an interval (`RECONCILE_INTERVAL_SECS`), and by `enerflo-sync-ops backfill`.

pub mod budget;
pub mod compare;
pub mod engine;
pub mod lambda;
pub mod page;
pub mod report;
pub mod settings;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use budget::CallBudget;
pub use compare::{Drift, DriftKind, Verdict};
pub use engine::{
    Cursor, DriftSink, Phase, Progress, ProgressFn, Reconciler, RunOptions, parse_since,
};
pub use report::{Example, Report, StageCounts};
pub use settings::{DetailMode, ListSpec, ReconcileSettings, SWEEPABLE, parse_stages};

use crate::config::{Config, ConfigError, EnerfloAccess};
use crate::enerflo::{EnerfloApi, HttpEnerfloClient};
use crate::runtime::Ports;

/// The sweep's own Enerflo client: its limit is `RECONCILE_ENERFLO_PER_MINUTE`, on every HTTP
/// request it sends (retries included), apart from the stage functions' clients.
pub fn enerflo_client(
    enerflo: &EnerfloAccess,
    per_minute: u32,
) -> Result<Arc<dyn EnerfloApi>, ConfigError> {
    let client = HttpEnerfloClient::new(
        &enerflo.base_url,
        enerflo.api_key.clone(),
        enerflo.timeout,
        per_minute as usize,
    )
    .map_err(|e| ConfigError {
        problems: vec![format!("Enerflo HTTP client: {e}")],
    })?;
    Ok(Arc::new(client))
}

impl Reconciler {
    /// Wired from configuration: the ports' state, cross-references and claims, and the webhook's
    /// enqueue path as the sink.
    pub fn from_config(config: &Config, ports: &Ports, enerflo: Arc<dyn EnerfloApi>) -> Self {
        Self::with_sink(
            config,
            ports,
            enerflo,
            Arc::new(crate::runtime::webhook_ingest(config, ports)),
        )
    }

    pub fn with_sink(
        config: &Config,
        ports: &Ports,
        enerflo: Arc<dyn EnerfloApi>,
        sink: Arc<dyn DriftSink>,
    ) -> Self {
        Self {
            enerflo,
            state: ports.state.clone(),
            xref: ports.xref.clone(),
            claims: ports.claims.clone(),
            sink,
            settings: config.reconcile.clone(),
            fields: config.fields.clone(),
            install_id_paths: config.install_id_paths.clone(),
            budget: Arc::new(CallBudget::new(config.reconcile.per_minute)),
        }
    }
}
