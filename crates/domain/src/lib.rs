//! The Financing domain, free of I/O: exact [`Money`], the Issuer, Investor and Invoice
//! aggregates (`decide` a command into events, `apply` an event to the state), the messages
//! other components exchange, and the choreographed saga as pure policies (event -> command).

mod actor;
mod aggregate;
mod command;
mod envelope;
mod ids;
mod integration;
mod investor;
mod invoice;
mod issuer;
mod message;
mod money;
pub mod saga;
pub mod schema;
#[cfg(test)]
mod testing;

pub use actor::{Actor, Role};
pub use aggregate::{Aggregate, Event, ImpossibleEvent, Rejection};
pub use command::{ClientCommand, Command};
pub use envelope::{CommandOutcome, EventEnvelope, EventMeta};
pub use ids::{CommandId, InvestorId, InvoiceId, IssuerId};
pub use integration::IntegrationEvent;
pub use investor::{Investor, InvestorCommand, InvestorEvent};
pub use invoice::{Bid, Invoice, InvoiceCommand, InvoiceEvent, InvoiceStatus};
pub use issuer::{Issuer, IssuerCommand, IssuerEvent};
pub use message::{DecodeError, Message};
pub use money::{AmountError, Money};
