//! The one reconciliation engine: pages Enerflo's install and customer lists, compares each entity
//! with the last synced state (`super::compare`), and hands every drift to a [`DriftSink`]: the
//! webhook's own enqueue path (`crate::http::webhook::WebhookIngest::enqueue_synthetic`), so
//! dedupe, echo, ordering and the CRM write happen exactly as for a webhook. The scheduled sweep
//! (`functions/enerflo-reconcile`), the local runner's interval and `enerflo-sync-ops backfill`
//! all run it.
//!
//! A pass resumes from its cursor (`reconcile#cursor:<name>` in the sync state table), saved after
//! every page and wherever a run stops: when asked to, before its deadline
//! (`crate::deadline`), when Enerflo or the store is unavailable. Every Enerflo call takes a slot of
//! the sweep's own per-minute budget ([`CallBudget`]) first; a call that would have to wait past
//! the deadline is not made, the run stops and the next one continues.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::budget::CallBudget;
use super::compare::{Comparer, Drift, DriftKind, Verdict, listed_milestones, updated_at};
use super::page::{is_last, read_page, row_id};
use super::report::{Example, Report, StageCounts};
use super::settings::{DetailMode, ReconcileSettings};
use crate::config::EnerfloFields;
use crate::enerflo::lenient::{path, value_to_u64};
use crate::enerflo::{EnerfloApi, EnerfloError};
use crate::http::webhook::{Enqueued, NotEnqueued, WebhookIngest};
use crate::registry::Stage;
use crate::stages::status::read_status;
use crate::store::{Claim, ClaimStore, StoreError, SyncState, SyncStateStore, XrefStore};
use crate::sync::StateKey;
use crate::timefmt::{now_rfc3339, parse_enerflo_time};

/// Time a run keeps back before its deadline: it starts no call and no row with less left, so
/// what it started (an Enerflo call of at most [`CALL_BUDGET`], the store and queue writes of an
/// enqueue) and the cursor save finish in time.
pub const STOP_MARGIN: Duration = Duration::from_secs(30);

/// How long one Enerflo call may retry in-process.
pub const CALL_BUDGET: Duration = Duration::from_secs(10);

/// Where the sweep's drifts go.
#[async_trait]
pub trait DriftSink: Send + Sync {
    async fn submit(&self, drift: &Drift) -> Result<Enqueued, NotEnqueued>;
}

#[async_trait]
impl DriftSink for WebhookIngest {
    async fn submit(&self, drift: &Drift) -> Result<Enqueued, NotEnqueued> {
        self.enqueue_synthetic(&drift.body, &drift.dedupe_key).await
    }
}

/// The lists a pass walks, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Installs,
    Customers,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Installs => "installs",
            Self::Customers => "customers",
        }
    }
}

/// Where a pass has got to; saved in the sync state table (`SyncState::data`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The stages and `--since` of the pass: a cursor of other parameters is not resumed.
    pub params: String,
    pub phase: Phase,
    pub page: u64,
    /// Rows of `page` already done.
    pub offset: usize,
    pub started_at: String,
    /// Rows done in the pass, and each list's total when its pages say.
    pub done: u64,
    #[serde(default)]
    pub totals: BTreeMap<Phase, u64>,
    /// The first row of the last page done (an API ignoring the page parameter repeats it).
    pub last_first_row: Option<String>,
    #[serde(default)]
    pub counts: BTreeMap<Stage, StageCounts>,
    /// When the previous pass completed.
    pub completed_at: Option<String>,
}

impl Cursor {
    fn fresh(params: &str, first_page: u64, phase: Phase) -> Self {
        Self {
            params: params.to_owned(),
            phase,
            page: first_page,
            offset: 0,
            started_at: now_rfc3339(),
            done: 0,
            totals: BTreeMap::new(),
            last_first_row: None,
            counts: BTreeMap::new(),
            completed_at: None,
        }
    }
}

/// How far a run is, for progress bars.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    pub page: u64,
    /// Rows done in the pass, and the rows the lists hold (as far as their pages said yet).
    pub done: u64,
    pub total: Option<u64>,
    pub drift: u64,
    pub enqueued: u64,
}

pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// One run's parameters.
#[derive(Clone)]
pub struct RunOptions {
    /// The pass (and cursor) name: `sweep` or `backfill`.
    pub name: String,
    pub stages: Vec<Stage>,
    /// Only rows changed at or after this time (rows that do not say are kept).
    pub since: Option<OffsetDateTime>,
    /// Compare and report only: no cursor, no lease, nothing enqueued; nothing written anywhere.
    pub dry_run: bool,
    /// Set to stop the run at the next row; the cursor is saved there.
    pub stop: Arc<AtomicBool>,
    /// Hold the pass's run lease this long, so two runs never walk one cursor at once.
    pub lease: Option<Duration>,
    pub progress: Option<ProgressFn>,
    /// How many drifts per stage the report lists.
    pub examples: usize,
}

