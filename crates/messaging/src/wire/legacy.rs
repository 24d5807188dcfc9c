//! The form every message had before CloudEvents: the JSON payload as the value, its type, ids,
//! versions and times in headers (an outcome's time in its payload). Only read, never written:
//! a topic that still holds such messages, followed by CloudEvents, is consumed whole through a
//! rolling upgrade. Once no topic's retention holds them, this module can go.

use std::fmt::Display;
use std::str::FromStr;

use rdkafka::Message;
use rdkafka::message::Headers;
use serde_json::Value;

use super::cloudevents::{CloudEvent, SPEC_VERSION};
use super::{Form, Undecodable};

/// The header names of that form.
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
    pub const TRACEPARENT: &str = "traceparent";
}

/// A header's text; `None` when it is absent or null.
pub(crate) fn header<'m>(
    message: &'m impl Message,
    name: &'static str,
) -> Result<Option<&'m str>, Undecodable> {
    let Some(value) = message
        .headers()
        .and_then(|all| all.iter().find(|header| header.key == name))
        .and_then(|header| header.value)
    else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .map(Some)
        .map_err(|e| invalid(name, e))
}

fn parsed<T>(message: &impl Message, name: &'static str) -> Result<Option<T>, Undecodable>
where
    T: FromStr,
    T::Err: Display,
{
    header(message, name)?
        .map(|text| {
            text.parse()
                .map_err(|e| invalid(name, format!("{text:?}: {e}")))
        })
        .transpose()
}

fn invalid(name: &'static str, reason: impl ToString) -> Undecodable {
    Undecodable::Invalid {
        form: Form::Headers,
        name,
        reason: reason.to_string(),
    }
}

/// The message as the envelope it would be today, with the header names kept for errors.
pub(crate) fn read(message: &impl Message, data: Value) -> Result<CloudEvent, Undecodable> {
    use headers::*;
    let mut event = CloudEvent {
        specversion: SPEC_VERSION.to_owned(),
        id: header(message, EVENT_ID)?.unwrap_or_default().to_owned(),
        kind: header(message, TYPE)?.unwrap_or_default().to_owned(),
        subject: header(message, AGGREGATE_ID)?.map(str::to_owned),
        time: parsed(message, RECORDED_AT)?,
        aggregatetype: header(message, AGGREGATE_TYPE)?.map(str::to_owned),
        aggregateversion: parsed(message, VERSION)?,
        schemaversion: parsed(message, SCHEMA_VERSION)?,
        commandid: parsed(message, COMMAND_ID)?,
        correlationid: parsed(message, CORRELATION_ID)?,
        causationid: parsed(message, CAUSATION_ID)?,
        traceparent: header(message, TRACEPARENT)?.map(str::to_owned),
        ..CloudEvent::default()
    };
    // An outcome kept its time in its payload.
    if event.time.is_none()
        && let Some(at) = data.get("decided_at").and_then(Value::as_str)
    {
        event.time = Some(
            at.parse()
                .map_err(|e| Undecodable::NotJson(format!("decided_at: {e}")))?,
        );
    }
    event.data = Some(data);
    Ok(event)
}

/// Messages in this form, as an earlier version wrote them: for tests that prove they are still
/// read.
#[cfg(any(test, feature = "test-support"))]
pub mod write {
    use financing_domain::{CommandOutcome, EventMeta, IntegrationEvent, Message as _};
    use serde_json::Value;

    use super::headers::*;
    use crate::trace::traceparent;
    use crate::wire::{CommandMessage, Record};

    fn record(key: impl ToString, payload: &Value, headers: Vec<(&str, String)>) -> Record {
        Record {
            key: key.to_string(),
            payload: payload.to_string().into_bytes(),
            headers: headers
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        }
    }

    /// An event, with the payload of its schema version.
    pub fn event(meta: &EventMeta, event_type: &str, payload: &Value) -> Record {
        record(
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

    pub fn command(message: &CommandMessage) -> Record {
        record(
            message.command.aggregate_id(),
            &message.command.to_payload(),
            vec![
                (TYPE, message.command.type_name().to_owned()),
                (COMMAND_ID, message.command_id.to_string()),
                (CORRELATION_ID, message.correlation_id.to_string()),
                (
                    TRACEPARENT,
                    traceparent(message.correlation_id, message.command_id.as_uuid()),
                ),
            ],
        )
    }

    pub fn outcome(outcome: &CommandOutcome) -> Record {
        let kind = if outcome.failed {
            "CommandFailed"
        } else {
            "CommandRejected"
        };
        let mut headers = vec![
            (TYPE, kind.to_owned()),
            (COMMAND_ID, outcome.command_id.to_string()),
        ];
        if let Some(aggregate_type) = &outcome.aggregate_type {
            headers.push((AGGREGATE_TYPE, aggregate_type.clone()));
        }
        if let Some(aggregate_id) = outcome.aggregate_id {
            headers.push((AGGREGATE_ID, aggregate_id.to_string()));
        }
        let key = outcome
            .aggregate_id
            .map_or_else(|| outcome.command_id.to_string(), |id| id.to_string());
        let payload =
            serde_json::json!({ "reason": outcome.reason, "decided_at": outcome.decided_at });
        record(key, &payload, headers)
    }

    pub fn integration(event: &IntegrationEvent) -> Record {
        record(
            event.subject_id(),
            &event.to_payload(),
            vec![(TYPE, event.type_name().to_owned())],
        )
    }
}
