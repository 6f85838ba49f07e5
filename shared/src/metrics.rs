//! What happened, per stage, as numbers: events received, queued, duplicate, delivered,
//! unchanged, echo, retried, dead-lettered (and the other outcomes), and every Enerflo and CRM
//! call's latency and status class.
//!
//! In Lambda (`METRICS_NAMESPACE` set, as `template.yaml` does) each one is a CloudWatch Embedded
//! Metric Format line on stdout: CloudWatch Logs turns it into metrics, with no API call and no
//! permission beyond writing the function's own log. Every process also keeps the counts, which
//! the local runner serves at `/metrics` in Prometheus text format ([`prometheus_text`]).
//!
//! Lines carry stage names, targets and status classes only: never an id, a body or a secret.
//! They have no `level` field, so Lambda reads them as INFO (`template.yaml` never filters above).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::http::router::{InboundRoute, RouteParams};
use crate::http::{HttpRequest, HttpResponse};

/// The variable naming the CloudWatch namespace; unset or empty: no EMF lines.
pub const NAMESPACE_VAR: &str = "METRICS_NAMESPACE";

/// The stage of work done outside any [`scope`].
pub const UNSCOPED: &str = "other";

/// The stage of webhook events no stage handles (counted as [`Event::Ignored`]).
pub const UNROUTED: &str = "unrouted";

/// What happened to an event at a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// The webhook accepted an event routed to the stage.
    Received,
    /// ... and enqueued it.
    Queued,
    /// ... and kept it for a stage not deployed here.
    Parked,
    /// ... and recognised it as a delivery it already had.
    Duplicate,
    /// The webhook accepted an event no stage handles.
    Ignored,
    /// Pushed to the CRM.
    Delivered,
    Unchanged,
    Echo,
    Incomplete,
    Stale,
    NoCompletion,
    /// A try failed transiently; the message comes back later.
    Retried,
    DeadLettered,
}

impl Event {
    pub const ALL: [Event; 13] = [
        Event::Received,
        Event::Queued,
        Event::Parked,
        Event::Duplicate,
        Event::Ignored,
        Event::Delivered,
        Event::Unchanged,
        Event::Echo,
        Event::Incomplete,
        Event::Stale,
        Event::NoCompletion,
        Event::Retried,
        Event::DeadLettered,
    ];

    /// The CloudWatch metric name.
    pub fn metric(self) -> &'static str {
        match self {
            Self::Received => "Received",
            Self::Queued => "Queued",
            Self::Parked => "Parked",
            Self::Duplicate => "Duplicate",
            Self::Ignored => "Ignored",
            Self::Delivered => "Delivered",
            Self::Unchanged => "Unchanged",
            Self::Echo => "Echo",
            Self::Incomplete => "Incomplete",
            Self::Stale => "Stale",
            Self::NoCompletion => "NoCompletion",
            Self::Retried => "Retried",
            Self::DeadLettered => "DeadLettered",
        }
    }

    /// The Prometheus label (and the event log's outcome word, where there is one).
    pub fn label(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Queued => "queued",
            Self::Parked => "parked",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::Delivered => "delivered",
            Self::Unchanged => "unchanged",
            Self::Echo => "echo",
            Self::Incomplete => "incomplete",
            Self::Stale => "stale",
            Self::NoCompletion => "no_completion",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
        }
    }

    /// The event of a stage outcome (`crate::consumer::OutcomeKind::as_str`).
    pub fn from_outcome(outcome: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.label() == outcome)
    }
}

/// Who a call went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Enerflo,
    Crm,
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Self::Enerflo => "enerflo",
            Self::Crm => "crm",
        }
    }
}

/// `2xx`, `3xx`, `4xx`, `429` (rate limited: its own class), `5xx`; `timeout` and `network` for
/// calls that got no answer.
pub fn status_class(status: u16) -> &'static str {
    match status {
        429 => "429",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

tokio::task_local! {
    static STAGE: &'static str;
}

/// Runs `fut` with `stage` as the stage its calls are counted under.
pub async fn scope<F: Future>(stage: &'static str, fut: F) -> F::Output {
    STAGE.scope(stage, fut).await
}

/// The stage of the current [`scope`], else [`UNSCOPED`].
pub fn current_stage() -> &'static str {
    STAGE.try_with(|s| *s).unwrap_or(UNSCOPED)
}

