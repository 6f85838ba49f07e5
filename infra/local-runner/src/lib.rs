//! The local runner: the same routes and handlers as the Lambdas, in one process, on an embedded
//! durable store and queue (redb under `DATA_DIR`). With no Enerflo credentials it serves an
//! Enerflo sandbox at `/sandbox/enerflo`; with no CRM URL a CRM inbox at `/crm-inbox`. The
//! operator console is at `/ops/` (`/` redirects there), on the runner's own store and queue;
//! without `OPS_TOKEN` the runner makes one up and prints it in its banner.

pub mod fakes;
pub mod inbox;
pub mod reconcile;
pub mod sandbox;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use enerflo_sync::classify::Stage;
use enerflo_sync::config::{Config, CrmAccess, CrmConnectorKind, SigningSecret};
use enerflo_sync::consumer::{Consumer, Disposition};
use enerflo_sync::crm::CrmConnector;
use enerflo_sync::enerflo::EnerfloApi;
use enerflo_sync::http::{HttpRequest, Problem, Router};
use enerflo_sync::inbound::hubspot_notes::NotesPoll;
use enerflo_sync::queue::embedded::EmbeddedQueue;
use enerflo_sync::registry::Route;
use enerflo_sync::runtime::{self, Ports};
use enerflo_sync::secret::{Secret, SecretSet};
use enerflo_sync::store::embedded::{EmbeddedStore, is_in_use, open_database};
use enerflo_sync_console::{Console, Scheme};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use inbox::Inbox;
pub use sandbox::Sandbox;

/// Used when `WEBHOOK_TOKEN` / `CRM_INBOUND_TOKEN` are unset locally (never in Lambda, where they
/// are required).
pub const LOCAL_WEBHOOK_TOKEN: &str = "local-webhook-token";
pub const LOCAL_CRM_TOKEN: &str = "local-crm-token";
/// The private app token of the local HubSpot sandbox (`CRM_CONNECTOR=hubspot` without a token).
pub const SANDBOX_HUBSPOT_TOKEN: &str = "pat-local-sandbox-0000";
/// The API token of the local Monday.com sandbox (`CRM_CONNECTOR=monday` without a token).
pub const SANDBOX_MONDAY_TOKEN: &str = "monday-local-sandbox-0000";
/// Used when `MONDAY_WEBHOOK_TOKEN` is unset locally: the path token of the Monday webhook route.
pub const LOCAL_MONDAY_WEBHOOK_TOKEN: &str = "local-monday-webhook-token";
const SANDBOX_API_KEY: &str = "sandbox-api-key";
/// How often the runner looks for accepted events no consumer took (`reconcile::resend_every`).
const RESEND_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

pub use enerflo_sync::runtime::CONSUMER_STAGES;

pub struct Runner {
    pub addr: SocketAddr,
    /// What the console's login form takes: `OPS_TOKEN`'s first value, or the one made up.
    pub ops_token: String,
    ops_token_generated: bool,
    pub config: Config,
    pub ports: Ports,
    pub queue: Arc<EmbeddedQueue>,
    pub sandbox: Option<Arc<Sandbox>>,
    pub inbox: Option<Arc<Inbox>>,
    /// The reconciliation engine (the interval sweep and `/local/reconcile` runs share it, and its
    /// per-minute budget).
    pub reconciler: Arc<enerflo_sync::reconcile::Reconciler>,
    jobs: Arc<reconcile::Jobs>,
    /// The local HubSpot sandbox, when `CRM_CONNECTOR=hubspot` has no token.
    pub hubspot: Option<Arc<fakes::hubspot::HubSpotFake>>,
    /// The local Salesforce sandbox, when `CRM_CONNECTOR=salesforce` has no login URL.
    pub salesforce: Option<Arc<fakes::salesforce::SalesforceFake>>,
    /// The local Monday.com sandbox, when `CRM_CONNECTOR=monday` has no token.
    pub monday: Option<Arc<fakes::monday::MondayFake>>,
    pub webhook_token: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Clone)]
