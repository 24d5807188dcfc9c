//! The soak: a realistic mix of client commands (sell, bid, approve, reverse) offered at a fixed
//! rate for a fixed time, each under an idempotency key and retried by its client until the
//! listener acknowledges it, some sent twice on purpose. Then it checks what users trust: every
//! acknowledged command was decided, a repeated request was the same command, each investor's
//! money is conserved, and reserved and committed funds match the invoices won.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use financing_api::to_proto_id;
use financing_api::v1::commands_client::CommandsClient;
use financing_api::v1::{
    self, ApproveFinancingCommand, BidOnInvoiceCommand, GetCommandStatusRequest,
    ReverseFinancingCommand, SellInvoiceCommand,
};
use financing_domain::{CommandId, InvestorId, InvoiceId, IssuerId, Money};
use financing_messaging::KafkaConfig;
use futures::StreamExt;
use rand::Rng;
use rand::seq::IndexedRandom;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::listings::{Queries, all_investors, all_invoices};
use crate::open_loop;
use crate::parties::{as_investor, as_issuer};
use crate::stats::{Samples, next_look};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// Commands offered per second, whatever the system's answers (open loop).
    #[arg(long, default_value_t = 300)]
    rate: u32,
    /// How long to offer them, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Investors bidding (registered by the soak, with `--balance` each).
    #[arg(long, default_value_t = 50)]
    investors: usize,
    /// Each investor's funds, in whole units.
    #[arg(long, default_value_t = 100_000)]
    balance: u64,
    /// One command in this many is watched until its outcome shows on the query service.
    #[arg(long, default_value_t = 10)]
    watch_every: u64,
    /// How long a client keeps retrying one command before it gives up, in seconds.
    #[arg(long, default_value_t = 120)]
    give_up_seconds: u64,
    /// How long, after the load, everything acknowledged may take to be decided and the sagas
    /// to settle, in seconds.
    #[arg(long, default_value_t = 180)]
    settle_seconds: u64,
}

/// How long one request may take before the client retries it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// One acknowledged command in this many is sent again under its key, as a client that never
/// saw the answer would.
const RESEND_EVERY: u64 = 50;
/// The invoices the generator picks its targets among: the latest ones.
const RECENT: usize = 500;

