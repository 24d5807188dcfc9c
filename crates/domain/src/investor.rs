//! The investor's account: money moves between balance, reserved (bids in flight) and
//! committed (approved financings), and never goes below zero.

use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::{Aggregate, ImpossibleEvent, InvestorId, InvoiceId, Money, Rejection};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Investor {
    registered: bool,
    balance: Money,
    reserved: Money,
    committed: Money,
}

/// Where an investor's money sits.
#[derive(Debug, Clone, Copy)]
enum Column {
    Balance,
    Reserved,
    Committed,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InvestorCommand {
    /// From the `InvestorRegistered` integration event: create the account with its funds.
    Create { name: String, funds: Money },
    /// Reserve `amount` of the balance for a bid on an invoice.
    PlaceBid {
        invoice_id: InvoiceId,
        amount: Money,
    },
    /// Give reserved funds back to the balance (a rejected bid, the surplus of a winning
    /// bid, a reversed financing).
    ReleaseFunds { amount: Money },
    /// Turn reserved funds into committed ones (an approved financing).
    CommitFunds { amount: Money },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum InvestorEvent {
    InvestorCreated {
        investor_id: InvestorId,
        name: String,
    },
    InvestorFundsAdded {
        investor_id: InvestorId,
        amount: Money,
    },
    /// Moves `amount` from balance to reserved (schema version 2; version 1 named it
    /// `bid_amount`).
    BidOnInvoicePlaced {
        investor_id: InvestorId,
        invoice_id: InvoiceId,
        amount: Money,
    },
    /// Moves `amount` from reserved to balance.
    InvestorFundsReleased {
        investor_id: InvestorId,
        amount: Money,
    },
    /// Moves `amount` from reserved to committed.
    InvestorFundsCommitted {
        investor_id: InvestorId,
        amount: Money,
    },
}

impl Investor {
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    pub fn balance(&self) -> Money {
        self.balance
    }

    pub fn reserved(&self) -> Money {
        self.reserved
    }

    pub fn committed(&self) -> Money {
        self.committed
    }

    /// Moves `amount` from one column (or from outside, for funds added) to another, all or
    /// nothing: a move the account cannot afford, or past what an amount can reach, is refused.
    fn move_money(
        &mut self,
        from: Option<Column>,
        to: Column,
        amount: Money,
    ) -> Result<(), String> {
        let mut after = self.clone();
        if let Some(from) = from {
            let available = *after.column(from);
            *after.column(from) = available
                .checked_sub(amount)
                .ok_or_else(|| format!("moves {amount} out of {from:?} {available}"))?;
        }
        let held = *after.column(to);
        *after.column(to) = held
            .checked_add(amount)
            .ok_or_else(|| format!("{to:?} {held} cannot take {amount} more"))?;
        *self = after;
        Ok(())
    }

    fn column(&mut self, column: Column) -> &mut Money {
        match column {
            Column::Balance => &mut self.balance,
            Column::Reserved => &mut self.reserved,
            Column::Committed => &mut self.committed,
        }
    }

    fn take_from_reserved(&self, amount: Money) -> Result<(), Rejection> {
        if amount.is_zero() {
            return Err(Rejection::AmountNotPositive);
        }
        if amount > self.reserved {
            return Err(Rejection::InsufficientReserved {
                requested: amount,
                reserved: self.reserved,
            });
        }
        Ok(())
    }
}

impl Aggregate for Investor {
    const TYPE: &'static str = "Investor";
    type Id = InvestorId;
    type Command = InvestorCommand;
    type Event = InvestorEvent;

    fn decide(
        &self,
        id: InvestorId,
        command: &InvestorCommand,
    ) -> Result<Vec<InvestorEvent>, Rejection> {
        use InvestorEvent::*;
        let investor_id = id;
        match command {
            InvestorCommand::Create { .. } if self.registered => {
                Err(Rejection::already_exists::<Investor>(id))
            }
            InvestorCommand::Create { name, funds } => {
                let mut events = vec![InvestorCreated {
                    investor_id,
                    name: name.clone(),
                }];
                if !funds.is_zero() {
                    events.push(InvestorFundsAdded {
                        investor_id,
                        amount: *funds,
                    });
                }
                Ok(events)
            }
            _ if !self.registered => Err(Rejection::not_found::<Investor>(id)),
            InvestorCommand::PlaceBid { amount, .. } if amount.is_zero() => {
                Err(Rejection::AmountNotPositive)
            }
            InvestorCommand::PlaceBid { amount, .. } if *amount > self.balance => {
                Err(Rejection::InsufficientBalance {
                    requested: *amount,
                    available: self.balance,
                })
            }
            InvestorCommand::PlaceBid { invoice_id, amount } => Ok(vec![BidOnInvoicePlaced {
                investor_id,
                invoice_id: *invoice_id,
                amount: *amount,
            }]),
            InvestorCommand::ReleaseFunds { amount } => {
                self.take_from_reserved(*amount)?;
                Ok(vec![InvestorFundsReleased {
                    investor_id,
                    amount: *amount,
                }])
            }
            InvestorCommand::CommitFunds { amount } => {
                self.take_from_reserved(*amount)?;
                Ok(vec![InvestorFundsCommitted {
                    investor_id,
                    amount: *amount,
                }])
            }
        }
    }

    fn apply(&mut self, event: &InvestorEvent) -> Result<(), ImpossibleEvent> {
        use InvestorEvent::*;
        let moved = match event {
            InvestorCreated { .. } if self.registered => Err("the investor already exists".into()),
            InvestorCreated { .. } => {
                self.registered = true;
                Ok(())
            }
            _ if !self.registered => Err("the investor does not exist".into()),
            InvestorFundsAdded { amount, .. } => self.move_money(None, Column::Balance, *amount),
            BidOnInvoicePlaced { amount, .. } => {
                self.move_money(Some(Column::Balance), Column::Reserved, *amount)
            }
            InvestorFundsReleased { amount, .. } => {
                self.move_money(Some(Column::Reserved), Column::Balance, *amount)
            }
            InvestorFundsCommitted { amount, .. } => {
                self.move_money(Some(Column::Reserved), Column::Committed, *amount)
            }
        };
        moved.map_err(|reason| ImpossibleEvent::new(event, reason))
    }
}

impl Message for InvestorEvent {
    fn type_name(&self) -> &'static str {
        match self {
            InvestorEvent::InvestorCreated { .. } => "InvestorCreated",
            InvestorEvent::InvestorFundsAdded { .. } => "InvestorFundsAdded",
            InvestorEvent::BidOnInvoicePlaced { .. } => "BidOnInvoicePlaced",
            InvestorEvent::InvestorFundsReleased { .. } => "InvestorFundsReleased",
            InvestorEvent::InvestorFundsCommitted { .. } => "InvestorFundsCommitted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InvestorEvent::*;
    use super::*;
    use crate::testing::given;

    fn registered_with(id: InvestorId, funds: u64) -> Vec<InvestorEvent> {
        vec![
            InvestorCreated {
                investor_id: id,
                name: "Ada".into(),
            },
            InvestorFundsAdded {
                investor_id: id,
                amount: Money::units(funds),
            },
        ]
    }

    fn with_bid(id: InvestorId, funds: u64, bid: u64) -> Vec<InvestorEvent> {
        let mut history = registered_with(id, funds);
        history.push(BidOnInvoicePlaced {
            investor_id: id,
            invoice_id: InvoiceId::new_random(),
            amount: Money::units(bid),
        });
        history
    }

    #[test]
    fn a_registered_investor_is_created_with_its_funds() {
        let id = InvestorId::new_random();
        let investor = given::<Investor>(id, [])
            .when(InvestorCommand::Create {
                name: "Ada".into(),
                funds: Money::units(100),
            })
            .then(registered_with(id, 100));
        assert_eq!(investor.balance(), Money::units(100));
    }

    #[test]
    fn an_investor_registered_without_funds_has_no_funds_added_event() {
        let id = InvestorId::new_random();
        given::<Investor>(id, [])
            .when(InvestorCommand::Create {
                name: "Ada".into(),
                funds: Money::ZERO,
            })
            .then([InvestorCreated {
                investor_id: id,
                name: "Ada".into(),
            }]);
    }

    #[test]
    fn an_investor_is_created_only_once() {
        let id = InvestorId::new_random();
        given::<Investor>(id, registered_with(id, 100))
            .when(InvestorCommand::Create {
                name: "Ada".into(),
                funds: Money::units(100),
            })
            .then_rejected(Rejection::already_exists::<Investor>(id));
    }

    #[test]
    fn a_bid_within_the_balance_reserves_the_amount() {
        let id = InvestorId::new_random();
        let invoice_id = InvoiceId::new_random();
        let investor = given::<Investor>(id, registered_with(id, 100))
            .when(InvestorCommand::PlaceBid {
                invoice_id,
                amount: Money::units(20),
            })
            .then([BidOnInvoicePlaced {
                investor_id: id,
                invoice_id,
                amount: Money::units(20),
            }]);
        assert_eq!(investor.balance(), Money::units(80));
        assert_eq!(investor.reserved(), Money::units(20));
    }

    #[test]
    fn a_bid_of_the_whole_balance_is_placed() {
        let id = InvestorId::new_random();
        let invoice_id = InvoiceId::new_random();
        let investor = given::<Investor>(id, registered_with(id, 100))
            .when(InvestorCommand::PlaceBid {
                invoice_id,
                amount: Money::units(100),
            })
            .then([BidOnInvoicePlaced {
                investor_id: id,
                invoice_id,
                amount: Money::units(100),
            }]);
        assert_eq!(investor.balance(), Money::ZERO);
    }

    #[test]
    fn a_bid_above_the_balance_is_rejected_with_no_event() {
        let id = InvestorId::new_random();
        given::<Investor>(id, registered_with(id, 5))
            .when(InvestorCommand::PlaceBid {
                invoice_id: InvoiceId::new_random(),
                amount: Money::units(10),
            })
            .then_rejected(Rejection::InsufficientBalance {
                requested: Money::units(10),
                available: Money::units(5),
            });
    }

    #[test]
    fn a_bid_of_zero_is_rejected() {
        let id = InvestorId::new_random();
        given::<Investor>(id, registered_with(id, 5))
            .when(InvestorCommand::PlaceBid {
                invoice_id: InvoiceId::new_random(),
                amount: Money::ZERO,
            })
            .then_rejected(Rejection::AmountNotPositive);
    }

    #[test]
    fn a_bid_by_an_unknown_investor_is_rejected() {
        let id = InvestorId::new_random();
        given::<Investor>(id, [])
            .when(InvestorCommand::PlaceBid {
                invoice_id: InvoiceId::new_random(),
                amount: Money::units(1),
            })
            .then_rejected(Rejection::not_found::<Investor>(id));
    }

    #[test]
    fn released_funds_go_back_to_the_balance() {
        let id = InvestorId::new_random();
        let investor = given::<Investor>(id, with_bid(id, 100, 20))
            .when(InvestorCommand::ReleaseFunds {
                amount: Money::units(5),
            })
            .then([InvestorFundsReleased {
                investor_id: id,
                amount: Money::units(5),
            }]);
        assert_eq!(investor.balance(), Money::units(85));
        assert_eq!(investor.reserved(), Money::units(15));
    }

    #[test]
    fn committed_funds_leave_reserved_for_committed() {
        let id = InvestorId::new_random();
        let investor = given::<Investor>(id, with_bid(id, 100, 20))
            .when(InvestorCommand::CommitFunds {
                amount: Money::units(20),
            })
            .then([InvestorFundsCommitted {
                investor_id: id,
                amount: Money::units(20),
            }]);
        assert_eq!(investor.balance(), Money::units(80));
        assert_eq!(investor.reserved(), Money::ZERO);
        assert_eq!(investor.committed(), Money::units(20));
    }

    #[test]
    fn releasing_more_than_is_reserved_is_an_error_not_a_negative_number() {
        let id = InvestorId::new_random();
        given::<Investor>(id, with_bid(id, 100, 20))
            .when(InvestorCommand::ReleaseFunds {
                amount: Money::units(21),
            })
            .then_rejected(Rejection::InsufficientReserved {
                requested: Money::units(21),
                reserved: Money::units(20),
            });
    }

    #[test]
    fn committing_more_than_is_reserved_is_an_error_not_a_negative_number() {
        let id = InvestorId::new_random();
        given::<Investor>(id, registered_with(id, 100))
            .when(InvestorCommand::CommitFunds {
                amount: Money::units(1),
            })
            .then_rejected(Rejection::InsufficientReserved {
                requested: Money::units(1),
                reserved: Money::ZERO,
            });
    }

    #[test]
    fn an_event_releasing_more_than_is_reserved_is_impossible_and_changes_nothing() {
        let id = InvestorId::new_random();
        let mut investor = Investor::replay(&with_bid(id, 100, 20)).unwrap();
        let before = investor.clone();
        let error = investor
            .apply(&InvestorFundsReleased {
                investor_id: id,
                amount: Money::units(30),
            })
            .unwrap_err();
        assert_eq!(error.event, "InvestorFundsReleased");
        assert_eq!(investor, before, "no money is made up");
    }

    #[test]
    fn an_event_committing_more_than_is_reserved_is_impossible() {
        let id = InvestorId::new_random();
        let mut investor = Investor::replay(&with_bid(id, 100, 20)).unwrap();
        let commit = InvestorFundsCommitted {
            investor_id: id,
            amount: Money::units(21),
        };
        assert!(investor.apply(&commit).is_err());
        assert_eq!(investor.committed(), Money::ZERO);
    }

    #[test]
    fn an_event_bidding_more_than_the_balance_is_impossible() {
        let id = InvestorId::new_random();
        let mut investor = Investor::replay(&registered_with(id, 10)).unwrap();
        let bid = BidOnInvoicePlaced {
            investor_id: id,
            invoice_id: InvoiceId::new_random(),
            amount: Money::units(11),
        };
        assert!(investor.apply(&bid).is_err());
        assert_eq!(investor.balance(), Money::units(10));
    }

    #[test]
    fn funds_past_what_money_can_hold_are_impossible() {
        let id = InvestorId::new_random();
        let mut investor = Investor::replay(&registered_with(id, 0)).unwrap();
        let huge = |amount| InvestorFundsAdded {
            investor_id: id,
            amount,
        };
        investor.apply(&huge(Money::MAX_TOTAL)).unwrap();
        assert!(investor.apply(&huge(Money::from_cents(1))).is_err());
        assert_eq!(investor.balance(), Money::MAX_TOTAL);
    }

    #[test]
    fn an_event_for_an_investor_that_does_not_exist_or_a_second_creation_is_impossible() {
        let id = InvestorId::new_random();
        let funds = InvestorFundsAdded {
            investor_id: id,
            amount: Money::units(1),
        };
        assert!(Investor::default().apply(&funds).is_err());
        let mut investor = Investor::replay(&registered_with(id, 1)).unwrap();
        let again = InvestorCreated {
            investor_id: id,
            name: "Ada".into(),
        };
        assert!(investor.apply(&again).is_err());
    }
}
