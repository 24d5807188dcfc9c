//! The query service's whole listings (every investor, every invoice, whatever their number),
//! as the scenarios check what it shows.

use financing_api::v1::{self, queries_client::QueriesClient};
use tonic::Status;
use tonic::transport::Channel;

/// A client of the query service that takes listings of any size.
pub async fn client(url: &str) -> anyhow::Result<QueriesClient<Channel>> {
    Ok(QueriesClient::new(crate::channel(url).await?).max_decoding_message_size(usize::MAX))
}

/// Every investor the query service shows.
pub async fn all_investors(queries: &QueriesClient<Channel>) -> Result<Vec<v1::Investor>, Status> {
    let listed = queries.clone().all_investors(v1::Page::default()).await?;
    Ok(listed.into_inner().investors)
}

/// Every invoice the query service shows.
pub async fn all_invoices(queries: &QueriesClient<Channel>) -> Result<Vec<v1::Invoice>, Status> {
    let listed = queries.clone().all_invoices(v1::Page::default()).await?;
    Ok(listed.into_inner().invoices)
}
