//! Metrics: with `METRICS_NAMESPACE` set (as `template.yaml` sets it for every function) the
//! runner binary writes CloudWatch Embedded Metric Format lines on stdout for each event and
//! each Enerflo and CRM call, every one of them valid EMF; and `/metrics` serves the same counts
//! in Prometheus text format.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use enerflo_sync::metrics::emf_problem;
use serde_json::Value;

use crate::kit::{Process, data_dir, fixture, inbox, post_webhook};

const NAMESPACE: &str = "EnerfloSync/metrics-test";

/// The EMF documents among `lines` (lines with `_aws`), each checked against the specification.
fn emf_documents(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l.contains("\"_aws\""))
        .map(|l| {
            assert_eq!(emf_problem(l), None, "not valid EMF: {l}");
            serde_json::from_str(l).unwrap()
        })
        .collect()
}

/// (stage, metric) -> the sum of its values over the EMF event lines.
fn event_totals(docs: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut totals = BTreeMap::new();
    for doc in docs {
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        if directive["Dimensions"] != serde_json::json!([["Stage"]]) {
            continue;
        }
        assert_eq!(directive["Namespace"], NAMESPACE);
        let metric = directive["Metrics"][0]["Name"].as_str().unwrap().to_owned();
        let stage = doc["Stage"].as_str().unwrap().to_owned();
        *totals.entry((stage, metric.clone())).or_default() += doc[&metric].as_u64().unwrap();
    }
    totals
}

/// The Prometheus label of an EMF event metric (`DeadLettered` -> `dead_lettered`).
fn snake(metric: &str) -> String {
    let mut out = String::new();
    for (i, c) in metric.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_and_call_is_an_emf_line_and_metrics_serves_the_same_counts() {
    let dir = data_dir("metrics");
    let mut process = Process::spawn(
        &dir,
        "127.0.0.1:0",
        "info",
        &[("METRICS_NAMESPACE", NAMESPACE.to_owned())],
    );
    let port = process.wait_listening(Duration::from_secs(30));
    let http = enerflo_sync::wire::client();
    let body = fixture("v2-deal.projectSubmitted.json");
    assert_eq!(post_webhook(&http, port, body.clone()).await, 202);
    // The same delivery again: a duplicate.
    assert_eq!(post_webhook(&http, port, body).await, 202);

    // Phase on what the runner reports: the CRM inbox holds the event and the Delivered line is out.
    let deadline = Instant::now() + Duration::from_secs(30);
    let docs = loop {
        let delivered = inbox(&http, port).await["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty());
        let docs = emf_documents(&process.lines());
        let totals = event_totals(&docs);
        if delivered && totals.contains_key(&("project".into(), "Delivered".into())) {
            break docs;
        }
        assert!(
            Instant::now() < deadline,
            "no Delivered metric for project within 30 s:\n{}",
            process.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let totals = event_totals(&docs);
    let at = |metric: &str| totals.get(&("project".into(), metric.into())).copied();
    assert_eq!(at("Received"), Some(2), "{totals:?}");
    assert_eq!(at("Queued"), Some(1), "{totals:?}");
    assert_eq!(at("Duplicate"), Some(1), "{totals:?}");
    assert_eq!(at("Delivered"), Some(1), "{totals:?}");

    // Hydration called Enerflo (the sandbox) and delivery the CRM (the inbox), both answered 2xx.
    let calls: Vec<(&str, &str, &str)> = docs
        .iter()
        .filter(|d| d.get("Calls").is_some())
        .map(|d| {
            assert!(d["CallLatency"].as_f64().unwrap() >= 0.0);
            (
                d["Stage"].as_str().unwrap(),
                d["Target"].as_str().unwrap(),
                d["StatusClass"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(calls.contains(&("project", "enerflo", "2xx")), "{calls:?}");
    assert!(calls.contains(&("project", "crm", "2xx")), "{calls:?}");

    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for ((stage, metric), n) in &totals {
        let line = format!(
            "enerflo_sync_events_total{{stage=\"{stage}\",event=\"{}\"}} {n}\n",
            snake(metric)
        );
        assert!(text.contains(&line), "/metrics lacks {line}in:\n{text}");
    }
    let crm_calls = calls
        .iter()
        .filter(|c| **c == ("project", "crm", "2xx"))
        .count();
    assert!(text.contains(&format!(
        "enerflo_sync_calls_total{{stage=\"project\",target=\"crm\",status_class=\"2xx\"}} {crm_calls}\n"
    )));
    assert!(text.contains(
        "enerflo_sync_call_duration_seconds_count{stage=\"project\",target=\"enerflo\"}"
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