impl RunOptions {
    pub fn new(name: &str, stages: &[Stage]) -> Self {
        Self {
            name: name.to_owned(),
            stages: stages.to_vec(),
            since: None,
            dry_run: false,
            stop: Arc::new(AtomicBool::new(false)),
            lease: None,
            progress: None,
            examples: 5,
        }
    }

    fn params(&self) -> String {
        let stages: Vec<&str> = self.stages.iter().map(|s| s.as_str()).collect();
        let since = self
            .since
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        format!("stages={};since={since}", stages.join(","))
    }

    fn phases(&self) -> Vec<Phase> {
        let mut p = Vec::new();
        if self.stages.contains(&Stage::Status) || self.stages.contains(&Stage::Milestone) {
            p.push(Phase::Installs);
        }
        if self.stages.contains(&Stage::Leads) {
            p.push(Phase::Customers);
        }
        p
    }
}

/// Parses `--since`: RFC 3339, or a date (midnight UTC).
pub fn parse_since(text: &str) -> Result<OffsetDateTime, String> {
    let t = text.trim();
    let full = if t.len() == 10 {
        format!("{t}T00:00:00Z")
    } else {
        t.to_owned()
    };
    OffsetDateTime::parse(&full, &Rfc3339).map_err(|_| {
        format!("`{t}` is not an RFC 3339 time (2026-11-28T00:00:00Z) or a date (2026-11-28)")
    })
}

/// Why a run stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StopReason {
    Requested,
    Deadline,
    Leased,
    Enerflo(String),
    Store(String),
    Queue(String),
    Config(String),
}

impl StopReason {
    fn describe(&self) -> String {
        match self {
            Self::Requested => "stopped on request".into(),
            Self::Deadline => {
                "stopped before the invocation's deadline (the call budget or the time left)".into()
            }
            Self::Leased => "another run of this pass holds its lease".into(),
            Self::Enerflo(e) => format!("Enerflo: {e}"),
            Self::Store(e) => format!("store: {e}"),
            Self::Queue(e) => format!("queue: {e}"),
            Self::Config(e) => e.clone(),
        }
    }

    fn is_failure(&self) -> bool {
        !matches!(self, Self::Requested | Self::Deadline | Self::Leased)
    }
}

impl From<StoreError> for StopReason {
    fn from(e: StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

enum CallError {
    NotFound,
    Stop(StopReason),
}

pub struct Reconciler {
    pub enerflo: Arc<dyn EnerfloApi>,
    pub state: Arc<dyn SyncStateStore>,
    pub xref: Arc<dyn XrefStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub sink: Arc<dyn DriftSink>,
    pub settings: ReconcileSettings,
    pub fields: EnerfloFields,
    pub install_id_paths: Vec<String>,
    /// Shared by every run of this engine (the per-minute window outlives a run).
    pub budget: Arc<CallBudget>,
}

/// Under way: the options, the report and the cursor of one run.
struct Run<'a> {
    opts: &'a RunOptions,
    report: Report,
    cursor: Cursor,
}

impl Reconciler {
    /// One run: resumes the pass from its cursor (a dry run starts afresh and keeps none), walks
    /// until the pass is complete or the run must stop, and reports.
    pub async fn run(&self, opts: &RunOptions) -> Report {
        let report = Report {
            name: opts.name.clone(),
            dry_run: opts.dry_run,
            ..Report::default()
        };
        let lease_key = StateKey::ReconcileRun(opts.name.clone()).scope();
        let leased = match opts.lease.filter(|_| !opts.dry_run) {
            None => false,
            Some(lease) => {
                let secs = lease.as_secs().max(60);
                match self.claims.claim(&lease_key, secs, secs).await {
                    Ok(Claim::Acquired) => true,
                    Ok(_) => return stopped(report, StopReason::Leased),
                    Err(e) => return stopped(report, e.into()),
                }
            }
        };
        let report = self.pass(opts, report).await;
        if leased && let Err(e) = self.claims.release(&lease_key).await {
            tracing::warn!(error = %e, pass = %opts.name, "reconcile lease not released; it expires on its own");
        }
        tracing::info!(
            pass = %report.name,
            dry_run = report.dry_run,
            drift = report.drift(),
            enqueued = report.enqueued,
            duplicates = report.duplicates,
            enerflo_calls = report.enerflo_calls,
            complete = report.complete,
            stopped = report.stopped.as_deref().unwrap_or(""),
            "reconcile run"
        );
        report
    }

