use chrono::DateTime;
use financing_domain::{InvestorEvent, InvestorId, InvoiceId, IssuerId, Money, Role};
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

/// The envelope of a record, as JSON.
fn envelope(record: &Record) -> Value {
    serde_json::from_slice(&record.payload).unwrap()
}

/// A record whose envelope was changed by `change`.
fn with_envelope(record: &Record, change: impl FnOnce(&mut Value)) -> Record {
    let mut json = envelope(record);
    change(&mut json);
    Record {
        payload: json.to_string().into_bytes(),
        ..record.clone()
    }
}

fn event_message() -> EventEnvelope {
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
            actor: Some(Actor::new(investor_id, Role::Investor)),
        },
        event: Event::Investor(InvestorEvent::BidOnInvoicePlaced {
            investor_id,
            invoice_id: InvoiceId::new_random(),
            amount: Money::units(20),
        }),
    }
}

fn command_message() -> CommandMessage {
    let investor_id = InvestorId::new_random();
    CommandMessage {
        command_id: CommandId::new_random(),
        correlation_id: Uuid::new_v4(),
        command: ClientCommand::BidOnInvoice {
            investor_id,
            invoice_id: InvoiceId::new_random(),
            bid: Money::units(20),
        },
        actor: Some(Actor::new(investor_id, Role::Investor)),
    }
}

fn outcomes() -> [CommandOutcome; 2] {
    let rejection = CommandOutcome {
        command_id: CommandId::new_random(),
        failed: false,
        aggregate_type: Some("Investor".into()),
        aggregate_id: Some(Uuid::new_v4()),
        reason: "insufficient balance: bid 10.00 but balance is 5.00".into(),
        decided_at: DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
        actor: Some(Actor::new(Uuid::new_v4(), Role::Investor)),
    };
    let failure = CommandOutcome {
        failed: true,
        aggregate_type: None,
        aggregate_id: None,
        reason: "the payload is not JSON".into(),
        actor: None,
        ..rejection.clone()
    };
    [rejection, failure]
}

fn registration() -> IntegrationEvent {
    IntegrationEvent::InvestorRegistered {
        id: InvestorId::new_random(),
        name: "Ada".into(),
        balance: Money::units(100),
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
    let message = command_message();
    let record = message.record();
    assert_eq!(record.key, message.command.aggregate_id().to_string());
    assert_eq!(CommandMessage::decode(&received(&record)).unwrap(), message);
}

#[test]
fn an_outcome_goes_through_the_wire_and_back() {
    for outcome in outcomes() {
        assert_eq!(
            CommandOutcome::decode(&received(&outcome.record())).unwrap(),
            outcome
        );
    }
}

#[test]
fn a_registration_goes_through_the_wire_and_back() {
    let event = registration();
    let record = integration_record(&event);
    assert_eq!(record.key, event.subject_id().to_string());
    assert_eq!(integration_event(&received(&record)).unwrap(), event);
}

#[test]
fn every_message_is_a_cloudevent_in_structured_mode_with_one_header() {
    let event = event_message();
    let records = [
        event.record(),
        command_message().record(),
        outcomes()[0].record(),
        integration_record(&registration()),
    ];
    for record in &records {
        assert_eq!(
            record.headers,
            [(
                "content-type".to_owned(),
                "application/cloudevents+json".to_owned()
            )]
        );
        let json = envelope(record);
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["datacontenttype"], "application/json");
        for attribute in ["id", "source", "type", "subject", "time"] {
            assert!(json[attribute].is_string(), "{attribute} in {json}");
        }
        assert!(json["data"].is_object(), "{json}");
    }
    let json = envelope(&records[0]);
    let meta = &event.meta;
    assert_eq!(json["id"], meta.event_id.to_string());
    assert_eq!(json["source"], "/financing/events");
    assert_eq!(json["type"], "financing.event.BidOnInvoicePlaced");
    assert_eq!(json["subject"], meta.aggregate_id.to_string());
    assert_eq!(json["time"], "2023-11-14T22:13:20.123Z");
    assert_eq!(json["aggregatetype"], "Investor");
    assert_eq!(json["aggregateversion"], 3);
    assert_eq!(json["schemaversion"], 2);
    assert_eq!(json["commandid"], meta.command_id.to_string());
    assert_eq!(json["correlationid"], meta.correlation_id.to_string());
    assert_eq!(json["causationid"], meta.causation_id.to_string());
    assert_eq!(
        json["traceparent"],
        traceparent(meta.correlation_id, meta.event_id)
    );
    assert_eq!(json["actorid"], meta.actor.unwrap().party.to_string());
    assert_eq!(json["actorrole"], "investor");
    assert_eq!(json["data"], event.event.to_payload());
    assert_eq!(
        envelope(&records[1])["type"],
        "financing.command.BidOnInvoice"
    );
    assert_eq!(
        envelope(&records[2])["type"],
        "financing.outcome.CommandRejected"
    );
    assert_eq!(
        envelope(&records[3])["type"],
        "registering.event.InvestorRegistered"
    );
}

