//! The event store. [`EventStore`] is the port the command handler needs (load a stream or
//! several, append with an expected version, record outcomes, or write a batch of commands'
//! effects at once); [`PgEventStore`] keeps it in Postgres and
//! [`InMemoryEventStore`] in memory for unit tests. [`Repository`] turns it into typed aggregates
//! with snapshots, [`Outbox`] hands the relayer what is still to be published, and [`Parking`]
//! keeps the messages whose effect is owed but cannot happen yet. The inspection methods answer
//! the operator's command line.

mod inspection;
mod memory;
mod outbox;
mod parking;
mod postgres;
mod repository;
mod store;

pub use inspection::{Backlog, StoredEvent, StoredSnapshot};
pub use memory::InMemoryEventStore;
pub use outbox::{Claim, HeldPartitions, LeftOut, Outbox, Published};
pub use parking::{Parked, Parking, Received};
pub use postgres::{MIGRATOR, PgEventStore};
pub use repository::{CommandMeta, Loaded, Repository};
pub use store::{
    Append, Decided, EventMetadata, EventStore, NewEvent, Outcome, RecordedEvent, Rejected,
    Snapshot, StoreError, Stream,
};

/// The tables whose rows are updated or deleted (publication marks, snapshots, parked messages),
/// and the events, only ever inserted but growing (their statistics, their visibility map): they
/// need vacuuming and analysing, which the relayer sees to where the server does not.
pub const UPDATED_TABLES: &[&str] = &[
    "events",
    "unpublished_events",
    "processed_commands",
    "failed_commands",
    "snapshots",
    "parked_messages",
];

/// The Postgres channel notified whenever events are committed.
pub const EVENTS_APPENDED_CHANNEL: &str = "events_appended";