    async fn load_cursor(
        &self,
        opts: &RunOptions,
        first_phase: Phase,
    ) -> Result<(Cursor, bool), StopReason> {
        let params = opts.params();
        let fresh = Cursor::fresh(&params, self.settings.first_page, first_phase);
        if opts.dry_run {
            return Ok((fresh, false));
        }
        let scope = StateKey::ReconcileCursor(opts.name.clone()).scope();
        let Some(saved) = self.state.get_state(&scope).await? else {
            return Ok((fresh, false));
        };
        match serde_json::from_value::<Cursor>(saved.data) {
            Ok(c) if c.params == params && opts.phases().contains(&c.phase) => {
                let resumed =
                    c.page != self.settings.first_page || c.offset > 0 || c.phase != first_phase;
                Ok((c, resumed))
            }
            Ok(c) => {
                if c.params != params {
                    tracing::info!(pass = %opts.name, "reconcile cursor of other stages or --since: starting the pass afresh");
                }
                Ok((
                    Cursor {
                        completed_at: c.completed_at,
                        ..fresh
                    },
                    false,
                ))
            }
            Err(e) => {
                tracing::warn!(pass = %opts.name, error = %e, "reconcile cursor unreadable: starting the pass afresh");
                Ok((fresh, false))
            }
        }
    }

    async fn save_cursor(&self, run: &Run<'_>) -> Result<(), StopReason> {
        if run.opts.dry_run {
            return Ok(());
        }
        let mut cursor = run.cursor.clone();
        cursor.counts = run.report.pass.clone();
        let state = SyncState {
            hash: String::new(),
            data: serde_json::to_value(&cursor).unwrap_or(Value::Null),
            updated_at: now_rfc3339(),
            seq: 0,
        };
        self.state
            .put_state(
                &StateKey::ReconcileCursor(run.opts.name.clone()).scope(),
                &state,
            )
            .await?;
        Ok(())
    }

    async fn pass(&self, opts: &RunOptions, report: Report) -> Report {
        let phases = opts.phases();
        let Some(&first_phase) = phases.first() else {
            return stopped(report, StopReason::Config("no stage to reconcile".into()));
        };
        let (cursor, resumed) = match self.load_cursor(opts, first_phase).await {
            Ok(c) => c,
            Err(e) => return stopped(report, e),
        };
        let mut run = Run {
            opts,
            report,
            cursor,
        };
        if resumed {
            run.report.resumed_from = Some(format!(
                "{} page {}, row {}",
                run.cursor.phase.as_str(),
                run.cursor.page,
                run.cursor.offset
            ));
        }
        let carried = run.cursor.counts.clone();
        run.report.total_pass(&carried);
        match self.walk(&mut run, &phases, &carried).await {
            Ok(()) => {
                run.report.complete = true;
                let mut done = Cursor::fresh(&opts.params(), self.settings.first_page, first_phase);
                done.completed_at = Some(now_rfc3339());
                run.cursor = done;
                let counts = std::mem::take(&mut run.report.pass);
                if let Err(e) = self.save_cursor(&run).await {
                    // The pass is done; failing to reset the cursor only makes the next run
                    // start from the end of this one, which completes at once.
                    tracing::warn!(error = ?e, pass = %opts.name, "reconcile cursor not reset");
                }
                run.report.pass = counts;
                run.report
            }
            Err(reason) => {
                if let Err(e) = self.save_cursor(&run).await {
                    tracing::error!(error = ?e, pass = %opts.name, "reconcile cursor not saved; the next run repeats this one's rows");
                }
                stopped(run.report, reason)
            }
        }
    }

