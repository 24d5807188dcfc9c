//! Latency benchmarks against a running system, through its public interfaces only (gRPC and
//! Kafka). Configure the broker with the same `KAFKA_*` variables as the services.

mod stats;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use financing_api::v1::SellInvoiceCommand;
use financing_api::v1::commands_client::CommandsClient;
use financing_api::{to_proto_id, v1};
use financing_domain::{
    Event, IntegrationEvent, InvoiceEvent, InvoiceId, IssuerEvent, IssuerId, Money,
};
use financing_messaging::{EventMessage, KafkaConfig, Publisher, integration_record};
use rdkafka::consumer::{Consumer, StreamConsumer};
use tonic::transport::Channel;

use crate::stats::Samples;

#[derive(Parser)]
#[command(about = "Measures the Financing system's latencies")]
struct Cli {
    /// The listener (gRPC Commands).
    #[arg(
        long,
        env = "LISTENER_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    listener: String,
    /// How many commands to time.
    #[arg(long, default_value_t = 300, global = true)]
    samples: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// From a SellInvoice sent to the listener to its InvoiceCreated read from
    /// financing.events, one command at a time.
    CommandToEvent,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let kafka = KafkaConfig::from_env()?;
    match cli.scenario {
        Scenario::CommandToEvent => command_to_event(&cli, &kafka).await,
    }
}

async fn command_to_event(cli: &Cli, kafka: &KafkaConfig) -> anyhow::Result<()> {
    let mut events = EventReader::new(kafka)?;
    let issuer_id = IssuerId::new_random();
    let registered = IntegrationEvent::IssuerRegistered {
        id: issuer_id,
        name: "loadgen issuer".into(),
    };
    Publisher::new(kafka)?
        .publish(
            &kafka.topics().registering_events,
            &integration_record(&registered),
        )
        .await
        .context("cannot publish to the broker")?;
    events
        .until(|event| matches!(event, Event::Issuer(IssuerEvent::IssuerCreated { issuer_id: id, .. }) if *id == issuer_id))
        .await
        .context("the issuer was never created: is the system running?")?;

    let mut commands = connect(&cli.listener).await?;
    let (mut accepted, mut published) = (Samples::default(), Samples::default());
    for _ in 0..cli.samples {
        let started = Instant::now();
        let reply = commands
            .sell_invoice(SellInvoiceCommand {
                issuer_id: Some(to_proto_id(issuer_id)),
                asking_price: Some(v1::Money {
                    amount: Money::units(10).to_f64(),
                }),
            })
            .await?;
        accepted.push(started.elapsed());
        let invoice_id: InvoiceId = reply.into_inner().value.parse()?;
        events
            .until(|event| matches!(event, Event::Invoice(InvoiceEvent::InvoiceCreated { invoice_id: id, .. }) if *id == invoice_id))
            .await?;
        published.push(started.elapsed());
    }
    println!("SellInvoice, {} commands one at a time:", cli.samples);
    println!(
        "  acknowledged by the listener        {}",
        accepted.summary()
    );
    println!(
        "  InvoiceCreated read from the topic  {}",
        published.summary()
    );
    Ok(())
}

async fn connect(url: &str) -> anyhow::Result<CommandsClient<Channel>> {
    let channel = Channel::from_shared(url.to_owned())?
        .connect()
        .await
        .with_context(|| format!("cannot reach the listener at {url}"))?;
    Ok(CommandsClient::new(channel))
}

/// Reads `financing.events` from the end it finds on joining.
struct EventReader {
    consumer: StreamConsumer,
}

impl EventReader {
    fn new(kafka: &KafkaConfig) -> anyhow::Result<EventReader> {
        let group = format!("loadgen-{}", std::process::id());
        let consumer = kafka.consumer(&group)?;
        consumer.subscribe(&[&kafka.topics().events])?;
        Ok(EventReader { consumer })
    }

    /// Reads until an event matches.
    async fn until(&mut self, wanted: impl Fn(&Event) -> bool) -> anyhow::Result<()> {
        loop {
            let received =
                tokio::time::timeout(Duration::from_secs(30), self.consumer.recv()).await;
            let Ok(message) = received else {
                bail!("no matching event within 30 s");
            };
            if let Ok(decoded) = EventMessage::decode(&message?)
                && wanted(&decoded.event)
            {
                return Ok(());
            }
        }
    }
}
