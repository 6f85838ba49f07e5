//! HubSpot's error body (`status`, `message`, `correlationId`, `category`, optional `errors[]`,
//! `context`, `links`) and the per-property validation errors the store reports.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A random id in UUID form, like HubSpot's `correlationId`.
pub fn correlation_id() -> String {
    let h = |n: usize| -> String {
        (0..n)
            .map(|_| char::from_digit(fastrand::u32(..16), 16).unwrap_or('0'))
            .collect()
    };
    format!("{}-{}-{}-{}-{}", h(8), h(4), h(4), h(4), h(12))
}

/// One problem with one property value: `code` is HubSpot's error code
/// (`PROPERTY_DOESNT_EXIST`, `INVALID_OPTION`, ...), `name` the property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub name: String,
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(name: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            code,
            message: message.into(),
        }
    }
}

/// Why a write was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// 400 `VALIDATION_ERROR` with one `errors[]` item per property.
    Invalid(Vec<FieldError>),
    /// 409 `CONFLICT`: the contact e-mail belongs to contact `existing_id`.
    EmailTaken { existing_id: u64 },
    /// 404 `OBJECT_NOT_FOUND`.
    NotFound(String),
}

/// An error answer: a status and HubSpot's JSON body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, category: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({
                "status": "error",
                "message": message.into(),
                "correlationId": correlation_id(),
                "category": category,
            }),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", message)
    }

    pub fn from_write(e: &WriteError) -> Self {
        let body = error_object(e, None);
        let status = match e {
            WriteError::Invalid(_) => StatusCode::BAD_REQUEST,
            WriteError::EmailTaken { .. } => StatusCode::CONFLICT,
            WriteError::NotFound(_) => StatusCode::NOT_FOUND,
        };
        Self { status, body }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The message HubSpot gives for a 409 on a contact e-mail, which clients parse for the id.
pub fn email_taken_message(existing_id: u64) -> String {
    format!("Contact already exists. Existing ID: {existing_id}")
}

/// The JSON error object of `e`: the whole body of a single-record error, or one item of a batch
/// answer's `errors[]` (then `ids` is the input's id, reported in `context.ids`).
pub fn error_object(e: &WriteError, ids: Option<&str>) -> Value {
    let mut body = match e {
        WriteError::Invalid(errors) => {
            // HubSpot's message embeds a JSON list of the failures; each names its property.
            let listed: Vec<Value> = errors
                .iter()
                .map(|f| {
                    json!({"isValid": false, "message": f.message, "error": f.code, "name": f.name})
                })
                .collect();
            json!({
                "status": "error",
                "message": format!("Property values were not valid: {}", Value::Array(listed)),
                "correlationId": correlation_id(),
                "category": "VALIDATION_ERROR",
                "errors": errors.iter().map(|f| json!({
                    "message": f.message,
                    "code": f.code,
                    "in": f.name,
                    "context": {"propertyName": [f.name]},
                })).collect::<Vec<_>>(),
            })
        }
        WriteError::EmailTaken { existing_id } => json!({
            "status": "error",
            "message": email_taken_message(*existing_id),
            "correlationId": correlation_id(),
            "category": "CONFLICT",
            "context": {"existingId": [existing_id.to_string()]},
        }),
        WriteError::NotFound(message) => json!({
            "status": "error",
            "message": message,
            "correlationId": correlation_id(),
            "category": "OBJECT_NOT_FOUND",
        }),
    };
    if let Some(id) = ids
        && let Some(obj) = body.as_object_mut()
    {
        let ctx = obj.entry("context").or_insert_with(|| json!({}));
        if let Some(ctx) = ctx.as_object_mut() {
            ctx.insert("ids".into(), json!([id]));
        }
        obj.insert("links".into(), json!({}));
    }
    body
}

/// Reads a JSON request body; HubSpot answers bad JSON with a 400 `VALIDATION_ERROR`.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::validation(
            "Invalid input JSON: the request body is empty",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::validation(format!("Invalid input JSON on {e}")))
}
