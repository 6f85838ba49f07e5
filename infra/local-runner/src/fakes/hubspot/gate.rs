//! What every API request passes before its handler, in HubSpot's order: the bearer token (401
//! `INVALID_AUTHENTICATION`), the token's scopes (403 `MISSING_SCOPES`), the rate limits (429),
//! then any scripted fault. Every answer past the token check carries the rate-limit headers,
//! and every request is written to the call log with its body and answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::errors::{ApiError, correlation_id};
use super::faults::FaultKind;
use super::rate::{Policy, limit_body};
use super::store::{ObjectType, iso_ms};
use super::{Call, HubSpotFake};

/// Request bodies larger than this are refused (HubSpot's own limit is lower for most calls).
const MAX_BODY: usize = 32 * 1024 * 1024;

pub async fn gate(State(fake): State<Arc<HubSpotFake>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let since_start = fake.clock.since_start();
    let at_ms = fake.now_ms();
    let (parts, body) = req.into_parts();
    let (bytes, outcome) = match to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            let req = Request::from_parts(parts, Body::from(bytes.clone()));
            (bytes, decide(&fake, &method, &path, req, next).await)
        }
        Err(e) => {
            let refusal = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "VALIDATION_ERROR",
                format!(
                    "The request body could not be read in full (at most {MAX_BODY} bytes): {e}"
                ),
            );
            let d = Decision {
                resp: refusal.into_response(),
                admitted: None,
                fault: None,
                hang: None,
            };
            (Default::default(), d)
        }
    };
    let Decision {
        mut resp,
        admitted,
        fault,
        hang,
    } = outcome;
    let since_start = admitted.map_or(since_start, |at| {
        at.saturating_duration_since(fake.clock.start)
    });
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let resp_bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    resp = Response::from_parts(parts, Body::from(resp_bytes.clone()));
    fake.log(Call {
        method: method.to_string(),
        path,
        query,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        status,
        response: String::from_utf8_lossy(&resp_bytes).into_owned(),
        at: iso_ms(at_ms),
        at_ms,
        since_start,
        counted: admitted.is_some(),
        fault,
    });
    if let Some(d) = hang {
        tokio::time::sleep(d).await;
    }
    resp
}

/// What the gate decided.
struct Decision {
    resp: Response,
    /// When the rate limiter admitted (counted) the request, on the fake's clock.
    admitted: Option<Instant>,
    /// The scripted fault used.
    fault: Option<String>,
    /// How long to hang (after logging) before answering.
    hang: Option<Duration>,
}

fn refused(resp: Response) -> Decision {
    Decision {
        resp,
        admitted: None,
        fault: None,
        hang: None,
    }
}