/// `message` as the earlier form could carry it: without who asked.
fn anonymous<T>(mut message: T, actor: impl FnOnce(&mut T) -> &mut Option<Actor>) -> T {
    *actor(&mut message) = None;
    message
}

#[test]
fn messages_of_the_earlier_header_form_are_read_as_they_were_written() {
    let event = anonymous(event_message(), |e| &mut e.meta.actor);
    let legacy_event = legacy_record::event(
        &event.meta,
        event.event.type_name(),
        &event.event.to_payload(),
    );
    assert_eq!(
        EventEnvelope::decode(&received(&legacy_event)).unwrap(),
        event
    );
    let command = anonymous(command_message(), |c| &mut c.actor);
    assert_eq!(
        CommandMessage::decode(&received(&legacy_record::command(&command))).unwrap(),
        command
    );
    for outcome in outcomes().map(|o| anonymous(o, |o| &mut o.actor)) {
        assert_eq!(
            CommandOutcome::decode(&received(&legacy_record::outcome(&outcome))).unwrap(),
            outcome
        );
    }
    let registration = registration();
    assert_eq!(
        integration_event(&received(&legacy_record::integration(&registration))).unwrap(),
        registration
    );
}

#[test]
fn an_event_of_an_older_schema_version_is_read_as_the_current_one_in_either_form() {
    let current = anonymous(event_message(), |e| &mut e.meta.actor);
    let old_meta = EventMeta {
        schema_version: 1,
        ..current.meta.clone()
    };
    let Event::Investor(InvestorEvent::BidOnInvoicePlaced {
        investor_id,
        invoice_id,
        amount,
    }) = &current.event
    else {
        unreachable!()
    };
    let version_1 = serde_json::json!({
        "investor_id": investor_id, "invoice_id": invoice_id, "bid_amount": amount,
    });
    for record in [
        event_record(&old_meta, "BidOnInvoicePlaced", &version_1),
        legacy_record::event(&old_meta, "BidOnInvoicePlaced", &version_1),
    ] {
        let decoded = EventEnvelope::decode(&received(&record)).unwrap();
        assert_eq!(decoded, current);
        assert_eq!(decoded.meta.schema_version, 2);
    }
}

#[test]
fn a_message_without_a_needed_attribute_says_which_in_its_forms_words() {
    let record = with_envelope(&event_message().record(), |json| {
        json.as_object_mut().unwrap().remove("aggregateversion");
    });
    let error = EventEnvelope::decode(&received(&record)).unwrap_err();
    assert_eq!(error.to_string(), r#"missing attribute "aggregateversion""#);

    let event = event_message();
    let mut legacy = legacy_record::event(
        &event.meta,
        event.event.type_name(),
        &event.event.to_payload(),
    );
    legacy.headers.retain(|(name, _)| name != "version");
    let error = EventEnvelope::decode(&received(&legacy)).unwrap_err();
    assert_eq!(error.to_string(), r#"missing header "version""#);
}

#[test]
fn a_version_outside_what_a_store_keeps_is_refused() {
    for version in [0, 9_223_372_036_854_775_808_u64, u64::MAX] {
        let record = with_envelope(&event_message().record(), |json| {
            json["aggregateversion"] = version.into();
        });
        let error = EventEnvelope::decode(&received(&record)).unwrap_err();
        assert!(
            matches!(
                error,
                Undecodable::Invalid {
                    name: "aggregateversion",
                    ..
                }
            ),
            "{version}: {error}"
        );
    }
}

#[test]
fn an_attribute_of_the_wrong_type_or_spec_version_is_refused() {
    let record = with_envelope(&event_message().record(), |json| {
        json["aggregateversion"] = "three".into();
    });
    let error = EventEnvelope::decode(&received(&record)).unwrap_err();
    assert!(matches!(error, Undecodable::NotCloudEvent(_)), "{error}");

    let record = with_envelope(&event_message().record(), |json| {
        json["specversion"] = "0.3".into();
    });
    let error = EventEnvelope::decode(&received(&record)).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"attribute "specversion" is invalid: "0.3" is not "1.0""#
    );
}

#[test]
fn an_actor_without_a_known_role_is_refused() {
    for change in [
        |json: &mut Value| json["actorrole"] = "admin".into(),
        |json: &mut Value| {
            json.as_object_mut().unwrap().remove("actorrole");
        },
    ] {
        let record = with_envelope(&command_message().record(), change);
        let error = CommandMessage::decode(&received(&record)).unwrap_err();
        assert!(
            matches!(
                error,
                Undecodable::Invalid {
                    name: "actorrole",
                    ..
                } | Undecodable::Missing {
                    name: "actorrole",
                    ..
                }
            ),
            "{error}"
        );
    }
}

#[test]
fn a_message_of_another_family_is_refused_by_its_type() {
    let command = received(&command_message().record());
    let error = EventEnvelope::decode(&command).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("\"financing.command.BidOnInvoice\" is not a financing.event.* type"),
        "{error}"
    );
}

