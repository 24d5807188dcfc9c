//! Benchmarks and the soak against a running system, through its public interfaces only (gRPC
//! and Kafka; configure the broker with the same `KAFKA_*` variables as the services), and the
//! command loop in-process on the event store alone (`in-process`).

mod backlog;
mod in_process;
mod listings;
mod open_loop;
mod parties;
mod sagas;
mod soak;
mod stats;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use financing_api::v1::commands_client::CommandsClient;
use financing_api::v1::{
    BidOnInvoiceCommand, GetInvestorRequest, GetInvoiceRequest, GetIssuerRequest,
    SellInvoiceCommand,
};
use financing_api::{to_proto_id, v1};
use financing_domain::{Event, InvoiceEvent, InvoiceId, IssuerEvent, IssuerId, Money};
use financing_messaging::{EventEnvelope, GroupConsumer, KafkaConfig, WireForm};
use rdkafka::consumer::Consumer;
use tonic::transport::{Channel, Endpoint};

use crate::stats::Samples;

#[derive(Parser)]
#[command(about = "Measures the Financing system: latencies, throughput, a soak")]
struct Cli {
    /// The listener (gRPC Commands); several, comma-separated, share the requests.
    #[arg(
        long,
        env = "LISTENER_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    listener: String,
    /// The query service (gRPC Queries); several, comma-separated, share the requests.
    #[arg(
        long,
        env = "QUERIES_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    queries: String,
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
    /// From a BidOnInvoice sent to the listener to the investor's reserved funds showing it on
    /// the query service (polled every millisecond), one bid at a time.
    BidToReadModel,
    /// Throughput: `--samples` SellInvoice commands sent by `clients` concurrent clients, timed
    /// from the first send until the query service shows every invoice.
    Throughput {
        #[arg(long, default_value_t = 8)]
        clients: usize,
    },
    /// A realistic mix (sell, bid, approve, reverse; idempotency keys, client retries) at a
    /// fixed rate for a fixed time, then checks that every acknowledged command was decided
    /// and that every investor's money adds up. Exits non-zero if not.
    Soak(soak::SoakArgs),
    /// Bid sagas (bid over the asking price -> funds reserved -> invoice financed -> surplus
    /// released) started at a fixed rate for a fixed time (open loop), each timed from its
    /// acknowledgement until all of it shows on the query service; then how long until every
    /// saga showed.
    Sagas(sagas::SagaArgs),
    /// The handler's command loop in-process on the event store (`DATABASE_URL`), no broker:
    /// `SellInvoice` commands from concurrent tasks for a fixed time.
    InProcess(in_process::InProcessArgs),
    /// `--samples` SellInvoice commands queued straight on `financing.commands` for a handler
    /// to drain (or, without `--issuer`, an issuer registered and its id printed).
    Backlog(backlog::BacklogArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let kafka = KafkaConfig::from_env()?;
    if !matches!(cli.scenario, Scenario::InProcess(_) | Scenario::Backlog(_)) {
        parties::init()?;
    }
    match cli.scenario {
        Scenario::CommandToEvent => command_to_event(&cli, &kafka).await,
        Scenario::BidToReadModel => bid_to_read_model(&cli, &kafka).await,
        Scenario::Throughput { clients } => throughput(&cli, &kafka, clients).await,
        Scenario::Soak(ref args) => soak::run(args, &kafka, &cli.listener, &cli.queries).await,
        Scenario::Sagas(ref args) => sagas::run(args, &kafka, &cli.listener, &cli.queries).await,
        Scenario::InProcess(ref args) => in_process::run(args).await,
        Scenario::Backlog(ref args) => backlog::run(args, &kafka, cli.samples).await,
    }
}

async fn command_to_event(cli: &Cli, kafka: &KafkaConfig) -> anyhow::Result<()> {
    let mut events = EventReader::new(kafka)?;
    let registered = financing_populate::register(kafka, 1, 0, Money::ZERO)
        .await
        .context("cannot register an issuer")?;
    let issuer_id = registered.issuers[0].1;
    // Waiting for the issuer also lets the reader join its group before the timing starts.
    events
        .until(|event| matches!(event, Event::Issuer(IssuerEvent::IssuerCreated { issuer_id: id, .. }) if *id == issuer_id))
        .await
        .context("the issuer was never created: is the system running?")?;

    let mut commands = CommandsClient::new(channel(&cli.listener).await?);
    let (mut accepted, mut published) = (Samples::default(), Samples::default());
    for _ in 0..cli.samples {
        let started = Instant::now();
        let sale = SellInvoiceCommand {
            issuer_id: Some(to_proto_id(issuer_id)),
            asking_price: Some(v1::Money {
                amount: Money::units(10).to_f64(),
            }),
        };
        let reply = commands
            .sell_invoice(parties::as_issuer(issuer_id, sale))
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

async fn bid_to_read_model(cli: &Cli, kafka: &KafkaConfig) -> anyhow::Result<()> {
    let registered = financing_populate::register(kafka, 1, 1, Money::units(cli.samples as u64))
        .await
        .context("cannot register an issuer and an investor")?;
    let (issuer_id, investor_id) = (registered.issuers[0].1, registered.investors[0].1);
    let mut commands = CommandsClient::new(channel(&cli.listener).await?);
    let queries = listings::client(&cli.queries).await?;
    let reserved = || {
        let mut queries = queries.clone();
        let investor = GetInvestorRequest {
            id: Some(to_proto_id(investor_id)),
        };
        async move {
            let shown = queries.get_investor(investor).await.ok()?.into_inner();
            shown.reserved.map(|money| money.amount)
        }
    };
    poll(reserved, Option::is_some)
        .await
        .context("the investor never showed up: is the system running?")?;
    // The issuer's and the investor's creations are handled apart: sell once the issuer is
    // known too.
    issuer_shown(&queries, issuer_id)
        .await
        .context("the issuer never showed up")?;

    // One invoice per bid, asking exactly the bid: each bid wins and stays reserved.
    let one = Some(v1::Money { amount: 1.0 });
    let mut invoices = Vec::with_capacity(cli.samples);
    for _ in 0..cli.samples {
        let sale = SellInvoiceCommand {
            issuer_id: Some(to_proto_id(issuer_id)),
            asking_price: one,
        };
        let sale = parties::as_issuer(issuer_id, sale);
        invoices.push(commands.sell_invoice(sale).await?.into_inner());
    }
    let last = invoices.last().cloned();
    let last_shown = || {
        let (mut queries, id) = (queries.clone(), last.clone());
        async move { queries.get_invoice(GetInvoiceRequest { id }).await.ok() }
    };
    poll(last_shown, Option::is_some)
        .await
        .context("the invoices never showed up")?;

    let (mut accepted, mut visible) = (Samples::default(), Samples::default());
    for (n, invoice_id) in invoices.into_iter().enumerate() {
        let started = Instant::now();
        let bid = BidOnInvoiceCommand {
            investor_id: Some(to_proto_id(investor_id)),
            invoice_id: Some(invoice_id),
            bid: one,
        };
        commands
            .bid_on_invoice(parties::as_investor(investor_id, bid))
            .await?;
        accepted.push(started.elapsed());
        let expected = Some(Money::units(n as u64 + 1).to_f64());
        poll(reserved, |shown| *shown == expected).await?;
        visible.push(started.elapsed());
    }
    println!("BidOnInvoice, {} bids one at a time:", cli.samples);
    println!(
        "  acknowledged by the listener        {}",
        accepted.summary()
    );
    println!(
        "  reserved funds shown by the queries {}",
        visible.summary()
    );
    Ok(())
}

async fn throughput(cli: &Cli, kafka: &KafkaConfig, clients: usize) -> anyhow::Result<()> {
    let registered = financing_populate::register(kafka, 1, 0, Money::ZERO).await?;
    let issuer_id = registered.issuers[0].1;
    let queries = listings::client(&cli.queries).await?;
    issuer_shown(&queries, issuer_id)
        .await
        .context("the issuer never showed up: is the system running?")?;

    let commands = CommandsClient::new(channel(&cli.listener).await?);
    let per_client = cli.samples.div_ceil(clients);
    let started = Instant::now();
    let senders = (0..clients).map(|_| {
        let mut commands = commands.clone();
        async move {
            let mut sold = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let sale = SellInvoiceCommand {
                    issuer_id: Some(to_proto_id(issuer_id)),
                    asking_price: Some(v1::Money { amount: 1.0 }),
                };
                let invoice: InvoiceId = commands
                    .sell_invoice(parties::as_issuer(issuer_id, sale))
                    .await?
                    .into_inner()
                    .value
                    .parse()?;
                sold.push(invoice);
            }
            Ok::<_, anyhow::Error>(sold)
        }
    });
    let sold: Vec<InvoiceId> = futures::future::try_join_all(senders)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let accepted = started.elapsed();
    let total = sold.len();
    let shown = all_shown(&queries, sold).await? - started;
    let rate = |elapsed: Duration| total as f64 / elapsed.as_secs_f64();
    println!("SellInvoice, {total} commands from {clients} concurrent clients:");
    println!(
        "  all acknowledged by the listener    after {:>7.2} s  ({:>6.0} commands/s)",
        accepted.as_secs_f64(),
        rate(accepted)
    );
    println!(
        "  all shown by the queries            after {:>7.2} s  ({:>6.0} commands/s)",
        shown.as_secs_f64(),
        rate(shown)
    );
    Ok(())
}

/// How long the invoices sold may take to show once all are acknowledged.
const SETTLE: Duration = Duration::from_secs(120);

/// When every invoice of `sold` (in the order sent, roughly) showed on the query service: the
/// last one still missing is looked up every 10 ms until it shows, then all are listed once to
/// see which are still missing. The lookups cost the query service little while the pipeline
/// drains; the listing, done once the last sent shows, finds the rest shown with it.
async fn all_shown(
    queries: &listings::Queries,
    mut missing: Vec<InvoiceId>,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + SETTLE;
    while let Some(&last) = missing.last() {
        let request = GetInvoiceRequest {
            id: Some(to_proto_id(last)),
        };
        while queries.clone().get_invoice(request.clone()).await.is_err() {
            if Instant::now() > deadline {
                bail!("{} invoices not shown within {SETTLE:?}", missing.len());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let shown: std::collections::HashSet<String> = listings::all_invoices(queries)
            .await?
            .into_iter()
            .filter_map(|invoice| invoice.id.map(|id| id.value))
            .collect();
        missing.retain(|id| !shown.contains(&id.to_string()));
    }
    Ok(Instant::now())
}

/// Waits until the query service knows the issuer (30 s at most).
pub(crate) async fn issuer_shown(
    queries: &listings::Queries,
    issuer_id: IssuerId,
) -> anyhow::Result<()> {
    let known = || {
        let mut queries = queries.clone();
        let issuer = GetIssuerRequest {
            id: Some(to_proto_id(issuer_id)),
        };
        async move { queries.get_issuer(issuer).await.is_ok() }
    };
    poll(known, |known| *known).await.map(drop)
}

/// Calls `probe` every millisecond until `done` accepts what it returns (30 s at most).
async fn poll<T, F, Fut>(probe: F, done: impl Fn(&T) -> bool) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = probe().await;
        if done(&value) {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("not seen within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A channel to the service at `urls`: one URL, connected now; several (comma-separated),
/// each request to a ready one of them (an instance that is down is left out until it is back).
pub(crate) async fn channel(urls: &str) -> anyhow::Result<Channel> {
    let endpoints = urls
        .split(',')
        .map(|url| Endpoint::from_shared(url.trim().to_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    match &endpoints[..] {
        [one] => one
            .connect()
            .await
            .with_context(|| format!("cannot reach {urls}")),
        _ => Ok(Channel::balance_list(endpoints.into_iter())),
    }
}

/// Reads `financing.events` from the end it finds on joining.
struct EventReader {
    consumer: GroupConsumer,
}

impl EventReader {
    fn new(kafka: &KafkaConfig) -> anyhow::Result<EventReader> {
        let group = format!("loadgen-{}", std::process::id());
        let consumer = kafka.consumer(&group)?;
        consumer.subscribe(&[&kafka.topics().events])?;
        Ok(EventReader { consumer })
    }

    /// Reads until an event matches.
    async fn until(&mut self, mut wanted: impl FnMut(&Event) -> bool) -> anyhow::Result<()> {
        loop {
            let received =
                tokio::time::timeout(Duration::from_secs(30), self.consumer.recv()).await;
            let Ok(message) = received else {
                bail!("no matching event within 30 s");
            };
            if let Ok(decoded) = EventEnvelope::decode(&message?)
                && wanted(&decoded.event)
            {
                return Ok(());
            }
        }
    }
}
