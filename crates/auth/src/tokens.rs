//! Tokens: the claims they carry, minting them ([`Signer`]) and checking them ([`Verifier`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use financing_domain::{Actor, Role};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use std::path::Path;

use financing_runtime::config::text;

use crate::keys::{KeyError, read};

/// How far a clock may be from the issuer's before `exp` and `nbf` count.
const LEEWAY: Duration = Duration::from_secs(30);

/// What a token says.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The party's id.
    sub: String,
    role: String,
    iss: String,
    aud: String,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// Why a request's credential is refused: the message is for the client (it never holds the
/// token), [`Refusal::reason`] for metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no credential: send `authorization: Bearer <token>`")]
    Missing,
    #[error("the authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token is not signed with an algorithm this service accepts (EdDSA)")]
    Algorithm,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by another issuer")]
    Issuer,
    #[error("the token is meant for another audience")]
    Audience,
    #[error("the token's claims are invalid: {0}")]
    Claims(String),
}

impl Refusal {
    /// A short name for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::NotBearer => "not_bearer",
            Refusal::Malformed(_) => "malformed",
            Refusal::Algorithm => "algorithm",
            Refusal::Signature => "signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::Issuer => "issuer",
            Refusal::Audience => "audience",
            Refusal::Claims(_) => "claims",
        }
    }
}

impl From<jsonwebtoken::errors::Error> for Refusal {
    fn from(error: jsonwebtoken::errors::Error) -> Refusal {
        match error.kind() {
            ErrorKind::InvalidSignature => Refusal::Signature,
            ErrorKind::ExpiredSignature => Refusal::Expired,
            ErrorKind::ImmatureSignature => Refusal::NotYetValid,
            ErrorKind::InvalidIssuer => Refusal::Issuer,
            ErrorKind::InvalidAudience => Refusal::Audience,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Refusal::Algorithm,
            ErrorKind::MissingRequiredClaim(claim) => {
                Refusal::Claims(format!("{claim:?} is missing"))
            }
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => Refusal::Malformed(error.to_string()),
            _ => Refusal::Claims(error.to_string()),
        }
    }
}

