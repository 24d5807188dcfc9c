//! The executor on the in-memory event store: outcomes, redeliveries, compensation, conflicts,
//! and a property over random commands delivered any number of times.

use std::sync::atomic::{AtomicU32, Ordering};

use financing_command_handler::{Executor, Job, Origin};
use financing_domain::saga::{self, EventPosition, Issued};
use financing_domain::{
    Actor, Aggregate, ClientCommand, Command, CommandId, Event, IntegrationEvent, Investor,
    InvestorCommand, InvestorEvent, InvestorId, Invoice, InvoiceId, InvoiceStatus, IssuerId, Money,
    Role,
};
use financing_event_store::{
    Append, Decided, EventStore, InMemoryEventStore, Outcome, RecordedEvent, Rejected, Repository,
    StoreError, Stream,
};
use financing_messaging::CommandMessage;
use proptest::prelude::*;
use uuid::Uuid;

fn executor<S: EventStore>(store: S) -> Executor<S> {
    Executor::new(Repository::new(store, 3), 5)
}

/// A client's command, as the listener queues it: asked for by the party it names (approvals
/// and reversals by support).
fn client(command: ClientCommand) -> CommandMessage {
    let command_id = CommandId::new_random();
    let actor = match &command {
        ClientCommand::SellInvoice { issuer_id, .. } => Actor::new(*issuer_id, Role::Issuer),
        ClientCommand::BidOnInvoice { investor_id, .. } => Actor::new(*investor_id, Role::Investor),
        ClientCommand::ApproveFinancing { .. } | ClientCommand::ReverseFinancing { .. } => {
            Actor::new(Uuid::nil(), Role::Operator)
        }
    };
    CommandMessage {
        command_id,
        correlation_id: command_id.as_uuid(),
        command,
        actor: Some(actor),
    }
}

fn origin() -> Origin {
    Origin {
        correlation_id: Uuid::new_v4(),
        causation_id: Uuid::new_v4(),
        actor: None,
    }
}

async fn register_issuer<S: EventStore>(executor: &Executor<S>) -> IssuerId {
    let issuer_id = IssuerId::new_random();
    let registered = IntegrationEvent::IssuerRegistered {
        id: issuer_id,
        name: "ACME".into(),
    };
    executor
        .react(&saga::on_integration_event(&registered), origin())
        .await
        .unwrap();
    issuer_id
}

async fn register_investor<S: EventStore>(executor: &Executor<S>, funds: u64) -> InvestorId {
    let id = InvestorId::new_random();
    register(executor, id, funds).await;
    id
}

async fn register<S: EventStore>(executor: &Executor<S>, id: InvestorId, funds: u64) {
    let registered = IntegrationEvent::InvestorRegistered {
        id,
        name: "Ada".into(),
        balance: Money::units(funds),
    };
    let outcome = executor
        .react(&saga::on_integration_event(&registered), origin())
        .await;
    assert_eq!(outcome.unwrap(), Outcome::Applied);
}

/// A registered issuer's invoice asking 50, and an investor with 100.
async fn an_invoice_asking_50_and_an_investor_with_100<S: EventStore>(
    executor: &Executor<S>,
) -> (InvoiceId, InvestorId) {
    let issuer_id = register_issuer(executor).await;
    let invoice_id = InvoiceId::new_random();
    let sell = client(ClientCommand::SellInvoice {
        invoice_id,
        issuer_id,
        asking_price: Money::units(50),
    });
    executor.client_command(sell).await.unwrap();
    (invoice_id, register_investor(executor, 100).await)
}

/// The investor's bids, each on an invoice of its own.
fn bids_of(investor_id: InvestorId) -> impl Fn(u64) -> CommandMessage {
    move |units| {
        client(ClientCommand::BidOnInvoice {
            investor_id,
            invoice_id: InvoiceId::new_random(),
            bid: Money::units(units),
        })
    }
}

fn event_types(store: &InMemoryEventStore) -> Vec<String> {
    store.recorded().into_iter().map(|e| e.event_type).collect()
}

