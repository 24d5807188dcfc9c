//! The wire form of every message: a CloudEvents 1.0 JSON envelope as the value (the Kafka
//! binding's structured content mode), keyed by aggregate id, with one header,
//! `content-type: application/cloudevents+json`. Messages of the earlier header form are still
//! read ([`legacy`]). Decoding says exactly why a message is unreadable, which becomes the
//! dead-letter reason.

mod cloudevents;
mod legacy;

use std::fmt;

use chrono::{DateTime, Utc};
use financing_domain::{
    Actor, ClientCommand, CommandId, CommandOutcome, Event, EventEnvelope, EventMeta,
    IntegrationEvent, Message as _,
};
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use serde_json::Value;
use uuid::Uuid;

use crate::trace::{correlation_of_traceparent, traceparent};
pub use cloudevents::{CLOUDEVENTS_JSON, CONTENT_TYPE};
use cloudevents::{CloudEvent, Glance, SPEC_VERSION, is_cloudevents_json};
#[cfg(any(test, feature = "test-support"))]
pub use legacy::write as legacy_record;

/// The headers of a dead letter, added to those it came with.
pub mod headers {
    pub const DLQ_REASON: &str = "dlq-reason";
    pub const DLQ_TOPIC: &str = "dlq-topic";
    pub const DLQ_PARTITION: &str = "dlq-partition";
    pub const DLQ_OFFSET: &str = "dlq-offset";
}

/// A family of messages: where they come from and how their types are named.
struct Family {
    source: &'static str,
    type_prefix: &'static str,
}

impl Family {
    fn kind(&self, type_name: &str) -> String {
        format!("{}{type_name}", self.type_prefix)
    }
}

const COMMANDS: Family = Family {
    source: "/financing/commands",
    type_prefix: "financing.command.",
};
const EVENTS: Family = Family {
    source: "/financing/events",
    type_prefix: "financing.event.",
};
const OUTCOMES: Family = Family {
    source: "/financing/outcomes",
    type_prefix: "financing.outcome.",
};
const REGISTRATIONS: Family = Family {
    source: "/registering",
    type_prefix: "registering.event.",
};

/// The types of an outcome on `financing.outcomes`.
const REJECTED: &str = "CommandRejected";
const FAILED: &str = "CommandFailed";

/// A message ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    fn cloud_event(key: impl ToString, event: &CloudEvent) -> Record {
        Record {
            key: key.to_string(),
            payload: serde_json::to_vec(event).expect("an envelope always serializes"),
            headers: vec![(CONTENT_TYPE.to_owned(), CLOUDEVENTS_JSON.to_owned())],
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

/// Which form a message came in, to name what is wrong with it in that form's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    CloudEvents,
    /// The earlier form, read during a rolling upgrade ([`legacy`]).
    Headers,
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Form::CloudEvents => "attribute",
            Form::Headers => "header",
        })
    }
}

/// Why a consumed message cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    #[error("missing {form} {name:?}")]
    Missing { form: Form, name: &'static str },
    #[error("{form} {name:?} is invalid: {reason}")]
    Invalid {
        form: Form,
        name: &'static str,
        reason: String,
    },
    #[error("the message has no payload")]
    NoPayload,
    #[error("the payload is not JSON: {0}")]
    NotJson(String),
    #[error("the value is not a CloudEvents JSON envelope: {0}")]
    NotCloudEvent(String),
    #[error("content-type {0:?} is not {CLOUDEVENTS_JSON:?}")]
    ContentType(String),
    #[error(transparent)]
    Payload(#[from] financing_domain::DecodeError),
}

/// The attributes a decoder needs, named as each form names them.
#[derive(Debug, Clone, Copy)]
enum Field {
    Type,
    Id,
    Subject,
    Time,
    AggregateType,
    AggregateVersion,
    SchemaVersion,
    CommandId,
    CorrelationId,
    CausationId,
    ActorRole,
    Data,
}

impl Field {
    fn name(self, form: Form) -> &'static str {
        use legacy::headers as h;
        let (attribute, header) = match self {
            Field::Type => ("type", h::TYPE),
            Field::Id => ("id", h::EVENT_ID),
            Field::Subject => ("subject", h::AGGREGATE_ID),
            Field::Time => ("time", h::RECORDED_AT),
            Field::AggregateType => ("aggregatetype", h::AGGREGATE_TYPE),
            Field::AggregateVersion => ("aggregateversion", h::VERSION),
            Field::SchemaVersion => ("schemaversion", h::SCHEMA_VERSION),
            Field::CommandId => ("commandid", h::COMMAND_ID),
            Field::CorrelationId => ("correlationid", h::CORRELATION_ID),
            Field::CausationId => ("causationid", h::CAUSATION_ID),
            Field::ActorRole => ("actorrole", "actor-role"),
            Field::Data => ("data", "the payload"),
        };
        match form {
            Form::CloudEvents => attribute,
            Form::Headers => header,
        }
    }
}

