//! The query service: serves gRPC `Queries` (with reflection and health) from the read models,
//! to authenticated callers (a bearer token) as far as they may read. It serves at once and
//! answers UNAVAILABLE while the read-model database cannot be reached; health reports SERVING
//! once the database is there and migrated.

mod service;

use std::net::SocketAddr;
use std::time::Duration;

use financing_api::v1::queries_server::QueriesServer;
use financing_api::{Guard, GuardError, TlsFiles};
use financing_auth::AuthConfig;
use financing_read_model::{MIGRATOR, ReadModel};
use financing_runtime::config::{ConfigError, text, var};
use financing_runtime::postgres::{connect_options, connect_until_ready};
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::service::QueryService;

#[derive(Debug, Clone)]
pub struct QueryServerConfig {
    /// `QUERIES_ADDR`, default `127.0.0.1:8081`.
    pub addr: SocketAddr,
    /// `QUERIES_DATABASE_URL`: the read models.
    pub database_url: String,
    pub auth: AuthConfig,
    /// `QUERIES_TLS_CERT` and `QUERIES_TLS_KEY`; plaintext without.
    pub tls: Option<TlsFiles>,
}

impl QueryServerConfig {
    pub fn from_env() -> Result<QueryServerConfig, ConfigError> {
        Ok(QueryServerConfig {
            addr: var("QUERIES_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            database_url: text(
                "QUERIES_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/queries",
            ),
            auth: AuthConfig::from_env()?,
            tls: TlsFiles::from_env("QUERIES")?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid QUERIES_DATABASE_URL")]
    Database(#[from] sqlx::Error),
    #[error("cannot guard the service")]
    Guard(#[from] GuardError),
}

/// A bound, not yet running query service.
pub struct QueryServer {
    incoming: TcpListener,
    addr: SocketAddr,
    config: QueryServerConfig,
    read_model: ReadModel,
    guard: Guard,
    shutdown: CancellationToken,
}

impl QueryServer {
    pub async fn build(
        config: QueryServerConfig,
        shutdown: CancellationToken,
    ) -> Result<QueryServer, StartError> {
        let bind_error = |source| StartError::Bind {
            addr: config.addr,
            source,
        };
        let incoming = TcpListener::bind(config.addr).await.map_err(bind_error)?;
        let addr = incoming.local_addr().map_err(bind_error)?;
        // Connections are made on demand: a request while the database is away fails alone.
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(connect_options(&config.database_url)?);
        let guard = Guard::new("the query service", addr, &config.auth, config.tls.as_ref())?;
        Ok(QueryServer {
            incoming,
            addr,
            config,
            read_model: ReadModel::new(pool),
            guard,
            shutdown,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until shutdown, then lets requests in flight finish.
    pub async fn run_until_stopped(self) -> Result<(), tonic::transport::Error> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_not_serving::<QueriesServer<QueryService>>()
            .await;
        let (url, shutdown) = (self.config.database_url.clone(), self.shutdown.clone());
        let schema = tokio::spawn(async move {
            let migrated =
                connect_until_ready("the read models", &url, &MIGRATOR, 1, &shutdown).await;
            if migrated.is_some() {
                health.set_serving::<QueriesServer<QueryService>>().await;
            }
        });
        let queries = QueryService::new(self.read_model);
        let served = financing_api::server(health_service, self.guard.tls)?
            .add_service(QueriesServer::with_interceptor(
                queries,
                self.guard.authenticate,
            ))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.incoming),
                self.shutdown.cancelled_owned(),
            )
            .await;
        schema.abort();
        tracing::info!("query service stopped");
        served
    }
}
