use anyhow::Context;
use financing_command_handler::{CommandHandler, HandlerConfig, StartError};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    financing_runtime::telemetry::init();
    financing_runtime::metrics::serve("COMMAND_HANDLER_METRICS_ADDR", "127.0.0.1:9181");
    let config = HandlerConfig::from_env().context("invalid configuration")?;
    let shutdown = financing_runtime::shutdown::on_signal();
    match CommandHandler::build(config, shutdown).await {
        Ok(handler) => handler.run_until_stopped().await,
        Err(StartError::ShutDown) => {}
        Err(error) => return Err(error).context("cannot start the command handler"),
    }
    Ok(())
}
