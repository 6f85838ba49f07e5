//! The objects API: create (with inline associations), read and update by id or by a unique
//! property (`?idProperty=`; an update never creates), archive, list with paging, and search
//! (eventually consistent: a write is invisible to it for the configured lag).

use std::cmp::Ordering;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::associations::{apply_inline, parse_inline, v3_embedded};
use super::errors::{ApiError, parse_json};
use super::store::{ObjectType, Record, Selection, Store, parse_datetime_ms};
use super::{HubSpotFake, otype};

pub fn routes() -> Router<Arc<HubSpotFake>> {
    Router::new()
        .route("/{object_type}", get(list).post(create))
        .route("/{object_type}/search", post(search))
        .route(
            "/{object_type}/{id}",
            get(read).patch(update).delete(archive),
        )
}

/// The query of a read: `properties` (comma-separated and/or repeated), `idProperty`,
/// `associations`, `limit`, `after`.
#[derive(Default)]
pub struct ReadQuery {
    pub properties: Option<Vec<String>>,
    pub id_property: Option<String>,
    pub associations: Vec<String>,
    pub limit: Option<String>,
    pub after: Option<String>,
}

impl ReadQuery {
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut q = Self::default();
        let split = |v: &str| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        for (k, v) in pairs {
            match k.as_str() {
                "properties" => q.properties.get_or_insert_with(Vec::new).extend(split(&v)),
                "idProperty" => q.id_property = Some(v),
                "associations" => q.associations.extend(split(&v)),
                "limit" => q.limit = Some(v),
                "after" => q.after = Some(v),
                _ => {}
            }
        }
        q
    }

    pub fn selection(&self) -> Selection<'_> {
        match &self.properties {
            Some(p) => Selection::Named(p),
            None => Selection::Default,
        }
    }
}

/// `idProperty` must be a unique property of the type.
pub fn check_id_property(store: &Store, t: ObjectType, p: Option<&str>) -> Result<(), ApiError> {
    match p {
        Some(p) if !store.is_unique(t, p) => Err(ApiError::validation(format!(
            "idProperty {p} is not a unique property of {t}: use hs_object_id, a property with hasUniqueValue{}",
            if t == ObjectType::Contact {
                ", or email"
            } else {
                ""
            }
        ))),
        _ => Ok(()),
    }
}

fn not_found(t: ObjectType, id: &str) -> ApiError {
    ApiError::not_found(format!(
        "Object not found. objectId are usually numeric. (no {} {id})",
        t.singular()
    ))
}

/// The `properties` object of a write body.
pub fn properties_of<'a>(body: &'a Value, what: &str) -> Result<&'a Map<String, Value>, ApiError> {
    body.get("properties")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ApiError::validation(format!(
                "{what}: properties is required (a JSON object of string values)"
            ))
        })
}

async fn create(
    State(fake): State<Arc<HubSpotFake>>,
    Path(t): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = otype(&t)?;
    let body = parse_json(&body)?;
    let props = properties_of(&body, "create")?;
    let (ms, now) = (fake.now_ms(), fake.clock.now());
    let mut store = fake.store();
    let links = parse_inline(&store, t, &body["associations"])?;
    let id = store
        .create(t, props, ms, now)
        .map_err(|e| ApiError::from_write(&e))?;
    apply_inline(&mut store, (t, id), &links);
    let out = store
        .get(t, id)
        .map(|r| r.to_json(Selection::All))
        .unwrap_or(Value::Null);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn read(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, id)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let t = otype(&t)?;
    let q = ReadQuery::from_pairs(q);
    let store = fake.store();
    check_id_property(&store, t, q.id_property.as_deref())?;
    let n = store
        .resolve(t, &id, q.id_property.as_deref())
        .ok_or_else(|| not_found(t, &id))?;
    let rec = store.get(t, n).ok_or_else(|| not_found(t, &id))?;
    let mut out = rec.to_json(q.selection());
    let assoc_types: Vec<ObjectType> = q
        .associations
        .iter()
        .map(|a| otype(a))
        .collect::<Result<_, _>>()?;
    if !assoc_types.is_empty() {
        out["associations"] = v3_embedded(&store, t, n, &assoc_types);
    }
    Ok(Json(out))
}

async fn update(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, id)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let t = otype(&t)?;
    let q = ReadQuery::from_pairs(q);
    let body = parse_json(&body)?;
    let props = properties_of(&body, "update")?;
    let (ms, now) = (fake.now_ms(), fake.clock.now());
    let mut store = fake.store();
    check_id_property(&store, t, q.id_property.as_deref())?;
    let n = store
        .resolve(t, &id, q.id_property.as_deref())
        .ok_or_else(|| not_found(t, &id))?;
    store
        .update(t, n, props, ms, now)
        .map_err(|e| ApiError::from_write(&e))?;
    Ok(Json(
        store
            .get(t, n)
            .map(|r| r.to_json(Selection::All))
            .unwrap_or(Value::Null),
    ))
}

