//! HubSpot's request signatures (docs/crm-connectors.md 2.12.3): how a workflow's "Send a
//! webhook" call proves it comes from HubSpot.
//!
//! v3 (the one accepted): `X-HubSpot-Signature-v3` = base64 HMAC-SHA256, keyed with the app's
//! client secret (`HUBSPOT_CLIENT_SECRET`), over `method + uri + body + timestamp`, where
//! `timestamp` is `X-HubSpot-Request-Timestamp` (Unix milliseconds, at most 5 minutes old) and
//! `uri` the full URL HubSpot called with only the escapes of [`DECODED_ESCAPES`] decoded.
//! v1 and v2 (plain SHA-256, no timestamp, so replayable forever) are computed here for the
//! published test vectors and for diagnostics, never accepted as authentication.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The oldest (and furthest in the future) a v3 timestamp may be: HubSpot's 5 minutes.
pub const MAX_SKEW_MS: i64 = 300_000;

pub const SIGNATURE_V3_HEADER: &str = "x-hubspot-signature-v3";
pub const TIMESTAMP_HEADER: &str = "x-hubspot-request-timestamp";
pub const SIGNATURE_HEADER: &str = "x-hubspot-signature";
pub const SIGNATURE_VERSION_HEADER: &str = "x-hubspot-signature-version";

/// The percent-escapes HubSpot decodes in the URI before signing (v3); every other escape, such
/// as `%20`, stays as it is.
pub const DECODED_ESCAPES: [(&str, char); 12] = [
    ("%3A", ':'),
    ("%2F", '/'),
    ("%3F", '?'),
    ("%40", '@'),
    ("%21", '!'),
    ("%24", '$'),
    ("%27", '\''),
    ("%28", '('),
    ("%29", ')'),
    ("%2A", '*'),
    ("%2C", ','),
    ("%3B", ';'),
];

