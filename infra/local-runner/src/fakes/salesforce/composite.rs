//! `POST .../composite` and the sObject Collections under `.../composite/sobjects`
//! (`docs/crm-connectors.md` section 3.5).
//!
//! Composite: at most 25 subrequests, run in order through the same dispatcher as top-level
//! requests; `@{ref.field}` / `@{ref.records[0].Id}` in a later `url` or `body` take values of an
//! earlier answer; the answer is always 200 with one `{body, httpHeaders, httpStatusCode,
//! referenceId}` per subrequest. `allOrNone: true` rolls every change back on the first failure:
//! the failed item keeps its error, every other item answers 400 `PROCESSING_HALTED`. Setting
//! `Accept`, `Authorization` or `Content-Type` in a subrequest's `httpHeaders` fails the whole
//! call with a 400. The whole call counts as one API request (the gate counts it).
//!
//! Collections: at most 200 records, each with `attributes.type`; results in input order with
//! `statusCode` in errors; `created` for upserts (v46.0+); `allOrNone` rolls back and marks the
//! others `ALL_OR_NONE_OPERATION_ROLLED_BACK`. Create/update need v42.0+.
//!
//! Where Salesforce's docs give no error code for a malformed composite or collection body, the
//! fake answers `JSON_PARSER_ERROR` (shape), `LIMIT_EXCEEDED` (too many subrequests),
//! `INVALID_HEADER` (an inherited header set) or `INVALID_INPUT` (a nested composite).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::errors::SfError;
use super::faults::FaultKind;
use super::ids;
use super::rest::{self, Env, Req, Resp};
use super::store::{Db, Upserted};

/// The most subrequests of one composite call.
pub const MAX_SUBREQUESTS: usize = 25;
/// The most records of one collection call.
pub const MAX_COLLECTION: usize = 200;

fn shape(msg: impl Into<String>) -> Resp {
    Resp::error(400, SfError::new("JSON_PARSER_ERROR", msg))
}

fn valid_reference_id(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Walks `records[0].Id`-style paths into a JSON value.
fn walk<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.split('.') {
        let (name, mut idx) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        while let Some(rest) = idx.strip_prefix('[') {
            let end = rest.find(']')?;
            let n: usize = rest[..end].parse().ok()?;
            cur = cur.get(n)?;
            idx = &rest[end + 1..];
        }
    }
    Some(cur)
}

/// The reference expressions `@{...}` in a string.
fn references(s: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = s[from..].find("@{") {
        let start = from + i;
        let Some(len) = s[start..].find('}') else {
            break;
        };
        out.push((start, start + len + 1, s[start + 2..start + len].to_owned()));
        from = start + len + 1;
    }
    out
}

struct Done {
    body: Option<Value>,
    ok: bool,
}

