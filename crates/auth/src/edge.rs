//! Authentication at the gRPC edge: the services' configuration, and the interceptor that turns
//! a request's bearer token into the [`Actor`] its handler reads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use financing_domain::Actor;
use financing_runtime::config::{ConfigError, text};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::keys::{KeyError, read};
use crate::tokens::{Refusal, Validity, Verifier};

/// How a service checks tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `AUTH_PUBLIC_KEY`: the PEM file of the public key tokens are verified with.
    pub public_key: PathBuf,
    /// `AUTH_ISSUER`, default `financing`: the `iss` every token must carry.
    pub issuer: String,
    /// `AUTH_AUDIENCE`, default `financing`: the `aud` every token must carry.
    pub audience: String,
}

impl AuthConfig {
    /// Refused unless `AUTH_PUBLIC_KEY` is set: a service never runs open by mistake.
    pub fn from_env() -> Result<AuthConfig, ConfigError> {
        let public_key = text("AUTH_PUBLIC_KEY", "");
        if public_key.is_empty() {
            return Err(ConfigError {
                name: "AUTH_PUBLIC_KEY".into(),
                value: String::new(),
                reason: "must name the PEM file of the public key that verifies tokens \
                         (scripts/up.sh makes one in its run directory)"
                    .into(),
            });
        }
        Ok(AuthConfig {
            public_key: public_key.into(),
            issuer: text("AUTH_ISSUER", "financing"),
            audience: text("AUTH_AUDIENCE", "financing"),
        })
    }

    pub fn verifier(&self) -> Result<Verifier, KeyError> {
        Verifier::new(&read(&self.public_key)?, &self.issuer, &self.audience)
    }
}

/// The interceptor every API service sits behind: a request without a valid token is answered
/// UNAUTHENTICATED; one with a valid token reaches its handler with the [`Actor`] in its
/// extensions.
///
/// A client sends the same token with every request: the tokens verified lately are
/// remembered, so that a token already verified costs a lookup and a look at the clock instead
/// of a signature check (which took a quarter of the listener's throughput).
#[derive(Clone)]
pub struct Authenticate {
    verifier: Arc<Verifier>,
    verified: Arc<Mutex<HashMap<String, (Actor, Validity)>>>,
}

/// The most verified tokens remembered; past it the memory starts over.
const REMEMBERED: usize = 10_000;

impl Authenticate {
    pub fn new(verifier: Verifier) -> Authenticate {
        Authenticate {
            verifier: Arc::new(verifier),
            verified: Arc::default(),
        }
    }

    /// The actor of a genuine, current token: remembered, or verified (and then remembered).
    fn verify(&self, token: &str) -> Result<Actor, Refusal> {
        let remembered = self.verified().get(token).copied();
        if let Some((actor, validity)) = remembered
            && validity.holds_now()
        {
            return Ok(actor);
        }
        let (actor, validity) = self.verifier.verify_with_validity(token)?;
        let mut verified = self.verified();
        if verified.len() >= REMEMBERED {
            verified.clear();
        }
        verified.insert(token.to_owned(), (actor, validity));
        Ok(actor)
    }

    fn verified(&self) -> MutexGuard<'_, HashMap<String, (Actor, Validity)>> {
        // A map of verified tokens is never left half-changed by a panic.
        self.verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn actor(&self, request: &Request<()>) -> Result<Actor, Refusal> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or(Refusal::Missing)?;
        let header = header.to_str().map_err(|_| Refusal::NotBearer)?;
        let (scheme, token) = header.split_once(' ').ok_or(Refusal::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(Refusal::NotBearer);
        }
        self.verify(token.trim())
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.actor(&request) {
            Ok(actor) => {
                request.extensions_mut().insert(actor);
                Ok(request)
            }
            Err(refusal) => {
                metrics::counter!("financing_auth_refusals_total", "reason" => refusal.reason())
                    .increment(1);
                tracing::debug!(reason = refusal.reason(), "request refused: {refusal}");
                Err(Status::unauthenticated(refusal.to_string()))
            }
        }
    }
}

/// Who is asking, as [`Authenticate`] found: every handler behind it has one.
pub fn actor_of<T>(request: &Request<T>) -> Result<Actor, Status> {
    request
        .extensions()
        .get::<Actor>()
        .copied()
        .ok_or_else(|| Status::unauthenticated("the request was not authenticated"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use financing_domain::Role;
    use tonic::Code;
    use uuid::Uuid;

    use super::*;
    use crate::{KeyPair, Signer};

    fn authenticate(pair: &KeyPair) -> Authenticate {
        Authenticate::new(Verifier::new(&pair.public_pem, "financing", "financing").unwrap())
    }

    fn with_authorization(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
        request
    }

    #[test]
    fn a_bearer_token_puts_its_actor_on_the_request() {
        let pair = KeyPair::generate();
        let actor = Actor::new(Uuid::new_v4(), Role::Operator);
        let token = Signer::new(&pair.private_pem, "financing", "financing")
            .unwrap()
            .token(actor, Duration::from_secs(60));
        for scheme in ["Bearer", "bearer"] {
            let request = authenticate(&pair)
                .call(with_authorization(&format!("{scheme} {token}")))
                .unwrap();
            assert_eq!(actor_of(&request).unwrap(), actor);
        }
    }

    #[test]
    fn a_remembered_token_counts_only_while_it_was_valid() {
        let pair = KeyPair::generate();
        let actor = Actor::new(Uuid::new_v4(), Role::Issuer);
        let signer = Signer::new(&pair.private_pem, "financing", "financing").unwrap();
        let authenticate = authenticate(&pair);
        let valid = signer.token(actor, Duration::from_secs(60));
        let request = |token: &str| with_authorization(&format!("Bearer {token}"));
        assert!(authenticate.clone().call(request(&valid)).is_ok());
        assert!(authenticate.verified().contains_key(&valid), "remembered");

        // A token remembered from while it was valid, now expired: verified again, refused.
        let hour = Duration::from_secs(3600);
        let now = std::time::SystemTime::now();
        let expired = signer.token_between(actor, now - 2 * hour, now - hour);
        let ended = Validity { from: 0, until: 1 };
        authenticate
            .verified()
            .insert(expired.clone(), (actor, ended));
        let status = authenticate.clone().call(request(&expired)).unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), Refusal::Expired.to_string());
    }

    #[test]
    fn a_request_without_a_bearer_token_is_unauthenticated_and_says_why() {
        let pair = KeyPair::generate();
        let refused = |request| authenticate(&pair).call(request).unwrap_err();
        let missing = refused(Request::new(()));
        assert_eq!(missing.code(), Code::Unauthenticated);
        assert!(
            missing.message().starts_with("no credential"),
            "{missing:?}"
        );
        for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer  ", "token"] {
            let status = refused(with_authorization(value));
            assert_eq!(status.code(), Code::Unauthenticated, "{value}");
            assert_eq!(status.message(), Refusal::NotBearer.to_string(), "{value}");
        }
    }
}
