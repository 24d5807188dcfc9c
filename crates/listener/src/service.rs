//! The `Commands` service: form checks, then the command on the bus, in the chain of work
//! (correlation) the client's `traceparent` names, or a new one.

use financing_api::v1::{
    self, ApproveFinancingCommand, BidOnInvoiceCommand, ReverseFinancingCommand,
    SellInvoiceCommand, commands_server::Commands,
};
use financing_api::{ApiError, required_amount, required_id, to_proto_id};
use financing_domain::{ClientCommand, CommandId, InvoiceId, Message as _};
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

    /// Queues the command and waits for the broker's acknowledgement.
    async fn enqueue<T, R>(
        &self,
        request: &Request<R>,
        command_id: CommandId,
        command: ClientCommand,
        reply: T,
    ) -> Result<Response<T>, Status> {
        let correlation_id = correlation_id(request, command_id);
        let span = tracing::info_span!("command", %command_id, %correlation_id);
        self.publish(command_id, correlation_id, command, reply)
            .instrument(span)
            .await
    }

    async fn publish<T>(
        &self,
        command_id: CommandId,
        correlation_id: Uuid,
        command: ClientCommand,
        reply: T,
    ) -> Result<Response<T>, Status> {
        let message = CommandMessage {
            command_id,
            correlation_id,
            command,
        };
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

/// The command's id: derived from the client's idempotency key and the request's content when
/// there is a key.
fn command_id<T: prost::Message>(request: &Request<T>, kind: &str) -> Result<CommandId, ApiError> {
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
    Ok(CommandId::for_idempotency_key(kind, key, &body))
}

#[tonic::async_trait]
impl Commands for CommandService {
    async fn sell_invoice(
        &self,
        request: Request<SellInvoiceCommand>,
    ) -> Result<Response<v1::Uuid>, Status> {
        let command_id = command_id(&request, "SellInvoice")?;
        let body = request.get_ref();
        let issuer_id = required_id("issuer_id", body.issuer_id.as_ref())?;
        let asking_price = required_amount("asking_price", body.asking_price.as_ref())?;
        let invoice_id = InvoiceId::for_sale(command_id);
        let command = ClientCommand::SellInvoice {
            invoice_id,
            issuer_id,
            asking_price,
        };
        self.enqueue(&request, command_id, command, to_proto_id(invoice_id))
            .await
    }

    async fn bid_on_invoice(
        &self,
        request: Request<BidOnInvoiceCommand>,
    ) -> Result<Response<()>, Status> {
        let command_id = command_id(&request, "BidOnInvoice")?;
        let body = request.get_ref();
        let command = ClientCommand::BidOnInvoice {
            investor_id: required_id("investor_id", body.investor_id.as_ref())?,
            invoice_id: required_id("invoice_id", body.invoice_id.as_ref())?,
            bid: required_amount("bid", body.bid.as_ref())?,
        };
        self.enqueue(&request, command_id, command, ()).await
    }

    async fn approve_financing(
        &self,
        request: Request<ApproveFinancingCommand>,
    ) -> Result<Response<()>, Status> {
        let command_id = command_id(&request, "ApproveFinancing")?;
        let invoice_id = required_id("invoice_id", request.get_ref().invoice_id.as_ref())?;
        let command = ClientCommand::ApproveFinancing { invoice_id };
        self.enqueue(&request, command_id, command, ()).await
    }

    async fn reverse_financing(
        &self,
        request: Request<ReverseFinancingCommand>,
    ) -> Result<Response<()>, Status> {
        let command_id = command_id(&request, "ReverseFinancing")?;
        let invoice_id = required_id("invoice_id", request.get_ref().invoice_id.as_ref())?;
        let command = ClientCommand::ReverseFinancing { invoice_id };
        self.enqueue(&request, command_id, command, ()).await
    }
}
