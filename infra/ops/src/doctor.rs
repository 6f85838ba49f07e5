//! `enerflo-sync-ops doctor`: checks, with the functions' own variables, what a first deploy
//! needs to work, and prints what to configure on both sides.
//!
//! - the Enerflo key, with one cheap authenticated call (`GET /api/v3/install-statuses`), and
//!   the company's install statuses it lists (what `STATUS_*_NAMES` are matched against);
//! - with `--install <id>`, the milestone ids that install carries (Enerflo lists no milestone
//!   definitions), checked against `MILESTONE_KEY_MAP`;
//! - the CRM connector: `webhook` gets a signed test event (`type: sync.test`) and the answer is
//!   shown; `hubspot` one read with the token (the deal pipeline: the token, its deals scope and
//!   `HUBSPOT_PIPELINE`); `salesforce` one token fetch;
//! - per Enerflo event of the stage registry, the exact URL to subscribe in Enerflo 1.0 or 2.0,
//!   and the routes, with their header, the CRM calls.
//!
//! Each thing wrong is a [`Check`] with a stable name (`enerflo-key-rejected`,
//! `crm-signature-rejected`, ...); problems make the command exit 1, warnings do not. Secrets are
//! never printed, except the webhook token inside the subscription URLs: it is part of them.

use std::collections::BTreeSet;
use std::time::Duration;

use enerflo_sync::config::{Config, CrmConnectorKind};
use enerflo_sync::crm::CrmError;
use enerflo_sync::crm::hubspot::api::HubSpotError;
use enerflo_sync::crm::signature::sign;
use enerflo_sync::enerflo::EnerfloApi;
use enerflo_sync::enerflo::api_status::{InstallStatus, name_in};
use enerflo_sync::enerflo::client::EnerfloError;
use enerflo_sync::enerflo::lenient::{value_to_string, value_to_u64};
use enerflo_sync::registry::{ROUTES, STAGES};
use enerflo_sync::timefmt::{now_millis, now_rfc3339, now_unix};
use enerflo_sync::wire::{body_text, encode_segment, http_client, without_url};
use reqwest::Method;
use serde_json::{Value, json};

/// The event type of the test event sent to `CRM_WEBHOOK_URL`; receivers answer 2xx and ignore it.
pub const TEST_EVENT_TYPE: &str = "sync.test";

/// The scopes the HubSpot connector needs (docs/crm-connectors.md 2.2).
pub const HUBSPOT_SCOPES: &str = "crm.objects.contacts.read, crm.objects.contacts.write, \
     crm.objects.deals.read, crm.objects.deals.write, crm.schemas.contacts.write, \
     crm.schemas.deals.write";

#[derive(Clone, Debug)]
pub struct DoctorOptions {
    /// The API's public base URL (the stack's `ApiBaseUrl` output, or the local runner's).
    pub public_url: Option<String>,
    /// An install whose milestones to list.
    pub install: Option<u64>,
    /// How long each check may take, retries included.
    pub budget: Duration,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            public_url: None,
            install: None,
            budget: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Worth knowing; the command still exits 0.
    Warning,
    /// Something that keeps the sync from working: the command exits 1.
    Problem,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Problem => "PROBLEM",
        }
    }
}

/// One finding: `name` is stable (`enerflo-key`, `enerflo-key-rejected`, ...), `detail` says
/// what was seen and what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    pub detail: String,
}

/// An Enerflo webhook subscription: `version` `1.0` or `2.0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub version: &'static str,
    pub event: &'static str,
    pub stage: &'static str,
    pub url: String,
}

/// A call the CRM makes into the sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrmRoute {
    pub name: &'static str,
    pub method: &'static str,
    pub url: String,
}

#[derive(Clone, Debug)]
pub struct DoctorReport {
    pub connector: &'static str,
    pub checks: Vec<Check>,
    pub statuses: Vec<InstallStatus>,
    /// (milestone id, title) of `--install`.
    pub milestones: Vec<(u64, String)>,
    pub install: Option<u64>,
    /// What the CRM answered to the test event (`webhook` connector).
    pub crm_answer: Option<String>,
    pub subscriptions: Vec<Subscription>,
    pub crm_routes: Vec<CrmRoute>,
    /// How the CRM authenticates those calls.
    pub crm_auth: String,
}