#[derive(Default)]
struct Registry {
    events: BTreeMap<(String, Event), u64>,
    calls: BTreeMap<(String, Target, &'static str), u64>,
    /// (sum of seconds, count) per stage and target.
    latency: BTreeMap<(String, Target), (f64, u64)>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

fn namespace() -> Option<&'static str> {
    static NAMESPACE: OnceLock<Option<String>> = OnceLock::new();
    NAMESPACE
        .get_or_init(|| {
            std::env::var(NAMESPACE_VAR)
                .ok()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
        })
        .as_deref()
}

/// Counts `event` at `stage`.
pub fn count(stage: &str, event: Event) {
    if let Ok(mut r) = registry().lock() {
        *r.events.entry((stage.to_owned(), event)).or_default() += 1;
    }
    if let Some(ns) = namespace() {
        emit(&event_line(ns, crate::timefmt::now_millis(), stage, event));
    }
}

/// Records one call to `target` that ended in `class` ([`status_class`], `timeout`, `network`)
/// after `elapsed`, under the current stage.
pub fn call(target: Target, class: &'static str, elapsed: Duration) {
    let stage = current_stage();
    if let Ok(mut r) = registry().lock() {
        *r.calls
            .entry((stage.to_owned(), target, class))
            .or_default() += 1;
        let slot = r.latency.entry((stage.to_owned(), target)).or_default();
        slot.0 += elapsed.as_secs_f64();
        slot.1 += 1;
    }
    if let Some(ns) = namespace() {
        emit(&call_line(
            ns,
            crate::timefmt::now_millis(),
            stage,
            target,
            class,
            elapsed,
        ));
    }
}

/// Sends a request (`req.send()`), recording its latency (to the answer's headers) and status
/// class with [`call`]; the result is returned as it came.
pub async fn observe(
    target: Target,
    send: impl Future<Output = Result<reqwest::Response, reqwest::Error>>,
) -> Result<reqwest::Response, reqwest::Error> {
    let started = Instant::now();
    let result = send.await;
    let class = match &result {
        Ok(resp) => status_class(resp.status().as_u16()),
        Err(e) if e.is_timeout() => "timeout",
        Err(_) => "network",
    };
    call(target, class, started.elapsed());
    result
}

/// [`observe`] as a request builder method: `req.observed(Target::Crm).send().await` sends `req`
/// and records the call.
pub trait Observe {
    fn observed(self, target: Target) -> Observed;
}

impl Observe for reqwest::RequestBuilder {
    fn observed(self, target: Target) -> Observed {
        Observed {
            target,
            request: self,
        }
    }
}

/// A request whose [`send`](Observed::send) is recorded with [`call`].
pub struct Observed {
    target: Target,
    request: reqwest::RequestBuilder,
}

impl Observed {
    pub async fn send(self) -> Result<reqwest::Response, reqwest::Error> {
        observe(self.target, self.request.send()).await
    }
}

fn emit(line: &str) {
    // One write of the whole line under stdout's lock: never interleaved with a log line.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

/// The EMF line of one event.
pub fn event_line(namespace: &str, timestamp_ms: i64, stage: &str, event: Event) -> String {
    let mut line = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["Stage"]],
                "Metrics": [{"Name": event.metric(), "Unit": "Count"}],
            }],
        },
        "Stage": stage,
    });
    line[event.metric()] = json!(1);
    line.to_string()
}

/// The EMF line of one call: `CallLatency` by stage and target, `Calls` by stage, target and
/// status class.
pub fn call_line(
    namespace: &str,
    timestamp_ms: i64,
    stage: &str,
    target: Target,
    class: &str,
    elapsed: Duration,
) -> String {
    let millis = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["Stage", "Target"]],
                    "Metrics": [{"Name": "CallLatency", "Unit": "Milliseconds"}],
                },
                {
                    "Namespace": namespace,
                    "Dimensions": [["Stage", "Target", "StatusClass"]],
                    "Metrics": [{"Name": "Calls", "Unit": "Count"}],
                },
            ],
        },
        "Stage": stage,
        "Target": target.label(),
        "StatusClass": class,
        "CallLatency": millis,
        "Calls": 1,
    })
    .to_string()
}

