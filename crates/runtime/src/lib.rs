//! What every Financing service shares: structured logs, typed configuration read from the
//! environment, a shutdown token cancelled by SIGINT or SIGTERM, retry with backoff through
//! outages, and Postgres start-up (create the database, migrate).

pub mod config;
pub mod postgres;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
