//! The `Commands` service: form checks, then the command on the bus, in the chain of work
//! (correlation) the client's `traceparent` names, or a new one.

use financing_api::v1::{
    self, ApproveFinancingCommand, BidOnInvoiceCommand, ReverseFinancingCommand,
    SellInvoiceCommand, commands_server::Commands,
};
use financing_api::{ApiError, required_amount, required_id, to_proto_id};
use financing_auth::actor_of;
use financing_domain::{
    Actor, ClientCommand, CommandId, InvestorId, InvoiceId, IssuerId, Message as _, Role,
};
use financing_messaging::{
    CommandMessage, Publisher, TRACEPARENT, WireForm, correlation_of_traceparent,
};
use financing_runtime::retry::Chain;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

/// The request header a client may set so that a retried request is the same command.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header that carries the command's id.
const COMMAND_ID: &str = "x-command-id";
const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

pub struct CommandService {
    publisher: Publisher,
    topic: String,
}

impl CommandService {
    pub fn new(publisher: Publisher, topic: String) -> CommandService {
        CommandService { publisher, topic }
    }

    /// Queues the command, asked for by `actor`, and waits for the broker's acknowledgement.
    async fn enqueue<T, R>(
        &self,
        request: &Request<R>,
        actor: Actor,
        command_id: CommandId,
        command: ClientCommand,
        reply: T,
    ) -> Result<Response<T>, Status> {
        let correlation_id = correlation_id(request, command_id);
        let span = tracing::info_span!("command", %command_id, %correlation_id);
        let message = CommandMessage {
            command_id,
            correlation_id,
            command,
            actor: Some(actor),
        };
        self.publish(message, reply).instrument(span).await
    }

    async fn publish<T>(&self, message: CommandMessage, reply: T) -> Result<Response<T>, Status> {
        let command_id = message.command_id;
        let kind = message.command.type_name();
        if let Err(error) = self.publisher.publish(&self.topic, &message.record()).await {
            tracing::warn!(%command_id, kind, error = %Chain(&error), "command not queued");
            metrics::counter!("financing_commands_unavailable_total", "command" => kind)
                .increment(1);
            return Err(ApiError::Unavailable(
                "the command could not be queued: the message broker is unavailable, retry later"
                    .into(),
            )
            .into());
        }
        tracing::debug!(%command_id, kind, aggregate_id = %message.command.aggregate_id(), "command queued");
        metrics::counter!("financing_commands_accepted_total", "command" => kind).increment(1);
        let mut response = Response::new(reply);
        let id = MetadataValue::try_from(command_id.to_string()).expect("a UUID is ASCII");
        response.metadata_mut().insert(COMMAND_ID, id);
        Ok(response)
    }
}

/// The chain of work the command starts or continues: the trace id of the client's W3C
/// `traceparent`, when it sends a valid one (an invalid one is ignored, as the standard says),
/// else the command's own id.
fn correlation_id<T>(request: &Request<T>, command_id: CommandId) -> Uuid {
    request
        .metadata()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(correlation_of_traceparent)
        .unwrap_or(command_id.as_uuid())
}

/// Approving and reversing are for an issuer (the domain checks it is the invoice's) or an
/// operator.
fn issuer_or_operator(actor: Actor) -> Result<(), ApiError> {
    match actor.role {
        Role::Issuer | Role::Operator => Ok(()),
        Role::Investor => Err(ApiError::PermissionDenied(format!(
            "only the invoice's issuer or an operator may do that, and you are {actor}"
        ))),
    }
}

/// Refused unless `actor` is `party` acting as `role`: a party acts for itself only.
fn acting_for(
    actor: Actor,
    role: Role,
    party: impl Into<Uuid>,
    field: &str,
) -> Result<(), ApiError> {
    let party = party.into();
    if actor.is(role, party) {
        return Ok(());
    }
    Err(ApiError::PermissionDenied(format!(
        "{field} {party} is not you: only {role} {party} may do that, and you are {actor}"
    )))
}

/// The command's id: derived from who asks, the client's idempotency key and the request's
/// content when there is a key (two parties choosing the same key are two commands).
fn command_id<T: prost::Message>(
    request: &Request<T>,
    actor: Actor,
    kind: &str,
) -> Result<CommandId, ApiError> {
    let Some(key) = request.metadata().get(IDEMPOTENCY_KEY) else {
        return Ok(CommandId::new_random());
    };
    let key = key
        .to_str()
        .ok()
        .filter(|key| !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_LEN)
        .ok_or_else(|| {
            ApiError::invalid(
                IDEMPOTENCY_KEY,
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            )
        })?;
    let body = request.get_ref().encode_to_vec();
    let scope = format!("{kind}/{}/{}", actor.role, actor.party);
    Ok(CommandId::for_idempotency_key(&scope, key, &body))
}

#[tonic::async_trait]
impl Commands for CommandService {
    async fn sell_invoice(
        &self,
        request: Request<SellInvoiceCommand>,
    ) -> Result<Response<v1::Uuid>, Status> {
        let actor = actor_of(&request)?;
        let command_id = command_id(&request, actor, "SellInvoice")?;
        let body = request.get_ref();
        let issuer_id: IssuerId = required_id("issuer_id", body.issuer_id.as_ref())?;
        let asking_price = required_amount("asking_price", body.asking_price.as_ref())?;
        acting_for(actor, Role::Issuer, issuer_id, "issuer_id")?;
        let invoice_id = InvoiceId::for_sale(command_id);
        let command = ClientCommand::SellInvoice {
            invoice_id,
            issuer_id,
            asking_price,
        };
        self.enqueue(
            &request,
            actor,
            command_id,
            command,
            to_proto_id(invoice_id),
        )
        .await
    }

    async fn bid_on_invoice(
        &self,
        request: Request<BidOnInvoiceCommand>,
    ) -> Result<Response<()>, Status> {
        let actor = actor_of(&request)?;
        let command_id = command_id(&request, actor, "BidOnInvoice")?;
        let body = request.get_ref();
        let investor_id: InvestorId = required_id("investor_id", body.investor_id.as_ref())?;
        let command = ClientCommand::BidOnInvoice {
            investor_id,
            invoice_id: required_id("invoice_id", body.invoice_id.as_ref())?,
            bid: required_amount("bid", body.bid.as_ref())?,
        };
        acting_for(actor, Role::Investor, investor_id, "investor_id")?;
        self.enqueue(&request, actor, command_id, command, ()).await
    }

    async fn approve_financing(
        &self,
        request: Request<ApproveFinancingCommand>,
    ) -> Result<Response<()>, Status> {
        let actor = actor_of(&request)?;
        let command_id = command_id(&request, actor, "ApproveFinancing")?;
        let invoice_id = required_id("invoice_id", request.get_ref().invoice_id.as_ref())?;
        issuer_or_operator(actor)?;
        let command = ClientCommand::ApproveFinancing { invoice_id };
        self.enqueue(&request, actor, command_id, command, ()).await
    }

    async fn reverse_financing(
        &self,
        request: Request<ReverseFinancingCommand>,
    ) -> Result<Response<()>, Status> {
        let actor = actor_of(&request)?;
        let command_id = command_id(&request, actor, "ReverseFinancing")?;
        let invoice_id = required_id("invoice_id", request.get_ref().invoice_id.as_ref())?;
        issuer_or_operator(actor)?;
        let command = ClientCommand::ReverseFinancing { invoice_id };
        self.enqueue(&request, actor, command_id, command, ()).await
    }
}