/// What is wrong with a line as an EMF document (CloudWatch's specification: `_aws.Timestamp`
/// in epoch milliseconds, directives with a namespace, dimension sets of root string members,
/// metrics of root numeric members); `None` when it is valid. Lines that are not JSON objects
/// with `_aws` are not EMF at all (`Some`).
pub fn emf_problem(line: &str) -> Option<String> {
    let doc: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Some(format!("not JSON: {e}")),
    };
    let Some(aws) = doc.get("_aws") else {
        return Some("no _aws member".into());
    };
    if !aws.get("Timestamp").is_some_and(Value::is_i64) {
        return Some("_aws.Timestamp is not an integer (epoch milliseconds)".into());
    }
    let Some(directives) = aws.get("CloudWatchMetrics").and_then(Value::as_array) else {
        return Some("_aws.CloudWatchMetrics is not an array".into());
    };
    if directives.is_empty() {
        return Some("_aws.CloudWatchMetrics is empty".into());
    }
    for d in directives {
        let ns = d.get("Namespace").and_then(Value::as_str).unwrap_or("");
        if ns.is_empty() || ns.len() > 255 {
            return Some("a directive's Namespace is missing, empty or over 255 characters".into());
        }
        let Some(sets) = d.get("Dimensions").and_then(Value::as_array) else {
            return Some("a directive has no Dimensions array".into());
        };
        for set in sets {
            let Some(names) = set.as_array() else {
                return Some("a dimension set is not an array".into());
            };
            if names.len() > 30 {
                return Some("a dimension set has over 30 dimensions".into());
            }
            for name in names {
                let Some(name) = name.as_str() else {
                    return Some("a dimension name is not a string".into());
                };
                if !doc.get(name).is_some_and(Value::is_string) {
                    return Some(format!("dimension {name} is not a root string member"));
                }
            }
        }
        let Some(metrics) = d.get("Metrics").and_then(Value::as_array) else {
            return Some("a directive has no Metrics array".into());
        };
        if metrics.is_empty() || metrics.len() > 100 {
            return Some("a directive has no metric, or over 100".into());
        }
        for m in metrics {
            let Some(name) = m.get("Name").and_then(Value::as_str) else {
                return Some("a metric has no Name".into());
            };
            if !doc.get(name).is_some_and(Value::is_number) {
                return Some(format!("metric {name} is not a root numeric member"));
            }
        }
    }
    None
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Everything counted in this process, in Prometheus text format (version 0.0.4).
pub fn prometheus_text() -> String {
    let Ok(r) = registry().lock() else {
        return String::new();
    };
    let mut out = String::new();
    out.push_str(
        "# HELP enerflo_sync_events_total Events per stage and what happened to them.\n\
         # TYPE enerflo_sync_events_total counter\n",
    );
    for ((stage, event), n) in &r.events {
        let _ = writeln!(
            out,
            "enerflo_sync_events_total{{stage=\"{}\",event=\"{}\"}} {n}",
            escape(stage),
            event.label()
        );
    }
    out.push_str(
        "# HELP enerflo_sync_calls_total Enerflo and CRM calls per stage, target and status class.\n\
         # TYPE enerflo_sync_calls_total counter\n",
    );
    for ((stage, target, class), n) in &r.calls {
        let _ = writeln!(
            out,
            "enerflo_sync_calls_total{{stage=\"{}\",target=\"{}\",status_class=\"{class}\"}} {n}",
            escape(stage),
            target.label()
        );
    }
    out.push_str(
        "# HELP enerflo_sync_call_duration_seconds Time to the answer's headers of Enerflo and CRM calls.\n\
         # TYPE enerflo_sync_call_duration_seconds summary\n",
    );
    for ((stage, target), (sum, n)) in &r.latency {
        let labels = format!("stage=\"{}\",target=\"{}\"", escape(stage), target.label());
        let _ = writeln!(
            out,
            "enerflo_sync_call_duration_seconds_sum{{{labels}}} {sum}"
        );
        let _ = writeln!(
            out,
            "enerflo_sync_call_duration_seconds_count{{{labels}}} {n}"
        );
    }
    out
}

