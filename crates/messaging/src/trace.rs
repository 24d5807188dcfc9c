//! Trace context across the hops: every message that belongs to a chain of work (a client
//! command, the events it causes, the saga's reactions to them) carries a W3C `traceparent`
//! (the CloudEvents distributed-tracing extension attribute) whose trace id is the chain's
//! correlation id, and each consumer handles a message inside a span with that
//! `correlation_id`, so every log line of every component about one chain can be found by one
//! id, and a tracing system sees one trace.

use uuid::Uuid;

/// The W3C trace context header, on Kafka messages and on gRPC requests.
pub const TRACEPARENT: &str = "traceparent";

/// `00-<trace id>-<parent id>-01`: the trace id is the correlation id, the parent id the low 64
/// bits of the message's own id (an event's or a command's), sampled.
pub fn traceparent(correlation_id: Uuid, message_id: Uuid) -> String {
    let parent = message_id.as_u64_pair().1;
    format!("00-{}-{parent:016x}-01", correlation_id.simple())
}

/// The trace id of a `traceparent` value, as the correlation id it stands for; `None` unless
/// the value is well formed: a version of two hex digits other than `ff`, 32 and 16 lowercase
/// hex digits (neither all zeros) and two of flags; version `00` has nothing after them, a
/// later version may (it is read as far as version `00` goes, as the standard asks).
pub fn correlation_of_traceparent(value: &str) -> Option<Uuid> {
    let mut parts = value.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let ends_there = version != "00" || parts.next().is_none();
    let hex = |text: &str, len| {
        text.len() == len
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let well_formed = hex(version, 2)
        && version != "ff"
        && ends_there
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    well_formed.then(|| Uuid::parse_str(trace).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_id_is_the_correlation_id_and_reads_back() {
        let correlation = Uuid::new_v4();
        let value = traceparent(correlation, Uuid::new_v4());
        assert_eq!(value.len(), 55);
        assert!(value.starts_with(&format!("00-{}-", correlation.simple())));
        assert!(value.ends_with("-01"));
        assert_eq!(correlation_of_traceparent(&value), Some(correlation));
    }

    #[test]
    fn a_malformed_traceparent_stands_for_nothing_and_a_later_version_is_read_as_00() {
        for value in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert_eq!(correlation_of_traceparent(value), None, "{value:?}");
        }
        let trace_id = Some(Uuid::parse_str("0af7651916cd43dd8448eb211c80319c").unwrap());
        for value in [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            // A later version, with a field this version does not know.
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-next",
        ] {
            assert_eq!(correlation_of_traceparent(value), trace_id, "{value:?}");
        }
    }
}
