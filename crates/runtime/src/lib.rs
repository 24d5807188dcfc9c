//! What every Financing service shares: structured logs, Prometheus metrics, typed configuration read from the
//! environment, a shutdown token cancelled by SIGINT or SIGTERM, retry with backoff through
//! outages, and Postgres start-up (create the database, migrate).

pub mod config;
pub mod metrics;
pub mod postgres;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
