//! Every request under `/services/` comes through [`handle`], which does what Salesforce does
//! before and around a resource, in this order: the token endpoint (no session needed); the
//! versions list `GET /services/data/` (no session, not counted); then for the data API the
//! session (401 `INVALID_SESSION_ID`), the version (404 for one not served), scripted faults
//! that act before counting (an expiring session, a limit refusal), the daily allocation (403
//! `REQUEST_LIMIT_EXCEEDED`, not counted), then one count and the resource (or its scripted
//! fault). Every answer carries `Sforce-Limit-Info: api-usage=N/M`, and every request is written
//! to the call log with its body and answer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::{self, Expect, Session};
use super::errors::SfError;
use super::faults::{FaultKind, status_answer};
use super::rest::{self, Env, Req, Resp};
use super::store::{Ctx, sf_datetime};
use super::{Call, Limits, SalesforceFake, composite, form_pairs, lock, parse_query};

/// Request bodies larger than this are refused with a 413.
const MAX_BODY: usize = 32 * 1024 * 1024;

struct Outcome {
    resp: Resp,
    counted: bool,
    fault: Option<String>,
    hang: Option<Duration>,
}

fn plain(resp: Resp) -> Outcome {
    Outcome {
        resp,
        counted: false,
        fault: None,
        hang: None,
    }
}

pub async fn unknown_route(uri: axum::http::Uri) -> Response {
    let body = json!([{"errorCode": "NOT_FOUND", "message": format!("No Salesforce resource at {} in this fake", uri.path())}]);
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

pub async fn handle(
    State(fake): State<Arc<SalesforceFake>>,
    OriginalUri(original): OriginalUri,
    req: Request,
) -> Response {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let headers = req.headers().clone();
    if fake.instance_url().is_none() {
        let prefix = original
            .path()
            .strip_suffix(path.as_str())
            .unwrap_or_default()
            .to_owned();
        if let Some(host) = headers.get("host").and_then(|h| h.to_str().ok()) {
            fake.learn_instance(format!("http://{host}{prefix}"));
        }
    }
    let at_ms = fake.now_ms();
    let (bytes, outcome) = match to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => {
            let o = decide(&fake, &method, &path, query.as_deref(), &headers, &b).await;
            (b, o)
        }
        Err(e) => (
            Default::default(),
            plain(Resp::error(
                413,
                SfError::new(
                    "REQUEST_ENTITY_TOO_LARGE",
                    format!(
                        "The request body could not be read in full (at most {MAX_BODY} bytes): {e}"
                    ),
                ),
            )),
        ),
    };
    let Outcome {
        resp,
        counted,
        fault,
        hang,
    } = outcome;
    let limit_info = fake.limits().header();
    let status = resp.status;
    let (content_type, payload): (Option<String>, Vec<u8>) = match (&resp.raw, &resp.body) {
        (Some((ct, bytes)), _) => (Some(ct.clone()), bytes.clone()),
        (None, Some(v)) => (
            Some("application/json;charset=UTF-8".into()),
            v.to_string().into_bytes(),
        ),
        (None, None) => (None, Vec::new()),
    };
    fake.log(Call {
        method: method.clone(),
        path,
        query,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        status,
        response: String::from_utf8_lossy(&payload).into_owned(),
        at: sf_datetime(at_ms),
        at_ms,
        counted,
        limit_info: limit_info.clone(),
        fault,
    });
    if let Some(d) = hang {
        tokio::time::sleep(d).await;
    }
    let mut out = Response::new(Body::from(payload));
    *out.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = out.headers_mut();
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert("content-type", ct);
    }
    if let Ok(v) = HeaderValue::from_str(&limit_info) {
        h.insert("sforce-limit-info", v);
    }
    for (k, v) in &resp.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    out
}