struct AppState {
    router: Arc<Router>,
    console: Arc<Console>,
    max_body: usize,
}

pub async fn start(config: Config) -> anyhow::Result<Runner> {
    start_with_enerflo(config, None).await
}

/// [`start`], with the Enerflo client supplied instead of built from `config` (`None`: built).
/// For load tests, which need a client without the 240 requests/minute limit real Enerflo keys get.
pub async fn start_with_enerflo(
    config: Config,
    enerflo: Option<Arc<dyn EnerfloApi>>,
) -> anyhow::Result<Runner> {
    start_with_workers(config, enerflo, workers_per_stage()?).await
}

/// [`start_with_enerflo`] with `workers` messages per stage at once instead of
/// `WORKERS_PER_STAGE`'s.
pub async fn start_with_workers(
    mut config: Config,
    enerflo: Option<Arc<dyn EnerfloApi>>,
    workers: usize,
) -> anyhow::Result<Runner> {
    // First: the database's lock is what keeps a second runner off this DATA_DIR, before it
    // binds a port or touches any file there.
    let db = open_database(Some(&config.data_dir)).map_err(|e| {
        let dir = config.data_dir.display();
        if is_in_use(&e) {
            anyhow::anyhow!(
                "DATA_DIR {dir} is in use by another process (another local runner?): stop the other runner, or set DATA_DIR to another directory"
            )
        } else {
            anyhow::Error::new(e).context(format!("DATA_DIR {dir}"))
        }
    })?;
    let listener = tokio::net::TcpListener::bind(&config.listen_addr)
        .await
        .with_context(|| format!("LISTEN_ADDR {} cannot be bound", config.listen_addr))?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");

    let webhook_token = if config.webhook_tokens.is_empty() {
        config.webhook_tokens = SecretSet::parse(LOCAL_WEBHOOK_TOKEN);
        LOCAL_WEBHOOK_TOKEN.to_owned()
    } else {
        "<your WEBHOOK_TOKEN>".to_owned()
    };
    if config.crm_inbound_tokens.is_empty() {
        config.crm_inbound_tokens = SecretSet::parse(LOCAL_CRM_TOKEN);
    }
    let ops_token_generated = config.ops_tokens.is_empty();
    if ops_token_generated {
        // A fresh one per start, printed in the banner: the console is never open without one.
        let bytes: Vec<u8> = (0..24).map(|_| fastrand::u8(..)).collect();
        config.ops_tokens =
            SecretSet::parse(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    }
    let ops_token = config
        .ops_tokens
        .first()
        .map(|s| s.expose().to_owned())
        .unwrap_or_default();

    let sandbox = if config.enerflo_api_key.is_none() {
        config.enerflo_base_url = format!("{base}/sandbox/enerflo");
        config.enerflo_api_key = Some(Secret::new(SANDBOX_API_KEY));
        let sb = Sandbox::new(SANDBOX_API_KEY, config.fields.clone());
        sb.seed(sandbox_records()?);
        Some(sb)
    } else {
        None
    };
    let salesforce = if config.crm_connector == CrmConnectorKind::Salesforce
        && config.salesforce.login_url.is_none()
    {
        let opts = fakes::salesforce::FakeOptions::default().with_enerflo_fields();
        let sf = &mut config.salesforce;
        sf.login_url = Some(format!("{base}/sandbox/salesforce"));
        sf.client_id = Some(opts.client_id.clone());
        sf.client_secret = Some(Secret::new(opts.client_secret.clone()));
        sf.org_id.get_or_insert_with(|| opts.org_id.clone());
        Some(fakes::salesforce::SalesforceFake::new(opts))
    } else {
        None
    };
    let hubspot = if config.crm_connector == CrmConnectorKind::HubSpot
        && config.hubspot.access_token.is_none()
    {
        config.hubspot.access_token = Some(Secret::new(SANDBOX_HUBSPOT_TOKEN));
        config.hubspot.base_url = format!("{base}/sandbox/hubspot");
        let fake = fakes::hubspot::HubSpotFake::new(fakes::hubspot::FakeOptions {
            token: SANDBOX_HUBSPOT_TOKEN.into(),
            ..fakes::hubspot::FakeOptions::default()
        });
        if let Some(profile) = &config.crm_profile {
            // What `enerflo-sync-ops hubspot setup` would create in a real portal.
            fakes::hubspot::seed_profile(&fake, profile);
        }
        Some(fake)
    } else {
        None
    };
    if config.crm_connector == CrmConnectorKind::Monday && config.monday.webhook_tokens.is_empty() {
        config.monday.webhook_tokens = SecretSet::parse(LOCAL_MONDAY_WEBHOOK_TOKEN);
    }
    let monday =
        if config.crm_connector == CrmConnectorKind::Monday && config.monday.api_token.is_none() {
            config.monday.api_token = Some(Secret::new(SANDBOX_MONDAY_TOKEN));
            config.monday.api_url = format!("{base}/sandbox/monday/v2");
            let fake = fakes::monday::MondayFake::new(fakes::monday::FakeOptions {
                token: SANDBOX_MONDAY_TOKEN.into(),
                ..fakes::monday::FakeOptions::default()
            });
            if let Some(profile) = &config.crm_profile {
                // What `enerflo-sync-ops monday setup` would create on a real account.
                let (customers, projects) = fakes::monday::seed_profile(&fake, profile);
                config.monday.customers_board = Some(customers.to_string());
                config.monday.projects_board = Some(projects.to_string());
            }
            Some(fake)
        } else {
            None
        };
    let inbox =
        if config.crm_connector == CrmConnectorKind::Webhook && config.crm_webhook_url.is_none() {
            let secret = match config.crm_webhook_secret.clone() {
                Some(s) => s,
                None => {
                    let key: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
                    let text = format!(
                        "whsec_{}",
                        base64::engine::general_purpose::STANDARD.encode(key)
                    );
                    SigningSecret::parse(&text).map_err(anyhow::Error::msg)?
                }
            };
            config.crm_webhook_url = Some(format!("{base}/crm-inbox/events"));
            config.crm_webhook_secret = Some(secret.clone());
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("DATA_DIR {}", config.data_dir.display()))?;
            Some(Inbox::new(
                secret,
                Some(config.data_dir.join("crm-inbox.jsonl")),
            ))
        } else {
            None
        };

    let store = Arc::new(EmbeddedStore::new(db.clone()));
    let queue = Arc::new(EmbeddedQueue::new(db, CONSUMER_STAGES.iter().copied()));
    // Nothing is in flight at start: whatever a killed process had received is visible again.
    queue
        .recover_in_flight()
        .map_err(|e| anyhow::anyhow!("queue recovery: {e}"))?;
    // ... and no entity is being synced: locks a killed process held would stall their entities.
    store
        .clear_entity_locks()
        .map_err(|e| anyhow::anyhow!("lock recovery: {e}"))?;
    let ports = Ports::one_store(store.clone(), queue.clone());
    // On the running runner's own store and queue (the CLI needs it stopped; the console not).
    let console = Arc::new(Console::new(
        enerflo_sync::ops::Backend {
            xref: store.clone(),
            log: store.clone(),
            state: store,
            queue: queue.clone(),
            dlq: queue.clone(),
            stages: CONSUMER_STAGES.to_vec(),
        },
        config.ops_tokens.clone(),
        Scheme::Http,
    ));

    // Checked once, with the sandboxes' values filled in above: every missing value named.
    let (enerflo_access, crm_access, monday_inbound) = (
        config.enerflo_access()?,
        config.crm_access()?,
        config.monday_inbound()?,
    );
    // The sweep's own client (its own per-minute limit), unless a client was supplied.
    let sweep_enerflo = match &enerflo {
        Some(client) => client.clone(),
        None => {
            enerflo_sync::reconcile::enerflo_client(&enerflo_access, config.reconcile.per_minute)?
        }
    };
    let enerflo: Arc<dyn EnerfloApi> = match enerflo {
        Some(client) => client,
        None => runtime::enerflo_client(&enerflo_access)?,
    };
    // With HubSpot, one API client (one 10-second budget) for the connector and the notes poll;
    // with Monday.com, one client for the connector and the webhook route (one view of the budgets).
    let (crm, hubspot_api, monday_api): (Arc<dyn CrmConnector>, _, _) = match &crm_access {
        CrmAccess::HubSpot(hubspot) => {
            let api = runtime::hubspot_api(&hubspot.api)?;
            let crm = runtime::hubspot_connector_with(hubspot, api.clone());
            (Arc::new(crm), Some(api), None)
        }
        CrmAccess::Monday(monday) => {
            let api = runtime::monday_api(&monday.api, &ports)?;
            let crm = runtime::monday_connector(monday, &ports, api.clone());
            (Arc::new(crm), None, Some(api))
        }
        other => (runtime::crm_connector(other, &ports)?, None, None),
    };
    let (leads, milestones, status, notes) = (
        runtime::leads_route(&config, &ports, enerflo.clone()),
        runtime::milestone_route(&config, &ports, enerflo.clone()),
        runtime::status_route(&config, &ports, enerflo.clone()),
        runtime::notes_route(&config, &ports, enerflo.clone()),
    );
    let ingest = Arc::new(runtime::webhook_ingest(&config, &ports));
    let mut router = Router {
        webhook: Some(ingest.clone()),
        crm_tokens: config.crm_inbound_tokens.clone(),
        // Also enforced below for every route while reading the body; here as in Lambda.
        max_body_bytes: Some(config.max_body_bytes),
        leads: Some(leads.clone()),
        notes: Some(notes.clone()),
        milestones: Some(milestones.clone()),
        status: Some(status.clone()),
        hubspot: runtime::hubspot_routes(&config),
        calls: Some(ports.call_log(&config)),
        monday: Some(runtime::monday_route(
            monday_inbound.as_ref(),
            &config,
            &ports,
            enerflo.clone(),
            monday_api.clone(),
        )),
        ..Router::default()
    };
    // POST /crm/salesforce/outbound-message: on the same handlers, as the status function has.
    router.set(
        Route::SalesforceOutboundMessage,
        runtime::salesforce_outbound_message(
            &config,
            &ports,
            leads.clone(),
            status.clone(),
            milestones.clone(),
        ),
    );
    // POST /crm/salesforce/{lead|status|milestone|note} (Flow callouts) and
    // /crm/hubspot/{lead|status|milestone} (workflows): the same handlers behind them.
    for (route, canonical) in [
        (Route::SalesforceLead, leads.clone()),
        (Route::SalesforceStatus, status.clone()),
        (Route::SalesforceMilestone, milestones.clone()),
        (Route::SalesforceNote, notes),
    ] {
        if let Some(h) = runtime::salesforce_flow(route, &config, &ports, canonical) {
            router.set(route, h);
        }
    }
    for (route, canonical) in [
        (Route::HubSpotLead, leads),
        (Route::HubSpotStatus, status),
        (Route::HubSpotMilestone, milestones),
    ] {
        if let Some(h) = runtime::hubspot_workflow(route, &config, &ports, canonical) {
            router.set(route, h);
        }
    }

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for &stage in CONSUMER_STAGES {
        let consumer = runtime::consumer_for(stage, &config, &ports, enerflo.clone(), crm.clone())
            .ok_or_else(|| anyhow::anyhow!("no consumer for stage {stage}"))?;
        tasks.push(tokio::spawn(run_stage(
            stage,
            Arc::new(consumer),
            queue.clone(),
            workers,
            shutdown_rx.clone(),
        )));
    }

    let reconciler = Arc::new(enerflo_sync::reconcile::Reconciler::from_config(
        &config,
        &ports,
        sweep_enerflo,
    ));
    let jobs = reconcile::Jobs::new(reconciler.clone(), config.crm_inbound_tokens.clone());
    // Always on (not only with RECONCILE_INTERVAL_SECS): it calls no other system.
    tasks.push(tokio::spawn(reconcile::resend_every(
        ingest,
        RESEND_INTERVAL,
        enerflo_sync::http::webhook::RESEND_AFTER,
        shutdown_rx.clone(),
    )));
    if let Some(interval) = config.reconcile.interval {
        tasks.push(tokio::spawn(reconcile::every(
            reconciler.clone(),
            interval,
            shutdown_rx.clone(),
        )));
    }

    let state = AppState {
        router: Arc::new(router),
        console,
        max_body: config.max_body_bytes,
    };
    let mut app = axum::Router::new();
    if let Some(sb) = &sandbox {
        app = app.nest("/sandbox/enerflo", sb.router());
    }
    if let Some(ib) = &inbox {
        app = app.nest("/crm-inbox", ib.router());
    }
    if let Some(hs) = &hubspot {
        app = app.nest("/sandbox/hubspot", hs.router());
    }
    if let Some(sf) = &salesforce {
        app = app.nest("/sandbox/salesforce", sf.router());
    }
    if let Some(m) = &monday {
        app = app.nest("/sandbox/monday", m.router());
        // Like `monday setup`, the sandbox's boards send their webhooks to this runner.
        if let (Some(inbound), Some(token)) =
            (&monday_inbound, config.monday.webhook_tokens.first())
        {
            let profile = &inbound.profile;
            let boards = inbound
                .boards
                .clone()
                .into_iter()
                .filter_map(|(o, id)| Some((o, id.parse::<u64>().ok()?)))
                .collect();
            let url = format!("{base}/crm/monday/webhooks/{}", token.expose());
            fakes::monday::seed_webhooks(m, profile, &boards, &url);
        }
    }
    let app = app
        .nest("/local", jobs.router())
        // The counters the Lambdas emit as EMF lines (shared/src/metrics.rs), in Prometheus text.
        .route("/metrics", axum::routing::get(prometheus_metrics))
        .fallback(move |req: axum::extract::Request| serve(state.clone(), req))
        .layer(axum::extract::DefaultBodyLimit::disable());
    if let Some(sb) = &sandbox {
        // Like the real platform, the sandbox fires webhooks after writes, back into this runner.
        let token = config
            .webhook_tokens
            .first()
            .map_or(LOCAL_WEBHOOK_TOKEN, |s| s.expose())
            .to_owned();
        sb.set_webhook_url(format!("{base}/enerflo/webhooks/{token}"));
    }
    let mut rx = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "http server stopped");
        }
    }));

    if let Some(api) = hubspot_api {
        // HubSpot sends no webhook for notes: poll, as `hubspot-notes-poll` does on its schedule.
        let poll = runtime::hubspot_notes_poll(&config, &ports, enerflo.clone(), api);
        tasks.push(tokio::spawn(notes_poll(
            poll,
            config.hubspot.notes_poll_interval,
            shutdown_rx.clone(),
        )));
    }

    Ok(Runner {
        addr,
        ops_token,
        ops_token_generated,
        config,
        ports,
        queue,
        sandbox,
        inbox,
        reconciler,
        jobs,
        hubspot,
        salesforce,
        monday,
        webhook_token,
        shutdown,
        tasks,
    })
}

