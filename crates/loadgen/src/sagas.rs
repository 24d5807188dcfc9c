//! Bid sagas offered at a fixed rate (open loop): each bid is over its invoice's asking price, so
//! it runs the whole choreography (funds reserved, invoice financed, surplus released), and is
//! done when all of it shows on the query service. Each saga has an investor and an invoice of
//! its own, so that its end state is exact: the invoice `FINANCED`, the investor with the asking
//! price reserved and the rest of its funds as balance.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use financing_api::to_proto_id;
use financing_api::v1::commands_client::CommandsClient;
use financing_api::v1::{
    self, BidOnInvoiceCommand, GetInvestorRequest, GetInvoiceRequest, SellInvoiceCommand,
};
use financing_domain::{InvestorId, InvoiceId, Money};
use financing_messaging::KafkaConfig;
use futures::{StreamExt, TryStreamExt};
use tonic::transport::Channel;

use crate::listings::Queries;
use crate::open_loop;
use crate::stats::{Samples, next_look};

#[derive(clap::Args)]
pub struct SagaArgs {
    /// Bid sagas started per second, whatever the system's answers (open loop).
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// How long to start them, in seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// One saga in this many is watched from its acknowledgement until it shows whole on the
    /// query service (its latency); the rest are counted once the load is over.
    #[arg(long, default_value_t = 1)]
    watch_every: u64,
    /// How long, after the load, every saga may take to show, in seconds.
    #[arg(long, default_value_t = 120)]
    settle_seconds: u64,
}

/// Each invoice's asking price, in whole units.
const ASKING: u64 = 10;
/// Each bid: over the asking price, so that the saga releases the surplus.
const BID: u64 = 15;
/// Each investor's funds, in whole units.
const FUNDS: u64 = 100;
/// Commands in flight at once while setting up.
const SETUP_CLIENTS: usize = 64;
/// The length of a timeline window.
const WINDOW: Duration = Duration::from_secs(5);

/// One saga: its investor and invoice.
#[derive(Clone, Copy)]
struct Saga {
    investor_id: InvestorId,
    invoice_id: InvoiceId,
}

pub async fn run(
    args: &SagaArgs,
    kafka: &KafkaConfig,
    listener: &str,
    queries: &str,
) -> anyhow::Result<()> {
    let count = usize::try_from(u64::from(args.rate) * args.seconds)?;
    let commands = CommandsClient::new(crate::channel(listener).await?);
    let queries = crate::listings::client(queries).await?;
    println!("Bid sagas: setting up {count} investors and invoices");
    let setup = Instant::now();
    let sagas = set_up(kafka, &commands, &queries, count).await?;
    println!("  ready after {:.1} s", setup.elapsed().as_secs_f64());

    let run = Arc::new(Run {
        commands,
        queries: queries.clone(),
        acked: Mutex::default(),
        visible: Mutex::default(),
        timeline: Mutex::default(),
    });
    println!(
        "Bid sagas: {} per second for {} s (bid {BID} on an asking price of {ASKING})",
        args.rate, args.seconds
    );
    let started = Instant::now();
    // One saga every 1/rate seconds, whatever happened to the earlier ones.
    let per_window = u64::from(args.rate.max(1)) * WINDOW.as_secs();
    let offered = open_loop::offer(args.rate, count as u64, |n| {
        let (run, saga) = (Arc::clone(&run), sagas[n as usize]);
        let watch = n.is_multiple_of(args.watch_every.max(1));
        let window = n / per_window;
        async move { run.one_saga(saga, watch, window).await }
    })
    .await?;
    let all_visible = settle(
        &queries,
        &sagas,
        Instant::now() + Duration::from_secs(args.settle_seconds),
    )
    .await?;

    println!("Offered:");
    println!(
        "  {count} bids in {:.1} s: {:.1} sagas/s (target {}), sender at most {:.0} ms late",
        offered.elapsed.as_secs_f64(),
        count as f64 / offered.elapsed.as_secs_f64(),
        args.rate,
        offered.max_lag.as_secs_f64() * 1e3
    );
    println!("Latency:");
    println!(
        "  acknowledged                    {}",
        run.acked.lock().expect("samples").summary()
    );
    println!(
        "  accepted -> visible, 1 in {:<3}  {}",
        args.watch_every,
        run.visible.lock().expect("samples").summary()
    );
    println!(
        "Timeline ({} s windows, by when the bid was sent): accepted -> visible",
        WINDOW.as_secs()
    );
    for (window, samples) in run.timeline.lock().expect("the timeline").iter() {
        println!(
            "  from {:>4} s  {}",
            window * WINDOW.as_secs(),
            samples.summary()
        );
    }
    match all_visible {
        Some(done) => {
            let elapsed = done - started;
            println!(
                "All {count} sagas visible {:.1} s after the first bid: {:.0} sagas/s end to end",
                elapsed.as_secs_f64(),
                count as f64 / elapsed.as_secs_f64()
            );
            Ok(())
        }
        None => bail!(
            "FAILED: not every saga showed whole within {} s of the load's end",
            args.settle_seconds
        ),
    }
}