    async fn walk(
        &self,
        run: &mut Run<'_>,
        phases: &[Phase],
        carried: &BTreeMap<Stage, StageCounts>,
    ) -> Result<(), StopReason> {
        let start = run.cursor.phase;
        for &phase in phases.iter().filter(|p| **p >= start) {
            if phase != run.cursor.phase {
                run.cursor.phase = phase;
                run.cursor.page = self.settings.first_page;
                run.cursor.offset = 0;
                run.cursor.last_first_row = None;
                self.save_cursor(run).await?;
            }
            let spec = match phase {
                Phase::Installs => &self.settings.installs,
                Phase::Customers => &self.settings.customers,
            };
            loop {
                let body = match self.call(&spec.page_path(run.cursor.page), run).await {
                    Ok(b) => b,
                    Err(CallError::Stop(r)) => return Err(r),
                    Err(CallError::NotFound) => {
                        return Err(StopReason::Config(format!(
                            "GET {} answered 404 (configure {}_PATH)",
                            spec.path, spec.env
                        )));
                    }
                };
                let page = read_page(&body, spec, &self.settings.total_paths)
                    .map_err(StopReason::Config)?;
                run.report.pages += 1;
                if let Some(t) = page.total {
                    run.cursor.totals.insert(phase, t);
                }
                let first = page.items.first().map(row_id);
                if run.cursor.page > self.settings.first_page
                    && first.is_some()
                    && first == run.cursor.last_first_row
                {
                    return Err(StopReason::Config(format!(
                        "page {} of {} starts with the same row as page {}: Enerflo seems to ignore `{}` (configure {}_PAGE_PARAM)",
                        run.cursor.page,
                        spec.path,
                        run.cursor.page - 1,
                        spec.page_param,
                        spec.env
                    )));
                }
                for (i, row) in page.items.iter().enumerate().skip(run.cursor.offset) {
                    run.cursor.offset = i;
                    self.may_continue(run.opts)?;
                    match phase {
                        Phase::Installs => self.install(run, row).await?,
                        Phase::Customers => self.customer(run, row).await?,
                    }
                    run.cursor.offset = i + 1;
                    run.cursor.done += 1;
                    run.report.total_pass(carried);
                    self.progress(run);
                    // The store and queue adapters may block (the embedded ones commit to disk):
                    // let the consumers sharing this runtime take their turn between rows.
                    tokio::task::yield_now().await;
                }
                run.report.total_pass(carried);
                if is_last(
                    &page,
                    run.cursor.page,
                    self.settings.first_page,
                    spec.page_size,
                ) {
                    break;
                }
                run.cursor.last_first_row = first;
                run.cursor.page += 1;
                run.cursor.offset = 0;
                self.save_cursor(run).await?;
            }
        }
        Ok(())
    }

    fn progress(&self, run: &Run<'_>) {
        if let Some(f) = &run.opts.progress {
            let total: u64 = run.cursor.totals.values().sum();
            f(&Progress {
                phase: run.cursor.phase,
                page: run.cursor.page,
                done: run.cursor.done,
                total: (total > 0).then_some(total.max(run.cursor.done)),
                drift: run.report.pass.values().map(StageCounts::drift).sum(),
                enqueued: run.report.enqueued,
            });
        }
    }

    /// Whether another row or call may start: not asked to stop, and time left.
    fn may_continue(&self, opts: &RunOptions) -> Result<(), StopReason> {
        if opts.stop.load(Ordering::SeqCst) {
            return Err(StopReason::Requested);
        }
        if crate::deadline::remaining().is_some_and(|left| left < STOP_MARGIN) {
            return Err(StopReason::Deadline);
        }
        Ok(())
    }

    /// A slot of the per-minute budget, waiting for one unless that would cross the deadline.
    async fn slot(&self, opts: &RunOptions) -> Result<(), StopReason> {
        loop {
            self.may_continue(opts)?;
            match self.budget.try_take().await {
                Ok(()) => return Ok(()),
                Err(wait) => {
                    if crate::deadline::remaining().is_some_and(|left| left < wait + STOP_MARGIN) {
                        return Err(StopReason::Deadline);
                    }
                    // In steps, so a stop request is seen within a second.
                    tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                }
            }
        }
    }

    async fn call(&self, path: &str, run: &mut Run<'_>) -> Result<Value, CallError> {
        self.slot(run.opts).await.map_err(CallError::Stop)?;
        run.report.enerflo_calls += 1;
        let shown = path.split('?').next().unwrap_or(path);
        match self
            .enerflo
            .send(Method::GET, path, None, CALL_BUDGET)
            .await
        {
            Ok(r) => Ok(r.body),
            Err(EnerfloError::NotFound { .. }) => Err(CallError::NotFound),
            Err(e) => Err(CallError::Stop(StopReason::Enerflo(format!(
                "GET {shown}: {e}"
            )))),
        }
    }

    fn comparer(&self) -> Comparer<'_> {
        Comparer {
            state: self.state.as_ref(),
            xref: self.xref.as_ref(),
            fields: &self.fields,
            lead_fields: &self.fields.lead,
            install_id_paths: &self.install_id_paths,
        }
    }