#[test]
fn an_integration_event_with_a_balance_past_the_largest_amount_is_refused() {
    let record = with_envelope(&integration_record(&registration()), |json| {
        json["data"]["balance"] = "100000000000000000".into();
    });
    let error = integration_event(&received(&record)).unwrap_err();
    assert!(error.to_string().contains("must not exceed"), "{error}");
}

#[test]
fn a_value_that_is_not_json_says_so_in_either_form() {
    let mut record = event_message().record();
    record.payload = b"{not json".to_vec();
    let error = EventEnvelope::decode(&received(&record)).unwrap_err();
    assert!(matches!(error, Undecodable::NotCloudEvent(_)), "{error}");
    record.headers.clear();
    let error = EventEnvelope::decode(&received(&record)).unwrap_err();
    assert!(matches!(error, Undecodable::NotJson(_)), "{error}");
}

#[test]
fn a_content_type_this_does_not_read_is_refused() {
    let mut record = command_message().record();
    record.headers = vec![("content-type".into(), "application/avro".into())];
    let error = CommandMessage::decode(&received(&record)).unwrap_err();
    assert!(matches!(error, Undecodable::ContentType(_)), "{error}");
}

#[test]
fn a_glimpse_names_the_chain_and_the_command_in_either_form() {
    let command = command_message();
    for record in [command.record(), legacy_record::command(&command)] {
        let glimpse = glimpse(&received(&record));
        assert_eq!(glimpse.command_id, Some(command.command_id));
        assert_eq!(glimpse.correlation_id, Some(command.correlation_id));
        assert!(glimpse.kind.unwrap().ends_with("BidOnInvoice"));
    }
    assert_eq!(glimpse(&received(&command.record())).actor, command.actor);
    // Without a traceparent, the correlation id.
    let record = with_envelope(&command.record(), |json| {
        json.as_object_mut().unwrap().remove("traceparent");
    });
    assert_eq!(
        glimpse(&received(&record)).correlation_id,
        Some(command.correlation_id)
    );
    // A value that is not an envelope tells nothing, and does not fail.
    let mut broken = command.record();
    broken.payload = b"\xff".to_vec();
    assert_eq!(glimpse(&received(&broken)), Glimpse::default());
}

#[test]
fn a_dead_letter_keeps_the_message_and_adds_the_reason() {
    let original = received(&integration_record(&IntegrationEvent::IssuerRegistered {
        id: IssuerId::new_random(),
        name: "ACME".into(),
    }));
    let letter = dead_letter(&original, "boom");
    assert_eq!(letter.payload(), original.payload());
    assert_eq!(letter.key(), original.key());
    let header = |name| legacy::header(&letter, name).unwrap();
    assert_eq!(header("content-type"), Some(CLOUDEVENTS_JSON));
    assert_eq!(header(headers::DLQ_REASON), Some("boom"));
    assert_eq!(header(headers::DLQ_TOPIC), Some("topic"));
    assert_eq!(header(headers::DLQ_OFFSET), Some("42"));
}
