//! The databases the operator's commands read and repair, named as the services name them:
//! the event store (`DATABASE_URL`) and the read models (`QUERIES_DATABASE_URL`).

use anyhow::Context;
use financing_event_store::PgEventStore;
use financing_read_model::ReadModel;
use financing_runtime::config::text;
use financing_runtime::postgres::connect_options;
use sqlx::PgPool;

/// Where the read models are.
pub fn read_models_url() -> String {
    text(
        "QUERIES_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/queries",
    )
}

pub async fn event_store_pool() -> anyhow::Result<PgPool> {
    let url = text(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/financing",
    );
    PgPool::connect_with(connect_options(&url)?)
        .await
        .with_context(|| format!("cannot reach the event store at {url}"))
}

pub async fn event_store() -> anyhow::Result<PgEventStore> {
    Ok(PgEventStore::new(event_store_pool().await?))
}

pub async fn read_models() -> anyhow::Result<ReadModel> {
    let url = read_models_url();
    let pool = PgPool::connect_with(connect_options(&url)?)
        .await
        .with_context(|| format!("cannot reach the read models at {url}"))?;
    Ok(ReadModel::new(pool))
}
