//! Rebuilding the read models beside the live ones, while the projector keeps the live ones
//! current: empty read models are made in the schema `read_model_rebuild` of the same database
//! (only by the same schema version as the live ones) and filled
//! (by the operator's command line) from the event store, then a [`Handover`] locks the live
//! tables, lets the rebuilt views catch up with every view the live ones have further, and puts
//! the rebuilt tables in their place, all in one transaction. The projector's next write lands
//! in the rebuilt tables: versions they already have are duplicates, later ones apply on top,
//! so nothing is skipped and nothing is applied twice.

use std::time::Duration;

use chrono::{DateTime, Utc};

use financing_runtime::postgres::connect_options;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::{MIGRATOR, ReadModel};

/// The schema a rebuild fills before it takes the live tables' place.
pub const REBUILD_SCHEMA: &str = "read_model_rebuild";

/// The read models' tables, in the order a handover locks them. A projector's transaction
/// writing one message writes them in this order (a view, then the command's outcome); one
/// writing a batch writes them in its events' order, so it first locks them all in this one
/// ([`lock_for_writing`]): either way a handover and a projector cannot deadlock.
const TABLES: [&str; 5] = [
    "issuers",
    "investors",
    "invoices",
    "command_outcomes",
    "stuck_views",
];

/// Takes, first thing in a projector's transaction, the lock each of its writes would take,
/// on every read-model table at once and in a handover's order. Writers never wait for each
/// other on it (ROW EXCLUSIVE); a handover waits for the transaction, or it for the handover.
pub(crate) async fn lock_for_writing(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    let lock = format!(
        "LOCK TABLE {} IN ROW EXCLUSIVE MODE",
        TABLES.map(|table| format!("public.{table}")).join(", ")
    );
    sqlx::query(sqlx::AssertSqlSafe(lock))
        .execute(connection)
        .await
        .map(drop)
}

/// The session lock a rebuild holds from start to end, so that two never run at once.
const REBUILD_LOCK: i64 = 0x0046_494e_5245_4255;

/// The read models being rebuilt, and the lock that keeps another rebuild away until this one
/// is dropped.
#[derive(Debug)]
pub struct Rebuilding {
    pub read_model: ReadModel,
    /// When the rebuild started, by the database's clock.
    pub started_at: DateTime<Utc>,
    _lock: PgConnection,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The rebuilt tables would not be what the services' migrations say the live ones are.
    #[error(
        "this binary's read-model migrations ({rebuilt:?}) are not the live database's \
         ({live:?}): rebuild with the version of the services that run"
    )]
    SchemaMismatch { rebuilt: Vec<i64>, live: Vec<i64> },
    #[error("the read model database failed")]
    Database(#[from] sqlx::Error),
}

/// The migrations applied in a schema, in order.
async fn migrations(connection: &mut PgConnection, schema: &str) -> Result<Vec<i64>, sqlx::Error> {
    let query =
        format!("SELECT version FROM {schema}._sqlx_migrations WHERE success ORDER BY version");
    sqlx::query_scalar(sqlx::AssertSqlSafe(query))
        .fetch_all(connection)
        .await
}

/// A view that the live read models have at a later version than the rebuilt ones.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Behind {
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    /// The rebuilt view's version (0: no row yet).
    pub rebuilt: i64,
    /// The live view's version.
    pub live: i64,
}

/// The live views (in `public`) ahead of the rebuilt ones, by aggregate type.
const BEHIND: &str = "\
    SELECT 'Issuer' AS aggregate_type, l.id AS aggregate_id, COALESCE(r.version, 0) AS rebuilt, \
        l.version AS live \
    FROM public.issuers l LEFT JOIN read_model_rebuild.issuers r ON r.id = l.id \
    WHERE r.version IS NULL OR r.version < l.version \
    UNION ALL \
    SELECT 'Investor', l.id, COALESCE(r.version, 0), l.version \
    FROM public.investors l LEFT JOIN read_model_rebuild.investors r ON r.id = l.id \
    WHERE r.version IS NULL OR r.version < l.version \
    UNION ALL \
    SELECT 'Invoice', l.id, COALESCE(r.version, 0), l.version \
    FROM public.invoices l LEFT JOIN read_model_rebuild.invoices r ON r.id = l.id \
    WHERE r.version IS NULL OR r.version < l.version";

