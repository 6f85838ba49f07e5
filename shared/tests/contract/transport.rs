//! The outbound transport every client shares (`shared/src/wire.rs`): one TLS configuration that
//! verifies certificates against the compiled-in root set, and the AWS SDK's HTTP client on top
//! of it. The DynamoDB and SQS round trip runs against moto, as `kit::moto_url` says.
//!
//! A test-only CA and a server certificate for `localhost` / `127.0.0.1` it signed are made at
//! test time with the `openssl` command (`.ci/run` installs it), in a temporary directory: no key
//! is committed, and no real system trusts that CA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use enerflo_sync::wire::{aws_http_client, http_client, tls_config};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::kit::{moto_url, unique_name};

/// The CA certificate, the server certificate and the server key, PEM, made once per process.
struct TestPki {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn pki() -> &'static TestPki {
    static PKI: std::sync::OnceLock<TestPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("transport-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("the openssl command (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=enerflo-sync test CA",
            "-days",
            "2",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        let read = |f: &str| std::fs::read(dir.join(f)).expect("generated file");
        TestPki {
            ca: read("ca.pem"),
            cert: read("server.pem"),
            key: read("server.key"),
        }
    })
}

/// An HTTPS server on 127.0.0.1 with the test certificate, answering every request `200 ok`.
async fn https_server() -> SocketAddr {
    let certs = CertificateDer::pem_slice_iter(&pki().cert)
        .collect::<Result<Vec<_>, _>>()
        .expect("test certificate");
    let key = PrivateKeyDer::from_pem_slice(&pki().key).expect("test key");
    let provider = tls_config().crypto_provider().clone();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake ends here: that is what the client side is tested for.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// The rustls error somewhere in `e`'s chain. After an `io::Error` the next link is its payload
/// (`io::Error::source` skips it).
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

#[tokio::test]
async fn an_https_endpoint_whose_certificate_no_trusted_root_signed_is_refused() {
    // GIVEN an HTTPS server whose certificate chains to the test-only CA
    let addr = https_server().await;

    // WHEN the shared client calls it
    let client = http_client(Duration::from_secs(5)).expect("client");
    let err = client
        .get(format!("https://localhost:{}/", addr.port()))
        .send()
        .await
        .expect_err("an untrusted certificate must be refused");

    // THEN the handshake failed on the certificate's issuer, before any request was sent
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(
        rustls_error(&err),
        Some(&rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer
        )),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_same_endpoint_is_reached_once_its_ca_is_trusted() {
    // GIVEN the same kind of server, and the shared TLS configuration with the test CA added to
    // its roots (the control: the refusal above is about trust, not about the server)
    let addr = https_server().await;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&pki().ca) {
        roots.add(ca.expect("test CA")).expect("add test CA");
    }
    let provider = tls_config().crypto_provider().clone();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = enerflo_sync::wire::client_builder()
        .tls_backend_preconfigured(config)
        .build()
        .expect("client");

    // WHEN it calls the server
    let resp = client
        .get(format!("https://localhost:{}/", addr.port()))
        .send()
        .await
        .expect("a trusted certificate is accepted");

    // THEN the answer comes back
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "ok");
}

#[test]
fn the_tls_configuration_is_built_once_and_trusts_the_maintained_root_set() {
    // WHEN two clients ask for the TLS configuration
    let (a, b) = (tls_config(), tls_config());

    // THEN they share one, and it verifies against Mozilla's roots (webpki-roots), not nothing
    assert!(Arc::ptr_eq(&a, &b));
    assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
}

/// A DynamoDB client through [`aws_http_client`] at `endpoint`, with `attempts` tries per call.
async fn dynamodb(
    endpoint: &str,
    attempts: u32,
    read_timeout: Option<Duration>,
) -> aws_sdk_dynamodb::Client {
    let mut timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(8));
    if let Some(read) = read_timeout {
        timeouts = timeouts.read_timeout(read);
    }
    let timeouts = timeouts.build();
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .http_client(aws_http_client(&timeouts))
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .test_credentials()
        .timeout_config(timeouts)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(attempts))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&sdk)
}

#[tokio::test]
async fn the_aws_client_reports_a_refused_connection_as_a_retryable_io_failure() {
    // GIVEN a port nothing listens on
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    let client = dynamodb(&format!("http://{addr}"), 1, None).await;

    // WHEN DynamoDB is called there
    let err = client
        .get_item()
        .table_name("t")
        .key("pk", AttributeValue::S("k".into()))
        .send()
        .await
        .expect_err("nothing listens");

    // THEN the SDK sees a dispatch failure of kind I/O, the kind its retry policy retries
    match &err {
        SdkError::DispatchFailure(failure) => assert!(failure.is_io(), "{err:?}"),
        other => panic!("expected a dispatch failure, got {other:?}"),
    }
}

#[tokio::test]
async fn the_aws_client_reports_a_silent_endpoint_as_a_timeout() {
    // GIVEN an endpoint that accepts connections and never answers, and a 200 ms read timeout
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = held_tx.send(socket); // kept open, never answered
        }
    });
    let client = dynamodb(
        &format!("http://{addr}"),
        1,
        Some(Duration::from_millis(200)),
    )
    .await;

    // WHEN DynamoDB is called there
    let err = client
        .get_item()
        .table_name("t")
        .key("pk", AttributeValue::S("k".into()))
        .send()
        .await
        .expect_err("nothing answers");

    // THEN the request did reach the endpoint, and the SDK sees a dispatch failure of kind timeout
    assert!(held_rx.try_recv().is_ok(), "the request never connected");
    match &err {
        SdkError::DispatchFailure(failure) => assert!(failure.is_timeout(), "{err:?}"),
        other => panic!("expected a dispatch failure, got {other:?}"),
    }
}

#[tokio::test]
async fn dynamodb_and_sqs_work_on_the_lambda_sdk_configuration() {
    let test = "dynamodb_and_sqs_work_on_the_lambda_sdk_configuration";
    let Some(url) = moto_url(test) else {
        return;
    };
    // GIVEN DynamoDB and SQS clients on moto, configured as a Lambda function configures them
    // (the shared HTTP client, no provider chain), with fixed fake credentials
    let sdk = enerflo_sync::runtime::lambda_sdk_config(
        "us-east-1".into(),
        Some(url),
        aws_credential_types::Credentials::new(
            "AKIDTESTFAKE",
            "test-fake-secret",
            None,
            None,
            "test",
        ),
    );
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique_name("transport");
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    dynamo
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .send()
        .await
        .expect("create table");

    // WHEN an item is written and read back
    dynamo
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("k#1".into()))
        .item("body", AttributeValue::S("héllo".into()))
        .send()
        .await
        .expect("put");
    let got = dynamo
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("k#1".into()))
        .send()
        .await
        .expect("get");

    // THEN it comes back as written
    let item = got.item.expect("item");
    assert_eq!(item.get("body"), Some(&AttributeValue::S("héllo".into())));

    // AND a message sent to SQS is received as sent
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = sqs
        .create_queue()
        .queue_name(unique_name("transport"))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    sqs.send_message()
        .queue_url(&queue)
        .message_body("{\"n\":1}")
        .send()
        .await
        .expect("send");
    let received = sqs
        .receive_message()
        .queue_url(&queue)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    let bodies: Vec<_> = received
        .messages()
        .iter()
        .filter_map(|m| m.body())
        .collect();
    assert_eq!(bodies, ["{\"n\":1}"]);
}
