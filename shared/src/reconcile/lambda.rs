//! `enerflo-reconcile`: the scheduled sweep as a Lambda (EventBridge, `ReconcileSchedule`). Each
//! invocation first re-sends the events the webhook accepted that no consumer took
//! (`WebhookIngest::resend_unsent`), then resumes the `sweep` pass from its cursor, stops [`super::engine::STOP_MARGIN`]
//! before the invocation's deadline, and prints what it found as CloudWatch Embedded Metric
//! Format lines (namespace `EnerfloSync/Reconcile`). Its answer is the run's report.

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::LambdaEvent;
use serde_json::Value;

use super::engine::{Reconciler, RunOptions};
use crate::config::ReconcileFunctionConfig;
use crate::http::webhook::{RESEND_AFTER, RESEND_BATCH};
use crate::timefmt::now_millis;

pub const FUNCTION: &str = "enerflo-reconcile";

/// One scheduled run of `reconciler` within `deadline_ms` (epoch millis; 0: none).
pub async fn invoke(reconciler: &Reconciler, deadline_ms: u64) -> super::Report {
    let mut opts = RunOptions::new("sweep", &reconciler.settings.stages);
    if deadline_ms == 0 {
        opts.lease = Some(Duration::from_secs(900));
        reconciler.run(&opts).await
    } else {
        let deadline = crate::deadline::from_epoch_millis(deadline_ms);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        // Held past the deadline by a minute: a run killed at its timeout blocks the next for
        // that minute only.
        opts.lease = Some(left + Duration::from_secs(60));
        crate::deadline::scope(deadline, reconciler.run(&opts)).await
    }
}

/// The whole `main` of the function.
pub async fn serve() -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    let function = ReconcileFunctionConfig::from_env()?;
    let config = &function.settings;
    let ports = crate::runtime::aws_ports(&function.aws);
    let enerflo = super::enerflo_client(&function.enerflo, config.reconcile.per_minute)?;
    let reconciler = Arc::new(Reconciler::from_config(config, &ports, enerflo));
    let ingest = Arc::new(crate::runtime::webhook_ingest(config, &ports));
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<Value>| {
            let (reconciler, ingest) = (reconciler.clone(), ingest.clone());
            async move {
                // First the ingest path's sweep: events accepted that no consumer took (their
                // delivery stopped before its send, or the send failed, and none repeated).
                let resent = ingest.resend_unsent(RESEND_AFTER, RESEND_BATCH).await;
                tracing::info!(
                    resent = resent.resent,
                    failed = resent.failed,
                    "unsent events swept"
                );
                let report = invoke(&reconciler, event.context.deadline).await;
                for line in report.emf_lines(FUNCTION, now_millis()) {
                    // stdout, unformatted: CloudWatch reads EMF from the raw log line.
                    println!("{line}");
                }
                Ok::<Value, lambda_runtime::Error>(serde_json::to_value(&report)?)
            }
        },
    ))
    .await
}
