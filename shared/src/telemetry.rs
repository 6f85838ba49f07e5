//! Logging: JSON lines with flat keys (for Logs Insights), level from `RUST_LOG`, else Lambda's
//! `AWS_LAMBDA_LOG_LEVEL` (set from LoggingConfig's ApplicationLogLevel). `template.yaml` sets both
//! from its `LogLevel`; RUST_LOG wins because ApplicationLogLevel never goes above INFO there (the
//! metric lines have no level, which Lambda reads as INFO). Logs carry ids, stages and outcomes,
//! never bodies, names, emails, phones, addresses or secrets.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

/// The filter directive: `RUST_LOG` when set, else `AWS_LAMBDA_LOG_LEVEL` lowercased, else info.
pub fn directive(rust_log: Option<String>, lambda_level: Option<String>) -> String {
    rust_log
        .filter(|l| !l.trim().is_empty())
        .or_else(|| lambda_level.map(|l| l.to_ascii_lowercase()))
        .unwrap_or_else(|| "info".into())
}

/// `RUST_LOG` is a level (`info`) or comma-separated `target=level` directives with an optional
/// default (`info,enerflo_sync=debug`): `Targets` reads both without a regex engine, which
/// `EnvFilter` would link into every function (README "Cold starts"); anything else is `info`.
pub fn init() {
    let level = directive(
        std::env::var("RUST_LOG").ok(),
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok(),
    );
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_target(false)
                .with_ansi(false)
                .without_time(),
        )
        .with(filter(&level))
        .try_init();
}

fn filter(directives: &str) -> Targets {
    directives
        .parse::<Targets>()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_wins_over_lambdas_level_which_stands_in_when_it_is_unset() {
        // template.yaml, LogLevel warn: RUST_LOG=warn, ApplicationLogLevel INFO.
        assert_eq!(directive(Some("warn".into()), Some("INFO".into())), "warn");
        assert_eq!(directive(None, Some("DEBUG".into())), "debug");
        assert_eq!(directive(Some(" ".into()), Some("ERROR".into())), "error");
        assert_eq!(directive(None, None), "info");
    }

    #[test]
    fn rust_log_takes_a_level_or_target_directives_and_falls_back_to_info() {
        use tracing::Level;
        let plain = filter("debug");
        assert!(plain.would_enable("enerflo_sync", &Level::DEBUG));
        assert!(!plain.would_enable("enerflo_sync", &Level::TRACE));
        let mixed = filter("info,enerflo_sync=debug");
        assert!(mixed.would_enable("enerflo_sync::consumer", &Level::DEBUG));
        assert!(!mixed.would_enable("hyper", &Level::DEBUG));
        assert!(mixed.would_enable("hyper", &Level::INFO));
        let bad = filter("info,enerflo_sync=loud");
        assert!(bad.would_enable("enerflo_sync", &Level::INFO));
        assert!(!bad.would_enable("enerflo_sync", &Level::DEBUG));
    }
}
