//! What the handler's integration tests share.

use std::time::Duration;

use financing_command_handler::HandlerConfig;
use financing_messaging::KafkaConfig;

/// A handler with one consumer in a group of the test's own, on `database_url`; parked
/// messages are tried again quickly.
pub fn config(kafka: &KafkaConfig, database_url: String) -> HandlerConfig {
    HandlerConfig {
        database_url,
        group_id: format!("{}handler", kafka.topic_prefix),
        snapshot_every: 50,
        max_attempts: 10,
        consumers: 1,
        kafka: kafka.clone(),
        parked_retry: Duration::from_millis(200),
    }
}
