//! `POST /services/oauth2/token` (`docs/crm-connectors.md` section 3.2) with the two server
//! flows, and the sessions the data API accepts:
//!
//! * `grant_type=client_credentials` with `client_id` + `client_secret` (form fields or HTTP
//!   Basic): wrong id `invalid_client_id`, wrong secret `invalid_client`;
//! * `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an `assertion`: an RS256 JWT
//!   whose signature verifies against the configured public key (`PUBLIC KEY`, `RSA PUBLIC KEY` or
//!   the X.509 `CERTIFICATE` an admin uploads), `iss` = the client id, `sub` (or `prn`) = the
//!   username, `aud` one of the accepted audiences, `exp` in the future and at most 3 minutes
//!   ahead; any failure `invalid_grant` with a description naming it;
//! * any other grant: `unsupported_grant_type`. Every refusal is a 400
//!   `{"error", "error_description"}`.
//!
//! Tokens last [`super::FakeOptions::token_ttl`] on the fake's clock and can be expired or
//! revoked by tests; the data API answers an unknown, expired or revoked one with 401
//! `[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`. There is no
//! refresh token (neither flow issues one). `POST /services/oauth2/revoke` revokes a token.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};

/// The most an assertion's `exp` may be ahead of the fake's clock.
pub const MAX_ASSERTION_AHEAD_SECS: i64 = 180;

pub const CLIENT_CREDENTIALS: &str = "client_credentials";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// One issued access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub token: String,
    /// `client_credentials` or `jwt-bearer`.
    pub flow: &'static str,
    pub issued_ms: i64,
    pub expires_ms: i64,
    pub revoked: bool,
}

#[derive(Default, Debug)]
pub struct Sessions {
    pub by_token: BTreeMap<String, Session>,
}

impl Sessions {
    /// Whether `token` is a live session at `now_ms`.
    pub fn valid(&self, token: &str, now_ms: i64) -> bool {
        self.by_token
            .get(token)
            .is_some_and(|s| !s.revoked && now_ms < s.expires_ms)
    }
}

/// A token endpoint refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthError {
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    fn grant(description: impl Into<String>) -> Self {
        Self {
            error: "invalid_grant",
            description: description.into(),
        }
    }

    pub fn json(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

/// Reads one DER TLV at the start of `b`: (tag, header length, content length).
fn tlv(b: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some((tag, 2, usize::from(first)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | usize::from(*b.get(2 + i)?);
    }
    Some((tag, 2 + n, len))
}

/// The `subjectPublicKeyInfo` of an X.509 certificate (DER).
fn spki_of_certificate(cert: &[u8]) -> Option<&[u8]> {
    let (tag, h, _) = tlv(cert)?;
    if tag != 0x30 {
        return None;
    }
    let tbs = cert.get(h..)?;
    let (tag, h, len) = tlv(tbs)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = tbs.get(h..h + len)?;
    // [0] version (optional), serialNumber, signature, issuer, validity, subject, then the key.
    let mut index = 0;
    loop {
        let (tag, h, len) = tlv(rest)?;
        let whole = rest.get(..h + len)?;
        if tag == 0xa0 && index == 0 {
            rest = rest.get(h + len..)?;
            continue;
        }
        if index == 5 {
            return (tag == 0x30).then_some(whole);
        }
        index += 1;
        rest = rest.get(h + len..)?;
    }
}

/// The PKCS#1 `RSAPublicKey` inside a `subjectPublicKeyInfo` (the contents of its BIT STRING),
/// which is the form ring verifies with; a DER that is not an SPKI is returned as it is.
fn pkcs1_of_spki(der: &[u8]) -> Option<&[u8]> {
    let (tag, h, len) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let body = der.get(h..h + len)?;
    let (tag, h, len) = tlv(body)?;
    if tag != 0x30 {
        // Already PKCS#1: SEQUENCE { INTEGER modulus, INTEGER exponent }.
        return Some(der);
    }
    let rest = body.get(h + len..)?;
    let (tag, h, len) = tlv(rest)?;
    // BIT STRING: its first content byte counts the unused bits (0 for a key).
    if tag != 0x03 || len < 1 || *rest.get(h)? != 0 {
        return None;
    }
    rest.get(h + 1..h + len)
}

/// The RSA public key, as PKCS#1 DER, from a PEM `PUBLIC KEY` (SPKI), `RSA PUBLIC KEY` (PKCS#1)
/// or `CERTIFICATE`.
pub fn public_key_der(pem: &str) -> Result<Vec<u8>, String> {
    let begin = pem
        .find("-----BEGIN ")
        .ok_or("the public key is not PEM (no -----BEGIN line)")?;
    let after = &pem[begin + 11..];
    let label_end = after
        .find("-----")
        .ok_or("the PEM BEGIN line is not closed")?;
    let label = &after[..label_end];
    let body_start = &after[label_end + 5..];
    let end = body_start
        .find("-----END ")
        .ok_or("the PEM has no -----END line")?;
    let b64: String = body_start[..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| format!("the PEM body is not base64: {e}"))?;
    match label {
        "RSA PUBLIC KEY" => Ok(der),
        "PUBLIC KEY" => pkcs1_of_spki(&der)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| "the public key's DER is not an RSA subjectPublicKeyInfo".to_owned()),
        "CERTIFICATE" => spki_of_certificate(&der)
            .and_then(pkcs1_of_spki)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| "the certificate's DER could not be read".to_owned()),
        other => Err(format!(
            "PEM {other:?} is not a public key or certificate (PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)"
        )),
    }
}

/// What the token endpoint checks against.
pub struct Expect<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub username: &'a str,
    pub public_key: Option<&'a Result<Vec<u8>, String>>,
    pub audiences: &'a [String],
    pub now_ms: i64,
}

