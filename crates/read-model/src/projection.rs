//! Writing events into the read models: each applies only on top of the version before it, so
//! a duplicate or an old version changes nothing and a row never goes back in time.

use financing_domain::{
    CommandOutcome, Event, EventEnvelope, InvestorEvent, InvoiceEvent, IssuerEvent,
};

use sqlx::PgConnection;

use crate::views::view_version;
use crate::{ReadModel, cents};

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projected {
    Applied,
    /// The row already reflects this version, or a later one.
    Duplicate,
    /// The row is at `at` (0: no row yet), short of the version before this event. The event
    /// is skipped: the relayer publishes an aggregate's events again, in order, after one it
    /// could not publish.
    Gap {
        at: u64,
    },
}

impl Projected {
    /// Its name in metrics: `applied`, `duplicate` or `gap`.
    pub fn result(&self) -> &'static str {
        match self {
            Projected::Applied => "applied",
            Projected::Duplicate => "duplicate",
            Projected::Gap { .. } => "gap",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The event contradicts the read model (money would go negative): it can never apply.
    #[error("the event contradicts the read model: {0}")]
    Contradiction(String),
    #[error("the read model database failed")]
    Database(#[from] sqlx::Error),
}

/// What the projector records: an event, or the outcome of a command that produced none.
#[derive(Debug, Clone, Copy)]
pub enum Recorded<'a> {
    Event(&'a EventEnvelope),
    Outcome(&'a CommandOutcome),
}

impl ReadModel {
    /// Applies the event in a transaction of its own (with its command's outcome).
    pub async fn project(&self, message: &EventEnvelope) -> Result<Projected, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let projected = project_on(&mut tx, message).await?;
        if projected == Projected::Applied {
            tx.commit().await?;
        }
        Ok(projected)
    }

    /// Records them all in one transaction, in order, all or nothing: each event's
    /// [`Projected`] (`None` for an outcome), or `None` if one of them cannot be recorded on its
    /// turn (a gap before an event, or a contradiction): nothing is written then, and they can
    /// be recorded one at a time.
    pub async fn record_all(
        &self,
        recorded: &[Recorded<'_>],
    ) -> Result<Option<Vec<Option<Projected>>>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        crate::rebuild::lock_for_writing(&mut tx).await?;
        let mut results = Vec::with_capacity(recorded.len());
        for item in recorded {
            let result = match item {
                Recorded::Event(event) => project_on(&mut tx, event).await.map(Some),
                Recorded::Outcome(outcome) => {
                    record_outcome_on(&mut *tx, outcome).await.map(|()| None)
                }
            };
            match result {
                Ok(Some(Projected::Gap { .. })) | Err(ProjectionError::Contradiction(_)) => {
                    return Ok(None);
                }
                Ok(result) => results.push(result),
                Err(ProjectionError::Database(error)) => return Err(error),
            }
        }
        tx.commit().await?;
        Ok(Some(results))
    }

    /// Records the outcome of a command that produced no event. A repeated outcome changes
    /// nothing; a rejection replaces a failure (the command was sent again and decided), never
    /// the other way round.
    pub async fn record_outcome(&self, outcome: &CommandOutcome) -> Result<(), ProjectionError> {
        record_outcome_on(&self.pool, outcome).await
    }
}

/// Applies the event on `connection` if its view is at the version before it, with its
/// command's outcome; otherwise tells why not (nothing is written then).
async fn project_on(
    connection: &mut PgConnection,
    message: &EventEnvelope,
) -> Result<Projected, ProjectionError> {
    use Event::{Investor, Invoice, Issuer};
    let meta = &message.meta;
    let version = i64::try_from(meta.version).map_err(|_| {
        ProjectionError::Contradiction(format!("version {} is past a BIGINT", meta.version))
    })?;
    // $1 is the aggregate id, $2 the event's version; updates apply only on version $2 - 1.
    let step = |sql| sqlx::query(sql).bind(meta.aggregate_id).bind(version);
    let statement = match &message.event {
        Issuer(IssuerEvent::IssuerCreated { name, .. }) => step(
            "INSERT INTO issuers (id, version, name, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO NOTHING",
        )
        .bind(name)
        .bind(meta.recorded_at),
        Investor(InvestorEvent::InvestorCreated { name, .. }) => step(
            "INSERT INTO investors (id, version, name, balance, reserved, committed, \
                     created_at) \
                 VALUES ($1, $2, $3, 0, 0, 0, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(name)
        .bind(meta.recorded_at),
        Investor(InvestorEvent::InvestorFundsAdded { amount, .. }) => step(
            "UPDATE investors SET balance = balance + $3, version = $2 \
                 WHERE id = $1 AND version = $2 - 1",
        )
        .bind(cents(*amount)?),
        Investor(InvestorEvent::BidOnInvoicePlaced { amount, .. }) => step(
            "UPDATE investors SET balance = balance - $3, reserved = reserved + $3, \
                 version = $2 WHERE id = $1 AND version = $2 - 1",
        )
        .bind(cents(*amount)?),
        Investor(InvestorEvent::InvestorFundsReleased { amount, .. }) => step(
            "UPDATE investors SET reserved = reserved - $3, balance = balance + $3, \
                 version = $2 WHERE id = $1 AND version = $2 - 1",
        )
        .bind(cents(*amount)?),
        Investor(InvestorEvent::InvestorFundsCommitted { amount, .. }) => step(
            "UPDATE investors SET reserved = reserved - $3, committed = committed + $3, \
                 version = $2 WHERE id = $1 AND version = $2 - 1",
        )
        .bind(cents(*amount)?),
        Invoice(InvoiceEvent::InvoiceCreated {
            issuer_id,
            asking_price,
            ..
        }) => step(
            "INSERT INTO invoices (id, version, issuer_id, asking_price, status, \
                     created_at) \
                 VALUES ($1, $2, $3, $4, 'AVAILABLE', $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(issuer_id.as_uuid())
        .bind(cents(*asking_price)?)
        .bind(meta.recorded_at),
        Invoice(InvoiceEvent::InvoiceFinanced { bid, .. }) => step(
            "UPDATE invoices SET status = 'FINANCED', winning_investor_id = $3, \
                 winning_bid = $4, version = $2 WHERE id = $1 AND version = $2 - 1",
        )
        .bind(bid.investor_id.as_uuid())
        .bind(cents(bid.amount)?),
        Invoice(InvoiceEvent::BidOnInvoiceRejected { .. }) => {
            step("UPDATE invoices SET version = $2 WHERE id = $1 AND version = $2 - 1")
        }
        Invoice(InvoiceEvent::InvoiceApproved { .. }) => step(
            "UPDATE invoices SET status = 'APPROVED', version = $2 \
                 WHERE id = $1 AND version = $2 - 1",
        ),
        Invoice(InvoiceEvent::InvoiceReversed { .. }) => step(
            "UPDATE invoices SET status = 'REVERSED', version = $2 \
                 WHERE id = $1 AND version = $2 - 1",
        ),
    };

    let changed = statement
        .execute(&mut *connection)
        .await
        .map_err(contradiction)?
        .rows_affected();
    if changed == 0 {
        let at = view_version(
            &mut *connection,
            message.event.aggregate_type(),
            meta.aggregate_id,
        )
        .await?
        .unwrap_or(0);
        return Ok(if at >= meta.version {
            Projected::Duplicate
        } else {
            Projected::Gap { at }
        });
    }
    sqlx::query(
        "INSERT INTO command_outcomes (command_id, status, aggregate_type, aggregate_id, \
                 actor_id, actor_role) \
             VALUES ($1, 'APPLIED', $2, $3, $4, $5) ON CONFLICT (command_id) DO UPDATE \
             SET status = 'APPLIED', reason = NULL, aggregate_type = EXCLUDED.aggregate_type, \
                 aggregate_id = EXCLUDED.aggregate_id, actor_id = EXCLUDED.actor_id, \
                 actor_role = EXCLUDED.actor_role, recorded_at = now() \
             WHERE command_outcomes.status = 'FAILED'",
    )
    .bind(meta.command_id.as_uuid())
    .bind(&meta.aggregate_type)
    .bind(meta.aggregate_id)
    .bind(meta.actor.map(|actor| actor.party))
    .bind(meta.actor.map(|actor| actor.role.as_str()))
    .execute(&mut *connection)
    .await?;
    Ok(Projected::Applied)
}

/// Records the outcome of a command that produced no event (see [`ReadModel::record_outcome`]).
async fn record_outcome_on<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    outcome: &CommandOutcome,
) -> Result<(), ProjectionError> {
    let statement = if outcome.failed {
        "INSERT INTO command_outcomes (command_id, status, reason, aggregate_type, aggregate_id, \
             actor_id, actor_role) \
         VALUES ($1, 'FAILED', $2, $3, $4, $5, $6) ON CONFLICT (command_id) DO NOTHING"
    } else {
        "INSERT INTO command_outcomes (command_id, status, reason, aggregate_type, aggregate_id, \
             actor_id, actor_role) \
         VALUES ($1, 'REJECTED', $2, $3, $4, $5, $6) ON CONFLICT (command_id) DO UPDATE \
         SET status = 'REJECTED', reason = EXCLUDED.reason, \
             aggregate_type = EXCLUDED.aggregate_type, aggregate_id = EXCLUDED.aggregate_id, \
             actor_id = EXCLUDED.actor_id, actor_role = EXCLUDED.actor_role, recorded_at = now() \
         WHERE command_outcomes.status = 'FAILED'"
    };
    sqlx::query(statement)
        .bind(outcome.command_id.as_uuid())
        .bind(&outcome.reason)
        .bind(&outcome.aggregate_type)
        .bind(outcome.aggregate_id)
        .bind(outcome.actor.map(|actor| actor.party))
        .bind(outcome.actor.map(|actor| actor.role.as_str()))
        .execute(executor)
        .await
        .map_err(contradiction)?;
    Ok(())
}

/// Data the database refuses (a broken constraint, an invalid value) can never apply.
fn contradiction(error: sqlx::Error) -> ProjectionError {
    if financing_runtime::postgres::refuses_the_data(&error) {
        ProjectionError::Contradiction(error.to_string())
    } else {
        ProjectionError::Database(error)
    }
}
