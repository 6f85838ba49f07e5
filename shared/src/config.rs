//! Configuration, read from the environment once at start-up and validated. [`Config`] holds
//! every value, defaulted or optional (the local runner fills in sandboxes for what is unset);
//! each binary then takes its own typed configuration from it ([`StageFunctionConfig`],
//! [`InboundFunctionConfig`], [`WebhookFunctionConfig`], [`NotesPollConfig`],
//! [`ReconcileFunctionConfig`], [`OpsConsoleConfig`]), whose required values are plain fields.
//! A missing or malformed value stops start-up with one message naming every variable. The
//! same names work in Lambda and in the local runner (docs/design.md 3.4).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use crate::classify::{DEFAULT_INSTALL_ID_PATHS, Stage};
use crate::retry::RetryPolicy;
use crate::secret::{Secret, SecretSet};

/// `ECHO_TTL_SECS` when unset: how long our own writes are recognised as echoes.
pub const DEFAULT_ECHO_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// The CRM connector in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrmConnectorKind {
    Webhook,
    HubSpot,
    Salesforce,
    Monday,
}

/// `SALESFORCE_*`: the native Salesforce connector (docs/design.md 3.6).
#[derive(Clone, Debug, Default)]
pub struct SalesforceSettings {
    /// `SALESFORCE_LOGIN_URL`: the org's My Domain (`https://acme.my.salesforce.com`), where the
    /// token endpoint is. Required in Lambda; locally, without it the runner serves a sandbox.
    pub login_url: Option<String>,
    /// `SALESFORCE_CLIENT_ID`: the external client app's consumer key.
    pub client_id: Option<String>,
    /// `SALESFORCE_CLIENT_SECRET`: for the client credentials flow.
    pub client_secret: Option<Secret>,
    /// `SALESFORCE_USERNAME` + `SALESFORCE_PRIVATE_KEY` (PEM): the JWT bearer flow instead (the
    /// key is parsed by [`Config::salesforce_crm`]).
    pub username: Option<String>,
    pub private_key: Option<Secret>,
    /// `SALESFORCE_JWT_AUDIENCE`: the assertion's `aud` (default `https://login.salesforce.com`,
    /// `https://test.salesforce.com` for a sandbox My Domain).
    pub audience: Option<String>,
    /// `SALESFORCE_API_VERSION`, default [`SALESFORCE_API_VERSION`].
    pub api_version: String,
    /// `SALESFORCE_API_BUDGET_PERCENT`: the share of the org's daily API allocation the sync may
    /// use (default 50).
    pub budget_percent: u32,
    /// `SALESFORCE_ORG_ID`: the org whose Outbound Messages are accepted.
    pub org_id: Option<String>,
}

/// The Salesforce REST API version used unless `SALESFORCE_API_VERSION` says otherwise (Spring
/// '26; upsert's `created` flag needs 46.0 or later).
pub const SALESFORCE_API_VERSION: &str = "66.0";

/// `HUBSPOT_*`: the native HubSpot connector (docs/design.md 3.6).
#[derive(Clone, Debug)]
pub struct HubSpotSettings {
    /// `HUBSPOT_ACCESS_TOKEN`, a private app token. Required in Lambda; locally, without it the
    /// runner serves a HubSpot sandbox.
    pub access_token: Option<Secret>,
    /// `HUBSPOT_BASE_URL`, default `https://api.hubapi.com`.
    pub base_url: String,
    /// `HUBSPOT_PIPELINE`, default `default`: the deal pipeline new deals go into.
    pub pipeline: String,
    /// `HUBSPOT_CLIENT_SECRET`: verifies the v3 signature of workflow webhooks.
    pub client_secret: Option<Secret>,
    /// `HUBSPOT_RATE_LIMIT`: calls per rolling 10 seconds this process may make (default 100,
    /// HubSpot's Free/Starter burst limit). Shared by every caller in the process.
    pub ten_second_budget: u32,
    /// `HUBSPOT_PUBLIC_URL`: the public base URL HubSpot calls (the API's URL, with a custom
    /// domain or stage prefix), for v3 signatures, which cover the exact URL.
    pub public_url: Option<String>,
    /// `HUBSPOT_NOTES_POLL_SECS` (default 60): how often the local runner polls HubSpot for notes
    /// (in AWS the `HubSpotNotesPollSchedule` rule decides).
    pub notes_poll_interval: std::time::Duration,
}

impl Default for HubSpotSettings {
    fn default() -> Self {
        Self {
            access_token: None,
            base_url: "https://api.hubapi.com".into(),
            pipeline: "default".into(),
            client_secret: None,
            ten_second_budget: 100,
            public_url: None,
            notes_poll_interval: std::time::Duration::from_secs(60),
        }
    }
}

/// `MONDAY_*`: the native Monday.com connector (docs/monday.md).
#[derive(Clone, Debug)]
pub struct MondaySettings {
    /// `MONDAY_API_TOKEN`: a personal (or app) API token, sent raw as `Authorization`. Required
    /// in Lambda; locally, without it the runner serves a Monday.com sandbox.
    pub api_token: Option<Secret>,
    /// `MONDAY_API_URL`, default `https://api.monday.com/v2`.
    pub api_url: String,
    /// `MONDAY_API_VERSION` (`YYYY-MM`, a quarter's month), default [`MONDAY_API_VERSION`].
    pub api_version: String,
    /// `MONDAY_SIGNING_SECRET`: the app's signing secret; when set, a webhook carrying a JWT in
    /// `Authorization` must verify with it.
    pub signing_secret: Option<Secret>,
    /// `MONDAY_WEBHOOK_TOKEN`: the secret path segment of `POST /crm/monday/webhooks/{token}`
    /// (comma-separated during a rotation).
    pub webhook_tokens: SecretSet,
    /// `MONDAY_CUSTOMERS_BOARD` / `MONDAY_PROJECTS_BOARD`: the board ids the profile's
    /// `customers` and `projects` objects name.
    pub customers_board: Option<String>,
    pub projects_board: Option<String>,
    /// `MONDAY_DAILY_CALL_BUDGET`: API calls a day (UTC) the sync may make, failed ones included
    /// (default 900: Standard's 1,000 less room for people's other tools).
    pub daily_call_budget: u32,
    /// `MONDAY_RATE_LIMIT`: requests per minute this process makes (default 200).
    pub minute_budget: u32,
}

/// The Monday.com API version pinned unless `MONDAY_API_VERSION` says otherwise: the current
/// stable one (reviewed quarterly, docs/monday.md 2.2).
pub const MONDAY_API_VERSION: &str = "2026-10";

impl Default for MondaySettings {
    fn default() -> Self {
        Self {
            api_token: None,
            api_url: "https://api.monday.com/v2".into(),
            api_version: MONDAY_API_VERSION.into(),
            signing_secret: None,
            webhook_tokens: SecretSet::default(),
            customers_board: None,
            projects_board: None,
            daily_call_budget: 900,
            minute_budget: 200,
        }
    }
}

/// A Standard Webhooks signing secret (`whsec_<base64>`); holds the decoded key.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let b64 = raw.trim().strip_prefix("whsec_").unwrap_or(raw.trim());
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "is not `whsec_` followed by base64".to_owned())?;
        if key.len() < 16 {
            return Err("decodes to fewer than 16 bytes; use at least 24 random bytes".into());
        }
        Ok(Self(key))
    }

    pub fn key(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageQueueUrls {
    pub url: String,
    pub dlq_url: String,
}

/// Enerflo field names that are undocumented (docs/enerflo-api.md 6): the request bodies we
/// send for milestones, statuses and notes, and the candidate paths we read from events whose
/// shape is unknown. Kept in one place and overridable by environment, each a comma-separated
/// list where several candidates are tried in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnerfloFields {
    /// `ENERFLO_MILESTONE_START_FIELD`: body field of `PUT .../milestones/{id}` for the start date.
    pub milestone_start_field: String,
    /// `ENERFLO_MILESTONE_COMPLETED_FIELD`: body field for the completion date.
    pub milestone_completed_field: String,
    /// `ENERFLO_STATUS_FIELD`: body field of `PUT /api/v3/installs/{id}` carrying the status id.
    pub status_field: String,
    /// `ENERFLO_NOTE_FIELD`: body field of `POST /api/v3/installs/{id}/notes` carrying the text.
    pub note_field: String,
    /// `ENERFLO_NOTE_AUTHOR_FIELD`: body field for the author's name; empty sends none.
    pub note_author_field: String,
    /// `ENERFLO_MILESTONE_ID_PATHS`: where `project_milestone_updated` carries the milestone id.
    pub milestone_id_paths: Vec<String>,
    /// `ENERFLO_MILESTONE_COMPLETED_PATHS` / `ENERFLO_MILESTONE_START_PATHS`: where it carries dates.
    pub milestone_completed_paths: Vec<String>,
    pub milestone_start_paths: Vec<String>,
    /// `ENERFLO_NOTE_TEXT_PATHS`, `ENERFLO_NOTE_ID_PATHS`, `ENERFLO_NOTE_AUTHOR_PATHS`,
    /// `ENERFLO_NOTE_CREATED_PATHS`: where `new_install_note` carries its parts.
    pub note_text_paths: Vec<String>,
    pub note_id_paths: Vec<String>,
    pub note_author_paths: Vec<String>,
    pub note_created_paths: Vec<String>,
    /// `STATUS_ON_HOLD_NAMES`, `STATUS_VOIDED_NAMES`, `STATUS_COMPLETED_NAMES`: status names
    /// (case-insensitive) that set the `on_hold`, `voided`, `completed` flags.
    pub on_hold_names: Vec<String>,
    pub voided_names: Vec<String>,
    pub completed_names: Vec<String>,
    /// `MILESTONE_KEY_MAP`: `crm-key=enerflo-milestone-id` pairs, comma-separated, so a CRM can
    /// address milestones by its own keys in `PUT /crm/installs/{install}/milestones/{milestone}`.
    pub milestone_keys: BTreeMap<String, u64>,
    /// Lead field names and paths (stages 1.1 and 1.2), see [`LeadFields`].
    pub lead: LeadFields,
}

