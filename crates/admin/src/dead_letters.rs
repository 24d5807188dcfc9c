//! `financing dead-letters`: what is on the dead-letter topic and why, and sending a message back
//! to the topic it came from once its cause is fixed.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::DateTime;
use clap::Subcommand;
use financing_messaging::{KafkaConfig, Publisher, glimpse, headers, headers_of, kafka_headers};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Subcommand)]
pub enum Command {
    /// Every dead letter: its position, when it was set aside, where it came from, its type and
    /// why.
    List,
    /// One dead letter whole: its key, headers and payload.
    Show {
        /// PARTITION:OFFSET on the dead-letter topic, as `list` shows it.
        position: Position,
    },
    /// Sends dead letters back to the topic they came from, as they were (key, payload and
    /// headers, without the dead-letter headers), for their consumer to handle again. Each message carries the ids
    /// that make handling it twice change nothing.
    Redrive {
        /// PARTITION:OFFSET of each dead letter to send back.
        #[arg(required_unless_present = "all")]
        positions: Vec<Position>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "positions")]
        all: bool,
    },
}

/// Where a dead letter sits on the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    partition: i32,
    offset: i64,
}

impl FromStr for Position {
    type Err = String;

    fn from_str(text: &str) -> Result<Position, String> {
        let invalid = || format!("{text:?} is not PARTITION:OFFSET, e.g. 0:42");
        let (partition, offset) = text.split_once(':').ok_or_else(invalid)?;
        Ok(Position {
            partition: partition.parse().map_err(|_| invalid())?,
            offset: offset.parse().map_err(|_| invalid())?,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.partition, self.offset)
    }
}

struct DeadLetter {
    position: Position,
    /// As the broker keeps it on the dead-letter topic.
    message: OwnedMessage,
}

impl DeadLetter {
    fn header(&self, name: &str) -> Option<String> {
        headers_of(&self.message)
            .into_iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value)
            .map(|value| lossy(&value))
    }

    fn origin(&self) -> String {
        let part = |name| self.header(name).unwrap_or_else(|| "?".into());
        let (topic, partition, offset) = (
            part(headers::DLQ_TOPIC),
            part(headers::DLQ_PARTITION),
            part(headers::DLQ_OFFSET),
        );
        format!("{topic}/{partition}/{offset}")
    }

    fn when(&self) -> String {
        self.message
            .timestamp()
            .to_millis()
            .and_then(DateTime::from_timestamp_millis)
            .map_or_else(
                || "?".into(),
                |at| at.format("%Y-%m-%d %H:%M:%S").to_string(),
            )
    }

