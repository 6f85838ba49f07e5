//! The JWT Monday.com puts in `Authorization` on the webhooks of an app (docs/monday.md 6.4): HS256
//! signed with the app's signing secret, claims `accountId`, `userId`, `aud` (the endpoint URL),
//! `exp`, `iat`. Verified in constant time; the signature, `exp` (with a minute of skew) and,
//! when present, that `aud` is the path the request came to. Personal-token webhooks carry no
//! JWT: the path token is then the only authenticator.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// Accepted clock skew on `exp` and `iat`.
pub const LEEWAY_SECS: i64 = 60;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the Authorization header is not a JWT (three base64url parts)")]
    Malformed,
    #[error("the JWT's algorithm is `{0}`, not HS256")]
    Algorithm(String),
    #[error("the JWT's signature does not match MONDAY_SIGNING_SECRET")]
    Signature,
    #[error("the JWT expired")]
    Expired,
    #[error("the JWT was issued for another URL")]
    Audience,
}

fn b64(s: &str) -> Result<Vec<u8>, JwtError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)
}

fn mac(secret: &[u8], signed: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    m.update(signed);
    m
}

fn unreachable_hmac() -> Hmac<Sha256> {
    #[allow(clippy::expect_used)]
    <Hmac<Sha256> as KeyInit>::new_from_slice(b"k").expect("hmac takes any key length")
}

/// Signs `claims` as Monday does (HS256), for the fake and for tests.
pub fn sign(secret: &[u8], claims: &Value) -> String {
    let enc = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let head = enc(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = enc(claims.to_string().as_bytes());
    let signing = format!("{head}.{body}");
    let sig = mac(secret, signing.as_bytes()).finalize().into_bytes();
    format!("{signing}.{}", enc(&sig))
}

/// Verifies `authorization` (the raw JWT, or `Bearer <jwt>`) for a request to `path` at `now`
/// (Unix seconds); the claims when it holds.
pub fn verify(secret: &[u8], authorization: &str, path: &str, now: i64) -> Result<Value, JwtError> {
    let token = authorization.trim();
    let token = token
        .strip_prefix("Bearer ")
        .or_else(|| token.strip_prefix("bearer "))
        .unwrap_or(token)
        .trim();
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Value = serde_json::from_slice(&b64(h)?).map_err(|_| JwtError::Malformed)?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != "HS256" {
        return Err(JwtError::Algorithm(alg.to_owned()));
    }
    let signature = b64(s)?;
    mac(secret, format!("{h}.{c}").as_bytes())
        .verify_slice(&signature)
        .map_err(|_| JwtError::Signature)?;
    let claims: Value = serde_json::from_slice(&b64(c)?).map_err(|_| JwtError::Malformed)?;
    if let Some(exp) = claims.get("exp").and_then(Value::as_i64)
        && exp + LEEWAY_SECS < now
    {
        return Err(JwtError::Expired);
    }
    if let Some(aud) = claims.get("aud").and_then(Value::as_str) {
        let aud_path = aud
            .split_once("://")
            .map(|(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]))
            .unwrap_or(aud);
        let aud_path = aud_path
            .split('?')
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        if !path.trim_end_matches('/').ends_with(aud_path) || aud_path.is_empty() {
            return Err(JwtError::Audience);
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    const PATH: &str = "/crm/monday/webhooks/tok-0000";

    fn claims(exp: i64) -> Value {
        json!({"accountId": 1, "userId": 2, "aud": format!("https://sync.example.test{PATH}"),
               "exp": exp, "iat": exp - 300})
    }

    #[test]
    fn a_jwt_signed_with_the_secret_verifies_and_anything_else_does_not() {
        let secret = b"fake-signing-secret";
        let jwt = sign(secret, &claims(1_000_300));
        assert_eq!(verify(secret, &jwt, PATH, 1_000_000).unwrap()["userId"], 2);
        assert_eq!(
            verify(secret, &format!("Bearer {jwt}"), PATH, 1_000_000).unwrap()["accountId"],
            1
        );
        assert_eq!(
            verify(b"other-secret", &jwt, PATH, 1_000_000),
            Err(JwtError::Signature)
        );
        assert_eq!(
            verify(secret, &jwt, PATH, 1_000_300 + LEEWAY_SECS + 1),
            Err(JwtError::Expired)
        );
        assert_eq!(
            verify(secret, &jwt, "/crm/monday/webhooks/other", 1_000_000),
            Err(JwtError::Audience)
        );
        assert_eq!(
            verify(secret, "not-a-jwt", PATH, 1_000_000),
            Err(JwtError::Malformed)
        );
        // A token whose claims were changed after signing.
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        parts[1] =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims(9_999_999).to_string());
        assert_eq!(
            verify(secret, &parts.join("."), PATH, 1_000_000),
            Err(JwtError::Signature)
        );
        let none = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            parts[1]
        );
        assert_eq!(
            verify(secret, &none, PATH, 1_000_000),
            Err(JwtError::Algorithm("none".into()))
        );
    }
}
