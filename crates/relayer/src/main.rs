use anyhow::Context;
use financing_relayer::{Relayer, RelayerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    financing_runtime::telemetry::init();
    financing_runtime::metrics::serve("RELAYER_METRICS_ADDR", "127.0.0.1:9182");
    let config = RelayerConfig::from_env().context("invalid configuration")?;
    let shutdown = financing_runtime::shutdown::on_signal();
    if let Some(relayer) = Relayer::build(config, shutdown)
        .await
        .context("cannot start the relayer")?
    {
        relayer.run_until_stopped().await;
    }
    Ok(())
}
