//! CloudEvents 1.0 in the Kafka protocol binding's structured content mode: a message's value
//! is the JSON envelope (the spec's context attributes, the project's extension attributes and
//! the data), and its one header is `content-type: application/cloudevents+json`.

use chrono::{DateTime, Utc};
use financing_domain::Actor;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The header that says which form a message is in.
pub const CONTENT_TYPE: &str = "content-type";
/// Its value for a CloudEvent in structured mode, JSON encoded.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// The only version of the spec this reads and writes.
pub(crate) const SPEC_VERSION: &str = "1.0";
/// What every message's `data` is.
pub(crate) const DATA_CONTENT_TYPE: &str = "application/json";

/// A CloudEvent as its JSON envelope. Extension attribute names are lowercase letters, as the
/// spec asks; `traceparent` is the distributed-tracing extension's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct CloudEvent {
    pub specversion: String,
    /// Unique within `source`: an event's id, a command's id, the outcome's command id.
    pub id: String,
    pub source: String,
    /// `financing.event.BidOnInvoicePlaced`, `financing.command.SellInvoice`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The aggregate the message is about (its id, as the message's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregatetype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregateversion: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemaversion: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commandid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Who asked for the change (the audit trail): the authenticated party and its role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actorid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actorrole: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl CloudEvent {
    /// An envelope of spec version 1.0 with JSON data; the extensions are for the caller to set.
    pub fn new(
        id: impl ToString,
        source: &str,
        kind: String,
        time: DateTime<Utc>,
        data: Value,
    ) -> CloudEvent {
        CloudEvent {
            specversion: SPEC_VERSION.to_owned(),
            id: id.to_string(),
            source: source.to_owned(),
            kind,
            time: Some(time),
            datacontenttype: Some(DATA_CONTENT_TYPE.to_owned()),
            data: Some(data),
            ..CloudEvent::default()
        }
    }

    /// Records who asked for it.
    pub fn asked_by(&mut self, actor: Option<Actor>) {
        self.actorid = actor.map(|actor| actor.party);
        self.actorrole = actor.map(|actor| actor.role.as_str().to_owned());
    }
}

/// Whether a `content-type` header's value names a JSON CloudEvent (parameters such as a
/// charset aside, in any case, as media types are).
pub(crate) fn is_cloudevents_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(CLOUDEVENTS_JSON))
}

/// The attributes a consumer looks at before decoding a message whole (to name its chain of
/// work, or its command when it cannot be decoded): the rest of the envelope is skipped, not
/// built.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Glance {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub commandid: Option<String>,
    pub correlationid: Option<String>,
    pub traceparent: Option<String>,
    pub actorid: Option<String>,
    pub actorrole: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_type_is_read_as_a_media_type() {
        for value in [
            "application/cloudevents+json",
            "application/cloudevents+json; charset=utf-8",
            "Application/CloudEvents+JSON",
        ] {
            assert!(is_cloudevents_json(value), "{value}");
        }
        for value in ["application/json", "application/cloudevents-batch+json", ""] {
            assert!(!is_cloudevents_json(value), "{value}");
        }
    }

    #[test]
    fn an_envelope_is_the_specs_json_with_lowercase_extensions() {
        let mut event = CloudEvent::new(
            "42",
            "/financing/events",
            "financing.event.InvoiceCreated".into(),
            DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            serde_json::json!({ "a": 1 }),
        );
        event.aggregateversion = Some(7);
        let json: Value = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "specversion": "1.0",
                "id": "42",
                "source": "/financing/events",
                "type": "financing.event.InvoiceCreated",
                "time": "2023-11-14T22:13:20.123Z",
                "datacontenttype": "application/json",
                "aggregateversion": 7,
                "data": { "a": 1 },
            })
        );
    }
}
