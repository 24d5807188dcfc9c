//! What every API server puts in front of its service: TLS (rustls) when given a certificate
//! and its key (and a loud warning when it listens beyond the loopback address without), and
//! the authentication of every request.

use std::net::SocketAddr;
use std::path::PathBuf;

use financing_auth::{AuthConfig, Authenticate, KeyError};
use financing_runtime::config::{ConfigError, text};
use tonic::transport::{Identity, ServerTlsConfig};

/// A service's certificate chain and private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}")]
pub struct TlsError {
    path: PathBuf,
    source: std::io::Error,
}

impl TlsFiles {
    /// `{prefix}_TLS_CERT` and `{prefix}_TLS_KEY`, both or neither (plaintext).
    pub fn from_env(prefix: &str) -> Result<Option<TlsFiles>, ConfigError> {
        let (cert_var, key_var) = (format!("{prefix}_TLS_CERT"), format!("{prefix}_TLS_KEY"));
        match (text(&cert_var, ""), text(&key_var, "")) {
            (cert, key) if cert.is_empty() && key.is_empty() => Ok(None),
            (cert, key) if !cert.is_empty() && !key.is_empty() => Ok(Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            })),
            (cert, _) => {
                let (set, unset) = if cert.is_empty() {
                    (&key_var, &cert_var)
                } else {
                    (&cert_var, &key_var)
                };
                Err(ConfigError {
                    name: unset.clone(),
                    value: String::new(),
                    reason: format!("must be set with {set}"),
                })
            }
        }
    }

    /// The server's TLS configuration, from the files.
    pub fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| TlsError {
                path: path.clone(),
                source,
            })
        };
        let identity = Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        Ok(ServerTlsConfig::new().identity(identity))
    }
}

/// An API server's guard: its TLS, if any, and its authentication.
pub struct Guard {
    pub authenticate: Authenticate,
    pub tls: Option<ServerTlsConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot load the key that verifies tokens")]
    Auth(#[from] KeyError),
    #[error("cannot load the TLS certificate and key")]
    Tls(#[from] TlsError),
}

impl Guard {
    /// The guard of `service`, bound to `addr`.
    pub fn new(
        service: &str,
        addr: SocketAddr,
        auth: &AuthConfig,
        tls: Option<&TlsFiles>,
    ) -> Result<Guard, GuardError> {
        let authenticate = Authenticate::new(auth.verifier()?);
        let server_tls = tls.map(TlsFiles::server_config).transpose()?;
        warn_if_exposed(service, addr, tls);
        Ok(Guard {
            authenticate,
            tls: server_tls,
        })
    }
}

/// Says loudly that `service` serves in plaintext on `addr` if anyone beyond this machine can
/// reach it: tokens would cross the network readable.
fn warn_if_exposed(service: &str, addr: SocketAddr, tls: Option<&TlsFiles>) {
    if tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "{service} serves WITHOUT TLS on an address beyond the loopback: tokens and money \
             cross the network in plaintext; set its _TLS_CERT and _TLS_KEY"
        );
    }
}
