//! How stored and published events evolve: each event type has a schema version, written with
//! every event, and this module is the one place that brings an event of an older version up
//! to the current one (upcasting). Readers never see an old shape: the event store and the
//! wire pass every event through [`upcast`] before the domain decodes it.
//!
//! To change an event's payload: raise its number in [`current_version`], add a step from the
//! previous version in [`upcast_once`], and test that a row of the previous version reads as
//! the new one. Old rows are never rewritten.

use serde_json::Value;

use crate::message::{DecodeError, Message};

/// An event of `event_type` written at `schema_version`, as the current version of the domain
/// reads it: upcast, then decoded; an error if it was written by a newer version, or if its
/// payload does not fit.
pub fn decode<E: Message>(
    event_type: &str,
    schema_version: i32,
    payload: Value,
) -> Result<E, DecodeError> {
    let (version, payload) = upcast(event_type, schema_version, payload);
    check_current(event_type, version)?;
    E::from_payload(event_type, payload)
}

/// The schema version written today for an event type (1 for any type never changed).
pub fn current_version(event_type: &str) -> i32 {
    match event_type {
        // 2: `bid_amount` renamed `amount`, as in every other investor event.
        "BidOnInvoicePlaced" => 2,
        _ => 1,
    }
}

/// The payload of an event of `event_type` written at `schema_version`, brought up to the
/// current version one step at a time, with the version it now has. A version this domain
/// does not know (newer, or below 1) is returned as it is: [`check_current`] refuses it.
pub fn upcast(event_type: &str, schema_version: i32, mut payload: Value) -> (i32, Value) {
    let current = current_version(event_type);
    let mut version = schema_version;
    while (1..current).contains(&version) {
        payload = upcast_once(event_type, version, payload);
        version += 1;
    }
    (version, payload)
}

/// An error unless `schema_version` is the one this domain reads for `event_type`.
fn check_current(event_type: &str, schema_version: i32) -> Result<(), DecodeError> {
    let current = current_version(event_type);
    if schema_version == current {
        return Ok(());
    }
    Err(DecodeError {
        type_name: event_type.to_owned(),
        reason: if schema_version > current {
            format!("schema version {schema_version} is newer than this version reads ({current})")
        } else {
            format!("schema version {schema_version} is not a version of it (1 to {current})")
        },
    })
}

/// One step: the payload of version `from` as version `from + 1`. A payload that does not have
/// the old shape is left alone, for the decoder to say what is wrong with it.
fn upcast_once(event_type: &str, from: i32, mut payload: Value) -> Value {
    match (event_type, from) {
        ("BidOnInvoicePlaced", 1) => {
            if let Some(fields) = payload.as_object_mut()
                && let Some(amount) = fields.remove("bid_amount")
            {
                fields.insert("amount".to_owned(), amount);
            }
            payload
        }
        _ => payload,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{InvestorEvent, InvestorId, InvoiceId, Message, Money};

    #[test]
    fn a_bid_placed_at_version_1_reads_as_version_2() {
        let (investor_id, invoice_id) = (InvestorId::new_random(), InvoiceId::new_random());
        let v1 =
            json!({ "investor_id": investor_id, "invoice_id": invoice_id, "bid_amount": "20.00" });

        let (version, payload) = upcast("BidOnInvoicePlaced", 1, v1.clone());

        assert_eq!(version, 2);
        let expected = InvestorEvent::BidOnInvoicePlaced {
            investor_id,
            invoice_id,
            amount: Money::units(20),
        };
        assert_eq!(
            InvestorEvent::from_payload("BidOnInvoicePlaced", payload).unwrap(),
            expected
        );
        assert_eq!(
            decode::<InvestorEvent>("BidOnInvoicePlaced", 1, v1).unwrap(),
            expected
        );
        assert_eq!(
            decode::<InvestorEvent>("BidOnInvoicePlaced", 2, expected.to_payload()).unwrap(),
            expected
        );
    }

    #[test]
    fn a_current_event_is_left_as_it_is() {
        let payload = json!({ "investor_id": InvestorId::new_random(), "amount": "1.00" });
        assert_eq!(
            upcast("InvestorFundsAdded", 1, payload.clone()),
            (1, payload.clone())
        );
        let v2 = json!({ "amount": "3.00", "bid_amount": "kept" });
        assert_eq!(upcast("BidOnInvoicePlaced", 2, v2.clone()), (2, v2));
    }

    #[test]
    fn a_version_newer_than_the_domain_knows_is_refused_not_guessed() {
        let payload = json!({ "investor_id": InvestorId::new_random(), "amount": "1.00" });
        let error = decode::<InvestorEvent>("InvestorFundsAdded", 2, payload.clone()).unwrap_err();
        assert!(error.reason.contains("newer"), "{error}");
        assert!(decode::<InvestorEvent>("InvestorFundsAdded", 0, payload.clone()).is_err());
        assert!(decode::<InvestorEvent>("InvestorFundsAdded", 1, payload).is_ok());
    }
}
