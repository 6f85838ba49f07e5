//! Tolerant field readers. Enerflo's payloads drift in type (numbers as strings, zips as numbers,
//! `[]` where an object is documented); these deserializers never fail a whole event for one odd
//! field: a value of the wrong shape reads as `None` / empty.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{DeserializeOwned, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

// The readers below are visitors over the input itself: no intermediate `serde_json::Value` is
// built for a field, so a typed model parses in one pass straight from the body bytes (the 73 KB
// mapping budget of docs/design.md 6). A value of an unexpected shape is consumed and read as `None`.

/// What a scalar field arrived as.
enum Scalar {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Other,
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_none<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
    d.deserialize_any(ScalarVisitor)
}

fn number_text(f: f64) -> Option<String> {
    serde_json::Number::from_f64(f).map(|n| n.to_string())
}

fn integral(f: f64) -> Option<u64> {
    (f >= 0.0 && f.fract() == 0.0 && f < 9.0e15).then_some(f as u64)
}

/// Text from a string or a number; blank strings are `None`; anything else is `None`.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match scalar(d)? {
        Scalar::Str(s) => {
            let trimmed = s.trim();
            if trimmed.is_empty() {
                None
            } else if trimmed.len() == s.len() {
                Some(s)
            } else {
                Some(trimmed.to_owned())
            }
        }
        Scalar::I64(n) => Some(n.to_string()),
        Scalar::U64(n) => Some(n.to_string()),
        Scalar::F64(f) => number_text(f),
        Scalar::Bool(b) => Some(b.to_string()),
        Scalar::Other => None,
    })
}

/// A float from a number or a numeric string.
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match scalar(d)? {
        Scalar::I64(n) => Some(n as f64),
        Scalar::U64(n) => Some(n as f64),
        Scalar::F64(f) => Some(f),
        Scalar::Str(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        Scalar::Bool(_) | Scalar::Other => None,
    })
}

/// A non-negative integer from a number (integral) or a numeric string.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match scalar(d)? {
        Scalar::U64(n) => Some(n),
        Scalar::I64(n) => u64::try_from(n).ok(),
        Scalar::F64(f) => integral(f),
        Scalar::Str(s) => {
            let t = s.trim();
            t.parse::<u64>()
                .ok()
                .or_else(|| t.parse::<f64>().ok().and_then(integral))
        }
        Scalar::Bool(_) | Scalar::Other => None,
    })
}

/// A boolean from `true`/`false`, `0`/`1`, or `"true"`/`"false"`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match scalar(d)? {
        Scalar::Bool(b) => Some(b),
        Scalar::U64(n) => Some(n != 0),
        Scalar::I64(n) => Some(n != 0),
        Scalar::F64(f) => Some(f != 0.0),
        Scalar::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        Scalar::Other => None,
    })
}

/// Parses a JSON object as `T`; any other shape is consumed and read as `None`.
struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        // `T` is a model whose fields all read leniently, so this cannot fail on field shapes.
        T::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_none<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<T>, E> {
        Ok(None)
    }
}

/// An element of a lenient list: an object parses as `T`; a scalar parses as `T` when it can
/// (a list of numbers or of raw values); a nested list is skipped.
struct ElementVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ElementVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<T>, A::Error> {
        // A nested list only makes sense for raw values; for a model it is skipped. Reading it
        // through `Value` keeps the input consistent either way.
        let v = Value::deserialize(SeqAccessDeserializer::new(seq))?;
        Ok(T::deserialize(v).ok())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_none<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Option<T>, E> {
        Ok(T::deserialize(IntoDeserializer::<E>::into_deserializer(v)).ok())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Option<T>, E> {
        Ok(T::deserialize(IntoDeserializer::<E>::into_deserializer(v)).ok())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Option<T>, E> {
        Ok(T::deserialize(IntoDeserializer::<E>::into_deserializer(v)).ok())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Option<T>, E> {
        Ok(T::deserialize(IntoDeserializer::<E>::into_deserializer(v)).ok())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<T>, E> {
        Ok(T::deserialize(IntoDeserializer::<E>::into_deserializer(v)).ok())
    }
}

struct Element<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Element<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ElementVisitor(PhantomData)).map(Element)
    }
}

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Element(item)) = seq.next_element::<Element<T>>()? {
            out.extend(item);
        }
        Ok(out)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<T>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Vec::new())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_none<E>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }
    fn visit_unit<E>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }
    fn visit_str<E>(self, _: &str) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }
}

/// A list whose elements each parse leniently; a non-list (`null`, `{}`) reads as empty and an
/// element that does not parse is skipped rather than failing its siblings.
pub fn vec_of<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    d.deserialize_any(ListVisitor(PhantomData))
}

/// An object that parses leniently, or `None` when absent, `null`, `[]` or of another shape.
pub fn opt_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    d.deserialize_any(ObjectVisitor(PhantomData))
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
