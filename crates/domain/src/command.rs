//! Commands: what clients send through the listener, and commands addressed to one aggregate.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::message::Message;
use crate::{
    Actor, Aggregate, Investor, InvestorCommand, InvestorId, Invoice, InvoiceCommand, InvoiceId,
    Issuer, IssuerCommand, IssuerId, Money,
};

/// A command addressed to one aggregate, ready for its `decide`.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Issuer(IssuerId, IssuerCommand),
    Investor(InvestorId, InvestorCommand),
    Invoice(InvoiceId, InvoiceCommand),
}

impl Command {
    /// The stream the command is decided on: its aggregate's type and id.
    pub fn stream(&self) -> (&'static str, Uuid) {
        match self {
            Command::Issuer(id, _) => (Issuer::TYPE, id.as_uuid()),
            Command::Investor(id, _) => (Investor::TYPE, id.as_uuid()),
            Command::Invoice(id, _) => (Invoice::TYPE, id.as_uuid()),
        }
    }

    /// Whether it creates its aggregate: it applies only where there is no aggregate yet and is
    /// rejected on any history. Applied on no history, it needs no read first, provided its
    /// write checks that the aggregate is still at version 0.
    pub fn creates_its_aggregate(&self) -> bool {
        matches!(
            self,
            Command::Issuer(_, IssuerCommand::Create { .. })
                | Command::Investor(_, InvestorCommand::Create { .. })
                | Command::Invoice(_, InvoiceCommand::Sell { .. })
        )
    }
}

/// A client's request as it travels on the `financing.commands` topic, already checked for
/// form by the listener (ids are ids, amounts are valid money).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum ClientCommand {
    SellInvoice {
        invoice_id: InvoiceId,
        issuer_id: IssuerId,
        asking_price: Money,
    },
    BidOnInvoice {
        investor_id: InvestorId,
        invoice_id: InvoiceId,
        bid: Money,
    },
    ApproveFinancing {
        invoice_id: InvoiceId,
    },
    ReverseFinancing {
        invoice_id: InvoiceId,
    },
}

impl ClientCommand {
    /// The aggregate the command changes, which is also its Kafka key: commands for one
    /// aggregate stay in order on one partition.
    pub fn aggregate_id(&self) -> Uuid {
        match self {
            ClientCommand::SellInvoice { invoice_id, .. }
            | ClientCommand::ApproveFinancing { invoice_id }
            | ClientCommand::ReverseFinancing { invoice_id } => invoice_id.as_uuid(),
            // A bid first reserves the investor's funds; the invoice hears of it by the saga.
            ClientCommand::BidOnInvoice { investor_id, .. } => investor_id.as_uuid(),
        }
    }

    /// The aggregate command, once the handler knows whether a seller's issuer is registered
    /// (`issuer_registered` is only looked at for `SellInvoice`), asked for `by` whoever the
    /// edge authenticated (only approving and reversing look at it: the invoice knows its
    /// issuer).
    pub fn into_command(self, issuer_registered: bool, by: Option<Actor>) -> Command {
        match self {
            ClientCommand::SellInvoice {
                invoice_id,
                issuer_id,
                asking_price,
            } => Command::Invoice(
                invoice_id,
                InvoiceCommand::Sell {
                    issuer_id,
                    asking_price,
                    issuer_registered,
                },
            ),
            ClientCommand::BidOnInvoice {
                investor_id,
                invoice_id,
                bid,
            } => Command::Investor(
                investor_id,
                InvestorCommand::PlaceBid {
                    invoice_id,
                    amount: bid,
                },
            ),
            ClientCommand::ApproveFinancing { invoice_id } => {
                Command::Invoice(invoice_id, InvoiceCommand::ApproveFinancing { by })
            }
            ClientCommand::ReverseFinancing { invoice_id } => {
                Command::Invoice(invoice_id, InvoiceCommand::ReverseFinancing { by })
            }
        }
    }
}

impl Message for ClientCommand {
    fn type_name(&self) -> &'static str {
        match self {
            ClientCommand::SellInvoice { .. } => "SellInvoice",
            ClientCommand::BidOnInvoice { .. } => "BidOnInvoice",
            ClientCommand::ApproveFinancing { .. } => "ApproveFinancing",
            ClientCommand::ReverseFinancing { .. } => "ReverseFinancing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rejection;

    #[test]
    fn a_client_command_travels_as_type_and_payload() {
        let command = ClientCommand::BidOnInvoice {
            investor_id: InvestorId::new_random(),
            invoice_id: InvoiceId::new_random(),
            bid: Money::from_cents(2050),
        };
        let payload = command.to_payload();
        assert_eq!(payload["bid"], "20.50");
        assert_eq!(
            ClientCommand::from_payload(command.type_name(), payload),
            Ok(command)
        );
    }

    #[test]
    fn a_command_that_creates_its_aggregate_is_rejected_on_any_history() {
        use crate::testing::given;
        let (issuer_id, investor_id) = (IssuerId::new_random(), InvestorId::new_random());
        let invoice_id = InvoiceId::new_random();
        let sell = InvoiceCommand::Sell {
            issuer_id,
            asking_price: Money::units(10),
            issuer_registered: true,
        };
        let create_investor = InvestorCommand::Create {
            name: "Ada".into(),
            funds: Money::units(1),
        };
        let create_issuer = IssuerCommand::Create {
            name: "ACME".into(),
        };
        let creations = [
            Command::Invoice(invoice_id, sell.clone()),
            Command::Investor(investor_id, create_investor.clone()),
            Command::Issuer(issuer_id, create_issuer.clone()),
        ];
        assert!(creations.iter().all(Command::creates_its_aggregate));
        let created = Invoice::default().decide(invoice_id, &sell).unwrap();
        given::<Invoice>(invoice_id, created)
            .when(sell)
            .then_rejected(Rejection::already_exists::<Invoice>(invoice_id));
        let created = Investor::default()
            .decide(investor_id, &create_investor)
            .unwrap();
        given::<Investor>(investor_id, created)
            .when(create_investor)
            .then_rejected(Rejection::already_exists::<Investor>(investor_id));
        let created = Issuer::default().decide(issuer_id, &create_issuer).unwrap();
        given::<Issuer>(issuer_id, created)
            .when(create_issuer)
            .then_rejected(Rejection::already_exists::<Issuer>(issuer_id));

        let bid = InvestorCommand::PlaceBid {
            invoice_id,
            amount: Money::units(1),
        };
        assert!(!Command::Investor(investor_id, bid).creates_its_aggregate());
        assert!(
            !Command::Invoice(invoice_id, InvoiceCommand::ApproveFinancing { by: None })
                .creates_its_aggregate()
        );
    }

    #[test]
    fn an_unknown_command_type_does_not_decode() {
        let error = ClientCommand::from_payload("Explode", serde_json::json!({})).unwrap_err();
        assert!(error.reason.contains("unknown variant"), "{error}");
    }

    #[test]
    fn a_bid_is_keyed_by_its_investor() {
        let investor_id = InvestorId::new_random();
        let command = ClientCommand::BidOnInvoice {
            investor_id,
            invoice_id: InvoiceId::new_random(),
            bid: Money::units(1),
        };
        assert_eq!(command.aggregate_id(), investor_id.as_uuid());
    }
}
