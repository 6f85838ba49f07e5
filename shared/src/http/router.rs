//! Path routing shared by API Gateway (each function serves its own routes) and the local runner
//! (one process serves them all). Unknown paths are 404, wrong methods on known paths 405.

use std::sync::Arc;

use http::Method;

use super::webhook::{ROUTE_PREFIX, WebhookIngest};
use super::{HttpRequest, HttpResponse, Problem};

#[derive(Clone, Default)]
pub struct Router {
    pub webhook: Option<Arc<WebhookIngest>>,
}

impl Router {
    pub async fn handle(&self, req: HttpRequest) -> HttpResponse {
        let path = req.path.trim_end_matches('/');
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
        Problem::not_found().into_response()
    }
}
