//! Postgres start-up (the database is created if missing, then migrated), the connection
//! options every component reads its URL with, and upkeep (tables vacuumed where the server's
//! autovacuum is off).

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgPool, Postgres};
use tokio_util::sync::CancellationToken;

use crate::retry::until_ok;

/// Whether PostgreSQL refused a statement for its data (SQLSTATE class 22, data exception, such
/// as a NUL character in text; or class 23, a broken constraint): unlike an outage, retrying
/// cannot help.
pub fn refuses_the_data(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        _ => false,
    }
}

/// The options of a database URL: encrypted as its `sslmode` (or `PGSSLMODE`) says, and when
/// neither says anything, in plaintext unless the server asks for TLS (`allow`). sqlx, like
/// libpq, would otherwise try TLS first (`prefer`): on a server that offers it, Debian's
/// default, every connection went encrypted unasked, and the command handler's batches took
/// ten times as long on the loopback.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    let in_url = url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.starts_with("sslmode=") || pair.starts_with("ssl-mode="))
    });
    let asks = in_url || std::env::var_os("PGSSLMODE").is_some();
    Ok(if asks {
        options
    } else {
        options.ssl_mode(PgSslMode::Allow)
    })
}

/// [`connect_and_migrate`], retried with backoff while PostgreSQL is away; `None` if shutdown
/// comes first.
pub async fn connect_until_ready(
    what: &str,
    url: &str,
    migrator: &Migrator,
    max_connections: u32,
    shutdown: &CancellationToken,
) -> Option<PgPool> {
    until_ok(&format!("connecting to {what}"), shutdown, || {
        connect_and_migrate(url, migrator, max_connections)
    })
    .await
}

/// A pool on `url` whose database exists and is migrated. Safe to call from several processes
/// at once: a concurrent creation is tolerated and migrations take a lock.
pub async fn connect_and_migrate(
    url: &str,
    migrator: &Migrator,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    if !Postgres::database_exists(url).await? {
        if let Err(error) = Postgres::create_database(url).await {
            // Another service may have created it between the check and now.
            if !Postgres::database_exists(url).await? {
                return Err(error);
            }
        }
        tracing::info!("created database");
    }
    // No ping before each use (a round trip per query): a broken connection fails its query,
    // which every caller retries as an outage.
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(connect_options(url)?)
        .await?;
    migrator.run(&pool).await?;
    Ok(pool)
}

/// How often [`vacuum_while_autovacuum_off`] looks.
const VACUUM_EVERY: Duration = Duration::from_secs(30);

/// Vacuums and analyzes `tables` every 30 s until shutdown, as long as the server's
/// autovacuum is off (some installations turn it off). The system rewrites a row per event
/// (publication marks, read models): left unvacuumed, their dead versions slow every later
/// statement down. With autovacuum on, this only looks.
pub async fn vacuum_while_autovacuum_off(
    pool: PgPool,
    tables: &[&str],
    shutdown: CancellationToken,
) {
    let mut announced = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(VACUUM_EVERY) => {}
        }
        match vacuum_if_autovacuum_off(&pool, tables).await {
            Ok(true) if !announced => {
                announced = true;
                tracing::warn!(
                    ?tables,
                    every = ?VACUUM_EVERY,
                    "the server's autovacuum is off: vacuuming these tables here"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, ?tables, "cannot vacuum"),
        }
    }
}

/// One pass of [`vacuum_while_autovacuum_off`]: whether it vacuumed.
pub async fn vacuum_if_autovacuum_off(pool: &PgPool, tables: &[&str]) -> Result<bool, sqlx::Error> {
    let autovacuum: String = sqlx::query_scalar("SELECT current_setting('autovacuum')")
        .fetch_one(pool)
        .await?;
    if autovacuum == "on" {
        return Ok(false);
    }
    // Table names as quoted identifiers; VACUUM runs outside a transaction: the simple
    // protocol, not a prepared statement.
    let quoted: Vec<String> = tables
        .iter()
        .map(|table| format!("\"{}\"", table.replace('"', "\"\"")))
        .collect();
    let vacuum = format!("VACUUM (ANALYZE) {}", quoted.join(", "));
    // A connection of its own, for a statement that is slow by nature: not logged as slow.
    let mut connection = pool
        .connect_options()
        .as_ref()
        .clone()
        .disable_statement_logging()
        .connect()
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(vacuum))
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    Ok(true)
}
