//! Graceful shutdown: one token, cancelled by the first SIGINT or SIGTERM, and a deadline after
//! which a process that cannot finish cleanly exits anyway.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// How long a process may take to stop once asked.
pub const GRACE: Duration = Duration::from_secs(10);

/// A token cancelled when the process receives SIGINT or SIGTERM. From then on the process has
/// [`GRACE`] to stop: one that is still running then (a final offset commit waiting for a broker
/// that is gone, say) exits with status 1. Whatever it had not committed is delivered again,
/// which changes nothing.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::error!("cannot listen for shutdown signals");
            return;
        };
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
        // A thread of its own: blocked workers cannot keep the deadline from firing.
        std::thread::spawn(|| {
            std::thread::sleep(GRACE);
            tracing::error!(grace = ?GRACE, "did not stop in time; exiting");
            std::process::exit(1);
        });
        cancel.cancel();
    });
    token
}
