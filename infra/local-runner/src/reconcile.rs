//! The reconciliation engine in the local runner (`enerflo_sync::reconcile`): the sweep on an
//! interval (`RECONCILE_INTERVAL_SECS`, off unless set), and one run at a time on request at
//! `/local/reconcile`, which `enerflo-sync-ops --runner <url> backfill` drives (the runner's
//! database is single-process, so the tool cannot open it while the runner runs):
//!
//! - `POST /local/reconcile` `{"name": "backfill", "stages": ["status"], "since": "2025-01-01",
//!   "dry_run": true}`: starts a run (202), 409 while one runs;
//! - `GET /local/reconcile`: `{"running", "progress", "report"}` (the report once it is done);
//! - `DELETE /local/reconcile`: asks the run to stop (it saves its cursor; the next run resumes).
//!
//! All three need `Authorization: Bearer <CRM_INBOUND_TOKEN>` (locally `local-crm-token`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use enerflo_sync::reconcile::{
    Progress, Reconciler, Report, RunOptions, SWEEPABLE, parse_since, parse_stages,
};
use enerflo_sync::secret::SecretSet;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The run requested over HTTP, if any, and the report of the last one.
pub struct Jobs {
    reconciler: Arc<Reconciler>,
    tokens: SecretSet,
    current: Mutex<Option<Job>>,
    last: Arc<Mutex<Option<Report>>>,
}

struct Job {
    opts: RunOptions,
    progress: Arc<Mutex<Option<Progress>>>,
    handle: JoinHandle<()>,
}

impl Jobs {
    pub fn new(reconciler: Arc<Reconciler>, tokens: SecretSet) -> Arc<Self> {
        Arc::new(Self {
            reconciler,
            tokens,
            current: Mutex::new(None),
            last: Arc::new(Mutex::new(None)),
        })
    }

    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/reconcile", get(status).post(start).delete(stop))
            .with_state(self.clone())
    }

    fn running(&self) -> bool {
        self.current
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|j| !j.handle.is_finished()))
            .unwrap_or(false)
    }

    /// Stops the run in progress, if any, and waits for it (its cursor saved).
    pub async fn stop_and_wait(&self) {
        let job = self.current.lock().ok().and_then(|mut c| c.take());
        if let Some(job) = job {
            job.opts.stop.store(true, Ordering::SeqCst);
            let _ = tokio::time::timeout(Duration::from_secs(10), job.handle).await;
        }
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| self.tokens.matches(t.trim().as_bytes()))
    }
}

fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    (status, Json(json!({"detail": detail.into()}))).into_response()
}

fn options(body: &Value) -> Result<RunOptions, String> {
    let name = body["name"].as_str().unwrap_or("backfill");
    if !["backfill", "sweep"].contains(&name) {
        return Err(format!("`name` must be backfill or sweep, not `{name}`"));
    }
    let stages = match &body["stages"] {
        Value::Null => SWEEPABLE.to_vec(),
        Value::String(s) => parse_stages(s)?,
        Value::Array(items) => {
            let names: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            parse_stages(&names.join(","))?
        }
        _ => return Err("`stages` must be a list of stage names".into()),
    };
    let mut opts = RunOptions::new(name, &stages);
    opts.since = match body["since"].as_str() {
        Some(s) => Some(parse_since(s).map_err(|e| format!("`since`: {e}"))?),
        None => None,
    };
    opts.dry_run = body["dry_run"].as_bool().unwrap_or(false);
    Ok(opts)
}

async fn start(State(jobs): State<Arc<Jobs>>, headers: HeaderMap, body: bytes::Bytes) -> Response {
    if !jobs.authorised(&headers) {
        return problem(
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer <CRM_INBOUND_TOKEN> required",
        );
    }
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return problem(StatusCode::BAD_REQUEST, "the body is not JSON"),
        }
    };
    let mut opts = match options(&body) {
        Ok(o) => o,
        Err(e) => return problem(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    if jobs.running() {
        return problem(
            StatusCode::CONFLICT,
            "a reconcile run is in progress; DELETE /local/reconcile stops it",
        );
    }
    let progress = Arc::new(Mutex::new(None));
    let seen = progress.clone();
    opts.progress = Some(Arc::new(move |p: &Progress| {
        if let Ok(mut slot) = seen.lock() {
            *slot = Some(p.clone());
        }
    }));
    let (reconciler, last, run_opts) = (jobs.reconciler.clone(), jobs.last.clone(), opts.clone());
    if let Ok(mut l) = last.lock() {
        *l = None;
    }
    let handle = tokio::spawn(async move {
        let report = reconciler.run(&run_opts).await;
        if let Ok(mut l) = last.lock() {
            *l = Some(report);
        }
    });
    let answer = json!({"started": true, "name": opts.name, "dry_run": opts.dry_run});
    if let Ok(mut c) = jobs.current.lock() {
        *c = Some(Job {
            opts,
            progress,
            handle,
        });
    }
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

async fn status(State(jobs): State<Arc<Jobs>>, headers: HeaderMap) -> Response {
    if !jobs.authorised(&headers) {
        return problem(
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer <CRM_INBOUND_TOKEN> required",
        );
    }
    let progress = jobs.current.lock().ok().and_then(|c| {
        c.as_ref()
            .and_then(|j| j.progress.lock().ok().and_then(|p| p.clone()))
    });
    let report = jobs.last.lock().ok().and_then(|l| l.clone());
    Json(json!({
        "running": jobs.running(),
        "progress": progress,
        "report": report,
    }))
    .into_response()
}

async fn stop(State(jobs): State<Arc<Jobs>>, headers: HeaderMap) -> Response {
    if !jobs.authorised(&headers) {
        return problem(
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer <CRM_INBOUND_TOKEN> required",
        );
    }
    let running = jobs.running();
    if let Ok(c) = jobs.current.lock()
        && let Some(job) = c.as_ref()
    {
        job.opts.stop.store(true, Ordering::SeqCst);
    }
    Json(json!({"stopping": running})).into_response()
}

/// The sweep every `interval` until shutdown (the first one interval after start).
pub async fn every(
    reconciler: Arc<Reconciler>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let opts = RunOptions::new("sweep", &reconciler.settings.stages);
        let stop = opts.stop.clone();
        let run = reconciler.run(&opts);
        tokio::pin!(run);
        let finished = tokio::select! {
            r = &mut run => Some(r),
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let report = match finished {
            Some(r) => r,
            None => {
                // Shutting down: the run stops at its next row and saves its cursor.
                stop.store(true, Ordering::SeqCst);
                run.await
            }
        };
        for line in report.emf_lines("local-runner", enerflo_sync::timefmt::now_millis()) {
            tracing::debug!(emf = %line, "reconcile metrics");
        }
    }
}

/// The ingest path's sweep on an interval: every `interval`, re-sends the events accepted more
/// than `older_than` ago that no consumer took (`WebhookIngest::resend_unsent`), e.g. because
/// the runner was killed between writing an event and queueing it.
pub async fn resend_every(
    ingest: Arc<enerflo_sync::http::webhook::WebhookIngest>,
    interval: Duration,
    older_than: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let resent = ingest
            .resend_unsent(older_than, enerflo_sync::http::webhook::RESEND_BATCH)
            .await;
        if resent.resent + resent.failed > 0 {
            tracing::info!(
                resent = resent.resent,
                failed = resent.failed,
                "unsent events swept"
            );
        }
    }
}
