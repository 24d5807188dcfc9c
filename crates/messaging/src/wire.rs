//! The wire form of every message: a JSON payload, keyed by aggregate id, with its type, ids,
//! version and correlation in headers (and the correlation as a W3C `traceparent`). Decoding says exactly why a message is unreadable, which
//! becomes the dead-letter reason.

use std::fmt::Display;
use std::str::FromStr;

use financing_domain::{
    ClientCommand, CommandId, CommandOutcome, Event, EventEnvelope, EventMeta, IntegrationEvent,
    Message as _,
};
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use serde_json::Value;
use uuid::Uuid;

use crate::trace::{TRACEPARENT, traceparent};

/// Header names.
pub mod headers {
    pub const TYPE: &str = "type";
    pub const AGGREGATE_TYPE: &str = "aggregate-type";
    pub const AGGREGATE_ID: &str = "aggregate-id";
    pub const VERSION: &str = "version";
    pub const SCHEMA_VERSION: &str = "schema-version";
    pub const EVENT_ID: &str = "event-id";
    pub const COMMAND_ID: &str = "command-id";
    pub const CORRELATION_ID: &str = "correlation-id";
    pub const CAUSATION_ID: &str = "causation-id";
    pub const RECORDED_AT: &str = "recorded-at";
    pub const DLQ_REASON: &str = "dlq-reason";
    pub const DLQ_TOPIC: &str = "dlq-topic";
    pub const DLQ_PARTITION: &str = "dlq-partition";
    pub const DLQ_OFFSET: &str = "dlq-offset";
}

/// A message ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    fn json(key: impl ToString, payload: &Value, headers: Vec<(&str, String)>) -> Record {
        Record {
            key: key.to_string(),
            payload: payload.to_string().into_bytes(),
            headers: headers
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        }
    }

    /// The headers as the Kafka client takes them.
    pub fn kafka_headers(&self) -> OwnedHeaders {
        self.headers.iter().fold(
            OwnedHeaders::new_with_capacity(self.headers.len()),
            |all, (key, value)| {
                all.insert(Header {
                    key,
                    value: Some(value),
                })
            },
        )
    }
}

/// Why a consumed message cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    #[error("missing header {0:?}")]
    MissingHeader(&'static str),
    #[error("header {name:?} is invalid: {reason}")]
    InvalidHeader { name: &'static str, reason: String },
    #[error("the message has no payload")]
    NoPayload,
    #[error("the payload is not JSON: {0}")]
    NotJson(String),
    #[error(transparent)]
    Payload(#[from] financing_domain::DecodeError),
}

pub(crate) fn header<'m>(
    message: &'m impl Message,
    name: &'static str,
) -> Result<&'m str, Undecodable> {
    let value = message
        .headers()
        .and_then(|all| all.iter().find(|header| header.key == name))
        .and_then(|header| header.value)
        .ok_or(Undecodable::MissingHeader(name))?;
    std::str::from_utf8(value).map_err(|e| Undecodable::InvalidHeader {
        name,
        reason: e.to_string(),
    })
}

