//! Path routing shared by API Gateway (each function serves its own routes) and the local runner
//! (one process serves them all). Unknown paths are 404, wrong methods on known paths 405, a
//! `/crm/*` body over `MAX_BODY_BYTES` 413, and every `/crm/*` route requires
//! `Authorization: Bearer <CRM_INBOUND_TOKEN>` (401 otherwise; any of its comma-separated values,
//! compared in constant time).
//!
//! `POST /crm/hubspot/{lead|status|milestone}` (a HubSpot workflow's "Send a webhook" action)
//! also accepts HubSpot's v3 request signature (`crate::crm::hubspot::signature`), or the token in
//! an `X-Sync-Token` header (the workflow's "API key" option); anything else is 401, which HubSpot
//! does not retry.
//!
//! `POST /crm/salesforce/{lead|status|milestone|note}` (a Salesforce Flow HTTP Callout) is
//! checked exactly like `/crm/*`. `POST /crm/salesforce/outbound-message` (SOAP Outbound
//! Messages, which carry no custom header) takes a `CRM_INBOUND_TOKEN` value as its `token`
//! query parameter (or the bearer header); a missing or wrong one is a SOAP fault (401). The
//! org check is the route's (`crate::inbound::salesforce::outbound`).

use std::sync::Arc;

use async_trait::async_trait;
use http::Method;

use super::calls::CallLog;
use super::webhook::{ROUTE_PREFIX, WebhookIngest};
use super::{HttpRequest, HttpResponse, Problem};
use crate::crm::hubspot::signature;
use crate::secret::{Secret, SecretSet};

/// The header of the HubSpot workflow's "API key" option carrying a `CRM_INBOUND_TOKEN` value.
pub const SYNC_TOKEN_HEADER: &str = "x-sync-token";

/// Path parameters of the `/crm/installs/{install}/...` routes, percent-decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteParams {
    pub install: Option<String>,
    pub milestone: Option<String>,
}

/// One inbound (CRM -> Enerflo) route. Called after authentication and method checks.
#[async_trait]
pub trait InboundRoute: Send + Sync {
    async fn handle(&self, req: &HttpRequest, params: &RouteParams) -> HttpResponse;
}

/// `POST /crm/hubspot/{lead|status|milestone}` and how their callers authenticate.
#[derive(Clone, Default)]
pub struct HubSpotRoutes {
    /// `HUBSPOT_CLIENT_SECRET`: verifies `X-HubSpot-Signature-v3`. `None`: only the token works.
    pub client_secret: Option<Secret>,
    /// `HUBSPOT_PUBLIC_URL`: the base of the URL HubSpot signs. `None`: rebuilt from `Host` and
    /// `X-Forwarded-Proto`.
    pub public_url: Option<String>,
    pub lead: Option<Arc<dyn InboundRoute>>,
    pub status: Option<Arc<dyn InboundRoute>>,
    pub milestone: Option<Arc<dyn InboundRoute>>,
}

/// `POST /crm/salesforce/{lead|status|milestone|note|outbound-message}`.
#[derive(Clone, Default)]
pub struct SalesforceRoutes {
    pub lead: Option<Arc<dyn InboundRoute>>,
    pub status: Option<Arc<dyn InboundRoute>>,
    pub milestone: Option<Arc<dyn InboundRoute>>,
    pub note: Option<Arc<dyn InboundRoute>>,
    pub outbound_message: Option<Arc<dyn InboundRoute>>,
}