fn decoded(recorded: &RecordedEvent) -> (EventPosition, Event) {
    let position = EventPosition {
        aggregate_id: recorded.aggregate_id,
        version: recorded.version,
    };
    (position, recorded.envelope().unwrap().event)
}

fn investor_state(store: &InMemoryEventStore, id: InvestorId) -> Investor {
    let events: Vec<InvestorEvent> = store
        .recorded()
        .iter()
        .filter(|e| e.aggregate_id == id.as_uuid())
        .map(|e| match decoded(e).1 {
            Event::Investor(event) => event,
            other => panic!("{other:?}"),
        })
        .collect();
    Investor::replay(&events).expect("the stored events apply")
}

#[tokio::test]
async fn selling_for_an_unregistered_issuer_is_rejected_and_recorded_without_events() {
    let store = InMemoryEventStore::new();
    let executor = executor(&store);
    let issuer_id = IssuerId::new_random();
    let sell = client(ClientCommand::SellInvoice {
        invoice_id: InvoiceId::new_random(),
        issuer_id,
        asking_price: Money::units(10),
    });
    let command_id = sell.command_id;

    let outcome = executor.client_command(sell).await.unwrap();
    let expected = Outcome::Rejected {
        reason: format!("issuer {issuer_id} is not registered"),
    };
    assert_eq!(outcome, expected);
    assert_eq!(store.outcome(command_id).await.unwrap(), Some(expected));
    assert!(store.recorded().is_empty());
}

