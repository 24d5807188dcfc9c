//! The command listener: serves gRPC `Commands` (with reflection and health), authenticates
//! each request (a bearer token), checks its form and that the party acts for itself, queues it
//! on `financing.commands` keyed by the aggregate it changes, with who asked, and answers once
//! the broker has acknowledged it (UNAVAILABLE otherwise, never a false OK).

mod service;

use std::net::SocketAddr;

use financing_api::v1::commands_server::CommandsServer;
use financing_api::{Guard, GuardError, TlsFiles};
use financing_auth::AuthConfig;
use financing_messaging::{KafkaConfig, Publisher};
use financing_runtime::config::{ConfigError, var};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;

use crate::service::CommandService;

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// `LISTENER_ADDR`, default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    pub kafka: KafkaConfig,
    pub auth: AuthConfig,
    /// `LISTENER_TLS_CERT` and `LISTENER_TLS_KEY`; plaintext without.
    pub tls: Option<TlsFiles>,
}

impl ListenerConfig {
    pub fn from_env() -> Result<ListenerConfig, ConfigError> {
        Ok(ListenerConfig {
            addr: var("LISTENER_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            kafka: KafkaConfig::from_env()?,
            auth: AuthConfig::from_env()?,
            tls: TlsFiles::from_env("LISTENER")?,
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
    #[error("cannot create the Kafka producer")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot guard the service")]
    Guard(#[from] GuardError),
}

/// A bound, not yet running listener.
pub struct Listener {
    incoming: TcpListener,
    addr: SocketAddr,
    config: ListenerConfig,
    publisher: Publisher,
    guard: Guard,
    shutdown: CancellationToken,
}

impl Listener {
    pub async fn build(
        config: ListenerConfig,
        shutdown: CancellationToken,
    ) -> Result<Listener, StartError> {
        let incoming = TcpListener::bind(config.addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.addr,
                source,
            })?;
        let addr = incoming.local_addr().map_err(|source| StartError::Bind {
            addr: config.addr,
            source,
        })?;
        let publisher = Publisher::new(&config.kafka)?;
        let guard = Guard::new("the listener", addr, &config.auth, config.tls.as_ref())?;
        Ok(Listener {
            incoming,
            addr,
            config,
            publisher,
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
            .set_not_serving::<CommandsServer<CommandService>>()
            .await;
        let topics = self.ensure_topics_then_serve(health);
        let commands = CommandService::new(self.publisher, self.config.kafka.topics().commands);
        let served = financing_api::server(health_service, self.guard.tls)?
            .add_service(CommandsServer::with_interceptor(
                commands,
                self.guard.authenticate,
            ))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.incoming),
                self.shutdown.cancelled_owned(),
            )
            .await;
        topics.abort();
        tracing::info!("listener stopped");
        served
    }

    /// Creates the topics (retrying while the broker is away), then reports SERVING.
    fn ensure_topics_then_serve(&self, health: HealthReporter) -> JoinHandle<()> {
        let kafka = self.config.kafka.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let created = financing_runtime::retry::until_ok("creating topics", &shutdown, || {
                kafka.ensure_topics()
            })
            .await;
            if created.is_some() {
                health.set_serving::<CommandsServer<CommandService>>().await;
            }
        })
    }
}