async fn archive(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let t = otype(&t)?;
    let ms = fake.now_ms();
    let mut store = fake.store();
    if let Some(n) = store.resolve(t, &id, None) {
        store.archive(n, ms);
    }
    // HubSpot answers 204 whether or not the record existed.
    Ok(StatusCode::NO_CONTENT)
}

fn limit_of(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::validation(format!(
                "limit must be a number from 1 to {max}, got {s}"
            ))),
        },
    }
}

async fn list(
    State(fake): State<Arc<HubSpotFake>>,
    Path(t): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let t = otype(&t)?;
    let q = ReadQuery::from_pairs(q);
    let limit = limit_of(q.limit.as_deref(), 10, 100)?;
    let after: u64 = q.after.as_deref().and_then(|a| a.parse().ok()).unwrap_or(0);
    let store = fake.store();
    let mut page: Vec<&Record> = store
        .records
        .range(after..)
        .map(|(_, r)| r)
        .filter(|r| r.object_type == t && !r.archived && r.id >= after)
        .take(limit + 1)
        .collect();
    let next = (page.len() > limit).then(|| page[limit].id);
    page.truncate(limit);
    let mut out =
        json!({"results": page.iter().map(|r| r.to_json(q.selection())).collect::<Vec<_>>()});
    if let Some(n) = next {
        out["paging"] = json!({"next": {"after": n.to_string()}});
    }
    Ok(Json(out))
}

/// One search filter.
struct Filter {
    property: String,
    operator: String,
    value: Option<String>,
    high: Option<String>,
    values: Vec<String>,
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Numbers compare as numbers, times as times, anything else as text (case-insensitively).
fn compare(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    }
    if let (Some(x), Some(y)) = (parse_datetime_ms(a), parse_datetime_ms(b)) {
        return x.cmp(&y);
    }
    a.to_lowercase().cmp(&b.to_lowercase())
}

impl Filter {
    fn parse(v: &Value) -> Result<Self, ApiError> {
        let property = v["propertyName"]
            .as_str()
            .ok_or_else(|| ApiError::validation(format!("filter without propertyName: {v}")))?
            .to_owned();
        let operator = v["operator"].as_str().unwrap_or("EQ").to_owned();
        const OPS: &[&str] = &[
            "EQ",
            "NEQ",
            "LT",
            "LTE",
            "GT",
            "GTE",
            "BETWEEN",
            "IN",
            "NOT_IN",
            "HAS_PROPERTY",
            "NOT_HAS_PROPERTY",
            "CONTAINS_TOKEN",
            "NOT_CONTAINS_TOKEN",
        ];
        if !OPS.contains(&operator.as_str()) {
            return Err(ApiError::validation(format!(
                "Unknown search operator {operator}: one of {}",
                OPS.join(", ")
            )));
        }
        Ok(Self {
            property,
            operator,
            value: text_of(&v["value"]),
            high: text_of(&v["highValue"]),
            values: v["values"]
                .as_array()
                .map(|a| a.iter().filter_map(text_of).collect())
                .unwrap_or_default(),
        })
    }

    fn holds(
        &self,
        store: &Store,
        rec: &Record,
        props: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        if let Some(to) = self.property.strip_prefix("associations.") {
            let Some(to) = ObjectType::parse(to) else {
                return false;
            };
            let linked: Vec<String> = store
                .associations_of(rec.object_type, rec.id, Some(to))
                .iter()
                .map(|a| a.to_id.to_string())
                .collect();
            return match self.operator.as_str() {
                "EQ" => self.value.as_ref().is_some_and(|v| linked.contains(v)),
                "IN" => self.values.iter().any(|v| linked.contains(v)),
                "HAS_PROPERTY" => !linked.is_empty(),
                "NOT_HAS_PROPERTY" => linked.is_empty(),
                _ => false,
            };
        }
        let got = props.get(&self.property).map(String::as_str);
        let val = self.value.as_deref().unwrap_or("");
        let cmp = |o: &dyn Fn(Ordering) -> bool| got.is_some_and(|g| o(compare(g, val)));
        match self.operator.as_str() {
            "EQ" => cmp(&|o| o == Ordering::Equal),
            "NEQ" => !cmp(&|o| o == Ordering::Equal),
            "LT" => cmp(&|o| o == Ordering::Less),
            "LTE" => cmp(&|o| o != Ordering::Greater),
            "GT" => cmp(&|o| o == Ordering::Greater),
            "GTE" => cmp(&|o| o != Ordering::Less),
            "BETWEEN" => {
                let high = self.high.as_deref().unwrap_or("");
                got.is_some_and(|g| {
                    compare(g, val) != Ordering::Less && compare(g, high) != Ordering::Greater
                })
            }
            "IN" => {
                got.is_some_and(|g| self.values.iter().any(|v| compare(g, v) == Ordering::Equal))
            }
            "NOT_IN" => {
                !got.is_some_and(|g| self.values.iter().any(|v| compare(g, v) == Ordering::Equal))
            }
            "HAS_PROPERTY" => got.is_some(),
            "NOT_HAS_PROPERTY" => got.is_none(),
            "CONTAINS_TOKEN" => got.is_some_and(|g| {
                g.to_lowercase()
                    .contains(&val.to_lowercase().replace('*', ""))
            }),
            "NOT_CONTAINS_TOKEN" => !got.is_some_and(|g| {
                g.to_lowercase()
                    .contains(&val.to_lowercase().replace('*', ""))
            }),
            _ => false,
        }
    }
}

