//! `make run`: the whole pipeline in one process. See the README's "Run it locally".

use enerflo_sync::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    enerflo_sync::telemetry::init();
    // Before the banner: a signal that comes once the runner is listening stops it gracefully.
    let mut stop = StopSignals::install()?;
    let config = Config::from_env()?;
    let runner = enerflo_sync_local::start(config).await?;
    runner.print_banner();
    let signal = stop.wait().await;
    tracing::info!(signal, "shutting down");
    runner.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM (what `kill`, supervisors and container runtimes send): both stop
/// the runner the same graceful way.
#[cfg(unix)]
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the first of them and names it.
    async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

#[cfg(not(unix))]
struct StopSignals;

#[cfg(not(unix))]
impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self)
    }

    async fn wait(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
