//! `POST /crm/hubspot/{lead|status|milestone}`: a HubSpot workflow's "Send a webhook" action
//! (docs/crm-connectors.md 2.12.1) with a customised key/value body, translated into the canonical
//! `/crm/*` request and handed to that route's own handler ([`crate::inbound::leads`],
//! [`crate::inbound::status`], [`crate::inbound::milestone`]), so validation, idempotency and echo
//! rules are exactly theirs. Authentication (v3 signature or `X-Sync-Token`) is the router's.
//!
//! Bodies are read tolerantly: every value may be a string (numbers as strings, blanks as
//! absent), HubSpot dates may be `YYYY-MM-DD` or epoch milliseconds, unknown keys are ignored.
//! Keys (README "HubSpot workflows"):
//! - every action: `hs_object_id` (the contact's id for a lead, the deal's for the others, the
//!   deal being the CRM id of the project's cross-reference) or `enerflo_install_id`
//!   (addresses the install directly, as `enerflo:<id>`; wins when both are given);
//! - lead: `first_name`/`firstname`, `last_name`/`lastname`, `email`,
//!   `mobile`/`mobilephone`/`phone`, `address` (the street), `city`, `state`, `zip`,
//!   `rep_email`, `setter_email`, `lead_source`, `notes`, `deal_type_id`, `appointment_type_id`;
//! - status: `status` (an Enerflo status name) or `status_id`, else `dealstage`, mapped back
//!   through the profile's `stages.by_status`: one status is used; several are a 422 naming them
//!   (unless one of them is what we pushed to the deal: that is the echo), none a 422;
//! - milestone: `milestone` (an Enerflo milestone id or a `MILESTONE_KEY_MAP` key) with
//!   `start_date` / `completed_date` (blank clears), or any of the profile's `milestone_dates`
//!   properties (`enerflo_pto_date`, ...) with a value: that milestone's completed date.
//!
//! Answers follow HubSpot's retry rules (it retries 5xx and 429 for three days, never another
//! 4xx): 2xx as the canonical route answers; a deal not linked to an install yet is 503 (its
//! project may still be syncing); 429 and 5xx keep their status with `Retry-After` in
//! milliseconds, which HubSpot reads; 400/401/404/422 stay 4xx, with 422 fields named by the
//! workflow's keys.

// A route's error is the problem+json answer itself, built once per request.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::crm::profile::{Profile, parse_date};
use crate::enerflo::lenient::value_to_string;
use crate::http::inbound::{json_object, resolve_install, store_problem};
use crate::http::problem::FieldError;
use crate::http::router::{InboundRoute, RouteParams};
use crate::http::{HttpRequest, HttpResponse, Problem};
use crate::store::XrefStore;
use crate::sync::fingerprints::status_name_fingerprint;
use crate::sync::{Direction, EchoGuard, EchoTarget};
use crate::wire::encode_segment;

/// How long HubSpot is asked to wait before retrying a call for a deal not linked yet (HubSpot
/// keeps its own schedule for 5xx; the header is a hint).
const UNLINKED_RETRY: Duration = Duration::from_secs(60);

/// Which canonical route a workflow call becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Lead,
    Status,
    Milestone,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Self::Lead => "lead",
            Self::Status => "status",
            Self::Milestone => "milestone",
        }
    }
}

pub struct WorkflowRoute {
    pub action: Action,
    /// The canonical route's handler: `LeadsRoute`, `StatusRoute` or `MilestoneRoute`.
    pub target: Arc<dyn InboundRoute>,
    /// `stages.by_status` (for `dealstage`) and `milestone_dates`.
    pub profile: Arc<Profile>,
    /// For a `dealstage` several statuses map to: the install, and which status we pushed.
    pub xref: Arc<dyn XrefStore>,
    pub echo: EchoGuard,
}

/// One canonical call a workflow body becomes.
#[derive(Debug, PartialEq)]
struct Call {
    path: String,
    method: Method,
    params: RouteParams,
    body: Value,
}

/// What a body becomes: the calls, and the workflow key behind each canonical field (so a 422
/// names the key the workflow sent).
#[derive(Debug, Default)]
struct Translation {
    calls: Vec<Call>,
    keys: BTreeMap<String, String>,
}

