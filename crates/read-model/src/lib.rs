//! The read models, in their own database (`queries`): one table per view (investors, invoices,
//! issuers, command outcomes), each row with the version of its aggregate it reflects.
//! [`ReadModel::project`] applies an event exactly once per aggregate version, in one
//! transaction with the command's outcome; the `views` methods answer the query service, and a
//! rebuild fills fresh read models beside the live ones and hands over to them.

mod projection;
mod rebuild;
mod stuck;
mod views;

use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use projection::{Projected, ProjectionError, Recorded};
pub use rebuild::{Behind, Handover, REBUILD_SCHEMA, RebuildError, Rebuilding};
pub use stuck::StuckView;
pub use views::{CommandStatus, Cursor, InvestorView, InvoiceView, IssuerView, Listed, Page};

/// The tables whose rows are updated or deleted (issuers are only inserted): they need
/// vacuuming, which the projector sees to where the server does not.
pub const UPDATED_TABLES: &[&str] = &["investors", "invoices", "command_outcomes", "stuck_views"];

/// The read models' schema, run at start-up by the projector and the query service.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct ReadModel {
    pool: PgPool,
}

impl ReadModel {
    /// The read models on a database migrated with [`MIGRATOR`].
    pub fn new(pool: PgPool) -> ReadModel {
        ReadModel { pool }
    }

    /// The connections to the `queries` database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Money columns hold cents; an amount past what a BIGINT holds can never be stored.
fn cents(money: financing_domain::Money) -> Result<i64, ProjectionError> {
    i64::try_from(money.cents())
        .map_err(|_| ProjectionError::Contradiction(format!("{money} does not fit in cents")))
}
