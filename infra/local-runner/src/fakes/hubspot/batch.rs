//! The batch endpoints: `upsert` (by a unique `idProperty`; `new` says created or updated; 200
//! when all succeed, 207 with `errors[]` and `numErrors` when some fail), `create` (atomic, unless
//! every input has its own `objectWriteTraceId`, which opts in to 207 per-item results), `update`,
//! `read` and `archive`. At most 100 inputs each.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

use super::associations::{apply_inline, parse_inline};
use super::errors::{ApiError, WriteError, error_object, parse_json};
use super::objects::{check_id_property, properties_of};
use super::store::{ObjectType, Selection, Store, iso_ms};
use super::{HubSpotFake, otype};

/// HubSpot's batch size limit.
pub const MAX_INPUTS: usize = 100;

pub fn routes() -> Router<Arc<HubSpotFake>> {
    Router::new().route("/{object_type}/batch/{op}", post(batch))
}

async fn batch(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, op)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = otype(&t)?;
    let body = parse_json(&body)?;
    let inputs = body["inputs"]
        .as_array()
        .ok_or_else(|| ApiError::validation("inputs is required (a JSON array)"))?;
    if inputs.len() > MAX_INPUTS {
        return Err(ApiError::validation(format!(
            "Batch input is limited to {MAX_INPUTS} inputs; this request has {}",
            inputs.len()
        )));
    }
    let requested_at = iso_ms(fake.now_ms());
    let ctx = Ctx {
        fake: &fake,
        t,
        requested_at,
    };
    match op.as_str() {
        "upsert" => ctx.upsert(inputs),
        "create" => ctx.create(inputs),
        "update" => ctx.update(inputs),
        "read" => ctx.read(&body, inputs),
        "archive" => ctx.archive(inputs),
        other => Err(ApiError::not_found(format!(
            "Unknown batch operation {other}"
        ))),
    }
}

struct Ctx<'a> {
    fake: &'a Arc<HubSpotFake>,
    t: ObjectType,
    requested_at: String,
}

fn trace_of(input: &Value) -> Option<String> {
    input["objectWriteTraceId"].as_str().map(str::to_owned)
}