fn list(defaults: &[&str]) -> Vec<String> {
    defaults.iter().map(|s| (*s).to_owned()).collect()
}

impl Default for EnerfloFields {
    fn default() -> Self {
        Self {
            milestone_start_field: "start_date".into(),
            milestone_completed_field: "completed_date".into(),
            status_field: "status_id".into(),
            note_field: "note".into(),
            note_author_field: String::new(),
            milestone_id_paths: list(&[
                "milestone_id",
                "milestone.id",
                "install_milestone.milestone_id",
                "current_milestone.id",
            ]),
            milestone_completed_paths: list(&[
                "completed_date",
                "completed_at",
                "date_completed",
                "milestone.completed_date",
                "milestone.completed_at",
                "install_milestone.completed_date",
                "install_milestone.completed_at",
            ]),
            milestone_start_paths: list(&[
                "start_date",
                "started_at",
                "milestone.start_date",
                "install_milestone.start_date",
            ]),
            note_text_paths: list(&[
                "note",
                "body",
                "content",
                "text",
                "note.note",
                "note.body",
                "note.content",
                "note.text",
            ]),
            note_id_paths: list(&["note_id", "note.id", "id"]),
            note_author_paths: list(&[
                "author",
                "author_name",
                "user.full_name",
                "user.name",
                "note.user.full_name",
                "author_id",
                "user_id",
            ]),
            note_created_paths: list(&["created_at", "note.created_at", "timestamps.created_at"]),
            on_hold_names: list(&["On Hold"]),
            voided_names: list(&["Voided", "Void", "Cancelled", "Canceled"]),
            completed_names: list(&["Completed", "Complete"]),
            milestone_keys: BTreeMap::new(),
            lead: LeadFields::default(),
        }
    }
}

/// The undocumented parts of `POST /api/v1/partner/action/lead/add` and of the customer events
/// (docs/enerflo-api.md 2.1, 3.7): names of the optional lead/add fields, where its answer carries
/// the customer id, and where customer events carry the lead owner. Empty names send nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeadFields {
    /// `ENERFLO_LEAD_NOTES_FIELD` (inside `lead`): the note text.
    pub notes_field: String,
    /// `ENERFLO_LEAD_CREATE_DEAL_FIELD` (inside `lead`): the deal type id that creates a deal.
    pub create_deal_field: String,
    /// `ENERFLO_LEAD_APPOINTMENT_TYPE_FIELD` (inside `lead`): the appointment type id.
    pub appointment_type_field: String,
    /// `ENERFLO_LEAD_OFFICE_MATCH`: value of `lead.office_match` (every known integration sends
    /// `manual`); empty sends none.
    pub office_match: String,
    /// `ENERFLO_LEAD_CUSTOMER_ID_PATHS`: where lead/add's answer carries the v1 customer id.
    pub customer_id_paths: Vec<String>,
    /// `ENERFLO_LEAD_OWNER_PATHS`: where a customer (then its event) carries the lead owner.
    pub owner_paths: Vec<String>,
}

impl Default for LeadFields {
    fn default() -> Self {
        Self {
            notes_field: "notes".into(),
            create_deal_field: "createDeal".into(),
            appointment_type_field: "appointment_type_id".into(),
            office_match: "manual".into(),
            customer_id_paths: list(&[
                "customer_id",
                "data.lead.id",
                "data.customer_id",
                "data.customer.id",
                "lead.id",
                "customer.id",
            ]),
            owner_paths: list(&[
                "leadOwner",
                "lead_owner",
                "salesRep",
                "sales_rep",
                "agent_user",
                "agent_user_id",
            ]),
        }
    }
}

