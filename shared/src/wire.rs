//! HTTP and JSON helpers every remote client shares (Enerflo, the CRM connectors): building a
//! client, reading `Retry-After`, turning an error body into short text, encoding path segments.
//! Neutral on purpose, so a CRM connector never imports the Enerflo client.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;

/// One way to build an outbound HTTP client: the timeout bounds the whole call, connecting
/// gets at most 5 s of it, and the user agent names this product. Every client shares the one
/// [`tls_config`].
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    client_builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("enerflo-crm-sync/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Every reqwest client of this workspace starts here (the fakes', the operator tool's and the
/// tests' too): reqwest is built without a crypto provider of its own (`rustls-no-provider`, so
/// aws-lc-rs is not linked), and `reqwest::Client::new()` would panic for want of one. This one
/// carries [`tls_config`]. `clippy.toml` refuses the other constructors.
#[allow(clippy::disallowed_methods)]
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(tls_config().as_ref().clone())
}

/// [`client_builder`] with reqwest's defaults: for the fakes, tools and tests.
pub fn client() -> reqwest::Client {
    client_builder()
        .build()
        .expect("a client over the shared TLS configuration builds")
}

/// The TLS configuration of every outbound connection (Enerflo, the CRM, DynamoDB and SQS),
/// built once per process on first use. Certificates are verified, always, against Mozilla's root
/// set as the `webpki-roots` crate ships it, compiled into the binary: no CA file or directory is
/// read, so a cold start pays nothing for trust and the first request nothing either. The
/// trade-off: roots are as fresh as the build (`cargo update -p webpki-roots` takes Mozilla's
/// latest), and a private CA the host trusts is not trusted here.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                // The default provider supports the default versions; this cannot fail.
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

/// The AWS SDK's HTTP client (DynamoDB, SQS, and the credential providers of
/// [`crate::runtime::aws_sdk_config`]): reqwest over the same [`tls_config`], so the process has
/// one TLS configuration and the SDK reads no CA store. The SDK's connect and read timeouts are
/// applied per connector, one reqwest client per distinct pair; the pair of `timeouts` (the
/// configuration's own) is built here, at start, so that the first request does not wait for it.
/// The SDK's operation and attempt timeouts and its retries work as with its own client: a
/// failure to connect, a connection lost and a timeout are reported as the transient connector
/// errors its retry policy retries.
pub fn aws_http_client(
    timeouts: &aws_smithy_types::timeout::TimeoutConfig,
) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    let client = aws::AwsHttpClient::default();
    client.connector((timeouts.connect_timeout(), timeouts.read_timeout()));
    aws_smithy_runtime_api::client::http::SharedHttpClient::new(client)
}

mod aws {
    use std::sync::{Mutex, PoisonError};
    use std::time::Duration;

    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;

    type Timeouts = (Option<Duration>, Option<Duration>);

    /// Connectors by (connect, read) timeout: the SDK asks for one per request attempt.
    #[derive(Debug, Default)]
    pub(super) struct AwsHttpClient {
        connectors: Mutex<Vec<(Timeouts, SharedHttpConnector)>>,
    }

    impl HttpClient for AwsHttpClient {
        fn http_connector(
            &self,
            settings: &HttpConnectorSettings,
            _components: &RuntimeComponents,
        ) -> SharedHttpConnector {
            self.connector((settings.connect_timeout(), settings.read_timeout()))
        }
    }

    impl AwsHttpClient {
        /// The connector for `key`, built on first use.
        pub(super) fn connector(&self, key: Timeouts) -> SharedHttpConnector {
            let mut connectors = self
                .connectors
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((_, connector)) = connectors.iter().find(|(k, _)| *k == key) {
                return connector.clone();
            }
            let connector = SharedHttpConnector::new(AwsConnector::new(key));
            connectors.push((key, connector.clone()));
            connector
        }
    }

    #[derive(Debug)]
    struct AwsConnector {
        /// Why the client could not be built, reported by every call.
        client: Result<reqwest::Client, String>,
    }

