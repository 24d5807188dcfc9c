//! Property: whatever clients send, in any order, and however often each event is delivered,
//! the saga keeps every investor's money whole: `balance + reserved + committed == funds
//! added`, `committed` is the price of the approved invoices the investor won, and `reserved`
//! the price of the financed ones not yet approved or reversed.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use financing_domain::saga::{self, EventPosition, Issued};
use financing_domain::{
    Actor, Aggregate, ClientCommand, Command, CommandId, Event, IntegrationEvent, Investor,
    InvestorId, Invoice, InvoiceId, InvoiceStatus, Issuer, IssuerId, Money, Rejection, Role,
};
use proptest::prelude::*;

const ISSUERS: u128 = 3; // the last one is never registered
const INVESTORS: u128 = 3;
const INVOICES: u128 = 4;

fn issuer(i: u128) -> IssuerId {
    IssuerId::from_u128(100 + i)
}
fn investor(i: u128) -> InvestorId {
    InvestorId::from_u128(200 + i)
}
fn invoice(i: u128) -> InvoiceId {
    InvoiceId::from_u128(300 + i)
}

/// One aggregate type's streams: state and version by id.
struct Streams<A: Aggregate>(HashMap<A::Id, (A, u64)>);

impl<A: Aggregate> Streams<A>
where
    A::Id: Hash + Eq,
{
    fn state(&self, id: A::Id) -> A {
        self.0
            .get(&id)
            .map(|(state, _)| state.clone())
            .unwrap_or_default()
    }

    /// Decides and applies; returns each new event with its position.
    fn execute(
        &mut self,
        id: A::Id,
        command: &A::Command,
    ) -> Result<Vec<(EventPosition, A::Event)>, Rejection> {
        let (state, version) = self.0.entry(id).or_default();
        let events = state.decide(id, command)?;
        Ok(events
            .into_iter()
            .map(|event| {
                state.apply(&event).expect("decided events apply");
                *version += 1;
                let position = EventPosition {
                    aggregate_id: id.into(),
                    version: *version,
                };
                (position, event)
            })
            .collect())
    }
}

struct World {
    issuers: Streams<Issuer>,
    investors: Streams<Investor>,
    invoices: Streams<Invoice>,
    outcomes: HashMap<CommandId, bool>,
    funds_added: HashMap<InvestorId, Money>,
    published: VecDeque<(EventPosition, Event)>,
}

impl World {
    fn new() -> World {
        World {
            issuers: Streams(HashMap::new()),
            investors: Streams(HashMap::new()),
            invoices: Streams(HashMap::new()),
            outcomes: HashMap::new(),
            funds_added: HashMap::new(),
            published: VecDeque::new(),
        }
    }

    /// Applies a command once per id, as the handler does; returns whether it was applied.
    fn handle(&mut self, issued: &Issued) -> bool {
        if let Some(applied) = self.outcomes.get(&issued.id) {
            return *applied;
        }
        let events: Result<Vec<(EventPosition, Event)>, Rejection> = match &issued.command {
            Command::Issuer(id, c) => self.issuers.execute(*id, c).map(|events| {
                events
                    .into_iter()
                    .map(|(p, e)| (p, Event::Issuer(e)))
                    .collect()
            }),
            Command::Investor(id, c) => self.investors.execute(*id, c).map(|events| {
                events
                    .into_iter()
                    .map(|(p, e)| (p, Event::Investor(e)))
                    .collect()
            }),
            Command::Invoice(id, c) => self.invoices.execute(*id, c).map(|events| {
                events
                    .into_iter()
                    .map(|(p, e)| (p, Event::Invoice(e)))
                    .collect()
            }),
        };
        let applied = events.is_ok();
        self.outcomes.insert(issued.id, applied);
        self.published.extend(events.unwrap_or_default());
        applied
    }

    fn react(&mut self, reaction: saga::Reaction) {
        if !self.handle(&reaction.command)
            && let Some(compensation) = &reaction.compensation
        {
            self.handle(compensation);
        }
    }

    fn register(&mut self, event: IntegrationEvent) {
        if let IntegrationEvent::InvestorRegistered { id, balance, .. } = &event {
            self.funds_added.insert(*id, *balance);
        }
        self.react(saga::on_integration_event(&event));
    }

