//! The whole flow through gRPC and Kafka only, on three partitions: populate registers an
//! issuer and an investor, commands go to the listener, and the query service is polled until
//! the read models show the money where it belongs.

use financing_acceptance::{Parts, System};
use financing_api::to_proto_id;
use financing_api::v1::{
    self, ApproveFinancingCommand, BidOnInvoiceCommand, GetInvoiceRequest, GetIssuerRequest,
    ReverseFinancingCommand, SellInvoiceCommand,
};
use financing_domain::{Actor, CommandId, InvestorId, InvoiceId, IssuerId, Money, Role};
use tonic::Response;
use uuid::Uuid;

struct Flow {
    system: System,
    issuer_id: IssuerId,
    investor_id: InvestorId,
}

fn money(units: u64) -> Option<v1::Money> {
    Some(v1::Money {
        amount: Money::units(units).to_f64(),
    })
}

fn command_id<T>(response: &Response<T>) -> CommandId {
    let header = response
        .metadata()
        .get("x-command-id")
        .expect("a command id");
    header.to_str().unwrap().parse().unwrap()
}

impl Flow {
    /// A system where populate registered one issuer and one investor with `balance`.
    async fn populated(balance: u64) -> Flow {
        let system = System::start_with(Parts::Everything, 3).await;
        let registered = financing_populate::register(system.kafka(), 1, 1, Money::units(balance))
            .await
            .expect("populate publishes");
        let flow = Flow {
            issuer_id: registered.issuers[0].1,
            investor_id: registered.investors[0].1,
            system,
        };
        flow.await_investor(balance, 0, 0).await;
        // The issuer's events and the investor's are handled apart (different aggregates, on
        // different partitions maybe): a sale before its issuer is known would rightly be
        // rejected.
        let issuer_id = flow.issuer_id;
        let what = format!("issuer {issuer_id} is known");
        flow.system
            .await_query(&what, |mut queries| async move {
                let request = GetIssuerRequest {
                    id: Some(to_proto_id(issuer_id)),
                };
                queries.get_issuer(request).await.ok()
            })
            .await;
        flow
    }

    async fn sell(&self, asking: u64) -> (InvoiceId, CommandId) {
        let response = self
            .system
            .commands_as(Actor::new(self.issuer_id, Role::Issuer))
            .await
            .sell_invoice(SellInvoiceCommand {
                issuer_id: Some(to_proto_id(self.issuer_id)),
                asking_price: money(asking),
            })
            .await
            .expect("the sale is queued");
        let command = command_id(&response);
        let invoice_id = response.into_inner().value.parse().unwrap();
        (invoice_id, command)
    }

    async fn bid(&self, invoice_id: InvoiceId, amount: u64) -> CommandId {
        let response = self
            .system
            .commands_as(Actor::new(self.investor_id, Role::Investor))
            .await
            .bid_on_invoice(BidOnInvoiceCommand {
                investor_id: Some(to_proto_id(self.investor_id)),
                invoice_id: Some(to_proto_id(invoice_id)),
                bid: money(amount),
            })
            .await
            .expect("the bid is queued");
        command_id(&response)
    }

    async fn await_investor(&self, balance: u64, reserved: u64, committed: u64) {
        let expected = v1::Investor {
            id: Some(to_proto_id(self.investor_id)),
            balance: money(balance),
            reserved: money(reserved),
            committed: money(committed),
            name: "INVESTOR_1".into(),
        };
        self.system.await_investor(&expected).await;
    }

    async fn await_invoice(&self, invoice_id: InvoiceId, status: v1::InvoiceStatus) -> v1::Invoice {
        let what = format!("invoice {invoice_id} is {status:?}");
        self.system
            .await_query(&what, |mut queries| async move {
                let request = GetInvoiceRequest {
                    id: Some(to_proto_id(invoice_id)),
                };
                let invoice = queries.get_invoice(request).await.ok()?.into_inner();
                (invoice.status() == status).then_some(invoice)
            })
            .await
    }

    /// Sells an invoice asking 10 and wins it with a bid of 20.
    async fn finance(&self) -> InvoiceId {
        let (invoice_id, _) = self.sell(10).await;
        self.await_invoice(invoice_id, v1::InvoiceStatus::Available)
            .await;
        self.bid(invoice_id, 20).await;
        let invoice = self
            .await_invoice(invoice_id, v1::InvoiceStatus::Financed)
            .await;
        let winning = invoice.winning_bid.expect("a winning bid");
        assert_eq!(winning.investor_id, Some(to_proto_id(self.investor_id)));
        assert_eq!(winning.amount, money(20));
        // 20 reserved by the bid, 10 of it released as the surplus over the asking price.
        self.await_investor(90, 10, 0).await;
        invoice_id
    }
}