pub async fn run(
    args: &SoakArgs,
    kafka: &KafkaConfig,
    listener: &str,
    queries: &str,
) -> anyhow::Result<()> {
    let balance = Money::units(args.balance);
    let registered = financing_populate::register(kafka, 3, args.investors, balance)
        .await
        .context("cannot register the soak's issuers and investors")?;
    let queries = crate::listings::client(queries).await?;
    let issuers: Vec<IssuerId> = registered.issuers.iter().map(|(_, id)| *id).collect();
    let investors: Vec<InvestorId> = registered.investors.iter().map(|(_, id)| *id).collect();
    wait_for_registrations(&queries, &issuers, &investors).await?;

    let soak = Arc::new(Soak {
        commands: CommandsClient::new(crate::channel(listener).await?),
        queries: queries.clone(),
        started: Instant::now(),
        issuers,
        investors: investors.clone(),
        give_up: Duration::from_secs(args.give_up_seconds),
        book: Mutex::default(),
        tally: Tally::default(),
    });
    println!(
        "Soak: {} commands/s for {} s, {} investors with {balance} each",
        args.rate, args.seconds, args.investors
    );
    let sent = u64::from(args.rate) * args.seconds;
    // One command every 1/rate seconds, whatever happened to the earlier ones.
    let offered = open_loop::offer(args.rate, sent, |n| {
        let soak = Arc::clone(&soak);
        let watch = n.is_multiple_of(args.watch_every.max(1));
        let resend = n % RESEND_EVERY == RESEND_EVERY / 2;
        async move {
            soak.one_command(watch, resend).await;
            Ok(())
        }
    })
    .await?;
    let tally = &soak.tally;
    let acked = std::mem::take(&mut soak.book.lock().expect("the book").acked);
    let mut failures = Vec::new();

    let settle_deadline = Instant::now() + Duration::from_secs(args.settle_seconds);
    let decided = settle_outcomes(&queries, &acked, settle_deadline).await?;
    let invariants = settle_money(&queries, &investors, balance, settle_deadline).await?;

    println!("Offered:");
    println!(
        "  {} commands in {:.1} s: {:.1} commands/s (target {}), sender at most {:.0} ms late",
        sent,
        offered.elapsed.as_secs_f64(),
        sent as f64 / offered.elapsed.as_secs_f64(),
        args.rate,
        offered.max_lag.as_secs_f64() * 1e3
    );
    println!(
        "  acknowledged {}, given up {}, retried requests {}, UNAVAILABLE answers {}",
        acked.len(),
        tally.given_up.load(Ordering::Relaxed),
        tally.retries.load(Ordering::Relaxed),
        tally.unavailable.load(Ordering::Relaxed),
    );
    println!(
        "  resent under the same key {}, answered with another command id {}",
        tally.resent.load(Ordering::Relaxed),
        tally.resent_mismatch.load(Ordering::Relaxed),
    );
    println!("Latency:");
    println!(
        "  acknowledged            {}",
        soak.tally.acked_latency.lock().expect("samples").summary()
    );
    println!(
        "  accepted -> decided on the query service  {}",
        soak.tally
            .visible_latency
            .lock()
            .expect("samples")
            .summary()
    );
    tally.print_timeline();
    println!("Outcomes:");
    let mut kinds: Vec<_> = decided.by_kind.iter().collect();
    kinds.sort();
    for ((kind, status), count) in kinds {
        println!("  {kind:<17} {status:<9} {count}");
    }
    println!(
        "  still pending after {} s: {}",
        args.settle_seconds,
        decided.pending.len()
    );
    println!("Money ({} investors):", investors.len());
    println!("  {}", invariants.summary);

    if tally.given_up.load(Ordering::Relaxed) > 0 {
        failures.push("some commands were never acknowledged".to_owned());
    }
    if tally.resent_mismatch.load(Ordering::Relaxed) > 0 {
        failures.push("a resent request became another command".to_owned());
    }
    let failed: u64 = decided
        .by_kind
        .iter()
        .filter(|((_, status), _)| *status == "FAILED")
        .map(|(_, count)| count)
        .sum();
    if failed > 0 {
        failures.push(format!(
            "{failed} commands FAILED (see the dead-letter topic)"
        ));
    }
    if !decided.pending.is_empty() {
        let some: Vec<String> = decided
            .pending
            .iter()
            .take(5)
            .map(|id| id.to_string())
            .collect();
        failures.push(format!(
            "{} acknowledged commands are still pending, e.g. {}",
            decided.pending.len(),
            some.join(", ")
        ));
    }
    failures.extend(invariants.violations.into_iter().take(10));
    if failures.is_empty() {
        println!("PASSED: every acknowledged command decided, money conserved and matching");
        Ok(())
    } else {
        bail!("FAILED:\n  {}", failures.join("\n  "))
    }
}

struct Soak {
    commands: CommandsClient<Channel>,
    queries: Queries,
    /// When the soak began: the timeline counts from it.
    started: Instant,
    issuers: Vec<IssuerId>,
    investors: Vec<InvestorId>,
    give_up: Duration,
    book: Mutex<Book>,
    tally: Tally,
}

/// What the clients know: the invoices they sold and bid on lately, and every acknowledged
/// command.
#[derive(Default)]
struct Book {
    sold: VecDeque<(InvoiceId, Money, IssuerId)>,
    bid_on: VecDeque<(InvoiceId, IssuerId)>,
    acked: Vec<(CommandId, &'static str)>,
}

#[derive(Default)]
struct Tally {
    retries: AtomicU64,
    unavailable: AtomicU64,
    given_up: AtomicU64,
    resent: AtomicU64,
    resent_mismatch: AtomicU64,
    acked_latency: Mutex<Samples>,
    visible_latency: Mutex<Samples>,
    timeline: Mutex<BTreeMap<u64, Window>>,
}

/// What happened in one stretch of the soak: where a fault shows, and how long until the
/// system is back.
#[derive(Debug, Default)]
struct Window {
    acked: u64,
    retried: u64,
    unavailable: u64,
    slowest_ack: Duration,
    slowest_decided: Duration,
}

/// The length of a timeline window.
const WINDOW: Duration = Duration::from_secs(10);

impl Tally {
    /// Updates the window that `at` falls in, counted from `started`.
    fn at(&self, started: Instant, at: Instant, update: impl FnOnce(&mut Window)) {
        let window = at.saturating_duration_since(started).as_secs() / WINDOW.as_secs();
        update(
            self.timeline
                .lock()
                .expect("the timeline")
                .entry(window)
                .or_default(),
        );
    }