impl LeadFields {
    fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Self {
        let mut out = Self::default();
        for (k, slot) in [
            ("ENERFLO_LEAD_NOTES_FIELD", &mut out.notes_field),
            ("ENERFLO_LEAD_CREATE_DEAL_FIELD", &mut out.create_deal_field),
            (
                "ENERFLO_LEAD_APPOINTMENT_TYPE_FIELD",
                &mut out.appointment_type_field,
            ),
            ("ENERFLO_LEAD_OFFICE_MATCH", &mut out.office_match),
        ] {
            if let Some(v) = get(k) {
                *slot = v.trim().to_owned();
            }
        }
        for (k, slot) in [
            ("ENERFLO_LEAD_CUSTOMER_ID_PATHS", &mut out.customer_id_paths),
            ("ENERFLO_LEAD_OWNER_PATHS", &mut out.owner_paths),
        ] {
            if let Some(v) = get(k).filter(|v| !v.trim().is_empty()) {
                *slot = v
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
        }
        out
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub enerflo_base_url: String,
    pub enerflo_api_key: Option<Secret>,
    pub enerflo_timeout: Duration,
    /// Longest an inbound HTTP route waits on Enerflo before answering 429/503 (API Gateway cuts
    /// requests at 29 s).
    pub inbound_wait_budget: Duration,
    pub webhook_tokens: SecretSet,
    pub crm_connector: CrmConnectorKind,
    /// The mapping profile of a native connector (`CRM_MAPPING_FILE`, else the connector's
    /// default built in); `None` for `webhook`.
    pub crm_profile: Option<std::sync::Arc<crate::crm::profile::Profile>>,
    pub hubspot: HubSpotSettings,
    pub salesforce: SalesforceSettings,
    pub monday: MondaySettings,
    pub crm_webhook_url: Option<String>,
    pub crm_webhook_secret: Option<SigningSecret>,
    pub crm_timeout: Duration,
    pub crm_inbound_tokens: SecretSet,
    /// `OPS_TOKEN`: what an operator presents to the console's login form (comma-separated
    /// during a rotation).
    pub ops_tokens: SecretSet,
    pub crm_include_raw: bool,
    /// `TABLE_NAME`: required by every Lambda ([`TableAccess`]); the local runner has its own store.
    pub table_name: Option<String>,
    /// `<STAGE>_QUEUE_URL` + `<STAGE>_DLQ_URL`, per stage that has them (a stage without a queue
    /// has its events parked in the event log).
    pub queues: BTreeMap<Stage, StageQueueUrls>,
    /// `AWS_ENDPOINT_URL`: DynamoDB and SQS at moto or LocalStack; unset, AWS's own endpoints.
    pub aws_endpoint_url: Option<String>,
    /// `AWS_REGION` (else `AWS_DEFAULT_REGION`): Lambda sets it; required by [`LambdaAws`].
    pub aws_region: Option<String>,
    pub max_body_bytes: usize,
    pub retry: RetryPolicy,
    pub event_log_ttl: Duration,
    pub idempotency_ttl: Duration,
    /// How long a write we made is remembered as ours (echo fingerprints).
    pub echo_ttl: Duration,
    pub install_id_paths: Vec<String>,
    pub fields: EnerfloFields,
    pub listen_addr: String,
    pub data_dir: PathBuf,
    /// `RECONCILE_*`: the reconciliation sweep and backfill (`crate::reconcile`).
    pub reconcile: crate::reconcile::ReconcileSettings,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads from any lookup (tests pass a map, so they never mutate the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let var = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let url = |k: &str, problems: &mut Vec<String>| {
            let v = var(k)?;
            match http_url(&v) {
                Ok(()) => Some(v.trim_end_matches('/').to_owned()),
                Err(why) => {
                    problems.push(format!("{k} {why}"));
                    None
                }
            }
        };
        let number =
            |k: &str, default: u64, min: u64, max: u64, problems: &mut Vec<String>| match var(k) {
                None => default,
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => n,
                    _ => {
                        problems.push(format!("{k} must be a whole number from {min} to {max}"));
                        default
                    }
                },
            };

        let enerflo_base_url =
            url("ENERFLO_BASE_URL", &mut problems).unwrap_or_else(|| "https://enerflo.io".into());
        let crm_connector = match var("CRM_CONNECTOR").as_deref() {
            None | Some("webhook") => CrmConnectorKind::Webhook,
            Some("hubspot") => CrmConnectorKind::HubSpot,
            Some("salesforce") => CrmConnectorKind::Salesforce,
            Some("monday") => CrmConnectorKind::Monday,
            Some(_) => {
                problems.push(
                    "CRM_CONNECTOR must be `webhook`, `hubspot`, `salesforce` or `monday`".into(),
                );
                CrmConnectorKind::Webhook
            }
        };
        let crm_profile = match crm_connector {
            CrmConnectorKind::Webhook => {
                if var("CRM_MAPPING_FILE").is_some() {
                    problems.push(
                        "CRM_MAPPING_FILE is for the native connectors; CRM_CONNECTOR=webhook sends the canonical event".into(),
                    );
                }
                None
            }
            CrmConnectorKind::HubSpot => match crate::crm::profile::load(
                var("CRM_MAPPING_FILE").as_deref(),
                "built-in hubspot",
                crate::crm::profile::HUBSPOT_DEFAULT,
            ) {
                Ok(p) => Some(std::sync::Arc::new(p)),
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            },
            CrmConnectorKind::Salesforce => match crate::crm::profile::load(
                var("CRM_MAPPING_FILE").as_deref(),
                "built-in salesforce",
                crate::crm::profile::SALESFORCE_DEFAULT,
            ) {
                Ok(p) => Some(std::sync::Arc::new(p)),
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            },
            CrmConnectorKind::Monday => match crate::crm::profile::load(
                var("CRM_MAPPING_FILE").as_deref(),
                "built-in monday",
                crate::crm::profile::MONDAY_DEFAULT,
            ) {
                Ok(p) => Some(std::sync::Arc::new(p)),
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            },
        };
        let board = |k: &str, problems: &mut Vec<String>| {
            let v = var(k)?;
            if v.bytes().all(|b| b.is_ascii_digit()) && v.len() <= 20 {
                Some(v)
            } else {
                problems.push(format!("{k} must be a Monday.com board id (digits)"));
                None
            }
        };
        let monday = MondaySettings {
            api_token: var("MONDAY_API_TOKEN").map(Secret::new),
            api_url: url("MONDAY_API_URL", &mut problems)
                .unwrap_or_else(|| MondaySettings::default().api_url),
            api_version: match var("MONDAY_API_VERSION") {
                None => MONDAY_API_VERSION.to_owned(),
                Some(v) => {
                    let quarter = v.len() == 7
                        && v[..4].bytes().all(|b| b.is_ascii_digit())
                        && &v[4..5] == "-"
                        && ["01", "04", "07", "10"].contains(&&v[5..]);
                    if !quarter {
                        problems.push(format!(
                            "MONDAY_API_VERSION must be YYYY-MM with MM one of 01, 04, 07, 10 (e.g. {MONDAY_API_VERSION})"
                        ));
                    }
                    v
                }
            },
            signing_secret: var("MONDAY_SIGNING_SECRET").map(Secret::new),
            webhook_tokens: SecretSet::parse(&var("MONDAY_WEBHOOK_TOKEN").unwrap_or_default()),
            customers_board: board("MONDAY_CUSTOMERS_BOARD", &mut problems),
            projects_board: board("MONDAY_PROJECTS_BOARD", &mut problems),
            daily_call_budget: number("MONDAY_DAILY_CALL_BUDGET", 900, 1, 1_000_000, &mut problems)
                as u32,
            minute_budget: number("MONDAY_RATE_LIMIT", 200, 3, 5_000, &mut problems) as u32,
        };
        let salesforce = SalesforceSettings {
            login_url: url("SALESFORCE_LOGIN_URL", &mut problems),
            client_id: var("SALESFORCE_CLIENT_ID"),
            client_secret: var("SALESFORCE_CLIENT_SECRET").map(Secret::new),
            username: var("SALESFORCE_USERNAME"),
            // Parsed once, by `Config::salesforce_crm`, in the functions that use the connector.
            private_key: var("SALESFORCE_PRIVATE_KEY").map(Secret::new),
            audience: url("SALESFORCE_JWT_AUDIENCE", &mut problems),
            api_version: match var("SALESFORCE_API_VERSION") {
                None => SALESFORCE_API_VERSION.to_owned(),
                Some(v) => {
                    let bare = v.trim_start_matches('v').to_owned();
                    match bare
                        .split_once('.')
                        .map(|(a, b)| (a.parse::<u32>(), b.parse::<u32>()))
                    {
                        Some((Ok(major), Ok(_))) if major >= 46 => bare,
                        _ => {
                            problems.push(format!(
                                "SALESFORCE_API_VERSION must be like {SALESFORCE_API_VERSION}, and 46.0 or later"
                            ));
                            SALESFORCE_API_VERSION.to_owned()
                        }
                    }
                }
            },
            budget_percent: number("SALESFORCE_API_BUDGET_PERCENT", 50, 1, 100, &mut problems)
                as u32,
            org_id: var("SALESFORCE_ORG_ID").filter(|id| {
                let ok = id.starts_with("00D")
                    && matches!(id.len(), 15 | 18)
                    && id.bytes().all(|b| b.is_ascii_alphanumeric());
                if !ok {
                    problems.push(
                        "SALESFORCE_ORG_ID must be the org's id: 00D followed by 12 or 15 letters and digits".into(),
                    );
                }
                ok
            }),
        };
        let hubspot = HubSpotSettings {
            access_token: var("HUBSPOT_ACCESS_TOKEN").map(Secret::new),
            base_url: url("HUBSPOT_BASE_URL", &mut problems)
                .unwrap_or_else(|| HubSpotSettings::default().base_url),
            pipeline: var("HUBSPOT_PIPELINE").unwrap_or_else(|| "default".into()),
            client_secret: var("HUBSPOT_CLIENT_SECRET").map(Secret::new),
            ten_second_budget: number("HUBSPOT_RATE_LIMIT", 100, 3, 10_000, &mut problems) as u32,
            public_url: url("HUBSPOT_PUBLIC_URL", &mut problems),
            notes_poll_interval: std::time::Duration::from_secs(number(
                "HUBSPOT_NOTES_POLL_SECS",
                60,
                1,
                86_400,
                &mut problems,
            )),
        };
        let crm_webhook_secret =
            var("CRM_WEBHOOK_SECRET").and_then(|s| match SigningSecret::parse(&s) {
                Ok(s) => Some(s),
                Err(why) => {
                    problems.push(format!("CRM_WEBHOOK_SECRET {why}"));
                    None
                }
            });
        let crm_include_raw = match var("CRM_INCLUDE_RAW")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(_) => {
                problems.push("CRM_INCLUDE_RAW must be true or false".into());
                false
            }
        };
        let mut queues = BTreeMap::new();
        for stage in Stage::ALL {
            let (qk, dk) = (
                format!("{}_QUEUE_URL", stage.env_prefix()),
                format!("{}_DLQ_URL", stage.env_prefix()),
            );
            match (url(&qk, &mut problems), url(&dk, &mut problems)) {
                (Some(url), Some(dlq_url)) => {
                    queues.insert(stage, StageQueueUrls { url, dlq_url });
                }
                (None, None) => {}
                _ => problems.push(format!("{qk} and {dk} must be set together")),
            }
        }
        let webhook_tokens = SecretSet::parse(&var("WEBHOOK_TOKEN").unwrap_or_default());
        let crm_inbound_tokens = SecretSet::parse(&var("CRM_INBOUND_TOKEN").unwrap_or_default());
        let ops_tokens = SecretSet::parse(&var("OPS_TOKEN").unwrap_or_default());
        let max_attempts = number("RETRY_MAX_ATTEMPTS", 18, 1, 1000, &mut problems) as u32;

        let mut fields = EnerfloFields::default();
        let text = |k: &str, slot: &mut String| {
            if let Some(v) = get(k) {
                *slot = v.trim().to_owned();
            }
        };
        text(
            "ENERFLO_MILESTONE_START_FIELD",
            &mut fields.milestone_start_field,
        );
        text(
            "ENERFLO_MILESTONE_COMPLETED_FIELD",
            &mut fields.milestone_completed_field,
        );
        text("ENERFLO_STATUS_FIELD", &mut fields.status_field);
        text("ENERFLO_NOTE_FIELD", &mut fields.note_field);
        text("ENERFLO_NOTE_AUTHOR_FIELD", &mut fields.note_author_field);
        for (k, slot) in [
            ("ENERFLO_MILESTONE_ID_PATHS", &mut fields.milestone_id_paths),
            (
                "ENERFLO_MILESTONE_COMPLETED_PATHS",
                &mut fields.milestone_completed_paths,
            ),
            (
                "ENERFLO_MILESTONE_START_PATHS",
                &mut fields.milestone_start_paths,
            ),
            ("ENERFLO_NOTE_TEXT_PATHS", &mut fields.note_text_paths),
            ("ENERFLO_NOTE_ID_PATHS", &mut fields.note_id_paths),
            ("ENERFLO_NOTE_AUTHOR_PATHS", &mut fields.note_author_paths),
            ("ENERFLO_NOTE_CREATED_PATHS", &mut fields.note_created_paths),
            ("STATUS_ON_HOLD_NAMES", &mut fields.on_hold_names),
            ("STATUS_VOIDED_NAMES", &mut fields.voided_names),
            ("STATUS_COMPLETED_NAMES", &mut fields.completed_names),
        ] {
            if let Some(v) = var(k) {
                *slot = v
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
        }
        for (name, value) in [
            (
                "ENERFLO_MILESTONE_START_FIELD",
                &fields.milestone_start_field,
            ),
            (
                "ENERFLO_MILESTONE_COMPLETED_FIELD",
                &fields.milestone_completed_field,
            ),
            ("ENERFLO_STATUS_FIELD", &fields.status_field),
            ("ENERFLO_NOTE_FIELD", &fields.note_field),
        ] {
            if value.is_empty() {
                problems.push(format!("{name} must not be empty"));
            }
        }
        fields.lead = LeadFields::from_lookup(&get);
        if let Some(map) = var("MILESTONE_KEY_MAP") {
            for pair in map.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match pair
                    .split_once('=')
                    .map(|(k, v)| (k.trim(), v.trim().parse::<u64>()))
                {
                    Some((k, Ok(id))) if !k.is_empty() => {
                        fields.milestone_keys.insert(k.to_owned(), id);
                    }
                    _ => problems.push(format!(
                        "MILESTONE_KEY_MAP entry `{pair}` must be crm-key=<enerflo milestone id>"
                    )),
                }
            }
        }

        let reconcile = crate::reconcile::ReconcileSettings::from_lookup(&var, &mut problems);
        let config = Self {
            reconcile,
            fields,
            enerflo_base_url,
            enerflo_api_key: var("ENERFLO_API_KEY").map(Secret::new),
            enerflo_timeout: Duration::from_secs(number(
                "ENERFLO_TIMEOUT_SECS",
                10,
                1,
                120,
                &mut problems,
            )),
            inbound_wait_budget: Duration::from_secs(number(
                "INBOUND_WAIT_SECS",
                20,
                1,
                28,
                &mut problems,
            )),
            webhook_tokens,
            crm_connector,
            crm_profile,
            hubspot,
            salesforce,
            monday,
            crm_webhook_url: url("CRM_WEBHOOK_URL", &mut problems),
            crm_webhook_secret,
            crm_timeout: Duration::from_secs(number("CRM_TIMEOUT_SECS", 10, 1, 120, &mut problems)),
            crm_inbound_tokens,
            ops_tokens,
            crm_include_raw,
            table_name: var("TABLE_NAME"),
            queues,
            aws_endpoint_url: url("AWS_ENDPOINT_URL", &mut problems),
            aws_region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            max_body_bytes: number(
                "MAX_BODY_BYTES",
                1_048_576,
                1024,
                6 * 1_048_576,
                &mut problems,
            ) as usize,
            retry: RetryPolicy {
                max_attempts,
                ..RetryPolicy::default()
            },
            event_log_ttl: Duration::from_secs(
                86_400 * number("EVENT_LOG_TTL_DAYS", 30, 1, 365, &mut problems),
            ),
            idempotency_ttl: Duration::from_secs(
                86_400 * number("IDEMPOTENCY_TTL_DAYS", 14, 1, 365, &mut problems),
            ),
            echo_ttl: Duration::from_secs(number(
                "ECHO_TTL_SECS",
                DEFAULT_ECHO_TTL.as_secs(),
                60,
                30 * 86_400,
                &mut problems,
            )),
            install_id_paths: var("ENERFLO_INSTALL_ID_PATHS")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_else(|| {
                    DEFAULT_INSTALL_ID_PATHS
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect()
                }),
            listen_addr: var("LISTEN_ADDR").unwrap_or_else(|| "127.0.0.1:3000".into()),
            data_dir: var("DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".local-data")),
        };
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The Monday board id a profile object names: digits as they are, `customers` and
    /// `projects` through `MONDAY_CUSTOMERS_BOARD` / `MONDAY_PROJECTS_BOARD`.
    pub fn monday_board(&self, object: &str) -> Result<String, String> {
        let (var, value) = match object {
            "customers" => ("MONDAY_CUSTOMERS_BOARD", &self.monday.customers_board),
            "projects" => ("MONDAY_PROJECTS_BOARD", &self.monday.projects_board),
            digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                return Ok(digits.to_owned());
            }
            other => {
                return Err(format!(
                    "the mapping profile's object `{other}` is not a Monday board: use a board id (digits), `customers` or `projects`"
                ));
            }
        };
        value.clone().ok_or_else(|| {
            format!("{var} is required: the mapping profile writes the `{object}` board")
        })
    }

    /// Profile object -> Monday board id for every object of `profile`, every problem named once.
    fn monday_boards(
        &self,
        profile: &crate::crm::profile::Profile,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut boards = BTreeMap::new();
        let mut problems = Vec::new();
        for object in profile.objects() {
            match self.monday_board(&object) {
                Ok(id) => {
                    boards.insert(object, id);
                }
                Err(why) if !problems.contains(&why) => problems.push(why),
                Err(_) => {}
            }
        }
        if problems.is_empty() {
            Ok(boards)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The mapping profile of `kind`'s connector: loaded (or built in) with `CRM_CONNECTOR` set to it.
    fn profile_of(
        &self,
        kind: CrmConnectorKind,
        name: &str,
    ) -> Result<Arc<crate::crm::profile::Profile>, ConfigError> {
        match &self.crm_profile {
            Some(p) if self.crm_connector == kind => Ok(p.clone()),
            _ => Err(one(format!(
                "CRM_CONNECTOR={name} is required to load its mapping profile"
            ))),
        }
    }

    /// `ENERFLO_*`: what calling Enerflo takes; `ENERFLO_API_KEY` required.
    pub fn enerflo_access(&self) -> Result<EnerfloAccess, ConfigError> {
        let api_key = self
            .enerflo_api_key
            .clone()
            .ok_or_else(|| one("ENERFLO_API_KEY is required"))?;
        Ok(EnerfloAccess {
            base_url: self.enerflo_base_url.clone(),
            api_key,
            timeout: self.enerflo_timeout,
        })
    }

    /// `TABLE_NAME` (required), the stage queues and `AWS_ENDPOINT_URL`.
    pub fn table_access(&self) -> Result<TableAccess, ConfigError> {
        let table_name = self
            .table_name
            .clone()
            .ok_or_else(|| one("TABLE_NAME is required"))?;
        Ok(TableAccess {
            table_name,
            queues: self.queues.clone(),
            endpoint_url: self.aws_endpoint_url.clone(),
        })
    }

    /// What a Lambda's DynamoDB and SQS clients take: [`Config::table_access`] and `AWS_REGION`,
    /// both named when missing.
    pub fn lambda_aws(&self) -> Result<LambdaAws, ConfigError> {
        let mut p = Problems::default();
        let region = p.take(
            self.aws_region
                .clone()
                .ok_or_else(|| one("AWS_REGION is required (Lambda sets it)")),
        );
        let table = p.take(self.table_access());
        match (region, table) {
            (Some(region), Some(table)) => Ok(LambdaAws { region, table }),
            _ => Err(p.error()),
        }
    }

    /// `<STAGE>_QUEUE_URL` and `<STAGE>_DLQ_URL` of `stage`, required.
    pub fn stage_queue(&self, stage: Stage) -> Result<StageQueueUrls, ConfigError> {
        self.queues.get(&stage).cloned().ok_or_else(|| {
            one(format!(
                "{p}_QUEUE_URL and {p}_DLQ_URL are required",
                p = stage.env_prefix()
            ))
        })
    }

    /// What the configured CRM connector needs (`CRM_CONNECTOR`), every missing value named.
    pub fn crm_access(&self) -> Result<CrmAccess, ConfigError> {
        match self.crm_connector {
            CrmConnectorKind::Webhook => self.webhook_crm().map(CrmAccess::Webhook),
            CrmConnectorKind::HubSpot => self.hubspot_crm().map(CrmAccess::HubSpot),
            CrmConnectorKind::Salesforce => self.salesforce_crm().map(CrmAccess::Salesforce),
            CrmConnectorKind::Monday => self.monday_crm().map(CrmAccess::Monday),
        }
    }

    /// `CRM_CONNECTOR=webhook`: `CRM_WEBHOOK_URL` and `CRM_WEBHOOK_SECRET`.
    pub fn webhook_crm(&self) -> Result<WebhookCrm, ConfigError> {
        let mut p = Problems::default();
        let url = p.take(
            self.crm_webhook_url
                .clone()
                .ok_or_else(|| one("CRM_WEBHOOK_URL is required for CRM_CONNECTOR=webhook")),
        );
        let secret = p.take(self.crm_webhook_secret.clone().ok_or_else(|| {
            one("CRM_WEBHOOK_SECRET is required for CRM_CONNECTOR=webhook (whsec_<base64>)")
        }));
        match (url, secret) {
            (Some(url), Some(secret)) => Ok(WebhookCrm {
                url,
                secret,
                timeout: self.crm_timeout,
            }),
            _ => Err(p.error()),
        }
    }

    /// `CRM_CONNECTOR=hubspot`: `HUBSPOT_ACCESS_TOKEN` and the loaded profile.
    pub fn hubspot_crm(&self) -> Result<HubSpotCrm, ConfigError> {
        let mut p = Problems::default();
        let token = p.take(self.hubspot.access_token.clone().ok_or_else(|| {
            one("HUBSPOT_ACCESS_TOKEN is required for CRM_CONNECTOR=hubspot (a private app token)")
        }));
        let profile = p.take(self.profile_of(CrmConnectorKind::HubSpot, "hubspot"));
        match (token, profile) {
            (Some(access_token), Some(profile)) => Ok(HubSpotCrm {
                api: HubSpotApiSettings {
                    access_token,
                    base_url: self.hubspot.base_url.clone(),
                    timeout: self.crm_timeout,
                    ten_second_budget: self.hubspot.ten_second_budget,
                },
                pipeline: self.hubspot.pipeline.clone(),
                profile,
                milestone_keys: self.fields.milestone_keys.clone(),
            }),
            _ => Err(p.error()),
        }
    }

    /// `CRM_CONNECTOR=salesforce`: `SALESFORCE_LOGIN_URL`, `SALESFORCE_CLIENT_ID` and one grant's
    /// credentials (the private key parsed here, once).
    pub fn salesforce_crm(&self) -> Result<SalesforceCrm, ConfigError> {
        use crate::crm::salesforce::auth::{Grant, parse_private_key};
        let sf = &self.salesforce;
        let mut p = Problems::default();
        let login_url = p.take(sf.login_url.clone().ok_or_else(|| {
            one("SALESFORCE_LOGIN_URL is required for CRM_CONNECTOR=salesforce (the org's My Domain)")
        }));
        let client_id =
            p.take(sf.client_id.clone().ok_or_else(|| {
                one("SALESFORCE_CLIENT_ID is required for CRM_CONNECTOR=salesforce")
            }));
        // Which grant, and its credentials (the private key parsed here, once).
        enum Credentials {
            Secret(Secret),
            Jwt(String, Arc<ring::signature::RsaKeyPair>),
        }
        let credentials = p.take(match (&sf.client_secret, &sf.username, &sf.private_key) {
            (Some(secret), _, _) => Ok(Credentials::Secret(secret.clone())),
            (None, Some(username), Some(pem)) => parse_private_key(pem.expose())
                .map(|key| Credentials::Jwt(username.clone(), Arc::new(key)))
                .map_err(|why| one(format!("SALESFORCE_PRIVATE_KEY {why}"))),
            _ => Err(one(
                "CRM_CONNECTOR=salesforce needs SALESFORCE_CLIENT_SECRET (client credentials) or SALESFORCE_USERNAME and SALESFORCE_PRIVATE_KEY (JWT bearer)",
            )),
        });
        let profile = p.take(self.profile_of(CrmConnectorKind::Salesforce, "salesforce"));
        let (Some(login_url), Some(client_id), Some(credentials), Some(profile)) =
            (login_url, client_id, credentials, profile)
        else {
            return Err(p.error());
        };
        let grant = match credentials {
            Credentials::Secret(client_secret) => Grant::ClientCredentials {
                client_id,
                client_secret,
            },
            Credentials::Jwt(username, key) => Grant::JwtBearer {
                client_id,
                username,
                key,
                // `SALESFORCE_JWT_AUDIENCE`, default by the My Domain: a sandbox's is
                // test.salesforce.com.
                audience: sf.audience.clone().unwrap_or_else(|| {
                    if login_url.contains(".sandbox.") {
                        "https://test.salesforce.com".into()
                    } else {
                        "https://login.salesforce.com".into()
                    }
                }),
            },
        };
        Ok(SalesforceCrm {
            login_url,
            grant,
            api_version: sf.api_version.clone(),
            budget_percent: sf.budget_percent,
            timeout: self.crm_timeout,
            profile,
            milestone_keys: self.fields.milestone_keys.clone(),
        })
    }

    /// `MONDAY_API_TOKEN` and the API's settings; `None` without the token.
    fn monday_api_settings(&self) -> Option<MondayApiSettings> {
        let m = &self.monday;
        Some(MondayApiSettings {
            api_token: m.api_token.clone()?,
            api_url: m.api_url.clone(),
            api_version: m.api_version.clone(),
            timeout: self.crm_timeout,
            minute_budget: m.minute_budget,
            daily_call_budget: m.daily_call_budget,
        })
    }

    /// `CRM_CONNECTOR=monday`: `MONDAY_API_TOKEN` and every board the profile names.
    pub fn monday_crm(&self) -> Result<MondayCrm, ConfigError> {
        let mut p = Problems::default();
        let api = p.take(self.monday_api_settings().ok_or_else(|| {
            one("MONDAY_API_TOKEN is required for CRM_CONNECTOR=monday (an API token)")
        }));
        let profile = p.take(self.profile_of(CrmConnectorKind::Monday, "monday"));
        let boards = profile
            .as_ref()
            .and_then(|profile| p.take(self.monday_boards(profile)));
        match (api, profile, boards) {
            (Some(api), Some(profile), Some(boards)) => Ok(MondayCrm {
                api,
                profile,
                boards,
                milestone_keys: self.fields.milestone_keys.clone(),
            }),
            _ => Err(p.error()),
        }
    }

    /// What `POST /crm/monday/webhooks/{token}` serves with: `None` unless `CRM_CONNECTOR=monday`
    /// (the route then answers 404); with it, every board the profile names is required.
    pub fn monday_inbound(&self) -> Result<Option<MondayInbound>, ConfigError> {
        if self.crm_connector != CrmConnectorKind::Monday {
            return Ok(None);
        }
        let profile = self.profile_of(CrmConnectorKind::Monday, "monday")?;
        Ok(Some(MondayInbound {
            boards: self.monday_boards(&profile)?,
            profile,
            tokens: self.monday.webhook_tokens.clone(),
            signing_secret: self.monday.signing_secret.clone(),
            api: self.monday_api_settings(),
        }))
    }
}

fn one(problem: impl Into<String>) -> ConfigError {
    ConfigError {
        problems: vec![problem.into()],
    }
}

/// `tokens` when it holds one at least; else `problem`.
fn required_tokens(tokens: &SecretSet, problem: &str) -> Result<SecretSet, ConfigError> {
    if tokens.is_empty() {
        Err(one(problem))
    } else {
        Ok(tokens.clone())
    }
}

/// The problems of one start-up check, collected so that one error names them all. Every
/// `Err` taken holds one problem at least, so a `None` from [`Problems::take`] always leaves one.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn take<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.extend(e.problems);
                None
            }
        }
    }

    fn error(self) -> ConfigError {
        ConfigError { problems: self.0 }
    }
}