/// A consumed message read as an envelope, whichever form it came in.
struct Received {
    form: Form,
    event: CloudEvent,
}

impl Received {
    fn of(message: &impl Message) -> Result<Received, Undecodable> {
        let bytes = message.payload().ok_or(Undecodable::NoPayload)?;
        match content_type(message)? {
            Some(value) if is_cloudevents_json(value) => {
                let event: CloudEvent = serde_json::from_slice(bytes)
                    .map_err(|e| Undecodable::NotCloudEvent(e.to_string()))?;
                if event.specversion != SPEC_VERSION {
                    return Err(Undecodable::Invalid {
                        form: Form::CloudEvents,
                        name: "specversion",
                        reason: format!("{:?} is not {SPEC_VERSION:?}", event.specversion),
                    });
                }
                Ok(Received {
                    form: Form::CloudEvents,
                    event,
                })
            }
            Some(other) => Err(Undecodable::ContentType(other.to_owned())),
            None => {
                let data = serde_json::from_slice(bytes)
                    .map_err(|e| Undecodable::NotJson(e.to_string()))?;
                Ok(Received {
                    form: Form::Headers,
                    event: legacy::read(message, data)?,
                })
            }
        }
    }

    fn missing(&self, field: Field) -> Undecodable {
        Undecodable::Missing {
            form: self.form,
            name: field.name(self.form),
        }
    }

    fn invalid(&self, field: Field, reason: String) -> Undecodable {
        Undecodable::Invalid {
            form: self.form,
            name: field.name(self.form),
            reason,
        }
    }

    fn required<T: Clone>(&self, value: &Option<T>, field: Field) -> Result<T, Undecodable> {
        value.clone().ok_or_else(|| self.missing(field))
    }

    /// The domain's name for the message's type, which must be of `family`.
    fn type_name(&self, family: &Family) -> Result<String, Undecodable> {
        let kind = self.event.kind.as_str();
        if kind.is_empty() {
            return Err(self.missing(Field::Type));
        }
        match self.form {
            Form::Headers => Ok(kind.to_owned()),
            Form::CloudEvents => kind
                .strip_prefix(family.type_prefix)
                .map(str::to_owned)
                .ok_or_else(|| {
                    self.invalid(
                        Field::Type,
                        format!("{kind:?} is not a {}* type", family.type_prefix),
                    )
                }),
        }
    }

    fn uuid(&self, text: Option<&str>, field: Field) -> Result<Uuid, Undecodable> {
        let text = text
            .filter(|text| !text.is_empty())
            .ok_or_else(|| self.missing(field))?;
        text.parse()
            .map_err(|e| self.invalid(field, format!("{text:?}: {e}")))
    }

    fn subject(&self) -> Result<Option<Uuid>, Undecodable> {
        self.event
            .subject
            .as_deref()
            .map(|text| self.uuid(Some(text), Field::Subject))
            .transpose()
    }

    /// An aggregate version: from 1 up to what a BIGINT holds, as every store keeps it.
    fn aggregate_version(&self) -> Result<u64, Undecodable> {
        let version = self.required(&self.event.aggregateversion, Field::AggregateVersion)?;
        if version == 0 || i64::try_from(version).is_err() {
            return Err(self.invalid(
                Field::AggregateVersion,
                format!("{version} is not between 1 and {}", i64::MAX),
            ));
        }
        Ok(version)
    }

    /// Who asked, if the message says: a party without a role, or a role this version does
    /// not know, is refused.
    fn actor(&self) -> Result<Option<Actor>, Undecodable> {
        let Some(party) = self.event.actorid else {
            return Ok(None);
        };
        let role = self.required(&self.event.actorrole, Field::ActorRole)?;
        let role = role
            .parse()
            .map_err(|e| self.invalid(Field::ActorRole, e))?;
        Ok(Some(Actor::new(party, role)))
    }

    fn time(&self) -> Result<DateTime<Utc>, Undecodable> {
        self.required(&self.event.time, Field::Time)
    }