fn parsed<T>(message: &impl Message, name: &'static str) -> Result<T, Undecodable>
where
    T: FromStr,
    T::Err: Display,
{
    let text = header(message, name)?;
    text.parse()
        .map_err(|e: T::Err| Undecodable::InvalidHeader {
            name,
            reason: format!("{text:?}: {e}"),
        })
}

/// An aggregate version: from 1 up to what a BIGINT holds, as every store keeps it.
fn version(message: &impl Message) -> Result<u64, Undecodable> {
    let version: u64 = parsed(message, headers::VERSION)?;
    if version == 0 || i64::try_from(version).is_err() {
        return Err(Undecodable::InvalidHeader {
            name: headers::VERSION,
            reason: format!("{version} is not between 1 and {}", i64::MAX),
        });
    }
    Ok(version)
}

fn json_payload(message: &impl Message) -> Result<Value, Undecodable> {
    let bytes = message.payload().ok_or(Undecodable::NoPayload)?;
    serde_json::from_slice(bytes).map_err(|e| Undecodable::NotJson(e.to_string()))
}

/// An event's message on `financing.events`, keyed by aggregate id, with its metadata in
/// headers.
pub fn event_record(meta: &EventMeta, event_type: &str, payload: &Value) -> Record {
    use headers::*;
    Record::json(
        meta.aggregate_id,
        payload,
        vec![
            (TYPE, event_type.to_owned()),
            (AGGREGATE_TYPE, meta.aggregate_type.clone()),
            (AGGREGATE_ID, meta.aggregate_id.to_string()),
            (VERSION, meta.version.to_string()),
            (SCHEMA_VERSION, meta.schema_version.to_string()),
            (EVENT_ID, meta.event_id.to_string()),
            (COMMAND_ID, meta.command_id.to_string()),
            (CORRELATION_ID, meta.correlation_id.to_string()),
            (CAUSATION_ID, meta.causation_id.to_string()),
            (RECORDED_AT, meta.recorded_at.to_rfc3339()),
            (TRACEPARENT, traceparent(meta.correlation_id, meta.event_id)),
        ],
    )
}

/// The types of an outcome on `financing.outcomes`.
const REJECTED: &str = "CommandRejected";
const FAILED: &str = "CommandFailed";

/// How a message travels on the bus: read from what a consumer received, written as a record
/// to publish.
pub trait WireForm: Sized {
    fn decode(message: &impl Message) -> Result<Self, Undecodable>;
    fn record(&self) -> Record;
}

/// A domain event on `financing.events`.
impl WireForm for EventEnvelope {
    fn decode(message: &impl Message) -> Result<EventEnvelope, Undecodable> {
        use headers::*;
        let meta = EventMeta {
            aggregate_type: header(message, AGGREGATE_TYPE)?.to_owned(),
            aggregate_id: parsed(message, AGGREGATE_ID)?,
            version: version(message)?,
            schema_version: parsed(message, SCHEMA_VERSION)?,
            event_id: parsed(message, EVENT_ID)?,
            command_id: parsed(message, COMMAND_ID)?,
            correlation_id: parsed(message, CORRELATION_ID)?,
            causation_id: parsed(message, CAUSATION_ID)?,
            recorded_at: parsed(message, RECORDED_AT)?,
        };
        let event = Event::decode(
            &meta.aggregate_type,
            header(message, TYPE)?,
            json_payload(message)?,
        )?;
        Ok(EventEnvelope { meta, event })
    }

    fn record(&self) -> Record {
        event_record(&self.meta, self.event.type_name(), &self.event.to_payload())
    }
}

/// A client command as it travels on `financing.commands`.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandMessage {
    pub command_id: CommandId,
    pub correlation_id: Uuid,
    pub command: ClientCommand,
}

/// Keyed by the aggregate the command changes, so one aggregate's commands stay in order.
impl WireForm for CommandMessage {
    fn record(&self) -> Record {
        use headers::*;
        Record::json(
            self.command.aggregate_id(),
            &self.command.to_payload(),
            vec![
                (TYPE, self.command.type_name().to_owned()),
                (COMMAND_ID, self.command_id.to_string()),
                (CORRELATION_ID, self.correlation_id.to_string()),
                (
                    TRACEPARENT,
                    traceparent(self.correlation_id, self.command_id.as_uuid()),
                ),
            ],
        )
    }

    fn decode(message: &impl Message) -> Result<CommandMessage, Undecodable> {
        use headers::*;
        Ok(CommandMessage {
            command_id: parsed(message, COMMAND_ID)?,
            correlation_id: parsed(message, CORRELATION_ID)?,
            command: ClientCommand::from_payload(header(message, TYPE)?, json_payload(message)?)?,
        })
    }
}

/// The outcome of a command that produced no event, on `financing.outcomes`: its type says
/// whether the domain rejected it or it failed; keyed by the aggregate, or by the command when
/// the aggregate is unknown.
impl WireForm for CommandOutcome {
    fn record(&self) -> Record {
        use headers::*;
        let kind = if self.failed { FAILED } else { REJECTED };
        let mut headers = vec![
            (TYPE, kind.to_owned()),
            (COMMAND_ID, self.command_id.to_string()),
        ];
        if let Some(aggregate_type) = &self.aggregate_type {
            headers.push((AGGREGATE_TYPE, aggregate_type.clone()));
        }
        if let Some(aggregate_id) = self.aggregate_id {
            headers.push((AGGREGATE_ID, aggregate_id.to_string()));
        }
        let key = self
            .aggregate_id
            .map_or_else(|| self.command_id.to_string(), |id| id.to_string());
        Record::json(
            key,
            &serde_json::json!({ "reason": self.reason, "decided_at": self.decided_at }),
            headers,
        )
    }