#[derive(Clone, Default)]
pub struct Router {
    pub webhook: Option<Arc<WebhookIngest>>,
    /// Accepted bearer tokens for `/crm/*` (comma-separated `CRM_INBOUND_TOKEN`).
    pub crm_tokens: SecretSet,
    /// Largest `/crm/*` body accepted (`MAX_BODY_BYTES`); larger ones get 413. `None`: no limit
    /// here (the webhook checks its own).
    pub max_body_bytes: Option<usize>,
    /// `POST /crm/leads`
    pub leads: Option<Arc<dyn InboundRoute>>,
    /// `PUT /crm/installs/{install}/milestones/{milestone}`
    pub milestones: Option<Arc<dyn InboundRoute>>,
    /// `PUT /crm/installs/{install}/status`
    pub status: Option<Arc<dyn InboundRoute>>,
    /// `POST /crm/installs/{install}/notes`
    pub notes: Option<Arc<dyn InboundRoute>>,
    /// `POST /crm/hubspot/{lead|status|milestone}`
    pub hubspot: HubSpotRoutes,
    /// Where every authenticated `/crm/*` call is recorded (`None`: nowhere).
    pub calls: Option<Arc<CallLog>>,
    /// `POST /crm/monday/webhooks/{token}`: authenticated by its path token (and Monday's JWT)
    /// in the route itself, not by the bearer.
    pub monday: Option<Arc<dyn InboundRoute>>,
    /// `POST /crm/salesforce/...`
    pub salesforce: SalesforceRoutes,
}

impl Router {
    /// A router serving one inbound route (an inbound Lambda).
    pub fn for_route(
        route: crate::registry::Route,
        handler: Arc<dyn InboundRoute>,
        crm_tokens: SecretSet,
        max_body_bytes: usize,
    ) -> Self {
        let mut router = Self {
            crm_tokens,
            max_body_bytes: Some(max_body_bytes),
            ..Self::default()
        };
        router.set(route, handler);
        router
    }

    /// Serves `route` with `handler`.
    pub fn set(&mut self, route: crate::registry::Route, handler: Arc<dyn InboundRoute>) {
        use crate::registry::Route;
        let slot = match route {
            Route::Leads => &mut self.leads,
            Route::Milestone => &mut self.milestones,
            Route::Status => &mut self.status,
            Route::Note => &mut self.notes,
            Route::HubSpotLead => &mut self.hubspot.lead,
            Route::HubSpotStatus => &mut self.hubspot.status,
            Route::HubSpotMilestone => &mut self.hubspot.milestone,
            Route::Monday => &mut self.monday,
            Route::SalesforceLead => &mut self.salesforce.lead,
            Route::SalesforceStatus => &mut self.salesforce.status,
            Route::SalesforceMilestone => &mut self.salesforce.milestone,
            Route::SalesforceNote => &mut self.salesforce.note,
            Route::SalesforceOutboundMessage => &mut self.salesforce.outbound_message,
        };
        *slot = Some(handler);
    }