impl DoctorReport {
    fn push(&mut self, name: &'static str, level: Level, detail: impl Into<String>) {
        self.checks.push(Check {
            name,
            level,
            detail: detail.into(),
        });
    }

    pub fn named(&self, level: Level) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.level == level)
            .map(|c| c.name)
            .collect()
    }

    pub fn has_problems(&self) -> bool {
        self.checks.iter().any(|c| c.level == Level::Problem)
    }

    pub fn summary(&self) -> String {
        let problems = self.named(Level::Problem).len();
        let warnings = self.named(Level::Warning).len();
        match problems {
            0 => format!("doctor: no problems ({warnings} warning(s))"),
            n => format!("doctor: {n} problem(s) to fix, {warnings} warning(s)"),
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = format!(
            "enerflo-sync-ops doctor (CRM_CONNECTOR={})\n\nChecks:\n",
            self.connector
        );
        for c in &self.checks {
            out.push_str(&format!(
                "  {:<8} {}: {}\n",
                c.level.as_str(),
                c.name,
                c.detail
            ));
        }
        if !self.statuses.is_empty() {
            out.push_str(
                "\nInstall statuses of the company (STATUS_ON_HOLD_NAMES, STATUS_VOIDED_NAMES, STATUS_COMPLETED_NAMES and CRM status names are matched against these names):\n",
            );
            for s in &self.statuses {
                out.push_str(&format!("  {:<6} {}\n", s.id, s.name));
            }
        }
        if let Some(install) = self.install
            && !self.milestones.is_empty()
        {
            out.push_str(&format!(
                "\nMilestones of install {install} (MILESTONE_KEY_MAP maps CRM keys to these ids, e.g. permits=<id>):\n"
            ));
            for (id, title) in &self.milestones {
                out.push_str(&format!("  {id:<6} {title}\n"));
            }
        }
        if let Some(answer) = &self.crm_answer {
            out.push_str(&format!(
                "\nCRM answer to the signed test event: {answer}\n"
            ));
        }
        for (version, heading) in [
            (
                "2.0",
                "Enerflo 2.0 webhooks (https://<partner>.enerflo.io/settings/webhooks), one subscription per event:",
            ),
            (
                "1.0",
                "Enerflo 1.0 webhooks (Company Settings -> Webhooks at https://enerflo.io/company/settings): each URL names its event with ?event=, as some 1.0 bodies (update_install, signed_change_order) carry no webhook_event; a body that does wins:",
            ),
        ] {
            out.push_str(&format!("\n{heading}\n"));
            for s in self.subscriptions.iter().filter(|s| s.version == version) {
                out.push_str(&format!("  {:<28} {}\n", s.event, s.url));
            }
        }
        out.push_str(&format!("\nCRM -> sync calls ({}):\n", self.crm_auth));
        for r in &self.crm_routes {
            out.push_str(&format!("  {:<5} {}\n", r.method, r.url));
        }
        out.push('\n');
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    pub fn to_json(&self) -> Value {
        json!({
            "connector": self.connector,
            "checks": self.checks.iter().map(|c| json!({
                "name": c.name, "level": c.level.as_str(), "detail": c.detail,
            })).collect::<Vec<_>>(),
            "install_statuses": self.statuses.iter().map(|s| json!({"id": s.id, "name": s.name})).collect::<Vec<_>>(),
            "install": self.install,
            "milestones": self.milestones.iter().map(|(id, title)| json!({"id": id, "title": title})).collect::<Vec<_>>(),
            "crm_answer": self.crm_answer,
            "subscriptions": self.subscriptions.iter().map(|s| json!({
                "enerflo": s.version, "event": s.event, "stage": s.stage, "url": s.url,
            })).collect::<Vec<_>>(),
            "crm_routes": self.crm_routes.iter().map(|r| json!({
                "name": r.name, "method": r.method, "url": r.url,
            })).collect::<Vec<_>>(),
            "crm_auth": self.crm_auth,
            "problems": self.named(Level::Problem).len(),
            "summary": self.summary(),
        })
    }
}

fn connector_name(kind: &CrmConnectorKind) -> &'static str {
    match kind {
        CrmConnectorKind::Webhook => "webhook",
        CrmConnectorKind::HubSpot => "hubspot",
        CrmConnectorKind::Salesforce => "salesforce",
        CrmConnectorKind::Monday => "monday",
    }
}