fn resolve(expr: &str, done: &BTreeMap<String, Done>) -> Result<Value, SfError> {
    let (r, path) = expr.split_once('.').unwrap_or((expr, ""));
    let (r, path) = match r.find('[') {
        Some(i) if path.is_empty() => (&r[..i], &expr[i..]),
        _ => (r, path),
    };
    let failed = || {
        SfError::new(
            "PROCESSING_HALTED",
            format!(
                "Invalid reference specified. No value for {expr} found in {r}. Provided referenceId ('{r}') must be a valid referenceId of an earlier subrequest that succeeded."
            ),
        )
    };
    let d = done.get(r).filter(|d| d.ok).ok_or_else(failed)?;
    let body = d.body.as_ref().ok_or_else(failed)?;
    walk(body, path)
        .filter(|v| !v.is_null())
        .cloned()
        .ok_or_else(failed)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn substitute_str(s: &str, done: &BTreeMap<String, Done>) -> Result<Value, SfError> {
    let refs = references(s);
    if refs.is_empty() {
        return Ok(Value::String(s.to_owned()));
    }
    if let [(0, end, expr)] = refs.as_slice()
        && *end == s.len()
    {
        return resolve(expr, done);
    }
    let mut out = String::new();
    let mut at = 0;
    for (start, end, expr) in refs {
        out.push_str(&s[at..start]);
        out.push_str(&as_text(&resolve(&expr, done)?));
        at = end;
    }
    out.push_str(&s[at..]);
    Ok(Value::String(out))
}

fn substitute(v: &Value, done: &BTreeMap<String, Done>) -> Result<Value, SfError> {
    Ok(match v {
        Value::String(s) => substitute_str(s, done)?,
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| substitute(x, done))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| substitute(x, done).map(|x| (k.clone(), x)))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// A scripted fault's answer inside a composite (only faults that are answers apply there).
pub fn fault_answer(kind: &FaultKind) -> Option<Resp> {
    match kind {
        FaultKind::Status(code) => Some(super::faults::status_answer(*code)),
        FaultKind::UnableToLockRow => Some(Resp::error(
            400,
            SfError::unable_to_lock_row("a0X000000000001"),
        )),
        FaultKind::Errors { status, errors } => Some(Resp::errors(*status, errors)),
        _ => None,
    }
}

/// Whether an answer is a failure for `allOrNone` (a 2xx collection answer with a failed record
/// is one too).
fn failed(r: &Resp) -> bool {
    if !r.is_success() {
        return true;
    }
    match &r.body {
        Some(Value::Array(items)) => items
            .iter()
            .any(|i| i.get("success") == Some(&Value::Bool(false))),
        _ => false,
    }
}

pub fn composite(db: &mut Db, env: &mut Env<'_>, req: &Req) -> Resp {
    let body = match rest::object_body(req, "CompositeRequest") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let all_or_none = body
        .get("allOrNone")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(subs) = body.get("compositeRequest").and_then(Value::as_array) else {
        return shape("compositeRequest: a list of subrequests is required");
    };
    if subs.is_empty() {
        return shape("compositeRequest: at least one subrequest is required");
    }
    if subs.len() > MAX_SUBREQUESTS {
        return Resp::error(
            400,
            SfError::new(
                "LIMIT_EXCEEDED",
                format!(
                    "A composite request may contain at most {MAX_SUBREQUESTS} subrequests; this one has {}",
                    subs.len()
                ),
            ),
        );
    }
    let mut seen = Vec::new();
    for (i, s) in subs.iter().enumerate() {
        let method = s.get("method").and_then(Value::as_str).unwrap_or_default();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) {
            return shape(format!(
                "compositeRequest[{i}].method: {method:?} is not one of GET, POST, PUT, PATCH, DELETE (case-sensitive)"
            ));
        }
        let Some(url) = s.get("url").and_then(Value::as_str) else {
            return shape(format!("compositeRequest[{i}].url is required"));
        };
        if !url.starts_with("/services/data/v") {
            return shape(format!(
                "compositeRequest[{i}].url must start with /services/data/vNN.N/: {url}"
            ));
        }
        let Some(r) = s.get("referenceId").and_then(Value::as_str) else {
            return shape(format!("compositeRequest[{i}].referenceId is required"));
        };
        if !valid_reference_id(r) {
            return shape(format!(
                "compositeRequest[{i}].referenceId {r:?} must start with a letter and hold only letters, digits and underscores"
            ));
        }
        if seen.contains(&r) {
            return shape(format!(
                "Duplicate referenceId provided in the request: {r}"
            ));
        }
        seen.push(r);
        if let Some(h) = s.get("httpHeaders").and_then(Value::as_object) {
            for k in h.keys() {
                if ["accept", "authorization", "content-type"]
                    .contains(&k.to_ascii_lowercase().as_str())
                {
                    return Resp::error(
                        400,
                        SfError::new(
                            "INVALID_HEADER",
                            format!(
                                "compositeRequest[{i}].httpHeaders may not set {k}: it is inherited from the composite request"
                            ),
                        ),
                    );
                }
            }
        }
    }

    let snapshot = all_or_none.then(|| db.clone());
    let mut done: BTreeMap<String, Done> = BTreeMap::new();
    let mut items: Vec<(String, Resp)> = Vec::new();
    let mut failure: Option<usize> = None;
    for s in subs {
        let method = s
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let reference = s
            .get("referenceId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let url = s.get("url").and_then(Value::as_str).unwrap_or_default();
        let resp = match run_sub(db, env, &method, url, s.get("body"), &done, all_or_none) {
            Ok(r) => r,
            Err(e) => Resp::error(400, e),
        };
        let ok = !failed(&resp);
        done.insert(
            reference.clone(),
            Done {
                body: resp.body.clone(),
                ok,
            },
        );
        items.push((reference, resp));
        if !ok && all_or_none {
            failure = Some(items.len() - 1);
            break;
        }
    }
    if let (Some(failed_at), Some(before)) = (failure, snapshot) {
        let counters = db.counters.clone();
        *db = before;
        db.counters = counters;
        let halted = || Resp::error(400, SfError::rolled_back());
        for (i, item) in items.iter_mut().enumerate() {
            if i != failed_at {
                item.1 = halted();
            }
        }
        for s in subs.iter().skip(items.len()) {
            let r = s
                .get("referenceId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            items.push((r, halted()));
        }
    }
    let out: Vec<Value> = items
        .into_iter()
        .map(|(reference, r)| {
            let headers: Map<String, Value> = r
                .headers
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length"))
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            json!({
                "body": r.body,
                "httpHeaders": headers,
                "httpStatusCode": r.status,
                "referenceId": reference,
            })
        })
        .collect();
    Resp::json(200, json!({"compositeResponse": out}))
}

fn run_sub(
    db: &mut Db,
    env: &mut Env<'_>,
    method: &str,
    url: &str,
    body: Option<&Value>,
    done: &BTreeMap<String, Done>,
    all_or_none: bool,
) -> Result<Resp, SfError> {
    let url = as_text(&substitute_str(url, done)?);
    let body = body.map(|b| substitute(b, done)).transpose()?;
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let Some(major) = segs.get(3).and_then(|s| rest::parse_version(s)) else {
        return Ok(Resp::error(404, SfError::not_found()));
    };
    if segs.len() == 5 && segs[4] == "composite" {
        return Ok(Resp::error(
            400,
            SfError::new(
                "INVALID_INPUT",
                "A composite subrequest cannot itself be a composite request",
            ),
        ));
    }
    if let Some(kind) = (env.faults)(method, path)
        && let Some(r) = fault_answer(&kind)
    {
        return Ok(r);
    }
    let query = super::parse_query(query);
    let req = Req {
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        content_type: None,
    };
    let saved = (env.version.clone(), env.major);
    env.version = format!("{major}.0");
    env.major = major;
    let forced = all_or_none;
    let resp = if forced {
        with_forced_all_or_none(db, env, &req)
    } else {
        rest::dispatch(db, env, &req)
    };
    (env.version, env.major) = saved;
    Ok(resp)
}

/// A collection subrequest of an `allOrNone` composite runs as `allOrNone` itself.
fn with_forced_all_or_none(db: &mut Db, env: &mut Env<'_>, req: &Req) -> Resp {
    if !req.path.contains("/composite/sobjects") || req.body.is_empty() {
        return rest::dispatch(db, env, req);
    }
    let mut body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => return rest::dispatch(db, env, req),
    };
    if let Some(o) = body.as_object_mut() {
        o.insert("allOrNone".into(), Value::Bool(true));
    }
    let forced = Req {
        body: body.to_string().into_bytes(),
        ..req.clone()
    };
    rest::dispatch(db, env, &forced)
}

fn item_ok(id: &str, created: Option<bool>) -> Value {
    let mut v = json!({"id": id, "success": true, "errors": []});
    if let (Some(c), Some(o)) = (created, v.as_object_mut()) {
        o.insert("created".into(), json!(c));
    }
    v
}

fn item_err(errs: &[SfError]) -> Value {
    json!({"success": false, "errors": errs.iter().map(SfError::collection_json).collect::<Vec<_>>()})
}

fn record_type(r: &Map<String, Value>) -> Option<String> {
    r.get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

pub fn collections(db: &mut Db, env: &mut Env<'_>, req: &Req, rest: &[&str]) -> Resp {
    let m = req.method.as_str();
    if env.major < 42 || (rest.len() == 2 && env.major < 46) {
        return Resp::error(404, SfError::not_found());
    }
    match (m, rest) {
        ("DELETE", []) => delete(db, env, req),
        ("GET", [t]) => retrieve(db, env, req, t),
        ("POST", []) | ("PATCH", []) | ("PATCH", [_, _]) => write(db, env, req, rest),
        (_, [] | [_] | [_, _]) => Resp::error(
            405,
            SfError::new(
                "METHOD_NOT_ALLOWED",
                format!("HTTP Method '{m}' not allowed here"),
            ),
        ),
        _ => Resp::error(404, SfError::not_found()),
    }
}

fn write(db: &mut Db, env: &mut Env<'_>, req: &Req, rest: &[&str]) -> Resp {
    let body = match rest::object_body(req, "SObjectCollection") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let all_or_none = body
        .get("allOrNone")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(records) = body.get("records").and_then(Value::as_array) else {
        return shape("records: a list of records is required");
    };
    if records.len() > MAX_COLLECTION {
        return Resp::error(
            400,
            SfError::new(
                "EXCEEDED_ID_LIMIT",
                format!(
                    "record limit reached. cannot submit more than {MAX_COLLECTION} records into this call"
                ),
            ),
        );
    }
    let types: Vec<Option<String>> = records
        .iter()
        .map(|r| r.as_object().and_then(record_type))
        .collect();
    let chunks = types.windows(2).filter(|w| w[0] != w[1]).count() + usize::from(!types.is_empty());
    if chunks > 10 {
        return Resp::error(
            400,
            SfError::new(
                "EXCEEDED_MAX_TYPES_LIMIT",
                "The number of chunks of record types in a request is at most 10; group records of a type together",
            ),
        );
    }
    let snapshot = all_or_none.then(|| db.clone());
    let mut results: Vec<Result<Value, Vec<SfError>>> = Vec::new();
    for (r, t) in records.iter().zip(&types) {
        let Some(rec) = r.as_object() else {
            results.push(Err(vec![SfError::on(
                "JSON_PARSER_ERROR",
                "each record must be a JSON object",
                &[],
            )]));
            continue;
        };
        let Some(t) = t else {
            results.push(Err(vec![SfError::on(
                "INVALID_TYPE",
                "Must send a concrete entity type.",
                &[],
            )]));
            continue;
        };
        let Some(obj) = db.object(t).map(|o| o.name.clone()) else {
            results.push(Err(vec![SfError::on(
                "INVALID_TYPE",
                format!("sObject type '{t}' is not supported."),
                &[],
            )]));
            continue;
        };
        let res = match (req.method.as_str(), rest) {
            ("POST", _) => db.create(&obj, rec, &env.ctx).map(|id| item_ok(&id, None)),
            ("PATCH", []) => {
                let id = rec
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("id"))
                    .and_then(|(_, v)| v.as_str())
                    .map(str::to_owned);
                match id {
                    None => Err(vec![SfError::on(
                        "MISSING_ARGUMENT",
                        "Id not specified in an update call",
                        &[],
                    )]),
                    Some(id) => {
                        let mut fields = rec.clone();
                        fields.retain(|k, _| !k.eq_ignore_ascii_case("id"));
                        let canonical = ids::normalise(&id).unwrap_or(id);
                        db.update(&obj, &canonical, &fields, &env.ctx)
                            .map(|()| item_ok(&canonical, None))
                    }
                }
            }
            (_, [uri_type, field]) => {
                if !uri_type.eq_ignore_ascii_case(&obj) {
                    Err(vec![SfError::on(
                        "INVALID_TYPE",
                        format!("Record type {obj} does not match the URI's type {uri_type}"),
                        &[],
                    )])
                } else {
                    let key = rec.iter().find(|(k, _)| k.eq_ignore_ascii_case(field)).map(
                        |(_, v)| match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        },
                    );
                    match key {
                        None => Err(vec![SfError::on(
                            "MISSING_ARGUMENT",
                            format!("{field} not specified"),
                            &[field],
                        )]),
                        Some(key) => match db.upsert(&obj, field, &key, rec, false, &env.ctx) {
                            Ok(Upserted::Created(id)) => Ok(item_ok(&id, Some(true))),
                            Ok(Upserted::Updated(id)) => Ok(item_ok(&id, Some(false))),
                            Ok(Upserted::Multiple(_)) => Err(vec![SfError::on(
                                "DUPLICATE_EXTERNAL_ID",
                                format!(
                                    "{field}: more than one record found for external id field value {key}"
                                ),
                                &[field],
                            )]),
                            Err(errs) if errs.first().is_some_and(|e| e.code == "NOT_FOUND") => {
                                Err(vec![SfError::on(
                                    "INVALID_FIELD",
                                    format!("{field} is not an External ID field of {obj}"),
                                    &[field],
                                )])
                            }
                            Err(errs) => Err(errs),
                        },
                    }
                }
            }
            _ => Err(vec![SfError::not_found()]),
        };
        results.push(res);
    }
    let any_failed = results.iter().any(Result::is_err);
    if let (true, Some(before)) = (any_failed, snapshot) {
        let counters = db.counters.clone();
        *db = before;
        db.counters = counters;
        let rolled = SfError::on(
            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "Record rolled back because not all records were valid and the request was using AllOrNone header",
            &[],
        );
        let out: Vec<Value> = results
            .iter()
            .map(|r| match r {
                Ok(_) => item_err(std::slice::from_ref(&rolled)),
                Err(errs) => item_err(errs),
            })
            .collect();
        return Resp::json(200, Value::Array(out));
    }
    let out: Vec<Value> = results
        .iter()
        .map(|r| match r {
            Ok(v) => v.clone(),
            Err(errs) => item_err(errs),
        })
        .collect();
    Resp::json(200, Value::Array(out))
}

fn delete(db: &mut Db, env: &mut Env<'_>, req: &Req) -> Resp {
    let Some(list) = req.param("ids") else {
        return shape("ids: a comma-separated list of record ids is required");
    };
    let all_or_none = req
        .param("allOrNone")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let list: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
    if list.len() > MAX_COLLECTION {
        return Resp::error(
            400,
            SfError::new(
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            ),
        );
    }
    let snapshot = all_or_none.then(|| db.clone());
    let mut results = Vec::new();
    for id in list {
        let canonical = ids::normalise(id);
        let object = canonical.as_deref().and_then(|c| {
            db.objects
                .iter()
                .find(|o| o.key_prefix == ids::prefix(c) && o.name != "ContentNote")
                .map(|o| o.name.clone())
        });
        let res = match (canonical, object) {
            (Some(c), Some(o)) => db.delete(&o, &c, &env.ctx).map(|()| c),
            _ => Err(SfError::on(
                "MALFORMED_ID",
                format!("malformed id {id}"),
                &[],
            )),
        };
        results.push(res);
    }
    if let (true, Some(before)) = (results.iter().any(Result::is_err), snapshot) {
        let counters = db.counters.clone();
        *db = before;
        db.counters = counters;
        let rolled = SfError::on(
            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "Record rolled back because not all records were valid and the request was using AllOrNone header",
            &[],
        );
        let out: Vec<Value> = results
            .iter()
            .map(|r| match r {
                Ok(_) => item_err(std::slice::from_ref(&rolled)),
                Err(e) => item_err(std::slice::from_ref(e)),
            })
            .collect();
        return Resp::json(200, Value::Array(out));
    }
    let out: Vec<Value> = results
        .iter()
        .map(|r| match r {
            Ok(id) => item_ok(id, None),
            Err(e) => item_err(std::slice::from_ref(e)),
        })
        .collect();
    Resp::json(200, Value::Array(out))
}

fn retrieve(db: &mut Db, env: &mut Env<'_>, req: &Req, t: &str) -> Resp {
    let Some(obj) = db.object(t).map(|o| o.name.clone()) else {
        return Resp::error(404, SfError::not_found());
    };
    let (Some(list), Some(fields)) = (req.param("ids"), req.param("fields")) else {
        return shape("ids and fields are required");
    };
    let fields: Vec<String> = fields.split(',').map(str::to_owned).collect();
    let mut out = Vec::new();
    for id in list.split(',').filter(|s| !s.is_empty()) {
        match ids::normalise(id)
            .and_then(|c| db.get(&obj, &c))
            .filter(|r| !r.deleted)
        {
            Some(r) => match db.view(r, &env.version, Some(&fields)) {
                Ok(v) => out.push(v),
                Err(e) => return Resp::error(400, e),
            },
            None => out.push(Value::Null),
        }
    }
    Resp::json(200, Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_walk_fields_and_indexes() {
        let mut done = BTreeMap::new();
        done.insert(
            "q".to_owned(),
            Done {
                body: Some(json!({"records": [{"Id": "003000000000001AAA"}], "n": 2})),
                ok: true,
            },
        );
        assert_eq!(
            substitute_str("@{q.records[0].Id}", &done).ok(),
            Some(json!("003000000000001AAA"))
        );
        assert_eq!(substitute_str("@{q.n}", &done).ok(), Some(json!(2)));
        assert_eq!(
            substitute_str("/x/@{q.records[0].Id}?f=1", &done).ok(),
            Some(json!("/x/003000000000001AAA?f=1"))
        );
        let e = substitute_str("@{missing.id}", &done).err();
        assert_eq!(e.map(|e| e.code), Some("PROCESSING_HALTED".into()));
    }
}
