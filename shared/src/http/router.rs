//! Path routing shared by API Gateway (each function serves its own routes) and the local runner
//! (one process serves them all). Unknown paths are 404, wrong methods on known paths 405, and
//! every `/crm/*` route requires `Authorization: Bearer <CRM_INBOUND_TOKEN>` (401 otherwise).

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
    /// `POST /crm/leads`
    pub leads: Option<Arc<dyn InboundRoute>>,
    /// `PUT /crm/installs/{install}/milestones/{milestone}`
    pub milestones: Option<Arc<dyn InboundRoute>>,
    /// `PUT /crm/installs/{install}/status`
    pub status: Option<Arc<dyn InboundRoute>>,
    /// `POST /crm/installs/{install}/notes`
    pub notes: Option<Arc<dyn InboundRoute>>,
}

impl Router {
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
