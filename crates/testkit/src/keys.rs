//! The key pair tests sign their tokens with: made once per test process, its public key in a
//! file of its own for the services' `AuthConfig`.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use financing_auth::{Actor, AuthConfig, Bearer, KeyPair, Role, Signer};
use uuid::Uuid;

const ISSUER: &str = "financing-tests";
const AUDIENCE: &str = "financing";

struct TestKeys {
    pair: KeyPair,
    public_key: PathBuf,
    signer: Signer,
}

fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let pair = KeyPair::generate();
        let dir = std::env::temp_dir().join(format!("financing-test-keys-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a directory for the test keys");
        let public_key = dir.join("public-key.pem");
        std::fs::write(&public_key, &pair.public_pem).expect("the public key is written");
        let signer =
            Signer::new(&pair.private_pem, ISSUER, AUDIENCE).expect("a generated key signs");
        TestKeys {
            pair,
            public_key,
            signer,
        }
    })
}

/// How the services of a test verify tokens: with the test key pair's public key.
pub fn auth_config() -> AuthConfig {
    AuthConfig {
        public_key: keys().public_key.clone(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
    }
}

/// The test key pair (to sign tokens a test forges on purpose).
pub fn test_key_pair() -> &'static KeyPair {
    &keys().pair
}

/// The issuer and audience the services of a test expect.
pub fn token_issuer_and_audience() -> (&'static str, &'static str) {
    (ISSUER, AUDIENCE)
}

/// A valid token for `actor`, for an hour.
pub fn token_for(actor: Actor) -> String {
    keys().signer.token(actor, Duration::from_secs(3600))
}

/// `actor`'s credential, for a client.
pub fn bearer_for(actor: Actor) -> Bearer {
    Bearer::new(&token_for(actor))
}

/// An operator of its own.
pub fn operator() -> Actor {
    Actor::new(Uuid::new_v4(), Role::Operator)
}

/// Tokens for `actor` that the services must refuse, each with what is wrong with it.
pub fn bad_tokens(actor: Actor) -> Vec<(&'static str, String)> {
    financing_auth::forged::tokens(&keys().pair, ISSUER, AUDIENCE, actor)
        .into_iter()
        .map(|(what, token, _)| (what, token))
        .collect()
}
