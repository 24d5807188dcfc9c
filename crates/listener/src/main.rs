use anyhow::Context;
use financing_listener::{Listener, ListenerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    financing_runtime::telemetry::init();
    financing_runtime::metrics::serve("LISTENER_METRICS_ADDR", "127.0.0.1:9180");
    let config = ListenerConfig::from_env().context("invalid configuration")?;
    let shutdown = financing_runtime::shutdown::on_signal();
    let listener = Listener::build(config, shutdown)
        .await
        .context("cannot start the listener")?;
    tracing::info!(addr = %listener.local_addr(), "listener serving Commands");
    listener
        .run_until_stopped()
        .await
        .context("listener failed")
}
