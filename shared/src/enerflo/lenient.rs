//! Tolerant field readers. Enerflo's payloads drift in type (numbers as strings, zips as numbers,
//! `[]` where an object is documented); these deserializers never fail a whole event for one odd
//! field: a value of the wrong shape reads as `None` / empty.

use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::Value;

/// Text from a string or a number; blank strings are `None`; anything else is `None`.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(value_to_string(&Value::deserialize(d)?))
}

/// A float from a number or a numeric string.
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(value_to_f64(&Value::deserialize(d)?))
}

/// A non-negative integer from a number (integral) or a numeric string.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(value_to_u64(&Value::deserialize(d)?))
}

/// A boolean from `true`/`false`, `0`/`1`, or `"true"`/`"false"`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => Some(b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    })
}

/// A list whose elements each parse leniently; a non-list (`null`, `{}`) reads as empty and an
/// element that does not parse is skipped rather than failing its siblings.
pub fn vec_of<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// An object that parses leniently, or `None` when absent, `null`, `[]` or of another shape.
pub fn opt_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(match Value::deserialize(d)? {
        v @ Value::Object(_) => serde_json::from_value(v).ok(),
        _ => None,
    })
}

pub fn value_to_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let t = s.trim();
            (!t.is_empty()).then(|| t.to_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn value_to_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

pub fn value_to_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 9.0e15)
                .map(|f| f as u64)
        }),
        Value::String(s) => {
            let t = s.trim();
            t.parse::<u64>().ok().or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 9.0e15)
                    .map(|f| f as u64)
            })
        }
        _ => None,
    }
}

/// Walks a dotted path (`"a.b.0.c"`) through objects and arrays.
pub fn path<'a>(root: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(root, |cur, key| match cur {
            Value::Object(map) => map.get(key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
        .filter(|v| !v.is_null())
}

/// The first of several candidate paths that holds a non-null value. Used where Enerflo's field
/// names are unknown or vary between payload shapes; the candidates are configuration.
pub fn first_path<'a, S: AsRef<str>>(
    root: &'a Value,
    candidates: &[S],
) -> Option<(&'a Value, String)> {
    candidates
        .iter()
        .find_map(|c| path(root, c.as_ref()).map(|v| (v, c.as_ref().to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "opt_string")]
        s: Option<String>,
        #[serde(default, deserialize_with = "opt_f64")]
        f: Option<f64>,
        #[serde(default, deserialize_with = "opt_u64")]
        u: Option<u64>,
        #[serde(default, deserialize_with = "vec_of")]
        list: Vec<u64>,
    }

    #[test]
    fn drifted_types_read_as_values_not_errors() {
        let p: Probe = serde_json::from_value(
            json!({"s": 75001, "f": "41.81174380", "u": "20", "list": [1, "x", 3]}),
        )
        .expect("parses");
        assert_eq!(p.s.as_deref(), Some("75001"));
        assert_eq!(p.f, Some(41.8117438));
        assert_eq!(p.u, Some(20));
        assert_eq!(p.list, vec![1, 3]);
    }

    #[test]
    fn wrong_shapes_read_as_none_or_empty() {
        let p: Probe = serde_json::from_value(json!({"s": "  ", "f": {}, "u": -3, "list": {}}))
            .expect("parses");
        assert_eq!(p.s, None);
        assert_eq!(p.f, None);
        assert_eq!(p.u, None);
        assert!(p.list.is_empty());
    }

    #[test]
    fn path_walks_objects_and_arrays() {
        let v = json!({"a": {"b": [{"c": 1}, {"c": null}]}});
        assert_eq!(path(&v, "a.b.0.c"), Some(&json!(1)));
        assert_eq!(path(&v, "a.b.1.c"), None);
        let (found, at) = first_path(&v, &["x.y", "a.b.0.c"]).expect("found");
        assert_eq!((found, at.as_str()), (&json!(1), "a.b.0.c"));
    }
}
