//! Salesforce's REST error answers: a JSON **array** of `{"message", "errorCode", "fields"}`
//! (`docs/crm-connectors.md` section 3.8). sObject Collections name the code `statusCode` in their
//! per-record results instead (section 3.5.2); [`SfError::collection_json`] writes that form.

use serde_json::{Value, json};

/// One error of an answer's array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SfError {
    pub code: String,
    pub message: String,
    /// The fields it is about; `None` where Salesforce sends no `fields` key at all (session,
    /// limit and not-found errors).
    pub fields: Option<Vec<String>>,
}

impl SfError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            fields: None,
        }
    }

    /// With a `fields` list (possibly empty).
    pub fn on(code: &str, message: impl Into<String>, fields: &[&str]) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            fields: Some(fields.iter().map(|f| (*f).to_owned()).collect()),
        }
    }

    pub fn json(&self) -> Value {
        let mut v = json!({"message": self.message, "errorCode": self.code});
        if let (Some(fields), Some(obj)) = (&self.fields, v.as_object_mut()) {
            obj.insert("fields".into(), json!(fields));
        }
        v
    }

    /// The sObject Collections form: `statusCode` and an always-present `fields`.
    pub fn collection_json(&self) -> Value {
        json!({
            "statusCode": self.code,
            "message": self.message,
            "fields": self.fields.clone().unwrap_or_default(),
        })
    }

    pub fn not_found() -> Self {
        Self::new("NOT_FOUND", "The requested resource does not exist")
    }

    pub fn session() -> Self {
        Self::new("INVALID_SESSION_ID", "Session expired or invalid")
    }

    pub fn request_limit() -> Self {
        Self::new("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    }

    pub fn deleted() -> Self {
        Self::on("ENTITY_IS_DELETED", "entity is deleted", &[])
    }

    pub fn rolled_back() -> Self {
        Self::new(
            "PROCESSING_HALTED",
            "The transaction was rolled back since another operation in the same transaction failed.",
        )
    }

    pub fn unable_to_lock_row(id: &str) -> Self {
        Self::on(
            "UNABLE_TO_LOCK_ROW",
            format!("unable to obtain exclusive access to this record or 1 records: {id}"),
            &[],
        )
    }
}

/// The JSON array of an error answer.
pub fn array(errors: &[SfError]) -> Value {
    Value::Array(errors.iter().map(SfError::json).collect())
}