// ---------------------------------------------------------------------------------------------
// Typed start-up configuration. Each binary parses the environment into [`Config`] (every value
// defaulted or optional), then into its own type below, whose required values are plain fields:
// checked once, here, and every problem named in one error. The builders of
// `crate::runtime` take these types, so none can be called without what it needs and none
// checks again.

/// Whether `v` is an absolute http(s) URL with a host, parsed as every HTTP client here parses
/// it, so a URL no request could use is refused at start, naming its variable, rather than
/// failing every event later. Host names are ASCII only: the URL parser is built without Unicode
/// (IDNA) tables (`idna_adapter` 1.0, for the functions' size), so an international domain name
/// is given in its `xn--` (punycode) form.
fn http_url(v: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(v).map_err(|e| {
        if v.is_ascii() {
            format!("is not a valid URL ({e})")
        } else {
            format!(
                "is not a valid URL ({e}); a host name that is not ASCII must be given in its \
                 punycode form (xn--...)"
            )
        }
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("must be an http(s) URL".into());
    }
    Ok(())
}

/// `ENERFLO_BASE_URL` (default `https://enerflo.io`), `ENERFLO_API_KEY`, `ENERFLO_TIMEOUT_SECS`.
#[derive(Clone, Debug)]
pub struct EnerfloAccess {
    pub base_url: String,
    pub api_key: Secret,
    pub timeout: Duration,
}

/// `TABLE_NAME`, the stage queues a deployment has, `AWS_ENDPOINT_URL` (optional: moto/LocalStack).
#[derive(Clone, Debug)]
pub struct TableAccess {
    pub table_name: String,
    pub queues: BTreeMap<Stage, StageQueueUrls>,
    pub endpoint_url: Option<String>,
}

/// [`TableAccess`] and `AWS_REGION`: what a Lambda's SDK clients take.
#[derive(Clone, Debug)]
pub struct LambdaAws {
    pub region: String,
    pub table: TableAccess,
}

/// The configured CRM connector with what it needs.
#[derive(Clone, Debug)]
pub enum CrmAccess {
    Webhook(WebhookCrm),
    HubSpot(HubSpotCrm),
    Salesforce(SalesforceCrm),
    Monday(MondayCrm),
}

/// `CRM_WEBHOOK_URL`, `CRM_WEBHOOK_SECRET`, `CRM_TIMEOUT_SECS`.
#[derive(Clone, Debug)]
pub struct WebhookCrm {
    pub url: String,
    pub secret: SigningSecret,
    pub timeout: Duration,
}

/// `HUBSPOT_ACCESS_TOKEN`, `HUBSPOT_BASE_URL`, `HUBSPOT_RATE_LIMIT`, `CRM_TIMEOUT_SECS`.
#[derive(Clone, Debug)]
pub struct HubSpotApiSettings {
    pub access_token: Secret,
    pub base_url: String,
    pub timeout: Duration,
    pub ten_second_budget: u32,
}

/// `CRM_CONNECTOR=hubspot`: the API, `HUBSPOT_PIPELINE`, the mapping profile, `MILESTONE_KEY_MAP`.
#[derive(Clone, Debug)]
pub struct HubSpotCrm {
    pub api: HubSpotApiSettings,
    pub pipeline: String,
    pub profile: Arc<crate::crm::profile::Profile>,
    pub milestone_keys: BTreeMap<String, u64>,
}

/// `CRM_CONNECTOR=salesforce`: `SALESFORCE_LOGIN_URL`, the grant (client credentials or JWT
/// bearer), `SALESFORCE_API_VERSION`, `SALESFORCE_API_BUDGET_PERCENT`, the mapping profile.
#[derive(Clone, Debug)]
pub struct SalesforceCrm {
    pub login_url: String,
    pub grant: crate::crm::salesforce::auth::Grant,
    pub api_version: String,
    pub budget_percent: u32,
    pub timeout: Duration,
    pub profile: Arc<crate::crm::profile::Profile>,
    pub milestone_keys: BTreeMap<String, u64>,
}

/// `MONDAY_API_TOKEN`, `MONDAY_API_URL`, `MONDAY_API_VERSION`, `MONDAY_RATE_LIMIT`,
/// `MONDAY_DAILY_CALL_BUDGET`, `CRM_TIMEOUT_SECS`.
#[derive(Clone, Debug)]
pub struct MondayApiSettings {
    pub api_token: Secret,
    pub api_url: String,
    pub api_version: String,
    pub timeout: Duration,
    pub minute_budget: u32,
    pub daily_call_budget: u32,
}

/// `CRM_CONNECTOR=monday`: the API, the mapping profile and its boards (object -> board id).
#[derive(Clone, Debug)]
pub struct MondayCrm {
    pub api: MondayApiSettings,
    pub profile: Arc<crate::crm::profile::Profile>,
    pub boards: BTreeMap<String, String>,
    pub milestone_keys: BTreeMap<String, u64>,
}

/// `POST /crm/monday/webhooks/{token}` with `CRM_CONNECTOR=monday`: the profile and its boards
/// (required), `MONDAY_WEBHOOK_TOKEN`, and the optional `MONDAY_SIGNING_SECRET` (unset: no JWT
/// check) and API (unset `MONDAY_API_TOKEN`: customer items are not read).
#[derive(Clone, Debug)]
pub struct MondayInbound {
    pub profile: Arc<crate::crm::profile::Profile>,
    pub boards: BTreeMap<String, String>,
    pub tokens: SecretSet,
    pub signing_secret: Option<Secret>,
    pub api: Option<MondayApiSettings>,
}

const WEBHOOK_TOKEN_REQUIRED: &str =
    "WEBHOOK_TOKEN is required (a long random value; comma-separate two during a rotation)";
const CRM_INBOUND_TOKEN_REQUIRED: &str = "CRM_INBOUND_TOKEN is required";
const OPS_TOKEN_REQUIRED: &str = "OPS_TOKEN is required (a long random value the operator logs in with; comma-separate two during a rotation)";

/// `enerflo-webhook`: `WEBHOOK_TOKEN`, the table and region (the stage queues are optional: a
/// stage without one has its events parked).
#[derive(Clone, Debug)]
pub struct WebhookFunctionConfig {
    pub settings: Config,
    pub tokens: SecretSet,
    pub aws: LambdaAws,
}

impl WebhookFunctionConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_config(Config::from_env()?)
    }

    pub fn from_config(settings: Config) -> Result<Self, ConfigError> {
        let mut p = Problems::default();
        let tokens = p.take(required_tokens(
            &settings.webhook_tokens,
            WEBHOOK_TOKEN_REQUIRED,
        ));
        let aws = p.take(settings.lambda_aws());
        match (tokens, aws) {
            (Some(tokens), Some(aws)) => Ok(Self {
                settings,
                tokens,
                aws,
            }),
            _ => Err(p.error()),
        }
    }
}

