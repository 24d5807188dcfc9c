//! Authentication at the gRPC edge: the services' configuration, and the interceptor that turns
//! a request's bearer token into the [`Actor`] its handler reads.

use std::path::PathBuf;
use std::sync::Arc;

use financing_domain::Actor;
use financing_runtime::config::{ConfigError, text};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::keys::{KeyError, read};
use crate::tokens::{Refusal, Verifier};

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
#[derive(Clone)]
pub struct Authenticate {
    verifier: Arc<Verifier>,
}

impl Authenticate {
    pub fn new(verifier: Verifier) -> Authenticate {
        Authenticate {
            verifier: Arc::new(verifier),
        }
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
        self.verifier.verify(token.trim())
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