#[tokio::test]
async fn a_sale_by_a_registered_issuer_creates_the_invoice_in_the_client_s_correlation() {
    let store = InMemoryEventStore::new();
    let executor = executor(&store);
    let issuer_id = register_issuer(&executor).await;
    let sell = client(ClientCommand::SellInvoice {
        invoice_id: InvoiceId::new_random(),
        issuer_id,
        asking_price: Money::units(10),
    });
    let (command_id, correlation_id) = (sell.command_id, sell.correlation_id);

    assert_eq!(
        executor.client_command(sell).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(event_types(&store), ["IssuerCreated", "InvoiceCreated"]);
    let created = &store.recorded()[1];
    assert_eq!(created.metadata.command_id, command_id);
    assert_eq!(created.metadata.correlation_id, correlation_id);
    assert_eq!(created.metadata.causation_id, command_id.as_uuid());
}

#[tokio::test]
async fn a_redelivered_command_changes_nothing_and_reports_its_first_outcome() {
    let store = InMemoryEventStore::new();
    let executor = executor(&store);
    let investor_id = InvestorId::new_random();
    let bid = client(ClientCommand::BidOnInvoice {
        investor_id,
        invoice_id: InvoiceId::new_random(),
        bid: Money::units(10),
    });
    let first = executor.client_command(bid.clone()).await.unwrap();
    assert!(
        matches!(first, Outcome::Rejected { .. }),
        "no such investor yet"
    );

    // Even once the bid could succeed, its redelivery keeps the first outcome.
    register(&executor, investor_id, 100).await;
    let placed = client(ClientCommand::BidOnInvoice {
        investor_id,
        invoice_id: InvoiceId::new_random(),
        bid: Money::units(10),
    });
    assert_eq!(
        executor.client_command(placed.clone()).await.unwrap(),
        Outcome::Applied
    );
    let events_before = store.recorded().len();

    assert_eq!(executor.client_command(bid).await.unwrap(), first);
    assert_eq!(
        executor.client_command(placed).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(store.recorded().len(), events_before);
}

#[tokio::test]
async fn a_bid_on_a_missing_invoice_gives_the_funds_back_once() {
    let store = InMemoryEventStore::new();
    let executor = executor(&store);
    let investor_id = register_investor(&executor, 100).await;
    let bid = client(ClientCommand::BidOnInvoice {
        investor_id,
        invoice_id: InvoiceId::new_random(),
        bid: Money::units(30),
    });
    executor.client_command(bid).await.unwrap();
    let placed = store.recorded().last().cloned().unwrap();
    assert_eq!(placed.event_type, "BidOnInvoicePlaced");

    let (position, event) = decoded(&placed);
    let reaction = saga::on_event(position, &event).unwrap();
    for _delivery in 0..3 {
        let outcome = executor.react(&reaction, origin()).await.unwrap();
        assert!(matches!(outcome, Outcome::Rejected { .. }), "{outcome:?}");
    }

    let released: Vec<String> = event_types(&store)
        .into_iter()
        .filter(|t| t == "InvestorFundsReleased")
        .collect();
    assert_eq!(released.len(), 1);
    let investor = investor_state(&store, investor_id);
    assert_eq!(
        (investor.balance(), investor.reserved()),
        (Money::units(100), Money::ZERO)
    );
}

#[tokio::test]
async fn a_batch_decides_each_command_on_the_state_the_ones_before_it_left() {
    // Given an investor with 100
    let store = InMemoryEventStore::new();
    let executor = executor(&store);
    let investor_id = register_investor(&executor, 100).await;
    let bid = bids_of(investor_id);

    // When one batch bids 60 twice (the same message delivered twice among them), on an
    // invoice that does not exist
    let first = bid(60);
    let jobs = vec![
        Job::Client(first.clone()),
        Job::Client(first),
        Job::Client(bid(60)),
    ];
    let outcomes = executor.execute_all(jobs).await.unwrap();

    // Then the first applies once, and the second is decided on the 40 left
    let refused = Outcome::Rejected {
        reason: "insufficient balance: bid 60.00 but balance is 40.00".into(),
    };
    assert_eq!(outcomes, [Outcome::Applied, Outcome::Applied, refused]);
    // And the saga's reaction in the same batch finds no invoice: its compensation gives the
    // funds back
    assert_eq!(
        event_types(&store)[2..],
        ["BidOnInvoicePlaced", "InvestorFundsReleased"]
    );
    let investor = investor_state(&store, investor_id);
    assert_eq!(
        (investor.balance(), investor.reserved()),
        (Money::units(100), Money::ZERO)
    );
}

#[tokio::test]
async fn a_bid_s_saga_runs_in_the_batch_that_placed_it_and_its_events_redelivered_change_nothing() {
    // Given a registered issuer's invoice asking 50, and an investor with 100
    let store = InMemoryEventStore::new();
    let executor = executor(&store);
    let (invoice_id, investor_id) = an_invoice_asking_50_and_an_investor_with_100(&executor).await;
    let before = store.recorded().len();

    // When a batch holds a bid of 60 on it
    let bid = client(ClientCommand::BidOnInvoice {
        investor_id,
        invoice_id,
        bid: Money::units(60),
    });
    let correlation_id = bid.correlation_id;
    let outcomes = executor.execute_all(vec![Job::Client(bid)]).await.unwrap();

    // Then the invoice is financed and the surplus released in the same batch, each step
    // caused by the one before, all in the client's correlation
    assert_eq!(outcomes, [Outcome::Applied]);
    let saga: Vec<RecordedEvent> = store.recorded()[before..].to_vec();
    let types: Vec<&str> = saga.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "BidOnInvoicePlaced",
            "InvoiceFinanced",
            "InvestorFundsReleased"
        ]
    );
    for pair in saga.windows(2) {
        assert_eq!(pair[1].metadata.causation_id, pair[0].metadata.event_id);
    }
    assert!(
        saga.iter()
            .all(|e| e.metadata.correlation_id == correlation_id)
    );
    let investor = investor_state(&store, investor_id);
    assert_eq!(
        (investor.balance(), investor.reserved()),
        (Money::units(50), Money::units(50))
    );

    // When the broker delivers those events to the saga, twice, in one batch
    let reactions: Vec<Job> = saga
        .iter()
        .filter_map(|recorded| {
            let (position, event) = decoded(recorded);
            saga::on_event(position, &event)
        })
        .flat_map(|reaction| [reaction.clone(), reaction])
        .map(|reaction| Job::React(reaction, origin()))
        .collect();
    let watched = Racing::new(&store, Race::Never);
    let outcomes = self::executor(&watched)
        .execute_all(reactions)
        .await
        .unwrap();

    // Then each reaction reports its first outcome, no stream is read and nothing is written
    assert_eq!(outcomes, vec![Outcome::Applied; 4]);
    assert_eq!(watched.streams_read(), 0);
    assert_eq!(store.recorded().len(), before + saga.len());
}

