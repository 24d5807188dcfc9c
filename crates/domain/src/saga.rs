//! The financing saga as pure policies (DESIGN §3): an event maps to at most one command on
//! another aggregate, with a command id derived from the event, so a redelivered event issues
//! the very same command and the handler applies it once.

use uuid::Uuid;

use crate::message::Message;
use crate::{
    Command, CommandId, Event, IntegrationEvent, InvestorCommand, InvestorEvent, InvoiceCommand,
    InvoiceEvent, IssuerCommand, Money,
};

/// A command with the id it is applied under.
#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    pub id: CommandId,
    pub command: Command,
}

/// What a policy asks for: a command, and what to do instead if the domain rejects it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reaction {
    pub command: Issued,
    /// Issued only when `command` is rejected (a bid on an invoice that does not exist gives
    /// the investor's reserved funds back).
    pub compensation: Option<Issued>,
}

impl Reaction {
    /// Its command, then its compensation if it has one.
    pub fn issued(&self) -> impl Iterator<Item = &Issued> {
        std::iter::once(&self.command).chain(&self.compensation)
    }
}

/// Where an event sits in its aggregate's stream; reaction ids derive from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPosition {
    pub aggregate_id: Uuid,
    pub version: u64,
}

impl EventPosition {
    fn issue(self, purpose: &str, command: Command) -> Issued {
        Issued {
            id: CommandId::for_reaction(self.aggregate_id, self.version, purpose),
            command,
        }
    }
}

/// Registering's events create the matching Financing aggregates.
pub fn on_integration_event(event: &IntegrationEvent) -> Reaction {
    let command = match event {
        IntegrationEvent::IssuerRegistered { id, name } => {
            Command::Issuer(*id, IssuerCommand::Create { name: name.clone() })
        }
        IntegrationEvent::InvestorRegistered { id, name, balance } => Command::Investor(
            *id,
            InvestorCommand::Create {
                name: name.clone(),
                funds: *balance,
            },
        ),
    };
    Reaction {
        command: Issued {
            id: CommandId::for_integration_event(event.type_name(), event.subject_id()),
            command,
        },
        compensation: None,
    }
}

