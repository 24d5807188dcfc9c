//! `financing inspect <id>`: an aggregate's event stream (with what the relayer published), its
//! latest snapshot and its read-model row side by side, and a line that says whether the read
//! model agrees with the state all the event store's events fold into (and whether the
//! handler, which loads the latest snapshot and the events after it, sees the same).

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use financing_domain::{Aggregate, Investor, Invoice, Issuer, schema};
use financing_event_store::{PgEventStore, Repository, StoredEvent};
use financing_read_model::ReadModel;
use uuid::Uuid;

pub async fn run(id: Uuid, store: PgEventStore, read_model: &ReadModel) -> anyhow::Result<()> {
    let history = store
        .history(id)
        .await
        .context("cannot read the event store")?;
    let Some(last) = history.last() else {
        bail!("the event store has no events of an aggregate {id}");
    };
    let aggregate_type = last.event.aggregate_type.clone();
    let version = last.event.version;
    println!(
        "{aggregate_type} {id}: {} events, version {version}",
        history.len()
    );
    print_events(&history);

    match store
        .latest_snapshot(id)
        .await
        .context("cannot read the snapshots")?
    {
        Some(snapshot) => println!(
            "\nsnapshot   version {} taken at {}: {}",
            snapshot.version,
            time(snapshot.taken_at),
            snapshot.state
        ),
        None => println!("\nsnapshot   none yet"),
    }

    let repository = Repository::new(store, 1);
    let history = &history;
    let comparison = match aggregate_type.as_str() {
        Investor::TYPE => investor(id, history, &repository, read_model).await,
        Invoice::TYPE => invoice(id, history, &repository, read_model).await,
        Issuer::TYPE => issuer(id, history, &repository, read_model).await,
        other => bail!("{other} is not a type this version knows"),
    }?;
    let view_version = read_model
        .view_version(&aggregate_type, id)
        .await
        .context("cannot read the read models")?;
    println!("\nread model {}", comparison.view);
    println!("event store {}", comparison.state);

    let mut differences = comparison.differences;
    match view_version {
        Some(at) if at == version => {}
        Some(at) => differences.insert(
            0,
            format!("the view is at version {at}, the stream at {version}"),
        ),
        None => differences.insert(0, "the read model has no row for it".into()),
    }
    if differences.is_empty() {
        println!("\nagree: the read model shows version {version}, as the event store");
    } else {
        println!("\nDISAGREE: {}", differences.join("; "));
        let unpublished = history.iter().filter(|e| !e.published).count();
        if unpublished > 0 {
            println!(
                "           ({unpublished} of its events are not published yet: the read model \
                 may just be behind)"
            );
        }
    }
    Ok(())
}