/// v1: lowercase hex SHA-256 of `secret + body`.
pub fn v1(secret: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(secret.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

/// v2: lowercase hex SHA-256 of `secret + method + uri + body`.
pub fn v2(secret: &str, method: &str, uri: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(secret.as_bytes());
    h.update(method.as_bytes());
    h.update(uri.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

fn v3_mac(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> Hmac<Sha256> {
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("hmac takes any key length");
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    mac
}

/// v3: base64 HMAC-SHA256 of `method + uri + body + timestamp` keyed with the client secret.
/// `uri` is taken as given (decode it with [`hubspot_uri`] first).
pub fn v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(
        v3_mac(secret, method, uri, body, timestamp)
            .finalize()
            .into_bytes(),
    )
}

/// The URI as HubSpot signs it: the URL it called with the escapes of [`DECODED_ESCAPES`]
/// decoded. `case_insensitive` also decodes lower-case hex (`%3a`); HubSpot's own encoder writes
/// upper case, and which its signer decodes is not documented, so [`verify_v3`] tries both forms.
pub fn hubspot_uri(raw: &str, case_insensitive: bool) -> String {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            let esc = raw.get(i..i + 3).unwrap_or_default();
            let hit = DECODED_ESCAPES.iter().find(|(e, _)| {
                if case_insensitive {
                    e.eq_ignore_ascii_case(esc)
                } else {
                    *e == esc
                }
            });
            if let Some((_, c)) = hit {
                out.push(*c);
                i += 3;
                continue;
            }
        }
        // Only ASCII is ever consumed by the branch above, so `i` stays on a char boundary.
        let ch = raw[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The public URL HubSpot called: `public_url` (`HUBSPOT_PUBLIC_URL`, the API's base with any
/// custom domain or stage prefix) + `path` + `?query`; without it, rebuilt from the request's
/// `Host` and `X-Forwarded-Proto` (`http` when absent: only a client talking straight to this
/// process, the local runner's plain-HTTP listener, sends none; API Gateway always sets it).
/// `None` when neither a public URL nor a `Host` is known.
pub fn public_url(
    public_url: Option<&str>,
    host: Option<&str>,
    forwarded_proto: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> Option<String> {
    let base = match public_url {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => {
            let host = host.map(str::trim).filter(|h| !h.is_empty())?;
            let proto = forwarded_proto
                .and_then(|p| p.split(',').next())
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .unwrap_or("http");
            format!("{proto}://{host}")
        }
    };
    let mut url = base;
    url.push_str(path);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    Some(url)
}

/// Why a v3 signature was refused. `Display` says what to fix, and nothing secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum V3Error {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("X-HubSpot-Request-Timestamp is not Unix milliseconds")]
    BadTimestamp,
    #[error("X-HubSpot-Request-Timestamp is more than 5 minutes from now")]
    Stale,
    #[error(
        "X-HubSpot-Signature-v3 does not match (wrong HUBSPOT_CLIENT_SECRET, or the URL HubSpot called is not HUBSPOT_PUBLIC_URL + path)"
    )]
    Mismatch,
}

/// Verifies a v3 signature. `raw_uri` is the full URL HubSpot called, as received (escapes
/// intact); `now_ms` the current Unix time in milliseconds. Compared in constant time.
pub fn verify_v3(
    secret: &str,
    method: &str,
    raw_uri: &str,
    body: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    now_ms: i64,
) -> Result<(), V3Error> {
    let signature = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(V3Error::Missing("X-HubSpot-Signature-v3"))?;
    let timestamp = timestamp
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(V3Error::Missing("X-HubSpot-Request-Timestamp"))?;
    let ts: i64 = timestamp.parse().map_err(|_| V3Error::BadTimestamp)?;
    if (now_ms - ts).abs() > MAX_SKEW_MS {
        return Err(V3Error::Stale);
    }
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(signature) else {
        return Err(V3Error::Mismatch);
    };
    let strict = hubspot_uri(raw_uri, false);
    let lenient = hubspot_uri(raw_uri, true);
    let mut forms = vec![strict];
    if forms[0] != lenient {
        forms.push(lenient);
    }
    let mut ok = false;
    for uri in &forms {
        // `verify_slice` compares in constant time.
        ok |= v3_mac(secret, method, uri, body, timestamp)
            .verify_slice(&given)
            .is_ok();
    }
    if ok { Ok(()) } else { Err(V3Error::Mismatch) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const HUBSPOT_SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const OWN_SECRET: &str = "fake-client-secret-0001";
    const TS: &str = "1767225600000";
    const TS_MS: i64 = 1_767_225_600_000;

    #[test]
    fn hubspots_published_v1_and_v2_vectors() {
        let body = br#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
        assert_eq!(
            v1(HUBSPOT_SECRET, body),
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
        );
        assert_eq!(
            v2(
                HUBSPOT_SECRET,
                "GET",
                "https://www.example.com/webhook_uri",
                b""
            ),
            "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
        );
    }

    #[test]
    fn the_references_own_vectors_v3_v2_v1() {
        let url = "https://hooks.example.test/crm/hubspot/inbound?tenant=acme";
        let body = br#"{"enerflo_deal_id":"deal-123","dealstage":"closedwon"}"#;
        assert_eq!(
            v3(OWN_SECRET, "POST", url, body, TS),
            "QGdPgjFr6ARgCETbLLXqijkPpKgleJq1AxNdVYaH0Qk="
        );
        assert_eq!(
            v2(OWN_SECRET, "POST", url, body),
            "49ad76111abdd0d918ae627d87054f30e82b019c9d3f16fe2d05dd0957c4c5d6"
        );
        assert_eq!(
            v1(OWN_SECRET, body),
            "af80d28cdec36cb7c6754a381489062b73862b76c5bfc3e5676c886845396e3b"
        );
        // The raw URL HubSpot called, with %40 decoded and %20 kept for signing.
        let raw =
            "https://hooks.example.test/crm/hubspot/inbound?email=jane%40example.test&x=a%20b";
        assert_eq!(
            hubspot_uri(raw, false),
            "https://hooks.example.test/crm/hubspot/inbound?email=jane@example.test&x=a%20b"
        );
        assert_eq!(
            v3(
                OWN_SECRET,
                "POST",
                &hubspot_uri(raw, false),
                br#"{"a":1}"#,
                TS
            ),
            "dO03IYgGLKGKvd6fQRFVaFtBxwwFGDAG3qCMfIZn9oE="
        );
        assert_eq!(
            verify_v3(
                OWN_SECRET,
                "POST",
                raw,
                br#"{"a":1}"#,
                Some(TS),
                Some("dO03IYgGLKGKvd6fQRFVaFtBxwwFGDAG3qCMfIZn9oE="),
                TS_MS + 1_000,
            ),
            Ok(())
        );
    }

    #[test]
    fn only_the_listed_escapes_are_decoded() {
        assert_eq!(
            hubspot_uri("/a%3A%2F%3F%40%21%24%27%28%29%2A%2C%3B%20%26%3D%25", false),
            "/a:/?@!$'()*,;%20%26%3D%25"
        );
        // Lower-case hex only in the lenient form.
        assert_eq!(hubspot_uri("/x%3a%2f", false), "/x%3a%2f");
        assert_eq!(hubspot_uri("/x%3a%2f", true), "/x:/");
        // Multi-byte text and a trailing `%` pass through.
        assert_eq!(hubspot_uri("/caf\u{e9}%", true), "/caf\u{e9}%");
    }

    fn signed(url: &str, body: &[u8], ts: i64) -> String {
        v3(
            OWN_SECRET,
            "POST",
            &hubspot_uri(url, false),
            body,
            &ts.to_string(),
        )
    }

    #[test]
    fn a_stale_or_future_timestamp_is_refused_even_with_a_good_signature() {
        let url = "https://hooks.example.test/crm/hubspot/status";
        let body = b"{}";
        let old = TS_MS - MAX_SKEW_MS - 1;
        let sig = signed(url, body, old);
        let check = |ts: i64, sig: &str| {
            verify_v3(
                OWN_SECRET,
                "POST",
                url,
                body,
                Some(&ts.to_string()),
                Some(sig),
                TS_MS,
            )
        };
        assert_eq!(check(old, &sig), Err(V3Error::Stale));
        let future = TS_MS + MAX_SKEW_MS + 1;
        assert_eq!(
            check(future, &signed(url, body, future)),
            Err(V3Error::Stale)
        );
        let edge = TS_MS - MAX_SKEW_MS;
        assert_eq!(check(edge, &signed(url, body, edge)), Ok(()));
    }

    #[test]
    fn a_signature_over_another_url_method_body_or_secret_is_refused() {
        let url = "https://hooks.example.test/crm/hubspot/status";
        let body = br#"{"dealstage":"closedwon"}"#;
        let sig = signed(url, body, TS_MS);
        let check = |secret: &str, method: &str, url: &str, body: &[u8]| {
            verify_v3(secret, method, url, body, Some(TS), Some(&sig), TS_MS)
        };
        assert_eq!(check(OWN_SECRET, "POST", url, body), Ok(()));
        for wrong_url in [
            "http://hooks.example.test/crm/hubspot/status",
            "https://other.example.test/crm/hubspot/status",
            "https://hooks.example.test/prod/crm/hubspot/status",
            "https://hooks.example.test/crm/hubspot/status?x=1",
        ] {
            assert_eq!(
                check(OWN_SECRET, "POST", wrong_url, body),
                Err(V3Error::Mismatch),
                "{wrong_url}"
            );
        }
        assert_eq!(check(OWN_SECRET, "PUT", url, body), Err(V3Error::Mismatch));
        assert_eq!(
            check(OWN_SECRET, "POST", url, b"{}"),
            Err(V3Error::Mismatch)
        );
        assert_eq!(
            check("another-secret", "POST", url, body),
            Err(V3Error::Mismatch)
        );
        assert_eq!(
            verify_v3(
                OWN_SECRET,
                "POST",
                url,
                body,
                Some(TS),
                Some("not base64!"),
                TS_MS
            ),
            Err(V3Error::Mismatch)
        );
        assert_eq!(
            verify_v3(OWN_SECRET, "POST", url, body, None, Some(&sig), TS_MS),
            Err(V3Error::Missing("X-HubSpot-Request-Timestamp"))
        );
        assert_eq!(
            verify_v3(
                OWN_SECRET,
                "POST",
                url,
                body,
                Some("yesterday"),
                Some(&sig),
                TS_MS
            ),
            Err(V3Error::BadTimestamp)
        );
    }

    #[test]
    fn the_public_url_is_the_configured_base_or_rebuilt_from_host_and_proto() {
        assert_eq!(
            public_url(
                Some("https://sync.example.test/prod/"),
                Some("abc.execute-api.example.test"),
                Some("https"),
                "/crm/hubspot/lead",
                Some("a=1"),
            )
            .as_deref(),
            Some("https://sync.example.test/prod/crm/hubspot/lead?a=1")
        );
        assert_eq!(
            public_url(
                None,
                Some("abc.example.test"),
                Some("https, http"),
                "/crm/hubspot/lead",
                None
            )
            .as_deref(),
            Some("https://abc.example.test/crm/hubspot/lead")
        );
        assert_eq!(
            public_url(
                None,
                Some("127.0.0.1:3000"),
                None,
                "/crm/hubspot/lead",
                Some("")
            )
            .as_deref(),
            Some("http://127.0.0.1:3000/crm/hubspot/lead")
        );
        assert_eq!(public_url(None, None, Some("https"), "/x", None), None);
    }
}
