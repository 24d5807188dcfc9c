//! Rebuilding the read models beside the live ones, while the projector keeps the live ones
//! current: empty read models are made in the schema `rebuild` of the same database and filled
//! (by the operator's command line) from the event store, then a [`Handover`] locks the live
//! tables, lets the rebuilt views catch up with every view the live ones have further, and puts
//! the rebuilt tables in their place, all in one transaction. The projector's next write lands
//! in the rebuilt tables: versions they already have are duplicates, later ones apply on top,
//! so nothing is skipped and nothing is applied twice.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{MIGRATOR, ReadModel};

/// The schema a rebuild fills before it takes the live tables' place.
pub const REBUILD_SCHEMA: &str = "rebuild";

/// The read models' tables, in the order the projector writes them (a view, then the command's
/// outcome): locked in this order, a handover and a projector's transaction cannot deadlock.
const TABLES: [&str; 5] = [
    "issuers",
    "investors",
    "invoices",
    "command_outcomes",
    "stuck_views",
];

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
    FROM public.issuers l LEFT JOIN rebuild.issuers r ON r.id = l.id \
    WHERE r.version IS NULL OR r.version < l.version \
    UNION ALL \
    SELECT 'Investor', l.id, COALESCE(r.version, 0), l.version \
    FROM public.investors l LEFT JOIN rebuild.investors r ON r.id = l.id \
    WHERE r.version IS NULL OR r.version < l.version \
    UNION ALL \
    SELECT 'Invoice', l.id, COALESCE(r.version, 0), l.version \
    FROM public.invoices l LEFT JOIN rebuild.invoices r ON r.id = l.id \
    WHERE r.version IS NULL OR r.version < l.version";

impl ReadModel {
    /// Empty read models in [`REBUILD_SCHEMA`] of the database at `url` (whose live read models
    /// are in `public`), replacing what an unfinished rebuild left there, written through at most
    /// `connections` connections.
    pub async fn start_rebuild(url: &str, connections: u32) -> Result<ReadModel, sqlx::Error> {
        let live = PgPool::connect(url).await?;
        sqlx::query("DROP SCHEMA IF EXISTS rebuild CASCADE")
            .execute(&live)
            .await?;
        sqlx::query("CREATE SCHEMA rebuild").execute(&live).await?;
        live.close().await;
        let options = PgConnectOptions::from_str(url)?.options([("search_path", REBUILD_SCHEMA)]);
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(ReadModel::new(pool))
    }

    /// The views the live read models have further than the rebuilt ones, now (the projector
    /// keeps moving); call on the live read models.
    pub async fn ahead_of_rebuild(&self) -> Result<Vec<Behind>, sqlx::Error> {
        sqlx::query_as(BEHIND).fetch_all(&self.pool).await
    }

    /// Locks the live read models (the projector waits; queries wait) for a handover to the
    /// rebuilt ones; call on the live read models.
    pub async fn hand_over(&self) -> Result<Handover, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for table in TABLES {
            let lock = format!("LOCK TABLE public.{table} IN ACCESS EXCLUSIVE MODE");
            sqlx::query(sqlx::AssertSqlSafe(lock))
                .execute(&mut *tx)
                .await?;
        }
        Ok(Handover { tx })
    }
}

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

    /// Keeps the outcomes the live read models know and the rebuilt ones do not (a decision
    /// replacing a failure, as the projector does), puts the rebuilt tables in the live ones'
    /// place, drops the old ones, and releases the lock.
    pub async fn complete(mut self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO rebuild.command_outcomes \
             SELECT * FROM public.command_outcomes ON CONFLICT (command_id) DO UPDATE \
             SET status = EXCLUDED.status, reason = EXCLUDED.reason, \
                 aggregate_type = EXCLUDED.aggregate_type, aggregate_id = EXCLUDED.aggregate_id, \
                 recorded_at = EXCLUDED.recorded_at \
             WHERE rebuild.command_outcomes.status = 'FAILED' AND EXCLUDED.status <> 'FAILED'",
        )
        .execute(&mut *self.tx)
        .await?;
        sqlx::query("DROP SCHEMA IF EXISTS replaced CASCADE")
            .execute(&mut *self.tx)
            .await?;
        sqlx::query("CREATE SCHEMA replaced")
            .execute(&mut *self.tx)
            .await?;
        for table in TABLES {
            for swap in [
                format!("ALTER TABLE public.{table} SET SCHEMA replaced"),
                format!("ALTER TABLE rebuild.{table} SET SCHEMA public"),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(swap))
                    .execute(&mut *self.tx)
                    .await?;
            }
        }
        for drop in [
            "DROP SCHEMA replaced CASCADE",
            "DROP SCHEMA rebuild CASCADE",
        ] {
            sqlx::query(drop).execute(&mut *self.tx).await?;
        }
        self.tx.commit().await
    }
}
