use anyhow::Context;
use financing_projector::{Projector, ProjectorConfig, StartError};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    financing_runtime::telemetry::init();
    financing_runtime::metrics::serve("PROJECTOR_METRICS_ADDR", "127.0.0.1:9183");
    let config = ProjectorConfig::from_env().context("invalid configuration")?;
    let shutdown = financing_runtime::shutdown::on_signal();
    match Projector::build(config, shutdown).await {
        Ok(projector) => projector.run_until_stopped().await,
        Err(StartError::ShutDown) => {}
        Err(error) => return Err(error).context("cannot start the projector"),
    }
    Ok(())
}
