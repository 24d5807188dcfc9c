//! `financing status`: what the system has not got through yet, from every side: events and
//! outcomes the relayer has not published, messages the handler parked, each consumer group's
//! lag per topic (client commands pending are the command handler's lag on the commands
//! topic), dead letters, and views stuck at a gap.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::Utc;
use financing_event_store::PgEventStore;
use financing_messaging::{
    COMMAND_HANDLER_GROUP, KafkaConfig, LagReader, PROJECTOR_GROUP, PartitionLag,
};
use financing_read_model::ReadModel;
use financing_runtime::config::text;

pub async fn run(
    store: &PgEventStore,
    read_model: &ReadModel,
    kafka: &KafkaConfig,
) -> anyhow::Result<()> {
    let backlog = store
        .backlog()
        .await
        .context("cannot read the event store")?;
    println!("event store");
    println!("  last global position   {}", backlog.last_position);
    let age = backlog
        .oldest_unpublished
        .map_or_else(String::new, |oldest| {
            let age = (Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0;
            format!(", the oldest recorded {age:.1} s ago")
        });
    println!(
        "  unpublished events     {}{age}",
        backlog.unpublished_events
    );
    println!("  unpublished outcomes   {}", backlog.unpublished_outcomes);
    println!("  parked messages        {}", backlog.parked_messages);

    let stuck = read_model
        .stuck_views()
        .await
        .context("cannot read the read models")?;
    println!("read models");
    println!("  views stuck at a gap   {}", stuck.len());
    for view in &stuck {
        println!(
            "    {} {} at version {}, next {}: {}",
            view.aggregate_type, view.aggregate_id, view.at_version, view.next_version, view.reason
        );
    }

    let kafka = kafka.clone();
    let broker = tokio::task::spawn_blocking(move || broker_status(&kafka)).await??;
    println!("broker");
    for (group, topics) in &broker.groups {
        println!("  group {group}");
        for (topic, waiting) in topics {
            println!("    {topic:<28} {waiting} waiting");
        }
    }
    println!("  commands pending       {}", broker.commands_pending);
    println!("  dead letters           {}", broker.dead_letters);
    Ok(())
}

struct BrokerStatus {
    /// Messages waiting per topic, per group.
    groups: BTreeMap<String, BTreeMap<String, i64>>,
    /// Client commands the command handler has not got through.
    commands_pending: i64,
    dead_letters: i64,
}

/// Blocking: it waits for the broker's answers.
fn broker_status(kafka: &KafkaConfig) -> anyhow::Result<BrokerStatus> {
    let topics = kafka.topics();
    let handler = text("COMMAND_HANDLER_GROUP", COMMAND_HANDLER_GROUP);
    let projector = text("PROJECTOR_GROUP", PROJECTOR_GROUP);
    let consumed = [
        (
            handler.clone(),
            vec![
                topics.commands.clone(),
                topics.registering_events.clone(),
                topics.events.clone(),
            ],
        ),
        (
            projector,
            vec![topics.events.clone(), topics.outcomes.clone()],
        ),
    ];
    let mut groups = BTreeMap::new();
    for (group, topics) in consumed {
        let lag = read(kafka, &group, &topics)?;
        let mut waiting = BTreeMap::new();
        for partition in lag {
            *waiting.entry(partition.topic.clone()).or_default() += partition.waiting();
        }
        groups.insert(group, waiting);
    }
    let commands_pending = groups[&handler]
        .get(&topics.commands)
        .copied()
        .unwrap_or_default();
    let dead_letters = read(kafka, "financing-admin", std::slice::from_ref(&topics.dlq))?
        .iter()
        .map(|partition| partition.end - partition.start)
        .sum();
    Ok(BrokerStatus {
        groups,
        commands_pending,
        dead_letters,
    })
}

fn read(kafka: &KafkaConfig, group: &str, topics: &[String]) -> anyhow::Result<Vec<PartitionLag>> {
    LagReader::new(kafka, group, topics)
        .and_then(|reader| reader.read())
        .with_context(|| {
            format!(
                "cannot read the lag of {group} from the broker at {}",
                kafka.brokers
            )
        })
}
