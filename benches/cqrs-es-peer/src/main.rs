//! The yardstick for the handler's command loop: the same work done with cqrs-es 0.5 and
//! postgres-es, on the same PostgreSQL. Each command offers a new invoice for sale on an
//! aggregate of its own: cqrs-es loads its (empty) stream, the aggregate decides, and the event
//! is inserted in one transaction. No idempotency record and no outbox, which the handler
//! writes on top; `loadgen in-process` measures the handler the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use postgres_es::{PostgresCqrs, postgres_cqrs};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    /// A database of its own: postgres-es's events table is created in it if missing.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Concurrent tasks, each sending one command at a time.
    #[arg(long, default_value_t = 8)]
    tasks: usize,
    /// How long to send commands for.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// postgres-es's schema (its db/init.sql), events only: `postgres_cqrs` takes no snapshots.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS events (
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    sequence bigint CHECK (sequence >= 0) NOT NULL,
    event_type text NOT NULL,
    event_version text NOT NULL,
    payload json NOT NULL,
    metadata json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence))";

enum InvoiceCommand {
    Sell { issuer_id: String, asking_cents: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum InvoiceEvent {
    InvoiceCreated { issuer_id: String, asking_cents: i64 },
}

impl DomainEvent for InvoiceEvent {
    fn event_type(&self) -> String {
        "InvoiceCreated".into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

/// Why an invoice cannot be sold: it is on sale already.
#[derive(Debug)]
struct Rejected(&'static str);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Rejected {}

#[derive(Default, Serialize, Deserialize)]
struct Invoice {
    on_sale: bool,
    asking_cents: i64,
}

impl Aggregate for Invoice {
    const TYPE: &'static str = "Invoice";
    type Command = InvoiceCommand;
    type Event = InvoiceEvent;
    type Error = Rejected;
    type Services = ();

    async fn handle(
        &mut self,
        command: InvoiceCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Rejected> {
        let InvoiceCommand::Sell {
            issuer_id,
            asking_cents,
        } = command;
        if self.on_sale {
            return Err(Rejected("the invoice is on sale already"));
        }
        let created = InvoiceEvent::InvoiceCreated {
            issuer_id,
            asking_cents,
        };
        sink.write(created, self).await;
        Ok(())
    }

    fn apply(&mut self, event: InvoiceEvent) {
        let InvoiceEvent::InvoiceCreated { asking_cents, .. } = event;
        self.on_sale = true;
        self.asking_cents = asking_cents;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let connections = u32::try_from(args.tasks).unwrap_or(u32::MAX).max(1);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect(&args.database_url)
        .await
        .with_context(|| format!("cannot connect to {}", args.database_url))?;
    sqlx::query(SCHEMA).execute(&pool).await?;
    let cqrs: Arc<PostgresCqrs<Invoice>> = Arc::new(postgres_cqrs(pool, vec![], ()));
    let issuer_id = uuid::Uuid::new_v4().to_string();

    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let applied = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..args.tasks)
        .map(|_| {
            let (cqrs, applied, issuer_id) = (cqrs.clone(), applied.clone(), issuer_id.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let id = uuid::Uuid::new_v4().to_string();
                    let sell = InvoiceCommand::Sell {
                        issuer_id: issuer_id.clone(),
                        asking_cents: 10_000,
                    };
                    cqrs.execute(&id, sell)
                        .await
                        .map_err(|error| anyhow::anyhow!("a sale was not applied: {error}"))?;
                    applied.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let applied = applied.load(Ordering::Relaxed);
    println!(
        "cqrs-es 0.5 + postgres-es, {} tasks, {} s: {applied} commands applied, {:.0} commands/s",
        args.tasks,
        args.seconds,
        applied as f64 / elapsed
    );
    Ok(())
}
