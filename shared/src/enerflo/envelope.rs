//! Webhook envelopes: v1 is a flat record with `webhook_event` at the root; v2 is
//! `{"event": ..., "payload": {...}}`. Neither carries a delivery id or timestamp.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    V1,
    V2,
}

/// A parsed webhook: its event name and the record the event is about. The raw body is kept by
/// the caller; this only borrows what classification needs.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub generation: Generation,
    pub event: String,
    /// v1: the whole body; v2: `payload`.
    pub record: Value,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body is JSON but not an object")]
    NotAnObject,
    #[error(
        "unrecognisable envelope: expected `webhook_event` (Enerflo 1.0) or `event` with an object `payload` (Enerflo 2.0), or an `event` query parameter"
    )]
    Unrecognised,
}

impl Envelope {
    /// Parses a webhook body. `event_hint` is the `?event=` query parameter, for v1 subscriptions
    /// whose body does not carry `webhook_event` (the documented `update_install` example does not).
    pub fn parse(body: &[u8], event_hint: Option<&str>) -> Result<Self, EnvelopeError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EnvelopeError::Json(e.to_string()))?;
        Self::from_value(value, event_hint)
    }

    pub fn from_value(value: Value, event_hint: Option<&str>) -> Result<Self, EnvelopeError> {
        let Value::Object(mut map) = value else {
            return Err(EnvelopeError::NotAnObject);
        };
        let name = |map: &serde_json::Map<String, Value>, key: &str| {
            map.get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        if let Some(event) = name(&map, "event")
            && map.get("payload").is_some_and(Value::is_object)
        {
            let record = map.remove("payload").unwrap_or(Value::Null);
            return Ok(Self {
                generation: Generation::V2,
                event,
                record,
            });
        }
        if let Some(event) = name(&map, "webhook_event") {
            return Ok(Self {
                generation: Generation::V1,
                event,
                record: Value::Object(map),
            });
        }
        let hint = event_hint
            .map(str::trim)
            .filter(|h| !h.is_empty() && h.len() <= 100);
        if let Some(event) = hint {
            let generation = if event.contains('.') {
                Generation::V2
            } else {
                Generation::V1
            };
            let record = match (generation, map.remove("payload")) {
                (Generation::V2, Some(p @ Value::Object(_))) => p,
                (_, Some(p)) => {
                    map.insert("payload".into(), p);
                    Value::Object(map)
                }
                (_, None) => Value::Object(map),
            };
            return Ok(Self {
                generation,
                event: event.to_owned(),
                record,
            });
        }
        Err(EnvelopeError::Unrecognised)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_envelope_yields_event_and_payload() {
        let env = Envelope::parse(
            br#"{"payload":{"deal":{"id":"d1"}},"event":"deal.projectSubmitted"}"#,
            None,
        )
        .expect("parses");
        assert_eq!(env.generation, Generation::V2);
        assert_eq!(env.event, "deal.projectSubmitted");
        assert_eq!(env.record["deal"]["id"], "d1");
    }

    #[test]
    fn v1_envelope_is_the_flat_record() {
        let env =
            Envelope::parse(br#"{"webhook_event":"update_install","id":7}"#, None).expect("parses");
        assert_eq!(env.generation, Generation::V1);
        assert_eq!(env.event, "update_install");
        assert_eq!(env.record["id"], 7);
    }

    #[test]
    fn query_hint_names_a_body_without_event_field() {
        let env =
            Envelope::parse(br#"{"id":7,"status_id":4}"#, Some("update_install")).expect("parses");
        assert_eq!(
            (env.generation, env.event.as_str()),
            (Generation::V1, "update_install")
        );
    }

    #[test]
    fn malformed_and_unrecognisable_bodies_are_errors() {
        assert!(matches!(
            Envelope::parse(b"{nope", None),
            Err(EnvelopeError::Json(_))
        ));
        assert_eq!(
            Envelope::parse(b"[1]", None).err(),
            Some(EnvelopeError::NotAnObject)
        );
        assert_eq!(
            Envelope::parse(br#"{"id":1}"#, None).err(),
            Some(EnvelopeError::Unrecognised)
        );
        assert_eq!(
            Envelope::parse(br#"{"event":"x","payload":"str"}"#, None).err(),
            Some(EnvelopeError::Unrecognised)
        );
    }
}
