//! Reading the read models, for the query service.

use financing_domain::{Bid, CommandId, InvestorId, InvoiceId, InvoiceStatus, IssuerId, Money};
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

#[derive(FromRow)]
struct InvestorRow {
    id: Uuid,
    name: String,
    balance: i64,
    reserved: i64,
    committed: i64,
}

#[derive(FromRow)]
struct InvoiceRow {
    id: Uuid,
    issuer_id: Uuid,
    asking_price: i64,
    status: String,
    winning_investor_id: Option<Uuid>,
    winning_bid: Option<i64>,
}

#[derive(FromRow)]
struct IssuerRow {
    id: Uuid,
    name: String,
}

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

impl From<IssuerRow> for IssuerView {
    fn from(row: IssuerRow) -> IssuerView {
        IssuerView {
            id: row.id.into(),
            name: row.name,
        }
    }
}

/// Queries stay static strings: the column lists are literals.
macro_rules! select_investors {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, balance, reserved, committed FROM investors ",
            $rest
        )
    };
}
macro_rules! select_invoices {
    ($rest:literal) => {
        concat!(
            "SELECT id, issuer_id, asking_price, status, winning_investor_id, winning_bid ",
            "FROM invoices ",
            $rest
        )
    };
}
macro_rules! select_issuers {
    ($rest:literal) => {
        concat!("SELECT id, name FROM issuers ", $rest)
    };
}

impl ReadModel {
    pub async fn investors(&self) -> Result<Vec<InvestorView>, sqlx::Error> {
        let rows: Vec<InvestorRow> =
            sqlx::query_as(select_investors!("ORDER BY created_at, position"))
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(InvestorView::try_from).collect()
    }

    pub async fn investor(&self, id: InvestorId) -> Result<Option<InvestorView>, sqlx::Error> {
        let row: Option<InvestorRow> = sqlx::query_as(select_investors!("WHERE id = $1"))
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.map(InvestorView::try_from).transpose()
    }

    pub async fn invoices(&self) -> Result<Vec<InvoiceView>, sqlx::Error> {
        let rows: Vec<InvoiceRow> =
            sqlx::query_as(select_invoices!("ORDER BY created_at, position"))
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(InvoiceView::try_from).collect()
    }

    pub async fn invoice(&self, id: InvoiceId) -> Result<Option<InvoiceView>, sqlx::Error> {
        let row: Option<InvoiceRow> = sqlx::query_as(select_invoices!("WHERE id = $1"))
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.map(InvoiceView::try_from).transpose()
    }

    pub async fn issuers(&self) -> Result<Vec<IssuerView>, sqlx::Error> {
        let rows: Vec<IssuerRow> = sqlx::query_as(select_issuers!("ORDER BY created_at, position"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(IssuerView::from).collect())
    }

    pub async fn issuer(&self, id: IssuerId) -> Result<Option<IssuerView>, sqlx::Error> {
        let row: Option<IssuerRow> = sqlx::query_as(select_issuers!("WHERE id = $1"))
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(IssuerView::from))
    }

    pub async fn command_status(&self, id: CommandId) -> Result<CommandStatus, sqlx::Error> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT status, reason FROM command_outcomes WHERE command_id = $1")
                .bind(id.as_uuid())
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            None => CommandStatus::Pending,
            Some((status, _)) if status == "APPLIED" => CommandStatus::Applied,
            Some((status, reason)) if status == "FAILED" => CommandStatus::Failed {
                reason: reason.unwrap_or_default(),
            },
            Some((_, reason)) => CommandStatus::Rejected {
                reason: reason.unwrap_or_default(),
            },
        })
    }
}