impl ReadModel {
    /// Empty read models in [`REBUILD_SCHEMA`] of the database at `url` (whose live read models
    /// are in `public`), replacing what an unfinished rebuild left there, written through at most
    /// `connections` connections; `None` while another rebuild runs on the database (one
    /// rebuild would drop the other's tables).
    pub async fn start_rebuild(
        url: &str,
        connections: u32,
    ) -> Result<Option<Rebuilding>, RebuildError> {
        let mut lock = PgConnection::connect_with(&connect_options(url)?).await?;
        let alone: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(REBUILD_LOCK)
            .fetch_one(&mut lock)
            .await?;
        if !alone {
            return Ok(None);
        }
        let started_at = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut lock)
            .await?;
        for statement in [
            "DROP SCHEMA IF EXISTS read_model_rebuild CASCADE",
            "CREATE SCHEMA read_model_rebuild",
        ] {
            sqlx::query(statement).execute(&mut lock).await?;
        }
        let options = connect_options(url)?.options([("search_path", REBUILD_SCHEMA)]);
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await.map_err(sqlx::Error::from)?;
        let (rebuilt, live) = (
            migrations(&mut lock, REBUILD_SCHEMA).await?,
            migrations(&mut lock, "public").await?,
        );
        if rebuilt != live {
            return Err(RebuildError::SchemaMismatch { rebuilt, live });
        }
        Ok(Some(Rebuilding {
            read_model: ReadModel::new(pool),
            started_at,
            _lock: lock,
        }))
    }

    /// The views the live read models have further than the rebuilt ones, now (the projector
    /// keeps moving); call on the live read models.
    pub async fn ahead_of_rebuild(&self) -> Result<Vec<Behind>, sqlx::Error> {
        sqlx::query_as(BEHIND).fetch_all(&self.pool).await
    }

    /// Locks the live read models (the projector waits; queries wait) for a handover to the
    /// rebuilt ones; call on the live read models. `None` if the lock cannot be had within
    /// `patience` (a long query holds a table): nothing waits on a handover for longer.
    pub async fn hand_over(&self, patience: Duration) -> Result<Option<Handover>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let timeout = format!("SET LOCAL lock_timeout = {}", patience.as_millis().max(1));
        sqlx::query(sqlx::AssertSqlSafe(timeout))
            .execute(&mut *tx)
            .await?;
        let lock = format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            TABLES.map(|table| format!("public.{table}")).join(", ")
        );
        match sqlx::query(sqlx::AssertSqlSafe(lock))
            .execute(&mut *tx)
            .await
        {
            Ok(_) => Ok(Some(Handover { tx })),
            Err(sqlx::Error::Database(error))
                if error.code().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

/// PostgreSQL's SQLSTATE for a lock not had within `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The live read models, locked: nothing changes them until [`Handover::complete`] puts the
/// rebuilt ones in their place, or the handover is dropped (and the rebuilt ones stay aside).
#[derive(Debug)]
pub struct Handover {
    tx: Transaction<'static, Postgres>,
}

impl Handover {
    /// The views the live read models have further than the rebuilt ones; they no longer move.
    pub async fn behind(&mut self) -> Result<Vec<Behind>, sqlx::Error> {
        sqlx::query_as(BEHIND).fetch_all(&mut *self.tx).await
    }

    /// Keeps the outcomes the live read models recorded since `since` (the rebuild read the
    /// older ones from the event store; a decision replaces a failure, as the projector does),
    /// puts the rebuilt tables in the live ones' place, drops the old ones, and releases the
    /// lock.
    pub async fn complete(mut self, since: DateTime<Utc>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO read_model_rebuild.command_outcomes \
             SELECT * FROM public.command_outcomes WHERE recorded_at >= $1 \
             ON CONFLICT (command_id) DO UPDATE \
             SET status = EXCLUDED.status, reason = EXCLUDED.reason, \
                 aggregate_type = EXCLUDED.aggregate_type, aggregate_id = EXCLUDED.aggregate_id, \
                 recorded_at = EXCLUDED.recorded_at \
             WHERE read_model_rebuild.command_outcomes.status = 'FAILED' \
                 AND EXCLUDED.status <> 'FAILED'",
        )
        .bind(since)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query("CREATE SCHEMA read_model_replaced")
            .execute(&mut *self.tx)
            .await?;
        for table in TABLES {
            for swap in [
                format!("ALTER TABLE public.{table} SET SCHEMA read_model_replaced"),
                format!("ALTER TABLE read_model_rebuild.{table} SET SCHEMA public"),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(swap))
                    .execute(&mut *self.tx)
                    .await?;
            }
        }
        for drop in [
            "DROP SCHEMA read_model_replaced CASCADE",
            "DROP SCHEMA read_model_rebuild CASCADE",
        ] {
            sqlx::query(drop).execute(&mut *self.tx).await?;
        }
        self.tx.commit().await
    }
}