/// `route`, with every call it makes counted under `stage` (`crm_leads`, `crm_status`, ...).
pub fn scoped(stage: &'static str, route: Arc<dyn InboundRoute>) -> Arc<dyn InboundRoute> {
    Arc::new(Scoped { stage, route })
}

struct Scoped {
    stage: &'static str,
    route: Arc<dyn InboundRoute>,
}

#[async_trait]
impl InboundRoute for Scoped {
    async fn handle(&self, req: &HttpRequest, params: &RouteParams) -> HttpResponse {
        scope(self.stage, self.route.handle(req, params)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn every_event_line_is_valid_emf_naming_its_stage_and_metric() {
        for event in Event::ALL {
            let line = event_line("EnerfloSync/test", 1_767_225_600_000, "project", event);
            assert_eq!(emf_problem(&line), None, "{line}");
            let doc: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(doc["Stage"], "project");
            assert_eq!(doc[event.metric()], 1);
            assert_eq!(
                doc["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
                event.metric()
            );
        }
    }

    #[test]
    fn a_call_line_is_valid_emf_with_latency_by_target_and_calls_by_status_class() {
        let line = call_line(
            "EnerfloSync/test",
            1_767_225_600_000,
            "leads",
            Target::Crm,
            "5xx",
            Duration::from_micros(12_345),
        );
        assert_eq!(emf_problem(&line), None, "{line}");
        let doc: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["CallLatency"], 12.345);
        assert_eq!(doc["Target"], "crm");
        assert_eq!(doc["StatusClass"], "5xx");
        let directives = doc["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives[0]["Dimensions"], json!([["Stage", "Target"]]));
        assert_eq!(
            directives[1]["Dimensions"],
            json!([["Stage", "Target", "StatusClass"]])
        );
    }

    #[test]
    fn the_emf_check_names_what_is_wrong() {
        assert!(emf_problem(r#"{"level":"INFO","message":"x"}"#).is_some());
        let no_member = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[["Stage"]],"Metrics":[{"Name":"Delivered"}]}]},"Delivered":1}"#;
        assert_eq!(
            emf_problem(no_member).as_deref(),
            Some("dimension Stage is not a root string member")
        );
        let text_metric = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[],"Metrics":[{"Name":"Delivered"}]}]},"Delivered":"1"}"#;
        assert_eq!(
            emf_problem(text_metric).as_deref(),
            Some("metric Delivered is not a root numeric member")
        );
    }

    #[test]
    fn status_classes_keep_429_apart() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(429), "429");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
    }

    #[test]
    fn every_outcome_word_of_the_consumer_is_an_event() {
        use crate::consumer::OutcomeKind;
        for kind in [
            OutcomeKind::Delivered,
            OutcomeKind::Unchanged,
            OutcomeKind::Echo,
            OutcomeKind::Incomplete,
            OutcomeKind::Stale,
            OutcomeKind::NoCompletion,
        ] {
            assert!(Event::from_outcome(kind.as_str()).is_some(), "{kind}");
        }
    }

    #[tokio::test]
    async fn counts_and_calls_show_in_the_prometheus_text_under_their_scope() {
        // A stage name no other test uses: the registry is process-wide.
        count("metrics_test_stage", Event::Delivered);
        count("metrics_test_stage", Event::Delivered);
        scope("metrics_test_stage", async {
            call(Target::Enerflo, "2xx", Duration::from_millis(250));
        })
        .await;
        let text = prometheus_text();
        assert!(
            text.contains(
                "enerflo_sync_events_total{stage=\"metrics_test_stage\",event=\"delivered\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "enerflo_sync_calls_total{stage=\"metrics_test_stage\",target=\"enerflo\",status_class=\"2xx\"} 1\n"
        ));
        assert!(text.contains(
            "enerflo_sync_call_duration_seconds_count{stage=\"metrics_test_stage\",target=\"enerflo\"} 1\n"
        ));
    }
}
