//! Postgres start-up: the database is created if missing, then migrated.

use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};

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
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await?;
    migrator.run(&pool).await?;
    Ok(pool)
}