async fn decide(
    fake: &Arc<HubSpotFake>,
    method: &Method,
    path: &str,
    req: Request,
    next: Next,
) -> Decision {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(fake.opts.token.as_str()) {
        let body = json!({
            "status": "error",
            "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            "correlationId": correlation_id(),
            "category": "INVALID_AUTHENTICATION",
        });
        return refused((StatusCode::UNAUTHORIZED, Json(body)).into_response());
    }
    if let Some(granted) = &fake.opts.scopes
        && let Some(needed) = required_scope(method, path)
        && !granted.iter().any(|g| g == &needed)
    {
        let body = json!({
            "status": "error",
            "message": "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
            "correlationId": correlation_id(),
            "errors": [{"message": "One or more of the following scopes are required.", "context": {"requiredGranularScopes": [needed]}}],
            "category": "MISSING_SCOPES",
        });
        return refused((StatusCode::FORBIDDEN, Json(body)).into_response());
    }

    let search = is_search(method, path);
    // The admission time is taken under the limiter's lock, so the call log's times of admitted
    // requests are the limiter's own (what `max_requests_in_any_window` counts).
    let (admitted, headers, verdict) = {
        let mut rate = fake.rate();
        let now = fake.clock.now();
        let (headers, verdict) = rate.admit(now, fake.now_ms(), search);
        (now, headers, verdict)
    };
    if let Err(limited) = verdict {
        let mut resp = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(limit_body(limited.policy)),
        )
            .into_response();
        headers.apply(resp.headers_mut());
        if fake.opts.retry_after {
            retry_after(&mut resp, limited.retry_in);
        }
        return refused(resp);
    }

    let fault = fake.faults().take(method.as_str(), path);
    let label = fault.as_ref().map(|f| format!("{f:?}"));
    let mut hang = None;
    let mut resp = match fault {
        None => next.run(req).await,
        Some(FaultKind::Status(code)) => fault_status(code),
        Some(FaultKind::RateLimited(policy)) => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(limit_body(policy))).into_response();
            if fake.opts.retry_after {
                let wait = match policy {
                    Policy::TenSecondly => Duration::from_secs(10),
                    Policy::SearchSecondly => Duration::from_secs(1),
                    Policy::Daily => Duration::from_secs(3600),
                };
                retry_after(&mut r, wait);
            }
            r
        }
        Some(FaultKind::Timeout(d)) => {
            hang = Some(d);
            fault_status(504)
        }
        Some(FaultKind::Slow(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(FaultKind::HangAfterApply(d)) => {
            hang = Some(d);
            next.run(req).await
        }
        Some(FaultKind::Custom {
            status,
            content_type,
            body,
        }) => {
            let mut r = Response::new(Body::from(body));
            *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                r.headers_mut().insert("content-type", v);
            }
            r
        }
    };
    headers.apply(resp.headers_mut());
    Decision {
        resp,
        admitted: Some(admitted),
        fault: label,
        hang,
    }
}

fn retry_after(resp: &mut Response, wait: Duration) {
    let secs = wait.as_millis().div_ceil(1000).max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert("retry-after", v);
    }
}

fn fault_status(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (category, message) = match code {
        423 => (
            "LOCKED",
            "The record is locked by a concurrent write; retry the request",
        ),
        429 => ("RATE_LIMITS", "You have reached your secondly limit."),
        502 => ("BAD_GATEWAY", "Bad gateway"),
        503 => ("SERVICE_UNAVAILABLE", "Service unavailable"),
        504 => ("GATEWAY_TIMEOUT", "The request timed out"),
        _ if code >= 500 => ("INTERNAL_ERROR", "internal error"),
        _ => ("VALIDATION_ERROR", "scripted error"),
    };
    ApiError::new(status, category, message).into_response()
}

/// The search endpoints (`POST .../{type}/search`), which have their own per-second limit.
fn is_search(method: &Method, path: &str) -> bool {
    method == Method::POST && path.trim_end_matches('/').ends_with("/search")
}

/// The scope a request needs: `crm.objects.{type}.read|write` for records and associations
/// (notes use the contacts scopes), `crm.schemas.{type}.read|write` for properties, the deals
/// scopes for pipelines.
pub fn required_scope(method: &Method, path: &str) -> Option<String> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (area, t) = match segs.as_slice() {
        ["crm", "v3" | "v4", area, t, ..] => (*area, *t),
        ["crm", area, _version, t, ..] => (*area, *t),
        _ => return None,
    };
    let read = method == Method::GET
        || (method == Method::POST && matches!(segs.last(), Some(&"search") | Some(&"read")));
    let access = if read { "read" } else { "write" };
    let scope_type = |t: &str| match ObjectType::parse(t) {
        Some(ObjectType::Note) | Some(ObjectType::Contact) => "contacts",
        Some(ObjectType::Deal) => "deals",
        Some(ObjectType::Company) => "companies",
        None => "unknown",
    };
    match area {
        "objects" | "associations" => Some(format!("crm.objects.{}.{access}", scope_type(t))),
        "properties" => Some(format!("crm.schemas.{}.{access}", scope_type(t))),
        "pipelines" => Some(format!("crm.objects.deals.{access}")),
        _ => None,
    }
}