    impl AwsConnector {
        fn new((connect, read): Timeouts) -> Self {
            // No overall timeout and no redirects: the SDK owns both, as with its own client.
            let mut builder = super::client_builder().redirect(reqwest::redirect::Policy::none());
            if let Some(connect) = connect {
                builder = builder.connect_timeout(connect);
            }
            if let Some(read) = read {
                builder = builder.read_timeout(read);
            }
            Self {
                client: builder
                    .build()
                    .map_err(|e| format!("building the AWS HTTP client failed: {e}")),
            }
        }
    }

    impl HttpConnector for AwsConnector {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let client = match &self.client {
                Ok(client) => client.clone(),
                Err(why) => {
                    return HttpConnectorFuture::ready(Err(ConnectorError::user(
                        why.clone().into(),
                    )));
                }
            };
            let request = match request.try_into_http1x() {
                Ok(request) => request,
                Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
            };
            let (parts, body) = request.into_parts();
            // DynamoDB and SQS bodies are in memory; anything else is streamed as it is.
            let body = match body.bytes() {
                Some(bytes) => reqwest::Body::from(bytes::Bytes::copy_from_slice(bytes)),
                None => reqwest::Body::wrap(body),
            };
            let request = match reqwest::Request::try_from(http::Request::from_parts(parts, body)) {
                Ok(request) => request,
                Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
            };
            HttpConnectorFuture::new(async move {
                let response = client.execute(request).await.map_err(connector_error)?;
                let response = http::Response::from(response).map(SdkBody::from_body_1_x);
                HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
            })
        }
    }

    /// The SDK retries timeouts and I/O errors (connection refused or lost, a failed TLS
    /// handshake); a request it cannot send is the caller's error.
    fn connector_error(e: reqwest::Error) -> ConnectorError {
        if e.is_timeout() {
            ConnectorError::timeout(e.into())
        } else if e.is_builder() {
            ConnectorError::user(e.into())
        } else {
            ConnectorError::io(e.into())
        }
    }
}

/// A transport error as text without the URL (it may carry ids or a token in its query).
pub fn without_url(e: &reqwest::Error, label: &str) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), label);
    }
    s
}

/// Percent-encodes one path segment (ids come from payloads: never let one add a path).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Retry-After` in seconds or as an HTTP date; else `x-ratelimit-reset` (Unix seconds).
pub fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(v) = text("retry-after") {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(when) = httpdate::parse_http_date(v) {
            return Some(
                when.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default(),
            );
        }
    }
    let reset = text("x-ratelimit-reset")?.parse::<i64>().ok()?;
    let delta = reset - crate::timefmt::now_unix();
    (delta > 0).then(|| Duration::from_secs(delta as u64))
}

/// An error body as short plain text: HTML tags and whitespace runs collapsed, at most 300 chars.
pub fn body_text(bytes: &[u8]) -> String {
    let raw = String::from_utf8_lossy(bytes);
    if let Ok(v) = serde_json::from_str::<Value>(&raw) {
        let msg = v
            .get("message")
            .or_else(|| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let errors = v.get("errors").map(|e| e.to_string());
        let text = match (msg, errors) {
            (Some(m), Some(e)) => format!("{m} {e}"),
            (Some(m), None) => m,
            (None, Some(e)) => e,
            (None, None) => v.to_string(),
        };
        return truncate(&text, 300);
    }
    let mut out = String::with_capacity(raw.len().min(1024));
    let mut in_tag = false;
    let lower = raw.to_ascii_lowercase();
    // Drop <head>/<style>/<script> content wholesale: it is markup, not the message.
    let cut = ["</head>", "</style>", "</script>"]
        .iter()
        .filter_map(|m| lower.rfind(m).map(|i| i + m.len()))
        .max()
        .unwrap_or(0);
    for c in raw[cut..].chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    truncate(&out.split_whitespace().collect::<Vec<_>>().join(" "), 300)
}

/// A JSON answer's shape, never its values (they may be customer data): for an error that says
/// what came instead of the expected object.
pub fn json_shape(v: &Value) -> String {
    match v {
        Value::Null => "the body is empty".to_owned(),
        Value::Object(m) if m.is_empty() => "the body is an empty object".to_owned(),
        Value::Object(m) => truncate(
            &format!(
                "the body is an object with keys {}",
                m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            ),
            300,
        ),
        Value::Array(items) => format!("the body is an array of {} items", items.len()),
        _ => "the body is a bare JSON value".to_owned(),
    }
}

/// At most `max` characters, with `...` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}