/// An id given as a JSON string (or number, read as its digits).
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Ctx<'_> {
    fn answer(&self, ok: StatusCode, results: Vec<Value>, errors: Vec<Value>) -> Response {
        let mut body = json!({
            "status": "COMPLETE",
            "results": results,
            "requestedAt": self.requested_at,
            "startedAt": self.requested_at,
            "completedAt": iso_ms(self.fake.now_ms()),
            "links": {},
        });
        let status = if errors.is_empty() {
            ok
        } else {
            body["numErrors"] = json!(errors.len());
            body["errors"] = Value::Array(errors);
            StatusCode::MULTI_STATUS
        };
        (status, Json(body)).into_response()
    }

    fn item_error(e: &WriteError, id: &str, trace: Option<&str>) -> Value {
        let mut v = error_object(e, Some(id));
        if let Some(trace) = trace {
            v["objectWriteTraceId"] = json!(trace);
        }
        v
    }

    fn result(store: &Store, t: ObjectType, id: u64, trace: Option<&str>) -> Value {
        let mut v = store
            .get(t, id)
            .map(|r| r.to_json(Selection::All))
            .unwrap_or(Value::Null);
        if let Some(trace) = trace {
            v["objectWriteTraceId"] = json!(trace);
        }
        v
    }

    fn upsert(&self, inputs: &[Value]) -> Result<Response, ApiError> {
        let t = self.t;
        let mut store = self.fake.store();
        // Whole-request checks first: each input's idProperty unique, ids given, none repeated.
        let mut seen = BTreeSet::new();
        for (i, input) in inputs.iter().enumerate() {
            let idp = input["idProperty"].as_str().ok_or_else(|| {
                ApiError::validation(format!(
                    "inputs[{i}].idProperty is required: the unique property the id is a value of"
                ))
            })?;
            if idp == "hs_object_id" || !store.is_unique(t, idp) {
                return Err(ApiError::validation(format!(
                    "inputs[{i}].idProperty {idp} is not a unique property of {t}: upsert needs a property with hasUniqueValue{}",
                    if t == ObjectType::Contact {
                        " or email"
                    } else {
                        ""
                    }
                )));
            }
            let id = id_text(&input["id"]).ok_or_else(|| {
                ApiError::validation(format!("inputs[{i}].id is required (the {idp} value)"))
            })?;
            properties_of(input, &format!("inputs[{i}]"))?;
            let key = (
                idp.to_owned(),
                if idp == "email" {
                    id.to_lowercase()
                } else {
                    id.clone()
                },
            );
            if !seen.insert(key) {
                return Err(ApiError::validation(format!(
                    "Duplicate IDs found in batch input: {id} ({idp}) appears more than once"
                )));
            }
        }
        let (ms, now) = (self.fake.now_ms(), self.fake.clock.now());
        let (mut results, mut errors) = (Vec::new(), Vec::new());
        for input in inputs {
            let idp = input["idProperty"].as_str().unwrap_or_default();
            let id = id_text(&input["id"]).unwrap_or_default();
            let trace = trace_of(input);
            let mut props: Map<String, Value> =
                input["properties"].as_object().cloned().unwrap_or_default();
            if let Some(v) = props.get(idp)
                && v.as_str().is_some_and(|v| !same(idp, v, &id))
            {
                errors.push(Self::item_error(
                    &WriteError::Invalid(vec![super::errors::FieldError::new(
                        idp,
                        "INVALID_OPTION",
                        format!("properties.{idp} ({v}) differs from the input id {id}"),
                    )]),
                    &id,
                    trace.as_deref(),
                ));
                continue;
            }
            props.insert(idp.to_owned(), Value::String(id.clone()));
            let outcome = match store.find_unique(t, idp, &id) {
                Some(existing) => store
                    .update(t, existing, &props, ms, now)
                    .map(|_| (existing, false)),
                None => store.create(t, &props, ms, now).map(|n| (n, true)),
            };
            match outcome {
                Ok((n, created)) => {
                    let mut v = Self::result(&store, t, n, trace.as_deref());
                    v["new"] = json!(created);
                    results.push(v);
                }
                Err(e) => errors.push(Self::item_error(&e, &id, trace.as_deref())),
            }
        }
        Ok(self.answer(StatusCode::OK, results, errors))
    }

    fn create(&self, inputs: &[Value]) -> Result<Response, ApiError> {
        let t = self.t;
        let traces: Vec<Option<String>> = inputs.iter().map(trace_of).collect();
        let distinct: BTreeSet<&String> = traces.iter().flatten().collect();
        // Per-item results only when every input carries its own objectWriteTraceId.
        let per_item = !inputs.is_empty() && distinct.len() == inputs.len();
        let (ms, now) = (self.fake.now_ms(), self.fake.clock.now());
        let mut store = self.fake.store();
        let before = if per_item { None } else { Some(store.clone()) };
        let (mut results, mut errors) = (Vec::new(), Vec::new());
        for (i, input) in inputs.iter().enumerate() {
            let trace = traces[i].as_deref();
            let outcome = properties_of(input, &format!("inputs[{i}]")).and_then(|props| {
                let links = parse_inline(&store, t, &input["associations"])?;
                let id = store
                    .create(t, props, ms, now)
                    .map_err(|e| ApiError::from_write(&e))?;
                Ok((id, links))
            });
            match outcome {
                Ok((id, links)) => {
                    apply_inline(&mut store, (t, id), &links);
                    results.push(Self::result(&store, t, id, trace));
                }
                Err(e) if per_item => {
                    let mut v = e.body;
                    v["context"] = json!({"objectWriteTraceId": [trace]});
                    v["objectWriteTraceId"] = json!(trace);
                    v["links"] = json!({});
                    errors.push(v);
                }
                Err(e) => {
                    // Atomic: nothing of this batch is kept.
                    if let Some(before) = before {
                        *store = before;
                    }
                    let mut e = e;
                    if let Some(m) = e.body["message"].as_str() {
                        e.body["message"] = json!(format!("inputs[{i}]: {m}"));
                    }
                    return Err(e);
                }
            }
        }
        Ok(self.answer(StatusCode::CREATED, results, errors))
    }

    fn update(&self, inputs: &[Value]) -> Result<Response, ApiError> {
        let t = self.t;
        let (ms, now) = (self.fake.now_ms(), self.fake.clock.now());
        let mut store = self.fake.store();
        for (i, input) in inputs.iter().enumerate() {
            check_id_property(&store, t, input["idProperty"].as_str())?;
            id_text(&input["id"])
                .ok_or_else(|| ApiError::validation(format!("inputs[{i}].id is required")))?;
            properties_of(input, &format!("inputs[{i}]"))?;
        }
        let (mut results, mut errors) = (Vec::new(), Vec::new());
        for input in inputs {
            let id = id_text(&input["id"]).unwrap_or_default();
            let trace = trace_of(input);
            let props = input["properties"].as_object().cloned().unwrap_or_default();
            let outcome = match store.resolve(t, &id, input["idProperty"].as_str()) {
                None => Err(WriteError::NotFound(format!(
                    "Object not found: no {} {id}",
                    t.singular()
                ))),
                Some(n) => store.update(t, n, &props, ms, now).map(|_| n),
            };
            match outcome {
                Ok(n) => results.push(Self::result(&store, t, n, trace.as_deref())),
                Err(e) => errors.push(Self::item_error(&e, &id, trace.as_deref())),
            }
        }
        Ok(self.answer(StatusCode::OK, results, errors))
    }

    fn read(&self, body: &Value, inputs: &[Value]) -> Result<Response, ApiError> {
        let t = self.t;
        let store = self.fake.store();
        let idp = body["idProperty"].as_str();
        check_id_property(&store, t, idp)?;
        let names: Option<Vec<String>> = body["properties"].as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        });
        let (mut results, mut missing) = (Vec::new(), Vec::new());
        for input in inputs {
            let id = id_text(&input["id"]).unwrap_or_default();
            match store.resolve(t, &id, idp).and_then(|n| store.get(t, n)) {
                Some(r) => results.push(r.to_json(match &names {
                    Some(n) => Selection::Named(n),
                    None => Selection::Default,
                })),
                None => missing.push(id),
            }
        }
        let errors = if missing.is_empty() {
            Vec::new()
        } else {
            vec![json!({
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": format!("Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.", t.singular().to_uppercase()),
                "context": {"ids": missing},
                "links": {},
            })]
        };
        Ok(self.answer(StatusCode::OK, results, errors))
    }

    fn archive(&self, inputs: &[Value]) -> Result<Response, ApiError> {
        let ms = self.fake.now_ms();
        let mut store = self.fake.store();
        for input in inputs {
            let id = id_text(&input["id"]).unwrap_or_default();
            if let Some(n) = store.resolve(self.t, &id, None) {
                store.archive(n, ms);
            }
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

fn same(idp: &str, a: &str, b: &str) -> bool {
    if idp == "email" {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}
