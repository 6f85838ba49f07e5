//! `make run`: the whole pipeline in one process. See the README's "Run it locally".

use enerflo_sync::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    enerflo_sync::telemetry::init();
    let config = Config::from_env()?;
    let runner = enerflo_sync_local::start(config).await?;
    runner.print_banner();
    tokio::signal::ctrl_c().await?;
    runner.shutdown().await;
    Ok(())
}
