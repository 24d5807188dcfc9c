//! Messages whose effect the command handler owes but cannot bring about now (a saga reaction
//! whose aggregate cannot be read, an event it cannot decode yet): parked as they were received,
//! in the event store, and tried again with backoff until they go through. Nothing owed is
//! dropped, and nothing waits in front of the messages behind it.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use crate::StoreError;

/// A message header: its name and its value, if it has one.
pub type Header = (String, Option<Vec<u8>>);

/// A message as it was received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

/// A parked message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub id: i64,
    pub message: Received,
    /// Why its last attempt failed.
    pub reason: String,
    /// Attempts after it was parked.
    pub attempts: u32,
    pub parked_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ParkedRow {
    id: i64,
    topic: String,
    kafka_partition: i32,
    kafka_offset: i64,
    message_key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Value,
    reason: String,
    attempts: i32,
    parked_at: DateTime<Utc>,
    next_attempt_at: DateTime<Utc>,
}

/// Headers are kept as `[[name, value], ...]` in base64 (a value may be null): any bytes fit,
/// where JSON text would refuse a NUL.
fn encode_headers(headers: &[Header]) -> Value {
    let pairs = headers.iter().map(|(name, value)| {
        serde_json::json!([
            BASE64.encode(name),
            value.as_ref().map(|v| BASE64.encode(v))
        ])
    });
    Value::Array(pairs.collect())
}

fn decode_headers(headers: Value) -> Result<Vec<Header>, String> {
    let pairs: Vec<(String, Option<String>)> =
        serde_json::from_value(headers).map_err(|e| e.to_string())?;
    pairs
        .into_iter()
        .map(|(name, value)| {
            let name = BASE64.decode(name).map_err(|e| e.to_string())?;
            let value = value.map(|v| BASE64.decode(v)).transpose();
            Ok((
                String::from_utf8_lossy(&name).into_owned(),
                value.map_err(|e| e.to_string())?,
            ))
        })
        .collect()
}

impl TryFrom<ParkedRow> for Parked {
    type Error = StoreError;

    fn try_from(row: ParkedRow) -> Result<Parked, StoreError> {
        let headers = decode_headers(row.headers)
            .map_err(|e| StoreError::Corrupt(format!("parked message {}: {e}", row.id)))?;
        Ok(Parked {
            id: row.id,
            message: Received {
                topic: row.topic,
                partition: row.kafka_partition,
                offset: row.kafka_offset,
                key: row.message_key,
                payload: row.payload,
                headers,
            },
            reason: row.reason,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            parked_at: row.parked_at,
            next_attempt_at: row.next_attempt_at,
        })
    }
}

/// The columns a [`ParkedRow`] reads, as a literal so that queries stay static strings.
macro_rules! parked_columns {
    () => {
        "id, topic, kafka_partition, kafka_offset, message_key, payload, headers, reason, \
         attempts, parked_at, next_attempt_at"
    };
}

/// The rows that can be read; one that cannot (a damaged row) is reported and left where it is,
/// so that it never hides the others.
fn readable(rows: Vec<ParkedRow>) -> Vec<Parked> {
    rows.into_iter()
        .filter_map(|row| {
            Parked::try_from(row)
                .inspect_err(|error| tracing::error!(%error, "a parked message cannot be read"))
                .ok()
        })
        .collect()
}

/// The parked messages, in the event store.
#[derive(Debug, Clone)]
pub struct Parking {
    pool: PgPool,
}

impl Parking {
    /// On a database migrated with [`crate::MIGRATOR`].
    pub fn new(pool: PgPool) -> Parking {
        Parking { pool }
    }

    /// Parks a message, due for another attempt after `delay`. A message parked before (the
    /// same topic, partition and offset, delivered again) stays as it was.
    pub async fn park(
        &self,
        message: &Received,
        reason: &str,
        delay: Duration,
    ) -> Result<(), StoreError> {
        let headers = encode_headers(&message.headers);
        sqlx::query(
            "INSERT INTO parked_messages (topic, kafka_partition, kafka_offset, message_key, \
                 payload, headers, reason, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $8) \
             ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING",
        )
        .bind(&message.topic)
        .bind(message.partition)
        .bind(message.offset)
        .bind(&message.key)
        .bind(&message.payload)
        .bind(headers)
        .bind(reason)
        .bind(delay)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Up to `limit` parked messages due for another attempt, oldest first, claimed for
    /// `lease`: no other handler is handed them until the lease is over (the attempt then
    /// releases or postpones each; a handler that dies holding them leaves them to the others
    /// once it ends). Two handlers never try one message at once.
    pub async fn claim_due(&self, limit: u32, lease: Duration) -> Result<Vec<Parked>, StoreError> {
        let rows: Vec<ParkedRow> = sqlx::query_as(concat!(
            "WITH claimed AS ( \
                 SELECT id FROM parked_messages WHERE next_attempt_at <= now() \
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
             UPDATE parked_messages SET next_attempt_at = now() + $2 \
             WHERE id IN (SELECT id FROM claimed) RETURNING ",
            parked_columns!()
        ))
        .bind(i64::from(limit))
        .bind(lease)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = readable(rows);
        claimed.sort_by_key(|parked| parked.id);
        Ok(claimed)
    }

    /// Every parked message, oldest first.
    pub async fn all(&self) -> Result<Vec<Parked>, StoreError> {
        let rows: Vec<ParkedRow> = sqlx::query_as(concat!(
            "SELECT ",
            parked_columns!(),
            " FROM parked_messages ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(readable(rows))
    }

    /// The message went through: it is parked no more.
    pub async fn release(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM parked_messages WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Another attempt failed for `reason`: the next one comes after `delay`.
    pub async fn postpone(&self, id: i64, reason: &str, delay: Duration) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE parked_messages SET attempts = attempts + 1, reason = $2, \
                 next_attempt_at = now() + $3 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(reason)
        .bind(delay)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
