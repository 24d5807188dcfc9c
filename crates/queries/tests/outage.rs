//! The query service while its database is away: it serves, answers UNAVAILABLE and reports
//! NOT_SERVING, then recovers by itself when the database returns.

use std::net::SocketAddr;

use financing_api::to_proto_id;
use financing_api::v1::GetInvestorRequest;
use financing_api::v1::queries_client::QueriesClient;
use financing_queries::{QueryServer, QueryServerConfig};
use financing_testkit::{Proxy, Services, auth_config, bearer_for, operator, wait_until};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use uuid::Uuid;

#[tokio::test]
async fn queries_answer_unavailable_while_the_database_is_away_then_recover() {
    let services = Services::from_env();
    let proxy = Proxy::start(services.database_server()).await;
    proxy.cut();
    let config = QueryServerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: services.own_database_url_through(&proxy),
        auth: auth_config(),
        tls: None,
    };
    let shutdown = CancellationToken::new();
    let server = QueryServer::build(config, shutdown.clone()).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", server.local_addr()))
        .unwrap()
        .connect_lazy();
    tokio::spawn(server.run_until_stopped());
    let _stop = shutdown.drop_guard();
    let mut queries = QueriesClient::with_interceptor(channel.clone(), bearer_for(operator()));
    let mut health = HealthClient::new(channel);
    let investor = || GetInvestorRequest {
        id: Some(to_proto_id(Uuid::new_v4())),
    };
    let status = || HealthCheckRequest {
        service: "financing.v1.Queries".into(),
    };

    let refused = queries.get_investor(investor()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let serving = health.check(status()).await.unwrap().into_inner().status;
    assert_eq!(serving, ServingStatus::NotServing as i32);

    proxy.restore();
    wait_until("the query service is SERVING again", || {
        let mut health = health.clone();
        async move {
            let serving = health.check(status()).await.ok()?.into_inner().status;
            (serving == ServingStatus::Serving as i32).then_some(())
        }
    })
    .await;
    let missing = queries.get_investor(investor()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
}
