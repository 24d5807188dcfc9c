//! `financing parked`: the messages the command handler parked, and why.

use anyhow::Context;
use clap::Subcommand;
use financing_event_store::Parking;

#[derive(Subcommand)]
pub enum Command {
    /// Every parked message: where it came from, why, how often it was tried, and when next.
    List,
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    let pool = crate::stores::event_store_pool().await?;
    match command {
        Command::List => list(&Parking::new(pool)).await,
    }
}

async fn list(parking: &Parking) -> anyhow::Result<()> {
    let parked = parking
        .all()
        .await
        .context("cannot read the parked messages")?;
    if parked.is_empty() {
        println!("nothing parked");
        return Ok(());
    }
    println!(
        "{:>6}  {:<36}  {:>8}  {:<20}  {:<20}  reason",
        "id", "from (topic/partition/offset)", "attempts", "parked at", "next attempt"
    );
    for parked in parked {
        let message = &parked.message;
        let from = format!("{}/{}/{}", message.topic, message.partition, message.offset);
        println!(
            "{:>6}  {from:<36}  {:>8}  {:<20}  {:<20}  {}",
            parked.id,
            parked.attempts,
            parked.parked_at.format("%Y-%m-%d %H:%M:%S"),
            parked.next_attempt_at.format("%Y-%m-%d %H:%M:%S"),
            parked.reason
        );
    }
    Ok(())
}