    fn into_data(self) -> Result<Value, Undecodable> {
        let missing = self.missing(Field::Data);
        self.event.data.ok_or(missing)
    }
}

/// The message's `content-type` header, if it has one.
fn content_type(message: &impl Message) -> Result<Option<&str>, Undecodable> {
    let Some(value) = message
        .headers()
        .and_then(|all| {
            all.iter()
                .find(|h| h.key.eq_ignore_ascii_case(CONTENT_TYPE))
        })
        .and_then(|header| header.value)
    else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .map(Some)
        .map_err(|e| Undecodable::ContentType(e.to_string()))
}

/// An event's message on `financing.events`, keyed by aggregate id.
pub fn event_record(meta: &EventMeta, event_type: &str, payload: &Value) -> Record {
    let mut event = CloudEvent::new(
        meta.event_id,
        EVENTS.source,
        EVENTS.kind(event_type),
        meta.recorded_at,
        payload.clone(),
    );
    event.subject = Some(meta.aggregate_id.to_string());
    event.aggregatetype = Some(meta.aggregate_type.clone());
    event.aggregateversion = Some(meta.version);
    event.schemaversion = Some(meta.schema_version);
    event.commandid = Some(meta.command_id.as_uuid());
    event.correlationid = Some(meta.correlation_id);
    event.causationid = Some(meta.causation_id);
    event.traceparent = Some(traceparent(meta.correlation_id, meta.event_id));
    event.asked_by(meta.actor);
    Record::cloud_event(meta.aggregate_id, &event)
}

/// How a message travels on the bus: read from what a consumer received, written as a record
/// to publish.
pub trait WireForm: Sized {
    fn decode(message: &impl Message) -> Result<Self, Undecodable>;
    fn record(&self) -> Record;
}

/// A domain event on `financing.events`, upcast to its current schema version.
impl WireForm for EventEnvelope {
    fn decode(message: &impl Message) -> Result<EventEnvelope, Undecodable> {
        let received = Received::of(message)?;
        let event_type = received.type_name(&EVENTS)?;
        let aggregate_type =
            received.required(&received.event.aggregatetype, Field::AggregateType)?;
        let schema_version =
            received.required(&received.event.schemaversion, Field::SchemaVersion)?;
        let mut meta = EventMeta {
            aggregate_id: received
                .subject()?
                .ok_or_else(|| received.missing(Field::Subject))?,
            version: received.aggregate_version()?,
            schema_version,
            event_id: received.uuid(Some(&received.event.id), Field::Id)?,
            command_id: received
                .required(&received.event.commandid, Field::CommandId)?
                .into(),
            correlation_id: received
                .required(&received.event.correlationid, Field::CorrelationId)?,
            causation_id: received.required(&received.event.causationid, Field::CausationId)?,
            recorded_at: received.time()?,
            actor: received.actor()?,
            aggregate_type,
        };
        let payload = received.into_data()?;
        let event = Event::decode(&meta.aggregate_type, &event_type, schema_version, payload)?;
        meta.schema_version = event.schema_version();
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
    /// Who asked for it, as the listener authenticated them (`None` in the earlier form).
    pub actor: Option<Actor>,
}

/// Keyed by the aggregate the command changes, so one aggregate's commands stay in order.
impl WireForm for CommandMessage {
    fn record(&self) -> Record {
        let aggregate_id = self.command.aggregate_id();
        let mut event = CloudEvent::new(
            self.command_id,
            COMMANDS.source,
            COMMANDS.kind(self.command.type_name()),
            Utc::now(),
            self.command.to_payload(),
        );
        event.subject = Some(aggregate_id.to_string());
        event.commandid = Some(self.command_id.as_uuid());
        event.correlationid = Some(self.correlation_id);
        event.traceparent = Some(traceparent(self.correlation_id, self.command_id.as_uuid()));
        event.asked_by(self.actor);
        Record::cloud_event(aggregate_id, &event)
    }