    pub async fn handle(&self, req: HttpRequest) -> HttpResponse {
        let path = req.path.trim_end_matches('/').to_owned();
        if let Some(token) = path
            .strip_prefix(ROUTE_PREFIX)
            .filter(|t| !t.is_empty() && !t.contains('/'))
        {
            let Some(ingest) = &self.webhook else {
                return Problem::not_found().into_response();
            };
            if req.method != Method::POST {
                return Problem::method_not_allowed("POST").into_response();
            }
            return ingest.handle(&req, token).await;
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if let ["crm", "monday", "webhooks", token] = segments.as_slice()
            && !token.is_empty()
        {
            let Some(route) = &self.monday else {
                return Problem::not_found().into_response();
            };
            if let Some(limit) = self.max_body_bytes
                && req.body.len() > limit
            {
                return Problem::too_large(limit).into_response();
            }
            return route.handle(&req, &RouteParams::default()).await;
        }
        if let ["crm", "hubspot", action] = segments.as_slice() {
            return self.handle_hubspot(action, req).await;
        }
        if let ["crm", "salesforce", "outbound-message"] = segments.as_slice() {
            return self.handle_outbound_message(req).await;
        }
        let (name, route, allow, params) = match segments.as_slice() {
            ["crm", "leads"] => ("leads", &self.leads, Method::POST, RouteParams::default()),
            ["crm", "salesforce", "lead"] => (
                "salesforce_lead",
                &self.salesforce.lead,
                Method::POST,
                RouteParams::default(),
            ),
            ["crm", "salesforce", "status"] => (
                "salesforce_status",
                &self.salesforce.status,
                Method::POST,
                RouteParams::default(),
            ),
            ["crm", "salesforce", "milestone"] => (
                "salesforce_milestone",
                &self.salesforce.milestone,
                Method::POST,
                RouteParams::default(),
            ),
            ["crm", "salesforce", "note"] => (
                "salesforce_note",
                &self.salesforce.note,
                Method::POST,
                RouteParams::default(),
            ),
            ["crm", "installs", install, "milestones", milestone] => (
                "milestone",
                &self.milestones,
                Method::PUT,
                RouteParams {
                    install: Some(decode(install)),
                    milestone: Some(decode(milestone)),
                },
            ),
            ["crm", "installs", install, "status"] => (
                "status",
                &self.status,
                Method::PUT,
                RouteParams {
                    install: Some(decode(install)),
                    milestone: None,
                },
            ),
            ["crm", "installs", install, "notes"] => (
                "note",
                &self.notes,
                Method::POST,
                RouteParams {
                    install: Some(decode(install)),
                    milestone: None,
                },
            ),
            _ => return Problem::not_found().into_response(),
        };
        let Some(route) = route else {
            return Problem::not_found().into_response();
        };
        // Before authentication, as the local runner (which bounds its read of the body before
        // routing) does: the same answer locally and in Lambda, and no token check for a body
        // that cannot be accepted anyway.
        if let Some(limit) = self.max_body_bytes
            && req.body.len() > limit
        {
            return Problem::too_large(limit).into_response();
        }
        if !self.authorised(&req) {
            return Problem::unauthorized().into_response();
        }
        if req.method != allow {
            return Problem::method_not_allowed(if allow == Method::PUT { "PUT" } else { "POST" })
                .into_response();
        }
        if params.install.as_deref().is_some_and(str::is_empty)
            || params.milestone.as_deref().is_some_and(str::is_empty)
        {
            return Problem::not_found().into_response();
        }
        let arrived = CallLog::arrived();
        let answer = route.handle(&req, &params).await;
        if let Some(calls) = &self.calls {
            calls.record(name, arrived, &req, &params, &answer).await;
        }
        answer
    }

    async fn handle_hubspot(&self, action: &str, req: HttpRequest) -> HttpResponse {
        let route = match action {
            "lead" => &self.hubspot.lead,
            "status" => &self.hubspot.status,
            "milestone" => &self.hubspot.milestone,
            _ => &None,
        };
        let Some(route) = route else {
            return Problem::not_found().into_response();
        };
        if let Some(limit) = self.max_body_bytes
            && req.body.len() > limit
        {
            return Problem::too_large(limit).into_response();
        }
        if let Err(why) = self.hubspot_authorised(&req) {
            tracing::info!(route = action, reason = %why, "HubSpot workflow call refused");
            let mut p = Problem::unauthorized();
            p.detail = why;
            return p.into_response();
        }
        if req.method != Method::POST {
            return Problem::method_not_allowed("POST").into_response();
        }
        route.handle(&req, &RouteParams::default()).await
    }

    /// A `CRM_INBOUND_TOKEN` value in `X-Sync-Token` or as the bearer, else a valid v3 signature.
    /// The error says what is wrong, never a secret.
    fn hubspot_authorised(&self, req: &HttpRequest) -> Result<(), String> {
        let token = req.header(SYNC_TOKEN_HEADER).map(str::trim);
        if let Some(t) = token
            && !self.crm_tokens.is_empty()
            && self.crm_tokens.matches(t.as_bytes())
        {
            return Ok(());
        }
        if self.authorised(req) {
            return Ok(());
        }
        if req.header(signature::SIGNATURE_V3_HEADER).is_some() {
            let Some(secret) = &self.hubspot.client_secret else {
                return Err("The request is signed (X-HubSpot-Signature-v3) but HUBSPOT_CLIENT_SECRET is not configured; set it, or use the X-Sync-Token header.".into());
            };
            let Some(url) = signature::public_url(
                self.hubspot.public_url.as_deref(),
                req.header("host"),
                req.header("x-forwarded-proto"),
                &req.path,
                req.query.as_deref(),
            ) else {
                return Err("The signed URL cannot be rebuilt: the request has no Host header and HUBSPOT_PUBLIC_URL is not set.".into());
            };
            return signature::verify_v3(
                secret.expose(),
                req.method.as_str(),
                &url,
                &req.body,
                req.header(signature::TIMESTAMP_HEADER),
                req.header(signature::SIGNATURE_V3_HEADER),
                crate::timefmt::now_millis(),
            )
            .map_err(|e| format!("HubSpot request signature refused: {e}."));
        }
        if req.header(signature::SIGNATURE_HEADER).is_some() {
            return Err("Only HubSpot's v3 signature (X-HubSpot-Signature-v3) is accepted: v1 and v2 carry no timestamp and could be replayed.".into());
        }
        if token.is_some() || req.header("authorization").is_some() {
            return Err(
                "The X-Sync-Token (or bearer) value is not one of CRM_INBOUND_TOKEN's values."
                    .into(),
            );
        }
        Err("No credentials: sign the request with HubSpot's v3 signature, or send a CRM_INBOUND_TOKEN value in the X-Sync-Token header.".into())
    }

    /// Salesforce sends Outbound Messages with no header of ours: the token is in the endpoint
    /// URL's query. Answers are SOAP, which Salesforce reads (a fault is retried and shown in its
    /// delivery queue); the body limit answers as for every route.
    async fn handle_outbound_message(&self, req: HttpRequest) -> HttpResponse {
        use crate::inbound::salesforce::soap::{FaultCode, fault};
        let Some(route) = &self.salesforce.outbound_message else {
            return Problem::not_found().into_response();
        };
        if let Some(limit) = self.max_body_bytes
            && req.body.len() > limit
        {
            return Problem::too_large(limit).into_response();
        }
        let token = req.query_param("token");
        let by_query = token.as_deref().is_some_and(|t| {
            !self.crm_tokens.is_empty() && self.crm_tokens.matches(t.trim().as_bytes())
        });
        if !by_query && !self.authorised(&req) {
            tracing::warn!(
                token_given = token.is_some(),
                "Salesforce Outbound Message refused: no valid CRM_INBOUND_TOKEN"
            );
            return fault(
                http::StatusCode::UNAUTHORIZED,
                FaultCode::Client,
                "Missing or invalid token: the Outbound Message's endpoint URL must end with ?token=<a CRM_INBOUND_TOKEN value>.",
            );
        }
        if req.method != Method::POST {
            return Problem::method_not_allowed("POST").into_response();
        }
        let arrived = CallLog::arrived();
        let params = RouteParams::default();
        let answer = route.handle(&req, &params).await;
        if let Some(calls) = &self.calls {
            calls
                .record(
                    "salesforce_outbound_message",
                    arrived,
                    &req,
                    &params,
                    &answer,
                )
                .await;
        }
        answer
    }

    fn authorised(&self, req: &HttpRequest) -> bool {
        let Some(value) = req.header("authorization") else {
            return false;
        };
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer")
            && !self.crm_tokens.is_empty()
            && self.crm_tokens.matches(token.trim().as_bytes())
    }
}

fn decode(segment: &str) -> String {
    let req = HttpRequest {
        method: Method::GET,
        path: String::new(),
        query: Some(format!("v={segment}")),
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::new(),
    };
    req.query_param("v").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Accepts;

    #[async_trait]
    impl InboundRoute for Accepts {
        async fn handle(&self, _req: &HttpRequest, _params: &RouteParams) -> HttpResponse {
            HttpResponse::json(http::StatusCode::OK, &serde_json::json!({"status": "ok"}))
        }
    }

    fn router(limit: Option<usize>) -> Router {
        Router {
            crm_tokens: SecretSet::parse("new-token,old-token"),
            max_body_bytes: limit,
            leads: Some(Arc::new(Accepts)),
            ..Router::default()
        }
    }

    fn lead_request(bearer: &str, body: &[u8]) -> HttpRequest {
        let mut headers = http::HeaderMap::new();
        if let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {bearer}")) {
            headers.insert(http::header::AUTHORIZATION, value);
        }
        HttpRequest {
            method: Method::POST,
            path: "/crm/leads".into(),
            query: None,
            headers,
            body: bytes::Bytes::copy_from_slice(body),
        }
    }