/// Each event as the domain reads it (an event stored at an older schema version is shown
/// upcast, with the version it was stored at: `1 as 2`), and who asked for it.
fn print_events(history: &[StoredEvent]) {
    println!(
        "\n{:>7}  {:<22}  {:<6}  {:<19}  {:<9}  {:>8}  {:<36}  {:<36}  {:<45}  payload",
        "version",
        "type",
        "schema",
        "recorded at",
        "published",
        "position",
        "command id",
        "correlation id",
        "asked by"
    );
    for stored in history {
        let event = &stored.event;
        let published = if stored.published { "yes" } else { "not yet" };
        let (read_as, payload) = schema::upcast(
            &event.event_type,
            event.schema_version,
            event.payload.clone(),
        );
        let schema = if read_as == event.schema_version {
            read_as.to_string()
        } else {
            format!("{} as {read_as}", event.schema_version)
        };
        let asked_by = event
            .metadata
            .actor
            .map_or_else(|| "registering".to_owned(), |actor| actor.to_string());
        println!(
            "{:>7}  {:<22}  {:<6}  {:<19}  {:<9}  {:>8}  {:<36}  {:<36}  {:<45}  {}",
            event.version,
            event.event_type,
            schema,
            time(event.recorded_at),
            published,
            event.global_position,
            event.metadata.command_id,
            event.metadata.correlation_id,
            asked_by,
            payload
        );
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The read model's row and the event store's state, as text, and where they differ.
struct Comparison {
    view: String,
    state: String,
    differences: Vec<String>,
}

impl Comparison {
    fn new(view: String, state: String) -> Comparison {
        Comparison {
            view,
            state,
            differences: Vec::new(),
        }
    }

    /// Adds a difference found elsewhere.
    fn with(mut self, difference: Option<String>) -> Comparison {
        self.differences.extend(difference);
        self
    }

    /// Notes a field whose two sides differ.
    fn field<T: PartialEq + std::fmt::Debug>(&mut self, name: &str, view: T, state: T) {
        if view != state {
            self.differences.push(format!(
                "{name} is {view:?} in the view, {state:?} in the stream"
            ));
        }
    }
}

/// The state all the aggregate's events fold into, from none, and a difference if the handler
/// loads another (from its latest snapshot and the events after it).
async fn folded<A: Aggregate>(
    id: Uuid,
    history: &[StoredEvent],
    repository: &Repository<PgEventStore>,
) -> anyhow::Result<(A, Option<String>)> {
    let mut state = A::default();
    for stored in history.iter().filter(|s| s.event.aggregate_type == A::TYPE) {
        let event = &stored.event;
        let decoded = schema::decode::<A::Event>(
            &event.event_type,
            event.schema_version,
            event.payload.clone(),
        )
        .with_context(|| format!("version {} cannot be read", event.version))?;
        state
            .apply(&decoded)
            .with_context(|| format!("version {} does not fold", event.version))?;
    }
    let loaded = repository.load::<A>(id.into()).await?.state;
    let difference = (loaded != state).then(|| {
        "the handler loads another state (from the latest snapshot) than all the events fold \
         into"
            .to_owned()
    });
    Ok((state, difference))
}

async fn investor(
    id: Uuid,
    history: &[StoredEvent],
    repository: &Repository<PgEventStore>,
    read_model: &ReadModel,
) -> anyhow::Result<Comparison> {
    let (state, snapshot) = folded::<Investor>(id, history, repository).await?;
    let view = read_model.investor(id.into()).await?;
    let folded = format!(
        "balance {} reserved {} committed {}",
        state.balance(),
        state.reserved(),
        state.committed()
    );
    let Some(view) = view else {
        return Ok(Comparison::new("no row".into(), folded).with(snapshot));
    };
    let mut comparison = Comparison::new(
        format!(
            "{:?}: balance {} reserved {} committed {}",
            view.name, view.balance, view.reserved, view.committed
        ),
        folded,
    );
    let text = |money: financing_domain::Money| money.to_string();
    comparison.field("balance", text(view.balance), text(state.balance()));
    comparison.field("reserved", text(view.reserved), text(state.reserved()));
    comparison.field("committed", text(view.committed), text(state.committed()));
    Ok(comparison.with(snapshot))
}

async fn invoice(
    id: Uuid,
    history: &[StoredEvent],
    repository: &Repository<PgEventStore>,
    read_model: &ReadModel,
) -> anyhow::Result<Comparison> {
    let (state, snapshot) = folded::<Invoice>(id, history, repository).await?;
    let view = read_model.invoice(id.into()).await?;
    let folded = format!(
        "{:?}, asking {:?}, winning bid {:?}",
        state.status(),
        state.asking_price(),
        state.winning_bid()
    );
    let Some(view) = view else {
        return Ok(Comparison::new("no row".into(), folded).with(snapshot));
    };
    let mut comparison = Comparison::new(
        format!(
            "{:?}, asking {:?}, winning bid {:?}",
            Some(view.status),
            Some(view.asking_price),
            view.winning_bid
        ),
        folded,
    );
    comparison.field("status", Some(view.status), state.status());
    comparison.field(
        "asking price",
        Some(view.asking_price),
        state.asking_price(),
    );
    comparison.field("winning bid", view.winning_bid, state.winning_bid());
    Ok(comparison.with(snapshot))
}

async fn issuer(
    id: Uuid,
    history: &[StoredEvent],
    repository: &Repository<PgEventStore>,
    read_model: &ReadModel,
) -> anyhow::Result<Comparison> {
    let (state, snapshot) = folded::<Issuer>(id, history, repository).await?;
    let view = read_model.issuer(id.into()).await?;
    let registered = format!("registered: {}", state.is_registered());
    let has_row = view.is_some();
    let mut comparison = Comparison::new(
        view.map_or_else(|| "no row".into(), |view| format!("{:?}", view.name)),
        registered,
    );
    comparison.field("registered", has_row, state.is_registered());
    Ok(comparison.with(snapshot))
}