/// `WORKERS_PER_STAGE` when unset: messages of one stage processed at once (of as many groups).
pub const DEFAULT_WORKERS_PER_STAGE: usize = 8;

/// `WORKERS_PER_STAGE`: how many messages of one stage the runner processes at once, each of
/// its own FIFO group (default [`DEFAULT_WORKERS_PER_STAGE`], at most 64).
fn workers_per_stage() -> anyhow::Result<usize> {
    match std::env::var("WORKERS_PER_STAGE") {
        Err(_) => Ok(DEFAULT_WORKERS_PER_STAGE),
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| {
                anyhow::anyhow!("WORKERS_PER_STAGE must be a whole number from 1 to 64, not `{v}`")
            }),
    }
}

/// `SANDBOX_RECORDS`: how many fake installs and customers the sandbox seeds (default 300).
fn sandbox_records() -> anyhow::Result<usize> {
    match std::env::var("SANDBOX_RECORDS") {
        Err(_) => Ok(sandbox::DEFAULT_RECORDS),
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| anyhow::anyhow!("SANDBOX_RECORDS must be a whole number up to 10000")),
    }
}

impl Runner {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn print_banner(&self) {
        println!(
            "enerflo-crm-sync local runner listening on http://{}",
            self.addr
        );
        println!("  data dir:        {}", self.config.data_dir.display());
        println!("  metrics:         GET {}", self.url("/metrics"));
        println!(
            "  Enerflo webhook: POST {}",
            self.url(&format!("/enerflo/webhooks/{}", self.webhook_token))
        );
        match &self.sandbox {
            Some(_) => println!(
                "  Enerflo:         local sandbox at {} (calls: GET {})",
                self.url("/sandbox/enerflo"),
                self.url("/sandbox/enerflo/calls")
            ),
            None => println!("  Enerflo:         {}", self.config.enerflo_base_url),
        }
        if self.salesforce.is_some() {
            println!(
                "  CRM:             Salesforce sandbox; its records: {} (JSON: {})",
                self.url("/sandbox/salesforce"),
                self.url("/sandbox/salesforce/_fake/records.json")
            );
            return;
        }
        if self.monday.is_some() {
            println!(
                "  CRM:             Monday.com sandbox; its boards: {} (webhooks to POST {})",
                self.url("/sandbox/monday/_fake/state.json"),
                self.url("/crm/monday/webhooks/<MONDAY_WEBHOOK_TOKEN>")
            );
            return;
        }
        match (&self.inbox, &self.hubspot) {
            (Some(_), _) => println!(
                "  CRM:             local inbox; see what arrived: GET {}",
                self.url("/crm-inbox/events")
            ),
            (None, Some(_)) => println!(
                "  CRM:             HubSpot sandbox; its records: {} (JSON: {})",
                self.url("/sandbox/hubspot"),
                self.url("/sandbox/hubspot/_fake/records.json")
            ),
            (None, None) if self.config.crm_connector == CrmConnectorKind::HubSpot => println!(
                "  CRM:             HubSpot at {}",
                self.config.hubspot.base_url
            ),
            (None, None) => println!(
                "  CRM:             webhook connector -> {}",
                self.config.crm_webhook_url.as_deref().unwrap_or("")
            ),
        }
        if self.ops_token_generated {
            println!(
                "  Console:         {} (OPS_TOKEN was not set; sign in with this one, new at each start: {})",
                self.url("/ops/"),
                self.ops_token
            );
        } else {
            println!(
                "  Console:         {} (sign in with your OPS_TOKEN)",
                self.url("/ops/")
            );
        }
    }