    fn print_timeline(&self) {
        println!(
            "Timeline ({} s windows; commands by when they were sent, retries by when they happened):",
            WINDOW.as_secs()
        );
        println!(
            "  {:>6}  {:>7}  {:>7}  {:>11}  {:>12}  {:>16}",
            "from s", "acked", "retried", "UNAVAILABLE", "slowest ack", "slowest decided"
        );
        for (window, stats) in self.timeline.lock().expect("the timeline").iter() {
            println!(
                "  {:>6}  {:>7}  {:>7}  {:>11}  {:>9.0} ms  {:>13.0} ms",
                window * WINDOW.as_secs(),
                stats.acked,
                stats.retried,
                stats.unavailable,
                stats.slowest_ack.as_secs_f64() * 1e3,
                stats.slowest_decided.as_secs_f64() * 1e3,
            );
        }
    }
}

#[derive(Debug, Clone)]
enum Planned {
    Sell {
        issuer_id: IssuerId,
        asking: Money,
    },
    Bid {
        investor_id: InvestorId,
        invoice_id: InvoiceId,
        amount: Money,
    },
    /// By the invoice's issuer.
    Approve(InvoiceId, IssuerId),
    Reverse(InvoiceId, IssuerId),
}

impl Planned {
    fn kind(&self) -> &'static str {
        match self {
            Planned::Sell { .. } => "SellInvoice",
            Planned::Bid { .. } => "BidOnInvoice",
            Planned::Approve(..) => "ApproveFinancing",
            Planned::Reverse(..) => "ReverseFinancing",
        }
    }
}

