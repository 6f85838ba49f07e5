//! Access to the console: `OPS_TOKEN` is typed once into the login form (never put in a URL),
//! and buys a session cookie: `HttpOnly`, `Secure`, `SameSite=Strict`, `Path=/`, with the
//! `__Host-` prefix (so no other subdomain can plant one) and an expiry both in the cookie's
//! `Max-Age` and inside its signed value. The value is `<session id>.<expiry>.<HMAC-SHA256>`,
//! keyed by a key derived from the token: rotating `OPS_TOKEN` ends every session; during a
//! rotation (two comma-separated values) sessions signed under either are accepted.
//!
//! Every POST that changes something (replay, logout, the time zone) carries a CSRF token bound
//! to the session (an HMAC of its id) and must come from the console's own origin: `Origin`
//! must name it, and a `Sec-Fetch-Site` other than `same-origin` is refused. The login POST,
//! which has no session yet, is held to the same origin rule.
//!
//! Browsers (Chromium, Firefox) keep `Secure` cookies set by `http://127.0.0.1` and
//! `http://localhost` (potentially trustworthy origins), so the local runner uses the same
//! flags as AWS; Safari does not, so locally use another browser (README "Operator console").

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use enerflo_sync::http::HttpRequest;
use enerflo_sync::secret::SecretSet;

pub const SESSION_COOKIE: &str = "__Host-ops_session";
pub const TZ_COOKIE: &str = "__Host-ops_tz";
/// How long a session lasts: a working day.
pub const SESSION_SECS: i64 = 8 * 3600;

const KEY_CONTEXT: &[u8] = b"enerflo-sync ops console session v1";

/// A signed-in operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub expires_at: i64,
    /// The key (of the token it was signed under) its CSRF token is bound with.
    key: Vec<u8>,
}

impl Session {
    /// The CSRF token forms of this session carry.
    pub fn csrf(&self) -> String {
        b64(&mac(&self.key, &[b"csrf|", self.id.as_bytes()]))
    }

    /// Whether `token` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, token: &str) -> bool {
        bool::from(self.csrf().as_bytes().ct_eq(token.as_bytes()))
    }

    /// A short, non-secret tag for access logs (not the id: the id is what the CSRF token
    /// derives from).
    pub fn tag(&self) -> String {
        b64(&mac(&self.key, &[b"tag|", self.id.as_bytes()]))[..8].to_owned()
    }
}

pub struct Auth {
    tokens: SecretSet,
    /// One key per accepted token, the current one first.
    keys: Vec<Vec<u8>>,
}

impl Auth {
    pub fn new(tokens: SecretSet) -> Self {
        let keys = tokens
            .iter()
            .map(|t| mac(t.expose().as_bytes(), &[KEY_CONTEXT]))
            .collect();
        Self { tokens, keys }
    }

    /// Whether `candidate` is one of the `OPS_TOKEN` values (constant time; an empty
    /// configuration accepts nothing).
    pub fn token_ok(&self, candidate: &str) -> bool {
        !self.tokens.is_empty() && self.tokens.matches(candidate.trim().as_bytes())
    }

    /// A new session, and the `Set-Cookie` value that carries it.
    pub fn start(&self, now: i64) -> Option<(Session, String)> {
        let key = self.keys.first()?.clone();
        let id = hex(&(0..16).map(|_| fastrand::u8(..)).collect::<Vec<_>>());
        let expires_at = now + SESSION_SECS;
        let sig = b64(&mac(
            &key,
            &[
                b"session|",
                id.as_bytes(),
                b"|",
                expires_at.to_string().as_bytes(),
            ],
        ));
        let cookie = format!(
            "{SESSION_COOKIE}={id}.{expires_at}.{sig}; Path=/; Max-Age={SESSION_SECS}; HttpOnly; Secure; SameSite=Strict"
        );
        Some((
            Session {
                id,
                expires_at,
                key,
            },
            cookie,
        ))
    }

    /// The session a request's cookie carries, if it is signed by a current key and unexpired.
    pub fn session(&self, req: &HttpRequest, now: i64) -> Option<Session> {
        let value = cookie(req, SESSION_COOKIE)?;
        let mut parts = value.splitn(3, '.');
        let (id, expires, sig) = (parts.next()?, parts.next()?, parts.next()?);
        let expires_at: i64 = expires.parse().ok()?;
        if expires_at <= now || id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        for key in &self.keys {
            let expected = b64(&mac(
                key,
                &[b"session|", id.as_bytes(), b"|", expires.as_bytes()],
            ));
            if bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
                return Some(Session {
                    id: id.to_owned(),
                    expires_at,
                    key: key.clone(),
                });
            }
        }
        None
    }
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// The `Set-Cookie` value that stores the operator's time zone (a year).
pub fn tz_cookie(name: &str) -> String {
    format!("{TZ_COOKIE}={name}; Path=/; Max-Age=31536000; HttpOnly; Secure; SameSite=Strict")
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Why a state-changing request is refused before anything else is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginProblem {
    /// No `Origin` header: the console cannot tell where the request came from.
    Missing,
    /// `Origin` names another site, or `Sec-Fetch-Site` says it came from one.
    CrossSite,
}

/// Checks that a POST comes from the console's own pages: its `Origin` is `scheme://<Host>`, and
/// `Sec-Fetch-Site`, when the browser sends it, is `same-origin`.
pub fn check_origin(req: &HttpRequest, scheme: &str) -> Result<(), OriginProblem> {
    if let Some(site) = req.header("sec-fetch-site")
        && site != "same-origin"
    {
        return Err(OriginProblem::CrossSite);
    }
    let origin = req.header("origin").ok_or(OriginProblem::Missing)?;
    let host = req.header("host").ok_or(OriginProblem::CrossSite)?;
    if origin == format!("{scheme}://{host}") {
        Ok(())
    } else {
        Err(OriginProblem::CrossSite)
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(_) => return Vec::new(),
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
