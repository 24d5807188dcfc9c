//! A broker that asks clients to authenticate (SASL SCRAM, as Nisshi and Kafka offer): the
//! system's clients reach it with the user `KAFKA_SASL_*` names, and nobody else gets in.

use std::time::Duration;

use financing_messaging::{BrokerSecurity, KafkaConfig, Publisher, Record, SaslCredentials};
use financing_testkit::{OwnBroker, read_to_end};
use uuid::Uuid;

fn record() -> Record {
    Record {
        key: Uuid::new_v4().to_string(),
        payload: b"{}".to_vec(),
        headers: Vec::new(),
    }
}

#[tokio::test]
async fn only_the_broker_s_user_publishes_and_reads() {
    let broker = OwnBroker::authenticating("financing", "the-password").await;
    let user = broker.kafka();
    user.ensure_topics()
        .await
        .expect("the user creates the topics");
    let topic = user.topics().commands;
    let sent = record();
    Publisher::new(&user)
        .unwrap()
        .publish(&topic, &sent)
        .await
        .expect("the user publishes");
    let read = read_to_end(&user, &topic).await;
    assert_eq!(read.len(), 1, "and reads what it published");

    let impostor = |security: BrokerSecurity| KafkaConfig {
        security,
        delivery_timeout: Duration::from_secs(3),
        ..user.clone()
    };
    let wrong_password = BrokerSecurity {
        sasl: Some(SaslCredentials {
            password: "guess".into(),
            ..user.security.sasl.clone().unwrap()
        }),
        ..user.security.clone()
    };
    for (who, kafka) in [
        ("nobody", impostor(BrokerSecurity::default())),
        ("the wrong password", impostor(wrong_password)),
    ] {
        let published = Publisher::new(&kafka)
            .unwrap()
            .publish(&topic, &record())
            .await;
        assert!(published.is_err(), "{who} cannot publish");
    }
}