    /// Whether `--since` leaves the row out.
    fn before_since(&self, run: &Run<'_>, row: &Value) -> bool {
        let Some(since) = run.opts.since else {
            return false;
        };
        updated_at(row, &self.settings.updated_paths)
            .and_then(|t| parse_enerflo_time(&t))
            .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok())
            .is_some_and(|t| t < since)
    }

    async fn install(&self, run: &mut Run<'_>, row: &Value) -> Result<(), StopReason> {
        let Some(install_id) = ["id", "install_id"]
            .iter()
            .find_map(|p| path(row, p).and_then(value_to_u64))
        else {
            run.report.unreadable += 1;
            tracing::warn!(pass = %run.opts.name, "install list row without an id; skipped");
            return Ok(());
        };
        if self.before_since(run, row) {
            run.report.before_since += 1;
            return Ok(());
        }
        run.report.installs += 1;
        let stages = &run.opts.stages;
        let (want_status, want_milestones) = (
            stages.contains(&Stage::Status),
            stages.contains(&Stage::Milestone),
        );
        let row_status = read_status(row) != (None, None);
        let need_detail = match self.settings.detail {
            DetailMode::Always => true,
            DetailMode::Never => false,
            DetailMode::Auto => {
                (want_milestones && listed_milestones(row).is_none())
                    || (want_status && !row_status)
            }
        };
        let detail = if need_detail {
            match self
                .call(&format!("/api/v3/installs/{install_id}"), run)
                .await
            {
                Ok(body) => Some(body),
                Err(CallError::NotFound) => {
                    run.report.gone += 1;
                    return Ok(());
                }
                Err(CallError::Stop(r)) => return Err(r),
            }
        } else {
            None
        };
        let updated = updated_at(row, &self.settings.updated_paths);
        let comparer = self.comparer();
        if want_status {
            let source = match &detail {
                Some(d) if !row_status => d,
                _ => row,
            };
            let verdict = comparer
                .status(install_id, source, updated.as_deref())
                .await?;
            self.settle(run, Stage::Status, verdict).await?;
        }
        if want_milestones {
            let source = detail.as_ref().unwrap_or(row);
            match comparer
                .milestones(install_id, source, updated.as_deref())
                .await?
            {
                Some(verdicts) => {
                    for v in verdicts {
                        self.settle(run, Stage::Milestone, v).await?;
                    }
                }
                None => run.report.count(Stage::Milestone).skipped += 1,
            }
        }
        Ok(())
    }

    async fn customer(&self, run: &mut Run<'_>, row: &Value) -> Result<(), StopReason> {
        if self.before_since(run, row) {
            run.report.before_since += 1;
            return Ok(());
        }
        run.report.customers += 1;
        let verdict = self.comparer().customer(row).await?;
        if verdict == Verdict::Skipped("customer row without an id") {
            run.report.unreadable += 1;
        }
        self.settle(run, Stage::Leads, verdict).await
    }

    /// Counts a verdict and, for a drift (unless dry), enqueues its event.
    async fn settle(
        &self,
        run: &mut Run<'_>,
        stage: Stage,
        verdict: Verdict,
    ) -> Result<(), StopReason> {
        let drift = match verdict {
            Verdict::Unchanged => {
                run.report.count(stage).unchanged += 1;
                return Ok(());
            }
            Verdict::Skipped(_) => {
                run.report.count(stage).skipped += 1;
                return Ok(());
            }
            Verdict::Drift(d) => d,
        };
        if !run.opts.dry_run {
            match self.sink.submit(&drift).await {
                Ok(Enqueued::Queued { .. }) => run.report.enqueued += 1,
                Ok(Enqueued::Duplicate { .. }) => {
                    run.report.duplicates += 1;
                }
                Err(NotEnqueued::Store(e)) => return Err(StopReason::Store(e)),
                Err(NotEnqueued::Queue(e)) => return Err(StopReason::Queue(e)),
                Err(e) => {
                    run.report.failed += 1;
                    tracing::warn!(pass = %run.opts.name, stage = stage.as_str(), subject = %drift.subject, error = %e, "drift not enqueued");
                }
            }
        }
        let counts = run.report.count(stage);
        match drift.kind {
            DriftKind::Created => counts.created += 1,
            DriftKind::Updated => counts.updated += 1,
        }
        let examples = run.report.examples.entry(stage).or_default();
        if examples.len() < run.opts.examples {
            examples.push(Example::from(drift.as_ref()));
        }
        Ok(())
    }
}

fn stopped(mut report: Report, reason: StopReason) -> Report {
    report.failure = reason.is_failure();
    if report.failure {
        tracing::error!(pass = %report.name, reason = %reason.describe(), "reconcile run stopped");
    }
    report.stopped = Some(reason.describe());
    report
}
