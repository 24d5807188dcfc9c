//! Tokens a test forges on purpose, each refused for one reason: another key, claims changed
//! after signing, out of their time, for another audience or issuer, unsigned (`alg: none`),
//! HMAC keyed with the public key, not a token at all.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use financing_domain::Actor;

use crate::{KeyPair, Refusal, Signer};

/// `(what is wrong, the token, the refusal it earns)` for tokens naming `actor` against
/// services that trust `pair`'s public key for `issuer` and `audience`.
pub fn tokens(
    pair: &KeyPair,
    issuer: &str,
    audience: &str,
    actor: Actor,
) -> Vec<(&'static str, String, Refusal)> {
    let signer = |issuer, audience| Signer::new(&pair.private_pem, issuer, audience).unwrap();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let seconds = |at: SystemTime| at.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({
        "sub": actor.party, "role": actor.role.as_str(), "iss": issuer, "aud": audience,
        "iat": seconds(now), "nbf": seconds(now), "exp": seconds(now + hour),
    });
    let base64 = |json: &serde_json::Value| URL_SAFE_NO_PAD.encode(json.to_string());
    let unsigned = format!(
        "{}.{}.",
        base64(&serde_json::json!({ "alg": "none", "typ": "JWT" })),
        base64(&claims)
    );
    let hmac = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(pair.public_pem.as_bytes()),
    )
    .unwrap();
    // A genuine token whose claims were then made an operator's.
    let genuine = signer(issuer, audience).token(actor, hour);
    let parts: Vec<&str> = genuine.split('.').collect();
    let mut operator = claims.clone();
    operator["role"] = "operator".into();
    let tampered = format!("{}.{}.{}", parts[0], base64(&operator), parts[2]);
    let mut no_role = claims.clone();
    no_role["role"] = "admin".into();
    let other_key = Signer::new(&KeyPair::generate().private_pem, issuer, audience).unwrap();
    vec![
        (
            "signed with another key",
            other_key.token(actor, hour),
            Refusal::Signature,
        ),
        ("claims changed after signing", tampered, Refusal::Signature),
        (
            "expired",
            signer(issuer, audience).token_between(actor, now - 2 * hour, now - hour),
            Refusal::Expired,
        ),
        (
            "not valid yet",
            signer(issuer, audience).token_between(actor, now + hour, now + 2 * hour),
            Refusal::NotYetValid,
        ),
        (
            "for another audience",
            signer(issuer, "elsewhere").token(actor, hour),
            Refusal::Audience,
        ),
        (
            "from another issuer",
            signer("elsewhere", audience).token(actor, hour),
            Refusal::Issuer,
        ),
        ("unsigned (alg none)", unsigned, Refusal::Algorithm),
        ("HMAC keyed with the public key", hmac, Refusal::Algorithm),
        (
            "a role that is not one",
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
                &no_role,
                &jsonwebtoken::EncodingKey::from_ed_pem(pair.private_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
            Refusal::Claims("\"admin\" is not a role (issuer, investor or operator)".into()),
        ),
        (
            "not a token",
            "not-a-token".into(),
            Refusal::Malformed("InvalidToken".into()),
        ),
    ]
}
