//! `financing token` and `financing keys`: a token for a party, signed with the local key, and
//! the key pair itself.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use financing_auth::{Actor, KeyPair, Role, Signer};
use uuid::Uuid;

/// Prints a token that names `subject` acting as `role`, valid for `ttl`.
pub fn mint(role: Role, subject: Uuid, ttl: Duration) -> anyhow::Result<()> {
    let signer = Signer::from_env().context(
        "cannot sign: FINANCING_SIGNING_KEY must name the private key's PEM file \
         (scripts/up.sh makes .run/keys/signing-key.pem)",
    )?;
    println!("{}", signer.token(Actor::new(subject, role), ttl));
    Ok(())
}

/// Makes a key pair in `dir` unless one is there, and says where it is.
pub fn keys(dir: &Path) -> anyhow::Result<()> {
    KeyPair::create_in(dir)?;
    println!("signing key  {}", dir.join("signing-key.pem").display());
    println!("public key   {}", dir.join("public-key.pem").display());
    Ok(())
}
