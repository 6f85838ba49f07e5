//! Deal pipelines and stages: the seeded `default` pipeline with HubSpot's standard stage ids,
//! custom pipelines (seeded or created through the API, with numeric-string ids), the pipelines
//! API, and the rule that a deal's `dealstage` belongs to its `pipeline`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::HubSpotFake;
use super::errors::{ApiError, FieldError, parse_json};
use super::store::{ObjectType, iso_ms};

/// A deal pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub id: String,
    pub label: String,
    pub display_order: i64,
    pub stages: Vec<Stage>,
    pub created_at: String,
}

/// A stage of a pipeline; `id` is what `dealstage` holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub id: String,
    pub label: String,
    pub display_order: i64,
    pub is_closed: bool,
    /// Win probability as HubSpot writes it, a string (`"0.2"`).
    pub probability: String,
}

impl Pipeline {
    /// Every portal's `default` "Sales Pipeline" with HubSpot's standard stage ids.
    pub fn default_sales() -> Self {
        let stages = [
            (
                "appointmentscheduled",
                "Appointment Scheduled",
                "0.2",
                false,
            ),
            ("qualifiedtobuy", "Qualified To Buy", "0.4", false),
            (
                "presentationscheduled",
                "Presentation Scheduled",
                "0.6",
                false,
            ),
            (
                "decisionmakerboughtin",
                "Decision Maker Bought-In",
                "0.8",
                false,
            ),
            ("contractsent", "Contract Sent", "0.9", false),
            ("closedwon", "Closed Won", "1.0", true),
            ("closedlost", "Closed Lost", "0.0", true),
        ];
        Self {
            id: "default".into(),
            label: "Sales Pipeline".into(),
            display_order: 0,
            stages: stages
                .iter()
                .enumerate()
                .map(|(i, (id, label, p, closed))| Stage {
                    id: id.to_string(),
                    label: label.to_string(),
                    display_order: i as i64,
                    is_closed: *closed,
                    probability: p.to_string(),
                })
                .collect(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    /// A custom pipeline with these `(stage id, label)`s, all open except ids starting `closed`.
    pub fn custom(id: &str, label: &str, stages: &[(&str, &str)]) -> Self {
        Self {
            id: id.into(),
            label: label.into(),
            display_order: 1,
            stages: stages
                .iter()
                .enumerate()
                .map(|(i, (sid, sl))| Stage {
                    id: sid.to_string(),
                    label: sl.to_string(),
                    display_order: i as i64,
                    is_closed: sid.starts_with("closed"),
                    probability: if sid.starts_with("closedwon") {
                        "1.0"
                    } else {
                        "0.5"
                    }
                    .into(),
                })
                .collect(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "label": self.label,
            "displayOrder": self.display_order,
            "archived": false,
            "createdAt": self.created_at,
            "updatedAt": self.created_at,
            "stages": self.stages.iter().map(|s| s.to_json(&self.created_at)).collect::<Vec<_>>(),
        })
    }
}

impl Stage {
    fn to_json(&self, at: &str) -> Value {
        json!({
            "id": self.id,
            "label": self.label,
            "displayOrder": self.display_order,
            "metadata": {"isClosed": self.is_closed.to_string(), "probability": self.probability},
            "archived": false,
            "createdAt": at,
            "updatedAt": at,
            "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
        })
    }
}

/// The deal rules: a new deal without `pipeline` goes to `default`; `pipeline` names a pipeline;
/// `dealstage` is required and must be a stage of that pipeline.
pub fn check_deal(
    pipelines: &[Pipeline],
    props: &mut BTreeMap<String, String>,
    creating: bool,
    errors: &mut Vec<FieldError>,
) {
    if creating && !props.contains_key("pipeline") {
        props.insert("pipeline".into(), "default".into());
    }
    let Some(pipeline_id) = props.get("pipeline") else {
        errors.push(FieldError::new(
            "pipeline",
            "REQUIRED_PROPERTY",
            "Property \"pipeline\" cannot be cleared: a deal is always in a pipeline",
        ));
        return;
    };
    let Some(pipeline) = pipelines.iter().find(|p| &p.id == pipeline_id) else {
        errors.push(FieldError::new(
            "pipeline",
            "INVALID_OPTION",
            format!("{pipeline_id} was not one of the allowed options for property \"pipeline\": no pipeline has that id"),
        ));
        return;
    };
    match props.get("dealstage") {
        None => errors.push(FieldError::new(
            "dealstage",
            "REQUIRED_PROPERTY",
            "Property \"dealstage\" is required: a deal needs a stage of its pipeline",
        )),
        Some(stage) if !pipeline.stages.iter().any(|s| &s.id == stage) => {
            let allowed: Vec<&str> = pipeline.stages.iter().map(|s| s.id.as_str()).collect();
            errors.push(FieldError::new(
                "dealstage",
                "INVALID_OPTION",
                format!(
                    "{stage} was not one of the allowed options for property \"dealstage\" in pipeline {}: [{}]",
                    pipeline.id,
                    allowed.join(", ")
                ),
            ));
        }
        Some(_) => {}
    }
}

pub fn routes() -> Router<Arc<HubSpotFake>> {
    Router::new()
        .route("/{object_type}", get(list).post(create))
        .route("/{object_type}/{pipeline_id}", get(one))
        .route(
            "/{object_type}/{pipeline_id}/stages",
            get(stages).post(create_stage),
        )
}

fn deals_only(object_type: &str) -> Result<(), ApiError> {
    match ObjectType::parse(object_type) {
        Some(ObjectType::Deal) => Ok(()),
        Some(t) => Err(ApiError::validation(format!(
            "The fake models pipelines of deals only, not {t}"
        ))),
        None => Err(ApiError::validation(format!(
            "Unable to infer object type from: {object_type}"
        ))),
    }
}

async fn list(
    State(fake): State<Arc<HubSpotFake>>,
    Path(object_type): Path<String>,
) -> Result<Json<Value>, ApiError> {
    deals_only(&object_type)?;
    let store = fake.store();
    Ok(Json(
        json!({"results": store.pipelines.iter().map(Pipeline::to_json).collect::<Vec<_>>()}),
    ))
}

async fn one(
    State(fake): State<Arc<HubSpotFake>>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    deals_only(&object_type)?;
    let store = fake.store();
    store
        .pipelines
        .iter()
        .find(|p| p.id == pipeline_id)
        .map(|p| Json(p.to_json()))
        .ok_or_else(|| ApiError::not_found(format!("Unable to find pipeline {pipeline_id}")))
}

async fn stages(
    State(fake): State<Arc<HubSpotFake>>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let Json(p) = one(State(fake), Path((object_type, pipeline_id))).await?;
    Ok(Json(json!({"results": p["stages"]})))
}

/// Reads one stage of a create body; deal stages need `metadata.probability`.
fn stage_from(v: &Value, i: usize, id: String) -> Result<Stage, ApiError> {
    let label = v["label"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::validation(format!("stages[{i}].label is required")))?;
    let probability = match &v["metadata"]["probability"] {
        Value::String(s) if s.parse::<f64>().is_ok() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(ApiError::validation(format!(
                "stages[{i}].metadata.probability is required for deal stages (a number from 0.0 to 1.0)"
            )));
        }
    };
    Ok(Stage {
        id,
        label: label.to_owned(),
        display_order: v["displayOrder"].as_i64().unwrap_or(i as i64),
        is_closed: matches!(v["metadata"]["isClosed"].as_str(), Some("true"))
            || v["metadata"]["isClosed"].as_bool() == Some(true),
        probability,
    })
}

async fn create(
    State(fake): State<Arc<HubSpotFake>>,
    Path(object_type): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    deals_only(&object_type)?;
    let body = parse_json(&body)?;
    let label = body["label"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::validation("label is required"))?
        .to_owned();
    let raw_stages = body["stages"]
        .as_array()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::validation("stages is required: a pipeline needs at least one stage")
        })?
        .clone();
    let now = iso_ms(fake.now_ms());
    let mut store = fake.store();
    if store.pipelines.iter().any(|p| p.label == label) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            format!("A pipeline with label {label} already exists"),
        ));
    }
    let id = store.next_pipeline_id.to_string();
    store.next_pipeline_id += 1;
    let mut stages = Vec::new();
    for (i, s) in raw_stages.iter().enumerate() {
        let sid = store.next_pipeline_id.to_string();
        store.next_pipeline_id += 1;
        stages.push(stage_from(s, i, sid)?);
    }
    let p = Pipeline {
        id,
        label,
        display_order: body["displayOrder"].as_i64().unwrap_or(0),
        stages,
        created_at: now,
    };
    let out = p.to_json();
    store.pipelines.push(p);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

async fn create_stage(
    State(fake): State<Arc<HubSpotFake>>,
    Path((object_type, pipeline_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    deals_only(&object_type)?;
    let body = parse_json(&body)?;
    let mut store = fake.store();
    let sid = store.next_pipeline_id.to_string();
    let Some(idx) = store.pipelines.iter().position(|p| p.id == pipeline_id) else {
        return Err(ApiError::not_found(format!(
            "Unable to find pipeline {pipeline_id}"
        )));
    };
    let n = store.pipelines[idx].stages.len();
    let stage = stage_from(&body, n, sid)?;
    store.next_pipeline_id += 1;
    let at = store.pipelines[idx].created_at.clone();
    let out = stage.to_json(&at);
    store.pipelines[idx].stages.push(stage);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}
