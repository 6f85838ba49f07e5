//! The data API under `/services/data/vNN.N/` (`docs/crm-connectors.md` sections 3.1-3.4, 3.9):
//! the resources list, `limits`, `sobjects` (describeGlobal, basic info, describe, create, read,
//! update, delete, read/upsert/delete by external id, blob fields), `query`, `composite` and
//! `composite/sobjects` (`composite.rs`). Everything here is plain data in and out, so that
//! `composite` can run its subrequests through the same code as top-level requests.

use serde_json::{Map, Value, json};

use super::composite;
use super::errors::{self, SfError};
use super::faults::FaultKind;
use super::ids;
use super::soql;
use super::store::{Ctx, Db, Upserted};

/// One request to the data API.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    /// The full path (`/services/data/v62.0/sobjects/Contact`).
    pub path: String,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
}

impl Req {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer: status, JSON body (or raw bytes for blobs), extra headers.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Option<Value>,
    pub raw: Option<(String, Vec<u8>)>,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            raw: None,
            headers: Vec::new(),
        }
    }

    pub fn empty(status: u16) -> Self {
        Self {
            status,
            body: None,
            raw: None,
            headers: Vec::new(),
        }
    }

    pub fn errors(status: u16, errs: &[SfError]) -> Self {
        Self::json(status, errors::array(errs))
    }

    pub fn error(status: u16, e: SfError) -> Self {
        Self::errors(status, &[e])
    }

    fn header(mut self, k: &str, v: String) -> Self {
        self.headers.push((k.to_owned(), v));
        self
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What a request runs with besides the store.
pub struct Env<'a> {
    /// The API version of the path, as `62.0`, and its major number.
    pub version: String,
    pub major: u32,
    pub ctx: Ctx,
    /// Daily API requests used (this one included) and allowed.
    pub used: u64,
    pub max: u64,
    /// Scripted faults for composite subrequests: `(method, path)` -> the fault to answer.
    pub faults: &'a mut dyn FnMut(&str, &str) -> Option<FaultKind>,
}

/// The versions `GET /services/data/` lists: `floor..=latest`, labelled by release.
pub fn versions(floor: u32, latest: u32) -> Value {
    Value::Array(
        (floor..=latest)
            .map(|v| {
                json!({
                    "label": release_label(v),
                    "url": format!("/services/data/v{v}.0"),
                    "version": format!("{v}.0"),
                })
            })
            .collect(),
    )
}

/// Spring/Summer/Winter and the year, three releases a year (v66.0 is Spring '26, v46.0 Summer
/// '19, v62.0 Winter '25); exact for v27.0 and later.
pub fn release_label(v: u32) -> String {
    let n = v.saturating_sub(27);
    let (season, year) = match n % 3 {
        0 => ("Spring", 13 + n / 3),
        1 => ("Summer", 13 + n / 3),
        _ => ("Winter", 14 + n / 3),
    };
    format!("{season} '{year:02}")
}

/// Reads `vNN.N`; the major number.
pub fn parse_version(seg: &str) -> Option<u32> {
    let rest = seg.strip_prefix('v')?;
    let (major, minor) = rest.split_once('.')?;
    if minor != "0" || major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    major.parse().ok()
}

fn method_not_allowed(method: &str, allowed: &str) -> Resp {
    Resp::error(
        405,
        SfError::new(
            "METHOD_NOT_ALLOWED",
            format!("HTTP Method '{method}' not allowed. Allowed are {allowed}"),
        ),
    )
}

/// A JSON object body, or Salesforce's 400/415 refusal.
pub fn object_body(req: &Req, what: &str) -> Result<Map<String, Value>, Resp> {
    match json_body(req)? {
        Value::Object(m) => Ok(m),
        other => Err(Resp::error(
            400,
            SfError::new(
                "JSON_PARSER_ERROR",
                format!(
                    "Cannot deserialize instance of {what} from {} value or request may be missing a required field at [line:1, column:1]",
                    if other.is_array() {
                        "START_ARRAY"
                    } else {
                        "a non-object"
                    }
                ),
            ),
        )),
    }
}