/// Runs every check; see the module comment.
pub async fn doctor(config: &Config, options: &DoctorOptions) -> DoctorReport {
    let mut report = DoctorReport {
        connector: connector_name(&config.crm_connector),
        checks: Vec::new(),
        statuses: Vec::new(),
        milestones: Vec::new(),
        install: options.install,
        crm_answer: None,
        subscriptions: Vec::new(),
        crm_routes: Vec::new(),
        crm_auth: String::new(),
    };
    check_enerflo(config, options, &mut report).await;
    match config.crm_connector {
        CrmConnectorKind::Webhook => check_webhook_crm(config, options, &mut report).await,
        CrmConnectorKind::HubSpot => check_hubspot(config, &mut report).await,
        CrmConnectorKind::Salesforce => check_salesforce(config, &mut report).await,
        CrmConnectorKind::Monday => report.push(
            "monday-not-checked",
            Level::Warning,
            "CRM_CONNECTOR=monday: `enerflo-sync-ops monday setup` checks the token, the boards and their columns",
        ),
    }
    urls(config, options, &mut report);
    report
}

// ---- Enerflo ---------------------------------------------------------------------------------

fn enerflo_problem(e: &EnerfloError, base: &str, call: &str) -> (&'static str, String) {
    match e {
        EnerfloError::Rejected {
            status: status @ (401 | 403),
            message,
        } => (
            "enerflo-key-rejected",
            format!(
                "Enerflo refused ENERFLO_API_KEY ({status} to {call}: {message}); use an API key of this company's Enerflo account"
            ),
        ),
        EnerfloError::NotFound { .. } => (
            "enerflo-base-url",
            format!(
                "ENERFLO_BASE_URL {base} answered 404 to {call}: not Enerflo's REST API (the default is https://enerflo.io)"
            ),
        ),
        EnerfloError::RateLimited { retry_after } => (
            "enerflo-rate-limited",
            format!(
                "Enerflo answered 429 to {call} (retry after {retry_after:?}): this key's 300 calls a minute are spent, by the sync or by another integration"
            ),
        ),
        EnerfloError::Unavailable {
            status: None,
            detail,
            ..
        } => (
            "enerflo-unreachable",
            format!("no answer from ENERFLO_BASE_URL {base} to {call}: {detail}"),
        ),
        EnerfloError::Unavailable {
            status: Some(status),
            detail,
            ..
        } => (
            "enerflo-unavailable",
            format!("Enerflo answered {status} to {call}: {detail}"),
        ),
        EnerfloError::BadBody { .. } => (
            "enerflo-unexpected-answer",
            format!(
                "{e} to {call}: ENERFLO_BASE_URL {base} may be a web page rather than the REST API"
            ),
        ),
        EnerfloError::Rejected { status, message } => (
            "enerflo-rejected",
            format!("Enerflo answered {status} to {call}: {message}"),
        ),
    }
}

async fn check_enerflo(config: &Config, options: &DoctorOptions, report: &mut DoctorReport) {
    let base = config.enerflo_base_url.clone();
    if config.enerflo_api_key.is_none() {
        report.push(
            "enerflo-api-key-missing",
            Level::Problem,
            "ENERFLO_API_KEY is not set: every stage hydrates from Enerflo and every CRM change is written with it",
        );
        return;
    }
    let client = match config
        .enerflo_access()
        .and_then(|enerflo| enerflo_sync::runtime::enerflo_client(&enerflo))
    {
        Ok(c) => c,
        Err(e) => {
            report.push("enerflo-client", Level::Problem, e.to_string());
            return;
        }
    };
    let call = "GET /api/v3/install-statuses";
    match client.install_statuses(options.budget).await {
        Ok(list) if list.is_empty() => report.push(
            "enerflo-unexpected-answer",
            Level::Problem,
            format!(
                "{call} answered without a status list (an array, or one under data, of {{id, name}}): ENERFLO_BASE_URL {base} may not be Enerflo's REST API"
            ),
        ),
        Ok(list) => {
            report.push(
                "enerflo-key",
                Level::Ok,
                format!(
                    "ENERFLO_API_KEY works at {base} ({call}: {} install statuses)",
                    list.len()
                ),
            );
            report.statuses = list;
            check_status_names(config, report);
        }
        Err(e) => {
            let (name, detail) = enerflo_problem(&e, &base, call);
            report.push(name, Level::Problem, detail);
            return;
        }
    }
    check_milestones(config, options, client.as_ref(), report).await;
}

