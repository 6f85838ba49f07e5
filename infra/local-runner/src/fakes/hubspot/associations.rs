//! Associations between records: HubSpot's defined type ids per direction (deal -> contact 3,
//! contact -> deal 4, note -> deal 214, note -> contact 202, ...), the v4 API (default PUT that
//! links both directions, typed PUT, batch default/create/read/archive, list, labels), the v3
//! label path and list, and inline `associations` on create. An association always exists in
//! both directions; asking twice is harmless.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use super::HubSpotFake;
use super::errors::{ApiError, parse_json};
use super::otype;
use super::store::{ObjectType, Store, iso_ms};

/// Who defined an association type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    HubSpotDefined,
    UserDefined,
    IntegratorDefined,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HubSpotDefined => "HUBSPOT_DEFINED",
            Self::UserDefined => "USER_DEFINED",
            Self::IntegratorDefined => "INTEGRATOR_DEFINED",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "HUBSPOT_DEFINED" => Some(Self::HubSpotDefined),
            "USER_DEFINED" => Some(Self::UserDefined),
            "INTEGRATOR_DEFINED" => Some(Self::IntegratorDefined),
            _ => None,
        }
    }
}

/// One direction of one association.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Assoc {
    pub from_type: ObjectType,
    pub from_id: u64,
    pub to_type: ObjectType,
    pub to_id: u64,
    pub category: Category,
    pub type_id: u32,
}

/// An association of a record, as the inspection API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssociationView {
    pub to_type: ObjectType,
    pub to_id: String,
    pub category: &'static str,
    pub type_id: u32,
}

use ObjectType::{Company, Contact, Deal, Note};

/// HubSpot-defined unlabelled types: (from, to, type id, the reverse direction's id, v3 name).
const TYPES: &[(ObjectType, ObjectType, u32, u32, &str)] = &[
    (Contact, Company, 1, 2, "contact_to_company"),
    (Company, Contact, 2, 1, "company_to_contact"),
    (Deal, Contact, 3, 4, "deal_to_contact"),
    (Contact, Deal, 4, 3, "contact_to_deal"),
    (Deal, Company, 5, 6, "deal_to_company"),
    (Company, Deal, 6, 5, "company_to_deal"),
    (Company, Note, 189, 190, "company_to_note"),
    (Note, Company, 190, 189, "note_to_company"),
    (Contact, Note, 201, 202, "contact_to_note"),
    (Note, Contact, 202, 201, "note_to_contact"),
    (Deal, Note, 213, 214, "deal_to_note"),
    (Note, Deal, 214, 213, "note_to_deal"),
];

/// The default type id of `from -> to`, with its reverse.
pub fn default_type(from: ObjectType, to: ObjectType) -> Option<(u32, u32)> {
    TYPES
        .iter()
        .find(|(f, t, ..)| *f == from && *t == to)
        .map(|(_, _, id, rev, _)| (*id, *rev))
}

/// The pair and reverse id of a HubSpot-defined type id.
fn by_id(id: u32) -> Option<(ObjectType, ObjectType, u32)> {
    TYPES
        .iter()
        .find(|(_, _, i, ..)| *i == id)
        .map(|(f, t, _, rev, _)| (*f, *t, *rev))
}

fn v3_name(id: u32) -> String {
    TYPES
        .iter()
        .find(|(_, _, i, ..)| *i == id)
        .map_or_else(|| id.to_string(), |(.., n)| n.to_string())
}

impl Store {
    /// Links two live records with type `type_id` (and the reverse type back); idempotent.
    fn link(&mut self, from: (ObjectType, u64), to: (ObjectType, u64), type_id: u32, reverse: u32) {
        let c = Category::HubSpotDefined;
        self.associations.insert(Assoc {
            from_type: from.0,
            from_id: from.1,
            to_type: to.0,
            to_id: to.1,
            category: c,
            type_id,
        });
        self.associations.insert(Assoc {
            from_type: to.0,
            from_id: to.1,
            to_type: from.0,
            to_id: from.1,
            category: c,
            type_id: reverse,
        });
    }