    /// The message as it was before it was set aside: its topic, and its key, payload and
    /// headers as they were (without the dead-letter headers).
    fn original(&self) -> anyhow::Result<(String, OwnedMessage)> {
        let topic = self
            .header(headers::DLQ_TOPIC)
            .with_context(|| format!("{} does not say where it came from", self.position))?;
        let headers = headers_of(&self.message);
        let headers = kafka_headers(headers.iter().filter(|(key, _)| !key.starts_with("dlq-")));
        let original = OwnedMessage::new(
            self.message.payload().map(<[u8]>::to_vec),
            self.message.key().map(<[u8]>::to_vec),
            topic.clone(),
            self.message.timestamp(),
            self.message.partition(),
            self.message.offset(),
            Some(headers),
        );
        Ok((topic, original))
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub async fn run(command: Command, kafka: &KafkaConfig) -> anyhow::Result<()> {
    let reader = kafka.clone();
    let letters = tokio::task::spawn_blocking(move || read_all(&reader)).await??;
    match command {
        Command::List => list(&letters),
        Command::Show { position } => show(find(&letters, position)?),
        Command::Redrive { positions, all } => {
            let chosen: Vec<&DeadLetter> = if all {
                letters.iter().collect()
            } else {
                let chosen: anyhow::Result<Vec<_>> =
                    positions.into_iter().map(|p| find(&letters, p)).collect();
                chosen?
            };
            redrive(kafka, &chosen).await
        }
    }
}

fn find(letters: &[DeadLetter], position: Position) -> anyhow::Result<&DeadLetter> {
    letters
        .iter()
        .find(|letter| letter.position == position)
        .with_context(|| format!("no dead letter at {position}"))
}

fn list(letters: &[DeadLetter]) -> anyhow::Result<()> {
    if letters.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    println!(
        "{:<10}  {:<19}  {:<40}  {:<20}  reason",
        "position", "set aside at", "from (topic/partition/offset)", "type"
    );
    for letter in letters {
        println!(
            "{:<10}  {:<19}  {:<40}  {:<20}  {}",
            letter.position.to_string(),
            letter.when(),
            letter.origin(),
            glimpse(&letter.message).kind.unwrap_or_else(|| "?".into()),
            letter
                .header(headers::DLQ_REASON)
                .unwrap_or_else(|| "?".into()),
        );
    }
    println!("{} dead letters", letters.len());
    Ok(())
}

fn show(letter: &DeadLetter) -> anyhow::Result<()> {
    println!("position      {}", letter.position);
    println!("set aside at  {}", letter.when());
    println!("from          {}", letter.origin());
    let reason = letter.header(headers::DLQ_REASON);
    println!("reason        {}", reason.as_deref().unwrap_or("?"));
    let key = letter.message.key().map(lossy);
    println!("key           {}", key.as_deref().unwrap_or("(none)"));
    println!("headers");
    for (name, value) in headers_of(&letter.message) {
        let value = value.as_deref().map(lossy);
        println!("  {name}: {}", value.as_deref().unwrap_or("(null)"));
    }
    let payload = letter.message.payload().map(lossy);
    println!("payload");
    println!("  {}", payload.as_deref().unwrap_or("(none)"));
    Ok(())
}

async fn redrive(kafka: &KafkaConfig, letters: &[&DeadLetter]) -> anyhow::Result<()> {
    let publisher = Publisher::new(kafka).context("cannot create a Kafka producer")?;
    for letter in letters {
        let (topic, original) = letter.original()?;
        publisher
            .republish(&topic, &original)
            .await
            .with_context(|| format!("cannot send {} back to {topic}", letter.position))?;
        println!("{} sent back to {topic}", letter.position);
    }
    println!("{} dead letters sent back", letters.len());
    Ok(())
}

/// How long the broker may take to answer one request.
const PATIENCE: Duration = Duration::from_secs(10);

/// Everything on the dead-letter topic up to its end when the reading starts, partition by
/// partition in order. Blocking.
fn read_all(kafka: &KafkaConfig) -> anyhow::Result<Vec<DeadLetter>> {
    let topic = kafka.topics().dlq;
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", "financing-admin")
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create a Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(&topic), PATIENCE)
        .with_context(|| format!("cannot reach the broker at {}", kafka.brokers))?;
    let mut assignment = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (start, end) = consumer
            .fetch_watermarks(&topic, partition.id(), PATIENCE)
            .with_context(|| format!("cannot read the ends of {topic}"))?;
        if end > start {
            assignment.add_partition_offset(&topic, partition.id(), Offset::Offset(start))?;
            ends.insert(partition.id(), end);
        }
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&assignment)?;
    let mut letters = Vec::new();
    while !ends.is_empty() {
        let Some(received) = consumer.poll(PATIENCE) else {
            bail!("{topic} stopped answering before its end");
        };
        let message = received.with_context(|| format!("cannot read {topic}"))?;
        let position = Position {
            partition: message.partition(),
            offset: message.offset(),
        };
        if ends
            .get(&position.partition)
            .is_some_and(|end| position.offset + 1 >= *end)
        {
            ends.remove(&position.partition);
        }
        letters.push(DeadLetter {
            position,
            message: message.detach(),
        });
    }
    letters.sort_by_key(|letter| (letter.position.partition, letter.position.offset));
    Ok(letters)
}
