//! Two handler instances at once on real PostgreSQL: two executors batching mixed client
//! commands over the same investors and invoices, with the saga's reactions crossing between
//! them. No deadlock, nothing lost or applied twice, and the money stays whole.

use financing_command_handler::{Executor, Job, Origin};
use financing_domain::saga::{self, EventPosition};
use financing_domain::{
    Actor, ClientCommand, CommandId, Event, IntegrationEvent, Investor, InvestorId, Invoice,
    InvoiceId, InvoiceStatus, IssuerId, Money, Role,
};
use financing_event_store::{MIGRATOR, Outcome, PgEventStore, Repository, StoreError};
use financing_messaging::CommandMessage;
use financing_runtime::postgres::connect_and_migrate;
use financing_testkit::own_database_url;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use uuid::Uuid;

const INVESTORS: u128 = 3;
const INVOICES: u128 = 6;
const FUNDS: u64 = 1_000;

fn investor(n: u128) -> InvestorId {
    InvestorId::from_u128(10 + n)
}

fn invoice(n: u128) -> InvoiceId {
    InvoiceId::from_u128(100 + n)
}

fn origin() -> Origin {
    Origin {
        correlation_id: Uuid::new_v4(),
        causation_id: Uuid::new_v4(),
        actor: None,
    }
}

fn client(command: ClientCommand) -> Job {
    let command_id = CommandId::new_random();
    Job::Client(CommandMessage {
        command_id,
        correlation_id: command_id.as_uuid(),
        command,
        actor: Some(Actor::new(Uuid::nil(), Role::Operator)),
    })
}

/// A random client command on the shared investors and invoices.
fn any_command(rng: &mut StdRng) -> Job {
    let on = invoice(rng.random_range(0..INVOICES));
    client(match rng.random_range(0..10) {
        0..7 => ClientCommand::BidOnInvoice {
            investor_id: investor(rng.random_range(0..INVESTORS)),
            invoice_id: on,
            bid: Money::units(rng.random_range(50..400)),
        },
        7..9 => ClientCommand::ApproveFinancing { invoice_id: on },
        _ => ClientCommand::ReverseFinancing { invoice_id: on },
    })
}

/// Carries out a batch as the handler does: all at once, or, when the batch fails (another
/// instance got to an aggregate first), one job at a time, each retried on a clash. Any other
/// error (a deadlock) fails the test.
async fn carry_out(executor: &Executor<PgEventStore>, jobs: Vec<Job>) {
    match executor.execute_all(jobs.clone()).await {
        Ok(_) => return,
        Err(StoreError::Conflict { .. } | StoreError::AlreadyProcessed(_)) => {}
        Err(error) => panic!("a batch failed: {error:?}"),
    }
    for job in jobs {
        loop {
            let outcome = match &job {
                Job::Client(message) => executor.client_command(message.clone()).await,
                Job::React(reaction, origin) => executor.react(reaction, *origin).await,
            };
            match outcome {
                Ok(_) => break,
                Err(StoreError::Conflict { .. }) => continue,
                Err(error) => panic!("a command failed: {error:?}"),
            }
        }
    }
}

/// Runs the batches one after the other, each followed by the saga's reactions to what it
/// wrote (as the events come back from the broker), on this executor.
async fn instance(executor: Executor<PgEventStore>, pool: PgPool, batches: Vec<Vec<Job>>) {
    for batch in batches {
        let since = last_position(&pool).await;
        carry_out(&executor, batch).await;
        react_to_events_after(&executor, &pool, since).await;
    }
}

