//! The properties API: definitions per object type (create 201 / 409 when the name exists,
//! read 200 / 404, list, update, archive, batch create/read) and property groups (create, list,
//! read). A new property must name an existing group and a valid `type`/`fieldType` pair;
//! enumerations need options.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::errors::{ApiError, parse_json};
use super::store::{ObjectType, PropOption, PropertyDef, Store, iso_ms};
use super::{HubSpotFake, otype};

pub fn routes() -> Router<Arc<HubSpotFake>> {
    Router::new()
        .route("/{object_type}", get(list).post(create))
        .route("/{object_type}/groups", get(list_groups).post(create_group))
        .route("/{object_type}/groups/{name}", get(read_group))
        .route("/{object_type}/batch/{op}", post(batch))
        .route(
            "/{object_type}/{name}",
            get(read).patch(update).delete(archive),
        )
}

/// `type` -> the `fieldType`s HubSpot pairs with it.
fn field_types(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "string" => &["text", "textarea", "html", "phonenumber", "file"],
        "number" => &["number", "calculation_equation"],
        "date" | "datetime" => &["date"],
        "enumeration" => &["select", "radio", "checkbox", "booleancheckbox"],
        "bool" => &["booleancheckbox"],
        "phone_number" => &["phonenumber"],
        _ => return None,
    })
}

fn options_of(v: &Value) -> Result<Vec<PropOption>, String> {
    let Some(arr) = v.as_array() else {
        return match v {
            Value::Null => Ok(Vec::new()),
            _ => Err("options must be a JSON array".into()),
        };
    };
    let mut out: Vec<PropOption> = Vec::new();
    for (i, o) in arr.iter().enumerate() {
        let value = o["value"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("options[{i}].value is required"))?;
        let label = o["label"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("options[{i}].label is required"))?;
        if out.iter().any(|x| x.value == value) {
            return Err(format!("options[{i}].value {value} is repeated"));
        }
        out.push(PropOption {
            label: label.to_owned(),
            value: value.to_owned(),
            display_order: o["displayOrder"].as_i64().unwrap_or(i as i64),
            hidden: o["hidden"].as_bool().unwrap_or(false),
        });
    }
    Ok(out)
}

/// Checks a create body against the store; returns the definition.
fn definition(store: &Store, t: ObjectType, b: &Value, now: &str) -> Result<PropertyDef, ApiError> {
    let missing: Vec<&str> = ["name", "label", "type", "fieldType", "groupName"]
        .into_iter()
        .filter(|k| b[*k].as_str().is_none_or(str::is_empty))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::validation(format!(
            "Property definition is missing required field(s): {}",
            missing.join(", ")
        )));
    }
    let s = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
    let name = s("name");
    let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid_name {
        return Err(ApiError::validation(format!(
            "Property name {name} is not valid: lowercase letters, digits and underscores, starting with a letter"
        )));
    }
    let (kind, field_type) = (s("type"), s("fieldType"));
    match field_types(&kind) {
        None => {
            return Err(ApiError::validation(format!(
                "type {kind} is not valid: string, number, date, datetime, enumeration, bool or phone_number"
            )));
        }
        Some(allowed) if !allowed.contains(&field_type.as_str()) => {
            return Err(ApiError::validation(format!(
                "fieldType {field_type} does not go with type {kind}: one of {}",
                allowed.join(", ")
            )));
        }
        Some(_) => {}
    }
    let group = s("groupName");
    if !store
        .groups
        .get(&t)
        .is_some_and(|gs| gs.iter().any(|g| g["name"] == group.as_str()))
    {
        return Err(ApiError::validation(format!(
            "groupName {group} is not a property group of {t}: create it first (POST .../properties/{t}/groups)"
        )));
    }
    let options = options_of(&b["options"]).map_err(ApiError::validation)?;
    if kind == "enumeration" && options.is_empty() {
        return Err(ApiError::validation(format!(
            "Property {name} of type enumeration needs options"
        )));
    }
    let mut def = match kind.as_str() {
        "bool" if options.is_empty() => PropertyDef::boolean(&name),
        _ => PropertyDef::text(&name),
    };
    def.kind = kind;
    def.field_type = field_type;
    if !options.is_empty() {
        def.options = options;
    }
    def.label = s("label");
    def.group_name = group;
    def.description = s("description");
    def.display_order = b["displayOrder"].as_i64().unwrap_or(-1);
    def.has_unique_value = b["hasUniqueValue"].as_bool().unwrap_or(false);
    def.hidden = b["hidden"].as_bool().unwrap_or(false);
    def.form_field = b["formField"].as_bool().unwrap_or(false);
    def.created_at = now.to_owned();
    def.updated_at = now.to_owned();
    Ok(def)
}

fn exists(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "OBJECT_ALREADY_EXISTS",
        format!("Property named '{name}' already exists."),
    )
}

fn missing(t: ObjectType, name: &str) -> ApiError {
    ApiError::not_found(format!("Property {name} does not exist on {t}"))
}

/// Creates one property in the store.
fn insert(store: &mut Store, t: ObjectType, b: &Value, now: &str) -> Result<Value, ApiError> {
    let name = b["name"].as_str().unwrap_or_default();
    if store.property(t, name).is_some() {
        return Err(exists(name));
    }
    let def = definition(store, t, b, now)?;
    let out = def.to_json();
    store
        .properties
        .entry(t)
        .or_default()
        .insert(def.name.clone(), def);
    Ok(out)
}

async fn list(
    State(fake): State<Arc<HubSpotFake>>,
    Path(t): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = otype(&t)?;
    let store = fake.store();
    let results: Vec<Value> = store
        .properties
        .get(&t)
        .map(|p| p.values().map(PropertyDef::to_json).collect())
        .unwrap_or_default();
    Ok(Json(json!({"results": results})))
}