#[tokio::test]
async fn an_approved_financing_commits_the_asking_price() {
    let flow = Flow::populated(100).await;
    let invoice_id = flow.finance().await;
    flow.system
        .commands_as(Actor::new(flow.issuer_id, Role::Issuer))
        .await
        .approve_financing(ApproveFinancingCommand {
            invoice_id: Some(to_proto_id(invoice_id)),
        })
        .await
        .expect("the approval is queued");
    flow.await_invoice(invoice_id, v1::InvoiceStatus::Approved)
        .await;
    flow.await_investor(90, 0, 10).await;
}

#[tokio::test]
async fn a_reversed_financing_gives_the_investor_everything_back() {
    let flow = Flow::populated(100).await;
    let invoice_id = flow.finance().await;
    flow.system
        .commands_as(Actor::new(flow.issuer_id, Role::Issuer))
        .await
        .reverse_financing(ReverseFinancingCommand {
            invoice_id: Some(to_proto_id(invoice_id)),
        })
        .await
        .expect("the reversal is queued");
    flow.await_invoice(invoice_id, v1::InvoiceStatus::Reversed)
        .await;
    flow.await_investor(100, 0, 0).await;
}

#[tokio::test]
async fn a_bid_above_the_balance_is_reported_rejected_with_its_reason() {
    let flow = Flow::populated(5).await;
    let (invoice_id, sale) = flow.sell(10).await;
    flow.await_invoice(invoice_id, v1::InvoiceStatus::Available)
        .await;
    flow.system
        .await_command_status(sale, v1::CommandStatus::Applied)
        .await;

    let bid = flow.bid(invoice_id, 10).await;
    let outcome = flow
        .system
        .await_command_status(bid, v1::CommandStatus::Rejected)
        .await;
    assert_eq!(
        outcome.reason,
        "insufficient balance: bid 10.00 but balance is 5.00"
    );
    flow.await_investor(5, 0, 0).await;
    let invoice = flow
        .await_invoice(invoice_id, v1::InvoiceStatus::Available)
        .await;
    assert_eq!(invoice.winning_bid, None);
}

#[tokio::test]
async fn a_stranger_s_approval_or_reversal_is_rejected_and_changes_nothing_but_an_operator_s_applies()
 {
    let flow = Flow::populated(100).await;
    let invoice_id = flow.finance().await;
    let invoice = || Some(to_proto_id(invoice_id));
    // Another issuer, and the investor who won the invoice, act in the invoice's name.
    let stranger = Actor::new(IssuerId::new_random(), Role::Issuer);
    let mut strangers = flow.system.commands_as(stranger).await;
    let approval = strangers
        .approve_financing(ApproveFinancingCommand {
            invoice_id: invoice(),
        })
        .await
        .expect("the approval is queued: only the invoice knows its issuer");
    let reversal = strangers
        .reverse_financing(ReverseFinancingCommand {
            invoice_id: invoice(),
        })
        .await
        .expect("the reversal is queued");
    for response in [command_id(&approval), command_id(&reversal)] {
        let outcome = flow
            .system
            .await_command_status(response, v1::CommandStatus::Rejected)
            .await;
        assert!(
            outcome.reason.starts_with("only the invoice's issuer")
                && outcome.reason.contains(&stranger.to_string()),
            "{outcome:?}"
        );
    }
    let winner = Actor::new(flow.investor_id, Role::Investor);
    let denied = flow
        .system
        .commands_as(winner)
        .await
        .approve_financing(ApproveFinancingCommand {
            invoice_id: invoice(),
        })
        .await
        .expect_err("an investor may not approve");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    flow.await_invoice(invoice_id, v1::InvoiceStatus::Financed)
        .await;
    flow.await_investor(90, 10, 0).await;

    // Support may.
    let operator = Actor::new(Uuid::new_v4(), Role::Operator);
    flow.system
        .commands_as(operator)
        .await
        .approve_financing(ApproveFinancingCommand {
            invoice_id: invoice(),
        })
        .await
        .expect("the operator's approval is queued");
    flow.await_invoice(invoice_id, v1::InvoiceStatus::Approved)
        .await;
    flow.await_investor(90, 0, 10).await;
}