    pub async fn shutdown(self) {
        self.jobs.stop_and_wait().await;
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        // A write whose caller stopped waiting (a task cut off above) may sit in the open shared
        // transaction (shared/src/embedded_db.rs): committed now, so a restart finds it.
        if let Err(e) = self.queue.flush().await {
            tracing::warn!(error = %e, "final flush failed; a restart redelivers the last acknowledged messages, which are found done");
        }
    }
}

/// How long a received message stays hidden from other receives while a worker has it.
const VISIBILITY: Duration = Duration::from_secs(120);
/// How often an idle stage looks for messages that became visible (a deferred retry's delay
/// ran out). A sent message wakes it at once ([`EmbeddedQueue::sent`]).
const IDLE_POLL: Duration = Duration::from_millis(50);

/// Runs one stage's consumer on up to `workers` messages at once until shutdown, then lets those
/// it started finish.
///
/// Order within a FIFO group is the queue's: a receive hands out only the oldest message of a
/// group, and only while no message of that group is in flight or deferred
/// (`shared/src/queue/embedded.rs`). So a group's next message is received only once its previous
/// one was acknowledged (done or dead-lettered), and a failing message holds its group back
/// (deferred, or in flight until its visibility timeout) while other groups go on, as on SQS
/// FIFO. Messages of different groups run in parallel, one task each; finished ones are
/// acknowledged together, in one commit, before the next receive.
pub async fn run_stage(
    stage: Stage,
    consumer: Arc<Consumer>,
    queue: Arc<EmbeddedQueue>,
    workers: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let workers = workers.max(1);
    let mut running: tokio::task::JoinSet<Option<String>> = tokio::task::JoinSet::new();
    let mut done: Vec<String> = Vec::new();
    let finished = |result: Result<Option<String>, tokio::task::JoinError>,
                    done: &mut Vec<String>| match result {
        Ok(Some(receipt)) => done.push(receipt),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, stage = stage.as_str(), "a worker failed; its message is redelivered after its visibility timeout")
        }
    };
    loop {
        while let Some(result) = running.try_join_next() {
            finished(result, &mut done);
        }
        ack(&queue, stage, &mut done).await;
        if *shutdown.borrow() {
            break;
        }
        let free = workers - running.len();
        let batch = if free == 0 {
            Vec::new()
        } else {
            match queue.receive(stage, free, VISIBILITY).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, stage = stage.as_str(), "queue receive failed");
                    Vec::new()
                }
            }
        };
        let received = batch.len();
        for delivery in batch {
            let consumer = consumer.clone();
            running.spawn(async move {
                let disposition = consumer
                    .process_batch(std::slice::from_ref(&delivery))
                    .await;
                // Retry: deferred (or left to its visibility timeout); it stays, holding its group.
                (disposition.first() == Some(&Disposition::Done)).then_some(delivery.receipt)
            });
        }
        if received > 0 && received == free {
            // Every worker is busy: wait for one below. Otherwise more may be waiting now.
        } else if received > 0 {
            continue;
        }
        tokio::select! {
            Some(result) = running.join_next(), if !running.is_empty() => finished(result, &mut done),
            _ = queue.sent(stage), if running.len() < workers => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
            _ = shutdown.changed() => {}
        }
    }
    while let Some(result) = running.join_next().await {
        finished(result, &mut done);
    }
    ack(&queue, stage, &mut done).await;
}