async fn decide(
    fake: &Arc<SalesforceFake>,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Outcome {
    let trimmed = path.trim_end_matches('/');
    match trimmed {
        "/services/oauth2/token" => plain(match method {
            "POST" => token(fake, headers, body),
            _ => Resp::json(
                405,
                json!({"error": "invalid_request", "error_description": "must use HTTP POST"}),
            ),
        }),
        "/services/oauth2/revoke" => plain(revoke(fake, body, query)),
        "/services/data" => plain(match method {
            "GET" | "HEAD" => Resp::json(
                200,
                rest::versions(fake.opts.api_version_floor, fake.opts.api_version_latest),
            ),
            m => Resp::error(
                405,
                SfError::new(
                    "METHOD_NOT_ALLOWED",
                    format!("HTTP Method '{m}' not allowed. Allowed are GET,HEAD"),
                ),
            ),
        }),
        p if p.starts_with("/services/data/") => {
            data(fake, method, path, query, headers, body).await
        }
        _ => plain(Resp::error(404, SfError::not_found())),
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("OAuth "))
        .map(|t| t.trim().to_owned())
}

async fn data(
    fake: &Arc<SalesforceFake>,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Outcome {
    let now = fake.now_ms();
    let Some(token) = bearer(headers).filter(|t| lock(&fake.sessions).valid(t, now)) else {
        let mut r = Resp::error(401, SfError::session());
        r.headers.push(("WWW-Authenticate".into(), "Token".into()));
        return plain(r);
    };
    let major = path
        .split('/')
        .nth(3)
        .and_then(rest::parse_version)
        .filter(|v| (fake.opts.api_version_floor..=fake.opts.api_version_latest).contains(v));
    let Some(major) = major else {
        return plain(Resp::error(404, SfError::not_found()));
    };
    let fault = fake.faults().take_if(method, path, |_| true);
    let label = fault.as_ref().map(|f| format!("{f:?}"));
    match &fault {
        Some(FaultKind::ExpireSession) => {
            if let Some(s) = lock(&fake.sessions).by_token.get_mut(&token) {
                s.expires_ms = s.expires_ms.min(now);
            }
            let mut r = Resp::error(401, SfError::session());
            r.headers.push(("WWW-Authenticate".into(), "Token".into()));
            return Outcome {
                fault: label,
                ..plain(r)
            };
        }
        Some(FaultKind::RequestLimitExceeded) => {
            return Outcome {
                fault: label,
                ..plain(Resp::error(403, SfError::request_limit()))
            };
        }
        _ => {}
    }
    let limits: Limits = match fake.count_request() {
        Ok(l) => l,
        Err(_) => {
            return Outcome {
                fault: label,
                ..plain(Resp::error(403, SfError::request_limit()))
            };
        }
    };
    let mut hang = None;
    let resp = match fault {
        Some(FaultKind::Status(code)) => status_answer(code),
        Some(FaultKind::UnableToLockRow) => {
            let id = path.rsplit('/').next().unwrap_or_default();
            Resp::error(400, SfError::unable_to_lock_row(id))
        }
        Some(FaultKind::Errors { status, errors }) => Resp::errors(status, &errors),
        Some(FaultKind::Custom {
            status,
            content_type,
            body,
        }) => Resp {
            status,
            body: None,
            raw: Some((content_type, body.into_bytes())),
            headers: Vec::new(),
        },
        Some(FaultKind::Timeout(d)) => {
            hang = Some(d);
            status_answer(503)
        }
        Some(FaultKind::Slow(d)) => {
            tokio::time::sleep(d).await;
            run(fake, method, path, query, headers, body, major, limits)
        }
        Some(FaultKind::HangAfterApply(d)) => {
            hang = Some(d);
            run(fake, method, path, query, headers, body, major, limits)
        }
        Some(FaultKind::ExpireSession) | Some(FaultKind::RequestLimitExceeded) | None => {
            run(fake, method, path, query, headers, body, major, limits)
        }
    };
    Outcome {
        resp,
        counted: true,
        fault: label,
        hang,
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    fake: &Arc<SalesforceFake>,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    major: u32,
    limits: Limits,
) -> Resp {
    let allow_save = headers
        .get("sforce-duplicate-rule-header")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').any(|p| {
                let (k, val) = p.split_once('=').unwrap_or((p, ""));
                k.trim().eq_ignore_ascii_case("allowSave")
                    && val.trim().eq_ignore_ascii_case("true")
            })
        });
    let req = Req {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.map(parse_query).unwrap_or_default(),
        body: body.to_vec(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .filter(|_| !body.is_empty()),
    };
    let mut take = |m: &str, p: &str| {
        fake.faults()
            .take_if(m, p, |k| composite::fault_answer(k).is_some())
    };
    let mut env = Env {
        version: format!("{major}.0"),
        major,
        ctx: Ctx {
            now_ms: fake.now_ms(),
            user_id: fake.user_id(),
            allow_save,
        },
        used: limits.used,
        max: limits.max,
        faults: &mut take,
    };
    let mut db = fake.db();
    rest::dispatch(&mut db, &mut env, &req)
}

fn oauth_error(e: &auth::OAuthError) -> Resp {
    Resp::json(400, e.json())
}

fn token(fake: &Arc<SalesforceFake>, headers: &HeaderMap, body: &[u8]) -> Resp {
    let form_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let form = if form_type {
        form_pairs(body)
    } else {
        Vec::new()
    };
    let basic = auth::basic_auth(headers.get("authorization").and_then(|v| v.to_str().ok()));
    let instance = fake.instance_url_or_default();
    let mut audiences = fake.opts.jwt_audiences.clone();
    audiences.push(instance.clone());
    let now = fake.now_ms();
    let want = Expect {
        client_id: &fake.opts.client_id,
        client_secret: &fake.opts.client_secret,
        username: &fake.opts.username,
        public_key: fake.public_key.as_ref(),
        audiences: &audiences,
        now_ms: now,
    };
    let flow = match auth::check(&form, basic, &want) {
        Ok(f) => f,
        Err(e) => return oauth_error(&e),
    };
    let token = auth::new_token(&fake.opts.org_id);
    lock(&fake.sessions).by_token.insert(
        token.clone(),
        Session {
            token: token.clone(),
            flow,
            issued_ms: now,
            expires_ms: now + fake.opts.token_ttl.as_millis() as i64,
            revoked: false,
        },
    );
    let id_url = format!("{instance}/id/{}/{}", fake.opts.org_id, fake.user_id());
    let issued_at = now.to_string();
    let body = if flow == "client_credentials" {
        json!({
            "access_token": token,
            "signature": auth::answer_signature(&fake.opts.client_secret, &id_url, &issued_at),
            "token_format": "opaque",
            "instance_url": instance,
            "id": id_url,
            "token_type": "Bearer",
            "issued_at": issued_at,
        })
    } else {
        json!({
            "access_token": token,
            "scope": "api",
            "instance_url": instance,
            "id": id_url,
            "token_type": "Bearer",
        })
    };
    Resp::json(200, body)
}

fn revoke(fake: &Arc<SalesforceFake>, body: &[u8], query: Option<&str>) -> Resp {
    let mut pairs = form_pairs(body);
    pairs.extend(query.map(parse_query).unwrap_or_default());
    let token = pairs
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.clone());
    match token {
        Some(t) if lock(&fake.sessions).by_token.contains_key(&t) => {
            fake.revoke_token(&t);
            Resp::empty(200)
        }
        _ => Resp::json(
            400,
            json!({"error": "unsupported_token_type", "error_description": "this token type is not supported"}),
        ),
    }
}