    /// Removes every association between two records, both directions.
    fn unlink(&mut self, a: (ObjectType, u64), b: (ObjectType, u64)) {
        self.associations.retain(|x| {
            !((x.from_type, x.from_id, x.to_type, x.to_id) == (a.0, a.1, b.0, b.1)
                || (x.from_type, x.from_id, x.to_type, x.to_id) == (b.0, b.1, a.0, a.1))
        });
    }

    /// The associations from record `id` (of type `t`) to records of `to` (any type: `None`).
    pub fn associations_of(&self, t: ObjectType, id: u64, to: Option<ObjectType>) -> Vec<Assoc> {
        self.associations
            .iter()
            .filter(|a| a.from_type == t && a.from_id == id && to.is_none_or(|x| x == a.to_type))
            .copied()
            .collect()
    }

    fn live(&self, t: ObjectType, id: &str) -> Result<u64, ApiError> {
        id.parse::<u64>()
            .ok()
            .filter(|n| self.get(t, *n).is_some())
            .ok_or_else(|| ApiError::not_found(format!("No {} with id {id} exists", t.singular())))
    }

    /// Checks a typed association request: each type must be defined for `from -> to`.
    fn check_types(
        from: ObjectType,
        to: ObjectType,
        types: &[(Category, u32)],
    ) -> Result<Vec<(u32, u32)>, ApiError> {
        if types.is_empty() {
            return Err(ApiError::validation(
                "at least one association type is required",
            ));
        }
        types
            .iter()
            .map(|(cat, id)| match (cat, by_id(*id)) {
                (Category::HubSpotDefined, Some((f, t, rev))) if f == from && t == to => {
                    Ok((*id, rev))
                }
                _ => Err(ApiError::validation(format!(
                    "association type {id} of category {} is not defined from {from} to {to}",
                    cat.as_str()
                ))),
            })
            .collect()
    }
}

/// Reads `[{"associationCategory": ..., "associationTypeId": ...}]`.
fn parse_types(v: &Value) -> Result<Vec<(Category, u32)>, ApiError> {
    let arr = v
        .as_array()
        .ok_or_else(|| ApiError::validation("association types must be a JSON array"))?;
    arr.iter()
        .map(|t| {
            let cat = t["associationCategory"]
                .as_str()
                .and_then(Category::parse)
                .ok_or_else(|| {
                    ApiError::validation(format!(
                        "associationCategory must be HUBSPOT_DEFINED, USER_DEFINED or INTEGRATOR_DEFINED in {t}"
                    ))
                })?;
            let id = t["associationTypeId"]
                .as_u64()
                .ok_or_else(|| ApiError::validation(format!("associationTypeId must be a number in {t}")))?;
            Ok((cat, id as u32))
        })
        .collect()
}

/// An id given as a JSON string or number.
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Inline `associations` of a create body, checked: each `to.id` a live record, each type a
/// HubSpot-defined type from `from`. Returns `(to type, to id, type id, reverse id)`.
pub fn parse_inline(
    store: &Store,
    from: ObjectType,
    v: &Value,
) -> Result<Vec<(ObjectType, u64, u32, u32)>, ApiError> {
    let Some(items) = v.as_array() else {
        return match v {
            Value::Null => Ok(Vec::new()),
            _ => Err(ApiError::validation("associations must be a JSON array")),
        };
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let to_id = id_of(&item["to"]["id"])
            .ok_or_else(|| ApiError::validation(format!("associations[{i}].to.id is required")))?;
        for (cat, type_id) in parse_types(&item["types"])? {
            let Some((f, to_type, rev)) =
                by_id(type_id).filter(|_| cat == Category::HubSpotDefined)
            else {
                return Err(ApiError::validation(format!(
                    "associations[{i}]: association type {type_id} of category {} is not defined",
                    cat.as_str()
                )));
            };
            if f != from {
                return Err(ApiError::validation(format!(
                    "associations[{i}]: association type {type_id} goes from {f}, not from {from}"
                )));
            }
            let n = to_id
                .parse::<u64>()
                .ok()
                .filter(|n| store.get(to_type, *n).is_some())
                .ok_or_else(|| {
                    ApiError::validation(format!(
                        "associations[{i}]: no {} with id {to_id} exists",
                        to_type.singular()
                    ))
                })?;
            out.push((to_type, n, type_id, rev));
        }
    }
    Ok(out)
}