#[tokio::test]
async fn a_clash_on_an_aggregate_only_a_reaction_touched_leaves_the_saga_to_the_broker() {
    // Given a registered issuer's invoice asking 50, and an investor with 100
    let store = InMemoryEventStore::new();
    let (invoice_id, investor_id) =
        an_invoice_asking_50_and_an_investor_with_100(&executor(&store)).await;
    let before = store.recorded().len();

    // When a batch holds a bid of 60 on it, and another writer gets to the invoice between
    // the batch's reads and its write
    let racing = Racing::new(&store, Race::WonTheBatchOn(invoice_id.into()));
    let bid = client(ClientCommand::BidOnInvoice {
        investor_id,
        invoice_id,
        bid: Money::units(60),
    });
    let outcomes = self::executor(&racing)
        .execute_all(vec![Job::Client(bid)])
        .await
        .unwrap();

    // Then the bid is written in a second batch, without the saga's reactions: the invoice's
    // answer to it is left to the broker's delivery of the bid's event
    assert_eq!(outcomes, [Outcome::Applied]);
    assert_eq!(racing.batches(), 2);
    let ours: Vec<RecordedEvent> = store.recorded()[before..]
        .iter()
        .filter(|recorded| recorded.aggregate_id == Uuid::from(investor_id))
        .cloned()
        .collect();
    let types: Vec<&str> = ours.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["BidOnInvoicePlaced"]);
    let investor = investor_state(&store, investor_id);
    assert_eq!(
        (investor.balance(), investor.reserved()),
        (Money::units(40), Money::units(60))
    );
    let (position, placed) = decoded(&ours[0]);
    let reaction = saga::on_event(position, &placed).expect("the invoice is asked to answer");
    assert_eq!(store.outcome(reaction.command.id).await.unwrap(), None);
}

#[tokio::test]
async fn a_sale_after_its_issuer_s_registration_in_the_same_batch_applies() {
    let store = InMemoryEventStore::new();
    let executor = executor(&store);
    let issuer_id = IssuerId::new_random();
    let registered = IntegrationEvent::IssuerRegistered {
        id: issuer_id,
        name: "ACME".into(),
    };
    let sell = client(ClientCommand::SellInvoice {
        invoice_id: InvoiceId::new_random(),
        issuer_id,
        asking_price: Money::units(10),
    });

    let jobs = vec![
        Job::React(saga::on_integration_event(&registered), origin()),
        Job::Client(sell),
    ];
    let outcomes = executor.execute_all(jobs).await.unwrap();

    assert_eq!(outcomes, [Outcome::Applied, Outcome::Applied]);
    assert_eq!(event_types(&store), ["IssuerCreated", "InvoiceCreated"]);
}

#[tokio::test]
async fn a_batch_holding_a_command_processed_before_reports_its_first_outcome_and_writes_the_rest()
{
    // Given a bid of 90 of an investor's 100 already carried out
    let store = InMemoryEventStore::new();
    let investor_id = register_investor(&executor(&store), 100).await;
    let bid = bids_of(investor_id);
    let done = bid(90);
    executor(&store).client_command(done.clone()).await.unwrap();
    let before = store.recorded().len();

    // When a batch holds a new bid and that one again (decided now, it would be refused: 10
    // left)
    let watched = Racing::new(&store, Race::Never);
    let jobs = vec![Job::Client(bid(5)), Job::Client(done.clone())];
    let outcomes = executor(&watched).execute_all(jobs).await.unwrap();

    // Then the second write of the batch holds only the new bid and its saga (its invoice is
    // missing: the funds go back); the other reports its first outcome and changes nothing
    assert_eq!(outcomes, [Outcome::Applied, Outcome::Applied]);
    assert_eq!(watched.batches(), 2);
    assert_eq!(
        event_types(&store)[before..],
        ["BidOnInvoicePlaced", "InvestorFundsReleased"]
    );
    let investor = investor_state(&store, investor_id);
    assert_eq!(
        (investor.balance(), investor.reserved()),
        (Money::units(10), Money::units(90))
    );
}

