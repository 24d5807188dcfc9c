//! Whom the load generator acts as: every issuer and investor for itself, with a token of its
//! own signed by the local key (`FINANCING_SIGNING_KEY`, as `scripts/up.sh` makes it), and an
//! operator for what only an operator may read (the whole listings, anyone's command status).
//! Each party's token is minted once.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use financing_auth::{Actor, Bearer, Role, Signer};
use financing_domain::{InvestorId, IssuerId};
use tonic::Request;
use uuid::Uuid;

/// Long enough for any run.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

struct Parties {
    signer: Signer,
    operator: Actor,
    tokens: Mutex<HashMap<Actor, Bearer>>,
}

static PARTIES: OnceLock<Parties> = OnceLock::new();

/// Reads the signing key; before any request.
pub fn init() -> anyhow::Result<()> {
    let signer = Signer::from_env().context(
        "cannot sign the parties' tokens: FINANCING_SIGNING_KEY must name the signing key's PEM \
         file (scripts/up.sh makes .run/keys/signing-key.pem)",
    )?;
    let parties = Parties {
        signer,
        operator: Actor::new(Uuid::new_v4(), Role::Operator),
        tokens: Mutex::default(),
    };
    PARTIES
        .set(parties)
        .map_err(|_| anyhow::anyhow!("the parties are set up once"))
}

fn bearer(actor: Actor) -> Bearer {
    let parties = PARTIES.get().expect("parties::init ran first");
    let mut tokens = parties.tokens.lock().expect("the tokens");
    tokens
        .entry(actor)
        .or_insert_with(|| Bearer::new(&parties.signer.token(actor, TOKEN_LIFETIME)))
        .clone()
}

/// The operator's credential.
pub fn operator() -> Bearer {
    bearer(PARTIES.get().expect("parties::init ran first").operator)
}

/// `message` as the issuer sends it.
pub fn as_issuer<T>(issuer_id: IssuerId, message: T) -> Request<T> {
    bearer(Actor::new(issuer_id, Role::Issuer)).request(message)
}

/// `message` as the investor sends it.
pub fn as_investor<T>(investor_id: InvestorId, message: T) -> Request<T> {
    bearer(Actor::new(investor_id, Role::Investor)).request(message)
}
