//! Logging: JSON lines with flat keys (for Logs Insights), level from `RUST_LOG`, else Lambda's
//! `AWS_LAMBDA_LOG_LEVEL` (set from LoggingConfig's ApplicationLogLevel). `template.yaml` sets both
//! from its `LogLevel`; RUST_LOG wins because ApplicationLogLevel never goes above INFO there (the
//! metric lines have no level, which Lambda reads as INFO). Logs carry ids, stages and outcomes,
//! never bodies, names, emails, phones, addresses or secrets.

use tracing_subscriber::EnvFilter;

/// The filter directive: `RUST_LOG` when set, else `AWS_LAMBDA_LOG_LEVEL` lowercased, else info.
pub fn directive(rust_log: Option<String>, lambda_level: Option<String>) -> String {
    rust_log
        .filter(|l| !l.trim().is_empty())
        .or_else(|| lambda_level.map(|l| l.to_ascii_lowercase()))
        .unwrap_or_else(|| "info".into())
}

pub fn init() {
    let level = directive(
        std::env::var("RUST_LOG").ok(),
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok(),
    );
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

#[cfg(test)]
mod tests {
    use super::directive;

    #[test]
    fn rust_log_wins_over_lambdas_level_which_stands_in_when_it_is_unset() {
        // template.yaml, LogLevel warn: RUST_LOG=warn, ApplicationLogLevel INFO.
        assert_eq!(directive(Some("warn".into()), Some("INFO".into())), "warn");
        assert_eq!(directive(None, Some("DEBUG".into())), "debug");
        assert_eq!(directive(Some(" ".into()), Some("ERROR".into())), "error");
        assert_eq!(directive(None, None), "info");
    }
}