/// Applies checked inline associations of a new record.
pub fn apply_inline(
    store: &mut Store,
    from: (ObjectType, u64),
    links: &[(ObjectType, u64, u32, u32)],
) {
    for (to_type, to_id, id, rev) in links {
        store.link(from, (*to_type, *to_id), *id, *rev);
    }
}

/// The `associations` object of a v3 record read (`?associations=contacts`).
pub fn v3_embedded(store: &Store, t: ObjectType, id: u64, types: &[ObjectType]) -> Value {
    let mut out = serde_json::Map::new();
    for to in types {
        let list = v3_list_of(store, t, id, *to);
        if !list.is_empty() {
            out.insert(to.path().into(), json!({"results": list}));
        }
    }
    Value::Object(out)
}

fn v3_list_of(store: &Store, t: ObjectType, id: u64, to: ObjectType) -> Vec<Value> {
    store
        .associations_of(t, id, Some(to))
        .iter()
        .map(|a| json!({"id": a.to_id.to_string(), "type": v3_name(a.type_id)}))
        .collect()
}

/// v4's grouping: one item per associated record with every type linking to it.
fn v4_list_of(store: &Store, t: ObjectType, id: u64, to: ObjectType) -> Vec<Value> {
    let mut by_record: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for a in store.associations_of(t, id, Some(to)) {
        by_record.entry(a.to_id).or_default().push(
            json!({"category": a.category.as_str(), "typeId": a.type_id, "label": Value::Null}),
        );
    }
    by_record
        .into_iter()
        .map(|(to_id, types)| json!({"toObjectId": to_id, "associationTypes": types}))
        .collect()
}

fn spec_pair(from: u64, to: u64, id: u32, rev: u32) -> [Value; 2] {
    [
        json!({"from": {"id": from.to_string()}, "to": {"id": to.to_string()},
               "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": id}}),
        json!({"from": {"id": to.to_string()}, "to": {"id": from.to_string()},
               "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": rev}}),
    ]
}

fn no_default(from: ObjectType, to: ObjectType) -> ApiError {
    ApiError::validation(format!(
        "There is no default association type from {from} to {to}"
    ))
}

/// Routes under `/crm/v3/objects`.
pub fn v3_routes() -> Router<Arc<HubSpotFake>> {
    Router::new()
        .route("/{object_type}/{id}/associations/{to_type}", get(v3_list))
        .route(
            "/{object_type}/{id}/associations/{to_type}/{to_id}/{assoc_type}",
            put(v3_put).delete(v3_delete),
        )
}

/// Routes under `/crm/v4/objects` (and the date-versioned objects path).
pub fn v4_object_routes() -> Router<Arc<HubSpotFake>> {
    Router::new()
        .route(
            "/{object_type}/{id}/associations/default/{to_type}/{to_id}",
            put(v4_put_default),
        )
        .route(
            "/{object_type}/{id}/associations/{to_type}/{to_id}",
            put(v4_put_typed).delete(v4_delete),
        )
        .route("/{object_type}/{id}/associations/{to_type}", get(v4_list))
}

/// Routes under `/crm/v4/associations` (and `/crm/associations/2026-03`).
pub fn v4_batch_routes() -> Router<Arc<HubSpotFake>> {
    Router::new()
        .route(
            "/{from_type}/{to_type}/batch/associate/default",
            post(batch_default),
        )
        .route("/{from_type}/{to_type}/batch/{op}", post(batch_op))
        .route("/{from_type}/{to_type}/labels", get(labels))
}

type Four = (String, String, String, String);

async fn v3_list(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, id, to)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (t, to) = (otype(&t)?, otype(&to)?);
    let store = fake.store();
    let id = store.live(t, &id)?;
    Ok(Json(json!({"results": v3_list_of(&store, t, id, to)})))
}