pub fn json_body(req: &Req) -> Result<Value, Resp> {
    if let Some(ct) = &req.content_type {
        let base = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !(base == "application/json" || base.ends_with("+json")) {
            return Err(Resp::error(
                415,
                SfError::new(
                    "UNSUPPORTED_MEDIA_TYPE",
                    format!(
                        "Content type '{base}' is not supported by this resource: send application/json"
                    ),
                ),
            ));
        }
    }
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(Resp::error(
            400,
            SfError::new(
                "JSON_PARSER_ERROR",
                "No content to map due to end-of-input at [line:1, column:0]",
            ),
        ));
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        Resp::error(
            400,
            SfError::new(
                "JSON_PARSER_ERROR",
                format!("{e} at [line:{}, column:{}]", e.line(), e.column()),
            ),
        )
    })
}

/// Salesforce's status for a write error: 404 for a missing or deleted record, else 400.
pub fn write_status(errs: &[SfError]) -> u16 {
    match errs.first().map(|e| e.code.as_str()) {
        Some("NOT_FOUND") | Some("ENTITY_IS_DELETED") if errs.len() == 1 => 404,
        _ => 400,
    }
}

/// `{id, success, errors}` of a create (with `created` for upserts from v46.0).
fn save_result(id: &str, created: Option<bool>) -> Value {
    let mut v = json!({"id": id, "success": true, "errors": []});
    if let (Some(c), Some(o)) = (created, v.as_object_mut()) {
        o.insert("created".into(), json!(c));
    }
    v
}

fn record_url(version: &str, object: &str, id: &str) -> String {
    format!("/services/data/v{version}/sobjects/{object}/{id}")
}

/// Runs one request whose path starts `/services/data/vNN.N`; `env.version` is already checked.
pub fn dispatch(db: &mut Db, env: &mut Env<'_>, req: &Req) -> Resp {
    // Segments are matched and used decoded (`cust%20one` is the external id `cust one`).
    let decoded: Vec<String> = req
        .path
        .trim_end_matches('/')
        .split('/')
        .skip(4)
        .map(|s| super::percent_decode(s, false))
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    let v = env.version.clone();
    match segs.as_slice() {
        [] => match m {
            "GET" => Resp::json(
                200,
                json!({
                    "sobjects": format!("/services/data/v{v}/sobjects"),
                    "query": format!("/services/data/v{v}/query"),
                    "composite": format!("/services/data/v{v}/composite"),
                    "limits": format!("/services/data/v{v}/limits"),
                }),
            ),
            _ => method_not_allowed(m, "GET,HEAD"),
        },
        ["limits"] => match m {
            "GET" => Resp::json(
                200,
                json!({
                    "DailyApiRequests": {"Max": env.max, "Remaining": env.max.saturating_sub(env.used)},
                    "DataStorageMB": {"Max": 5120, "Remaining": 5100},
                    "FileStorageMB": {"Max": 20480, "Remaining": 20400},
                }),
            ),
            _ => method_not_allowed(m, "GET,HEAD"),
        },
        ["query"] => match m {
            "GET" => match req.param("q") {
                None => Resp::error(
                    400,
                    SfError::new("MALFORMED_QUERY", "A query string has to be specified"),
                ),
                Some(q) => match soql::run(db, q, &v) {
                    Ok(body) => Resp::json(200, body),
                    Err(e) => Resp::error(400, e),
                },
            },
            _ => method_not_allowed(m, "GET,HEAD"),
        },
        ["composite"] => match m {
            "POST" => composite::composite(db, env, req),
            _ => method_not_allowed(m, "POST"),
        },
        ["composite", "sobjects", rest @ ..] => composite::collections(db, env, req, rest),
        ["sobjects"] => match m {
            "GET" => Resp::json(
                200,
                json!({
                    "encoding": "UTF-8",
                    "maxBatchSize": 200,
                    "sobjects": db.objects.iter().map(|o| o.summary(&v)).collect::<Vec<_>>(),
                }),
            ),
            _ => method_not_allowed(m, "GET,HEAD"),
        },
        ["sobjects", t, rest @ ..] => sobject(db, env, req, t, rest),
        _ => Resp::error(404, SfError::not_found()),
    }
}

