//! The invoice an issuer puts on sale: AVAILABLE -> FINANCED (a winning bid) -> APPROVED or
//! REVERSED by the issuer.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::{
    Actor, Aggregate, ImpossibleEvent, InvestorId, InvoiceId, IssuerId, Money, Rejection, Role,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InvoiceStatus {
    Available,
    Financed,
    Approved,
    Reversed,
}

impl fmt::Display for InvoiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvoiceStatus::Available => "AVAILABLE",
            InvoiceStatus::Financed => "FINANCED",
            InvoiceStatus::Approved => "APPROVED",
            InvoiceStatus::Reversed => "REVERSED",
        })
    }
}

impl std::str::FromStr for InvoiceStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<InvoiceStatus, String> {
        [
            InvoiceStatus::Available,
            InvoiceStatus::Financed,
            InvoiceStatus::Approved,
            InvoiceStatus::Reversed,
        ]
        .into_iter()
        .find(|status| status.to_string() == text)
        .ok_or_else(|| format!("{text:?} is not an invoice status"))
    }
}

/// An investor's offer for an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    pub investor_id: InvestorId,
    pub amount: Money,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    on_sale: Option<OnSale>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OnSale {
    issuer_id: IssuerId,
    asking_price: Money,
    status: InvoiceStatus,
    winning_bid: Option<Bid>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InvoiceCommand {
    /// Put a new invoice on sale. The handler looks the issuer up first and says whether it is
    /// registered: an invoice needs an existing issuer.
    Sell {
        issuer_id: IssuerId,
        asking_price: Money,
        issuer_registered: bool,
    },
    /// Match a bid the investor has already reserved funds for.
    ProcessBid {
        bid: Bid,
    },
    /// Only the invoice's own issuer, or an operator, may approve or reverse its financing:
    /// `by` is who asked (`None`: nobody authenticated).
    ApproveFinancing {
        by: Option<Actor>,
    },
    ReverseFinancing {
        by: Option<Actor>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum InvoiceEvent {
    InvoiceCreated {
        invoice_id: InvoiceId,
        issuer_id: IssuerId,
        asking_price: Money,
    },
    InvoiceFinanced {
        invoice_id: InvoiceId,
        asking_price: Money,
        bid: Bid,
    },
    BidOnInvoiceRejected {
        invoice_id: InvoiceId,
        bid: Bid,
    },
    InvoiceApproved {
        invoice_id: InvoiceId,
        sold_price: Money,
        bid: Bid,
    },
    InvoiceReversed {
        invoice_id: InvoiceId,
        sold_price: Money,
        bid: Bid,
    },
}

impl Invoice {
    pub fn status(&self) -> Option<InvoiceStatus> {
        self.on_sale.as_ref().map(|sale| sale.status)
    }

    pub fn asking_price(&self) -> Option<Money> {
        self.on_sale.as_ref().map(|sale| sale.asking_price)
    }

    pub fn winning_bid(&self) -> Option<Bid> {
        self.on_sale.as_ref().and_then(|sale| sale.winning_bid)
    }
}

impl Aggregate for Invoice {
    const TYPE: &'static str = "Invoice";
    type Id = InvoiceId;
    type Command = InvoiceCommand;
    type Event = InvoiceEvent;

    fn decide(
        &self,
        invoice_id: InvoiceId,
        command: &InvoiceCommand,
    ) -> Result<Vec<InvoiceEvent>, Rejection> {
        use InvoiceEvent::*;
        let Some(sale) = &self.on_sale else {
            return match command {
                InvoiceCommand::Sell {
                    issuer_registered: false,
                    issuer_id,
                    ..
                } => Err(Rejection::UnknownIssuer(*issuer_id)),
                InvoiceCommand::Sell { asking_price, .. } if asking_price.is_zero() => {
                    Err(Rejection::AmountNotPositive)
                }
                InvoiceCommand::Sell {
                    issuer_id,
                    asking_price,
                    ..
                } => Ok(vec![InvoiceCreated {
                    invoice_id,
                    issuer_id: *issuer_id,
                    asking_price: *asking_price,
                }]),
                _ => Err(Rejection::not_found::<Invoice>(invoice_id)),
            };
        };
        let financed_bid = |by: &Option<Actor>| {
            let allowed = by.is_some_and(|actor| {
                actor.role == Role::Operator || actor.is(Role::Issuer, sale.issuer_id)
            });
            if !allowed {
                return Err(Rejection::NotTheIssuer {
                    issuer_id: sale.issuer_id,
                    asked_by: *by,
                });
            }
            match (sale.status, sale.winning_bid) {
                (InvoiceStatus::Financed, Some(bid)) => Ok(bid),
                _ => Err(Rejection::InvoiceNotFinanced {
                    status: sale.status,
                }),
            }
        };
        match command {
            InvoiceCommand::Sell { .. } => Err(Rejection::already_exists::<Invoice>(invoice_id)),
            InvoiceCommand::ProcessBid { bid }
                if sale.status == InvoiceStatus::Available && bid.amount >= sale.asking_price =>
            {
                Ok(vec![InvoiceFinanced {
                    invoice_id,
                    asking_price: sale.asking_price,
                    bid: *bid,
                }])
            }
            InvoiceCommand::ProcessBid { bid } => Ok(vec![BidOnInvoiceRejected {
                invoice_id,
                bid: *bid,
            }]),
            InvoiceCommand::ApproveFinancing { by } => Ok(vec![InvoiceApproved {
                invoice_id,
                sold_price: sale.asking_price,
                bid: financed_bid(by)?,
            }]),
            InvoiceCommand::ReverseFinancing { by } => Ok(vec![InvoiceReversed {
                invoice_id,
                sold_price: sale.asking_price,
                bid: financed_bid(by)?,
            }]),
        }
    }

    fn apply(&mut self, event: &InvoiceEvent) -> Result<(), ImpossibleEvent> {
        use InvoiceStatus::{Available, Financed};
        let impossible = |reason: String| Err(ImpossibleEvent::new(event, reason));
        let Some(sale) = &mut self.on_sale else {
            return match event {
                InvoiceEvent::InvoiceCreated {
                    issuer_id,
                    asking_price,
                    ..
                } => {
                    self.on_sale = Some(OnSale {
                        issuer_id: *issuer_id,
                        asking_price: *asking_price,
                        status: Available,
                        winning_bid: None,
                    });
                    Ok(())
                }
                _ => impossible("the invoice does not exist".into()),
            };
        };
        match (event, sale.status) {
            (InvoiceEvent::InvoiceCreated { .. }, _) => {
                impossible("the invoice already exists".into())
            }
            (InvoiceEvent::BidOnInvoiceRejected { .. }, _) => Ok(()),
            (InvoiceEvent::InvoiceFinanced { bid, .. }, Available) => {
                sale.status = Financed;
                sale.winning_bid = Some(*bid);
                Ok(())
            }
            (InvoiceEvent::InvoiceApproved { .. }, Financed) => {
                sale.status = InvoiceStatus::Approved;
                Ok(())
            }
            (InvoiceEvent::InvoiceReversed { .. }, Financed) => {
                sale.status = InvoiceStatus::Reversed;
                Ok(())
            }
            (_, status) => impossible(format!("the invoice is {status}")),
        }
    }
}

impl Message for InvoiceEvent {
    fn type_name(&self) -> &'static str {
        match self {
            InvoiceEvent::InvoiceCreated { .. } => "InvoiceCreated",
            InvoiceEvent::InvoiceFinanced { .. } => "InvoiceFinanced",
            InvoiceEvent::BidOnInvoiceRejected { .. } => "BidOnInvoiceRejected",
            InvoiceEvent::InvoiceApproved { .. } => "InvoiceApproved",
            InvoiceEvent::InvoiceReversed { .. } => "InvoiceReversed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InvoiceEvent::*;
    use super::*;
    use crate::testing::given;

    const ISSUER: IssuerId = IssuerId::from_u128(1);

    fn the_issuer() -> Option<Actor> {
        Some(Actor::new(ISSUER, Role::Issuer))
    }

    fn approve() -> InvoiceCommand {
        InvoiceCommand::ApproveFinancing { by: the_issuer() }
    }

    fn reverse() -> InvoiceCommand {
        InvoiceCommand::ReverseFinancing { by: the_issuer() }
    }

    fn on_sale_for(id: InvoiceId, asking: u64) -> Vec<InvoiceEvent> {
        vec![InvoiceCreated {
            invoice_id: id,
            issuer_id: ISSUER,
            asking_price: Money::units(asking),
        }]
    }

    fn bid(amount: u64) -> Bid {
        Bid {
            investor_id: InvestorId::from_u128(7),
            amount: Money::units(amount),
        }
    }

    fn financed(id: InvoiceId, asking: u64, with: Bid) -> Vec<InvoiceEvent> {
        let mut history = on_sale_for(id, asking);
        history.push(InvoiceFinanced {
            invoice_id: id,
            asking_price: Money::units(asking),
            bid: with,
        });
        history
    }

    fn sell(asking: u64, issuer_registered: bool) -> InvoiceCommand {
        InvoiceCommand::Sell {
            issuer_id: ISSUER,
            asking_price: Money::units(asking),
            issuer_registered,
        }
    }

    #[test]
    fn a_status_reads_back_from_its_text() {
        for status in [
            InvoiceStatus::Available,
            InvoiceStatus::Financed,
            InvoiceStatus::Approved,
            InvoiceStatus::Reversed,
        ] {
            assert_eq!(status.to_string().parse(), Ok(status));
        }
        assert!("PAID".parse::<InvoiceStatus>().is_err());
    }

    #[test]
    fn a_registered_issuer_puts_an_invoice_on_sale() {
        let id = InvoiceId::new_random();
        let invoice = given::<Invoice>(id, [])
            .when(sell(10, true))
            .then(on_sale_for(id, 10));
        assert_eq!(invoice.status(), Some(InvoiceStatus::Available));
    }

    #[test]
    fn selling_for_an_unknown_issuer_is_rejected() {
        given::<Invoice>(InvoiceId::new_random(), [])
            .when(sell(10, false))
            .then_rejected(Rejection::UnknownIssuer(ISSUER));
    }

    #[test]
    fn selling_for_nothing_is_rejected() {
        given::<Invoice>(InvoiceId::new_random(), [])
            .when(sell(0, true))
            .then_rejected(Rejection::AmountNotPositive);
    }

    #[test]
    fn an_invoice_is_sold_only_once() {
        let id = InvoiceId::new_random();
        given::<Invoice>(id, on_sale_for(id, 10))
            .when(sell(10, true))
            .then_rejected(Rejection::already_exists::<Invoice>(id));
    }

    #[test]
    fn a_bid_above_the_asking_price_finances_the_invoice() {
        let id = InvoiceId::new_random();
        let invoice = given::<Invoice>(id, on_sale_for(id, 10))
            .when(InvoiceCommand::ProcessBid { bid: bid(20) })
            .then([InvoiceFinanced {
                invoice_id: id,
                asking_price: Money::units(10),
                bid: bid(20),
            }]);
        assert_eq!(invoice.status(), Some(InvoiceStatus::Financed));
        assert_eq!(invoice.winning_bid(), Some(bid(20)));
    }

    #[test]
    fn a_bid_of_exactly_the_asking_price_finances_the_invoice() {
        let id = InvoiceId::new_random();
        given::<Invoice>(id, on_sale_for(id, 10))
            .when(InvoiceCommand::ProcessBid { bid: bid(10) })
            .then([InvoiceFinanced {
                invoice_id: id,
                asking_price: Money::units(10),
                bid: bid(10),
            }]);
    }

    #[test]
    fn a_bid_below_the_asking_price_is_rejected() {
        let id = InvoiceId::new_random();
        let invoice = given::<Invoice>(id, on_sale_for(id, 10))
            .when(InvoiceCommand::ProcessBid { bid: bid(5) })
            .then([BidOnInvoiceRejected {
                invoice_id: id,
                bid: bid(5),
            }]);
        assert_eq!(invoice.status(), Some(InvoiceStatus::Available));
    }

    #[test]
    fn a_bid_on_a_financed_invoice_is_rejected() {
        let id = InvoiceId::new_random();
        given::<Invoice>(id, financed(id, 10, bid(10)))
            .when(InvoiceCommand::ProcessBid { bid: bid(50) })
            .then([BidOnInvoiceRejected {
                invoice_id: id,
                bid: bid(50),
            }]);
    }

    #[test]
    fn a_bid_on_a_missing_invoice_is_refused() {
        let id = InvoiceId::new_random();
        given::<Invoice>(id, [])
            .when(InvoiceCommand::ProcessBid { bid: bid(5) })
            .then_rejected(Rejection::not_found::<Invoice>(id));
    }

    #[test]
    fn approving_a_financed_invoice_sells_it_at_the_asking_price() {
        let id = InvoiceId::new_random();
        let invoice = given::<Invoice>(id, financed(id, 10, bid(20)))
            .when(approve())
            .then([InvoiceApproved {
                invoice_id: id,
                sold_price: Money::units(10),
                bid: bid(20),
            }]);
        assert_eq!(invoice.status(), Some(InvoiceStatus::Approved));
    }

    #[test]
    fn reversing_a_financed_invoice_gives_the_sold_price_back() {
        let id = InvoiceId::new_random();
        let invoice = given::<Invoice>(id, financed(id, 10, bid(20)))
            .when(reverse())
            .then([InvoiceReversed {
                invoice_id: id,
                sold_price: Money::units(10),
                bid: bid(20),
            }]);
        assert_eq!(invoice.status(), Some(InvoiceStatus::Reversed));
    }

    #[test]
    fn approving_or_reversing_an_invoice_that_is_not_financed_produces_no_event() {
        let id = InvoiceId::new_random();
        let mut approved = financed(id, 10, bid(10));
        approved.push(InvoiceApproved {
            invoice_id: id,
            sold_price: Money::units(10),
            bid: bid(10),
        });
        for (history, status) in [
            (on_sale_for(id, 10), InvoiceStatus::Available),
            (approved, InvoiceStatus::Approved),
        ] {
            for command in [approve(), reverse()] {
                given::<Invoice>(id, history.clone())
                    .when(command)
                    .then_rejected(Rejection::InvoiceNotFinanced { status });
            }
        }
    }

    #[test]
    fn approving_a_missing_invoice_is_refused() {
        let id = InvoiceId::new_random();
        given::<Invoice>(id, [])
            .when(approve())
            .then_rejected(Rejection::not_found::<Invoice>(id));
    }

    #[test]
    fn an_operator_may_approve_or_reverse_any_financing() {
        let id = InvoiceId::new_random();
        let operator = Some(Actor::new(uuid::Uuid::new_v4(), Role::Operator));
        given::<Invoice>(id, financed(id, 10, bid(20)))
            .when(InvoiceCommand::ApproveFinancing { by: operator })
            .then([InvoiceApproved {
                invoice_id: id,
                sold_price: Money::units(10),
                bid: bid(20),
            }]);
        given::<Invoice>(id, financed(id, 10, bid(20)))
            .when(InvoiceCommand::ReverseFinancing { by: operator })
            .then([InvoiceReversed {
                invoice_id: id,
                sold_price: Money::units(10),
                bid: bid(20),
            }]);
    }

    #[test]
    fn nobody_but_the_invoice_s_issuer_or_an_operator_may_approve_or_reverse_it() {
        let id = InvoiceId::new_random();
        let strangers = [
            Some(Actor::new(IssuerId::new_random(), Role::Issuer)),
            // The winning investor, and an investor that shares the issuer's id.
            Some(Actor::new(bid(20).investor_id, Role::Investor)),
            Some(Actor::new(ISSUER, Role::Investor)),
            None,
        ];
        for by in strangers {
            for command in [
                InvoiceCommand::ApproveFinancing { by },
                InvoiceCommand::ReverseFinancing { by },
            ] {
                given::<Invoice>(id, financed(id, 10, bid(20)))
                    .when(command)
                    .then_rejected(Rejection::NotTheIssuer {
                        issuer_id: ISSUER,
                        asked_by: by,
                    });
            }
        }
    }

    #[test]
    fn an_invoice_cannot_be_financed_twice_nor_approved_unless_financed() {
        let id = InvoiceId::new_random();
        let mut invoice = Invoice::replay(&financed(id, 10, bid(10))).unwrap();
        let again = InvoiceFinanced {
            invoice_id: id,
            asking_price: Money::units(10),
            bid: bid(12),
        };
        assert!(invoice.apply(&again).is_err());
        assert_eq!(invoice.winning_bid(), Some(bid(10)), "the first bid stays");

        let mut available = Invoice::replay(&on_sale_for(id, 10)).unwrap();
        let approved = InvoiceApproved {
            invoice_id: id,
            sold_price: Money::units(10),
            bid: bid(10),
        };
        assert!(available.apply(&approved).is_err());
        assert_eq!(available.status(), Some(InvoiceStatus::Available));
    }

    #[test]
    fn an_event_for_an_invoice_that_does_not_exist_or_a_second_creation_is_impossible() {
        let id = InvoiceId::new_random();
        let rejected = BidOnInvoiceRejected {
            invoice_id: id,
            bid: bid(1),
        };
        assert!(Invoice::default().apply(&rejected).is_err());
        let mut invoice = Invoice::replay(&on_sale_for(id, 10)).unwrap();
        assert!(invoice.apply(&on_sale_for(id, 5)[0]).is_err());
        assert_eq!(invoice.asking_price(), Some(Money::units(10)));
    }
}