/// The saga's reaction to a domain event, if it has one.
pub fn on_event(position: EventPosition, event: &Event) -> Option<Reaction> {
    let release = |investor_id, amount: Money| {
        Command::Investor(investor_id, InvestorCommand::ReleaseFunds { amount })
    };
    let only = |command: Issued| Reaction {
        command,
        compensation: None,
    };
    match event {
        Event::Investor(InvestorEvent::BidOnInvoicePlaced {
            investor_id,
            invoice_id,
            amount,
        }) => Some(Reaction {
            command: position.issue(
                "process-bid",
                Command::Invoice(
                    *invoice_id,
                    InvoiceCommand::ProcessBid {
                        bid: crate::Bid {
                            investor_id: *investor_id,
                            amount: *amount,
                        },
                    },
                ),
            ),
            compensation: Some(position.issue(
                "release-bid-on-missing-invoice",
                release(*investor_id, *amount),
            )),
        }),
        Event::Invoice(InvoiceEvent::BidOnInvoiceRejected { bid, .. }) => Some(only(
            position.issue("release-rejected-bid", release(bid.investor_id, bid.amount)),
        )),
        Event::Invoice(InvoiceEvent::InvoiceFinanced {
            asking_price, bid, ..
        }) => bid
            .amount
            .checked_sub(*asking_price)
            .filter(|surplus| !surplus.is_zero())
            .map(|surplus| {
                only(position.issue("release-bid-surplus", release(bid.investor_id, surplus)))
            }),
        Event::Invoice(InvoiceEvent::InvoiceApproved {
            sold_price, bid, ..
        }) => Some(only(position.issue(
            "commit-sold-price",
            Command::Investor(
                bid.investor_id,
                InvestorCommand::CommitFunds {
                    amount: *sold_price,
                },
            ),
        ))),
        Event::Invoice(InvoiceEvent::InvoiceReversed {
            sold_price, bid, ..
        }) => Some(only(position.issue(
            "release-reversed-financing",
            release(bid.investor_id, *sold_price),
        ))),
        Event::Issuer(_)
        | Event::Investor(_)
        | Event::Invoice(InvoiceEvent::InvoiceCreated { .. }) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bid, InvestorId, InvoiceId, IssuerId};

    const INVESTOR: InvestorId = InvestorId::from_u128(1);
    const INVOICE: InvoiceId = InvoiceId::from_u128(2);

    fn at(version: u64) -> EventPosition {
        EventPosition {
            aggregate_id: INVOICE.as_uuid(),
            version,
        }
    }

    fn bid(amount: u64) -> Bid {
        Bid {
            investor_id: INVESTOR,
            amount: Money::units(amount),
        }
    }

    fn command_of(reaction: Option<Reaction>) -> Option<Command> {
        reaction.map(|r| r.command.command)
    }

    fn release(amount: u64) -> Command {
        Command::Investor(
            INVESTOR,
            InvestorCommand::ReleaseFunds {
                amount: Money::units(amount),
            },
        )
    }

    #[test]
    fn a_placed_bid_is_processed_by_the_invoice_and_released_if_the_invoice_is_missing() {
        let placed = Event::Investor(InvestorEvent::BidOnInvoicePlaced {
            investor_id: INVESTOR,
            invoice_id: INVOICE,
            amount: Money::units(20),
        });
        let reaction = on_event(at(3), &placed).expect("a reaction");
        assert_eq!(
            reaction.command.command,
            Command::Invoice(INVOICE, InvoiceCommand::ProcessBid { bid: bid(20) })
        );
        assert_eq!(reaction.compensation.map(|c| c.command), Some(release(20)));
    }

    #[test]
    fn a_rejected_bid_releases_the_whole_bid() {
        let rejected = Event::Invoice(InvoiceEvent::BidOnInvoiceRejected {
            invoice_id: INVOICE,
            bid: bid(5),
        });
        assert_eq!(command_of(on_event(at(2), &rejected)), Some(release(5)));
    }

    #[test]
    fn a_winning_bid_above_the_asking_price_releases_the_surplus() {
        let financed = Event::Invoice(InvoiceEvent::InvoiceFinanced {
            invoice_id: INVOICE,
            asking_price: Money::units(10),
            bid: bid(20),
        });
        assert_eq!(command_of(on_event(at(2), &financed)), Some(release(10)));
    }

    #[test]
    fn a_winning_bid_of_exactly_the_asking_price_releases_nothing() {
        let financed = Event::Invoice(InvoiceEvent::InvoiceFinanced {
            invoice_id: INVOICE,
            asking_price: Money::units(10),
            bid: bid(10),
        });
        assert_eq!(on_event(at(2), &financed), None);
    }

    #[test]
    fn an_approval_commits_the_sold_price() {
        let approved = Event::Invoice(InvoiceEvent::InvoiceApproved {
            invoice_id: INVOICE,
            sold_price: Money::units(10),
            bid: bid(20),
        });
        assert_eq!(
            command_of(on_event(at(3), &approved)),
            Some(Command::Investor(
                INVESTOR,
                InvestorCommand::CommitFunds {
                    amount: Money::units(10)
                }
            ))
        );
    }

    #[test]
    fn a_reversal_releases_the_sold_price() {
        let reversed = Event::Invoice(InvoiceEvent::InvoiceReversed {
            invoice_id: INVOICE,
            sold_price: Money::units(10),
            bid: bid(20),
        });
        assert_eq!(command_of(on_event(at(3), &reversed)), Some(release(10)));
    }

    #[test]
    fn a_redelivered_event_issues_the_same_command_id_and_another_event_a_different_one() {
        let reversed = Event::Invoice(InvoiceEvent::InvoiceReversed {
            invoice_id: INVOICE,
            sold_price: Money::units(10),
            bid: bid(20),
        });
        let id = |version| on_event(at(version), &reversed).unwrap().command.id;
        assert_eq!(id(3), id(3));
        assert_ne!(id(3), id(4));
    }

    #[test]
    fn registrations_create_the_aggregates_under_an_id_derived_from_the_subject() {
        let issuer = IssuerId::new_random();
        let registered = IntegrationEvent::IssuerRegistered {
            id: issuer,
            name: "ACME".into(),
        };
        let reaction = on_integration_event(&registered);
        assert_eq!(
            reaction.command.command,
            Command::Issuer(
                issuer,
                IssuerCommand::Create {
                    name: "ACME".into()
                }
            )
        );
        assert_eq!(
            reaction.command.id,
            on_integration_event(&registered).command.id
        );

        let investor = IntegrationEvent::InvestorRegistered {
            id: INVESTOR,
            name: "Ada".into(),
            balance: Money::units(100),
        };
        assert_eq!(
            on_integration_event(&investor).command.command,
            Command::Investor(
                INVESTOR,
                InvestorCommand::Create {
                    name: "Ada".into(),
                    funds: Money::units(100)
                }
            )
        );
    }

    #[test]
    fn events_without_a_policy_issue_nothing() {
        let created = Event::Invoice(InvoiceEvent::InvoiceCreated {
            invoice_id: INVOICE,
            issuer_id: IssuerId::new_random(),
            asking_price: Money::units(10),
        });
        assert_eq!(on_event(at(1), &created), None);
    }
}