fn sobject(db: &mut Db, env: &mut Env<'_>, req: &Req, t: &str, rest: &[&str]) -> Resp {
    let Some(obj) = db.object(t).cloned() else {
        return Resp::error(404, SfError::not_found());
    };
    let m = req.method.as_str();
    let v = env.version.clone();
    let fields_param: Option<Vec<String>> = req
        .param("fields")
        .map(|f| f.split(',').map(str::to_owned).collect());
    match rest {
        [] => match m {
            "GET" => Resp::json(
                200,
                json!({"objectDescribe": obj.summary(&v), "recentItems": []}),
            ),
            "POST" => {
                let body = match object_body(req, &obj.name) {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                match db.create(&obj.name, &body, &env.ctx) {
                    Ok(id) => Resp::json(201, save_result(&id, None))
                        .header("Location", record_url(&v, &obj.name, &id)),
                    Err(errs) => Resp::errors(write_status(&errs), &errs),
                }
            }
            _ => method_not_allowed(m, "GET,POST,HEAD"),
        },
        ["describe"] => match m {
            "GET" => Resp::json(200, obj.describe(&v)),
            _ => method_not_allowed(m, "GET,HEAD"),
        },
        [x] if x.eq_ignore_ascii_case("Id") && m == "POST" => {
            // `POST .../sobjects/{type}/Id`: Id as the external id with no value creates (v37+).
            let body = match object_body(req, &obj.name) {
                Ok(b) => b,
                Err(r) => return r,
            };
            match db.create(&obj.name, &body, &env.ctx) {
                Ok(id) => {
                    let created = (env.major >= 46).then_some(true);
                    Resp::json(201, save_result(&id, created))
                        .header("Location", record_url(&v, &obj.name, &id))
                }
                Err(errs) => Resp::errors(write_status(&errs), &errs),
            }
        }
        [id] => {
            let id = ids::normalise(id).unwrap_or_else(|| (*id).to_owned());
            match m {
                "GET" => match db.live(&obj.name, &id) {
                    Ok(r) => match db.view(r, &v, fields_param.as_deref()) {
                        Ok(view) => Resp::json(200, view),
                        Err(e) => Resp::error(400, e),
                    },
                    Err(e) => Resp::error(404, e),
                },
                "PATCH" => {
                    let body = match object_body(req, &obj.name) {
                        Ok(b) => b,
                        Err(r) => return r,
                    };
                    match db.update(&obj.name, &id, &body, &env.ctx) {
                        Ok(()) => Resp::empty(204),
                        Err(errs) => Resp::errors(write_status(&errs), &errs),
                    }
                }
                "DELETE" => match db.delete(&obj.name, &id, &env.ctx) {
                    Ok(()) => Resp::empty(204),
                    Err(e) => Resp::error(write_status(std::slice::from_ref(&e)), e),
                },
                _ => method_not_allowed(m, "GET,PATCH,DELETE,HEAD"),
            }
        }
        [a, b] => {
            // A blob field of a record (`.../ContentNote/{id}/Content`), or a record by an
            // external id field (`.../Contact/Enerflo_Customer_Id__c/cust_0001`).
            if let Some(id) = ids::normalise(a)
                && ids::prefix(&id) == obj.key_prefix
                && obj
                    .field(b)
                    .is_some_and(|f| f.ftype == super::schema::FieldType::Base64)
            {
                if m != "GET" {
                    return method_not_allowed(m, "GET,HEAD");
                }
                return match db.live(&obj.name, &id) {
                    Ok(r) => match &r.blob {
                        Some(bytes) => Resp {
                            status: 200,
                            body: None,
                            raw: Some(("application/octet-stream".into(), bytes.clone())),
                            headers: Vec::new(),
                        },
                        None => Resp::error(404, SfError::not_found()),
                    },
                    Err(e) => Resp::error(404, e),
                };
            }
            by_external_id(db, env, req, &obj.name, a, b, fields_param.as_deref())
        }
        _ => Resp::error(404, SfError::not_found()),
    }
}

fn by_external_id(
    db: &mut Db,
    env: &mut Env<'_>,
    req: &Req,
    object: &str,
    field: &str,
    value: &str,
    only: Option<&[String]>,
) -> Resp {
    let m = req.method.as_str();
    let v = env.version.clone();
    let Some(obj) = db.object(object).cloned() else {
        return Resp::error(404, SfError::not_found());
    };
    if field.eq_ignore_ascii_case("Id") {
        // By Salesforce id through the external-id form: reads and deletes work, upsert does not.
        return match m {
            "GET" | "DELETE" => {
                let inner = Req {
                    path: format!("/services/data/v{v}/sobjects/{object}/{value}"),
                    ..req.clone()
                };
                sobject(db, env, &inner, object, &[value])
            }
            _ => method_not_allowed(m, "GET,DELETE,HEAD"),
        };
    }
    let Some(f) = obj.field(field).filter(|f| f.external_id).cloned() else {
        return Resp::error(404, SfError::not_found());
    };
    let matches = |db: &Db| -> Vec<String> {
        db.find(&obj.name, &f, &Value::String(value.to_owned()))
            .into_iter()
            .collect()
    };
    let several = |ids: &[String]| -> Resp {
        Resp::json(
            300,
            Value::Array(
                ids.iter()
                    .map(|id| json!(record_url(&v, &obj.name, id)))
                    .collect(),
            ),
        )
    };
    match m {
        "GET" => {
            let found = matches(db);
            match found.as_slice() {
                [] => Resp::error(404, SfError::not_found()),
                [id] => match db.live(&obj.name, id).and_then(|r| db.view(r, &v, only)) {
                    Ok(view) => Resp::json(200, view),
                    Err(e) => Resp::error(400, e),
                },
                _ => several(&found),
            }
        }
        "DELETE" => {
            let found = matches(db);
            match found.as_slice() {
                [] => Resp::error(404, SfError::not_found()),
                [id] => match db.delete(&obj.name, id, &env.ctx) {
                    Ok(()) => Resp::empty(204),
                    Err(e) => Resp::error(404, e),
                },
                _ => several(&found),
            }
        }
        "PATCH" => {
            let body = match object_body(req, &obj.name) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let update_only = env.major >= 61
                && req
                    .param("updateOnly")
                    .is_some_and(|u| u.eq_ignore_ascii_case("true"));
            match db.upsert(&obj.name, &f.name, value, &body, update_only, &env.ctx) {
                Ok(Upserted::Created(id)) => {
                    let created = (env.major >= 46).then_some(true);
                    Resp::json(201, save_result(&id, created))
                        .header("Location", record_url(&v, &obj.name, &id))
                }
                Ok(Upserted::Updated(id)) if env.major >= 46 => {
                    Resp::json(200, save_result(&id, Some(false)))
                        .header("Location", record_url(&v, &obj.name, &id))
                }
                Ok(Upserted::Updated(_)) => Resp::empty(204),
                Ok(Upserted::Multiple(ids)) => several(&ids),
                Err(errs) => Resp::errors(write_status(&errs), &errs),
            }
        }
        _ => method_not_allowed(m, "GET,PATCH,DELETE,HEAD"),
    }
}