    fn decode(message: &impl Message) -> Result<CommandOutcome, Undecodable> {
        use headers::*;
        let failed = match header(message, TYPE)? {
            REJECTED => false,
            FAILED => true,
            other => {
                return Err(Undecodable::InvalidHeader {
                    name: TYPE,
                    reason: format!("{other:?} is neither {:?} nor {:?}", REJECTED, FAILED),
                });
            }
        };
        let payload = json_payload(message)?;
        let field = |name: &'static str| {
            payload[name]
                .as_str()
                .map(str::to_owned)
                .ok_or(Undecodable::NotJson(format!(
                    "the payload has no {name:?} text"
                )))
        };
        let optional = |name| match header(message, name) {
            Err(Undecodable::MissingHeader(_)) => Ok(None),
            other => other.map(Some),
        };
        Ok(CommandOutcome {
            command_id: parsed(message, COMMAND_ID)?,
            failed,
            aggregate_type: optional(AGGREGATE_TYPE)?.map(str::to_owned),
            aggregate_id: match optional(AGGREGATE_ID)? {
                Some(_) => Some(parsed(message, AGGREGATE_ID)?),
                None => None,
            },
            reason: field("reason")?,
            decided_at: field("decided_at")?
                .parse()
                .map_err(|e| Undecodable::NotJson(format!("decided_at: {e}")))?,
        })
    }
}

/// An integration event's message on `registering.events`, keyed by its subject.
pub fn integration_record(event: &IntegrationEvent) -> Record {
    Record::json(
        event.subject_id(),
        &event.to_payload(),
        vec![(headers::TYPE, event.type_name().to_owned())],
    )
}

pub fn integration_event(message: &impl Message) -> Result<IntegrationEvent, Undecodable> {
    Ok(IntegrationEvent::from_payload(
        header(message, headers::TYPE)?,
        json_payload(message)?,
    )?)
}