/// A stage consumer (`enerflo-*-to-crm`): the table and region, the stage's own queue and DLQ,
/// Enerflo and the CRM connector.
#[derive(Clone, Debug)]
pub struct StageFunctionConfig {
    pub settings: Config,
    pub stage: Stage,
    pub aws: LambdaAws,
    pub queue: StageQueueUrls,
    pub enerflo: EnerfloAccess,
    pub crm: CrmAccess,
}

impl StageFunctionConfig {
    pub fn from_env(stage: Stage) -> Result<Self, ConfigError> {
        Self::from_config(Config::from_env()?, stage)
    }

    pub fn from_config(settings: Config, stage: Stage) -> Result<Self, ConfigError> {
        let mut p = Problems::default();
        let aws = p.take(settings.lambda_aws());
        let queue = p.take(settings.stage_queue(stage));
        let enerflo = p.take(settings.enerflo_access());
        let crm = p.take(settings.crm_access());
        match (aws, queue, enerflo, crm) {
            (Some(aws), Some(queue), Some(enerflo), Some(crm)) => Ok(Self {
                settings,
                stage,
                aws,
                queue,
                enerflo,
                crm,
            }),
            _ => Err(p.error()),
        }
    }
}

/// An inbound route's function (`crm-*-to-enerflo`): `CRM_INBOUND_TOKEN`, the table and region,
/// Enerflo, and for `crm-monday-to-enerflo` what its route serves with.
#[derive(Clone, Debug)]
pub struct InboundFunctionConfig {
    pub settings: Config,
    pub crm_tokens: SecretSet,
    pub aws: LambdaAws,
    pub enerflo: EnerfloAccess,
    /// Read only for [`crate::registry::Route::Monday`]; `None` there with another connector.
    pub monday: Option<MondayInbound>,
}

