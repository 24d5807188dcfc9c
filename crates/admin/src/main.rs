//! `financing`: the operator's command line. It talks to the same databases and broker as the
//! services (`DATABASE_URL`, `QUERIES_DATABASE_URL`, `KAFKA_*`), to see inside the system and
//! repair it without SQL: one aggregate side by side in the event store and the read models,
//! what is pending anywhere, a rebuild of the read models while the system runs, the dead
//! letters on `financing.dlq` (listed, shown, sent back to their topic once their cause is
//! fixed) and the messages the command handler parked. It also mints tokens for people and
//! scripts with the local signing key, and makes that key.

mod dead_letters;
mod inspect;
mod parked;
mod rebuild;
mod status;
mod stores;
mod tokens;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use financing_auth::Role;
use financing_messaging::KafkaConfig;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    about = "Operate Financing: inspect, status, rebuild, dead letters, parked messages, tokens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// An aggregate's events (published or not), its latest snapshot and its read-model row,
    /// and whether they agree.
    Inspect {
        /// The id of an issuer, investor or invoice.
        id: Uuid,
    },
    /// What is pending: unpublished events and their age, consumer lag per group, commands
    /// pending, dead letters, parked messages, views stuck at a gap.
    Status,
    /// Rebuilds the read models from the event store while the system runs, then hands over to
    /// the live projector.
    Rebuild {
        /// Aggregates replayed at the same time, each on a database connection of its own
        /// (fewer leave more of the machine to the running system).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
        parallel: u32,
        /// Hand over even where a live view is further than the event store allows: that view
        /// goes back to what the event store says.
        #[arg(long)]
        force: bool,
    },
    /// The messages no consumer could handle, on the dead-letter topic.
    #[command(subcommand)]
    DeadLetters(dead_letters::Command),
    /// The messages the command handler owes an effect but cannot handle yet; it tries them
    /// again by itself.
    #[command(subcommand)]
    Parked(parked::Command),
    /// A bearer token for a party, signed with the key in FINANCING_SIGNING_KEY: send it as
    /// `authorization: Bearer <token>`.
    Token {
        /// issuer, investor or operator.
        #[arg(long)]
        role: Role,
        /// The party's id (an operator's is any id that names the person).
        #[arg(long)]
        subject: Uuid,
        /// How long it is valid: 30m, 12h, 7d...
        #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Makes the key pair that signs tokens in DIR (`signing-key.pem`, `public-key.pem`),
    /// unless it is there already.
    Keys { dir: PathBuf },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let kafka = || KafkaConfig::from_env().context("invalid configuration");
    match cli.command {
        Command::Inspect { id } => {
            let (store, read_model) = (stores::event_store().await?, stores::read_models().await?);
            inspect::run(id, store, &read_model).await
        }
        Command::Status => {
            let (store, read_model) = (stores::event_store().await?, stores::read_models().await?);
            status::run(&store, &read_model, &kafka()?).await
        }
        Command::Rebuild { parallel, force } => {
            let (store, live) = (stores::event_store().await?, stores::read_models().await?);
            rebuild::run(&store, &live, &stores::read_models_url(), parallel, force).await
        }
        Command::DeadLetters(command) => dead_letters::run(command, &kafka()?).await,
        Command::Parked(command) => parked::run(command).await,
        Command::Token { role, subject, ttl } => tokens::mint(role, subject, ttl),
        Command::Keys { dir } => tokens::keys(&dir),
    }
}