/// A message's headers as they are (`None` for a null value).
pub fn headers_of(message: &impl Message) -> Vec<(String, Option<Vec<u8>>)> {
    message
        .headers()
        .map(|all| {
            all.iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

/// Headers as the Kafka client takes them, a null value kept null.
pub fn kafka_headers<'a>(
    headers: impl IntoIterator<Item = &'a (String, Option<Vec<u8>>)>,
) -> OwnedHeaders {
    headers
        .into_iter()
        .fold(OwnedHeaders::new(), |all, (key, value)| {
            all.insert(Header {
                key,
                value: value.as_deref(),
            })
        })
}

/// The dead letter for a message that cannot be handled: its key, payload and headers byte for
/// byte as they were (a missing key or a null header stays so), plus why and where it came from.
pub fn dead_letter(message: &impl Message, reason: &str) -> OwnedMessage {
    use headers::*;
    let mut all = headers_of(message);
    let whence = [
        (DLQ_REASON, reason.to_owned()),
        (DLQ_TOPIC, message.topic().to_owned()),
        (DLQ_PARTITION, message.partition().to_string()),
        (DLQ_OFFSET, message.offset().to_string()),
    ];
    all.extend(
        whence
            .into_iter()
            .map(|(name, value)| (name.to_owned(), Some(value.into_bytes()))),
    );
    OwnedMessage::new(
        message.payload().map(<[u8]>::to_vec),
        message.key().map(<[u8]>::to_vec),
        message.topic().to_owned(),
        message.timestamp(),
        message.partition(),
        message.offset(),
        Some(kafka_headers(&all)),
    )
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use financing_domain::{InvestorEvent, InvestorId, InvoiceId, Money};
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;

    /// The message a consumer would receive for `record`.
    fn received(record: &Record) -> OwnedMessage {
        OwnedMessage::new(
            Some(record.payload.clone()),
            Some(record.key.clone().into_bytes()),
            "topic".into(),
            Timestamp::NotAvailable,
            0,
            42,
            Some(record.kafka_headers()),
        )
    }

    fn event_message() -> EventEnvelope {
        let investor_id = InvestorId::new_random();
        EventEnvelope {
            meta: EventMeta {
                aggregate_type: "Investor".into(),
                aggregate_id: investor_id.as_uuid(),
                version: 3,
                schema_version: 1,
                event_id: Uuid::new_v4(),
                command_id: CommandId::new_random(),
                correlation_id: Uuid::new_v4(),
                causation_id: Uuid::new_v4(),
                recorded_at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            },
            event: Event::Investor(InvestorEvent::BidOnInvoicePlaced {
                investor_id,
                invoice_id: InvoiceId::new_random(),
                bid_amount: Money::units(20),
            }),
        }
    }

    #[test]
    fn an_event_goes_through_the_wire_and_back() {
        let message = event_message();
        let record = message.record();
        assert_eq!(record.key, message.meta.aggregate_id.to_string());
        assert_eq!(EventEnvelope::decode(&received(&record)).unwrap(), message);
    }

    #[test]
    fn a_command_goes_through_the_wire_and_back() {
        let message = CommandMessage {
            command_id: CommandId::new_random(),
            correlation_id: Uuid::new_v4(),
            command: ClientCommand::ApproveFinancing {
                invoice_id: InvoiceId::new_random(),
            },
        };
        assert_eq!(
            CommandMessage::decode(&received(&message.record())).unwrap(),
            message
        );
    }

    #[test]
    fn events_and_commands_carry_their_correlation_as_a_traceparent() {
        let event = event_message();
        let command = CommandMessage {
            command_id: CommandId::new_random(),
            correlation_id: Uuid::new_v4(),
            command: ClientCommand::ApproveFinancing {
                invoice_id: InvoiceId::new_random(),
            },
        };
        for (record, correlation_id) in [
            (event.record(), event.meta.correlation_id),
            (command.record(), command.correlation_id),
        ] {
            let mut received = received(&record);
            assert_eq!(crate::correlation_of(&received), Some(correlation_id));
            // Read from the traceparent first: a client's trace id is the correlation.
            received = OwnedMessage::new(
                None,
                None,
                "topic".into(),
                Timestamp::NotAvailable,
                0,
                0,
                Some(kafka_headers(
                    [(
                        TRACEPARENT.to_owned(),
                        Some(
                            record
                                .headers
                                .iter()
                                .find(|(name, _)| name == TRACEPARENT)
                                .unwrap()
                                .1
                                .clone()
                                .into_bytes(),
                        ),
                    )]
                    .iter(),
                )),
            );
            assert_eq!(crate::correlation_of(&received), Some(correlation_id));
        }
    }

    #[test]
    fn an_outcome_goes_through_the_wire_and_back() {
        let rejection = CommandOutcome {
            command_id: CommandId::new_random(),
            failed: false,
            aggregate_type: Some("Investor".into()),
            aggregate_id: Some(Uuid::new_v4()),
            reason: "insufficient balance: bid 10.00 but balance is 5.00".into(),
            decided_at: DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
        };
        let failure = CommandOutcome {
            failed: true,
            aggregate_type: None,
            aggregate_id: None,
            reason: "the payload is not JSON".into(),
            ..rejection.clone()
        };
        for outcome in [rejection, failure] {
            assert_eq!(
                CommandOutcome::decode(&received(&outcome.record())).unwrap(),
                outcome
            );
        }
    }

    #[test]
    fn a_message_without_a_needed_header_says_which() {
        let mut record = event_message().record();
        record.headers.retain(|(name, _)| name != headers::VERSION);
        let error = EventEnvelope::decode(&received(&record)).unwrap_err();
        assert_eq!(error.to_string(), r#"missing header "version""#);
    }

    #[test]
    fn a_version_outside_what_a_store_keeps_is_refused() {
        for version in ["0", "9223372036854775808", "18446744073709551615"] {
            let mut record = event_message().record();
            for (name, value) in &mut record.headers {
                if name == headers::VERSION {
                    *value = version.into();
                }
            }
            let error = EventEnvelope::decode(&received(&record)).unwrap_err();
            assert!(
                matches!(
                    error,
                    Undecodable::InvalidHeader {
                        name: "version",
                        ..
                    }
                ),
                "{version}: {error}"
            );
        }
    }

    #[test]
    fn an_integration_event_with_a_balance_past_the_largest_amount_is_refused() {
        let record = Record {
            key: "k".into(),
            payload: serde_json::json!({
                "id": Uuid::new_v4(),
                "name": "Ada",
                "balance": "100000000000000000",
            })
            .to_string()
            .into_bytes(),
            headers: vec![(headers::TYPE.into(), "InvestorRegistered".into())],
        };
        let error = integration_event(&received(&record)).unwrap_err();
        assert!(error.to_string().contains("must not exceed"), "{error}");
    }

    #[test]
    fn a_payload_that_is_not_json_says_so() {
        let mut record = event_message().record();
        record.payload = b"{not json".to_vec();
        let error = EventEnvelope::decode(&received(&record)).unwrap_err();
        assert!(matches!(error, Undecodable::NotJson(_)), "{error}");
    }

    #[test]
    fn a_dead_letter_keeps_the_message_and_adds_the_reason() {
        let original = received(&integration_record(&IntegrationEvent::IssuerRegistered {
            id: financing_domain::IssuerId::new_random(),
            name: "ACME".into(),
        }));
        let letter = dead_letter(&original, "boom");
        assert_eq!(letter.payload(), original.payload());
        assert_eq!(letter.key(), original.key());
        let header = |name| header(&letter, name).ok();
        assert_eq!(header(headers::TYPE), Some("IssuerRegistered"));
        assert_eq!(header(headers::DLQ_REASON), Some("boom"));
        assert_eq!(header(headers::DLQ_TOPIC), Some("topic"));
        assert_eq!(header(headers::DLQ_OFFSET), Some("42"));
    }
}
