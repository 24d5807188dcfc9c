//! How the wire's CloudEvents envelope is written and read: `financing-messaging` with serde on
//! the spec, against the CloudEvents SDK doing the same for the same event (every attribute
//! and extension set, then read back into the domain's envelope). Prints the time per message
//! each way and the bytes on the wire.
//!
//! Usage: cargo run --release --manifest-path benches/cloudevents-peer/Cargo.toml
//!        --target-dir target/cloudevents-peer [-- MESSAGES]

use std::hint::black_box;
use std::time::Instant;

use chrono::{DateTime, Utc};
use cloudevents::event::ExtensionValue;
use cloudevents::{AttributesReader, Data, EventBuilder, EventBuilderV10};
use financing_domain::{
    CommandId, Event, EventEnvelope, EventMeta, InvestorEvent, InvestorId, InvoiceId, Money,
};
use financing_messaging::{CLOUDEVENTS_JSON, CONTENT_TYPE, Record, WireForm, traceparent};
use rdkafka::Timestamp;
use rdkafka::message::OwnedMessage;
use uuid::Uuid;

fn sample() -> EventEnvelope {
    let investor_id = InvestorId::new_random();
    EventEnvelope {
        meta: EventMeta {
            aggregate_type: "Investor".into(),
            aggregate_id: investor_id.as_uuid(),
            version: 3,
            schema_version: 2,
            event_id: Uuid::new_v4(),
            command_id: CommandId::new_random(),
            correlation_id: Uuid::new_v4(),
            causation_id: Uuid::new_v4(),
            recorded_at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
        },
        event: Event::Investor(InvestorEvent::BidOnInvoicePlaced {
            investor_id,
            invoice_id: InvoiceId::new_random(),
            amount: Money::units(20),
        }),
    }
}

fn received(record: &Record) -> OwnedMessage {
    OwnedMessage::new(
        Some(record.payload.clone()),
        Some(record.key.clone().into_bytes()),
        "financing.events".into(),
        Timestamp::NotAvailable,
        0,
        0,
        Some(record.kafka_headers()),
    )
}

/// The SDK's way: the event built with every attribute, serialized.
fn sdk_record(message: &EventEnvelope) -> Record {
    let meta = &message.meta;
    let event = EventBuilderV10::new()
        .id(meta.event_id.to_string())
        .source("/financing/events")
        .ty(format!("financing.event.{}", message.event.type_name()))
        .subject(meta.aggregate_id.to_string())
        .time(meta.recorded_at)
        .extension("aggregatetype", meta.aggregate_type.as_str())
        .extension("aggregateversion", meta.version as i64)
        .extension("schemaversion", i64::from(meta.schema_version))
        .extension("commandid", meta.command_id.to_string())
        .extension("correlationid", meta.correlation_id.to_string())
        .extension("causationid", meta.causation_id.to_string())
        .extension(
            "traceparent",
            traceparent(meta.correlation_id, meta.event_id),
        )
        .data("application/json", message.event.to_payload())
        .build()
        .expect("a whole event");
    Record {
        key: meta.aggregate_id.to_string(),
        payload: serde_json::to_vec(&event).unwrap(),
        headers: vec![(CONTENT_TYPE.into(), CLOUDEVENTS_JSON.into())],
    }
}

/// The SDK's way back: deserialized, every attribute read into the domain's envelope.
fn sdk_decode(message: &OwnedMessage) -> EventEnvelope {
    use rdkafka::Message;
    let mut event: cloudevents::Event = serde_json::from_slice(message.payload().unwrap()).unwrap();
    let text = |event: &cloudevents::Event, name: &str| match event.extension(name) {
        Some(ExtensionValue::String(text)) => text.clone(),
        other => panic!("{name}: {other:?}"),
    };
    let number = |event: &cloudevents::Event, name: &str| match event.extension(name) {
        Some(ExtensionValue::Integer(number)) => *number,
        other => panic!("{name}: {other:?}"),
    };
    let uuid = |event: &cloudevents::Event, name: &str| text(event, name).parse::<Uuid>().unwrap();
    let meta = EventMeta {
        aggregate_type: text(&event, "aggregatetype"),
        aggregate_id: event.subject().unwrap().parse().unwrap(),
        version: number(&event, "aggregateversion") as u64,
        schema_version: number(&event, "schemaversion") as i32,
        event_id: event.id().parse().unwrap(),
        command_id: uuid(&event, "commandid").into(),
        correlation_id: uuid(&event, "correlationid"),
        causation_id: uuid(&event, "causationid"),
        recorded_at: *event.time().unwrap(),
    };
    let event_type = event.ty().strip_prefix("financing.event.").unwrap().to_owned();
    let Some(Data::Json(payload)) = event.take_data().2 else {
        panic!("JSON data")
    };
    let event = Event::decode(
        &meta.aggregate_type,
        &event_type,
        meta.schema_version,
        payload,
    )
    .unwrap();
    EventEnvelope { meta, event }
}

/// Microseconds per call of `f`, over `n` calls.
fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        f();
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map_or(200_000, |n| n.parse().expect("a number of messages"));
    let message = sample();
    let ours = message.record();
    let theirs = sdk_record(&message);
    // Both carry the same event, and each side reads the other's bytes.
    assert_eq!(EventEnvelope::decode(&received(&theirs)).unwrap(), message);
    assert_eq!(sdk_decode(&received(&ours)), message);

    let (ours_in, theirs_in) = (received(&ours), received(&theirs));
    let rows = [
        (
            "serde on the spec (financing-messaging)",
            per_call(n, || {
                black_box(message.record());
            }),
            per_call(n, || {
                black_box(EventEnvelope::decode(&ours_in).unwrap());
            }),
            ours.payload.len(),
        ),
        (
            "cloudevents-sdk 0.9",
            per_call(n, || {
                black_box(sdk_record(&message));
            }),
            per_call(n, || {
                black_box(sdk_decode(&theirs_in));
            }),
            theirs.payload.len(),
        ),
    ];
    println!("{n} BidOnInvoicePlaced events, {}", Utc::now().format("%Y-%m-%d"));
    println!("| envelope | encode (µs/message) | decode (µs/message) | value (bytes) |");
    println!("|---|---|---|---|");
    for (name, encode, decode, bytes) in rows {
        println!("| {name} | {encode:.2} | {decode:.2} | {bytes} |");
    }
}
