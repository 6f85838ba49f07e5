//! The scheduled reconciliation sweep (EventBridge `ReconcileSchedule`): resumes the `sweep` pass
//! from its cursor, stays within `RECONCILE_ENERFLO_PER_MINUTE`, stops before the deadline and
//! emits the drift it found as CloudWatch Embedded Metric Format lines.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    enerflo_sync::reconcile::lambda::serve().await
}