/// How another writer races ours in a [`Racing`] store.
enum Race {
    /// It does not.
    Never,
    /// It appends to the aggregate just before our first append.
    WonOnce,
    /// It has always just appended: every append of ours conflicts.
    AlwaysWon,
    /// It writes to this aggregate just before our first batch that touches it.
    WonTheBatchOn(Uuid),
}

/// The in-memory store with another writer racing ours; counts our appends, our batches
/// written and the streams we read (one at a time, or in batches).
struct Racing<'a> {
    inner: &'a InMemoryEventStore,
    race: Race,
    appends: AtomicU32,
    batches: AtomicU32,
    streams_read: AtomicU32,
}

/// A sale of a new invoice by `issuer_id`.
fn sale(issuer_id: IssuerId) -> CommandMessage {
    client(ClientCommand::SellInvoice {
        invoice_id: InvoiceId::new_random(),
        issuer_id,
        asking_price: Money::units(10),
    })
}

/// The command that registers `investor_id` with `funds`, under an id of its own.
fn create_investor(investor_id: InvestorId, funds: u64) -> Issued {
    Issued {
        id: CommandId::new_random(),
        command: Command::Investor(
            investor_id,
            InvestorCommand::Create {
                name: "Ada".into(),
                funds: Money::units(funds),
            },
        ),
    }
}

impl Racing<'_> {
    fn new(inner: &InMemoryEventStore, race: Race) -> Racing<'_> {
        Racing {
            inner,
            race,
            appends: AtomicU32::new(0),
            batches: AtomicU32::new(0),
            streams_read: AtomicU32::new(0),
        }
    }

    fn appends(&self) -> u32 {
        self.appends.load(Ordering::SeqCst)
    }

    fn batches(&self) -> u32 {
        self.batches.load(Ordering::SeqCst)
    }

    fn streams_read(&self) -> u32 {
        self.streams_read.load(Ordering::SeqCst)
    }
}