async fn last_position(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(max(global_position), 0) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Delivers the saga's reaction to every event after `position`, round after round, until the
/// saga has nothing left to do.
async fn react_to_events_after(
    executor: &Executor<PgEventStore>,
    pool: &PgPool,
    mut position: i64,
) {
    loop {
        let events = executor
            .store()
            .events_after(position, 1_000)
            .await
            .unwrap();
        let Some(last) = events.last() else { return };
        position = last.global_position;
        let jobs: Vec<Job> = events
            .iter()
            .filter_map(|recorded| {
                let at = EventPosition {
                    aggregate_id: recorded.aggregate_id,
                    version: recorded.version,
                };
                let event: Event = recorded.envelope().unwrap().event;
                saga::on_event(at, &event).map(|reaction| Job::React(reaction, origin()))
            })
            .collect();
        if !jobs.is_empty() {
            carry_out(executor, jobs).await;
        }
        if position >= last_position(pool).await {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_executors_batching_over_the_same_aggregates_lose_nothing_and_keep_the_money_whole() {
    let pool = connect_and_migrate(&own_database_url(), &MIGRATOR, 8)
        .await
        .unwrap();
    let executor = || Executor::new(Repository::new(PgEventStore::new(pool.clone()), 3), 5);
    let setup = executor();
    let issuer_id = IssuerId::new_random();
    let mut registrations = vec![IntegrationEvent::IssuerRegistered {
        id: issuer_id,
        name: "ACME".into(),
    }];
    registrations.extend(
        (0..INVESTORS).map(|n| IntegrationEvent::InvestorRegistered {
            id: investor(n),
            name: "Ada".into(),
            balance: Money::units(FUNDS),
        }),
    );
    for registration in &registrations {
        let reaction = saga::on_integration_event(registration);
        let outcome = setup.react(&reaction, origin()).await;
        assert_eq!(outcome.unwrap(), Outcome::Applied);
    }
    for n in 0..INVOICES {
        let sale = client(ClientCommand::SellInvoice {
            invoice_id: invoice(n),
            issuer_id,
            asking_price: Money::units(100 + 50 * n as u64),
        });
        setup.execute_all(vec![sale]).await.unwrap();
    }

    // Each instance gets batches of one to six commands of all kinds, on the same aggregates.
    let mut rng = StdRng::seed_from_u64(24);
    let mut batches = || -> Vec<Vec<Job>> {
        (0..25)
            .map(|_| {
                let size = rng.random_range(1..=6);
                (0..size).map(|_| any_command(&mut rng)).collect()
            })
            .collect()
    };
    let (one, other) = (batches(), batches());
    let client_commands: Vec<Uuid> = one
        .iter()
        .chain(&other)
        .flatten()
        .filter_map(|job| match job {
            Job::Client(message) => Some(message.command_id.as_uuid()),
            Job::React(..) => None,
        })
        .collect();
    tokio::join!(
        instance(executor(), pool.clone(), one),
        instance(executor(), pool.clone(), other),
    );
    react_to_events_after(&setup, &pool, 0).await;

    // Nothing lost: every client command has its outcome.
    let decided: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_commands WHERE command_id = ANY($1)")
            .bind(&client_commands)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(decided as usize, client_commands.len());
    // Nothing applied twice, and the money whole: what each investor has adds up to its funds,
    // what it has reserved is the price of the invoices it financed, what it has committed that
    // of the approved ones.
    let repository = Repository::new(PgEventStore::new(pool.clone()), 3);
    let mut invoices: Vec<Invoice> = Vec::new();
    for n in 0..INVOICES {
        invoices.push(repository.load::<Invoice>(invoice(n)).await.unwrap().state);
    }
    for n in 0..INVESTORS {
        let account = repository
            .load::<Investor>(investor(n))
            .await
            .unwrap()
            .state;
        let total =
            account.balance().cents() + account.reserved().cents() + account.committed().cents();
        assert_eq!(total, Money::units(FUNDS).cents(), "{account:?}");
        let won = |status| -> u64 {
            invoices
                .iter()
                .filter(|invoice| invoice.status() == Some(status))
                .filter(|invoice| {
                    invoice
                        .winning_bid()
                        .is_some_and(|bid| bid.investor_id == investor(n))
                })
                .filter_map(|invoice| invoice.asking_price())
                .map(Money::cents)
                .sum()
        };
        let reserved = account.reserved().cents();
        assert_eq!(reserved, won(InvoiceStatus::Financed), "{account:?}");
        let committed = account.committed().cents();
        assert_eq!(committed, won(InvoiceStatus::Approved), "{account:?}");
    }
}