fn check_status_names(config: &Config, report: &mut DoctorReport) {
    let fields = &config.fields;
    for (var, names) in [
        ("STATUS_ON_HOLD_NAMES", &fields.on_hold_names),
        ("STATUS_VOIDED_NAMES", &fields.voided_names),
        ("STATUS_COMPLETED_NAMES", &fields.completed_names),
    ] {
        let matched: Vec<&str> = report
            .statuses
            .iter()
            .filter(|s| name_in(&s.name, names))
            .map(|s| s.name.as_str())
            .collect();
        if matched.is_empty() {
            report.push(
                "status-names",
                Level::Warning,
                format!(
                    "{var} ({}) matches none of the company's install statuses: set it to the name this company uses (listed below), or the flag it sets is never set",
                    names.join(", ")
                ),
            );
        } else {
            report.push(
                "status-names",
                Level::Ok,
                format!("{var} matches {}", matched.join(", ")),
            );
        }
    }
}

/// The milestones an install object lists: `all_milestones[]` (else `milestones[]`), at the root
/// or under `data` / `install`; each `milestone_id` (else `id`) with its `title` (else `name`).
pub fn install_milestones(install: &Value) -> Vec<(u64, String)> {
    let roots = [install, &install["data"], &install["install"]];
    let Some(items) = roots.iter().find_map(|r| {
        ["all_milestones", "milestones"]
            .iter()
            .find_map(|k| r.get(*k).and_then(Value::as_array))
    }) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|m| {
            let id = m
                .get("milestone_id")
                .and_then(value_to_u64)
                .or_else(|| m.get("id").and_then(value_to_u64))?;
            let title = ["title", "name"]
                .iter()
                .find_map(|k| m.get(*k).and_then(value_to_string))
                .unwrap_or_default();
            Some((id, title))
        })
        .collect()
}

