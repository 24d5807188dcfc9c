//! The `Queries` service: read models in, the original API's messages out (the lists a page at
//! a time when a client asks), to whom may read them: the market (invoices) to any
//! authenticated party, an investor or an issuer its own, everything to an operator.

use financing_api::v1::queries_server::Queries;
use financing_api::v1::{
    self, AllInvestorsReply, AllInvoicesReply, AllIssuersReply, CommandStatusReply,
    GetCommandStatusRequest, GetInvestorRequest, GetInvoiceRequest, GetIssuerRequest,
};
use financing_api::{ApiError, required_id, to_proto_id};
use financing_auth::actor_of;
use financing_domain::{Actor, CommandId, InvoiceStatus, Role};
use financing_read_model::{
    CommandStatus, Cursor, InvestorView, InvoiceView, IssuerView, Listed, Page, ReadModel,
};
use financing_runtime::retry::Chain;
use tonic::{Request, Response, Status};

pub struct QueryService {
    read_model: ReadModel,
}

impl QueryService {
    pub fn new(read_model: ReadModel) -> QueryService {
        QueryService { read_model }
    }
}

/// The database is away: the client may retry.
fn unavailable(error: sqlx::Error) -> Status {
    tracing::warn!(error = %Chain(&error), "read model query failed");
    ApiError::Unavailable("the read models are unavailable, retry later".into()).into()
}

fn found<T>(view: Option<T>, what: impl FnOnce() -> String) -> Result<Response<T>, Status> {
    view.map(Response::new)
        .ok_or_else(|| ApiError::NotFound(what()).into())
}

/// Refused unless the caller is an operator, or `party` acting as `role`.
fn operator_or(actor: Actor, role: Role, party: impl Into<uuid::Uuid>) -> Result<(), Status> {
    let party = party.into();
    if actor.role == Role::Operator || actor.is(role, party) {
        return Ok(());
    }
    Err(ApiError::PermissionDenied(format!(
        "only {role} {party} or an operator may read that, and you are {actor}"
    ))
    .into())
}

/// Refused unless the caller is an operator.
fn operator(actor: Actor, what: &str) -> Result<(), Status> {
    if actor.role == Role::Operator {
        return Ok(());
    }
    Err(ApiError::PermissionDenied(format!(
        "only an operator may list {what}, and you are {actor}"
    ))
    .into())
}

/// Counts a query answered (or refused), for the `financing_queries_total` metric.
fn served(query: &'static str) {
    metrics::counter!("financing_queries_total", "query" => query).increment(1);
}

/// The most rows one page may ask for.
const MAX_PAGE_SIZE: u32 = 10_000;

/// The rows a list request asks for: all of them unless it gives a page size.
fn page(request: &v1::Page) -> Result<Page, Status> {
    if request.page_size > MAX_PAGE_SIZE {
        return Err(
            ApiError::invalid("page_size", format!("must be at most {MAX_PAGE_SIZE}")).into(),
        );
    }
    let after = match request.page_token.as_str() {
        "" => None,
        token => Some(Cursor::from_token(token).ok_or_else(|| {
            ApiError::invalid("page_token", "is not a next_page_token this service gave")
        })?),
    };
    Ok(Page {
        size: (request.page_size > 0).then_some(request.page_size),
        after,
    })
}

fn next_token<T>(listed: &Listed<T>) -> String {
    listed.next.as_ref().map(Cursor::token).unwrap_or_default()
}

fn investor(view: InvestorView) -> v1::Investor {
    v1::Investor {
        id: Some(to_proto_id(view.id)),
        balance: Some(money(view.balance)),
        reserved: Some(money(view.reserved)),
        committed: Some(money(view.committed)),
        name: view.name,
    }
}

fn invoice(view: InvoiceView) -> v1::Invoice {
    let status = match view.status {
        InvoiceStatus::Available => v1::InvoiceStatus::Available,
        InvoiceStatus::Financed => v1::InvoiceStatus::Financed,
        InvoiceStatus::Approved => v1::InvoiceStatus::Approved,
        InvoiceStatus::Reversed => v1::InvoiceStatus::Reversed,
    };
    v1::Invoice {
        id: Some(to_proto_id(view.id)),
        issuer_id: Some(to_proto_id(view.issuer_id)),
        asking_price: Some(money(view.asking_price)),
        status: status.into(),
        winning_bid: view.winning_bid.map(|bid| v1::Bid {
            investor_id: Some(to_proto_id(bid.investor_id)),
            amount: Some(money(bid.amount)),
        }),
    }
}