/// `POST /{type}/search`: filter groups (OR of ANDs; at most 5 groups of 6 filters), one sort,
/// `properties`, `limit` (at most 200), `after` (an offset). It sees each record as of its
/// newest write older than the search lag; newer writes are not indexed yet.
async fn search(
    State(fake): State<Arc<HubSpotFake>>,
    Path(t): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let t = otype(&t)?;
    let body = if body.is_empty() {
        json!({})
    } else {
        parse_json(&body)?
    };
    let groups: Vec<Vec<Filter>> = body["filterGroups"]
        .as_array()
        .map(|gs| {
            gs.iter()
                .map(|g| {
                    g["filters"]
                        .as_array()
                        .map(|fs| fs.iter().map(Filter::parse).collect::<Result<Vec<_>, _>>())
                        .unwrap_or(Ok(Vec::new()))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or(Ok(Vec::new()))?;
    if groups.len() > 5 || groups.iter().any(|g| g.len() > 6) {
        return Err(ApiError::validation(
            "A search takes at most 5 filterGroups of at most 6 filters each",
        ));
    }
    let limit = match &body["limit"] {
        Value::Null => 10,
        v => limit_of(text_of(v).as_deref(), 10, 200)?,
    };
    let after: usize = text_of(&body["after"])
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let names: Option<Vec<String>> = body["properties"].as_array().map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    });
    let sort = body["sorts"]
        .as_array()
        .and_then(|s| s.first())
        .map(|s| match s {
            Value::String(p) => match p.strip_prefix('-') {
                Some(p) => (p.to_owned(), true),
                None => (p.clone(), false),
            },
            _ => (
                s["propertyName"]
                    .as_str()
                    .unwrap_or("hs_object_id")
                    .to_owned(),
                s["direction"].as_str() == Some("DESCENDING"),
            ),
        });

    let cutoff = fake.clock.now().checked_sub(fake.opts.search_lag);
    let store = fake.store();
    let mut hits: Vec<(&Record, &std::collections::BTreeMap<String, String>)> = store
        .records
        .values()
        .filter(|r| r.object_type == t && !r.archived)
        .filter_map(|r| {
            let indexed = r
                .versions
                .iter()
                .rev()
                .find(|(at, _)| cutoff.is_some_and(|c| *at <= c))?;
            Some((r, &indexed.1))
        })
        .filter(|(r, props)| {
            groups.is_empty()
                || groups
                    .iter()
                    .any(|g| g.iter().all(|f| f.holds(&store, r, props)))
        })
        .collect();
    if let Some((prop, desc)) = &sort {
        hits.sort_by(|a, b| {
            let o = match (a.1.get(prop), b.1.get(prop)) {
                (Some(x), Some(y)) => compare(x, y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            let o = o.then(a.0.id.cmp(&b.0.id));
            if *desc { o.reverse() } else { o }
        });
    }
    let total = hits.len();
    let sel = match &names {
        Some(n) => Selection::Named(n),
        None => Selection::Default,
    };
    let results: Vec<Value> = hits
        .iter()
        .skip(after)
        .take(limit)
        .map(|(r, props)| {
            r.json_of(
                props,
                match &sel {
                    Selection::Named(n) => Selection::Named(n),
                    _ => Selection::Default,
                },
            )
        })
        .collect();
    let mut out = json!({"total": total, "results": results});
    if after + limit < total {
        out["paging"] = json!({"next": {"after": (after + limit).to_string()}});
    }
    Ok(Json(out))
}