impl Soak {
    async fn one_command(&self, watch: bool, resend: bool) {
        let planned = self.plan();
        let key = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        let Some(acked) = self.send_until_acknowledged(&planned, &key).await else {
            self.tally.given_up.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let accepted = Instant::now();
        self.tally
            .acked_latency
            .lock()
            .expect("samples")
            .push(accepted - started);
        self.tally.at(self.started, started, |window| {
            window.acked += 1;
            window.slowest_ack = window.slowest_ack.max(accepted - started);
        });
        self.record(&planned, &acked);
        if resend {
            self.tally.resent.fetch_add(1, Ordering::Relaxed);
            let again = self.send_until_acknowledged(&planned, &key).await;
            if again.is_some_and(|again| again != acked) {
                self.tally.resent_mismatch.fetch_add(1, Ordering::Relaxed);
            }
        }
        if watch && let Some(decided) = self.await_decided(acked.0).await {
            let latency = decided - accepted;
            self.tally
                .visible_latency
                .lock()
                .expect("samples")
                .push(latency);
            self.tally.at(self.started, started, |window| {
                window.slowest_decided = window.slowest_decided.max(latency);
            });
        }
    }

    /// A command of the mix: sell 35%, bid 35% (most at or above the asking price, some below),
    /// approve 15%, reverse 15%, on the invoices sold and bid on lately.
    fn plan(&self) -> Planned {
        let mut rng = rand::rng();
        let book = self.book.lock().expect("the book");
        let roll = rng.random_range(0..100);
        let sell = || Planned::Sell {
            issuer_id: *self.issuers.choose(&mut rand::rng()).expect("issuers"),
            asking: Money::from_cents(rand::rng().random_range(100..=10_000)),
        };
        match roll {
            0..35 => sell(),
            35..70 => match book.sold.get(rng.random_range(0..book.sold.len().max(1))) {
                Some(&(invoice_id, asking, _)) => {
                    let amount = if rng.random_bool(0.8) {
                        asking.cents() + rng.random_range(0..=asking.cents() / 5)
                    } else {
                        rng.random_range(1..asking.cents())
                    };
                    Planned::Bid {
                        investor_id: *self.investors.choose(&mut rng).expect("investors"),
                        invoice_id,
                        amount: Money::from_cents(amount),
                    }
                }
                None => sell(),
            },
            _ => match book
                .bid_on
                .get(rng.random_range(0..book.bid_on.len().max(1)))
            {
                Some(&(invoice_id, issuer_id)) if roll < 85 => {
                    Planned::Approve(invoice_id, issuer_id)
                }
                Some(&(invoice_id, issuer_id)) => Planned::Reverse(invoice_id, issuer_id),
                None => sell(),
            },
        }
    }

    fn record(&self, planned: &Planned, (command_id, invoice_id): &(CommandId, Option<InvoiceId>)) {
        let mut book = self.book.lock().expect("the book");
        book.acked.push((*command_id, planned.kind()));
        match (planned, invoice_id) {
            (Planned::Sell { asking, issuer_id }, Some(invoice_id)) => {
                book.sold.push_back((*invoice_id, *asking, *issuer_id));
                if book.sold.len() > RECENT {
                    book.sold.pop_front();
                }
            }
            (Planned::Bid { invoice_id, .. }, _) => {
                let issuer_id = book
                    .sold
                    .iter()
                    .find(|(sold, ..)| sold == invoice_id)
                    .map(|(.., issuer_id)| *issuer_id);
                if let Some(issuer_id) = issuer_id {
                    book.bid_on.push_back((*invoice_id, issuer_id));
                }
                if book.bid_on.len() > RECENT {
                    book.bid_on.pop_front();
                }
            }
            _ => {}
        }
    }

    /// Sends the command under `key` until the listener acknowledges it, as a careful client
    /// would: a timeout, UNAVAILABLE or a broken connection is retried with backoff, under the
    /// same key so that it stays one command. `None` once the client gives up.
    async fn send_until_acknowledged(
        &self,
        planned: &Planned,
        key: &str,
    ) -> Option<(CommandId, Option<InvoiceId>)> {
        let deadline = Instant::now() + self.give_up;
        let mut delay = Duration::from_millis(50);
        loop {
            match tokio::time::timeout(REQUEST_TIMEOUT, self.send(planned, key)).await {
                Ok(Ok(acked)) => return Some(acked),
                Ok(Err(status)) if !retryable(status.code()) => {
                    eprintln!("soak: {} refused: {status}", planned.kind());
                    return None;
                }
                Ok(Err(status)) if status.code() == Code::Unavailable => {
                    self.tally.unavailable.fetch_add(1, Ordering::Relaxed);
                    self.tally
                        .at(self.started, Instant::now(), |w| w.unavailable += 1);
                }
                Ok(Err(_)) | Err(_) => {}
            }
            if Instant::now() > deadline {
                return None;
            }
            self.tally.retries.fetch_add(1, Ordering::Relaxed);
            self.tally
                .at(self.started, Instant::now(), |w| w.retried += 1);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn send(
        &self,
        planned: &Planned,
        key: &str,
    ) -> Result<(CommandId, Option<InvoiceId>), Status> {
        let mut commands = self.commands.clone();
        let money = |amount: Money| {
            Some(v1::Money {
                amount: amount.to_f64(),
            })
        };
        match planned {
            Planned::Sell { issuer_id, asking } => {
                let reply = commands
                    .sell_invoice(keyed(
                        as_issuer(
                            *issuer_id,
                            SellInvoiceCommand {
                                issuer_id: Some(to_proto_id(*issuer_id)),
                                asking_price: money(*asking),
                            },
                        ),
                        key,
                    ))
                    .await?;
                let command_id = command_id(&reply)?;
                let invoice_id = reply.into_inner().value.parse().map_err(|_| {
                    Status::internal("SellInvoice answered something that is not an id")
                })?;
                Ok((command_id, Some(invoice_id)))
            }
            Planned::Bid {
                investor_id,
                invoice_id,
                amount,
            } => {
                let reply = commands
                    .bid_on_invoice(keyed(
                        as_investor(
                            *investor_id,
                            BidOnInvoiceCommand {
                                investor_id: Some(to_proto_id(*investor_id)),
                                invoice_id: Some(to_proto_id(*invoice_id)),
                                bid: money(*amount),
                            },
                        ),
                        key,
                    ))
                    .await?;
                Ok((command_id(&reply)?, None))
            }
            Planned::Approve(invoice_id, issuer_id) => {
                let reply = commands
                    .approve_financing(keyed(
                        as_issuer(
                            *issuer_id,
                            ApproveFinancingCommand {
                                invoice_id: Some(to_proto_id(*invoice_id)),
                            },
                        ),
                        key,
                    ))
                    .await?;
                Ok((command_id(&reply)?, None))
            }
            Planned::Reverse(invoice_id, issuer_id) => {
                let reply = commands
                    .reverse_financing(keyed(
                        as_issuer(
                            *issuer_id,
                            ReverseFinancingCommand {
                                invoice_id: Some(to_proto_id(*invoice_id)),
                            },
                        ),
                        key,
                    ))
                    .await?;
                Ok((command_id(&reply)?, None))
            }
        }
    }

    /// When the command's outcome shows on the query service, for a minute at most (looked
    /// at ever less often: [`next_look`]).
    async fn await_decided(&self, command_id: CommandId) -> Option<Instant> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(status) = status_of(&self.queries, command_id).await
                && status != v1::CommandStatus::Pending
            {
                return Some(Instant::now());
            }
            tokio::time::sleep(next_look(started.elapsed())).await;
        }
        None
    }
}

/// `request` with an idempotency key.
fn keyed<T>(mut request: Request<T>, key: &str) -> Request<T> {
    let key = key.parse().expect("a UUID is a valid header value");
    request.metadata_mut().insert("idempotency-key", key);
    request
}

fn command_id<T>(reply: &Response<T>) -> Result<CommandId, Status> {
    reply
        .metadata()
        .get("x-command-id")
        .and_then(|id| id.to_str().ok())
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| Status::internal("the listener answered without x-command-id"))
}