fn issuer(view: IssuerView) -> v1::Issuer {
    v1::Issuer {
        id: Some(to_proto_id(view.id)),
        name: view.name,
    }
}

fn money(amount: financing_domain::Money) -> v1::Money {
    v1::Money {
        amount: amount.to_f64(),
    }
}

#[tonic::async_trait]
impl Queries for QueryService {
    async fn all_investors(
        &self,
        request: Request<v1::Page>,
    ) -> Result<Response<AllInvestorsReply>, Status> {
        served("AllInvestors");
        operator(actor_of(&request)?, "every investor")?;
        let page = page(request.get_ref())?;
        let listed = self.read_model.investors(page).await.map_err(unavailable)?;
        Ok(Response::new(AllInvestorsReply {
            next_page_token: next_token(&listed),
            investors: listed.rows.into_iter().map(investor).collect(),
        }))
    }

    async fn all_invoices(
        &self,
        request: Request<v1::Page>,
    ) -> Result<Response<AllInvoicesReply>, Status> {
        served("AllInvoices");
        let page = page(request.get_ref())?;
        let listed = self.read_model.invoices(page).await.map_err(unavailable)?;
        Ok(Response::new(AllInvoicesReply {
            next_page_token: next_token(&listed),
            invoices: listed.rows.into_iter().map(invoice).collect(),
        }))
    }

    async fn all_issuers(
        &self,
        request: Request<v1::Page>,
    ) -> Result<Response<AllIssuersReply>, Status> {
        served("AllIssuers");
        operator(actor_of(&request)?, "every issuer")?;
        let page = page(request.get_ref())?;
        let listed = self.read_model.issuers(page).await.map_err(unavailable)?;
        Ok(Response::new(AllIssuersReply {
            next_page_token: next_token(&listed),
            issuers: listed.rows.into_iter().map(issuer).collect(),
        }))
    }

    async fn get_investor(
        &self,
        request: Request<GetInvestorRequest>,
    ) -> Result<Response<v1::Investor>, Status> {
        served("GetInvestor");
        let id: financing_domain::InvestorId = required_id("id", request.get_ref().id.as_ref())?;
        operator_or(actor_of(&request)?, Role::Investor, id)?;
        let view = self.read_model.investor(id).await.map_err(unavailable)?;
        found(view.map(investor), || format!("investor {id}"))
    }

    async fn get_invoice(
        &self,
        request: Request<GetInvoiceRequest>,
    ) -> Result<Response<v1::Invoice>, Status> {
        served("GetInvoice");
        let id = required_id("id", request.get_ref().id.as_ref())?;
        let view = self.read_model.invoice(id).await.map_err(unavailable)?;
        found(view.map(invoice), || format!("invoice {id}"))
    }

    async fn get_issuer(
        &self,
        request: Request<GetIssuerRequest>,
    ) -> Result<Response<v1::Issuer>, Status> {
        served("GetIssuer");
        let id: financing_domain::IssuerId = required_id("id", request.get_ref().id.as_ref())?;
        operator_or(actor_of(&request)?, Role::Issuer, id)?;
        let view = self.read_model.issuer(id).await.map_err(unavailable)?;
        found(view.map(issuer), || format!("issuer {id}"))
    }

    async fn get_command_status(
        &self,
        request: Request<GetCommandStatusRequest>,
    ) -> Result<Response<CommandStatusReply>, Status> {
        served("GetCommandStatus");
        let actor = actor_of(&request)?;
        let id: CommandId = required_id("command_id", request.get_ref().command_id.as_ref())?;
        let (status, asked_by) = self
            .read_model
            .command_status_and_actor(id)
            .await
            .map_err(unavailable)?;
        // A pending command's party is not known yet: PENDING tells nothing of anyone's.
        let decided = !matches!(status, CommandStatus::Pending);
        if decided && actor.role != Role::Operator && asked_by != Some(actor) {
            return Err(ApiError::PermissionDenied(format!(
                "command {id} is not yours, {actor}: a party reads its own commands' status"
            ))
            .into());
        }
        let (status, reason) = match status {
            CommandStatus::Pending => (v1::CommandStatus::Pending, String::new()),
            CommandStatus::Applied => (v1::CommandStatus::Applied, String::new()),
            CommandStatus::Rejected { reason } => (v1::CommandStatus::Rejected, reason),
            CommandStatus::Failed { reason } => (v1::CommandStatus::Failed, reason),
        };
        Ok(Response::new(CommandStatusReply {
            command_id: Some(to_proto_id(id)),
            status: status.into(),
            reason,
        }))
    }
}