impl InboundFunctionConfig {
    pub fn from_env(route: crate::registry::Route) -> Result<Self, ConfigError> {
        Self::from_config(Config::from_env()?, route)
    }

    pub fn from_config(
        settings: Config,
        route: crate::registry::Route,
    ) -> Result<Self, ConfigError> {
        let mut p = Problems::default();
        let crm_tokens = p.take(required_tokens(
            &settings.crm_inbound_tokens,
            CRM_INBOUND_TOKEN_REQUIRED,
        ));
        let aws = p.take(settings.lambda_aws());
        let enerflo = p.take(settings.enerflo_access());
        let monday = if route == crate::registry::Route::Monday {
            p.take(settings.monday_inbound())
        } else {
            Some(None)
        };
        match (crm_tokens, aws, enerflo, monday) {
            (Some(crm_tokens), Some(aws), Some(enerflo), Some(monday)) => Ok(Self {
                settings,
                crm_tokens,
                aws,
                enerflo,
                monday,
            }),
            _ => Err(p.error()),
        }
    }
}

/// `hubspot-notes-poll`: the table and region, Enerflo, and the HubSpot connector's settings.
#[derive(Clone, Debug)]
pub struct NotesPollConfig {
    pub settings: Config,
    pub aws: LambdaAws,
    pub enerflo: EnerfloAccess,
    pub hubspot: HubSpotCrm,
}

impl NotesPollConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_config(Config::from_env()?)
    }

    pub fn from_config(settings: Config) -> Result<Self, ConfigError> {
        let mut p = Problems::default();
        let aws = p.take(settings.lambda_aws());
        let enerflo = p.take(settings.enerflo_access());
        let hubspot = p.take(settings.hubspot_crm());
        match (aws, enerflo, hubspot) {
            (Some(aws), Some(enerflo), Some(hubspot)) => Ok(Self {
                settings,
                aws,
                enerflo,
                hubspot,
            }),
            _ => Err(p.error()),
        }
    }
}

/// `enerflo-reconcile`: the table and region, Enerflo, and the queue of every stage
/// `RECONCILE_STAGES` sweeps.
#[derive(Clone, Debug)]
pub struct ReconcileFunctionConfig {
    pub settings: Config,
    pub aws: LambdaAws,
    pub enerflo: EnerfloAccess,
}

impl ReconcileFunctionConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_config(Config::from_env()?)
    }

    pub fn from_config(settings: Config) -> Result<Self, ConfigError> {
        let mut p = Problems::default();
        let aws = p.take(settings.lambda_aws());
        let enerflo = p.take(settings.enerflo_access());
        for stage in &settings.reconcile.stages {
            p.take(settings.stage_queue(*stage));
        }
        match (aws, enerflo) {
            (Some(aws), Some(enerflo)) if p.0.is_empty() => Ok(Self {
                settings,
                aws,
                enerflo,
            }),
            _ => Err(p.error()),
        }
    }
}