    fn client(&mut self, command: ClientCommand) {
        let issuer_registered = match &command {
            ClientCommand::SellInvoice { issuer_id, .. } => {
                self.issuers.state(*issuer_id).is_registered()
            }
            _ => false,
        };
        // Support approves and reverses: whose invoice it is does not touch the money.
        let operator = Actor::new(uuid::Uuid::from_u128(1), Role::Operator);
        self.handle(&Issued {
            id: CommandId::new_random(),
            command: command.into_command(issuer_registered, Some(operator)),
        });
    }

    /// Delivers every published event to the saga, each `deliveries` times.
    fn drain(&mut self, deliveries: &mut impl Iterator<Item = usize>) {
        while let Some((position, event)) = self.published.pop_front() {
            for _ in 0..deliveries.next().unwrap_or(1) {
                if let Some(reaction) = saga::on_event(position, &event) {
                    self.react(reaction);
                }
            }
        }
    }

    fn assert_money_is_whole(&self) {
        for i in 0..INVESTORS {
            let id = investor(i);
            let account = self.investors.state(id);
            let funds = self.funds_added.get(&id).copied().unwrap_or(Money::ZERO);
            let total = account
                .balance()
                .checked_add(account.reserved())
                .and_then(|sum| sum.checked_add(account.committed()));
            assert_eq!(total, Some(funds), "investor {i}: {account:?}");

            let won = |status| -> Money {
                (0..INVOICES)
                    .map(|n| self.invoices.state(invoice(n)))
                    .filter(|inv| inv.status() == Some(status))
                    .filter(|inv| inv.winning_bid().is_some_and(|bid| bid.investor_id == id))
                    .filter_map(|inv| inv.asking_price())
                    .fold(Money::ZERO, |sum, price| sum.checked_add(price).unwrap())
            };
            assert_eq!(
                account.committed(),
                won(InvoiceStatus::Approved),
                "investor {i}"
            );
            assert_eq!(
                account.reserved(),
                won(InvoiceStatus::Financed),
                "investor {i}"
            );
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Sell {
        issuer: u128,
        invoice: u128,
        cents: u64,
    },
    Bid {
        investor: u128,
        invoice: u128,
        cents: u64,
    },
    Approve {
        invoice: u128,
    },
    Reverse {
        invoice: u128,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..ISSUERS, 0..INVOICES, 1..5_000u64).prop_map(|(issuer, invoice, cents)| Op::Sell {
            issuer,
            invoice,
            cents
        }),
        (0..INVESTORS, 0..INVOICES, 1..6_000u64).prop_map(|(investor, invoice, cents)| Op::Bid {
            investor,
            invoice,
            cents
        }),
        (0..INVOICES).prop_map(|invoice| Op::Approve { invoice }),
        (0..INVOICES).prop_map(|invoice| Op::Reverse { invoice }),
    ]
}

proptest! {
    #[test]
    fn money_is_never_created_lost_or_negative(
        funds in proptest::collection::vec(0..10_000u64, INVESTORS as usize),
        ops in proptest::collection::vec(op(), 1..60),
        deliveries in proptest::collection::vec(1..=3usize, 200),
    ) {
        let mut deliveries = deliveries.into_iter().cycle();
        let mut world = World::new();
        for i in 0..ISSUERS - 1 {
            world.register(IntegrationEvent::IssuerRegistered { id: issuer(i), name: format!("issuer {i}") });
        }
        for (i, cents) in funds.iter().enumerate() {
            world.register(IntegrationEvent::InvestorRegistered {
                id: investor(i as u128),
                name: format!("investor {i}"),
                balance: Money::from_cents(*cents),
            });
        }
        world.drain(&mut deliveries);
        world.assert_money_is_whole();

        for op in ops {
            world.client(match op {
                Op::Sell { issuer: i, invoice: n, cents } => ClientCommand::SellInvoice {
                    invoice_id: invoice(n), issuer_id: issuer(i), asking_price: Money::from_cents(cents),
                },
                Op::Bid { investor: i, invoice: n, cents } => ClientCommand::BidOnInvoice {
                    investor_id: investor(i), invoice_id: invoice(n), bid: Money::from_cents(cents),
                },
                Op::Approve { invoice: n } => ClientCommand::ApproveFinancing { invoice_id: invoice(n) },
                Op::Reverse { invoice: n } => ClientCommand::ReverseFinancing { invoice_id: invoice(n) },
            });
            world.drain(&mut deliveries);
            world.assert_money_is_whole();
        }
    }
}
