//! What a run found and did: per stage how many entities were never synced (`created`), differ
//! (`updated`), agree (`unchanged`) or hold nothing the stage would push (`skipped`), the first
//! examples, and the run's cost. As JSON for the operator tool and the Lambda's answer, and as
//! CloudWatch Embedded Metric Format lines for the scheduled sweep's drift metric.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::compare::{Drift, DriftKind};
use crate::registry::Stage;

/// The CloudWatch namespace of the sweep's metrics.
pub const METRIC_NAMESPACE: &str = "EnerfloSync/Reconcile";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCounts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: u64,
}

impl StageCounts {
    pub fn drift(&self) -> u64 {
        self.created + self.updated
    }

    fn add(&mut self, other: &StageCounts) {
        self.created += other.created;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.skipped += other.skipped;
    }
}

/// One drift, as the report shows it (ids and field names only, never customer data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub kind: DriftKind,
    pub subject: String,
    pub what: String,
}

impl From<&Drift> for Example {
    fn from(d: &Drift) -> Self {
        Self {
            kind: d.kind,
            subject: d.subject.clone(),
            what: d.what.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// The pass's name: `sweep` (scheduled) or `backfill`.
    pub name: String,
    pub dry_run: bool,
    /// What this run found, per stage.
    pub stages: BTreeMap<Stage, StageCounts>,
    /// The same for the whole pass so far, runs before this one included (a resumed pass).
    pub pass: BTreeMap<Stage, StageCounts>,
    /// The first drifts of each stage this run found.
    pub examples: BTreeMap<Stage, Vec<Example>>,
    /// Synthetic events put on the stage queues (or parked), this run.
    pub enqueued: u64,
    /// Drifts whose event was already accepted (found by an earlier run, not yet processed).
    pub duplicates: u64,
    /// Drifts that could not be enqueued and will be found again (too large, unreadable).
    pub failed: u64,
    pub installs: u64,
    pub customers: u64,
    /// Rows left out by `--since`.
    pub before_since: u64,
    /// Rows without an id, and installs gone (404) between the list and their own object.
    pub unreadable: u64,
    pub gone: u64,
    pub pages: u64,
    pub enerflo_calls: u64,
    /// Where this run took the pass up (`installs page 3, row 20`), when it resumed one.
    pub resumed_from: Option<String>,
    /// The pass reached the end of every list.
    pub complete: bool,
    /// Why the run stopped before the end (it resumes there next time).
    pub stopped: Option<String>,
    /// The stop was a failure (Enerflo, the store or the queue unavailable, a configuration that
    /// does not match Enerflo's answers), not a deadline, a budget or a request.
    pub failure: bool,
}

impl Report {
    pub fn drift(&self) -> u64 {
        self.stages.values().map(StageCounts::drift).sum()
    }

    pub(super) fn count(&mut self, stage: Stage) -> &mut StageCounts {
        self.stages.entry(stage).or_default()
    }

    /// Adds this run's counts to the pass's counts carried over from earlier runs.
    pub(super) fn total_pass(&mut self, before: &BTreeMap<Stage, StageCounts>) {
        let mut pass = before.clone();
        for (stage, c) in &self.stages {
            pass.entry(*stage).or_default().add(c);
        }
        self.pass = pass;
    }

    /// One EMF line per stage (dimension `Stage`) and one for the run (dimension `Function`):
    /// CloudWatch turns them into metrics without a PutMetricData call (and without IAM for it).
    pub fn emf_lines(&self, function: &str, timestamp_ms: i64) -> Vec<String> {
        let emf = |dimension: &str, metrics: &[&str]| {
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": METRIC_NAMESPACE,
                    "Dimensions": [[dimension]],
                    "Metrics": metrics.iter().map(|m| json!({"Name": m, "Unit": "Count"})).collect::<Vec<_>>(),
                }],
            })
        };
        let mut lines = Vec::new();
        for (stage, c) in &self.stages {
            let mut line = json!({
                "_aws": emf("Stage", &["DriftFound", "DriftCreated", "DriftUpdated", "Unchanged"]),
                "Stage": stage.as_str(),
                "DriftFound": c.drift(),
                "DriftCreated": c.created,
                "DriftUpdated": c.updated,
                "Unchanged": c.unchanged,
            });
            line["pass"] = json!(self.name);
            lines.push(line.to_string());
        }
        let run: Value = json!({
            "_aws": emf("Function", &["DriftFound", "Enqueued", "EnerfloCalls", "PassCompleted", "RunFailed"]),
            "Function": function,
            "DriftFound": self.drift(),
            "Enqueued": self.enqueued,
            "EnerfloCalls": self.enerflo_calls,
            "PassCompleted": u64::from(self.complete),
            "RunFailed": u64::from(self.failure),
            "pass": self.name,
            "stopped": self.stopped,
        });
        lines.push(run.to_string());
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_name_their_metrics_and_carry_the_values() {
        let mut r = Report {
            name: "sweep".into(),
            enqueued: 3,
            enerflo_calls: 12,
            complete: true,
            ..Report::default()
        };
        *r.count(Stage::Status) = StageCounts {
            created: 1,
            updated: 2,
            unchanged: 40,
            skipped: 0,
        };
        let lines: Vec<Value> = r
            .emf_lines("enerflo-reconcile", 1_700_000_000_000)
            .iter()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        let stage = &lines[0];
        assert_eq!(
            stage["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            METRIC_NAMESPACE
        );
        assert_eq!(
            stage["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Stage"]])
        );
        assert_eq!(
            (stage["Stage"].as_str(), stage["DriftFound"].as_u64()),
            (Some("status"), Some(3))
        );
        let run = &lines[1];
        for (name, value) in [
            ("DriftFound", 3),
            ("Enqueued", 3),
            ("EnerfloCalls", 12),
            ("PassCompleted", 1),
            ("RunFailed", 0),
        ] {
            assert_eq!(run[name].as_u64(), Some(value), "{name}");
            assert!(
                run["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                    .as_array()
                    .expect("metrics")
                    .iter()
                    .any(|m| m["Name"] == name),
                "{name} declared"
            );
        }
    }
}