/// Mints tokens with the private key.
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl Signer {
    /// The signer of `FINANCING_SIGNING_KEY` (a PEM file; default `.run/keys/signing-key.pem`,
    /// where `scripts/up.sh` makes it), for `AUTH_ISSUER` and `AUTH_AUDIENCE` (default
    /// `financing` both).
    pub fn from_env() -> Result<Signer, KeyError> {
        let path = signing_key_path();
        let issuer = text("AUTH_ISSUER", "financing");
        let audience = text("AUTH_AUDIENCE", "financing");
        Signer::new(&read(Path::new(&path))?, &issuer, &audience)
    }

    pub fn new(private_pem: &str, issuer: &str, audience: &str) -> Result<Signer, KeyError> {
        let key =
            EncodingKey::from_ed_pem(private_pem.as_bytes()).map_err(|e| KeyError::Invalid {
                what: "to sign with".into(),
                reason: e.to_string(),
            })?;
        Ok(Signer {
            key,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// A token for `actor`, valid from now for `ttl`.
    pub fn token(&self, actor: Actor, ttl: Duration) -> String {
        let now = SystemTime::now();
        self.token_between(actor, now, now + ttl)
    }

    /// A token for `actor`, valid from `not_before` until `expires`.
    pub fn token_between(
        &self,
        actor: Actor,
        not_before: SystemTime,
        expires: SystemTime,
    ) -> String {
        let seconds = |at: SystemTime| {
            at.duration_since(UNIX_EPOCH)
                .expect("the clock is past 1970")
                .as_secs()
        };
        let claims = Claims {
            sub: actor.party.to_string(),
            role: actor.role.as_str().to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: seconds(SystemTime::now()),
            nbf: seconds(not_before),
            exp: seconds(expires),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
            .expect("an Ed25519 key signs any claims")
    }
}

/// The `alg` a token's header names, if the header reads as JSON.
fn algorithm(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let header = URL_SAFE_NO_PAD.decode(token.split('.').next()?).ok()?;
    Some(serde_json::from_slice::<Header>(&header).ok()?.alg)
}

/// Where the signing key is: `FINANCING_SIGNING_KEY`, default `.run/keys/signing-key.pem`.
pub fn signing_key_path() -> String {
    text("FINANCING_SIGNING_KEY", ".run/keys/signing-key.pem")
}

/// Checks tokens with the public key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    pub fn new(public_pem: &str, issuer: &str, audience: &str) -> Result<Verifier, KeyError> {
        let key =
            DecodingKey::from_ed_pem(public_pem.as_bytes()).map_err(|e| KeyError::Invalid {
                what: "to verify with".into(),
                reason: e.to_string(),
            })?;
        // EdDSA alone: never `none`, never a symmetric algorithm keyed by the public key.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY.as_secs();
        Ok(Verifier { key, validation })
    }

    /// Who the token says is asking, if it is genuine, current and meant for this service.
    pub fn verify(&self, token: &str) -> Result<Actor, Refusal> {
        self.verify_with_validity(token).map(|(actor, _)| actor)
    }

    /// [`Verifier::verify`], and the times between which the token counts (leeway included).
    pub(crate) fn verify_with_validity(&self, token: &str) -> Result<(Actor, Validity), Refusal> {
        // The allow-list first: a header naming another algorithm (`none` among them, which
        // the library cannot even parse) is refused for that, whatever else is wrong.
        if algorithm(token).is_some_and(|alg| alg != "EdDSA") {
            return Err(Refusal::Algorithm);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)?.claims;
        let party: uuid::Uuid = claims
            .sub
            .parse()
            .map_err(|_| Refusal::Claims("sub is not a UUID".into()))?;
        let role: Role = claims.role.parse().map_err(Refusal::Claims)?;
        let validity = Validity {
            from: claims.nbf.saturating_sub(LEEWAY.as_secs()),
            until: claims.exp.saturating_add(LEEWAY.as_secs()),
        };
        Ok((Actor::new(party, role), validity))
    }
}

/// When a verified token counts, in seconds since 1970.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(crate) from: u64,
    pub(crate) until: u64,
}

impl Validity {
    pub(crate) fn holds_now(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        self.from <= now && now <= self.until
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::KeyPair;

    fn verifier(pair: &KeyPair) -> Verifier {
        Verifier::new(&pair.public_pem, "financing", "financing").unwrap()
    }

    #[test]
    fn a_token_verifies_into_the_actor_it_names() {
        let pair = KeyPair::generate();
        let actor = Actor::new(Uuid::new_v4(), Role::Investor);
        let signer = Signer::new(&pair.private_pem, "financing", "financing").unwrap();
        let token = signer.token(actor, Duration::from_secs(60));
        assert_eq!(verifier(&pair).verify(&token), Ok(actor));
    }

    #[test]
    fn a_token_a_little_past_its_expiry_still_counts_within_the_leeway() {
        let pair = KeyPair::generate();
        let actor = Actor::new(Uuid::new_v4(), Role::Issuer);
        let signer = Signer::new(&pair.private_pem, "financing", "financing").unwrap();
        let now = SystemTime::now();
        let just_expired = signer.token_between(
            actor,
            now - Duration::from_secs(60),
            now - Duration::from_secs(5),
        );
        assert_eq!(verifier(&pair).verify(&just_expired), Ok(actor));
    }

    #[test]
    fn every_forged_token_is_refused_for_its_reason_without_echoing_it() {
        let pair = KeyPair::generate();
        let actor = Actor::new(Uuid::new_v4(), Role::Issuer);
        for (what, token, expected) in crate::forged::tokens(&pair, "financing", "financing", actor)
        {
            let refusal = verifier(&pair).verify(&token).unwrap_err();
            assert_eq!(refusal, expected, "{what}");
            assert!(!refusal.to_string().contains(&token), "{what}: {refusal}");
        }
    }
}