    #[tokio::test]
    async fn a_crm_body_over_the_limit_is_413_problem_json_and_never_reaches_the_route() {
        let answer = router(Some(16))
            .handle(lead_request("new-token", &[b'x'; 17]))
            .await;
        assert_eq!(answer.status.as_u16(), 413);
        assert_eq!(
            answer.headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/problem+json"[..])
        );
        let at_limit = router(Some(16))
            .handle(lead_request("new-token", &[b'x'; 16]))
            .await;
        assert_eq!(at_limit.status.as_u16(), 200);
    }

    #[tokio::test]
    async fn an_oversized_body_is_413_whatever_the_credentials_as_in_the_local_runner() {
        let answer = router(Some(16))
            .handle(lead_request("wrong-token", &[b'x'; 17]))
            .await;
        assert_eq!(answer.status.as_u16(), 413);
        let small = router(Some(16))
            .handle(lead_request("wrong-token", b"{}"))
            .await;
        assert_eq!(small.status.as_u16(), 401);
    }

    struct AnswersStatus;

    #[async_trait]
    impl InboundRoute for AnswersStatus {
        async fn handle(&self, _req: &HttpRequest, _params: &RouteParams) -> HttpResponse {
            HttpResponse::json(
                http::StatusCode::OK,
                &serde_json::json!({"status": "updated", "install_id": 700001}),
            )
        }
    }

