//! Stage 5 REST call: `POST /api/v3/installs/{id}/notes` (docs/enerflo-api.md 2.5). Its body and
//! answer are undocumented, so the body's field names come from configuration
//! ([`EnerfloFields::note_field`], [`EnerfloFields::note_author_field`]) and the answer is read
//! tolerantly.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Map, Value};

use super::client::{EnerfloApi, EnerfloError};
use super::lenient::{path, value_to_string};
use crate::config::EnerfloFields;

/// Where the created note's id may be in the answer, in order.
const NOTE_ID_IN_ANSWER: &[&str] = &["id", "note.id", "data.id", "data.note.id", "result.id"];

/// The body of `POST /api/v3/installs/{id}/notes`: the text exactly as given under
/// `ENERFLO_NOTE_FIELD`, the author under `ENERFLO_NOTE_AUTHOR_FIELD` when that is configured.
/// The one place these field names are used.
pub fn note_body(fields: &EnerfloFields, text: &str, author: Option<&str>) -> Value {
    let mut body = Map::new();
    body.insert(fields.note_field.clone(), Value::String(text.to_owned()));
    if let Some(author) = author.map(str::trim).filter(|a| !a.is_empty())
        && !fields.note_author_field.is_empty()
    {
        body.insert(
            fields.note_author_field.clone(),
            Value::String(author.to_owned()),
        );
    }
    Value::Object(body)
}

/// The new note's id from Enerflo's answer (`id`, `note.id`, `data.id`, ...), as text.
pub fn note_id_from_answer(answer: &Value) -> Option<String> {
    NOTE_ID_IN_ANSWER
        .iter()
        .find_map(|p| path(answer, p).and_then(value_to_string))
}

impl dyn EnerfloApi {
    /// `POST /api/v3/installs/{id}/notes`; returns Enerflo's answer body.
    pub async fn add_install_note(
        &self,
        install_id: u64,
        body: &Value,
        budget: Duration,
    ) -> Result<Value, EnerfloError> {
        self.send(
            Method::POST,
            &format!("/api/v3/installs/{install_id}/notes"),
            Some(body),
            budget,
        )
        .await
        .map(|r| r.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_uses_the_configured_field_names_and_keeps_the_text_as_given() {
        let mut fields = EnerfloFields::default();
        assert_eq!(
            note_body(&fields, "  Panels  delivered ", Some("Sam")),
            json!({"note": "  Panels  delivered "}),
            "no author field configured: no author sent"
        );
        fields.note_field = "content".into();
        fields.note_author_field = "author_name".into();
        assert_eq!(
            note_body(&fields, "x", Some(" Sam ")),
            json!({"content": "x", "author_name": "Sam"})
        );
        assert_eq!(note_body(&fields, "x", Some(" ")), json!({"content": "x"}));
    }

    #[test]
    fn the_note_id_is_read_from_any_known_answer_shape() {
        assert_eq!(
            note_id_from_answer(&json!({"id": 42})).as_deref(),
            Some("42")
        );
        assert_eq!(
            note_id_from_answer(&json!({"note": {"id": "n-7"}})).as_deref(),
            Some("n-7")
        );
        assert_eq!(
            note_id_from_answer(&json!({"data": {"id": 9, "note": "x"}})).as_deref(),
            Some("9")
        );
        assert_eq!(note_id_from_answer(&json!({"success": true})), None);
        assert_eq!(note_id_from_answer(&Value::Null), None);
    }
}