async fn check_milestones(
    config: &Config,
    options: &DoctorOptions,
    client: &dyn EnerfloApi,
    report: &mut DoctorReport,
) {
    let keys = &config.fields.milestone_keys;
    let Some(install) = options.install else {
        report.push(
            "milestones-unlisted",
            Level::Warning,
            if keys.is_empty() {
                "Enerflo lists no milestone definitions: pass --install <an install id> to list the milestone ids an install carries (what MILESTONE_KEY_MAP needs)".to_owned()
            } else {
                "MILESTONE_KEY_MAP is not checked: pass --install <an install id> to check its ids against the install's milestones".to_owned()
            },
        );
        return;
    };
    let call = format!("GET /api/v3/installs/{install}");
    match client
        .send(Method::GET, &format!("/api/v3/installs/{install}"), None, options.budget)
        .await
    {
        Err(EnerfloError::NotFound { .. }) => report.push(
            "install-not-found",
            Level::Problem,
            format!("Enerflo has no install {install} ({call} answered 404): pass the id of an install of this company"),
        ),
        Err(e) => {
            let (name, detail) = enerflo_problem(&e, &config.enerflo_base_url, &call);
            report.push(name, Level::Problem, detail);
        }
        Ok(answer) => {
            report.milestones = install_milestones(&answer.body);
            if report.milestones.is_empty() {
                report.push(
                    "milestones-unlisted",
                    Level::Warning,
                    format!("install {install} lists no milestones (all_milestones or milestones): try an install further along"),
                );
                return;
            }
            report.push(
                "milestones",
                Level::Ok,
                format!(
                    "install {install} lists {} milestones",
                    report.milestones.len()
                ),
            );
            let seen: BTreeSet<u64> = report.milestones.iter().map(|(id, _)| *id).collect();
            for (key, id) in keys {
                if !seen.contains(id) {
                    report.push(
                        "milestone-key-unknown",
                        Level::Problem,
                        format!(
                            "MILESTONE_KEY_MAP {key}={id}: install {install} has no milestone {id} (its ids: {})",
                            seen.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
            }
        }
    }
}

// ---- CRM -------------------------------------------------------------------------------------

async fn check_webhook_crm(config: &Config, options: &DoctorOptions, report: &mut DoctorReport) {
    let Some(url) = config.crm_webhook_url.clone() else {
        report.push(
            "crm-webhook-url-missing",
            Level::Problem,
            "CRM_WEBHOOK_URL is not set: CRM_CONNECTOR=webhook posts every event there",
        );
        return;
    };
    let Some(secret) = config.crm_webhook_secret.clone() else {
        report.push(
            "crm-webhook-secret-missing",
            Level::Problem,
            "CRM_WEBHOOK_SECRET is not set: every event is signed with it (whsec_<base64>)",
        );
        return;
    };
    let id = format!("evt_doctor_{}", now_millis());
    let event = json!({
        "type": TEST_EVENT_TYPE,
        "id": id,
        "occurred_at": now_rfc3339(),
        "source_event": null,
        "crm_id": null,
        "enerflo": {},
        "data": {"message": "enerflo-sync-ops doctor: a test of the connection and the signature; nothing to change"},
    });
    let body = serde_json::to_vec(&event).unwrap_or_default();
    let ts = now_unix();
    let signature = sign(secret.key(), &id, ts, &body);
    let http = match http_client(options.budget) {
        Ok(h) => h,
        Err(e) => {
            report.push("crm-client", Level::Problem, e.to_string());
            return;
        }
    };
    let sent = http
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            report.push(
                "crm-unreachable",
                Level::Problem,
                format!(
                    "no answer from CRM_WEBHOOK_URL to the test event ({})",
                    if e.is_timeout() {
                        format!("timed out after {:?}", options.budget)
                    } else {
                        without_url(&e, "<CRM_WEBHOOK_URL>")
                    }
                ),
            );
            return;
        }
    };
    let status = resp.status().as_u16();
    let text = body_text(&resp.bytes().await.unwrap_or_default());
    report.crm_answer = Some(format!("HTTP {status}: {text}"));
    let (name, level, detail) = match status {
        200..=299 => (
            "crm-test-event",
            Level::Ok,
            format!("CRM_WEBHOOK_URL accepted the signed {TEST_EVENT_TYPE} event ({status})"),
        ),
        401 | 403 => (
            "crm-signature-rejected",
            Level::Problem,
            format!(
                "the CRM refused the signed test event ({status}): CRM_WEBHOOK_SECRET is not the secret it verifies with (or its clock is more than 5 minutes off)"
            ),
        ),
        404 | 405 => (
            "crm-url-not-found",
            Level::Problem,
            format!("CRM_WEBHOOK_URL answered {status}: no receiver takes a POST at that address"),
        ),
        408 | 429 | 500..=599 => (
            "crm-unavailable",
            Level::Problem,
            format!(
                "the CRM answered {status} to the test event: events would be retried until it recovers"
            ),
        ),
        _ => (
            "crm-test-event-refused",
            Level::Problem,
            format!(
                "the CRM answered {status} to the {TEST_EVENT_TYPE} event: a receiver answers 2xx to an event type it does not handle (README, The CRM connector contract), or real events of a new type are dead-lettered"
            ),
        ),
    };
    report.push(name, level, detail);
}

async fn check_hubspot(config: &Config, report: &mut DoctorReport) {
    if config.hubspot.access_token.is_none() {
        report.push(
            "hubspot-token-missing",
            Level::Problem,
            "HUBSPOT_ACCESS_TOKEN is not set (CRM_CONNECTOR=hubspot): the private app's access token",
        );
        return;
    }
    let api = match config
        .hubspot_crm()
        .and_then(|hubspot| enerflo_sync::runtime::hubspot_api(&hubspot.api))
    {
        Ok(a) => a,
        Err(e) => {
            report.push("hubspot-config", Level::Problem, e.to_string());
            return;
        }
    };
    let pipeline = &config.hubspot.pipeline;
    let path = format!("/crm/v3/pipelines/deals/{}", encode_segment(pipeline));
    let call = format!("GET {path}");
    let (name, level, detail) = match api.call(Method::GET, &path, &[], None).await {
        Ok(answer) => {
            let stages = answer.body["stages"].as_array().map_or(0, Vec::len);
            (
                "hubspot-token",
                Level::Ok,
                format!(
                    "HUBSPOT_ACCESS_TOKEN works ({call}: crm.objects.deals.read) and deal pipeline {pipeline} exists with {stages} stages; `enerflo-sync-ops hubspot setup` checks the properties"
                ),
            )
        }
        Err(HubSpotError::NotFound(message)) => (
            "hubspot-pipeline-not-found",
            Level::Problem,
            format!(
                "the token works, but HUBSPOT_PIPELINE {pipeline} is not a deal pipeline of this portal ({call} answered 404: {message}); use its internal id"
            ),
        ),
        Err(HubSpotError::Crm(CrmError::Rejected {
            status: 401,
            message,
        })) => (
            "hubspot-token-invalid",
            Level::Problem,
            format!(
                "HubSpot refused HUBSPOT_ACCESS_TOKEN (401 to {call}): {message}; copy the private app's access token again"
            ),
        ),
        Err(HubSpotError::Crm(CrmError::Rejected {
            status: 403,
            message,
        })) => (
            "hubspot-scope-missing",
            Level::Problem,
            format!(
                "the token lacks crm.objects.deals.read (403 to {call}): {message}; the private app needs {HUBSPOT_SCOPES}"
            ),
        ),
        Err(HubSpotError::Crm(CrmError::Unavailable {
            status: None,
            detail,
            ..
        })) => (
            "hubspot-unreachable",
            Level::Problem,
            format!("no answer from HubSpot to {call}: {detail}"),
        ),
        Err(HubSpotError::Crm(CrmError::Unavailable {
            status: Some(status),
            detail,
            ..
        })) => (
            "hubspot-unavailable",
            Level::Problem,
            format!("HubSpot answered {status} to {call}: {detail}"),
        ),
        Err(e) => (
            "hubspot-error",
            Level::Problem,
            format!("{call}: {}", e.into_crm("the deal pipeline")),
        ),
    };
    report.push(name, level, detail);
}

async fn check_salesforce(config: &Config, report: &mut DoctorReport) {
    let api = match config
        .salesforce_crm()
        .and_then(|salesforce| enerflo_sync::runtime::salesforce_api(&salesforce))
    {
        Ok(a) => a,
        Err(e) => {
            report.push("salesforce-config", Level::Problem, e.to_string());
            return;
        }
    };
    let (name, detail) = match api.session().await {
        Ok(session) => {
            report.push(
                "salesforce-token",
                Level::Ok,
                format!(
                    "Salesforce granted a token (one fetch); the org's API is at {}",
                    session.instance_url
                ),
            );
            return;
        }
        Err(CrmError::Rejected { message, .. }) => ("salesforce-credentials-refused", message),
        Err(CrmError::Unavailable {
            status: None,
            detail,
            ..
        }) => (
            "salesforce-unreachable",
            format!("no answer from SALESFORCE_LOGIN_URL: {detail}"),
        ),
        Err(CrmError::Unavailable {
            status: Some(status),
            detail,
            ..
        }) => (
            "salesforce-unavailable",
            format!("the token endpoint answered {status}: {detail}"),
        ),
    };
    report.push(name, Level::Problem, detail);
}

// ---- URLs ------------------------------------------------------------------------------------

fn urls(config: &Config, options: &DoctorOptions, report: &mut DoctorReport) {
    let base = match options.public_url.as_deref().map(str::trim) {
        Some(u) if !u.is_empty() => {
            let u = u.trim_end_matches('/').to_owned();
            let local = u.starts_with("http://127.0.0.1") || u.starts_with("http://localhost");
            if !u.starts_with("https://") && !local {
                report.push(
                    "public-url",
                    Level::Warning,
                    format!(
                        "{u} is not https: Enerflo and the CRM send customer data to these URLs"
                    ),
                );
            }
            u
        }
        _ => {
            report.push(
                "public-url",
                Level::Warning,
                "no --public-url: the URLs below start with <ApiBaseUrl>; pass the stack's ApiBaseUrl output (sam list stack-outputs)",
            );
            "<ApiBaseUrl>".to_owned()
        }
    };
    let token = match config.webhook_tokens.first() {
        Some(t) => {
            if config.webhook_tokens.len() > 1 {
                report.push(
                    "webhook-token",
                    Level::Warning,
                    "WEBHOOK_TOKEN holds several values (a rotation): the URLs below use the first; deploy it alone once Enerflo uses it",
                );
            }
            t.expose().to_owned()
        }
        None => {
            report.push(
                "webhook-token-missing",
                Level::Problem,
                "WEBHOOK_TOKEN is not set: it is the last segment of every Enerflo webhook URL",
            );
            "<WEBHOOK_TOKEN>".to_owned()
        }
    };
    let webhook = format!("{base}/enerflo/webhooks/{}", encode_segment(&token));
    for stage in &STAGES {
        for &event in stage.events {
            // 2.0 events are dotted (`deal.projectSubmitted`) and always name themselves in the body.
            let v2 = event.contains('.');
            report.subscriptions.push(Subscription {
                version: if v2 { "2.0" } else { "1.0" },
                event,
                stage: stage.name,
                url: if v2 {
                    webhook.clone()
                } else {
                    format!("{webhook}?event={event}")
                },
            });
        }
    }

    // The routes of the configured connector: its own (`hubspot_*`, `salesforce_*`, `monday`), or
    // the canonical `/crm/*` ones for the webhook connector.
    let prefix = match config.crm_connector {
        CrmConnectorKind::Webhook => None,
        CrmConnectorKind::HubSpot => Some("hubspot_"),
        CrmConnectorKind::Salesforce => Some("salesforce_"),
        CrmConnectorKind::Monday => Some("monday"),
    };
    let native = |name: &str| {
        ["hubspot_", "salesforce_", "monday"]
            .iter()
            .any(|p| name.starts_with(p))
    };
    for route in &ROUTES {
        let wanted = match prefix {
            Some(p) => route.name.starts_with(p),
            None => !native(route.name),
        };
        if wanted {
            report.crm_routes.push(CrmRoute {
                name: route.name,
                method: route.method,
                url: format!("{base}{}", route.path),
            });
        }
    }
    let tokens = config.crm_inbound_tokens.len();
    report.crm_auth = match config.crm_connector {
        CrmConnectorKind::HubSpot => format!(
            "HubSpot workflows' \"Send a webhook\": \"Include request signature in header\" with the app whose client secret is HUBSPOT_CLIENT_SECRET, or \"API key\" in header {} holding one of CRM_INBOUND_TOKEN's {tokens} value(s); notes are polled, not sent; body keys: `enerflo-sync-ops hubspot setup`",
            crate::hubspot::TOKEN_HEADER
        ),
        CrmConnectorKind::Salesforce => format!(
            "Flow HTTP Callouts through a Named Credential sending `Authorization: Bearer <one of CRM_INBOUND_TOKEN's {tokens} value(s)>`; Outbound Messages with `?token=<one of them>` on the URL; details: `enerflo-sync-ops salesforce setup`"
        ),
        CrmConnectorKind::Monday => "board webhooks whose {token} is MONDAY_WEBHOOK_TOKEN; `enerflo-sync-ops monday setup --webhook-url <ApiBaseUrl>` creates them".to_owned(),
        CrmConnectorKind::Webhook => format!(
            "header `Authorization: Bearer <one of CRM_INBOUND_TOKEN's {tokens} value(s)>`, JSON bodies of README stages 1.1, 3.1, 4.1 and 5.1"
        ),
    };
    let hubspot = config.crm_connector == CrmConnectorKind::HubSpot;
    let monday = config.crm_connector == CrmConnectorKind::Monday;
    if tokens == 0 && !monday && !(hubspot && config.hubspot.client_secret.is_some()) {
        report.push(
            "crm-inbound-token-missing",
            Level::Problem,
            "CRM_INBOUND_TOKEN is not set: every CRM -> sync call below is refused with 401",
        );
    }
}
