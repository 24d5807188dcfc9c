//! Seeds demo data: publishes `IssuerRegistered` and `InvestorRegistered` to
//! `registering.events`, as the Registering context would, and prints the ids ready to paste
//! into grpcurl. A broker outage is waited out. With `--wait-for` it returns only once the
//! query service shows them all; with `--env-file` it writes the ids, a token for each party
//! and one for an operator, signed with the local key (`FINANCING_SIGNING_KEY`).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use financing_api::to_proto_id;
use financing_api::v1::queries_client::QueriesClient;
use financing_api::v1::{GetInvestorRequest, GetIssuerRequest};
use financing_auth::{Actor, Bearer, Role, Signer, signing_key_path};
use financing_domain::{InvestorId, IssuerId, Money};
use financing_messaging::KafkaConfig;
use financing_populate::Registered;
use financing_runtime::retry::until_ok;
use tonic::transport::Channel;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Registers demo issuers and investors")]
struct Cli {
    /// How many issuers to register.
    #[arg(long, default_value_t = 5)]
    issuers: usize,
    /// How many investors to register.
    #[arg(long, default_value_t = 5)]
    investors: usize,
    /// Each investor's starting balance.
    #[arg(long, default_value = "100")]
    balance: Money,
    /// The query service to watch until every registration shows, e.g. http://127.0.0.1:8081.
    #[arg(long, env = "POPULATE_WAIT_FOR")]
    wait_for: Option<String>,
    /// Also write the ids and tokens as shell variables (ISSUER_1=..., ISSUER_1_TOKEN=...,
    /// OPERATOR_TOKEN=...) to this file, for `source`.
    #[arg(long)]
    env_file: Option<std::path::PathBuf>,
}

/// How long the demo's tokens last; `financing token` mints more.
const DEMO_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    financing_runtime::telemetry::init();
    let kafka = KafkaConfig::from_env()?;
    let shutdown = financing_runtime::shutdown::on_signal();
    let registered = Registered::random(cli.issuers, cli.investors);
    // A broker that is away or too busy to acknowledge in time is waited out: publishing the
    // same registrations again changes nothing.
    let publish = || async {
        kafka.ensure_topics().await?;
        registered.publish(&kafka, cli.balance).await
    };
    until_ok("registering", &shutdown, publish)
        .await
        .context("interrupted")?;
    let Registered { issuers, investors } = registered;
    let topic = kafka.topics().registering_events;

    let signer = || {
        Signer::from_env().context(
            "cannot sign tokens: FINANCING_SIGNING_KEY must name the signing key's PEM file",
        )
    };
    if let Some(path) = &cli.env_file {
        write_env_file(path, &signer()?, &issuers, &investors)?;
    }

    if let Some(url) = &cli.wait_for {
        wait_until_visible(url, &signer()?, &issuers, &investors).await?;
    }

    println!("Registered on {topic}:");
    for (name, id) in &issuers {
        println!("  {name:<12} {{\"value\":\"{id}\"}}");
    }
    for (name, id) in &investors {
        println!(
            "  {name:<12} {{\"value\":\"{id}\"}}  balance {}",
            cli.balance
        );
    }
    if let Some((_, issuer)) = issuers.first() {
        println!("\nSell an invoice for {}:", issuers[0].0);
        println!(
            "  grpcurl -plaintext -H \"authorization: Bearer $ISSUER_1_TOKEN\" -d '{{\"issuer_id\":{{\"value\":\"{issuer}\"}},\"asking_price\":{{\"amount\":10}}}}' 127.0.0.1:8080 financing.v1.Commands/SellInvoice"
        );
    }
    Ok(())
}

/// Writes each party's id and token, an operator's, and where the signing key is.
fn write_env_file(
    path: &std::path::Path,
    signer: &Signer,
    issuers: &[(String, IssuerId)],
    investors: &[(String, InvestorId)],
) -> anyhow::Result<()> {
    let parties = issuers
        .iter()
        .map(|(name, id)| (name.as_str(), Actor::new(*id, Role::Issuer)));
    let investors = investors
        .iter()
        .map(|(name, id)| (name.as_str(), Actor::new(*id, Role::Investor)));
    let operator = ("OPERATOR", Actor::new(Uuid::new_v4(), Role::Operator));
    let mut lines = String::new();
    for (name, actor) in parties.chain(investors).chain([operator]) {
        let token = signer.token(actor, DEMO_TOKEN_LIFETIME);
        lines += &format!("{name}={}\n{name}_TOKEN={token}\n", actor.party);
    }
    let key = std::fs::canonicalize(signing_key_path())?;
    lines += &format!("export FINANCING_SIGNING_KEY={}\n", key.display());
    std::fs::write(path, lines).with_context(|| format!("cannot write {}", path.display()))
}

/// Polls the query service, as an operator, until it shows every one of these issuers and
/// investors.
async fn wait_until_visible(
    url: &str,
    signer: &Signer,
    issuers: &[(String, IssuerId)],
    investors: &[(String, InvestorId)],
) -> anyhow::Result<()> {
    let channel = Channel::from_shared(url.to_owned())?.connect_lazy();
    let operator = signer.token(
        Actor::new(Uuid::new_v4(), Role::Operator),
        DEMO_TOKEN_LIFETIME,
    );
    let queries = QueriesClient::with_interceptor(channel, Bearer::new(&operator));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all_shown = true;
        for (_, id) in issuers {
            let request = GetIssuerRequest {
                id: Some(to_proto_id(*id)),
            };
            all_shown &= queries.clone().get_issuer(request).await.is_ok();
        }
        for (_, id) in investors {
            let request = GetInvestorRequest {
                id: Some(to_proto_id(*id)),
            };
            all_shown &= queries.clone().get_investor(request).await.is_ok();
        }
        if all_shown {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the query service at {url} did not show the registrations within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