/// `ops-console`: `OPS_TOKEN` and the table (its SDK clients read the default AWS chain).
#[derive(Clone, Debug)]
pub struct OpsConsoleConfig {
    pub ops_tokens: SecretSet,
    pub table: TableAccess,
}

impl OpsConsoleConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_config(&Config::from_env()?)
    }

    pub fn from_config(settings: &Config) -> Result<Self, ConfigError> {
        let mut p = Problems::default();
        let ops_tokens = p.take(required_tokens(&settings.ops_tokens, OPS_TOKEN_REQUIRED));
        let table = p.take(settings.table_access());
        match (ops_tokens, table) {
            (Some(ops_tokens), Some(table)) => Ok(Self { ops_tokens, table }),
            _ => Err(p.error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_unset() {
        let c = load(&[]).expect("loads");
        assert_eq!(c.enerflo_base_url, "https://enerflo.io");
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.retry.max_attempts, 18);
        assert_eq!(c.listen_addr, "127.0.0.1:3000");
    }

    #[test]
    fn malformed_values_are_all_named() {
        let err = load(&[
            ("ENERFLO_BASE_URL", "enerflo.io"),
            ("MAX_BODY_BYTES", "lots"),
            ("CRM_WEBHOOK_SECRET", "whsec_!!!"),
            ("PROJECT_QUEUE_URL", "http://q"),
        ])
        .expect_err("rejects");
        let text = err.to_string();
        for name in [
            "ENERFLO_BASE_URL",
            "MAX_BODY_BYTES",
            "CRM_WEBHOOK_SECRET",
            "PROJECT_DLQ_URL",
        ] {
            assert!(text.contains(name), "{name} not named in: {text}");
        }
    }

    #[test]
    fn a_url_no_request_could_use_is_refused_at_start_naming_its_variable() {
        let err = load(&[
            ("ENERFLO_BASE_URL", "https://"),
            ("CRM_WEBHOOK_URL", "https://b\u{fc}cher.example/events"),
            ("HUBSPOT_BASE_URL", "https://api.hub spot.example"),
            ("AWS_ENDPOINT_URL", "ftp://127.0.0.1:5000"),
        ])
        .expect_err("rejects");
        let text = err.to_string();
        for name in [
            "ENERFLO_BASE_URL is not a valid URL",
            "CRM_WEBHOOK_URL is not a valid URL",
            "HUBSPOT_BASE_URL is not a valid URL",
            "AWS_ENDPOINT_URL must be an http(s) URL",
        ] {
            assert!(text.contains(name), "`{name}` not in: {text}");
        }
        assert!(
            text.contains("punycode"),
            "no hint for the Unicode host: {text}"
        );
        // The punycode form of the same host is accepted.
        let c =
            load(&[("CRM_WEBHOOK_URL", "https://xn--bcher-kva.example/events/")]).expect("loads");
        assert_eq!(
            c.crm_webhook_url.as_deref(),
            Some("https://xn--bcher-kva.example/events")
        );
    }

    #[test]
    fn monday_needs_its_token_and_the_boards_its_profile_names() {
        let c = load(&[("CRM_CONNECTOR", "monday")]).expect("loads");
        assert_eq!(c.crm_connector, CrmConnectorKind::Monday);
        assert_eq!(c.monday.api_version, MONDAY_API_VERSION);
        assert_eq!(c.monday.api_url, "https://api.monday.com/v2");
        let text = c.crm_access().expect_err("missing").to_string();
        for name in [
            "MONDAY_API_TOKEN",
            "MONDAY_CUSTOMERS_BOARD",
            "MONDAY_PROJECTS_BOARD",
        ] {
            assert!(text.contains(name), "{name} not named in: {text}");
        }
        let c = load(&[
            ("CRM_CONNECTOR", "monday"),
            ("MONDAY_API_TOKEN", "fake-monday-token"),
            ("MONDAY_CUSTOMERS_BOARD", "1001"),
            ("MONDAY_PROJECTS_BOARD", "2002"),
        ])
        .expect("loads");
        let Ok(CrmAccess::Monday(monday)) = c.crm_access() else {
            panic!("CRM_CONNECTOR=monday with its token and boards is a Monday connector");
        };
        assert_eq!(
            monday.boards.get("customers").map(String::as_str),
            Some("1001")
        );
        assert_eq!(monday.api.api_token.expose(), "fake-monday-token");
        assert_eq!(c.monday_board("projects").as_deref(), Ok("2002"));
        assert_eq!(c.monday_board("3003").as_deref(), Ok("3003"));
        let err = load(&[
            ("CRM_CONNECTOR", "monday"),
            ("MONDAY_API_VERSION", "2026-05"),
            ("MONDAY_PROJECTS_BOARD", "projects"),
        ])
        .expect_err("rejects")
        .to_string();
        assert!(err.contains("MONDAY_API_VERSION"), "{err}");
        assert!(err.contains("MONDAY_PROJECTS_BOARD must be"), "{err}");
    }

    /// Everything a stage consumer with the webhook connector needs (fake values).
    const STAGE_ENV: &[(&str, &str)] = &[
        ("AWS_REGION", "us-east-1"),
        ("TABLE_NAME", "sync-table"),
        ("PROJECT_QUEUE_URL", "http://q/project"),
        ("PROJECT_DLQ_URL", "http://q/project-dlq"),
        ("ENERFLO_API_KEY", "fake-key-value"),
        ("CRM_WEBHOOK_URL", "https://crm.example/events"),
        (
            "CRM_WEBHOOK_SECRET",
            "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ),
    ];

    fn without(
        pairs: &[(&'static str, &'static str)],
        drop: &[&str],
    ) -> Vec<(&'static str, &'static str)> {
        pairs
            .iter()
            .filter(|(k, _)| !drop.contains(k))
            .copied()
            .collect()
    }

    fn problems(err: ConfigError) -> String {
        err.to_string()
    }

    #[test]
    fn stage_function_names_every_missing_variable_at_once_and_never_prints_secrets() {
        let c = load(&[("ENERFLO_API_KEY", "fake-key-value")]).expect("loads");
        let text = problems(
            StageFunctionConfig::from_config(c.clone(), Stage::Project).expect_err("missing"),
        );
        for name in [
            "AWS_REGION",
            "TABLE_NAME",
            "PROJECT_QUEUE_URL",
            "CRM_WEBHOOK_URL",
            "CRM_WEBHOOK_SECRET",
        ] {
            assert!(text.contains(name), "{name} not named in: {text}");
        }
        assert!(!text.contains("ENERFLO_API_KEY"), "{text}");
        assert!(!format!("{c:?}").contains("fake-key-value"));

        let typed =
            StageFunctionConfig::from_config(load(STAGE_ENV).expect("loads"), Stage::Project)
                .expect("every required value is set");
        // The required values are plain fields: no Option to check again.
        assert_eq!(typed.aws.table.table_name, "sync-table");
        assert_eq!(typed.aws.region, "us-east-1");
        assert_eq!(typed.queue.dlq_url, "http://q/project-dlq");
        assert_eq!(typed.enerflo.api_key.expose(), "fake-key-value");
        assert!(
            matches!(&typed.crm, CrmAccess::Webhook(w) if w.url == "https://crm.example/events")
        );
        assert!(!format!("{typed:?}").contains("fake-key-value"));
    }

    #[test]
    fn stage_function_names_the_missing_key_and_the_queue_of_its_own_stage() {
        let env = without(STAGE_ENV, &["ENERFLO_API_KEY"]);
        let text = problems(
            StageFunctionConfig::from_config(load(&env).expect("loads"), Stage::Status)
                .expect_err("missing"),
        );
        assert_eq!(
            text,
            "configuration: STATUS_QUEUE_URL and STATUS_DLQ_URL are required; ENERFLO_API_KEY is required"
        );
    }

    #[test]
    fn stage_function_names_what_each_native_connector_lacks() {
        let base = without(STAGE_ENV, &["CRM_WEBHOOK_URL", "CRM_WEBHOOK_SECRET"]);
        for (connector, names) in [
            ("hubspot", &["HUBSPOT_ACCESS_TOKEN"][..]),
            (
                "salesforce",
                &[
                    "SALESFORCE_LOGIN_URL",
                    "SALESFORCE_CLIENT_ID",
                    "SALESFORCE_CLIENT_SECRET",
                ][..],
            ),
            (
                "monday",
                &[
                    "MONDAY_API_TOKEN",
                    "MONDAY_CUSTOMERS_BOARD",
                    "MONDAY_PROJECTS_BOARD",
                ][..],
            ),
        ] {
            let mut env = base.clone();
            env.push(("CRM_CONNECTOR", connector));
            let text = problems(
                StageFunctionConfig::from_config(load(&env).expect("loads"), Stage::Project)
                    .expect_err(connector),
            );
            for name in names {
                assert!(
                    text.contains(name),
                    "{connector}: {name} not named in: {text}"
                );
            }
            assert!(!text.contains("CRM_WEBHOOK"), "{connector}: {text}");
        }
    }

    #[test]
    fn salesforce_grant_is_typed_with_a_client_secret_and_named_when_none_is_complete() {
        let c = load(&[
            ("CRM_CONNECTOR", "salesforce"),
            ("SALESFORCE_LOGIN_URL", "https://acme.my.salesforce.com"),
            ("SALESFORCE_CLIENT_ID", "fake-client-id"),
            ("SALESFORCE_CLIENT_SECRET", "fake-client-secret"),
        ])
        .expect("loads");
        let sf = c.salesforce_crm().expect("client credentials suffice");
        assert_eq!(sf.login_url, "https://acme.my.salesforce.com");
        assert!(matches!(
            sf.grant,
            crate::crm::salesforce::auth::Grant::ClientCredentials { ref client_id, .. } if client_id == "fake-client-id"
        ));
        let text = problems(
            load(&[
                ("CRM_CONNECTOR", "salesforce"),
                ("SALESFORCE_LOGIN_URL", "https://acme.my.salesforce.com"),
                ("SALESFORCE_CLIENT_ID", "fake-client-id"),
                ("SALESFORCE_USERNAME", "sync@acme.example"),
            ])
            .expect("loads")
            .salesforce_crm()
            .expect_err("no grant"),
        );
        assert!(text.contains("SALESFORCE_PRIVATE_KEY"), "{text}");
    }

    #[test]
    fn the_salesforce_private_key_is_parsed_once_by_the_connector_that_uses_it() {
        // GIVEN a malformed key for the JWT bearer grant
        let c = load(&[
            ("CRM_CONNECTOR", "salesforce"),
            ("SALESFORCE_LOGIN_URL", "https://acme.my.salesforce.com"),
            ("SALESFORCE_CLIENT_ID", "fake-client-id"),
            ("SALESFORCE_USERNAME", "sync@acme.example"),
            ("SALESFORCE_PRIVATE_KEY", "not-a-pem-key!"),
        ])
        // THEN reading the environment does not parse it (a function without the connector
        // never does)...
        .expect("loads");
        // ... and the connector's settings, where it is parsed, name it
        let text = problems(c.salesforce_crm().expect_err("bad key"));
        assert!(
            text.contains("SALESFORCE_PRIVATE_KEY is not a PEM private key"),
            "{text}"
        );
        assert!(!text.contains("not-a-pem-key"), "{text}");
    }

    #[test]
    fn webhook_function_names_a_missing_webhook_token_table_and_region() {
        let text = problems(
            WebhookFunctionConfig::from_config(load(&[]).expect("loads")).expect_err("missing"),
        );
        for name in ["WEBHOOK_TOKEN", "TABLE_NAME", "AWS_REGION"] {
            assert!(text.contains(name), "{name} not named in: {text}");
        }
        let typed = WebhookFunctionConfig::from_config(
            load(&[
                ("WEBHOOK_TOKEN", "fake-webhook-token"),
                ("TABLE_NAME", "sync-table"),
                ("AWS_DEFAULT_REGION", "eu-west-1"),
            ])
            .expect("loads"),
        )
        .expect("every required value is set");
        assert_eq!(typed.tokens.len(), 1);
        assert_eq!(typed.aws.region, "eu-west-1");
        // No queue is required: a stage without one has its events parked.
        assert!(typed.aws.table.queues.is_empty());
    }

    #[test]
    fn inbound_function_names_a_missing_crm_inbound_token_and_enerflo_key() {
        let env = [("AWS_REGION", "us-east-1"), ("TABLE_NAME", "sync-table")];
        let text = problems(
            InboundFunctionConfig::from_config(
                load(&env).expect("loads"),
                crate::registry::Route::Leads,
            )
            .expect_err("missing"),
        );
        assert_eq!(
            text,
            "configuration: CRM_INBOUND_TOKEN is required; ENERFLO_API_KEY is required"
        );
    }

    #[test]
    fn monday_inbound_function_needs_the_boards_with_monday_and_nothing_without() {
        let env = [
            ("AWS_REGION", "us-east-1"),
            ("TABLE_NAME", "sync-table"),
            ("CRM_INBOUND_TOKEN", "fake-inbound-token"),
            ("ENERFLO_API_KEY", "fake-key-value"),
        ];
        let route = crate::registry::Route::Monday;
        // With another connector the route answers 404: nothing Monday is required.
        let typed = InboundFunctionConfig::from_config(load(&env).expect("loads"), route)
            .expect("another connector");
        assert!(typed.monday.is_none());
        let mut monday = env.to_vec();
        monday.push(("CRM_CONNECTOR", "monday"));
        let text = problems(
            InboundFunctionConfig::from_config(load(&monday).expect("loads"), route)
                .expect_err("no boards"),
        );
        assert!(text.contains("MONDAY_CUSTOMERS_BOARD"), "{text}");
        assert!(text.contains("MONDAY_PROJECTS_BOARD"), "{text}");
        // The API token stays optional for the route (without it customer items are not read).
        assert!(!text.contains("MONDAY_API_TOKEN"), "{text}");
        monday.extend([
            ("MONDAY_CUSTOMERS_BOARD", "1001"),
            ("MONDAY_PROJECTS_BOARD", "2002"),
        ]);
        let typed = InboundFunctionConfig::from_config(load(&monday).expect("loads"), route)
            .expect("boards set");
        let inbound = typed.monday.expect("CRM_CONNECTOR=monday");
        assert_eq!(
            inbound.boards.get("projects").map(String::as_str),
            Some("2002")
        );
        assert!(inbound.api.is_none());
        // Another route's function does not read the Monday settings at all.
        let other = InboundFunctionConfig::from_config(
            load(&monday[..5]).expect("loads"),
            crate::registry::Route::Status,
        )
        .expect("the status route needs no boards");
        assert!(other.monday.is_none());
    }

    #[test]
    fn notes_poll_names_a_missing_hubspot_token() {
        let env = [
            ("AWS_REGION", "us-east-1"),
            ("TABLE_NAME", "sync-table"),
            ("ENERFLO_API_KEY", "fake-key-value"),
            ("CRM_CONNECTOR", "hubspot"),
        ];
        let text = problems(
            NotesPollConfig::from_config(load(&env).expect("loads")).expect_err("missing"),
        );
        assert_eq!(
            text,
            "configuration: HUBSPOT_ACCESS_TOKEN is required for CRM_CONNECTOR=hubspot (a private app token)"
        );
        // With another connector, what is missing is the HubSpot connector itself.
        let text = problems(
            NotesPollConfig::from_config(load(&env[..3]).expect("loads")).expect_err("webhook"),
        );
        assert!(text.contains("HUBSPOT_ACCESS_TOKEN"), "{text}");
        assert!(text.contains("CRM_CONNECTOR=hubspot"), "{text}");
    }

    #[test]
    fn reconcile_function_names_the_queue_of_every_stage_it_sweeps() {
        let env = [
            ("AWS_REGION", "us-east-1"),
            ("TABLE_NAME", "sync-table"),
            ("ENERFLO_API_KEY", "fake-key-value"),
            ("RECONCILE_STAGES", "leads,status"),
            ("LEADS_QUEUE_URL", "http://q/leads"),
            ("LEADS_DLQ_URL", "http://q/leads-dlq"),
        ];
        let text = problems(
            ReconcileFunctionConfig::from_config(load(&env).expect("loads")).expect_err("missing"),
        );
        assert_eq!(
            text,
            "configuration: STATUS_QUEUE_URL and STATUS_DLQ_URL are required"
        );
        let text = problems(
            ReconcileFunctionConfig::from_config(load(&env[1..]).expect("loads"))
                .expect_err("missing"),
        );
        assert!(text.contains("AWS_REGION"), "{text}");
    }

    #[test]
    fn ops_console_names_a_missing_ops_token_and_table() {
        let text = problems(
            OpsConsoleConfig::from_config(&load(&[]).expect("loads")).expect_err("missing"),
        );
        assert!(text.contains("OPS_TOKEN is required"), "{text}");
        assert!(text.contains("TABLE_NAME is required"), "{text}");
        // The console's SDK clients read the default chain: no region is required here.
        assert!(!text.contains("AWS_REGION"), "{text}");
    }

    #[test]
    fn salesforce_org_id_must_be_an_org_id() {
        for good in ["00D000000000001", "00D000000000001EAA"] {
            let c = load(&[("SALESFORCE_ORG_ID", good)]).expect(good);
            assert_eq!(c.salesforce.org_id.as_deref(), Some(good));
        }
        for bad in ["001000000000001AAA", "00D0000000001", "00D000000000001EA!"] {
            let err = load(&[("SALESFORCE_ORG_ID", bad)]).expect_err(bad);
            assert!(err.to_string().contains("SALESFORCE_ORG_ID"), "{err}");
        }
    }
}
