//! Reading the read models, for the query service: lookups by id, and the lists in the order
//! the aggregates were created, whole or a page at a time.

use chrono::{DateTime, Utc};
use financing_domain::{
    Actor, Bid, CommandId, InvestorId, InvoiceId, InvoiceStatus, IssuerId, Money,
};
use sqlx::FromRow;
use uuid::Uuid;

use crate::ReadModel;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvestorView {
    pub id: InvestorId,
    pub name: String,
    pub balance: Money,
    pub reserved: Money,
    pub committed: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceView {
    pub id: InvoiceId,
    pub issuer_id: IssuerId,
    pub asking_price: Money,
    pub status: InvoiceStatus,
    pub winning_bid: Option<Bid>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerView {
    pub id: IssuerId,
    pub name: String,
}

/// What became of a command, as far as the read model knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandStatus {
    /// Not seen yet: still on its way, or never sent.
    Pending,
    Applied,
    Rejected {
        reason: String,
    },
    /// It could not be carried out at all: it could not be read, or its aggregate could not.
    Failed {
        reason: String,
    },
}

/// Where a page of an All* list goes on from: the creation time and arrival position of the
/// previous page's last row (the lists' order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    created_at: DateTime<Utc>,
    position: i64,
}

impl Cursor {
    /// As text for a client to send back; opaque to it.
    pub fn token(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_micros(), self.position)
    }

    /// The cursor a [`Cursor::token`] stands for; `None` for any other text.
    pub fn from_token(token: &str) -> Option<Cursor> {
        let (micros, position) = token.split_once('.')?;
        Some(Cursor {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            position: position.parse().ok()?,
        })
    }
}

/// Which rows of a list: at most `size` (`None`: every one) after `after` (`None`: from the
/// first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Page {
    pub size: Option<u32>,
    pub after: Option<Cursor>,
}

/// A page of a list, and where the next one starts (`None`: this is the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<T> {
    pub rows: Vec<T>,
    pub next: Option<Cursor>,
}

/// A row with its place in the lists' order.
trait Placed {
    fn cursor(&self) -> Cursor;
}

macro_rules! placed {
    ($($row:ty),*) => {$(
        impl Placed for $row {
            fn cursor(&self) -> Cursor {
                Cursor {
                    created_at: self.created_at,
                    position: self.position,
                }
            }
        }
    )*};
}

#[derive(FromRow)]
struct InvestorRow {
    id: Uuid,
    name: String,
    balance: i64,
    reserved: i64,
    committed: i64,
    created_at: DateTime<Utc>,
    position: i64,
}

#[derive(FromRow)]
struct InvoiceRow {
    id: Uuid,
    issuer_id: Uuid,
    asking_price: i64,
    status: String,
    winning_investor_id: Option<Uuid>,
    winning_bid: Option<i64>,
    created_at: DateTime<Utc>,
    position: i64,
}

#[derive(FromRow)]
struct IssuerRow {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
    position: i64,
}

placed!(InvestorRow, InvoiceRow, IssuerRow);

