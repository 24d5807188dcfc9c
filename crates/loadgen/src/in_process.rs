//! The command loop in-process, without the broker: the handler's executor on the event store
//! (load, decide, append with the idempotency record), driven by concurrent tasks, one command
//! at a time or in batches as the handler takes what its consumer has ready. It measures what
//! the event store and the executor cost per command, the ceiling of the whole pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use financing_command_handler::{Executor, Job, Origin};
use financing_domain::saga::Issued;
use financing_domain::{
    Actor, ClientCommand, Command, CommandId, InvoiceId, IssuerCommand, IssuerId, Money, Role,
};
use financing_event_store::{MIGRATOR, Outcome, PgEventStore, Repository};
use financing_messaging::CommandMessage;
use financing_runtime::postgres::connect_and_migrate;
use uuid::Uuid;

use crate::stats::Samples;

#[derive(Args)]
pub struct InProcessArgs {
    /// The event store to write to: a database of its own, created and migrated if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/financing_bench"
    )]
    database_url: String,
    /// Concurrent tasks, each sending one command at a time.
    #[arg(long, default_value_t = 8)]
    tasks: usize,
    /// How long to send commands for.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Commands each task hands the executor at once (`Executor::execute_all`: one read, one
    /// transaction), as the handler hands it what its consumer has ready (often a single one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    batch: u16,
    /// Each command alone through `Executor::client_command` (read, decide, append), the path
    /// a message takes when its batch could not be written.
    #[arg(long, conflicts_with = "batch")]
    one_at_a_time: bool,
    /// Events between two snapshots, as the handler's `SNAPSHOT_EVERY`.
    #[arg(long, default_value_t = 50)]
    snapshot_every: u64,
}

/// `SellInvoice` commands for one registered issuer, each a new invoice, from `tasks` tasks for
/// `seconds`: commands applied per second and the latency of each.
pub async fn run(args: &InProcessArgs) -> anyhow::Result<()> {
    let connections = u32::try_from(args.tasks).unwrap_or(u32::MAX).max(1);
    let pool = connect_and_migrate(&args.database_url, &MIGRATOR, connections)
        .await
        .with_context(|| format!("cannot use the event store {}", args.database_url))?;
    let repository = Repository::new(PgEventStore::new(pool), args.snapshot_every);
    let executor = Arc::new(Executor::new(repository, 10));

    let issuer_id = IssuerId::new_random();
    let register = Issued {
        id: CommandId::new_random(),
        command: Command::Issuer(
            issuer_id,
            IssuerCommand::Create {
                name: "Bench".into(),
            },
        ),
    };
    let chain = Uuid::new_v4();
    let origin = Origin {
        correlation_id: chain,
        causation_id: chain,
        actor: None,
    };
    executor.execute(&register, origin).await?;

    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let applied = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..args.tasks)
        .map(|_| {
            let (executor, applied) = (executor.clone(), applied.clone());
            let path = if args.one_at_a_time {
                Path::OneAtATime
            } else {
                Path::Batches(usize::from(args.batch))
            };
            tokio::spawn(
                async move { sell_until(&executor, issuer_id, path, until, &applied).await },
            )
        })
        .collect();
    let mut latencies = Samples::default();
    for task in tasks {
        for sample in task.await?? {
            latencies.push(sample);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let applied = applied.load(Ordering::Relaxed);
    let (per, unit) = if args.one_at_a_time {
        ("one at a time".to_owned(), "command")
    } else {
        (format!("in batches of {}", args.batch), "batch")
    };
    println!(
        "in-process executor, {} tasks, {per}, {} s: {applied} commands applied, {:.0} commands/s",
        args.tasks,
        args.seconds,
        applied as f64 / elapsed
    );
    println!("  per {unit}  {}", latencies.summary());
    Ok(())
}

/// How a task hands its commands to the executor.
#[derive(Debug, Clone, Copy)]
enum Path {
    OneAtATime,
    Batches(usize),
}

async fn sell_until(
    executor: &Executor<PgEventStore>,
    issuer_id: IssuerId,
    path: Path,
    until: Instant,
    applied: &AtomicUsize,
) -> anyhow::Result<Vec<Duration>> {
    let sale = || {
        let command_id = CommandId::new_random();
        CommandMessage {
            command_id,
            correlation_id: command_id.as_uuid(),
            command: ClientCommand::SellInvoice {
                invoice_id: InvoiceId::for_sale(command_id),
                issuer_id,
                asking_price: Money::units(100),
            },
            actor: Some(Actor::new(issuer_id, Role::Issuer)),
        }
    };
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let sent = Instant::now();
        let outcomes = match path {
            Path::OneAtATime => vec![executor.client_command(sale()).await?],
            Path::Batches(size) => {
                let jobs = (0..size).map(|_| Job::Client(sale())).collect();
                executor.execute_all(jobs).await?
            }
        };
        latencies.push(sent.elapsed());
        if let Some(outcome) = outcomes.iter().find(|o| **o != Outcome::Applied) {
            bail!("a SellInvoice was not applied: {outcome:?}");
        }
        applied.fetch_add(outcomes.len(), Ordering::Relaxed);
    }
    Ok(latencies)
}
