//! Where a test finds PostgreSQL and the broker:
//! - `DATABASE_URL` or `KAFKA_BROKERS` given: those (what `scripts/test.sh` does);
//! - otherwise, with a Docker engine: PostgreSQL and Kafka containers of the test's own,
//!   removed when the test's system is dropped (so plain `cargo test` works with Docker);
//! - otherwise: the local services the scripts start, 127.0.0.1:5432 and 127.0.0.1:9092.
//!
//! The suite says once which mode it uses.

use std::path::Path;
use std::sync::Once;

use financing_testkit::Services;
use testcontainers_modules::kafka::apache::{self, Kafka};
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::ContainerAsync;
use testcontainers_modules::testcontainers::runners::AsyncRunner;

/// Containers started for one test; dropping them removes them.
pub struct Containers {
    _postgres: ContainerAsync<Postgres>,
    _kafka: ContainerAsync<Kafka>,
}

pub async fn for_test() -> (Services, Option<Containers>) {
    let given = ["DATABASE_URL", "KAFKA_BROKERS"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    if given {
        announce("the services named by DATABASE_URL and KAFKA_BROKERS");
        return (Services::from_env(), None);
    }
    if docker_reachable() {
        announce("PostgreSQL and Kafka containers of each test's own (Docker engine found)");
        let (services, containers) = start_containers().await;
        return (services, Some(containers));
    }
    announce(
        "no DATABASE_URL or KAFKA_BROKERS and no Docker engine: the local services at \
         127.0.0.1:5432 and 127.0.0.1:9092 (scripts/test.sh starts them)",
    );
    (Services::from_env(), None)
}

fn announce(mode: &str) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| eprintln!("acceptance suite: using {mode}"));
}

fn docker_reachable() -> bool {
    std::env::var_os("DOCKER_HOST").is_some() || Path::new("/var/run/docker.sock").exists()
}

async fn start_containers() -> (Services, Containers) {
    let postgres = Postgres::default()
        .start()
        .await
        .expect("a PostgreSQL container starts");
    let kafka = Kafka::default()
        .start()
        .await
        .expect("a Kafka container starts");
    let postgres_port = postgres
        .get_host_port_ipv4(5432)
        .await
        .expect("PostgreSQL's port is published");
    let kafka_port = kafka
        .get_host_port_ipv4(apache::KAFKA_PORT)
        .await
        .expect("Kafka's port is published");
    let services = Services {
        database_url: format!("postgres://postgres:postgres@127.0.0.1:{postgres_port}/postgres"),
        brokers: format!("127.0.0.1:{kafka_port}"),
    };
    let containers = Containers {
        _postgres: postgres,
        _kafka: kafka,
    };
    (services, containers)
}
