//! The Lambda path: the real function binaries (`functions/*`), run as Lambda runs them.
//!
//! Each test serves the Lambda Runtime API (2018-06-01) on a port of its own, spawns a function's
//! debug binary with `AWS_LAMBDA_RUNTIME_API` pointing at it and the environment `template.yaml`
//! gives every function (its `Globals`, parameter defaults, test values on top), and invokes it:
//!
//! - `enerflo-webhook` with API Gateway HTTP API (payload 2.0) events carrying an Enerflo sample;
//! - the stage consumers (`enerflo-project-to-crm`, `enerflo-status-to-crm`) with SQS events the
//!   test builds as Lambda's event source mapping does: it receives from the stage's FIFO queue
//!   in moto, hands the batch over, reads `batchItemFailures` and deletes only the rest.
//!
//! The table and queues live in moto (`MOTO_URL`, which `make test` exports), created as
//! `template.yaml` creates them; Enerflo and the CRM are the kit's wiremock fakes.
//!
//! The binaries are found in `LAMBDA_BIN_DIR`, else in this test build's own target dir
//! (`$CARGO_TARGET_DIR/debug`, or `target/debug`), where `infra/scripts/test.sh` builds them
//! before the tests run (`cargo build -p <each function>`). Without them, or without moto, the
//! tests skip with a note, except in CI (`CI=true`), where they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use base64::Engine;
use bytes::Bytes;
use enerflo_sync::classify::Stage;
use enerflo_sync::queue::sqs::{SqsEventQueue, SqsStageQueues, create_queues};
use enerflo_sync::store::dynamo::create_table;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sync_tests::crm::{CrmIds, EVENTS_PATH, crm_accepts};
use sync_tests::enerflo::{SAMPLE_DEAL, deal_id, finds_installs, submission, submission_json};
use sync_tests::{CRM_SECRET, ENERFLO_API_KEY, TOKEN, fixture, temp_dir};
use tokio::sync::{mpsc, oneshot};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, Request as MockRequest, Respond, ResponseTemplate};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
/// The function timeout of `template.yaml` (`Globals.Function.Timeout`).
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Lambda's limit on a function's init phase.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The visibility timeout of the stage queues (`create_queues`, as `template.yaml`).
const QUEUE_VISIBILITY_SECS: i32 = 180;
/// `Lambda-Runtime-Deadline-Ms` of a batch invoked with "only seconds left": less than the
/// consumer's `MIN_TIME_TO_START` (shared/src/consumer.rs), so no message may start.
const SECONDS_LEFT: Duration = Duration::from_secs(3);

// ----- where the binaries and moto are ------------------------------------------------------------

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The directory holding the function binaries: `LAMBDA_BIN_DIR`, else the profile dir this test
/// binary was built into (`<target>/debug/deps/e2e-*` -> `<target>/debug`).
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LAMBDA_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// Moto's URL and the binaries' directory, or `None` (skip, with a note saying what is missing
/// and how to get it) when moto or a binary is missing; in CI, a missing one fails the test.
fn prerequisites(test: &str, functions: &[&str]) -> Option<(String, PathBuf)> {
    let dir = bin_dir();
    let missing: Vec<String> = functions
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        let what = format!(
            "the function binaries {} are missing (build them with `cargo build -p {}`, as \
             infra/scripts/test.sh does, or point LAMBDA_BIN_DIR at them)",
            missing.join(", "),
            functions.join(" -p ")
        );
        assert!(
            !in_ci(),
            "{test}: {what}, and CI=true requires this test to run"
        );
        eprintln!("note: {test} skipped: {what}");
        return None;
    }
    match std::env::var("MOTO_URL") {
        Ok(url) if !url.is_empty() => Some((url, dir)),
        _ => {
            let what = "MOTO_URL is not set (`make test` starts moto and sets it)";
            assert!(
                !in_ci(),
                "{test}: {what}, and CI=true requires this test to run"
            );
            eprintln!("note: {test} skipped: {what}");
            None
        }
    }
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn random_id() -> String {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

// ----- the Lambda Runtime API ---------------------------------------------------------------------

const NEXT: &str = "/2018-06-01/runtime/invocation/next";
const INVOCATION: &str = "/2018-06-01/runtime/invocation/";
const INIT_ERROR: &str = "/2018-06-01/runtime/init/error";

struct Invocation {
    id: String,
    deadline: SystemTime,
    event: Bytes,
}

/// What the function posted for an invocation.
#[derive(Debug)]
enum Posted {
    Response(Bytes),
    Error { error_type: String, body: String },
}

#[derive(Default)]
struct ApiState {
    /// Invocations waiting for a `GET .../next`, handed out one at a time.
    next: tokio::sync::Mutex<Option<mpsc::Receiver<Invocation>>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Posted>>>,
    /// How many `GET .../next` arrived: the first one ends the init phase.
    polls: Mutex<usize>,
    init_error: Mutex<Option<String>>,
}

fn text_response(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_owned())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}