async fn ack(queue: &EmbeddedQueue, stage: Stage, done: &mut Vec<String>) {
    if done.is_empty() {
        return;
    }
    if let Err(e) = queue.ack_all(stage, done.iter().map(String::as_str)).await {
        tracing::error!(error = %e, "ack failed; the messages will be redelivered and found unchanged");
    }
    done.clear();
}

/// Polls HubSpot for notes every `every` (`HUBSPOT_NOTES_POLL_SECS`) until shutdown.
async fn notes_poll(poll: NotesPoll, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        match poll.run_once(enerflo_sync::timefmt::now_millis()).await {
            Ok(report) if report.stopped.is_some() => {
                tracing::warn!(
                    ?report,
                    "HubSpot notes poll stopped early; the next run retries"
                );
            }
            Ok(report) => tracing::debug!(?report, "HubSpot notes poll"),
            Err(e) => tracing::warn!(error = %e, "HubSpot notes poll failed; the next run retries"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn prometheus_metrics() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        enerflo_sync::metrics::prometheus_text(),
    )
        .into_response()
}

async fn serve(state: AppState, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, state.max_body + 1).await {
        Ok(b) if b.len() <= state.max_body => b,
        _ => return to_axum(Problem::too_large(state.max_body).into_response()),
    };
    let req = HttpRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body: bytes,
    };
    if req.path == "/" {
        let mut resp = Body::empty().into_response();
        *resp.status_mut() = http::StatusCode::SEE_OTHER;
        resp.headers_mut().insert(
            http::header::LOCATION,
            http::HeaderValue::from_static("/ops/"),
        );
        return resp;
    }
    if Console::serves(&req.path) {
        return to_axum(state.console.handle(req).await);
    }
    to_axum(state.router.handle(req).await)
}