/// Whether a client should try again: the request may not have been taken, or its answer lost.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::Aborted
            | Code::ResourceExhausted
    )
}

async fn status_of(queries: &Queries, command_id: CommandId) -> Result<v1::CommandStatus, Status> {
    let request = GetCommandStatusRequest {
        command_id: Some(to_proto_id(command_id)),
    };
    let reply = queries.clone().get_command_status(request).await?;
    Ok(reply.into_inner().status())
}

async fn wait_for_registrations(
    queries: &Queries,
    issuers: &[IssuerId],
    investors: &[InvestorId],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = all_investors(queries).await.unwrap_or_default();
        let issuers_shown = queries
            .clone()
            .all_issuers(v1::Page::default())
            .await
            .map(|reply| reply.into_inner().issuers)
            .unwrap_or_default();
        let known: HashSet<String> = shown
            .iter()
            .filter_map(|investor| investor.id.as_ref().map(|id| id.value.clone()))
            .chain(
                issuers_shown
                    .into_iter()
                    .filter_map(|issuer| issuer.id.map(|id| id.value)),
            )
            .collect();
        let all = investors.iter().map(|id| id.to_string());
        if all
            .chain(issuers.iter().map(|id| id.to_string()))
            .all(|id| known.contains(&id))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the registrations did not show on the query service within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Decided {
    by_kind: HashMap<(&'static str, &'static str), u64>,
    pending: Vec<CommandId>,
}

/// Polls every acknowledged command's status until none is pending or the deadline passes.
async fn settle_outcomes(
    queries: &Queries,
    acked: &[(CommandId, &'static str)],
    deadline: Instant,
) -> anyhow::Result<Decided> {
    let mut by_kind = HashMap::new();
    let mut pending: Vec<(CommandId, &'static str)> = acked.to_vec();
    loop {
        let statuses: Vec<_> = futures::stream::iter(pending.iter().copied())
            .map(|(id, kind)| async move { (id, kind, status_of(queries, id).await) })
            .buffer_unordered(64)
            .collect()
            .await;
        pending.clear();
        for (id, kind, status) in statuses {
            let name = match status {
                Ok(v1::CommandStatus::Applied) => "applied",
                Ok(v1::CommandStatus::Rejected) => "rejected",
                Ok(v1::CommandStatus::Failed) => "FAILED",
                Ok(v1::CommandStatus::Pending) | Err(_) => {
                    pending.push((id, kind));
                    continue;
                }
            };
            *by_kind.entry((kind, name)).or_insert(0) += 1;
        }
        if pending.is_empty() || Instant::now() > deadline {
            return Ok(Decided {
                by_kind,
                pending: pending.into_iter().map(|(id, _)| id).collect(),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

struct MoneyCheck {
    summary: String,
    violations: Vec<String>,
}

/// Waits until the sagas have settled: for every investor, balance + reserved + committed is
/// what it was given, reserved is the asking prices of the invoices it won that are still
/// FINANCED, and committed those it won that were APPROVED. Gives the last findings at the
/// deadline.
async fn settle_money(
    queries: &Queries,
    investors: &[InvestorId],
    funds: Money,
    deadline: Instant,
) -> anyhow::Result<MoneyCheck> {
    loop {
        let check = check_money(queries, investors, funds).await?;
        if check.violations.is_empty() || Instant::now() > deadline {
            return Ok(check);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn check_money(
    queries: &Queries,
    investors: &[InvestorId],
    funds: Money,
) -> anyhow::Result<MoneyCheck> {
    let shown = all_investors(queries).await?;
    let invoices = all_invoices(queries).await?;
    let mut violations = Vec::new();
    let cents = |money: Option<v1::Money>| {
        let amount = money.map_or(0.0, |m| m.amount);
        Money::from_f64(amount)
            .map(Money::cents)
            .map_err(|_| format!("{amount}, which is not an amount of money"))
    };
    // Per investor: (reserved, committed) that the invoices won call for.
    let mut expected: HashMap<String, (u64, u64)> = HashMap::new();
    for invoice in &invoices {
        let Some(winner) = invoice
            .winning_bid
            .as_ref()
            .and_then(|bid| bid.investor_id.as_ref())
        else {
            continue;
        };
        let asking = match cents(invoice.asking_price) {
            Ok(asking) => asking,
            Err(shown) => {
                violations.push(format!("an invoice won by {} asks {shown}", winner.value));
                continue;
            }
        };
        let entry = expected.entry(winner.value.clone()).or_default();
        match invoice.status() {
            v1::InvoiceStatus::Financed => entry.0 += asking,
            v1::InvoiceStatus::Approved => entry.1 += asking,
            v1::InvoiceStatus::Available | v1::InvoiceStatus::Reversed => {}
        }
    }
    let (mut reserved_total, mut committed_total) = (0, 0);
    for id in investors {
        let id = id.to_string();
        let Some(investor) = shown
            .iter()
            .find(|investor| investor.id.as_ref().is_some_and(|shown| shown.value == id))
        else {
            violations.push(format!("investor {id} is not shown"));
            continue;
        };
        let shown = (
            cents(investor.balance),
            cents(investor.reserved),
            cents(investor.committed),
        );
        let (Ok(balance), Ok(reserved), Ok(committed)) = shown else {
            violations.push(format!(
                "investor {id} shows amounts that are not money: {shown:?}"
            ));
            continue;
        };
        reserved_total += reserved;
        committed_total += committed;
        if balance + reserved + committed != funds.cents() {
            violations.push(format!(
                "investor {id}: balance {balance} + reserved {reserved} + committed \
                 {committed} cents is not the {} cents it was given",
                funds.cents()
            ));
        }
        let (want_reserved, want_committed) = expected.get(&id).copied().unwrap_or_default();
        if (reserved, committed) != (want_reserved, want_committed) {
            violations.push(format!(
                "investor {id}: reserved {reserved} and committed {committed} cents, but the \
                 invoices it won call for {want_reserved} and {want_committed}"
            ));
        }
    }
    let summary = format!(
        "{} violations; {:.2} reserved and {:.2} committed in all, matching {} invoices won",
        violations.len(),
        reserved_total as f64 / 100.0,
        committed_total as f64 / 100.0,
        invoices
            .iter()
            .filter(|invoice| invoice.winning_bid.is_some())
            .count()
    );
    Ok(MoneyCheck {
        summary,
        violations,
    })
}