async fn runtime_api(
    state: Arc<ApiState>,
    arn: String,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let error_type = header("lambda-runtime-function-error-type");
    if method == hyper::Method::GET && path == NEXT {
        *state.polls.lock().unwrap() += 1;
        let mut next = state.next.lock().await;
        let Some(invocation) = next.as_mut().expect("the receiver").recv().await else {
            // The test is over: nothing more to hand out (Lambda would freeze the sandbox).
            return std::future::pending().await;
        };
        let mut resp = Response::new(Full::new(invocation.event));
        let headers = resp.headers_mut();
        let trace = format!(
            "Root=1-{:08x}-{:024x};Parent={:016x};Sampled=0",
            epoch_ms(SystemTime::now()) / 1000,
            fastrand::u128(..) >> 32,
            fastrand::u64(..)
        );
        for (name, value) in [
            ("content-type", "application/json".to_owned()),
            ("lambda-runtime-aws-request-id", invocation.id),
            (
                "lambda-runtime-deadline-ms",
                epoch_ms(invocation.deadline).to_string(),
            ),
            ("lambda-runtime-invoked-function-arn", arn),
            ("lambda-runtime-trace-id", trace),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        return resp;
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if method == hyper::Method::POST && path == INIT_ERROR {
        *state.init_error.lock().unwrap() =
            Some(format!("{error_type} {}", String::from_utf8_lossy(&body)));
        return text_response(StatusCode::ACCEPTED, r#"{"status":"OK"}"#);
    }
    if method == hyper::Method::POST
        && let Some(rest) = path.strip_prefix(INVOCATION)
        && let Some((id, kind)) = rest.split_once('/')
    {
        let posted = match kind {
            "response" => Posted::Response(body),
            "error" => Posted::Error {
                error_type,
                body: String::from_utf8_lossy(&body).into_owned(),
            },
            _ => return text_response(StatusCode::NOT_FOUND, r#"{"errorMessage":"not found"}"#),
        };
        let Some(waiter) = state.pending.lock().unwrap().remove(id) else {
            return text_response(
                StatusCode::BAD_REQUEST,
                r#"{"errorMessage":"unknown or finished request id","errorType":"InvalidRequestID"}"#,
            );
        };
        let _ = waiter.send(posted);
        return text_response(StatusCode::ACCEPTED, r#"{"status":"OK"}"#);
    }
    text_response(StatusCode::NOT_FOUND, r#"{"errorMessage":"not found"}"#)
}

/// How an invocation ended.
#[derive(Debug)]
enum Invoked {
    /// The function posted a response (the body as JSON).
    Response(Value),
    /// The function posted an error.
    Error { error_type: String, body: String },
    /// No answer by the deadline: Lambda stopped the function, as this harness did.
    TimedOut,
}

/// One function process behind a Runtime API of its own. Dropping it kills the process (by its
/// own handle) and stops the API.
struct Function {
    name: String,
    child: Mutex<Child>,
    log: PathBuf,
    api: Arc<ApiState>,
    invocations: mpsc::Sender<Invocation>,
    server: tokio::task::JoinHandle<()>,
}

impl Function {
    /// Spawns `binary` with an empty environment plus what Lambda sets (`AWS_LAMBDA_RUNTIME_API`
    /// and the rest, as for `provided.al2023`) and `env`; returns once the init phase is over
    /// (its first `GET .../next`), or panics with its log if it fails to get there.
    async fn spawn(binary: &Path, env: &BTreeMap<String, String>, dir: &Path) -> Function {
        Self::start(binary, env, dir)
            .await
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// Like [`Function::spawn`], but an init that fails (the process exits, posts an init error,
    /// or never polls) is the `Err`, with the function's log.
    async fn start(
        binary: &Path,
        env: &BTreeMap<String, String>,
        dir: &Path,
    ) -> Result<Function, String> {
        let name = binary.file_name().unwrap().to_string_lossy().into_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (invocations, receiver) = mpsc::channel(1);
        let api = Arc::new(ApiState {
            next: tokio::sync::Mutex::new(Some(receiver)),
            ..ApiState::default()
        });
        let arn = format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}");
        let server = {
            let api = api.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (api, arn) = (api.clone(), arn.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let (api, arn) = (api.clone(), arn.clone());
                            async move { Ok::<_, Infallible>(runtime_api(api, arn, req).await) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        let log = dir.join(format!("{name}-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .env_clear()
            .envs(lambda_env(&name, port, dir))
            .envs(env)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", binary.display()));
        let function = Function {
            name,
            child: Mutex::new(child),
            log,
            api,
            invocations,
            server,
        };
        let started = std::time::Instant::now();
        loop {
            if *function.api.polls.lock().unwrap() > 0 {
                return Ok(function);
            }
            if let Some(why) = function.failure() {
                return Err(format!("{} failed its init: {why}", function.name));
            }
            if started.elapsed() > INIT_TIMEOUT {
                return Err(format!(
                    "{} did not finish its init within {INIT_TIMEOUT:?}\n{}",
                    function.name,
                    function.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Why the function can no longer answer (it exited or posted an init error), with its log.
    fn failure(&self) -> Option<String> {
        let exited = self.child.lock().unwrap().try_wait().unwrap();
        let init_error = self.api.init_error.lock().unwrap().clone();
        let why = match (exited, init_error) {
            (_, Some(error)) => format!("init error posted: {error}"),
            (Some(status), None) => format!("the process exited ({status})"),
            (None, None) => return None,
        };
        Some(format!("{why}\n{}", self.log_tail()))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(6000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(0);
        format!(
            "--- {} log ({}) ---\n{}",
            self.name,
            self.log.display(),
            &log[start..]
        )
    }

    /// Hands `event` to the function with `Lambda-Runtime-Deadline-Ms` at `deadline`, and waits
    /// for its answer. As Lambda does, a function that has not answered by the deadline is
    /// stopped ([`Invoked::TimedOut`]); one that exits meanwhile fails the test, with its log.
    async fn invoke_until(&self, event: &Value, deadline: SystemTime) -> Invoked {
        let id = random_id();
        let (tx, mut rx) = oneshot::channel();
        self.api.pending.lock().unwrap().insert(id.clone(), tx);
        let invocation = Invocation {
            id,
            deadline,
            event: Bytes::from(event.to_string()),
        };
        assert!(
            self.invocations.send(invocation).await.is_ok(),
            "the Runtime API of {} is gone",
            self.name
        );
        loop {
            tokio::select! {
                posted = &mut rx => return match posted.expect("an answer") {
                    Posted::Response(body) => Invoked::Response(
                        serde_json::from_slice(&body).unwrap_or_else(|e| {
                            panic!("{} answered a response that is not JSON ({e}): {}",
                                   self.name, String::from_utf8_lossy(&body))
                        }),
                    ),
                    Posted::Error { error_type, body } => Invoked::Error { error_type, body },
                },
                () = tokio::time::sleep(Duration::from_millis(25)) => {
                    if let Some(why) = self.failure() {
                        panic!("{} stopped while invoked: {why}", self.name);
                    }
                    if SystemTime::now() >= deadline {
                        let _ = self.child.lock().unwrap().kill();
                        return Invoked::TimedOut;
                    }
                }
            }
        }
    }

    /// [`Function::invoke_until`] with the template's 30 s timeout; the response, or a panic
    /// with what happened instead and the function's log.
    async fn invoke(&self, event: &Value) -> Value {
        let deadline = SystemTime::now() + FUNCTION_TIMEOUT;
        self.response(self.invoke_until(event, deadline).await)
    }

    fn response(&self, invoked: Invoked) -> Value {
        let what = match invoked {
            Invoked::Response(v) => return v,
            Invoked::Error { error_type, body } => format!("posted an error {error_type}: {body}"),
            Invoked::TimedOut => "was stopped at the deadline without answering".to_owned(),
        };
        panic!("{} {what}\n{}", self.name, self.log_tail())
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        self.server.abort();
    }
}

/// What Lambda sets for a `provided.al2023` function (the environment starts empty), plus the
/// `LoggingConfig` of `template.yaml` (JSON, INFO).
fn lambda_env(name: &str, port: u16, dir: &Path) -> BTreeMap<String, String> {
    let dir = dir.display().to_string();
    [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("LANG", "en_US.UTF-8"),
        ("TZ", ":UTC"),
        ("AWS_LAMBDA_RUNTIME_API", &format!("127.0.0.1:{port}")),
        ("AWS_LAMBDA_FUNCTION_NAME", name),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", &format!("/aws/lambda/{name}")),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            &format!("2026/01/01/[$LATEST]{:032x}", fastrand::u128(..)),
        ),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        // The role's credentials (obviously fake: moto accepts any).
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
        ("_HANDLER", "bootstrap"),
        ("LAMBDA_TASK_ROOT", &dir),
        ("LAMBDA_RUNTIME_DIR", &dir),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

// ----- the stack: moto table and queues, the fakes, the functions' environment ------------------

struct Stack {
    sqs: aws_sdk_sqs::Client,
    queues: BTreeMap<Stage, SqsStageQueues>,
    enerflo: MockServer,
    crm: MockServer,
    /// What `template.yaml`'s `Globals` gives every function, with the test's values.
    env: BTreeMap<String, String>,
    bins: PathBuf,
    dir: PathBuf,
}

impl Stack {
    /// A fresh table and a FIFO queue and DLQ per `stage` in moto, fresh fakes, and the
    /// environment of the functions; `None` (skip) as [`prerequisites`] says.
    async fn start(test: &str, stages: &[Stage], functions: &[&str]) -> Option<Stack> {
        let (moto, bins) = prerequisites(test, functions)?;
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&moto)
            .region(aws_config::Region::new(REGION))
            .test_credentials()
            .load()
            .await;
        let name = format!(
            "lambda-{}-{:06x}",
            std::process::id(),
            fastrand::u32(..0xff_ffff)
        );
        create_table(&aws_sdk_dynamodb::Client::new(&sdk), &name)
            .await
            .expect("create the table in moto");
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let mut queues = BTreeMap::new();
        for stage in stages {
            let prefix = format!("{name}-{}", stage.as_str().replace('_', "-"));
            let urls = create_queues(&sqs, &prefix)
                .await
                .expect("create the queues in moto");
            queues.insert(*stage, urls);
        }
        let (enerflo, crm) = (MockServer::start().await, MockServer::start().await);
        let mut env = template_globals();
        for (k, v) in [
            ("ENERFLO_BASE_URL", enerflo.uri()),
            ("ENERFLO_API_KEY", ENERFLO_API_KEY.to_owned()),
            ("WEBHOOK_TOKEN", TOKEN.to_owned()),
            ("CRM_WEBHOOK_URL", format!("{}{EVENTS_PATH}", crm.uri())),
            ("CRM_WEBHOOK_SECRET", CRM_SECRET.to_owned()),
            // Fake, and long enough for the template's MinLength.
            (
                "CRM_INBOUND_TOKEN",
                "test-crm-inbound-token-0123456789abcdef".to_owned(),
            ),
            ("TABLE_NAME", name.clone()),
            ("METRICS_NAMESPACE", format!("EnerfloSync/{name}")),
            ("AWS_ENDPOINT_URL", moto),
        ] {
            env.insert(k.to_owned(), v);
        }
        for (stage, urls) in &queues {
            let prefix = stage.env_prefix();
            env.insert(format!("{prefix}_QUEUE_URL"), urls.url.clone());
            env.insert(format!("{prefix}_DLQ_URL"), urls.dlq_url.clone());
        }
        Some(Stack {
            sqs,
            queues,
            enerflo,
            crm,
            env,
            bins,
            dir: temp_dir("lambda"),
        })
    }

    async fn spawn(&self, function: &str) -> Function {
        Function::spawn(&self.bins.join(function), &self.env, &self.dir).await
    }

    async fn source(&self, stage: Stage) -> EventSource {
        let url = self.queues[&stage].url.clone();
        let arn = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .expect("the queue's ARN");
        EventSource {
            sqs: self.sqs.clone(),
            url,
            arn,
        }
    }

    /// The dead letters of `stage` (peeked at, through the SQS adapter).
    async fn dead_letters(&self, stage: Stage) -> Vec<enerflo_sync::queue::DeadLetter> {
        SqsEventQueue::new(self.sqs.clone(), self.queues.clone())
            .dead_letters(stage, 10)
            .await
            .expect("read the DLQ")
    }
}

/// `template.yaml`'s `Globals.Function.Environment` with every parameter at its default (the
/// empty ones as the empty strings CloudFormation passes), before the test's own values.
fn template_globals() -> BTreeMap<String, String> {
    [
        ("ENERFLO_BASE_URL", "https://enerflo.io"),
        ("CRM_CONNECTOR", "webhook"),
        ("CRM_WEBHOOK_URL", ""),
        ("CRM_WEBHOOK_SECRET", ""),
        ("HUBSPOT_ACCESS_TOKEN", ""),
        ("HUBSPOT_PIPELINE", "default"),
        ("HUBSPOT_CLIENT_SECRET", ""),
        ("HUBSPOT_RATE_LIMIT", "10"),
        ("SALESFORCE_LOGIN_URL", ""),
        ("SALESFORCE_CLIENT_ID", ""),
        ("SALESFORCE_CLIENT_SECRET", ""),
        ("SALESFORCE_USERNAME", ""),
        ("SALESFORCE_PRIVATE_KEY", ""),
        ("SALESFORCE_API_VERSION", "66.0"),
        ("SALESFORCE_API_BUDGET_PERCENT", "50"),
        ("SALESFORCE_ORG_ID", ""),
        ("MONDAY_API_TOKEN", ""),
        ("MONDAY_API_URL", "https://api.monday.com/v2"),
        ("MONDAY_API_VERSION", "2026-10"),
        ("MONDAY_SIGNING_SECRET", ""),
        ("MONDAY_WEBHOOK_TOKEN", ""),
        ("MONDAY_CUSTOMERS_BOARD", ""),
        ("MONDAY_PROJECTS_BOARD", ""),
        ("MONDAY_DAILY_CALL_BUDGET", "900"),
        ("MONDAY_RATE_LIMIT", "60"),
        ("CRM_INCLUDE_RAW", "false"),
        ("HUBSPOT_PUBLIC_URL", ""),
        ("MAX_BODY_BYTES", "1048576"),
        ("RETRY_MAX_ATTEMPTS", "18"),
        ("RUST_LOG", "info"),
        ("MILESTONE_KEY_MAP", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

// ----- API Gateway (HTTP API, payload 2.0) --------------------------------------------------------

/// The event API Gateway hands the function for `POST {path}` with `body` (JSON).
fn http_api_event(path: &str, body: &str) -> Value {
    http_api_event_with_query(path, "", body)
}

/// [`http_api_event`] with a query string (`a=1&b=2`, as the URL carries it).
fn http_api_event_with_query(path: &str, query: &str, body: &str) -> Value {
    let host = "abc123defg.execute-api.us-east-1.amazonaws.com";
    let now = epoch_ms(SystemTime::now());
    let route = "POST /enerflo/webhooks/{token}";
    let mut event = json!({
        "version": "2.0",
        "routeKey": route,
        "rawPath": path,
        "rawQueryString": query,
        "headers": {
            "accept": "*/*",
            "content-length": body.len().to_string(),
            "content-type": "application/json",
            "host": host,
            "user-agent": "Enerflo-Webhooks/1.0",
            "x-amzn-trace-id": format!("Root=1-{:08x}-{:024x}", now / 1000, fastrand::u128(..) >> 32),
            "x-forwarded-for": "203.0.113.10",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https"
        },
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "abc123defg",
            "domainName": host,
            "domainPrefix": "abc123defg",
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
                "userAgent": "Enerflo-Webhooks/1.0"
            },
            "requestId": format!("{:x}=", fastrand::u64(..)),
            "routeKey": route,
            "stage": "$default",
            "time": "01/Dec/2026:12:00:00 +0000",
            "timeEpoch": now
        },
        "pathParameters": {"token": path.rsplit('/').next().unwrap_or_default()},
        "body": body,
        "isBase64Encoded": false
    });
    if !query.is_empty() {
        // Absent, not null, without a query string.
        event["queryStringParameters"] = form_pairs(query);
    }
    event
}

/// `a=1&b=2` as API Gateway's `queryStringParameters` (plain values only).
fn form_pairs(query: &str) -> Value {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// An HTTP API response as API Gateway reads it: status, content type and the body as JSON.
fn http_api_answer(response: &Value) -> (u64, String, Value) {
    let status = response["statusCode"].as_u64().expect("statusCode");
    let content_type = response["headers"]["content-type"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let raw = response["body"].as_str().unwrap_or_default();
    let body = if response["isBase64Encoded"] == true {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .expect("a base64 body");
        String::from_utf8(bytes).expect("a UTF-8 body")
    } else {
        raw.to_owned()
    };
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, content_type, body)
}

/// Posts `body` to the webhook function as Enerflo through API Gateway would; the answer.
async fn post_webhook(webhook: &Function, body: &str) -> (u64, Value) {
    let event = http_api_event(&format!("/enerflo/webhooks/{TOKEN}"), body);
    let (status, content_type, answer) = http_api_answer(&webhook.invoke(&event).await);
    assert_eq!(content_type, "application/json", "{answer}");
    (status, answer)
}

/// Posts each body and asserts it was queued (202 `queued`).
async fn enqueue(webhook: &Function, bodies: &[String]) {
    for body in bodies {
        let (status, answer) = post_webhook(webhook, body).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (202, Some("queued")),
            "{answer}"
        );
    }
}

// ----- the SQS event source mapping ---------------------------------------------------------------

/// What Lambda's event source mapping does for one FIFO queue: receive, invoke with the batch,
/// delete what the function did not report as failed.
struct EventSource {
    sqs: aws_sdk_sqs::Client,
    url: String,
    arn: String,
}

impl EventSource {
    /// Receives until `n` messages are in hand (FIFO may hand them out a few at a time), hidden
    /// for the queue's visibility timeout, in the order SQS gave them.
    async fn receive(&self, n: usize) -> Vec<Message> {
        let mut out: Vec<Message> = Vec::new();
        let started = std::time::Instant::now();
        while out.len() < n {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "only {} of {n} messages received from {}",
                out.len(),
                self.url
            );
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages((n - out.len()).min(10) as i32)
                .visibility_timeout(QUEUE_VISIBILITY_SECS)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive")
                .messages
                .unwrap_or_default();
            if got.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            out.extend(got);
        }
        out
    }

    /// The SQS event Lambda builds from `batch`: one record per message, as the event source
    /// mapping of a FIFO queue sends it.
    fn event(&self, batch: &[Message]) -> Value {
        let records: Vec<Value> = batch
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, Value> = m
                    .attributes()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str().to_owned(), json!(v)))
                    .collect();
                let message_attributes: serde_json::Map<String, Value> = m
                    .message_attributes()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| {
                        let mut a = json!({
                            "stringListValues": [],
                            "binaryListValues": [],
                            "dataType": v.data_type(),
                        });
                        if let Some(s) = v.string_value() {
                            a["stringValue"] = json!(s);
                        }
                        if let Some(b) = v.binary_value() {
                            a["binaryValue"] =
                                json!(base64::engine::general_purpose::STANDARD.encode(b.as_ref()));
                        }
                        (k.clone(), a)
                    })
                    .collect();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": message_attributes,
                    "md5OfBody": m.md5_of_body(),
                    "md5OfMessageAttributes": m.md5_of_message_attributes(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.arn,
                    "awsRegion": REGION,
                })
            })
            .collect();
        json!({ "Records": records })
    }

    /// Invokes `function` with `batch` until `deadline`, then deletes every message not in
    /// `batchItemFailures`, as Lambda does with `ReportBatchItemFailures`; the ids reported.
    async fn deliver_until(
        &self,
        function: &Function,
        batch: &[Message],
        deadline: SystemTime,
    ) -> Vec<String> {
        let invoked = function.invoke_until(&self.event(batch), deadline).await;
        let response = function.response(invoked);
        let failures: Vec<String> = response["batchItemFailures"]
            .as_array()
            .unwrap_or_else(|| panic!("no batchItemFailures in {response}"))
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap_or_default().to_owned())
            .collect();
        let ids: BTreeSet<&str> = batch.iter().filter_map(|m| m.message_id()).collect();
        // Lambda retries the whole batch when an identifier is not one of the batch's messages.
        assert!(
            failures.iter().all(|f| ids.contains(f.as_str())),
            "{failures:?} names a message not in the batch {ids:?}"
        );
        for m in batch {
            if !failures.iter().any(|f| Some(f.as_str()) == m.message_id()) {
                self.sqs
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .expect("delete");
            }
        }
        failures
    }

    /// [`EventSource::deliver_until`] with the template's 30 s function timeout.
    async fn deliver(&self, function: &Function, batch: &[Message]) -> Vec<String> {
        let deadline = SystemTime::now() + FUNCTION_TIMEOUT;
        self.deliver_until(function, batch, deadline).await
    }

    /// Makes `batch` visible again at once: what the visibility timeout running out does, without
    /// waiting the queue's 180 s.
    async fn expire(&self, batch: &[Message]) {
        for m in batch {
            self.sqs
                .change_message_visibility()
                .queue_url(&self.url)
                .receipt_handle(m.receipt_handle().unwrap())
                .visibility_timeout(0)
                .send()
                .await
                .expect("change visibility");
        }
    }

    /// Messages in the queue: (visible, in flight).
    async fn depth(&self) -> (u64, u64) {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap_or_default();
        let count = |name: QueueAttributeName| {
            attributes
                .get(&name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX)
        };
        (
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }
}

fn ids(batch: &[Message]) -> Vec<String> {
    batch
        .iter()
        .map(|m| m.message_id().unwrap().to_owned())
        .collect()
}

fn attribute(m: &Message, name: &str) -> String {
    m.message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
        .unwrap_or_default()
        .to_owned()
}

/// The deal a project message (or CRM event) is about.
fn deal_of(m: &Message) -> String {
    let body: Value = serde_json::from_str(m.body().unwrap_or_default()).unwrap();
    body["payload"]["deal"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Project `n` with `panels` modules in its signed design.
fn submission_with_panels(n: u64, panels: u64) -> String {
    let mut v = submission_json(n);
    v["payload"]["proposal"]["pricingOutputs"]["design"]["arrays"][0]["moduleCount"] =
        json!(panels);
    v.to_string()
}

/// The CRM events that were accepted (2xx), per deal, in arrival order.
async fn accepted_per_deal(crm: &MockServer) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in crm.received_requests().await.unwrap_or_default() {
        let event: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let deal = event["enerflo"]["deal_id"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        *out.entry(deal).or_insert(0) += 1;
    }
    out
}

// ----- the webhook function -----------------------------------------------------------------------

#[tokio::test]
async fn webhook_function_answers_api_gateway_and_enqueues_the_sample_submission_in_sqs() {
    let stages = [Stage::Project, Stage::Status];
    let Some(stack) = Stack::start("lambda webhook", &stages, &["enerflo-webhook"]).await else {
        return;
    };
    let webhook = stack.spawn("enerflo-webhook").await;
    let sample = fixture("v2-deal.projectSubmitted.json");

    // WHEN Enerflo posts the sample submission through API Gateway, twice (it retries)
    let first = post_webhook(&webhook, &sample).await;
    let again = post_webhook(&webhook, &sample).await;
    // ... and something probes the route with a wrong token
    let probe = http_api_event("/enerflo/webhooks/not-the-token-0123456789abcdef", &sample);
    let (probe_status, _, _) = http_api_answer(&webhook.invoke(&probe).await);

    // THEN the first is acknowledged as queued for stage 2, the second as a duplicate
    assert_eq!(first.0, 202, "{}", first.1);
    assert_eq!(first.1["status"], "queued", "{}", first.1);
    assert_eq!(first.1["stage"], "project", "{}", first.1);
    assert_eq!(again.0, 202, "{}", again.1);
    assert_eq!(again.1["status"], "duplicate", "{}", again.1);
    assert_eq!(probe_status, 404, "a wrong token is not found");

    // WHEN the same body arrives without a text content type, which API Gateway hands over
    // base64-encoded
    let mut encoded = http_api_event(&format!("/enerflo/webhooks/{TOKEN}"), "");
    encoded["headers"]
        .as_object_mut()
        .unwrap()
        .remove("content-type");
    encoded["headers"]["content-length"] = json!(sample.len().to_string());
    encoded["body"] = json!(base64::engine::general_purpose::STANDARD.encode(&sample));
    encoded["isBase64Encoded"] = json!(true);
    let (status, _, answer) = http_api_answer(&webhook.invoke(&encoded).await);
    // THEN the function read the same body: the same event, a duplicate
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("duplicate")),
        "{answer}"
    );

    // ... and the project queue in moto holds exactly one message: the body as Enerflo sent it,
    // in the deal's FIFO group, with the metadata the consumer reads
    let source = stack.source(Stage::Project).await;
    assert_eq!(source.depth().await, (1, 0));
    let got = source.receive(1).await;
    let m = &got[0];
    assert_eq!(m.body(), Some(sample.as_str()));
    let group = format!("deal:{SAMPLE_DEAL}");
    assert_eq!(attribute(m, "stage"), "project");
    assert_eq!(attribute(m, "event"), "deal.projectSubmitted");
    assert_eq!(attribute(m, "group"), group);
    assert!(!attribute(m, "dedupe_key").is_empty());
    assert!(!attribute(m, "received_at").is_empty());
    let system = m.attributes().unwrap();
    assert_eq!(
        system.get(&MessageSystemAttributeName::MessageGroupId),
        Some(&group)
    );
    assert_eq!(
        system
            .get(&MessageSystemAttributeName::MessageDeduplicationId)
            .map(String::is_empty),
        Some(false)
    );
    assert_eq!(source.depth().await, (0, 1), "nothing else was queued");

    // WHEN Enerflo posts the docs' update_install, which names its event only in the
    // subscription URL's query string
    let docs = fixture("v1-update_install.docs-variant.json");
    let path = format!("/enerflo/webhooks/{TOKEN}");
    let event = http_api_event_with_query(&path, "event=update_install", &docs);
    let (status, _, answer) = http_api_answer(&webhook.invoke(&event).await);

    // THEN the query string reached the function: it was queued for the status stage
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["stage"], "status", "{answer}");
    let status_queue = stack.source(Stage::Status).await;
    let got = status_queue.receive(1).await;
    assert_eq!(attribute(&got[0], "event"), "update_install");
    assert_eq!(got[0].body(), Some(docs.as_str()));
}

// ----- the consumers ------------------------------------------------------------------------------

#[tokio::test]
async fn project_function_writes_the_crm_once_per_event_even_when_sqs_delivers_twice() {
    let functions = ["enerflo-webhook", "enerflo-project-to-crm"];
    let Some(stack) = Stack::start("lambda project", &[Stage::Project], &functions).await else {
        return;
    };
    finds_installs(&stack.enerflo).await;
    let arrivals = crm_accepts(&stack.crm, CrmIds::per_deal()).await;
    let (webhook, consumer) = (
        stack.spawn(functions[0]).await,
        stack.spawn(functions[1]).await,
    );
    let source = stack.source(Stage::Project).await;

    // GIVEN three submissions accepted by the webhook function
    enqueue(&webhook, &[submission(2), submission(3), submission(4)]).await;

    // WHEN the event source hands them to the consumer in one batch
    let batch = source.receive(3).await;
    let failures = source.deliver(&consumer, &batch).await;

    // THEN none failed, the queue is empty, and the CRM got one hydrated write per project
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(source.depth().await, (0, 0));
    let events: Vec<Value> = arrivals.all().into_iter().map(|(e, _)| e).collect();
    assert_eq!(events.len(), 3, "{events:#?}");
    for n in 2..=4 {
        let e = events
            .iter()
            .find(|e| e["enerflo"]["deal_id"] == deal_id(n).as_str())
            .unwrap_or_else(|| panic!("no CRM write for project {n}: {events:#?}"));
        assert_eq!(e["type"], "project.submitted");
        assert_eq!(e["enerflo"]["install_id"], 700_000 + n);
        assert_eq!(
            e["data"]["customer"]["email"],
            "pat.placeholder@example.com"
        );
    }

    // WHEN a resubmission is delivered twice (SQS is at least once: here the delete after the
    // first invocation is lost, so the message comes back when its visibility times out)
    enqueue(&webhook, &[submission_with_panels(2, 24)]).await;
    let once = source.receive(1).await;
    let invoked = consumer.invoke(&source.event(&once)).await;
    assert_eq!(invoked["batchItemFailures"], json!([]), "{invoked}");
    source.expire(&once).await;
    let twice = source.receive(1).await;
    assert_eq!(ids(&twice), ids(&once), "the same message again");
    assert_eq!(
        twice[0]
            .attributes()
            .unwrap()
            .get(&MessageSystemAttributeName::ApproximateReceiveCount)
            .map(String::as_str),
        Some("2")
    );
    let failures = source.deliver(&consumer, &twice).await;

    // THEN the CRM got that change once, as an update of the linked record
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(source.depth().await, (0, 0));
    let events: Vec<Value> = arrivals.all().into_iter().map(|(e, _)| e).collect();
    assert_eq!(
        events.len(),
        4,
        "one write for the resubmission: {events:#?}"
    );
    let update = &events[3];
    assert_eq!(update["enerflo"]["deal_id"], deal_id(2).as_str());
    assert_eq!(update["crm_id"], format!("crm-{}", deal_id(2)));
    assert_eq!(update["data"]["resubmission"], true);
    assert_eq!(update["data"]["system"]["panel_count"], 24);
}

#[tokio::test]
async fn status_function_writes_the_crm_once_per_status_change_in_order() {
    let functions = ["enerflo-webhook", "enerflo-status-to-crm"];
    let Some(stack) = Stack::start("lambda status", &[Stage::Status], &functions).await else {
        return;
    };
    let arrivals = crm_accepts(&stack.crm, "crm-proj-1").await;
    let (webhook, consumer) = (
        stack.spawn(functions[0]).await,
        stack.spawn(functions[1]).await,
    );
    let source = stack.source(Stage::Status).await;

    // GIVEN Enerflo's update_install sample (status 321), then the install completed, then a
    // copy of that completion with another timestamp (no change)
    let completed = |at: &str| {
        json!({"webhook_event": "update_install", "id": 700001,
               "status": {"id": 6, "name": "Completed"},
               "timestamps": {"updated_at": at, "timezone": "UTC"}})
        .to_string()
    };
    let bodies = [
        fixture("v1-update_install.json"),
        completed("2030-04-01 10:00:00"),
        completed("2030-04-01 10:05:00"),
    ];
    enqueue(&webhook, &bodies).await;

    // WHEN the event source hands the three (one FIFO group) to the consumer
    let batch = source.receive(3).await;
    assert!(
        batch
            .iter()
            .all(|m| attribute(m, "group") == "install:700001"),
        "one group"
    );
    let failures = source.deliver(&consumer, &batch).await;

    // THEN none failed, and the CRM got the two changes, in order, once each
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(source.depth().await, (0, 0));
    let events: Vec<Value> = arrivals.all().into_iter().map(|(e, _)| e).collect();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(events.iter().all(|e| e["type"] == "status.changed"));
    assert_eq!(
        events[0]["data"]["status"],
        json!({"id": 321, "name": "Example Custom Status"})
    );
    assert_eq!(
        events[1]["data"]["status"],
        json!({"id": 6, "name": "Completed"})
    );
    assert_eq!(events[1]["data"]["completed"], true);
    assert_eq!(
        events[1]["data"]["previous"],
        json!({"id": 321, "name": "Example Custom Status"})
    );
}

#[tokio::test]
async fn a_failed_first_message_of_a_group_returns_its_group_while_other_groups_succeed() {
    let functions = ["enerflo-webhook", "enerflo-project-to-crm"];
    let Some(stack) = Stack::start("lambda group", &[Stage::Project], &functions).await else {
        return;
    };
    finds_installs(&stack.enerflo).await;
    // The CRM fails the first write of project 2 (a 500: transient), then accepts everything
    Mock::given(method("POST"))
        .and(path(EVENTS_PATH))
        .and(body_partial_json(
            json!({"enerflo": {"deal_id": deal_id(2)}}),
        ))
        .respond_with(ResponseTemplate::new(500).set_body_string("internal error"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&stack.crm)
        .await;
    let arrivals = crm_accepts(&stack.crm, CrmIds::per_deal()).await;
    let (webhook, consumer) = (
        stack.spawn(functions[0]).await,
        stack.spawn(functions[1]).await,
    );
    let source = stack.source(Stage::Project).await;

    // GIVEN project 2 submitted, project 3 submitted, then project 2 resubmitted (24 panels)
    enqueue(
        &webhook,
        &[submission(2), submission(3), submission_with_panels(2, 24)],
    )
    .await;
    let batch = source.receive(3).await;
    let (group_a, group_b): (Vec<Message>, Vec<Message>) = batch
        .iter()
        .cloned()
        .partition(|m| deal_of(m) == deal_id(2));
    assert_eq!((group_a.len(), group_b.len()), (2, 1));

    // WHEN the batch is invoked and the CRM fails project 2's first write
    let failures = source.deliver(&consumer, &batch).await;

    // THEN project 2's first message and the later one of its group come back as failures (in
    // batch order), project 3 succeeded and was deleted
    let expected: Vec<String> = batch
        .iter()
        .filter(|m| deal_of(m) == deal_id(2))
        .map(|m| m.message_id().unwrap().to_owned())
        .collect();
    assert_eq!(failures, expected);
    assert_eq!(
        source.depth().await,
        (0, 2),
        "project 2's two wait, invisible"
    );
    assert_eq!(
        accepted_per_deal(&stack.crm).await,
        BTreeMap::from([(deal_id(2), 1), (deal_id(3), 1)]),
        "one (failed) try of project 2's first message, none of the held one"
    );
    let accepted: Vec<Value> = arrivals.all().into_iter().map(|(e, _)| e).collect();
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    assert_eq!(accepted[0]["enerflo"]["deal_id"], deal_id(3).as_str());

    // WHEN their visibility runs out and the event source hands them over again
    source.expire(&group_a).await;
    let retry = source.receive(2).await;
    assert_eq!(ids(&retry), ids(&group_a), "in their FIFO order");
    let failures = source.deliver(&consumer, &retry).await;

    // THEN project 2 reaches the CRM in order: the submission, then the resubmission's update
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(source.depth().await, (0, 0));
    let accepted: Vec<Value> = arrivals.all().into_iter().map(|(e, _)| e).collect();
    assert_eq!(accepted.len(), 3, "{accepted:#?}");
    assert_eq!(accepted[1]["enerflo"]["deal_id"], deal_id(2).as_str());
    assert_eq!(accepted[1]["data"]["system"]["panel_count"], 20);
    assert_eq!(accepted[2]["enerflo"]["deal_id"], deal_id(2).as_str());
    assert_eq!(accepted[2]["data"]["system"]["panel_count"], 24);
    assert_eq!(accepted[2]["crm_id"], format!("crm-{}", deal_id(2)));
}

#[tokio::test]
async fn a_batch_invoked_with_only_seconds_left_hands_every_message_back_untried() {
    let functions = ["enerflo-webhook", "enerflo-project-to-crm"];
    let Some(stack) = Stack::start("lambda seconds left", &[Stage::Project], &functions).await
    else {
        return;
    };
    finds_installs(&stack.enerflo).await;
    let arrivals = crm_accepts(&stack.crm, CrmIds::per_deal()).await;
    let (webhook, consumer) = (
        stack.spawn(functions[0]).await,
        stack.spawn(functions[1]).await,
    );
    let source = stack.source(Stage::Project).await;
    enqueue(&webhook, &[submission(2), submission(3)]).await;
    let batch = source.receive(2).await;

    // WHEN the batch is invoked with a deadline only seconds away
    let deadline = SystemTime::now() + SECONDS_LEFT;
    let invoked = consumer.invoke_until(&source.event(&batch), deadline).await;

    // THEN the function answered in time (it was not stopped), reporting both messages, and
    // neither Enerflo nor the CRM was called
    let Invoked::Response(answer) = invoked else {
        panic!(
            "expected a response, got {invoked:?}\n{}",
            consumer.log_tail()
        );
    };
    let reported: Vec<&str> = answer["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap())
        .collect();
    assert_eq!(reported, ids(&batch), "{answer}");
    assert_eq!(stack.enerflo.received_requests().await.unwrap().len(), 0);
    assert_eq!(arrivals.len(), 0);

    // ... and once their visibility runs out, the same process delivers each once
    source.expire(&batch).await;
    let again = source.receive(2).await;
    assert_eq!(
        source.deliver(&consumer, &again).await,
        Vec::<String>::new()
    );
    assert_eq!(
        accepted_per_deal(&stack.crm).await,
        BTreeMap::from([(deal_id(2), 1), (deal_id(3), 1)])
    );
    assert!(stack.dead_letters(Stage::Project).await.is_empty());
}

/// The fake CRM, answering every write `crm-{deal}` once `hold_until` (if set) has passed.
struct AnswersAt(Arc<Mutex<Option<SystemTime>>>);

impl Respond for AnswersAt {
    fn respond(&self, req: &MockRequest) -> ResponseTemplate {
        let event: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let deal = event["enerflo"]["deal_id"].as_str().unwrap_or("unknown");
        let hold = self
            .0
            .lock()
            .unwrap()
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        ResponseTemplate::new(200)
            .set_body_json(json!({"crm_id": format!("crm-{deal}")}))
            .set_delay(hold)
    }
}

#[tokio::test]
async fn a_batch_that_runs_out_of_time_returns_the_messages_it_did_not_start() {
    let functions = ["enerflo-webhook", "enerflo-project-to-crm"];
    let Some(stack) = Stack::start("lambda out of time", &[Stage::Project], &functions).await
    else {
        return;
    };
    finds_installs(&stack.enerflo).await;
    let hold_until = Arc::new(Mutex::new(None));
    Mock::given(method("POST"))
        .and(path(EVENTS_PATH))
        .respond_with(AnswersAt(hold_until.clone()))
        .mount(&stack.crm)
        .await;
    let (webhook, consumer) = (
        stack.spawn(functions[0]).await,
        stack.spawn(functions[1]).await,
    );
    let source = stack.source(Stage::Project).await;
    enqueue(&webhook, &[submission(2), submission(3), submission(4)]).await;
    let batch = source.receive(3).await;

    // WHEN the batch is invoked with 12 s left, and the CRM answers the first write only when
    // 4 s are left: less than a message needs to start (shared/src/consumer.rs MIN_TIME_TO_START)
    let deadline = SystemTime::now() + Duration::from_secs(12);
    *hold_until.lock().unwrap() = Some(deadline - Duration::from_secs(4));
    let failures = source.deliver_until(&consumer, &batch, deadline).await;

    // THEN the function answered before the deadline (deliver_until panics on a timeout): the
    // first message done and deleted, the two it did not start reported
    assert_eq!(failures, ids(&batch[1..]));
    assert_eq!(
        accepted_per_deal(&stack.crm).await,
        BTreeMap::from([(deal_of(&batch[0]), 1)])
    );
    assert_eq!(source.depth().await, (0, 2));

    // ... and with time enough, the other two are delivered once each
    *hold_until.lock().unwrap() = None;
    source.expire(&batch[1..]).await;
    let rest = source.receive(2).await;
    assert_eq!(source.deliver(&consumer, &rest).await, Vec::<String>::new());
    assert_eq!(
        accepted_per_deal(&stack.crm).await,
        BTreeMap::from([(deal_id(2), 1), (deal_id(3), 1), (deal_id(4), 1)])
    );
}

#[tokio::test]
async fn a_permanent_crm_rejection_lands_in_the_dlq_with_its_reason() {
    let functions = ["enerflo-webhook", "enerflo-project-to-crm"];
    let Some(stack) = Stack::start("lambda dlq", &[Stage::Project], &functions).await else {
        return;
    };
    finds_installs(&stack.enerflo).await;
    Mock::given(method("POST"))
        .and(path(EVENTS_PATH))
        .respond_with(
            ResponseTemplate::new(422)
                .set_body_json(json!({"error": "missing required field: owner"})),
        )
        .mount(&stack.crm)
        .await;
    let (webhook, consumer) = (
        stack.spawn(functions[0]).await,
        stack.spawn(functions[1]).await,
    );
    let source = stack.source(Stage::Project).await;
    enqueue(&webhook, &[submission(2)]).await;

    // WHEN the consumer is invoked and the CRM rejects the write (422: no retry can fix it)
    let batch = source.receive(1).await;
    let failures = source.deliver(&consumer, &batch).await;

    // THEN the message is done with (not reported, so deleted from the source queue) after one
    // try, and waits in the DLQ with the CRM's reason and the body kept for replay
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(source.depth().await, (0, 0));
    assert_eq!(stack.crm.received_requests().await.unwrap().len(), 1);
    let dead = stack.dead_letters(Stage::Project).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let d = &dead[0];
    assert!(d.reason.contains("422"), "{}", d.reason);
    assert!(
        d.reason.contains("missing required field: owner"),
        "{}",
        d.reason
    );
    assert_eq!(d.attempts, 1);
    assert_eq!(d.body, submission(2));
    assert_eq!(d.message_id, batch[0].message_id().unwrap());
    assert_eq!(
        d.attributes.get("group"),
        Some(&format!("deal:{}", deal_id(2)))
    );
}

#[tokio::test]
async fn a_consumer_without_its_crm_settings_fails_its_init_naming_them() {
    let Some(stack) = Stack::start(
        "lambda init",
        &[Stage::Project],
        &["enerflo-project-to-crm"],
    )
    .await
    else {
        return;
    };
    let mut env = stack.env.clone();
    env.insert("CRM_WEBHOOK_URL".into(), String::new());

    // WHEN the consumer starts with the template's empty CrmWebhookUrl default
    let started =
        Function::start(&stack.bins.join("enerflo-project-to-crm"), &env, &stack.dir).await;

    // THEN its init fails (Lambda would report it and retry the cold start) naming the variable
    let Err(why) = started else {
        panic!("the consumer started without a CRM URL");
    };
    assert!(why.contains("CRM_WEBHOOK_URL"), "{why}");
}

#[tokio::test]
async fn the_event_source_builds_fifo_records_as_lambda_does() {
    // The harness itself: a record carries what Lambda's FIFO event source mapping sends, so the
    // consumers above are fed what they get in AWS.
    let Some(stack) = Stack::start("lambda records", &[Stage::Project], &["enerflo-webhook"]).await
    else {
        return;
    };
    let webhook = stack.spawn("enerflo-webhook").await;
    enqueue(&webhook, &[submission(2)]).await;
    let source = stack.source(Stage::Project).await;
    let batch = source.receive(1).await;
    let event = source.event(&batch);
    let record = &event["Records"][0];
    assert_eq!(record["eventSource"], "aws:sqs");
    assert_eq!(record["eventSourceARN"], source.arn.as_str());
    assert!(source.arn.ends_with(".fifo"), "{}", source.arn);
    for name in [
        "ApproximateReceiveCount",
        "MessageGroupId",
        "MessageDeduplicationId",
        "SentTimestamp",
        "SequenceNumber",
    ] {
        assert!(record["attributes"][name].is_string(), "{name}: {record:#}");
    }
    assert_eq!(record["attributes"]["ApproximateReceiveCount"], "1");
    assert_eq!(
        record["messageAttributes"]["stage"],
        json!({"stringValue": "project", "stringListValues": [], "binaryListValues": [],
               "dataType": "String"})
    );
}

#[tokio::test]
async fn a_crm_failing_past_the_retry_budget_dead_letters_even_across_cold_starts() {
    let functions = ["enerflo-webhook", "enerflo-project-to-crm"];
    let Some(mut stack) = Stack::start("lambda budget", &[Stage::Project], &functions).await else {
        return;
    };
    stack.env.insert("RETRY_MAX_ATTEMPTS".into(), "2".into());
    finds_installs(&stack.enerflo).await;
    Mock::given(method("POST"))
        .and(path(EVENTS_PATH))
        .respond_with(ResponseTemplate::new(503).set_body_string("maintenance"))
        .mount(&stack.crm)
        .await;
    let webhook = stack.spawn(functions[0]).await;
    let source = stack.source(Stage::Project).await;
    enqueue(&webhook, &[submission(2)]).await;

    // WHEN the CRM answers 503 to a first invocation
    let consumer = stack.spawn(functions[1]).await;
    let batch = source.receive(1).await;
    assert_eq!(source.deliver(&consumer, &batch).await, ids(&batch));

    // ... and to the next one, in a new sandbox (a cold start: the first process is gone)
    drop(consumer);
    let consumer = stack.spawn(functions[1]).await;
    source.expire(&batch).await;
    let again = source.receive(1).await;
    let failures = source.deliver(&consumer, &again).await;

    // THEN the second try used up the budget of 2 (counted in the table, not in the process):
    // the message left the source queue for the DLQ, with the last error as the reason
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(source.depth().await, (0, 0));
    assert_eq!(stack.crm.received_requests().await.unwrap().len(), 2);
    let dead = stack.dead_letters(Stage::Project).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert!(
        dead[0]
            .reason
            .contains("retry budget of 2 attempts exhausted"),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].reason.contains("503"), "{}", dead[0].reason);
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].body, submission(2));
}

#[test]
fn the_functions_get_every_variable_template_globals_sets() {
    // The names under `Globals.Function.Environment.Variables` of template.yaml.
    let template =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"))
            .expect("template.yaml");
    let globals = template
        .split_once("\nGlobals:")
        .and_then(|(_, rest)| rest.split_once("\nResources:"))
        .expect("a Globals section before Resources")
        .0;
    let variables = globals
        .split_once("      Variables:\n")
        .expect("Globals.Function.Environment.Variables")
        .1;
    let names: Vec<&str> = variables
        .lines()
        .filter_map(|l| l.strip_prefix("        "))
        .filter(|l| !l.starts_with('#') && !l.starts_with(' '))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name))
        .collect();
    assert!(names.len() > 20, "{names:?}");

    // What Stack::start sets: the defaults of template_globals, its own values, and the queues.
    let mut ours: BTreeSet<String> = template_globals().into_keys().collect();
    for name in [
        "ENERFLO_API_KEY",
        "WEBHOOK_TOKEN",
        "CRM_INBOUND_TOKEN",
        "TABLE_NAME",
        "METRICS_NAMESPACE",
    ] {
        ours.insert(name.to_owned());
    }
    for stage in Stage::ALL {
        ours.insert(format!("{}_QUEUE_URL", stage.env_prefix()));
        ours.insert(format!("{}_DLQ_URL", stage.env_prefix()));
    }
    let missing: Vec<&&str> = names.iter().filter(|n| !ours.contains(**n)).collect();
    assert!(
        missing.is_empty(),
        "template.yaml gives every function {missing:?}: add them to template_globals"
    );
}