    fn decode(message: &impl Message) -> Result<CommandMessage, Undecodable> {
        let received = Received::of(message)?;
        let type_name = received.type_name(&COMMANDS)?;
        let command_id = received.required(&received.event.commandid, Field::CommandId)?;
        let correlation_id =
            received.required(&received.event.correlationid, Field::CorrelationId)?;
        let actor = received.actor()?;
        Ok(CommandMessage {
            command_id: command_id.into(),
            correlation_id,
            command: ClientCommand::from_payload(&type_name, received.into_data()?)?,
            actor,
        })
    }
}

/// The outcome of a command that produced no event, on `financing.outcomes`: its type says
/// whether the domain rejected it or it failed; keyed by the aggregate, or by the command when
/// the aggregate is unknown.
impl WireForm for CommandOutcome {
    fn record(&self) -> Record {
        let kind = if self.failed { FAILED } else { REJECTED };
        let mut event = CloudEvent::new(
            self.command_id,
            OUTCOMES.source,
            OUTCOMES.kind(kind),
            self.decided_at,
            serde_json::json!({ "reason": self.reason }),
        );
        event.subject = self.aggregate_id.map(|id| id.to_string());
        event.aggregatetype = self.aggregate_type.clone();
        event.commandid = Some(self.command_id.as_uuid());
        event.asked_by(self.actor);
        let key = self
            .aggregate_id
            .map_or_else(|| self.command_id.to_string(), |id| id.to_string());
        Record::cloud_event(key, &event)
    }

    fn decode(message: &impl Message) -> Result<CommandOutcome, Undecodable> {
        let received = Received::of(message)?;
        let failed = match received.type_name(&OUTCOMES)?.as_str() {
            REJECTED => false,
            FAILED => true,
            other => {
                return Err(received.invalid(
                    Field::Type,
                    format!("{other:?} is neither {REJECTED:?} nor {FAILED:?}"),
                ));
            }
        };
        let outcome = CommandOutcome {
            command_id: received
                .required(&received.event.commandid, Field::CommandId)?
                .into(),
            failed,
            aggregate_type: received.event.aggregatetype.clone(),
            aggregate_id: received.subject()?,
            reason: String::new(),
            decided_at: received.time()?,
            actor: received.actor()?,
        };
        let data = received.into_data()?;
        let reason = data["reason"].as_str().ok_or(Undecodable::NotJson(
            "the data has no \"reason\" text".into(),
        ))?;
        Ok(CommandOutcome {
            reason: reason.to_owned(),
            ..outcome
        })
    }
}

/// An integration event's message on `registering.events`, keyed by its subject.
pub fn integration_record(event: &IntegrationEvent) -> Record {
    let mut envelope = CloudEvent::new(
        Uuid::new_v4(),
        REGISTRATIONS.source,
        REGISTRATIONS.kind(event.type_name()),
        Utc::now(),
        event.to_payload(),
    );
    envelope.subject = Some(event.subject_id().to_string());
    Record::cloud_event(event.subject_id(), &envelope)
}

pub fn integration_event(message: &impl Message) -> Result<IntegrationEvent, Undecodable> {
    let received = Received::of(message)?;
    let type_name = received.type_name(&REGISTRATIONS)?;
    Ok(IntegrationEvent::from_payload(
        &type_name,
        received.into_data()?,
    )?)
}

/// What can be told of a message without decoding it whole: enough to name its chain of work
/// in the logs, to list it among dead letters, or to tell the client of a command that cannot
/// be decoded that it failed. Whatever cannot be read is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Glimpse {
    /// Its type as it travels (`financing.command.SellInvoice`; `SellInvoice` in the header
    /// form).
    pub kind: Option<String>,
    pub command_id: Option<CommandId>,
    /// From its `traceparent`, else its correlation id.
    pub correlation_id: Option<Uuid>,
    /// Who asked for it.
    pub actor: Option<Actor>,
}

pub fn glimpse(message: &impl Message) -> Glimpse {
    let glance = match content_type(message) {
        Ok(Some(value)) if is_cloudevents_json(value) => message
            .payload()
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or_default(),
        Ok(None) => {
            use legacy::headers as h;
            let text = |name| {
                legacy::header(message, name)
                    .ok()
                    .flatten()
                    .map(str::to_owned)
            };
            Glance {
                kind: text(h::TYPE),
                commandid: text(h::COMMAND_ID),
                traceparent: text(h::TRACEPARENT),
                correlationid: text(h::CORRELATION_ID),
                ..Glance::default()
            }
        }
        _ => Glance::default(),
    };
    let actor = || {
        let party: Uuid = glance.actorid.as_deref()?.parse().ok()?;
        Some(Actor::new(
            party,
            glance.actorrole.as_deref()?.parse().ok()?,
        ))
    };
    Glimpse {
        actor: actor(),
        kind: glance.kind.clone(),
        command_id: glance.commandid.as_deref().and_then(|id| id.parse().ok()),
        correlation_id: glance
            .traceparent
            .as_deref()
            .and_then(correlation_of_traceparent)
            .or_else(|| glance.correlationid.as_deref()?.parse().ok()),
    }
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
mod tests;
