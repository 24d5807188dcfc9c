//! Offering work at a fixed rate whatever becomes of it (open loop): task `n` starts `n / rate`
//! seconds after the first, however long the earlier ones take, with at most
//! [`MAX_IN_FLIGHT`] unfinished at once (past that the rate cannot hold, and the lag says so).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Tasks at most unfinished at once.
const MAX_IN_FLIGHT: usize = 4096;

pub struct Offered {
    /// From the first start to the last.
    pub elapsed: Duration,
    /// How late the latest start was.
    pub max_lag: Duration,
}

/// Starts `task(n)` for every `n` below `count`, one every `1 / rate` seconds, then waits until
/// all have finished. The first task to fail ends the offer (the others are dropped) with its
/// error.
pub async fn offer<F, Fut>(rate: u32, count: u64, mut task: F) -> anyhow::Result<Offered>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let interval = interval(rate);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let started = tokio::time::Instant::now();
    let mut max_lag = Duration::ZERO;
    let mut running = tokio::task::JoinSet::new();
    for n in 0..count {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due).await;
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        max_lag = max_lag.max(due.elapsed());
        let started_task = task(n);
        running.spawn(async move {
            let result = started_task.await;
            drop(permit);
            result
        });
        while let Some(done) = running.try_join_next() {
            done??;
        }
    }
    let elapsed = started.elapsed();
    while let Some(done) = running.join_next().await {
        done??;
    }
    Ok(Offered { elapsed, max_lag })
}

/// The time between two starts at `rate` a second.
fn interval(rate: u32) -> Duration {
    Duration::from_secs_f64(1.0 / f64::from(rate.max(1)))
}
