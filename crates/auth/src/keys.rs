//! The key pair that signs tokens: Ed25519, kept as PEM (PKCS#8 for the private key, SPKI for
//! the public one), as `openssl` and every JWT library read them.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the key {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the key {what} is not a PEM Ed25519 key: {reason}")]
    Invalid { what: String, reason: String },
}

/// An Ed25519 key pair, as PEM.
#[derive(Clone)]
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

/// Never shows the private key.
impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_pem", &self.public_pem)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A new key pair from the operating system's randomness.
    pub fn generate() -> KeyPair {
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let invalid = "an Ed25519 key always encodes";
        KeyPair {
            private_pem: key.to_pkcs8_pem(LineEnding::LF).expect(invalid).to_string(),
            public_pem: key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .expect(invalid),
        }
    }

    /// Writes `signing-key.pem` (readable by its owner only) and `public-key.pem` in `dir`,
    /// unless the signing key is there already; returns the pair in `dir` either way.
    pub fn create_in(dir: &Path) -> Result<KeyPair, KeyError> {
        let (private, public) = (dir.join("signing-key.pem"), dir.join("public-key.pem"));
        if !private.exists() {
            let pair = KeyPair::generate();
            std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
                path: dir.to_owned(),
                source,
            })?;
            write_private(&private, &pair.private_pem)?;
            std::fs::write(&public, &pair.public_pem).map_err(|source| KeyError::Write {
                path: public.clone(),
                source,
            })?;
        }
        Ok(KeyPair {
            private_pem: read(&private)?,
            public_pem: read(&public)?,
        })
    }
}

/// A key file's text.
pub(crate) fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write_private(path: &Path, pem: &str) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(pem.as_bytes()));
    written.map_err(|source| KeyError::Write {
        path: path.to_owned(),
        source,
    })
}