/// A granted request: which flow.
pub fn check(
    form: &[(String, String)],
    basic: Option<(String, String)>,
    want: &Expect<'_>,
) -> Result<&'static str, OAuthError> {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match get("grant_type") {
        Some(CLIENT_CREDENTIALS) => {
            let (id, secret) = match (get("client_id"), get("client_secret"), &basic) {
                (Some(i), Some(s), _) => (i.to_owned(), s.to_owned()),
                (_, _, Some((i, s))) => (i.clone(), s.clone()),
                (i, s, None) => (
                    i.unwrap_or_default().to_owned(),
                    s.unwrap_or_default().to_owned(),
                ),
            };
            if id != want.client_id {
                return Err(OAuthError {
                    error: "invalid_client_id",
                    description: "client identifier invalid".into(),
                });
            }
            if secret != want.client_secret {
                return Err(OAuthError {
                    error: "invalid_client",
                    description: "invalid client credentials".into(),
                });
            }
            Ok("client_credentials")
        }
        Some(JWT_BEARER) => {
            let assertion = get("assertion")
                .ok_or_else(|| OAuthError::grant("invalid assertion: no assertion parameter"))?;
            check_jwt(assertion, want)?;
            Ok("jwt-bearer")
        }
        Some(other) => Err(OAuthError {
            error: "unsupported_grant_type",
            description: format!("grant type not supported: {other}"),
        }),
        None => Err(OAuthError {
            error: "unsupported_grant_type",
            description: "grant type not supported (no grant_type in an application/x-www-form-urlencoded body)".into(),
        }),
    }
}

fn check_jwt(assertion: &str, want: &Expect<'_>) -> Result<(), OAuthError> {
    let parts: Vec<&str> = assertion.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return Err(OAuthError::grant(
            "invalid assertion: a JWT is three base64url parts joined by dots",
        ));
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('=').as_bytes())
            .map_err(|e| {
                OAuthError::grant(format!(
                    "invalid assertion: the {what} is not base64url: {e}"
                ))
            })
    };
    let header: Value = serde_json::from_slice(&decode(h, "header")?).map_err(|e| {
        OAuthError::grant(format!("invalid assertion: the header is not JSON: {e}"))
    })?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(OAuthError::grant(format!(
            "invalid assertion: alg must be RS256, not {}",
            header.get("alg").unwrap_or(&Value::Null)
        )));
    }
    let claims: Value = serde_json::from_slice(&decode(p, "claims")?).map_err(|e| {
        OAuthError::grant(format!("invalid assertion: the claims are not JSON: {e}"))
    })?;
    let sig = decode(s, "signature")?;
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if iss != want.client_id {
        return Err(OAuthError {
            error: "invalid_client_id",
            description: format!(
                "client identifier invalid: iss {iss:?} is not the connected app's consumer key"
            ),
        });
    }
    let key = match want.public_key {
        None => {
            return Err(OAuthError::grant(
                "invalid assertion: the app has no certificate for the JWT bearer flow (no public key configured)",
            ));
        }
        Some(Err(e)) => {
            return Err(OAuthError::grant(format!(
                "invalid assertion: the app's certificate is unreadable: {e}"
            )));
        }
        Some(Ok(der)) => der,
    };
    let signed = format!("{h}.{p}");
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| {
            OAuthError::grant(
                "invalid assertion: the signature does not verify against the app's certificate",
            )
        })?;
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => want
            .audiences
            .iter()
            .any(|w| w.trim_end_matches('/') == a.trim_end_matches('/')),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(|a| {
            want.audiences
                .iter()
                .any(|w| w.trim_end_matches('/') == a.trim_end_matches('/'))
        }),
        _ => false,
    };
    if !aud_ok {
        return Err(OAuthError::grant(format!(
            "audience is invalid: {} is not one of {}",
            claims.get("aud").unwrap_or(&Value::Null),
            want.audiences.join(", ")
        )));
    }
    let sub = claims
        .get("sub")
        .or_else(|| claims.get("prn"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if sub != want.username {
        return Err(OAuthError::grant(format!(
            "user hasn't approved this consumer: sub {sub:?} is not the pre-authorised user"
        )));
    }
    let Some(exp) = claims.get("exp").and_then(Value::as_i64) else {
        return Err(OAuthError::grant(
            "invalid assertion: exp (seconds since the epoch) is required",
        ));
    };
    let now = want.now_ms.div_euclid(1000);
    if exp <= now {
        return Err(OAuthError::grant(format!(
            "expired assertion: exp {exp} is not after now ({now})"
        )));
    }
    if exp > now + MAX_ASSERTION_AHEAD_SECS {
        return Err(OAuthError::grant(format!(
            "invalid assertion: exp {exp} is more than {MAX_ASSERTION_AHEAD_SECS} s after now ({now})"
        )));
    }
    Ok(())
}

/// A new access token for the org (`00D...!AQ...`).
pub fn new_token(org_id: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
    let tail: String = (0..96)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect();
    format!("{}!AQ{tail}", super::ids::short(org_id))
}

/// The `signature` of a client-credentials answer: base64 HMAC-SHA256 of `id + issued_at`,
/// keyed with the client secret (what Salesforce signs so a client can check the answer).
pub fn answer_signature(client_secret: &str, id_url: &str, issued_at: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, client_secret.as_bytes());
    let tag = hmac::sign(&key, format!("{id_url}{issued_at}").as_bytes());
    STANDARD.encode(tag.as_ref())
}

/// Reads `Authorization: Basic base64(id:secret)`.
pub fn basic_auth(header: Option<&str>) -> Option<(String, String)> {
    let b64 = header?.strip_prefix("Basic ")?;
    let raw = STANDARD.decode(b64.trim().as_bytes()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}
