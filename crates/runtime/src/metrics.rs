//! Prometheus metrics: each service serves its own on an HTTP port of its own (`GET
//! /metrics` on the address its `*_METRICS_ADDR` variable names), recorded anywhere in the
//! process through the `metrics` facade. Without a recorder installed (in tests, in libraries
//! used elsewhere) recording does nothing.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::config::text;

/// Histogram buckets, in seconds: a millisecond to ten seconds.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The histograms that count things rather than time (names ending in `_messages`), and
/// their buckets: one to 64, a consumer's most at once.
const COUNTS: (&str, &[f64]) = ("_messages", &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]);

/// Serves this process's metrics on the address in the environment variable `variable`
/// (`default` when unset). An address that cannot be served (taken by another instance, say)
/// is logged as an error and the service runs on without metrics: they are for watching it,
/// not for doing its work.
pub fn serve(variable: &str, default: &str) {
    let addr = text(variable, default);
    let parsed: SocketAddr = match addr.parse() {
        Ok(parsed) => parsed,
        Err(error) => {
            tracing::error!(variable, addr, %error, "not an address: running without metrics");
            return;
        }
    };
    let installed = PrometheusBuilder::new()
        .with_http_listener(parsed)
        .set_buckets(SECONDS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(Matcher::Suffix(COUNTS.0.into()), COUNTS.1)
        })
        .and_then(PrometheusBuilder::install);
    match installed {
        Ok(()) => tracing::info!(%addr, "serving Prometheus metrics on /metrics"),
        Err(error) => {
            tracing::error!(%addr, %error, "cannot serve metrics: running without them");
        }
    }
}
