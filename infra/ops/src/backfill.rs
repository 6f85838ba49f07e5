//! `enerflo-sync-ops backfill`: the reconciliation engine (`enerflo_sync::reconcile`) for day one.
//! It pages Enerflo's installs and customers, compares them with what each stage synced, and
//! enqueues a synthetic event for every record never synced or different, through the webhook's
//! enqueue path. `--dry-run` only reports (per stage: created, updated, unchanged, skipped, and
//! the first examples) and writes nothing. A run stopped with Ctrl-C saves its cursor
//! (`reconcile#cursor:backfill`) and the next one resumes there.
//!
//! Three places to run it against: AWS (DynamoDB + SQS from the Lambdas' variables, Enerflo from
//! `ENERFLO_BASE_URL` / `ENERFLO_API_KEY`), a stopped local runner's `--data-dir`, or a running
//! local runner (`--runner http://127.0.0.1:3000`), which runs it in its own process through
//! `/local/reconcile` (its database cannot be opened by a second process).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use enerflo_sync::classify::Stage;
use enerflo_sync::config::Config;
use enerflo_sync::queue::embedded::EmbeddedQueue;
use enerflo_sync::reconcile::{Progress, ProgressFn, Reconciler, Report, RunOptions};
use enerflo_sync::runtime::{CONSUMER_STAGES, Ports};
use enerflo_sync::store::embedded::{EmbeddedStore, open_database};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What to backfill.
#[derive(Clone, Debug)]
pub struct Backfill {
    pub stages: Vec<Stage>,
    pub since: Option<OffsetDateTime>,
    pub dry_run: bool,
}

impl Backfill {
    fn options(&self) -> RunOptions {
        let mut opts = RunOptions::new("backfill", &self.stages);
        opts.since = self.since;
        opts.dry_run = self.dry_run;
        opts
    }
}

/// The engine on AWS (no `data_dir`) or on a stopped local runner's state.
pub async fn reconciler(config: &Config, data_dir: Option<&Path>) -> anyhow::Result<Reconciler> {
    let Ok(enerflo) = config.enerflo_access() else {
        return Err(anyhow!(
            "ENERFLO_API_KEY is required (and ENERFLO_BASE_URL unless it is https://enerflo.io); \
             for a running local runner's sandbox pass --runner http://127.0.0.1:3000"
        ));
    };
    let ports = match data_dir {
        Some(dir) => {
            if !dir.join("sync.redb").exists() {
                return Err(anyhow!(
                    "{} holds no local runner state (no sync.redb)",
                    dir.display()
                ));
            }
            let db = open_database(Some(dir)).map_err(|e| {
                anyhow!(
                    "cannot open {} ({e}); stop the local runner first, or pass --runner <its URL>",
                    dir.display()
                )
            })?;
            let store = Arc::new(EmbeddedStore::new(db.clone()));
            Ports::one_store(
                store,
                Arc::new(EmbeddedQueue::new(db, CONSUMER_STAGES.iter().copied())),
            )
        }
        None => {
            let aws = config
                .lambda_aws()
                .map_err(|e| anyhow!("{e} (or pass --data-dir / --runner for a local runner)"))?;
            enerflo_sync::runtime::aws_ports(&aws)
        }
    };
    let enerflo = enerflo_sync::reconcile::enerflo_client(&enerflo, config.reconcile.per_minute)?;
    Ok(Reconciler::from_config(config, &ports, enerflo))
}

/// Runs the engine here; `stop` ends it at the next row (its cursor saved).
pub async fn run_here(
    reconciler: &Reconciler,
    backfill: &Backfill,
    stop: Arc<AtomicBool>,
    progress: ProgressFn,
) -> Report {
    let mut opts = backfill.options();
    opts.stop = stop;
    opts.progress = Some(progress);
    reconciler.run(&opts).await
}

/// Has a running local runner run it (`POST /local/reconcile`), following its progress until its
/// report is there; `stop` asks it to stop (`DELETE`).
pub async fn run_on_runner(
    url: &str,
    token: &str,
    backfill: &Backfill,
    stop: Arc<AtomicBool>,
    progress: ProgressFn,
) -> anyhow::Result<Report> {
    let http = enerflo_sync::wire::client();
    let endpoint = format!("{}/local/reconcile", url.trim_end_matches('/'));
    let body = json!({
        "name": "backfill",
        "stages": backfill.stages.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "since": backfill.since.and_then(|t| t.format(&Rfc3339).ok()),
        "dry_run": backfill.dry_run,
    });
    let resp = http
        .post(&endpoint)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("the local runner at {url} is not reachable"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(anyhow!(
            "the local runner refused the backfill ({status}): {text}"
        ));
    }
    let mut asked_to_stop = false;
    loop {
        if stop.load(Ordering::SeqCst) && !asked_to_stop {
            http.delete(&endpoint).bearer_auth(token).send().await?;
            asked_to_stop = true;
        }
        let state: Value = http
            .get(&endpoint)
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if let Ok(p) = serde_json::from_value::<Progress>(state["progress"].clone()) {
            progress(&p);
        }
        if state["running"] == json!(false) && !state["report"].is_null() {
            return serde_json::from_value(state["report"].clone())
                .context("the local runner's report is not readable");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The report as the tool prints it: per stage what would be (or was) created, updated, left
/// unchanged or skipped, with the first examples.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let verb = if report.dry_run {
        "would be enqueued (dry run: nothing was written)"
    } else {
        "enqueued"
    };
    if let Some(from) = &report.resumed_from {
        out.push_str(&format!("resumed at {from}\n"));
    }
    out.push_str(&format!(
        "{:<10} {:>8} {:>8} {:>10} {:>8}\n",
        "stage", "created", "updated", "unchanged", "skipped"
    ));
    for (stage, c) in &report.pass {
        out.push_str(&format!(
            "{:<10} {:>8} {:>8} {:>10} {:>8}\n",
            stage.as_str(),
            c.created,
            c.updated,
            c.unchanged,
            c.skipped
        ));
    }
    for (stage, examples) in &report.examples {
        if examples.is_empty() {
            continue;
        }
        out.push_str(&format!("first {stage} examples:\n"));
        for e in examples {
            let kind = serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            out.push_str(&format!("  {kind:<8} {}  {}\n", e.subject, e.what));
        }
    }
    let drift: u64 = report.pass.values().map(|c| c.drift()).sum();
    out.push_str(&format!(
        "{drift} record(s) {verb}; {} installs and {} customers read in {} Enerflo call(s)",
        report.installs, report.customers, report.enerflo_calls
    ));
    if !report.dry_run {
        out.push_str(&format!(
            "; {} event(s) enqueued, {} already queued",
            report.enqueued, report.duplicates
        ));
    }
    if report.before_since > 0 {
        out.push_str(&format!("; {} row(s) before --since", report.before_since));
    }
    out.push('\n');
    match (&report.stopped, report.complete) {
        (_, true) => out.push_str("complete\n"),
        (Some(why), false) if report.dry_run => out.push_str(&format!("stopped: {why}\n")),
        (Some(why), false) => out.push_str(&format!(
            "stopped: {why}; run the same command again to resume\n"
        )),
        (None, false) => {}
    }
    out
}
