//! How a message's type name and JSON payload are split and joined: on Kafka and in the event
//! store the type travels apart from the payload (a header, a column).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A message whose type name is stored apart from its JSON payload.
///
/// Implemented by enums declared `#[serde(tag = "type", content = "payload")]` whose variants
/// all have named fields: the split and the join are then what serde does with that form.
pub trait Message: Serialize + DeserializeOwned {
    /// The variant's name, e.g. `"BidOnInvoicePlaced"`.
    fn type_name(&self) -> &'static str;

    fn to_payload(&self) -> Value {
        let mut tagged = serde_json::to_value(self).expect("a message always serializes");
        tagged["payload"].take()
    }

    fn from_payload(type_name: &str, payload: Value) -> Result<Self, DecodeError> {
        serde_json::from_value(json!({ "type": type_name, "payload": payload })).map_err(|e| {
            DecodeError {
                type_name: type_name.to_owned(),
                reason: e.to_string(),
            }
        })
    }
}

/// A payload that does not fit the type it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {type_name}: {reason}")]
pub struct DecodeError {
    pub type_name: String,
    pub reason: String,
}