impl EventStore for Racing<'_> {
    async fn load_stream(&self, kind: &'static str, id: Uuid) -> Result<Stream, StoreError> {
        self.streams_read.fetch_add(1, Ordering::SeqCst);
        self.inner.load_stream(kind, id).await
    }

    async fn load_streams(
        &self,
        aggregates: &[(&'static str, Uuid)],
    ) -> Result<Vec<Stream>, StoreError> {
        let read = u32::try_from(aggregates.len()).unwrap();
        self.streams_read.fetch_add(read, Ordering::SeqCst);
        self.inner.load_streams(aggregates).await
    }

    async fn load_events(
        &self,
        kind: &'static str,
        id: Uuid,
        after: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.load_events(kind, id, after).await
    }

    async fn write_all(&self, decided: Vec<Decided>) -> Result<(), StoreError> {
        let first = self.batches.fetch_add(1, Ordering::SeqCst) == 0;
        if let (Race::WonTheBatchOn(aggregate_id), true) = (&self.race, first) {
            let ours = decided.iter().find_map(|decided| match decided {
                Decided::Applied(append) if append.aggregate_id == *aggregate_id => Some(append),
                _ => None,
            });
            if let Some(ours) = ours {
                let mut competing = ours.clone();
                competing.command_id = CommandId::new_random();
                self.inner.append(competing).await?;
            }
        }
        self.inner.write_all(decided).await
    }

    async fn append(&self, append: Append) -> Result<(), StoreError> {
        let first = self.appends.fetch_add(1, Ordering::SeqCst) == 0;
        match self.race {
            Race::WonOnce if first => {
                let mut competing = append.clone();
                competing.command_id = CommandId::new_random();
                self.inner.append(competing).await?;
                self.inner.append(append).await
            }
            Race::WonOnce | Race::Never | Race::WonTheBatchOn(_) => self.inner.append(append).await,
            Race::AlwaysWon => Err(StoreError::Conflict {
                aggregate_id: append.aggregate_id,
                expected_version: append.expected_version,
            }),
        }
    }

    async fn record_rejection(&self, rejected: Rejected) -> Result<(), StoreError> {
        self.inner.record_rejection(rejected).await
    }

    async fn outcome(&self, command_id: CommandId) -> Result<Option<Outcome>, StoreError> {
        self.inner.outcome(command_id).await
    }
}

#[tokio::test]
async fn a_version_conflict_is_decided_again_on_the_new_state() {
    let store = InMemoryEventStore::new();
    let investor_id = register_investor(&executor(&store), 100).await;
    let racing = Racing::new(&store, Race::WonOnce);
    let bid = Issued {
        id: CommandId::new_random(),
        command: Command::Investor(
            investor_id,
            InvestorCommand::PlaceBid {
                invoice_id: InvoiceId::new_random(),
                amount: Money::units(60),
            },
        ),
    };

    // Our bid of 60 was decided on a balance of 100; the competing one took 60 first, so the
    // second decision sees 40 left and rejects.
    let outcome = executor(&racing).execute(&bid, origin()).await.unwrap();
    assert!(
        matches!(outcome, Outcome::Rejected { ref reason } if reason.contains("insufficient balance")),
        "{outcome:?}"
    );
    assert_eq!(racing.appends(), 1, "decided again, rejected, not appended");
    let investor = investor_state(&store, investor_id);
    assert_eq!(
        (investor.balance(), investor.reserved()),
        (Money::units(40), Money::units(60))
    );
}

#[tokio::test]
async fn a_sale_is_decided_and_written_without_reading_its_new_invoice() {
    let store = InMemoryEventStore::new();
    let issuer_id = register_issuer(&executor(&store)).await;
    let racing = Racing::new(&store, Race::Never);
    let executor = executor(&racing);
    executor.client_command(sale(issuer_id)).await.unwrap();
    let read = racing.streams_read();
    assert_eq!(read, 1, "the issuer, once");

    let outcomes = [
        executor.client_command(sale(issuer_id)).await.unwrap(),
        executor
            .execute_all(vec![Job::Client(sale(issuer_id))])
            .await
            .unwrap()[0]
            .clone(),
    ];

    assert_eq!(outcomes, [Outcome::Applied, Outcome::Applied]);
    assert_eq!(
        racing.streams_read(),
        read,
        "no stream read for either sale"
    );
    assert_eq!(
        event_types(&store),
        [
            "IssuerCreated",
            "InvoiceCreated",
            "InvoiceCreated",
            "InvoiceCreated"
        ]
    );
}

#[tokio::test]
async fn a_creation_of_an_aggregate_that_exists_fails_its_write_and_is_rejected_on_what_is_read() {
    let store = InMemoryEventStore::new();
    let investor_id = register_investor(&executor(&store), 100).await;
    let racing = Racing::new(&store, Race::Never);
    let executor = executor(&racing);

    let one_at_a_time = executor
        .execute(&create_investor(investor_id, 5), origin())
        .await
        .unwrap();
    let in_a_batch = executor
        .execute_all(vec![Job::React(
            saga::Reaction {
                command: create_investor(investor_id, 7),
                compensation: None,
            },
            origin(),
        )])
        .await
        .unwrap();

    for outcome in [&one_at_a_time, &in_a_batch[0]] {
        assert!(
            matches!(outcome, Outcome::Rejected { reason } if reason.contains("already exists")),
            "{outcome:?}"
        );
    }
    assert_eq!(
        racing.appends(),
        1,
        "written unread once, then read and rejected"
    );
    assert_eq!(
        racing.batches(),
        2,
        "the batch's write clashed, then its retry wrote"
    );
    let investor = investor_state(&store, investor_id);
    assert_eq!(
        investor.balance(),
        Money::units(100),
        "the funds added once"
    );
}

#[tokio::test]
async fn a_creation_refused_on_no_history_is_decided_again_on_what_is_stored() {
    let store = InMemoryEventStore::new();
    let executor = executor(&store);
    let issuer_id = register_issuer(&executor).await;
    let first = sale(issuer_id);
    let ClientCommand::SellInvoice { invoice_id, .. } = first.command else {
        unreachable!()
    };
    executor.client_command(first).await.unwrap();
    // Another command for the same invoice, by an issuer nobody registered: on no history it
    // would be refused for its issuer; the invoice exists.
    let again = || {
        client(ClientCommand::SellInvoice {
            invoice_id,
            issuer_id: IssuerId::new_random(),
            asking_price: Money::units(10),
        })
    };

    let outcomes = [
        executor.client_command(again()).await.unwrap(),
        executor
            .execute_all(vec![Job::Client(again())])
            .await
            .unwrap()[0]
            .clone(),
    ];

    for outcome in outcomes {
        assert!(
            matches!(&outcome, Outcome::Rejected { reason } if reason.contains("already exists")),
            "{outcome:?}"
        );
    }
    assert_eq!(event_types(&store), ["IssuerCreated", "InvoiceCreated"]);
}

#[tokio::test]
async fn conflicts_past_the_bound_are_returned_to_be_retried_later() {
    let store = InMemoryEventStore::new();
    let racing = Racing::new(&store, Race::AlwaysWon);
    let executor = Executor::new(Repository::new(&racing, 3), 4);
    let register = saga::on_integration_event(&IntegrationEvent::IssuerRegistered {
        id: IssuerId::new_random(),
        name: "ACME".into(),
    });
    let result = executor.react(&register, origin()).await;
    assert!(
        matches!(result, Err(StoreError::Conflict { .. })),
        "{result:?}"
    );
    assert_eq!(racing.appends(), 4);
    assert_eq!(store.outcome(register.command.id).await.unwrap(), None);
}

#[derive(Debug, Clone)]
enum Op {
    Sell {
        invoice: u128,
        cents: u64,
    },
    Bid {
        investor: u128,
        invoice: u128,
        cents: u64,
    },
    Approve {
        invoice: u128,
    },
    Reverse {
        invoice: u128,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3u128, 1..3_000u64).prop_map(|(invoice, cents)| Op::Sell { invoice, cents }),
        (0..2u128, 0..4u128, 1..4_000u64).prop_map(|(investor, invoice, cents)| Op::Bid {
            investor,
            invoice,
            cents
        }),
        (0..3u128).prop_map(|invoice| Op::Approve { invoice }),
        (0..3u128).prop_map(|invoice| Op::Reverse { invoice }),
    ]
}

