//! Path routing shared by API Gateway (each function serves its own routes) and the local runner
//! (one process serves them all). Unknown paths are 404, wrong methods on known paths 405, a
//! `/crm/*` body over `MAX_BODY_BYTES` 413, and every `/crm/*` route requires
//! `Authorization: Bearer <CRM_INBOUND_TOKEN>` (401 otherwise; any of its comma-separated values,
//! compared in constant time).

use std::sync::Arc;

use async_trait::async_trait;
use http::Method;

use super::webhook::{ROUTE_PREFIX, WebhookIngest};
use super::{HttpRequest, HttpResponse, Problem};
use crate::secret::SecretSet;

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
    /// `POST /crm/monday/webhooks/{token}`: authenticated by its path token (and Monday's JWT)
    /// in the route itself, not by the bearer.
    pub monday: Option<Arc<dyn InboundRoute>>,
}

impl Router {
    /// A router serving one inbound route (an inbound Lambda).
    pub fn for_route(
        route: crate::registry::Route,
        handler: Arc<dyn InboundRoute>,
        crm_tokens: SecretSet,
        max_body_bytes: usize,
    ) -> Self {
        use crate::registry::Route;
        let mut router = Self {
            crm_tokens,
            max_body_bytes: Some(max_body_bytes),
            ..Self::default()
        };
        let slot = match route {
            Route::Leads => &mut router.leads,
            Route::Milestone => &mut router.milestones,
            Route::Status => &mut router.status,
            Route::Note => &mut router.notes,
            Route::Monday => &mut router.monday,
        };
        *slot = Some(handler);
        router
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
        let (route, allow, params) = match segments.as_slice() {
            ["crm", "leads"] => (&self.leads, Method::POST, RouteParams::default()),
            ["crm", "installs", install, "milestones", milestone] => (
                &self.milestones,
                Method::PUT,
                RouteParams {
                    install: Some(decode(install)),
                    milestone: Some(decode(milestone)),
                },
            ),
            ["crm", "installs", install, "status"] => (
                &self.status,
                Method::PUT,
                RouteParams {
                    install: Some(decode(install)),
                    milestone: None,
                },
            ),
            ["crm", "installs", install, "notes"] => (
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
        route.handle(&req, &params).await
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
