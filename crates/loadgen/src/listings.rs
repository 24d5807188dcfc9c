//! The query service as the scenarios read it, as an operator (who may read everything), and
//! its whole listings (every investor, every invoice, whatever their number).

use financing_api::v1::{self, queries_client::QueriesClient};
use financing_auth::Bearer;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A client of the query service, as the operator.
pub type Queries = QueriesClient<InterceptedService<Channel, Bearer>>;

/// A client of the query service, as the operator, that takes listings of any size.
pub async fn client(url: &str) -> anyhow::Result<Queries> {
    let channel = crate::channel(url).await?;
    Ok(
        QueriesClient::with_interceptor(channel, crate::parties::operator())
            .max_decoding_message_size(usize::MAX),
    )
}

/// Every investor the query service shows.
pub async fn all_investors(queries: &Queries) -> Result<Vec<v1::Investor>, Status> {
    let listed = queries.clone().all_investors(v1::Page::default()).await?;
    Ok(listed.into_inner().investors)
}

/// Every invoice the query service shows.
pub async fn all_invoices(queries: &Queries) -> Result<Vec<v1::Invoice>, Status> {
    let listed = queries.clone().all_invoices(v1::Page::default()).await?;
    Ok(listed.into_inner().invoices)
}