/// Carries out the jobs one at a time, or all at once as the consumer does; with nobody else
/// writing, a batch never fails (a command processed before reports its first outcome).
async fn carry_out(executor: &Executor<&InMemoryEventStore>, jobs: Vec<Job>, batched: bool) {
    if batched {
        if let Err(error) = executor.execute_all(jobs).await {
            panic!("a batch failed: {error}");
        }
        return;
    }
    for job in jobs {
        let outcome = match job {
            Job::Client(message) => executor.client_command(message).await,
            Job::React(reaction, origin) => executor.react(&reaction, origin).await,
        };
        outcome.unwrap();
    }
}

/// Runs `ops` with the saga, delivering every command and event as often as `deliveries`
/// says: the ops a few at a time (as many as `batch_sizes` says in turn, mixed commands with
/// their copies), then each round of the saga's reactions together, in batches if `batched`;
/// returns the investors' and invoices' final states.
async fn run_scenario(
    ops: &[Op],
    deliveries: &[usize],
    batch_sizes: &[usize],
    batched: bool,
) -> (Vec<Investor>, Vec<Invoice>) {
    let mut deliveries = deliveries.iter().copied().cycle();
    let mut batch_sizes = batch_sizes.iter().copied().cycle();
    let store = InMemoryEventStore::new();
    let executor = executor(&store);
    let issuer_id = IssuerId::from_u128(1);
    let investors = [InvestorId::from_u128(10), InvestorId::from_u128(11)];
    let invoice = |n: u128| InvoiceId::from_u128(100 + n);
    let mut registrations = vec![IntegrationEvent::IssuerRegistered {
        id: issuer_id,
        name: "ACME".into(),
    }];
    registrations.extend(
        investors
            .iter()
            .map(|id| IntegrationEvent::InvestorRegistered {
                id: *id,
                name: "Ada".into(),
                balance: Money::units(50),
            }),
    );
    let mut jobs = Vec::new();
    for registration in &registrations {
        for _ in 0..deliveries.next().unwrap() {
            let reaction = saga::on_integration_event(registration);
            jobs.push(Job::React(reaction, origin()));
        }
    }
    carry_out(&executor, jobs, batched).await;
    let mut delivered = 0;
    let mut rest = ops;
    while !rest.is_empty() {
        let (batch, after) = rest.split_at(batch_sizes.next().unwrap().clamp(1, rest.len()));
        rest = after;
        let mut jobs = Vec::new();
        for op in batch {
            let message = client(match *op {
                Op::Sell { invoice: n, cents } => ClientCommand::SellInvoice {
                    invoice_id: invoice(n),
                    issuer_id,
                    asking_price: Money::from_cents(cents),
                },
                Op::Bid {
                    investor,
                    invoice: n,
                    cents,
                } => ClientCommand::BidOnInvoice {
                    investor_id: investors[investor as usize],
                    invoice_id: invoice(n),
                    bid: Money::from_cents(cents),
                },
                Op::Approve { invoice: n } => ClientCommand::ApproveFinancing {
                    invoice_id: invoice(n),
                },
                Op::Reverse { invoice: n } => ClientCommand::ReverseFinancing {
                    invoice_id: invoice(n),
                },
            });
            let copies = deliveries.next().unwrap();
            jobs.extend(std::iter::repeat_n(Job::Client(message), copies));
        }
        carry_out(&executor, jobs, batched).await;
        // The saga runs every event published so far, each delivered as often as told.
        while delivered < store.recorded().len() {
            let mut jobs = Vec::new();
            for recorded in &store.recorded()[delivered..] {
                let (position, event) = decoded(recorded);
                delivered += 1;
                if let Some(reaction) = saga::on_event(position, &event) {
                    for _ in 0..deliveries.next().unwrap() {
                        jobs.push(Job::React(reaction.clone(), origin()));
                    }
                }
            }
            carry_out(&executor, jobs, batched).await;
        }
    }
    let repository = Repository::new(&store, 3);
    let mut invoices = Vec::new();
    for n in 0..4 {
        invoices.push(repository.load::<Invoice>(invoice(n)).await.unwrap().state);
    }
    let states = investors
        .iter()
        .map(|id| investor_state(&store, *id))
        .collect();
    (states, invoices)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every client command and every event is delivered one to three times, carried out one
    /// at a time or in batches that mix different commands (two bids on one invoice, a bid and
    /// an approval, ...): the outcome is exactly that of delivering everything once in the same
    /// way, and the money stays whole: what is reserved is the price of the financed invoices,
    /// what is committed that of the approved ones.
    #[test]
    fn redeliveries_and_batches_change_nothing_and_money_stays_whole(
        ops in proptest::collection::vec(op(), 1..40),
        deliveries in proptest::collection::vec(1..=3usize, 64),
        batch_sizes in proptest::collection::vec(1..=4usize, 16),
        batched in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let run = |deliveries: &[usize]| {
            runtime.block_on(run_scenario(&ops, deliveries, &batch_sizes, batched))
        };
        let (investors, invoices) = run(&deliveries);
        let (once_investors, once_invoices) = run(&[1]);
        prop_assert_eq!(&investors, &once_investors);
        prop_assert_eq!(&invoices, &once_invoices);

        for (n, account) in investors.iter().enumerate() {
            let total = account.balance().cents() + account.reserved().cents() + account.committed().cents();
            prop_assert_eq!(total, Money::units(50).cents(), "{:?}", account);
            let won = |status| -> u64 {
                invoices
                    .iter()
                    .filter(|invoice| invoice.status() == Some(status))
                    .filter(|invoice| invoice.winning_bid().is_some_and(|bid| bid.investor_id == InvestorId::from_u128(10 + n as u128)))
                    .filter_map(|invoice| invoice.asking_price())
                    .map(Money::cents)
                    .sum()
            };
            prop_assert_eq!(account.reserved().cents(), won(InvoiceStatus::Financed));
            prop_assert_eq!(account.committed().cents(), won(InvoiceStatus::Approved));
        }
    }
}