async fn v3_put(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, id, to, to_id, kind)): Path<(String, String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (t, to) = (otype(&t)?, otype(&to)?);
    let mut store = fake.store();
    let (id, to_id) = (store.live(t, &id)?, store.live(to, &to_id)?);
    let type_id = kind
        .parse::<u32>()
        .ok()
        .or_else(|| {
            TYPES
                .iter()
                .find(|(.., n)| *n == kind)
                .map(|(_, _, i, ..)| *i)
        })
        .ok_or_else(|| ApiError::validation(format!("{kind} is not a valid association type")))?;
    let [(type_id, rev)] = Store::check_types(t, to, &[(Category::HubSpotDefined, type_id)])?[..]
    else {
        return Err(ApiError::validation("one association type expected"));
    };
    store.link((t, id), (to, to_id), type_id, rev);
    let rec = store
        .get(t, id)
        .map(|r| r.to_json(super::store::Selection::Default));
    let mut out = rec.unwrap_or(Value::Null);
    out["associations"] = v3_embedded(&store, t, id, &[to]);
    Ok(Json(out))
}

async fn v3_delete(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, id, to, to_id, _kind)): Path<(String, String, String, String, String)>,
) -> Result<StatusCode, ApiError> {
    v4_delete(State(fake), Path((t, id, to, to_id))).await
}

async fn v4_put_default(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, id, to, to_id)): Path<Four>,
) -> Result<Json<Value>, ApiError> {
    let (t, to) = (otype(&t)?, otype(&to)?);
    let mut store = fake.store();
    let (id, to_id) = (store.live(t, &id)?, store.live(to, &to_id)?);
    let (type_id, rev) = default_type(t, to).ok_or_else(|| no_default(t, to))?;
    store.link((t, id), (to, to_id), type_id, rev);
    let now = iso_ms(fake.now_ms());
    Ok(Json(json!({
        "status": "COMPLETE",
        "results": spec_pair(id, to_id, type_id, rev),
        "startedAt": now,
        "completedAt": now,
    })))
}

async fn v4_put_typed(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, id, to, to_id)): Path<Four>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (t, to) = (otype(&t)?, otype(&to)?);
    let types = parse_types(&parse_json(&body)?)?;
    let mut store = fake.store();
    let (id, to_id) = (store.live(t, &id)?, store.live(to, &to_id)?);
    for (type_id, rev) in Store::check_types(t, to, &types)? {
        store.link((t, id), (to, to_id), type_id, rev);
    }
    Ok(Json(json!({
        "fromObjectTypeId": t.type_id(),
        "fromObjectId": id,
        "toObjectTypeId": to.type_id(),
        "toObjectId": to_id,
        "labels": [],
    })))
}

async fn v4_delete(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, id, to, to_id)): Path<Four>,
) -> Result<StatusCode, ApiError> {
    let (t, to) = (otype(&t)?, otype(&to)?);
    let mut store = fake.store();
    let (id, to_id) = (store.live(t, &id)?, store.live(to, &to_id)?);
    store.unlink((t, id), (to, to_id));
    Ok(StatusCode::NO_CONTENT)
}

async fn v4_list(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, id, to)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (t, to) = (otype(&t)?, otype(&to)?);
    let store = fake.store();
    let id = store.live(t, &id)?;
    Ok(Json(json!({"results": v4_list_of(&store, t, id, to)})))
}

fn inputs(body: &Value) -> Result<&Vec<Value>, ApiError> {
    let inputs = body["inputs"]
        .as_array()
        .ok_or_else(|| ApiError::validation("inputs is required (a JSON array)"))?;
    if inputs.len() > super::batch::MAX_INPUTS {
        return Err(ApiError::validation(format!(
            "Batch input is limited to {} inputs, got {}",
            super::batch::MAX_INPUTS,
            inputs.len()
        )));
    }
    Ok(inputs)
}

