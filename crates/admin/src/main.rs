//! `financing`: the operator's command line. It talks to the same event store and broker as the
//! services (`DATABASE_URL`, `KAFKA_*`), to see and repair what they set aside: the dead letters
//! on `financing.dlq` (listed, shown, sent back to their topic once their cause is fixed) and
//! the messages the command handler parked.

mod dead_letters;
mod parked;

use anyhow::Context;
use clap::{Parser, Subcommand};
use financing_messaging::KafkaConfig;

#[derive(Parser)]
#[command(about = "Operate Financing: dead letters and parked messages")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The messages no consumer could handle, on the dead-letter topic.
    #[command(subcommand)]
    DeadLetters(dead_letters::Command),
    /// The messages the command handler owes an effect but cannot handle yet; it tries them
    /// again by itself.
    #[command(subcommand)]
    Parked(parked::Command),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let kafka = KafkaConfig::from_env().context("invalid configuration")?;
    match cli.command {
        Command::DeadLetters(command) => dead_letters::run(command, &kafka).await,
        Command::Parked(command) => parked::run(command).await,
    }
}
