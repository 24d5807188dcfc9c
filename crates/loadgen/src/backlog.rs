//! A backlog for the command handler alone (`scripts/handler-ceiling.sh`): SellInvoice commands
//! of one issuer queued straight on `financing.commands`, as the listener queues them, for a
//! handler started afterwards to drain. Without `--issuer` it registers an issuer instead and
//! prints its id: the handler must have created it before the sales are queued.

use anyhow::Context;
use financing_domain::{Actor, ClientCommand, CommandId, InvoiceId, IssuerId, Money, Role};
use financing_messaging::{CommandMessage, KafkaConfig, Publisher, WireForm};
use futures::{StreamExt, TryStreamExt};

/// Publishes in flight at a time.
const IN_FLIGHT: usize = 1024;

#[derive(clap::Args)]
pub struct BacklogArgs {
    /// The issuer the sales are for (registered by an earlier run without it).
    #[arg(long)]
    issuer: Option<IssuerId>,
}

/// Queues `count` sales for the issuer, or registers one.
pub async fn run(args: &BacklogArgs, kafka: &KafkaConfig, count: usize) -> anyhow::Result<()> {
    let Some(issuer_id) = args.issuer else {
        let registered = financing_populate::register(kafka, 1, 0, Money::ZERO)
            .await
            .context("cannot register an issuer")?;
        println!("{}", registered.issuers[0].1);
        return Ok(());
    };
    kafka.ensure_topics().await?;
    let publisher = Publisher::new(kafka)?;
    let topic = kafka.topics().commands;
    let actor = Some(Actor::new(issuer_id, Role::Issuer));
    let records = (0..count).map(|_| {
        let command_id = CommandId::new_random();
        let sale = ClientCommand::SellInvoice {
            invoice_id: InvoiceId::for_sale(command_id),
            issuer_id,
            asking_price: Money::units(100),
        };
        CommandMessage {
            command_id,
            correlation_id: command_id.as_uuid(),
            command: sale,
            actor,
        }
        .record()
    });
    let (publisher, topic) = (&publisher, &topic);
    futures::stream::iter(records)
        .map(|record| async move { publisher.publish(topic, &record).await })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await
        .context("the broker did not take a command")?;
    println!("{count} SellInvoice commands queued on {topic}");
    Ok(())
}