fn to_axum(resp: enerflo_sync::http::HttpResponse) -> Response {
    let mut out = Body::from(resp.body).into_response();
    *out.status_mut() = resp.status;
    *out.headers_mut() = resp.headers;
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use enerflo_sync::store::{EntityKind, IdForm, IdRef};

    use super::fakes::hubspot::ObjectType;
    use super::*;

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `make run` with `CRM_CONNECTOR=hubspot` and no token: the HubSpot sandbox, polled for notes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_crm_connector_hubspot_the_runner_polls_hubspot_notes_into_enerflo_once() {
        let dir = std::env::temp_dir().join(format!("hsin-notes-poll-{}", fastrand::u64(..)));
        let vars: HashMap<&str, String> = [
            ("CRM_CONNECTOR", "hubspot".to_owned()),
            ("HUBSPOT_NOTES_POLL_SECS", "1".to_owned()),
            ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("DATA_DIR", dir.display().to_string()),
        ]
        .into_iter()
        .collect();
        let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
        let runner = start(config).await.unwrap();
        let sandbox = runner.sandbox.clone().expect("the Enerflo sandbox");
        let hubspot = runner.hubspot.clone().expect("the HubSpot sandbox");
        // GIVEN a deal that is the synced project of install 700001
        let deal = hubspot
            .seed_record(
                ObjectType::Deal,
                &[
                    ("dealname", "Example"),
                    ("pipeline", "default"),
                    ("dealstage", "appointmentscheduled"),
                ],
            )
            .unwrap();
        runner
            .ports
            .xref
            .link(
                EntityKind::Project,
                &[
                    IdRef::new(IdForm::Install, 700001),
                    IdRef::new(IdForm::Crm, &deal),
                ],
            )
            .await
            .unwrap();
        // WHEN a note is written on it in HubSpot, beside one of ours (pushed from Enerflo)
        let now = enerflo_sync::timefmt::now_millis().to_string();
        for props in [
            vec![
                ("hs_note_body", "<p>Roof photos uploaded</p>"),
                ("hs_timestamp", now.as_str()),
            ],
            vec![
                ("hs_note_body", "<p>From Enerflo</p>"),
                ("hs_timestamp", now.as_str()),
                ("enerflo_note_id", "30000"),
            ],
        ] {
            let note = hubspot.seed_record(ObjectType::Note, &props).unwrap();
            hubspot
                .seed_association(ObjectType::Note, &note, ObjectType::Deal, &deal)
                .unwrap();
        }
        let posted = || {
            sandbox
                .calls()
                .iter()
                .filter(|c| c.as_str() == "POST /api/v3/installs/700001/notes")
                .count()
        };
        let searches = || {
            hubspot
                .calls()
                .iter()
                .filter(|c| c.path.ends_with("/notes/search") && c.status == 200)
                .count()
        };
        // THEN a poll (once HubSpot's search has indexed it) brings the HubSpot note to Enerflo
        until("the note in Enerflo", || posted() >= 1).await;
        // ... and two polls later there is still that one, and ours was never sent
        let seen = searches();
        until("two more polls", || searches() >= seen + 2).await;
        assert_eq!(posted(), 1);
        runner.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
