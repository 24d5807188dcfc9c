use anyhow::Context;
use financing_queries::{QueryServer, QueryServerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    financing_runtime::telemetry::init();
    financing_runtime::metrics::serve("QUERIES_METRICS_ADDR", "127.0.0.1:9184");
    let config = QueryServerConfig::from_env().context("invalid configuration")?;
    let shutdown = financing_runtime::shutdown::on_signal();
    let server = QueryServer::build(config, shutdown)
        .await
        .context("cannot start the query service")?;
    tracing::info!(addr = %server.local_addr(), "serving Queries");
    server
        .run_until_stopped()
        .await
        .context("query service failed")
}