/// Registers an investor per saga, sells an invoice per saga, and waits until the query service
/// shows them all.
async fn set_up(
    kafka: &KafkaConfig,
    commands: &CommandsClient<Channel>,
    queries: &Queries,
    count: usize,
) -> anyhow::Result<Vec<Saga>> {
    let registered = financing_populate::register(kafka, 1, count, Money::units(FUNDS))
        .await
        .context("cannot register the investors")?;
    let issuer_id = registered.issuers[0].1;
    crate::issuer_shown(queries, issuer_id)
        .await
        .context("the issuer never showed up: is the system running?")?;
    let invoices: Vec<InvoiceId> = futures::stream::iter(0..count)
        .map(|_| {
            let mut commands = commands.clone();
            async move {
                let sale = SellInvoiceCommand {
                    issuer_id: Some(to_proto_id(issuer_id)),
                    asking_price: Some(v1::Money {
                        amount: Money::units(ASKING).to_f64(),
                    }),
                };
                let sale = crate::parties::as_issuer(issuer_id, sale);
                let reply = commands.sell_invoice(sale).await?.into_inner();
                anyhow::Ok(reply.value.parse::<InvoiceId>()?)
            }
        })
        .buffer_unordered(SETUP_CLIENTS)
        .try_collect()
        .await?;
    let sagas: Vec<Saga> = registered
        .investors
        .iter()
        .zip(invoices)
        .map(|((_, investor_id), invoice_id)| Saga {
            investor_id: *investor_id,
            invoice_id,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (investors, invoices) = shown(queries).await?;
        let ready = sagas.iter().all(|saga| {
            investors.get(&saga.investor_id.to_string()) == Some(&State::Funded)
                && invoices.get(&saga.invoice_id.to_string()) == Some(&v1::InvoiceStatus::Available)
        });
        if ready {
            return Ok(sagas);
        }
        if Instant::now() > deadline {
            bail!("the investors and invoices did not all show within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct Run {
    commands: CommandsClient<Channel>,
    queries: Queries,
    acked: Mutex<Samples>,
    visible: Mutex<Samples>,
    timeline: Mutex<BTreeMap<u64, Samples>>,
}

impl Run {
    async fn one_saga(&self, saga: Saga, watch: bool, window: u64) -> anyhow::Result<()> {
        let bid = BidOnInvoiceCommand {
            investor_id: Some(to_proto_id(saga.investor_id)),
            invoice_id: Some(to_proto_id(saga.invoice_id)),
            bid: Some(v1::Money {
                amount: Money::units(BID).to_f64(),
            }),
        };
        let sent = Instant::now();
        self.commands
            .clone()
            .bid_on_invoice(crate::parties::as_investor(saga.investor_id, bid))
            .await
            .context("a bid was refused")?;
        let accepted = Instant::now();
        self.acked.lock().expect("samples").push(accepted - sent);
        if !watch {
            return Ok(());
        }
        self.await_visible(saga).await?;
        let latency = accepted.elapsed();
        self.visible.lock().expect("samples").push(latency);
        self.timeline
            .lock()
            .expect("the timeline")
            .entry(window)
            .or_default()
            .push(latency);
        Ok(())
    }

    /// Polls the saga's investor, then its invoice, until both show its end (looked at ever
    /// less often: [`next_look`]).
    async fn await_visible(&self, saga: Saga) -> anyhow::Result<()> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(120);
        let mut investor_done = false;
        loop {
            let mut queries = self.queries.clone();
            if !investor_done {
                let request = GetInvestorRequest {
                    id: Some(to_proto_id(saga.investor_id)),
                };
                investor_done = queries
                    .get_investor(request)
                    .await
                    .is_ok_and(|reply| State::of(&reply.into_inner()) == State::Financing);
            }
            if investor_done {
                let request = GetInvoiceRequest {
                    id: Some(to_proto_id(saga.invoice_id)),
                };
                let financed = queries
                    .get_invoice(request)
                    .await
                    .is_ok_and(|reply| reply.into_inner().status() == v1::InvoiceStatus::Financed);
                if financed {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("a watched saga did not show whole within 120 s");
            }
            tokio::time::sleep(next_look(started.elapsed())).await;
        }
    }
}

/// An investor as the sagas see it.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Its funds whole in its balance: no bid yet.
    Funded,
    /// The saga's end: the asking price reserved, the surplus back in the balance.
    Financing,
    Other,
}

impl State {
    fn of(investor: &v1::Investor) -> State {
        let amount = |money: Option<v1::Money>| money.map_or(0.0, |money| money.amount);
        let shown = (amount(investor.balance), amount(investor.reserved));
        let units = |units: u64| Money::units(units).to_f64();
        if shown == (units(FUNDS), 0.0) {
            State::Funded
        } else if shown == (units(FUNDS - ASKING), units(ASKING)) {
            State::Financing
        } else {
            State::Other
        }
    }
}

/// Every investor's state and every invoice's status on the query service, by id.
async fn shown(
    queries: &Queries,
) -> anyhow::Result<(HashMap<String, State>, HashMap<String, v1::InvoiceStatus>)> {
    let id = |id: Option<v1::Uuid>| id.map(|id| id.value).unwrap_or_default();
    let investors = crate::listings::all_investors(queries).await?;
    let invoices = crate::listings::all_invoices(queries).await?;
    Ok((
        investors
            .into_iter()
            .map(|investor| (id(investor.id.clone()), State::of(&investor)))
            .collect(),
        invoices
            .into_iter()
            .map(|invoice| (id(invoice.id.clone()), invoice.status()))
            .collect(),
    ))
}

/// When every saga showed whole on the query service (looked at every 250 ms), or `None` if
/// some had not by the deadline.
async fn settle(
    queries: &Queries,
    sagas: &[Saga],
    deadline: Instant,
) -> anyhow::Result<Option<Instant>> {
    let mut waiting: HashSet<usize> = (0..sagas.len()).collect();
    loop {
        let (investors, invoices) = shown(queries).await?;
        let seen = Instant::now();
        waiting.retain(|&n| {
            let saga = sagas[n];
            investors.get(&saga.investor_id.to_string()) != Some(&State::Financing)
                || invoices.get(&saga.invoice_id.to_string()) != Some(&v1::InvoiceStatus::Financed)
        });
        if waiting.is_empty() {
            return Ok(Some(seen));
        }
        if Instant::now() > deadline {
            println!("  {} sagas still not whole", waiting.len());
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