/// The body's value at the first of `keys` holding one, as text, with the key.
fn first(body: &Map<String, Value>, keys: &[&'static str]) -> Option<(&'static str, String)> {
    keys.iter()
        .find_map(|k| body.get(*k).and_then(value_to_string).map(|v| (*k, v)))
}

fn bad(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A HubSpot date (`YYYY-MM-DD`, epoch milliseconds at midnight UTC as HubSpot stores date
/// properties, or an ISO timestamp) as `YYYY-MM-DD`.
pub fn hubspot_date(raw: &str) -> Option<String> {
    let s = raw.trim();
    let date = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i128 = s.parse().ok()?;
        time::OffsetDateTime::from_unix_timestamp_nanos(ms.checked_mul(1_000_000)?)
            .ok()?
            .date()
    } else {
        parse_date(s)?
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    date.format(&fmt).ok()
}

/// `{install}`: `enerflo:<enerflo_install_id>`, else the deal's `hs_object_id`.
fn install_ref(body: &Map<String, Value>) -> Result<String, FieldError> {
    if let Some((key, id)) = first(body, &["enerflo_install_id"]) {
        return if id.bytes().all(|b| b.is_ascii_digit()) {
            Ok(format!("enerflo:{id}"))
        } else {
            Err(bad(key, "must be a numeric Enerflo install id"))
        };
    }
    first(body, &["hs_object_id"])
        .map(|(_, id)| id)
        .ok_or_else(|| {
            bad(
                "hs_object_id",
                "is required: the deal's record id (or enerflo_install_id)",
            )
        })
}

fn lead_call(body: &Map<String, Value>, keys: &mut BTreeMap<String, String>) -> Call {
    let mut out = Map::new();
    // Each field from the first key holding a value; a missing one is named by its HubSpot
    // property (`missing`).
    let mut put =
        |field: &str, from: &[&'static str], missing: &str, out: &mut Map<String, Value>| {
            match first(body, from) {
                Some((key, v)) => {
                    keys.insert(field.to_owned(), key.to_owned());
                    out.insert(field.to_owned(), Value::String(v));
                }
                None => {
                    keys.insert(field.to_owned(), missing.to_owned());
                }
            }
        };
    put(
        "crm_id",
        &["hs_object_id", "crm_id"],
        "hs_object_id",
        &mut out,
    );
    put(
        "first_name",
        &["first_name", "firstname"],
        "firstname",
        &mut out,
    );
    put(
        "last_name",
        &["last_name", "lastname"],
        "lastname",
        &mut out,
    );
    put("email", &["email"], "email", &mut out);
    put(
        "mobile",
        &["mobile", "mobilephone", "phone"],
        "mobilephone",
        &mut out,
    );
    for field in [
        "rep_email",
        "setter_email",
        "lead_source",
        "notes",
        "deal_type_id",
        "appointment_type_id",
    ] {
        if let Some(v) = body.get(field).and_then(value_to_string) {
            out.insert(field.to_owned(), Value::String(v));
        }
    }
    if let Some(Value::Object(nested)) = body.get("address") {
        // Already the canonical shape.
        out.insert("address".into(), Value::Object(nested.clone()));
    } else {
        let mut address = Map::new();
        for (part, key) in [
            ("street", "address"),
            ("city", "city"),
            ("state", "state"),
            ("zip", "zip"),
        ] {
            keys.insert(format!("address.{part}"), key.to_owned());
            if let Some(v) = body.get(key).and_then(value_to_string) {
                address.insert(part.to_owned(), Value::String(v));
            }
        }
        if !address.is_empty() {
            out.insert("address".into(), Value::Object(address));
        }
    }
    Call {
        path: "/crm/leads".into(),
        method: Method::POST,
        params: RouteParams::default(),
        body: Value::Object(out),
    }
}

fn milestone_call(install: &str, milestone: &str, body: Value) -> Call {
    Call {
        path: format!(
            "/crm/installs/{}/milestones/{}",
            encode_segment(install),
            encode_segment(milestone)
        ),
        method: Method::PUT,
        params: RouteParams {
            install: Some(install.to_owned()),
            milestone: Some(milestone.to_owned()),
        },
        body,
    }
}

impl WorkflowRoute {
    async fn translate(&self, body: &Map<String, Value>) -> Result<Translation, Problem> {
        let mut t = Translation::default();
        match self.action {
            Action::Lead => {
                let call = lead_call(body, &mut t.keys);
                t.calls.push(call);
            }
            Action::Status => {
                let install = install_ref(body).map_err(|e| Problem::validation(vec![e]))?;
                let status = self.status_body(body, &install, &mut t.keys).await?;
                t.calls.push(Call {
                    path: format!("/crm/installs/{}/status", encode_segment(&install)),
                    method: Method::PUT,
                    params: RouteParams {
                        install: Some(install),
                        milestone: None,
                    },
                    body: status,
                });
            }
            Action::Milestone => {
                let install = install_ref(body).map_err(|e| Problem::validation(vec![e]))?;
                t.calls = self.milestone_calls(body, &install, &mut t.keys)?;
            }
        }
        Ok(t)
    }

    /// `status` / `status_id` as given, else `dealstage` mapped back through the profile.
    async fn status_body(
        &self,
        body: &Map<String, Value>,
        install: &str,
        keys: &mut BTreeMap<String, String>,
    ) -> Result<Value, Problem> {
        let mut out = Map::new();
        for field in ["status", "status_id"] {
            if let Some(v) = body.get(field).and_then(value_to_string) {
                out.insert(field.to_owned(), Value::String(v));
            }
        }
        if !out.is_empty() {
            return Ok(Value::Object(out));
        }
        let Some((_, stage)) = first(body, &["dealstage"]) else {
            return Err(Problem::validation(vec![bad(
                "status",
                "give status (an Enerflo status name), status_id, or dealstage",
            )]));
        };
        keys.insert("status".into(), "dealstage".into());
        let names: Vec<String> = self
            .profile
            .stages
            .by_status
            .iter()
            .filter(|(_, s)| s.as_str() == stage)
            .map(|(name, _)| name.clone())
            .collect();
        let name = match names.as_slice() {
            [one] => one.clone(),
            [] => {
                let mapped: Vec<&str> = {
                    let mut v: Vec<&str> = self
                        .profile
                        .stages
                        .by_status
                        .values()
                        .map(String::as_str)
                        .collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                };
                return Err(Problem::validation(vec![bad(
                    "dealstage",
                    format!(
                        "`{stage}` is not a stage the mapping profile's stages.by_status maps an Enerflo status to (mapped stages: {}); send status or status_id instead",
                        mapped.join(", ")
                    ),
                )]));
            }
            several => match self.pushed_among(install, several).await? {
                Some(ours) => ours,
                None => {
                    return Err(Problem::validation(vec![bad(
                        "dealstage",
                        format!(
                            "`{stage}` is the stage of several Enerflo statuses ({}); send status or status_id instead",
                            several.join(", ")
                        ),
                    )]));
                }
            },
        };
        out.insert("status".into(), Value::String(name));
        Ok(Value::Object(out))
    }

    /// Which of `names` we pushed to this install's deal (its echo coming back), if any.
    async fn pushed_among(
        &self,
        install: &str,
        names: &[String],
    ) -> Result<Option<String>, Problem> {
        let target = resolve_install(self.xref.as_ref(), install).await?;
        for name in names {
            if self
                .echo
                .is_ours(
                    Direction::ToCrm,
                    &EchoTarget::Status(target.install_id),
                    &[status_name_fingerprint(name)],
                )
                .await
                .map_err(store_problem)?
            {
                return Ok(Some(name.clone()));
            }
        }
        Ok(None)
    }

    fn milestone_calls(
        &self,
        body: &Map<String, Value>,
        install: &str,
        keys: &mut BTreeMap<String, String>,
    ) -> Result<Vec<Call>, Problem> {
        let mut errors = Vec::new();
        if let Some((_, given)) = first(body, &["milestone"]) {
            // A date property's name addresses its milestone too.
            let milestone = self
                .profile
                .milestone_dates
                .iter()
                .find(|(_, property)| **property == given)
                .map(|(key, _)| key.clone())
                .unwrap_or(given);
            let mut out = Map::new();
            for field in ["start_date", "completed_date"] {
                match body.get(field) {
                    None => {}
                    Some(v) => match value_to_string(v) {
                        // HubSpot sends an empty property as "": the date is cleared.
                        None => {
                            out.insert(field.into(), Value::Null);
                        }
                        Some(raw) => match hubspot_date(&raw) {
                            Some(d) => {
                                out.insert(field.into(), Value::String(d));
                            }
                            None => errors.push(bad(
                                field,
                                "must be a date: YYYY-MM-DD or epoch milliseconds (blank clears it)",
                            )),
                        },
                    },
                }
            }
            if let Some(v) = body.get("crm_update_id").and_then(value_to_string) {
                out.insert("crm_update_id".into(), Value::String(v));
            }
            if !errors.is_empty() {
                return Err(Problem::validation(errors));
            }
            return Ok(vec![milestone_call(
                install,
                &milestone,
                Value::Object(out),
            )]);
        }
        let mut calls = Vec::new();
        for (milestone, property) in &self.profile.milestone_dates {
            let Some(raw) = body.get(property).and_then(value_to_string) else {
                continue;
            };
            match hubspot_date(&raw) {
                Some(d) => {
                    keys.insert("completed_date".into(), property.clone());
                    calls.push(milestone_call(
                        install,
                        milestone,
                        json!({"completed_date": d}),
                    ));
                }
                None => errors.push(bad(
                    property,
                    "must be a date: YYYY-MM-DD or epoch milliseconds",
                )),
            }
        }
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        if calls.is_empty() {
            let properties: Vec<&str> = self
                .profile
                .milestone_dates
                .values()
                .map(String::as_str)
                .collect();
            return Err(Problem::validation(vec![bad(
                "milestone",
                format!(
                    "give milestone with start_date and/or completed_date, or a date in one of the profile's milestone date properties ({}); empty properties are ignored",
                    properties.join(", ")
                ),
            )]));
        }
        Ok(calls)
    }
}

fn canonical_request(call: &Call) -> HttpRequest {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    HttpRequest {
        method: call.method.clone(),
        path: call.path.clone(),
        query: None,
        headers,
        body: Bytes::from(serde_json::to_vec(&call.body).unwrap_or_default()),
    }
}

/// A canonical route's answer under HubSpot's retry rules: a deal not linked yet is 503; 429 and
/// 5xx carry `Retry-After` in milliseconds; a 422 names the workflow's keys.
pub fn for_hubspot(resp: HttpResponse, keys: &BTreeMap<String, String>) -> HttpResponse {
    let status = resp.status.as_u16();
    let body = resp.body_json();
    let problem_type = body.get("type").and_then(Value::as_str).unwrap_or("");
    if status == 404 && problem_type.ends_with(":unlinked-install") {
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "hubspot-deal-unlinked",
            "Service Unavailable",
            "This HubSpot deal is not linked to an Enerflo install yet (its project may still be syncing); HubSpot retries the call.",
        )
        .with_retry_after(UNLINKED_RETRY);
        if let Some(detail) = body.get("detail").and_then(Value::as_str) {
            p.detail = format!("{} ({detail})", p.detail);
        }
        return retry_after_in_millis(p.into_response());
    }
    if status == 429 || status >= 500 {
        return retry_after_in_millis(resp);
    }
    if status == 422
        && !keys.is_empty()
        && let Value::Object(mut map) = body
        && let Some(Value::Array(errors)) = map.get_mut("errors")
    {
        for e in errors.iter_mut() {
            if let Some(field) = e.get("field").and_then(Value::as_str)
                && let Some(key) = keys.get(field)
            {
                e["field"] = Value::String(key.clone());
            }
        }
        let mut out = resp;
        out.body = Bytes::from(serde_json::to_vec(&Value::Object(map)).unwrap_or_default());
        return out;
    }
    resp
}

/// `Retry-After: <seconds>` as HubSpot reads it: milliseconds.
fn retry_after_in_millis(mut resp: HttpResponse) -> HttpResponse {
    let secs = resp
        .headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(secs) = secs
        && let Ok(v) = HeaderValue::from_str(&secs.saturating_mul(1000).to_string())
    {
        resp.headers.insert(http::header::RETRY_AFTER, v);
    }
    resp
}

#[async_trait]
impl InboundRoute for WorkflowRoute {
    async fn handle(&self, req: &HttpRequest, _params: &RouteParams) -> HttpResponse {
        let body = match json_object(req) {
            Ok(b) => b,
            Err(p) => return p.into_response(),
        };
        let t = match self.translate(&body).await {
            Ok(t) => t,
            Err(p) => return for_hubspot(p.into_response(), &BTreeMap::new()),
        };
        let mut answers = Vec::with_capacity(t.calls.len());
        for call in &t.calls {
            let resp = for_hubspot(
                self.target
                    .handle(&canonical_request(call), &call.params)
                    .await,
                &t.keys,
            );
            tracing::info!(
                route = self.action.name(),
                canonical = %call.path,
                status = resp.status.as_u16(),
                "HubSpot workflow call"
            );
            if !resp.status.is_success() {
                // Earlier calls of this body are done; HubSpot's retry repeats them, and the
                // canonical routes are idempotent.
                return resp;
            }
            answers.push(resp);
        }
        if answers.len() == 1
            && let Some(one) = answers.pop()
        {
            return one;
        }
        let results: Vec<Value> = answers.iter().map(HttpResponse::body_json).collect();
        let status = if results.iter().all(|r| r["status"] == "echo") {
            "echo"
        } else {
            "updated"
        };
        HttpResponse::json(
            StatusCode::OK,
            &json!({"status": status, "milestones": results}),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::Config;
    use crate::crm::hubspot::signature;
    use crate::enerflo::client::HttpEnerfloClient;
    use crate::http::Router;
    use crate::queue::embedded::EmbeddedQueue;
    use crate::registry::Route;
    use crate::runtime::{self, Ports};
    use crate::store::embedded::{EmbeddedStore, open_database};
    use crate::store::{EntityKind, IdForm, IdRef};
    use crate::sync::fingerprints::status_fingerprint;
    use wiremock::matchers::{body_json, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const SECRET: &str = "fake-client-secret-0001";
    const TOKEN: &str = "fake-sync-token-0001";
    const PUBLIC: &str = "https://hooks.example.test";
    const INSTALL: u64 = 700001;
    const DEAL: &str = "9001";

    struct Kit {
        enerflo: MockServer,
        store: Arc<EmbeddedStore>,
        router: Router,
        ports: Ports,
        config: Config,
    }

    /// The built-in profile, with Cancelled also mapped to `closedlost` (beside Voided): a stage
    /// two statuses share.
    fn profile_file() -> String {
        let mut profile: Value =
            serde_json::from_str(crate::crm::profile::HUBSPOT_DEFAULT).unwrap();
        profile["stages"]["by_status"]["Cancelled"] = json!("closedlost");
        let path = std::env::temp_dir().join(format!("hsin-profile-{}.json", fastrand::u64(..)));
        std::fs::write(&path, profile.to_string()).unwrap();
        path.display().to_string()
    }

    async fn kit_with(extra: &[(&str, &str)]) -> Kit {
        let enerflo = MockServer::start().await;
        let uri = enerflo.uri();
        let profile = profile_file();
        let mut vars: BTreeMap<String, String> = [
            ("ENERFLO_BASE_URL", uri.as_str()),
            ("ENERFLO_API_KEY", "fake-enerflo-key"),
            ("CRM_CONNECTOR", "hubspot"),
            ("HUBSPOT_ACCESS_TOKEN", "fake-hubspot-token"),
            ("HUBSPOT_CLIENT_SECRET", SECRET),
            ("HUBSPOT_PUBLIC_URL", PUBLIC),
            ("CRM_INBOUND_TOKEN", TOKEN),
            ("MILESTONE_KEY_MAP", "pto=3905,design=3902"),
            ("INBOUND_WAIT_SECS", "2"),
            ("CRM_MAPPING_FILE", profile.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("config");
        let _ = std::fs::remove_file(&profile);
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let ports = Ports::one_store(
            store.clone(),
            Arc::new(EmbeddedQueue::new(open_database(None).unwrap(), [])),
        );
        let client = HttpEnerfloClient::for_tests(&uri);
        let mut router = Router {
            crm_tokens: config.crm_inbound_tokens.clone(),
            max_body_bytes: Some(config.max_body_bytes),
            hubspot: runtime::hubspot_routes(&config),
            ..Router::default()
        };
        // As the functions wire them (the Salesforce routes beside the HubSpot ones).
        for canonical in [Route::Leads, Route::Status, Route::Milestone] {
            for (route, handler) in
                runtime::inbound_routes(canonical, &config, &ports, client.clone(), None)
            {
                router.set(route, handler);
            }
        }
        Kit {
            enerflo,
            store,
            router,
            ports,
            config,
        }
    }

    async fn kit() -> Kit {
        kit_with(&[]).await
    }

    impl Kit {
        async fn link_deal(&self) {
            let link = self
                .store
                .link(
                    EntityKind::Project,
                    &[
                        IdRef::new(IdForm::Install, INSTALL),
                        IdRef::new(IdForm::Crm, DEAL),
                    ],
                )
                .await
                .unwrap();
            assert_eq!(link.id(IdForm::Install).as_deref(), Some("700001"));
        }

        async fn statuses(&self) {
            Mock::given(method("GET"))
                .and(path("/api/v3/install-statuses"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!([
                    {"id": 1, "name": "New"}, {"id": 6, "name": "Completed"},
                    {"id": 7, "name": "Voided"}, {"id": 8, "name": "Cancelled"}
                ])))
                .mount(&self.enerflo)
                .await;
        }

        async fn writes(&self) -> Vec<(String, String, Value)> {
            self.enerflo
                .received_requests()
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.method.as_str() != "GET")
                .map(|r| {
                    (
                        r.method.to_string(),
                        r.url.path().to_owned(),
                        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
                    )
                })
                .collect()
        }
    }

    fn signed_request(action: &str, body: &Value, ts: i64, url: &str) -> HttpRequest {
        let bytes = serde_json::to_vec(body).unwrap();
        let sig = signature::v3(
            SECRET,
            "POST",
            &signature::hubspot_uri(url, false),
            &bytes,
            &ts.to_string(),
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-hubspot-signature-v3",
            HeaderValue::from_str(&sig).unwrap(),
        );
        headers.insert(
            "x-hubspot-request-timestamp",
            HeaderValue::from_str(&ts.to_string()).unwrap(),
        );
        headers.insert(
            "host",
            HeaderValue::from_static("abc.execute-api.example.test"),
        );
        HttpRequest {
            method: Method::POST,
            path: format!("/crm/hubspot/{action}"),
            query: None,
            headers,
            body: Bytes::from(bytes),
        }
    }

    fn signed(action: &str, body: &Value) -> HttpRequest {
        signed_request(
            action,
            body,
            crate::timefmt::now_millis(),
            &format!("{PUBLIC}/crm/hubspot/{action}"),
        )
    }

    fn with_token(action: &str, body: &Value, header: &str, value: &str) -> HttpRequest {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::HeaderName::from_bytes(header.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        HttpRequest {
            method: Method::POST,
            path: format!("/crm/hubspot/{action}"),
            query: None,
            headers,
            body: Bytes::from(serde_json::to_vec(body).unwrap()),
        }
    }

    fn canonical(method: Method, path: &str, body: &Value) -> HttpRequest {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
        );
        HttpRequest {
            method,
            path: path.to_owned(),
            query: None,
            headers,
            body: Bytes::from(serde_json::to_vec(body).unwrap()),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Authentication
    // ---------------------------------------------------------------------------------------

    #[tokio::test]
    async fn a_v3_signed_call_or_the_sync_token_is_accepted_and_anything_else_is_401() {
        let k = kit().await;
        k.link_deal().await;
        k.statuses().await;
        Mock::given(method("PUT"))
            .and(path("/api/v3/installs/700001"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": INSTALL})))
            .mount(&k.enerflo)
            .await;
        let body = json!({"hs_object_id": DEAL, "status": "Completed"});
        for req in [
            signed("status", &body),
            with_token("status", &body, "x-sync-token", TOKEN),
            with_token("status", &body, "authorization", &format!("Bearer {TOKEN}")),
        ] {
            let resp = k.router.handle(req).await;
            assert_eq!(resp.status.as_u16(), 200, "{}", resp.body_json());
        }
        let refused = [
            with_token("status", &body, "x-sync-token", "wrong-token"),
            with_token("status", &body, "x-hubspot-signature", "abc"),
            with_token("status", &body, "content-type", "application/json"),
        ];
        for req in refused {
            let resp = k.router.handle(req).await;
            assert_eq!(resp.status.as_u16(), 401);
            assert_eq!(
                resp.headers.get("content-type").unwrap(),
                "application/problem+json"
            );
            assert!(!String::from_utf8_lossy(&resp.body).contains(TOKEN));
        }
        assert_eq!(
            k.writes().await.len(),
            3,
            "only the three accepted calls wrote"
        );
    }

    #[tokio::test]
    async fn a_stale_timestamp_and_a_signature_over_another_url_are_401_and_write_nothing() {
        let k = kit().await;
        k.link_deal().await;
        k.statuses().await;
        let body = json!({"hs_object_id": DEAL, "status": "Completed"});
        let now = crate::timefmt::now_millis();
        let url = format!("{PUBLIC}/crm/hubspot/status");
        let stale = signed_request("status", &body, now - 6 * 60 * 1000, &url);
        let resp = k.router.handle(stale).await;
        assert_eq!(resp.status.as_u16(), 401);
        assert!(
            resp.body_json()["detail"]
                .as_str()
                .unwrap()
                .contains("more than 5 minutes"),
            "{}",
            resp.body_json()
        );
        // Signed for the execute-api host, but HUBSPOT_PUBLIC_URL is the custom domain.
        let other = signed_request(
            "status",
            &body,
            now,
            "https://abc.execute-api.example.test/crm/hubspot/status",
        );
        let resp = k.router.handle(other).await;
        assert_eq!(resp.status.as_u16(), 401);
        assert!(
            resp.body_json()["detail"]
                .as_str()
                .unwrap()
                .contains("does not match")
        );
        assert!(k.writes().await.is_empty());
    }

    #[tokio::test]
    async fn without_hubspot_public_url_the_signed_url_is_rebuilt_from_host_and_forwarded_proto() {
        let k = kit_with(&[("HUBSPOT_PUBLIC_URL", "")]).await;
        k.link_deal().await;
        k.statuses().await;
        Mock::given(method("PUT"))
            .and(path("/api/v3/installs/700001"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .mount(&k.enerflo)
            .await;
        let body = json!({"hs_object_id": DEAL, "status": "Completed"});
        let now = crate::timefmt::now_millis();
        let mut req = signed_request(
            "status",
            &body,
            now,
            "https://abc.execute-api.example.test/crm/hubspot/status",
        );
        let plain = req.clone();
        req.headers
            .insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(k.router.handle(req).await.status.as_u16(), 200);
        // Without the header the scheme is http (a direct call), so the https signature fails.
        assert_eq!(k.router.handle(plain).await.status.as_u16(), 401);
    }

    // ---------------------------------------------------------------------------------------
    // Same commands as /crm/*
    // ---------------------------------------------------------------------------------------

    #[tokio::test]
    async fn a_lead_workflow_body_reaches_enerflo_as_the_same_lead_add_as_crm_leads() {
        let k = kit().await;
        for customer in [900001, 900002] {
            Mock::given(method("POST"))
                .and(path("/api/v1/partner/action/lead/add"))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"status": "success", "customer_id": customer})),
                )
                .up_to_n_times(1)
                .mount(&k.enerflo)
                .await;
        }
        let workflow = json!({
            "hs_object_id": "5101", "firstname": "Pat", "lastname": "Example",
            "email": "pat@example.test", "mobilephone": "+1 (555) 010-0000",
            "address": "1 Example Way", "city": "Austin", "state": "tx", "zip": "78701",
            "deal_type_id": "3", "hs_lead_status": "NEW", "unknown_key": {"x": 1}
        });
        let resp = k.router.handle(signed("lead", &workflow)).await;
        assert_eq!(resp.status.as_u16(), 201, "{}", resp.body_json());
        assert_eq!(resp.body_json()["enerflo_customer_id"], 900001);
        // The same lead through POST /crm/leads, under another crm_id.
        let direct = json!({
            "crm_id": "5102", "first_name": "Pat", "last_name": "Example",
            "email": "pat@example.test", "mobile": "15550100000", "deal_type_id": 3,
            "address": {"street": "1 Example Way", "city": "Austin", "state": "TX", "zip": "78701"}
        });
        let resp = k
            .router
            .handle(canonical(Method::POST, "/crm/leads", &direct))
            .await;
        assert_eq!(resp.status.as_u16(), 201);
        let writes = k.writes().await;
        assert_eq!(writes.len(), 2);
        let mut via_workflow = writes[0].2.clone();
        via_workflow["lead"]["integration_record_id"] = json!("5102");
        assert_eq!(via_workflow, writes[1].2, "one command, whichever route");
        // A repeat of the workflow call is the canonical route's "unchanged": no Enerflo call.
        let again = k.router.handle(signed("lead", &workflow)).await;
        assert_eq!(
            (again.status.as_u16(), again.body_json()["status"].as_str()),
            (200, Some("unchanged"))
        );
        assert_eq!(k.writes().await.len(), 2);
    }

    #[tokio::test]
    async fn an_invalid_lead_is_422_naming_the_workflows_keys() {
        let k = kit().await;
        let resp = k
            .router
            .handle(signed(
                "lead",
                &json!({"hs_object_id": "5101", "firstname": "Pat", "state": "Texas", "zip": "ABCDE"}),
            ))
            .await;
        assert_eq!(resp.status.as_u16(), 422);
        let fields: Vec<String> = resp.body_json()["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(fields, ["lastname", "address", "city", "state", "zip"]);
        assert!(k.writes().await.is_empty());
    }

    #[tokio::test]
    async fn a_status_workflow_body_is_the_same_status_write_as_crm_status() {
        let k = kit().await;
        k.link_deal().await;
        k.statuses().await;
        Mock::given(method("PUT"))
            .and(path("/api/v3/installs/700001"))
            .and(body_json(json!({"status_id": 6})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(2)
            .mount(&k.enerflo)
            .await;
        let resp = k
            .router
            .handle(signed(
                "status",
                &json!({"hs_object_id": DEAL, "status_id": "6"}),
            ))
            .await;
        assert_eq!(resp.status.as_u16(), 200, "{}", resp.body_json());
        assert_eq!(resp.body_json()["install_status"]["name"], "Completed");
        let resp = k
            .router
            .handle(canonical(
                Method::PUT,
                "/crm/installs/9001/status",
                &json!({"status": "Completed"}),
            ))
            .await;
        assert_eq!(resp.status.as_u16(), 200);
    }

    #[tokio::test]
    async fn a_dealstage_is_mapped_back_through_the_profile() {
        let k = kit().await;
        k.link_deal().await;
        k.statuses().await;
        Mock::given(method("PUT"))
            .and(path("/api/v3/installs/700001"))
            .and(body_json(json!({"status_id": 6})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .mount(&k.enerflo)
            .await;
        // closedwon <- Completed (one status): written.
        let resp = k
            .router
            .handle(signed(
                "status",
                &json!({"hs_object_id": DEAL, "dealstage": "closedwon"}),
            ))
            .await;
        assert_eq!(resp.status.as_u16(), 200, "{}", resp.body_json());
        assert_eq!(resp.body_json()["install_status"]["id"], 6);
        // closedlost <- Voided and Cancelled: 422 naming both.
        let resp = k
            .router
            .handle(signed(
                "status",
                &json!({"hs_object_id": DEAL, "dealstage": "closedlost"}),
            ))
            .await;
        assert_eq!(resp.status.as_u16(), 422);
        let message = resp.body_json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("cancelled, voided"), "{message}");
        assert_eq!(resp.body_json()["errors"][0]["field"], "dealstage");
        // A stage no status maps to: 422.
        let resp = k
            .router
            .handle(signed(
                "status",
                &json!({"hs_object_id": DEAL, "dealstage": "qualifiedtobuy"}),
            ))
            .await;
        assert_eq!(resp.status.as_u16(), 422);
        assert!(
            resp.body_json()["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("closedlost, closedwon")
        );
    }

    /// What the outbound status stage records when it pushes a status to the CRM
    /// (crate::stages::status): the id's and the name's fingerprints, direction ToCrm.
    async fn pushed_to_hubspot(k: &Kit, id: u64, name: &str) {
        k.ports
            .echo_guard(&k.config)
            .record(
                Direction::ToCrm,
                &EchoTarget::Status(INSTALL),
                &[status_fingerprint(id), status_name_fingerprint(name)],
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_stage_we_pushed_coming_back_as_a_workflow_dealstage_writes_nothing_to_enerflo() {
        let k = kit().await;
        k.link_deal().await;
        k.statuses().await;
        // GIVEN Enerflo's "Completed" was pushed to the deal (dealstage closedwon)
        pushed_to_hubspot(&k, 6, "Completed").await;
        // WHEN HubSpot's workflow sends the stage back
        let resp = k
            .router
            .handle(signed(
                "status",
                &json!({"hs_object_id": DEAL, "dealstage": "closedwon"}),
            ))
            .await;
        // THEN it is the echo, and Enerflo is not written
        assert_eq!(
            (resp.status.as_u16(), resp.body_json()["status"].as_str()),
            (200, Some("echo")),
            "{}",
            resp.body_json()
        );
        // ... also for a stage several statuses share (closedlost: Voided and Cancelled), once
        // "Voided" was pushed: the one we pushed is recognised
        pushed_to_hubspot(&k, 7, "Voided").await;
        let resp = k
            .router
            .handle(signed(
                "status",
                &json!({"enerflo_install_id": "700001", "dealstage": "closedlost"}),
            ))
            .await;
        assert_eq!(
            (resp.status.as_u16(), resp.body_json()["status"].as_str()),
            (200, Some("echo")),
            "{}",
            resp.body_json()
        );
        assert!(k.writes().await.is_empty());
    }

    #[tokio::test]
    async fn a_milestone_workflow_body_is_the_same_milestone_write_as_crm_milestones() {
        let k = kit().await;
        k.link_deal().await;
        Mock::given(method("PUT"))
            .and(path("/api/v3/installs/700001/milestones/3905"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .mount(&k.enerflo)
            .await;
        // By key + dates, a date as epoch ms (HubSpot's midnight UTC).
        let resp = k
            .router
            .handle(signed(
                "milestone",
                &json!({"hs_object_id": DEAL, "milestone": "pto", "completed_date": "1797724800000", "start_date": ""}),
            ))
            .await;
        assert_eq!(resp.status.as_u16(), 200, "{}", resp.body_json());
        // By the profile's date property.
        let resp = k
            .router
            .handle(signed(
                "milestone",
                &json!({"hs_object_id": DEAL, "enerflo_pto_date": "2026-12-20", "enerflo_design_date": ""}),
            ))
            .await;
        assert_eq!(resp.status.as_u16(), 200, "{}", resp.body_json());
        assert_eq!(resp.body_json()["completed_date"], "2026-12-20");
        // The canonical route, for comparison.
        let resp = k
            .router
            .handle(canonical(
                Method::PUT,
                "/crm/installs/9001/milestones/pto",
                &json!({"completed_date": "2026-12-20", "start_date": null}),
            ))
            .await;
        assert_eq!(resp.status.as_u16(), 200);
        let writes = k.writes().await;
        assert_eq!(writes.len(), 3);
        assert_eq!(
            writes[0].2,
            json!({"completed_date": "2026-12-20", "start_date": null})
        );
        assert_eq!(writes[0].2, writes[2].2, "one command, whichever route");
        assert_eq!(writes[1].2, json!({"completed_date": "2026-12-20"}));
        // A date that is not one names the workflow's key.
        let resp = k
            .router
            .handle(signed(
                "milestone",
                &json!({"hs_object_id": DEAL, "enerflo_pto_date": "next week"}),
            ))
            .await;
        assert_eq!(resp.status.as_u16(), 422);
        assert_eq!(resp.body_json()["errors"][0]["field"], "enerflo_pto_date");
        assert_eq!(k.writes().await.len(), 3);
    }

    // ---------------------------------------------------------------------------------------
    // HubSpot's retry rules
    // ---------------------------------------------------------------------------------------

    #[tokio::test]
    async fn an_unlinked_deal_is_503_with_retry_after_in_milliseconds() {
        let k = kit().await;
        let resp = k
            .router
            .handle(signed(
                "status",
                &json!({"hs_object_id": "9999", "status": "Completed"}),
            ))
            .await;
        assert_eq!(resp.status.as_u16(), 503, "{}", resp.body_json());
        assert_eq!(resp.headers.get("retry-after").unwrap(), "60000");
        assert!(k.writes().await.is_empty());
    }

    #[tokio::test]
    async fn enerflo_rate_limiting_is_429_with_retry_after_in_milliseconds() {
        let k = kit().await;
        k.link_deal().await;
        Mock::given(method("PUT"))
            .and(path("/api/v3/installs/700001/milestones/3905"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "7"))
            .mount(&k.enerflo)
            .await;
        let resp = k
            .router
            .handle(signed(
                "milestone",
                &json!({"hs_object_id": DEAL, "enerflo_pto_date": "2026-12-20"}),
            ))
            .await;
        assert_eq!(resp.status.as_u16(), 429, "{}", resp.body_json());
        assert_eq!(resp.headers.get("retry-after").unwrap(), "7000");
        // The canonical route keeps seconds.
        let resp = k
            .router
            .handle(canonical(
                Method::PUT,
                "/crm/installs/9001/milestones/pto",
                &json!({"completed_date": "2026-12-20"}),
            ))
            .await;
        assert_eq!(resp.status.as_u16(), 429);
        let secs: u64 = resp.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(secs <= 7, "{secs}");
    }

    #[tokio::test]
    async fn enerflo_down_is_5xx_with_retry_after_in_milliseconds_and_bad_input_stays_4xx() {
        let k = kit().await;
        k.link_deal().await;
        Mock::given(method("PUT"))
            .and(path("/api/v3/installs/700001/milestones/3905"))
            .respond_with(ResponseTemplate::new(500))
            .mount(&k.enerflo)
            .await;
        let resp = k
            .router
            .handle(signed(
                "milestone",
                &json!({"hs_object_id": DEAL, "milestone": "pto", "completed_date": "2026-12-20"}),
            ))
            .await;
        assert!(resp.status.is_server_error(), "{}", resp.status);
        let ms: u64 = resp.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ms >= 1000 && ms.is_multiple_of(1000), "{ms}");
        for (body, status) in [
            (
                json!({"milestone": "pto", "completed_date": "2026-12-20"}),
                422,
            ),
            (json!({"hs_object_id": DEAL}), 422),
            (
                json!({"hs_object_id": DEAL, "milestone": "unknown", "completed_date": "2026-12-20"}),
                404,
            ),
        ] {
            let resp = k.router.handle(signed("milestone", &body)).await;
            assert_eq!(resp.status.as_u16(), status, "{body}");
        }
        let mut not_json = signed("milestone", &json!({}));
        not_json.body = Bytes::from_static(b"{nope");
        let url = format!("{PUBLIC}/crm/hubspot/milestone");
        let ts = crate::timefmt::now_millis().to_string();
        let sig = signature::v3(SECRET, "POST", &url, b"{nope", &ts);
        not_json.headers.insert(
            "x-hubspot-signature-v3",
            HeaderValue::from_str(&sig).unwrap(),
        );
        not_json.headers.insert(
            "x-hubspot-request-timestamp",
            HeaderValue::from_str(&ts).unwrap(),
        );
        assert_eq!(k.router.handle(not_json).await.status.as_u16(), 400);
    }

    #[test]
    fn hubspot_dates_are_read_as_calendar_dates() {
        assert_eq!(hubspot_date("2026-12-20").as_deref(), Some("2026-12-20"));
        assert_eq!(hubspot_date("1797724800000").as_deref(), Some("2026-12-20"));
        assert_eq!(
            hubspot_date("2026-12-20T00:00:00.000Z").as_deref(),
            Some("2026-12-20")
        );
        assert_eq!(hubspot_date("20/12/2026"), None);
        assert_eq!(hubspot_date(""), None);
    }
}