fn money(cents: i64) -> Result<Money, sqlx::Error> {
    u64::try_from(cents)
        .map(Money::from_cents)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl TryFrom<InvestorRow> for InvestorView {
    type Error = sqlx::Error;

    fn try_from(row: InvestorRow) -> Result<InvestorView, sqlx::Error> {
        Ok(InvestorView {
            id: row.id.into(),
            name: row.name,
            balance: money(row.balance)?,
            reserved: money(row.reserved)?,
            committed: money(row.committed)?,
        })
    }
}

impl TryFrom<InvoiceRow> for InvoiceView {
    type Error = sqlx::Error;

    fn try_from(row: InvoiceRow) -> Result<InvoiceView, sqlx::Error> {
        let winning_bid = match (row.winning_investor_id, row.winning_bid) {
            (Some(investor_id), Some(amount)) => Some(Bid {
                investor_id: investor_id.into(),
                amount: money(amount)?,
            }),
            _ => None,
        };
        Ok(InvoiceView {
            id: row.id.into(),
            issuer_id: row.issuer_id.into(),
            asking_price: money(row.asking_price)?,
            status: row
                .status
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
            winning_bid,
        })
    }
}

impl TryFrom<IssuerRow> for IssuerView {
    type Error = sqlx::Error;

    fn try_from(row: IssuerRow) -> Result<IssuerView, sqlx::Error> {
        Ok(IssuerView {
            id: row.id.into(),
            name: row.name,
        })
    }
}

/// The pages of a list query, in the order of its index: the first, at most $1 rows (NULL:
/// all); and one after the cursor ($2, $3), at most $1.
macro_rules! first_page {
    () => {
        "ORDER BY created_at, position LIMIT $1"
    };
}
macro_rules! page_after {
    () => {
        "WHERE (created_at, position) > ($2, $3) ORDER BY created_at, position LIMIT $1"
    };
}

/// Queries stay static strings: the column lists are literals.
macro_rules! select_investors {
    ($($rest:tt)*) => {
        concat!(
            "SELECT id, name, balance, reserved, committed, created_at, position FROM investors ",
            $($rest)*
        )
    };
}
macro_rules! select_invoices {
    ($($rest:tt)*) => {
        concat!(
            "SELECT id, issuer_id, asking_price, status, winning_investor_id, winning_bid, ",
            "created_at, position FROM invoices ",
            $($rest)*
        )
    };
}
macro_rules! select_issuers {
    ($($rest:tt)*) => {
        concat!("SELECT id, name, created_at, position FROM issuers ", $($rest)*)
    };
}

impl ReadModel {
    pub async fn investors(&self, page: Page) -> Result<Listed<InvestorView>, sqlx::Error> {
        self.list::<InvestorRow, _>(
            [
                select_investors!(first_page!()),
                select_investors!(page_after!()),
            ],
            page,
        )
        .await
    }

    pub async fn investor(&self, id: InvestorId) -> Result<Option<InvestorView>, sqlx::Error> {
        let row: Option<InvestorRow> = sqlx::query_as(select_investors!("WHERE id = $1"))
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.map(InvestorView::try_from).transpose()
    }

    pub async fn invoices(&self, page: Page) -> Result<Listed<InvoiceView>, sqlx::Error> {
        self.list::<InvoiceRow, _>(
            [
                select_invoices!(first_page!()),
                select_invoices!(page_after!()),
            ],
            page,
        )
        .await
    }

    pub async fn invoice(&self, id: InvoiceId) -> Result<Option<InvoiceView>, sqlx::Error> {
        let row: Option<InvoiceRow> = sqlx::query_as(select_invoices!("WHERE id = $1"))
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.map(InvoiceView::try_from).transpose()
    }

    pub async fn issuers(&self, page: Page) -> Result<Listed<IssuerView>, sqlx::Error> {
        self.list::<IssuerRow, _>(
            [
                select_issuers!(first_page!()),
                select_issuers!(page_after!()),
            ],
            page,
        )
        .await
    }

    /// One page of a list query (see `first_page!`, `page_after!`): a row more than asked for
    /// says whether there is a next page.
    async fn list<R, V>(
        &self,
        [first, after]: [&'static str; 2],
        page: Page,
    ) -> Result<Listed<V>, sqlx::Error>
    where
        R: for<'r> FromRow<'r, sqlx::postgres::PgRow> + Placed + Send + Unpin,
        V: TryFrom<R, Error = sqlx::Error>,
    {
        let limit = page.size.map(|size| i64::from(size) + 1);
        let query = match page.after {
            None => sqlx::query_as(first).bind(limit),
            Some(cursor) => sqlx::query_as(after)
                .bind(limit)
                .bind(cursor.created_at)
                .bind(cursor.position),
        };
        let mut rows: Vec<R> = query.fetch_all(&self.pool).await?;
        let mut next = None;
        if let Some(size) = page.size
            && rows.len() > size as usize
        {
            rows.truncate(size as usize);
            next = rows.last().map(Placed::cursor);
        }
        let rows = rows
            .into_iter()
            .map(V::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Listed { rows, next })
    }

    pub async fn issuer(&self, id: IssuerId) -> Result<Option<IssuerView>, sqlx::Error> {
        let row: Option<IssuerRow> = sqlx::query_as(select_issuers!("WHERE id = $1"))
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.map(IssuerView::try_from).transpose()
    }

    pub async fn command_status(&self, id: CommandId) -> Result<CommandStatus, sqlx::Error> {
        Ok(self.command_status_and_actor(id).await?.0)
    }

    /// What became of a command, and who asked for it (`None` while pending, or when nobody
    /// authenticated did: the Registering context, or a version before the audit trail).
    pub async fn command_status_and_actor(
        &self,
        id: CommandId,
    ) -> Result<(CommandStatus, Option<Actor>), sqlx::Error> {
        type Row = (String, Option<String>, Option<Uuid>, Option<String>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT status, reason, actor_id, actor_role FROM command_outcomes \
             WHERE command_id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        let Some((status, reason, actor_id, actor_role)) = row else {
            return Ok((CommandStatus::Pending, None));
        };
        let reason = reason.unwrap_or_default();
        let status = match status.as_str() {
            "APPLIED" => CommandStatus::Applied,
            "FAILED" => CommandStatus::Failed { reason },
            _ => CommandStatus::Rejected { reason },
        };
        let actor = actor_id.zip(actor_role.and_then(|role| role.parse().ok()));
        Ok((status, actor.map(|(party, role)| Actor::new(party, role))))
    }

    /// The version of the aggregate the view of type `aggregate_type` reflects (`None`: no row,
    /// or a type without a view).
    pub async fn view_version(
        &self,
        aggregate_type: &str,
        id: Uuid,
    ) -> Result<Option<u64>, sqlx::Error> {
        view_version(&self.pool, aggregate_type, id).await
    }
}

/// [`ReadModel::view_version`], read through `executor` (inside a transaction, say).
pub(crate) async fn view_version<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    aggregate_type: &str,
    id: Uuid,
) -> Result<Option<u64>, sqlx::Error> {
    let query = match aggregate_type {
        "Issuer" => "SELECT version FROM issuers WHERE id = $1",
        "Investor" => "SELECT version FROM investors WHERE id = $1",
        "Invoice" => "SELECT version FROM invoices WHERE id = $1",
        _ => return Ok(None),
    };
    let version: Option<i64> = sqlx::query_scalar(query)
        .bind(id)
        .fetch_optional(executor)
        .await?;
    Ok(version.and_then(|v| u64::try_from(v).ok()))
}
