//! The v1 `new_install_note` event, read tolerantly. No sample of it is known (docs/enerflo-api.md
//! 3.5), so every part is looked up through candidate paths from configuration
//! (`ENERFLO_NOTE_*_PATHS`, `ENERFLO_INSTALL_ID_PATHS`), first at the root and then inside a `note`
//! object, and a value of the wrong shape is skipped rather than taken.

use serde_json::Value;

use super::lenient::{path, value_to_string, value_to_u64};
use crate::config::EnerfloFields;
use crate::hashing::sha256_hex;
use crate::timefmt::parse_enerflo_time;

/// What a `new_install_note` event says, as far as it could be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallNote {
    pub install_id: Option<u64>,
    /// Enerflo's note id, as text (numeric in v1, but nothing guarantees it).
    pub note_id: Option<String>,
    /// Trimmed; `None` when absent or blank.
    pub text: Option<String>,
    pub author: Option<String>,
    /// RFC 3339 when it parses as an Enerflo timestamp, else as sent.
    pub created_at: Option<String>,
}

impl InstallNote {
    pub fn read(record: &Value, fields: &EnerfloFields, install_id_paths: &[String]) -> Self {
        Self {
            install_id: install_id(record, install_id_paths),
            note_id: candidates(&fields.note_id_paths)
                .find_map(|p| path(record, &p).and_then(scalar_text)),
            text: candidates(&fields.note_text_paths)
                .find_map(|p| path(record, &p).and_then(text_only)),
            author: candidates(&fields.note_author_paths)
                .find_map(|p| path(record, &p).and_then(author_text)),
            created_at: candidates(&fields.note_created_paths).find_map(|p| {
                path(record, &p)
                    .and_then(text_only)
                    .map(|t| parse_enerflo_time(&t).unwrap_or(t))
            }),
        }
    }
}

/// The configured paths, then each of them inside a `note` object (`text` -> `note.text`), so a
/// payload that nests the note record is read with the same configuration.
/// The install a note event belongs to: the first of `install_id_paths` (also under `note.`)
/// holding a number. The FIFO group and the note stage both read it here.
pub fn install_id(record: &Value, install_id_paths: &[String]) -> Option<u64> {
    candidates(install_id_paths).find_map(|p| path(record, &p).and_then(value_to_u64))
}

fn candidates(paths: &[String]) -> impl Iterator<Item = String> + '_ {
    let nested = paths
        .iter()
        .filter(|p| !p.starts_with("note."))
        .map(|p| format!("note.{p}"));
    paths.iter().cloned().chain(nested)
}

fn text_only(v: &Value) -> Option<String> {
    match v {
        Value::String(_) => value_to_string(v),
        _ => None,
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(_) | Value::Number(_) => value_to_string(v),
        _ => None,
    }
}

/// A name, or a user object's name, or an id when that is all there is.
fn author_text(v: &Value) -> Option<String> {
    match v {
        Value::Object(user) => {
            let field = |k: &str| user.get(k).and_then(text_only);
            field("full_name").or_else(|| field("name")).or_else(|| {
                let parts: Vec<String> = ["first_name", "last_name"]
                    .iter()
                    .filter_map(|k| field(k))
                    .collect();
                (!parts.is_empty()).then(|| parts.join(" "))
            })
        }
        other => scalar_text(other),
    }
}

/// Note text as compared for echoes: trimmed, whitespace runs collapsed to one space (the shared
/// convention for `note:install:<id>` fingerprints).
pub fn normalise_note_text(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The content fingerprint of a note's text: sha256 of the normalised text.
pub fn note_text_hash(text: &str) -> String {
    sha256_hex(normalise_note_text(text).as_bytes())
}

/// The echo fingerprint target of notes on an install, without the `enerflo:` / `crm:` prefix.
pub fn note_target(install_id: u64) -> String {
    format!("note:install:{install_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::DEFAULT_INSTALL_ID_PATHS;
    use serde_json::json;

    fn read(v: Value) -> InstallNote {
        let paths: Vec<String> = DEFAULT_INSTALL_ID_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect();
        InstallNote::read(&v, &EnerfloFields::default(), &paths)
    }

    #[test]
    fn the_sandbox_shape_reads_with_a_nested_note_object() {
        let n = read(json!({
            "webhook_event": "new_install_note",
            "install_id": 700001,
            "note": {"id": 55, "note": "  Permit submitted ", "user": {"full_name": "Sam Installer"},
                     "created_at": "2025-03-01 10:00:00"}
        }));
        assert_eq!(
            n,
            InstallNote {
                install_id: Some(700001),
                note_id: Some("55".into()),
                text: Some("Permit submitted".into()),
                author: Some("Sam Installer".into()),
                created_at: Some("2025-03-01T10:00:00Z".into()),
            }
        );
    }

    #[test]
    fn a_flat_note_record_reads_too() {
        let n = read(json!({
            "webhook_event": "new_install_note", "id": "77", "epc_install_id": "700002",
            "content": "Inspection passed", "author_id": 5001, "created_at": "2025-03-01T10:00:00Z"
        }));
        assert_eq!(n.install_id, Some(700002));
        assert_eq!(n.note_id.as_deref(), Some("77"));
        assert_eq!(n.text.as_deref(), Some("Inspection passed"));
        assert_eq!(n.author.as_deref(), Some("5001"));
    }

    #[test]
    fn install_id_inside_the_note_object_is_found() {
        let n = read(json!({"note": {"install_id": 9, "body": "x", "id": 1}}));
        assert_eq!((n.install_id, n.text.as_deref()), (Some(9), Some("x")));
    }

    #[test]
    fn wrong_shapes_and_blanks_read_as_missing() {
        let n =
            read(json!({"install_id": "abc", "note": {"note": "   ", "id": {}}, "body": ["x"]}));
        assert_eq!(n, InstallNote::default());
    }

    #[test]
    fn the_fingerprint_ignores_surrounding_and_repeated_whitespace() {
        assert_eq!(
            note_text_hash(" Call  the\n customer "),
            note_text_hash("Call the customer")
        );
        assert_ne!(
            note_text_hash("Call the customer"),
            note_text_hash("Call a customer")
        );
    }
}
