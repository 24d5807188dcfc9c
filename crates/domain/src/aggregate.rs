//! What every aggregate offers (decide, apply), the reasons a command is rejected, and the
//! union of all domain events.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::message::{DecodeError, Message};
use crate::{Actor, InvestorEvent, InvoiceEvent, InvoiceStatus, IssuerEvent, IssuerId, Money};

/// An event-sourced aggregate: its state is the fold of its events with [`Aggregate::apply`].
pub trait Aggregate:
    Default + Clone + fmt::Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The name stored with each event and snapshot, e.g. `"Investor"`.
    const TYPE: &'static str;
    type Id: Copy + fmt::Display + Into<Uuid> + From<Uuid> + Send + Sync + 'static;
    type Command: fmt::Debug + Send + Sync;
    type Event: Message + fmt::Debug + Clone + PartialEq + Send + Sync + Into<Event> + 'static;

    /// The events a command produces on this state, or why it is refused. Never an empty list.
    fn decide(&self, id: Self::Id, command: &Self::Command) -> Result<Vec<Self::Event>, Rejection>;

    /// The state after an event. `decide` only produces events that fit, so this fails only on
    /// a stream this domain did not write (a damaged or forged one): the state is then left as
    /// it was, and the error says why, rather than making up money.
    fn apply(&mut self, event: &Self::Event) -> Result<(), ImpossibleEvent>;

    /// The state after a sequence of events.
    fn replay<'a>(
        events: impl IntoIterator<Item = &'a Self::Event>,
    ) -> Result<Self, ImpossibleEvent> {
        let mut state = Self::default();
        for event in events {
            state.apply(event)?;
        }
        Ok(state)
    }
}

/// An event that cannot follow the state it is applied to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event} cannot apply: {reason}")]
pub struct ImpossibleEvent {
    pub event: &'static str,
    pub reason: String,
}

impl ImpossibleEvent {
    pub(crate) fn new(event: &impl Message, reason: impl Into<String>) -> ImpossibleEvent {
        ImpossibleEvent {
            event: event.type_name(),
            reason: reason.into(),
        }
    }
}

/// Why the domain refuses a command. A rejection produces no event; the handler records it as
/// the command's outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("{aggregate} {id} already exists")]
    AlreadyExists { aggregate: &'static str, id: Uuid },
    #[error("{aggregate} {id} does not exist")]
    NotFound { aggregate: &'static str, id: Uuid },
    #[error("issuer {0} is not registered")]
    UnknownIssuer(IssuerId),
    #[error("amount must be positive")]
    AmountNotPositive,
    #[error("insufficient balance: bid {requested} but balance is {available}")]
    InsufficientBalance { requested: Money, available: Money },
    #[error("insufficient reserved funds: {requested} requested but {reserved} reserved")]
    InsufficientReserved { requested: Money, reserved: Money },
    #[error("invoice is {status}, not FINANCED")]
    InvoiceNotFinanced { status: InvoiceStatus },
    #[error("only the invoice's issuer {issuer_id} or an operator may do that; asked by {}", asked_by.map_or_else(|| "nobody authenticated".to_owned(), |actor| actor.to_string()))]
    NotTheIssuer {
        issuer_id: IssuerId,
        asked_by: Option<Actor>,
    },
}

impl Rejection {
    pub(crate) fn already_exists<A: Aggregate>(id: A::Id) -> Rejection {
        Rejection::AlreadyExists {
            aggregate: A::TYPE,
            id: id.into(),
        }
    }

    pub(crate) fn not_found<A: Aggregate>(id: A::Id) -> Rejection {
        Rejection::NotFound {
            aggregate: A::TYPE,
            id: id.into(),
        }
    }
}

/// Any domain event, as read back from the event stream by its aggregate and type names.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Issuer(IssuerEvent),
    Investor(InvestorEvent),
    Invoice(InvoiceEvent),
}

impl From<IssuerEvent> for Event {
    fn from(event: IssuerEvent) -> Event {
        Event::Issuer(event)
    }
}

impl From<InvestorEvent> for Event {
    fn from(event: InvestorEvent) -> Event {
        Event::Investor(event)
    }
}

impl From<InvoiceEvent> for Event {
    fn from(event: InvoiceEvent) -> Event {
        Event::Invoice(event)
    }
}

impl Event {
    /// The type of the aggregate whose stream it belongs to.
    pub fn aggregate_type(&self) -> &'static str {
        use crate::{Investor, Invoice, Issuer};
        match self {
            Event::Issuer(_) => Issuer::TYPE,
            Event::Investor(_) => Investor::TYPE,
            Event::Invoice(_) => Invoice::TYPE,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Issuer(event) => event.type_name(),
            Event::Investor(event) => event.type_name(),
            Event::Invoice(event) => event.type_name(),
        }
    }

    pub fn to_payload(&self) -> serde_json::Value {
        match self {
            Event::Issuer(event) => event.to_payload(),
            Event::Investor(event) => event.to_payload(),
            Event::Invoice(event) => event.to_payload(),
        }
    }

    /// The schema version it is written at (see [`crate::schema`]).
    pub fn schema_version(&self) -> i32 {
        crate::schema::current_version(self.type_name())
    }

    /// An event of an aggregate type as stored or published, at any schema version this
    /// domain knows (see [`crate::schema::decode`]).
    pub fn decode(
        aggregate_type: &str,
        event_type: &str,
        schema_version: i32,
        payload: serde_json::Value,
    ) -> Result<Event, DecodeError> {
        use crate::schema::decode;
        use crate::{Investor, Invoice, Issuer};
        let (event_type, version) = (event_type, schema_version);
        match aggregate_type {
            Issuer::TYPE => decode(event_type, version, payload).map(Event::Issuer),
            Investor::TYPE => decode(event_type, version, payload).map(Event::Investor),
            Invoice::TYPE => decode(event_type, version, payload).map(Event::Invoice),
            other => Err(DecodeError {
                type_name: event_type.to_owned(),
                reason: format!("unknown aggregate type {other:?}"),
            }),
        }
    }
}