async fn create(
    State(fake): State<Arc<HubSpotFake>>,
    Path(t): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = otype(&t)?;
    let body = parse_json(&body)?;
    let now = iso_ms(fake.now_ms());
    let out = insert(&mut fake.store(), t, &body, &now)?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn read(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let t = otype(&t)?;
    fake.store()
        .property(t, &name)
        .map(|p| Json(p.to_json()))
        .ok_or_else(|| missing(t, &name))
}

/// Changes what a definition may change: label, description, group, options, display order,
/// hidden, form field, and (for custom properties) type and field type.
async fn update(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let t = otype(&t)?;
    let b = parse_json(&body)?;
    let now = iso_ms(fake.now_ms());
    let mut store = fake.store();
    let mut def = store
        .property(t, &name)
        .cloned()
        .ok_or_else(|| missing(t, &name))?;
    if def.hubspot_defined && (b.get("type").is_some() || b.get("fieldType").is_some()) {
        return Err(ApiError::validation(format!(
            "{name} is defined by HubSpot: its type cannot change"
        )));
    }
    if let Some(g) = b["groupName"].as_str() {
        if !store
            .groups
            .get(&t)
            .is_some_and(|gs| gs.iter().any(|x| x["name"] == g))
        {
            return Err(ApiError::validation(format!(
                "groupName {g} is not a property group of {t}"
            )));
        }
        def.group_name = g.to_owned();
    }
    if let Some(v) = b["label"].as_str() {
        def.label = v.to_owned();
    }
    if let Some(v) = b["description"].as_str() {
        def.description = v.to_owned();
    }
    if let Some(v) = b["type"].as_str() {
        def.kind = v.to_owned();
    }
    if let Some(v) = b["fieldType"].as_str() {
        def.field_type = v.to_owned();
    }
    if !field_types(&def.kind).is_some_and(|a| a.contains(&def.field_type.as_str())) {
        return Err(ApiError::validation(format!(
            "fieldType {} does not go with type {}",
            def.field_type, def.kind
        )));
    }
    if b.get("options").is_some() {
        def.options = options_of(&b["options"]).map_err(ApiError::validation)?;
    }
    if let Some(v) = b["displayOrder"].as_i64() {
        def.display_order = v;
    }
    if let Some(v) = b["hidden"].as_bool() {
        def.hidden = v;
    }
    if let Some(v) = b["formField"].as_bool() {
        def.form_field = v;
    }
    def.updated_at = now;
    let out = def.to_json();
    store.properties.entry(t).or_default().insert(name, def);
    Ok(Json(out))
}

async fn archive(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let t = otype(&t)?;
    let mut store = fake.store();
    match store.property(t, &name) {
        None => Err(missing(t, &name)),
        Some(p) if p.hubspot_defined => Err(ApiError::validation(format!(
            "{name} is defined by HubSpot and cannot be archived"
        ))),
        Some(_) => {
            store.properties.entry(t).or_default().remove(&name);
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

async fn batch(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, op)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = otype(&t)?;
    let b = parse_json(&body)?;
    let inputs = b["inputs"]
        .as_array()
        .ok_or_else(|| ApiError::validation("inputs is required (a JSON array)"))?;
    let now = iso_ms(fake.now_ms());
    let mut store = fake.store();
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    let ok = match op.as_str() {
        "create" => {
            for input in inputs {
                match insert(&mut store, t, input, &now) {
                    Ok(v) => results.push(v),
                    Err(e) => errors.push(e.body),
                }
            }
            StatusCode::CREATED
        }
        "read" => {
            for input in inputs {
                let name = input["name"].as_str().unwrap_or_default();
                match store.property(t, name) {
                    Some(p) => results.push(p.to_json()),
                    None => errors.push(missing(t, name).body),
                }
            }
            StatusCode::OK
        }
        other => {
            return Err(ApiError::not_found(format!(
                "Unknown property batch operation {other}"
            )));
        }
    };
    let mut out =
        json!({"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now});
    let status = if errors.is_empty() {
        ok
    } else {
        out["numErrors"] = json!(errors.len());
        out["errors"] = Value::Array(errors);
        StatusCode::MULTI_STATUS
    };
    Ok((status, Json(out)).into_response())
}

async fn list_groups(
    State(fake): State<Arc<HubSpotFake>>,
    Path(t): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = otype(&t)?;
    let groups = fake.store().groups.get(&t).cloned().unwrap_or_default();
    Ok(Json(json!({"results": groups})))
}

async fn read_group(
    State(fake): State<Arc<HubSpotFake>>,
    Path((t, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let t = otype(&t)?;
    fake.store()
        .groups
        .get(&t)
        .and_then(|gs| gs.iter().find(|g| g["name"] == name.as_str()).cloned())
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("Property group {name} does not exist on {t}")))
}

async fn create_group(
    State(fake): State<Arc<HubSpotFake>>,
    Path(t): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let t = otype(&t)?;
    let b = parse_json(&body)?;
    let (Some(name), Some(label)) = (
        b["name"].as_str().filter(|s| !s.is_empty()),
        b["label"].as_str().filter(|s| !s.is_empty()),
    ) else {
        return Err(ApiError::validation(
            "A property group needs name and label",
        ));
    };
    let mut store = fake.store();
    let groups = store.groups.entry(t).or_default();
    if groups.iter().any(|g| g["name"] == name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "OBJECT_ALREADY_EXISTS",
            format!("A property group named '{name}' already exists."),
        ));
    }
    let g = json!({
        "name": name,
        "label": label,
        "displayOrder": b["displayOrder"].as_i64().unwrap_or(-1),
        "archived": false,
    });
    groups.push(g.clone());
    Ok((StatusCode::CREATED, Json(g)).into_response())
}
