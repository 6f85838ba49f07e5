//! Logging: JSON lines with flat keys (for Logs Insights), level from `RUST_LOG` (Lambda's
//! `AWS_LAMBDA_LOG_LEVEL` wins when set). Logs carry ids, stages and outcomes, never bodies,
//! names, emails, phones, addresses or secrets.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .map(|l| l.to_ascii_lowercase())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .try_init();
}