/// A batch answer: 200 (or `ok`) when nothing failed, else 207 with `errors` and `numErrors`.
fn batch_answer(ok: StatusCode, results: Vec<Value>, errors: Vec<Value>, now: &str) -> Response {
    let mut body =
        json!({"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now});
    let status = if errors.is_empty() {
        ok
    } else {
        body["numErrors"] = json!(errors.len());
        body["errors"] = Value::Array(errors);
        StatusCode::MULTI_STATUS
    };
    (status, Json(body)).into_response()
}

fn item_error(e: &ApiError, context: Value) -> Value {
    let mut v = e.body.clone();
    v["context"] = context;
    v["links"] = json!({});
    v
}

async fn batch_default(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, to)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (t, to) = (otype(&t)?, otype(&to)?);
    let body = parse_json(&body)?;
    let (type_id, rev) = default_type(t, to).ok_or_else(|| no_default(t, to))?;
    let now = iso_ms(fake.now_ms());
    let mut store = fake.store();
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for item in inputs(&body)? {
        let from_id = id_of(&item["from"]["id"]).unwrap_or_default();
        let to_id = id_of(&item["to"]["id"]).unwrap_or_default();
        match (store.live(t, &from_id), store.live(to, &to_id)) {
            (Ok(a), Ok(b)) => {
                store.link((t, a), (to, b), type_id, rev);
                results.extend(spec_pair(a, b, type_id, rev));
            }
            (Err(e), _) | (_, Err(e)) => errors.push(item_error(
                &e,
                json!({"fromObjectId": [from_id], "toObjectId": [to_id]}),
            )),
        }
    }
    Ok(batch_answer(StatusCode::OK, results, errors, &now))
}

async fn batch_op(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, to, op)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (t, to) = (otype(&t)?, otype(&to)?);
    let body = parse_json(&body)?;
    let now = iso_ms(fake.now_ms());
    let mut store = fake.store();
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    match op.as_str() {
        "create" => {
            for item in inputs(&body)? {
                let from_id = id_of(&item["from"]["id"]).unwrap_or_default();
                let to_id = id_of(&item["to"]["id"]).unwrap_or_default();
                let checked = parse_types(&item["types"])
                    .and_then(|types| Store::check_types(t, to, &types))
                    .and_then(|types| {
                        Ok((store.live(t, &from_id)?, store.live(to, &to_id)?, types))
                    });
                match checked {
                    Ok((a, b, types)) => {
                        for (id, rev) in types {
                            store.link((t, a), (to, b), id, rev);
                        }
                        results.push(json!({
                            "fromObjectTypeId": t.type_id(), "fromObjectId": a,
                            "toObjectTypeId": to.type_id(), "toObjectId": b, "labels": [],
                        }));
                    }
                    Err(e) => errors.push(item_error(
                        &e,
                        json!({"fromObjectId": [from_id], "toObjectId": [to_id]}),
                    )),
                }
            }
            Ok(batch_answer(StatusCode::CREATED, results, errors, &now))
        }
        "read" => {
            for item in inputs(&body)? {
                let from_id = id_of(&item["id"]).unwrap_or_default();
                match store.live(t, &from_id) {
                    Ok(a) => results.push(json!({
                        "from": {"id": a.to_string()},
                        "to": v4_list_of(&store, t, a, to),
                    })),
                    Err(e) => errors.push(item_error(&e, json!({"fromObjectId": [from_id]}))),
                }
            }
            Ok(batch_answer(StatusCode::OK, results, errors, &now))
        }
        "archive" => {
            for item in inputs(&body)? {
                let from_id = id_of(&item["from"]["id"]).unwrap_or_default();
                let Ok(a) = store.live(t, &from_id) else {
                    continue;
                };
                for target in item["to"].as_array().into_iter().flatten() {
                    if let Some(b) = id_of(&target["id"]).and_then(|s| s.parse::<u64>().ok()) {
                        store.unlink((t, a), (to, b));
                    }
                }
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        other => Err(ApiError::not_found(format!(
            "Unknown batch association operation {other}"
        ))),
    }
}

async fn labels(Path((t, to)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    let (t, to) = (otype(&t)?, otype(&to)?);
    let results: Vec<Value> = TYPES
        .iter()
        .filter(|(f, x, ..)| *f == t && *x == to)
        .map(|(_, _, id, ..)| json!({"category": "HUBSPOT_DEFINED", "typeId": id, "label": Value::Null}))
        .collect();
    Ok(Json(json!({"results": results})))
}