    #[tokio::test]
    async fn an_answered_crm_call_is_in_the_event_log_under_its_install_and_an_unauthorised_one_is_not()
     {
        use crate::store::EventLog;
        let store = Arc::new(crate::store::embedded::EmbeddedStore::in_memory().expect("store"));
        let router = Router {
            crm_tokens: SecretSet::parse("new-token"),
            status: Some(Arc::new(AnswersStatus)),
            calls: Some(Arc::new(CallLog {
                log: store.clone(),
                xref: store.clone(),
                ttl_secs: 3600,
            })),
            ..Router::default()
        };
        let mut req = lead_request("new-token", br#"{"status":"On Hold"}"#);
        req.method = Method::PUT;
        req.path = "/crm/installs/enerflo:700001/status".into();
        assert_eq!(router.handle(req.clone()).await.status.as_u16(), 200);
        let mut wrong = req.clone();
        wrong.headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer wrong"),
        );
        assert_eq!(router.handle(wrong).await.status.as_u16(), 401);

        let logged = store.for_entity("install:700001", 10).await.expect("read");
        assert_eq!(logged.len(), 1, "{logged:?}");
        let call = &logged[0];
        assert_eq!(
            (
                call.event.as_str(),
                call.outcome.as_str(),
                call.stage.as_deref()
            ),
            ("crm.status", "updated", None)
        );
        assert_eq!(call.raw_body, r#"{"status":"On Hold"}"#);
        let detail = call.detail.as_deref().unwrap_or_default();
        assert!(
            detail.starts_with("PUT /crm/installs/enerflo:700001/status -> 200 "),
            "{detail}"
        );
        assert_eq!(call.history.len(), 1);
    }

    #[tokio::test]
    async fn both_rotated_bearer_tokens_are_accepted_and_a_third_is_not() {
        for (token, status) in [("new-token", 200), ("old-token", 200), ("other", 401)] {
            let answer = router(None).handle(lead_request(token, b"{}")).await;
            assert_eq!(answer.status.as_u16(), status, "{token}");
        }
    }

    #[tokio::test]
    async fn the_monday_webhook_route_needs_no_bearer_and_is_404_when_not_served() {
        let mut r = router(Some(1024));
        let req = |path: &str| HttpRequest {
            method: Method::POST,
            path: path.into(),
            query: None,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from_static(b"{}"),
        };
        let not_served = r.handle(req("/crm/monday/webhooks/tok")).await;
        assert_eq!(not_served.status.as_u16(), 404);
        r.monday = Some(Arc::new(Accepts));
        let served = r.handle(req("/crm/monday/webhooks/tok")).await;
        assert_eq!(
            served.status.as_u16(),
            200,
            "the route checks its own path token"
        );
        let empty = r.handle(req("/crm/monday/webhooks/")).await;
        assert_eq!(empty.status.as_u16(), 404);
    }
}
