//! The records and every write rule: [`Db::create`], [`Db::update`], [`Db::upsert`] and
//! [`Db::delete`] check a body against the schema the way Salesforce does and answer its error
//! codes (`docs/crm-connectors.md` sections 3.3-3.8):
//!
//! * an unknown field: `INVALID_FIELD` ("No such column ..."), alone;
//! * a value of the wrong JSON type or a bad date: `JSON_PARSER_ERROR`, alone;
//! * a field that is not createable / updateable: `INVALID_FIELD_FOR_INSERT_UPDATE`;
//! * `STRING_TOO_LONG`, `INVALID_EMAIL_ADDRESS`, `NUMBER_OUTSIDE_VALID_RANGE`,
//!   `INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`, `MALFORMED_ID`, `FIELD_INTEGRITY_EXCEPTION` (an id
//!   of the wrong object), `INVALID_CROSS_REFERENCE_KEY` (no such record), one error per field;
//! * `REQUIRED_FIELD_MISSING` naming every missing field;
//! * the org's validation rules: `FIELD_CUSTOM_VALIDATION_EXCEPTION` with the rule's message;
//! * `DUPLICATE_VALUE` for a unique field (case-insensitive unless case-sensitive);
//! * the org's duplicate rules: `DUPLICATES_DETECTED` (an alert rule lets
//!   `Sforce-Duplicate-Rule-Header: allowSave=true` through).
//!
//! Relationships may be given by the target's external id (`"Account": {"Ext__c": "x"}`).
//! A ContentNote is also its ContentDocument (same id); its `Content` is base64 and is served back
//! as a blob URL, as Salesforce does. Deleted records stay (`IsDeleted`), answer
//! `ENTITY_IS_DELETED`, and no longer count for uniqueness or matching.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::errors::SfError;
use super::ids;
use super::schema::{FieldDef, FieldType, ObjectDef};

/// One record. `fields` holds set values under their API names (unset fields are absent).
#[derive(Clone, Debug)]
pub struct Record {
    pub object: String,
    pub id: String,
    pub fields: BTreeMap<String, Value>,
    pub deleted: bool,
    /// A ContentNote's decoded `Content`.
    pub blob: Option<Vec<u8>>,
}

/// An org duplicate rule on one field of Lead/Contact/Account (matched case-insensitively).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateRule {
    pub object: String,
    pub field: String,
    /// `true`: block; `false`: alert, which `Sforce-Duplicate-Rule-Header: allowSave=true` passes.
    pub block: bool,
}

/// When a validation rule's error fires, on the record as it would be saved.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Always,
    /// The field is null or empty.
    Blank(String),
    /// The field has this value (text compared case-insensitively).
    Equals(String, Value),
    /// Every condition holds.
    All(Vec<Condition>),
}

/// An org validation rule: `FIELD_CUSTOM_VALIDATION_EXCEPTION` with `message` when `when` holds.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidationRule {
    pub object: String,
    pub when: Condition,
    pub message: String,
    /// The field the error is shown at (`fields` of the error); `None`: at the top of the page.
    pub error_field: Option<String>,
}

impl ValidationRule {
    pub fn new(object: &str, when: Condition, message: &str) -> Self {
        Self {
            object: object.to_owned(),
            when,
            message: message.to_owned(),
            error_field: None,
        }
    }

    pub fn at(mut self, field: &str) -> Self {
        self.error_field = Some(field.to_owned());
        self
    }
}

/// Who writes and when.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub now_ms: i64,
    pub user_id: String,
    /// `Sforce-Duplicate-Rule-Header: allowSave=true` was sent.
    pub allow_save: bool,
}

/// What an upsert did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upserted {
    Created(String),
    Updated(String),
    /// The value matched several records (a non-unique external id): nothing written.
    Multiple(Vec<String>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Update,
}

#[derive(Clone, Debug)]
pub struct Db {
    pub objects: Vec<ObjectDef>,
    pub records: BTreeMap<(String, String), Record>,
    /// The next record number per key prefix (never reset: ids are never reused).
    pub counters: BTreeMap<String, u64>,
    pub duplicate_rules: Vec<DuplicateRule>,
    pub validation_rules: Vec<ValidationRule>,
}

type Errs = Vec<SfError>;

/// A record's values after a write, and a ContentNote's decoded content.
type Prepared = (BTreeMap<String, Value>, Option<Vec<u8>>);

fn wrong_type(f: &FieldDef, v: &Value) -> SfError {
    let token = match v {
        Value::String(_) => "VALUE_STRING",
        Value::Number(_) => "VALUE_NUMBER",
        Value::Bool(true) => "VALUE_TRUE",
        Value::Bool(false) => "VALUE_FALSE",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
        Value::Null => "VALUE_NULL",
    };
    let shown = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    SfError::on(
        "JSON_PARSER_ERROR",
        format!(
            "Cannot deserialize instance of {} from {token} value {shown} or request may be missing a required field",
            f.ftype.name()
        ),
        &[&f.name],
    )
}

/// Salesforce's datetime form: `2026-11-28T10:00:00.000+0000`.
pub fn sf_datetime(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let fmt = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000"
    );
    t.format(&fmt).unwrap_or_default()
}

fn parse_datetime(s: &str) -> Option<i64> {
    // `+0000` / `-0500` offsets as Salesforce writes them, besides RFC 3339.
    let fixed = match s
        .len()
        .checked_sub(5)
        .and_then(|i| s.get(i..).map(|t| (i, t)))
    {
        Some((i, tail))
            if (tail.starts_with('+') || tail.starts_with('-'))
                && tail[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{}{}:{}", &s[..i], &tail[..3], &tail[3..])
        }
        _ => s.to_owned(),
    };
    let t = OffsetDateTime::parse(&fixed, &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn valid_date(s: &str) -> bool {
    s.len() == 10 && time::Date::parse(s, format_description!("[year]-[month]-[day]")).is_ok()
}

fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !s.chars().any(|c| c.is_whitespace() || c == ',' || c == ';')
}

/// Text equality for matching: case-insensitive unless the field is case-sensitive.
fn same(f: &FieldDef, a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) if !f.case_sensitive => {
            x.to_lowercase() == y.to_lowercase()
        }
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn blank(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// A ContentNote body must be text with `&` and `<` escaped unless they start an entity or a
/// tag (Salesforce refuses unescaped special characters; `docs/crm-connectors.md` section 3.6).
fn note_problem(text: &str) -> Option<&'static str> {
    let b = text.as_bytes();
    for (i, c) in b.iter().enumerate() {
        match c {
            b'&' => {
                let rest = &text[i + 1..];
                let end = rest.find(';').filter(|e| *e <= 10);
                let ok = end.is_some_and(|e| {
                    let ent = &rest[..e];
                    !ent.is_empty()
                        && (ent.bytes().all(|x| x.is_ascii_alphanumeric())
                            || ent
                                .strip_prefix('#')
                                .is_some_and(|n| n.bytes().all(|x| x.is_ascii_alphanumeric())))
                });
                if !ok {
                    return Some("an unescaped &");
                }
            }
            b'<' => {
                let next = b.get(i + 1).copied().unwrap_or(b' ');
                if !(next.is_ascii_alphabetic() || next == b'/' || next == b'!') {
                    return Some("an unescaped <");
                }
            }
            _ => {}
        }
    }
    None
}

/// Removes `<script>`/`<style>` elements (Salesforce strips unsafe HTML from notes).
fn strip_unsafe(text: &str) -> String {
    let mut out = text.to_owned();
    for tag in ["script", "style"] {
        loop {
            let lower = out.to_ascii_lowercase();
            let Some(start) = lower.find(&format!("<{tag}")) else {
                break;
            };
            let close = format!("</{tag}>");
            let end = lower[start..]
                .find(&close)
                .map_or(out.len(), |e| start + e + close.len());
            out.replace_range(start..end, "");
        }
    }
    out
}

/// Plain text of a note body (tags dropped, the common entities decoded), for `TextPreview`.
pub fn note_text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

impl Db {
    pub fn new(
        objects: Vec<ObjectDef>,
        duplicate_rules: Vec<DuplicateRule>,
        validation_rules: Vec<ValidationRule>,
        counters: BTreeMap<String, u64>,
    ) -> Self {
        Self {
            objects,
            records: BTreeMap::new(),
            counters,
            duplicate_rules,
            validation_rules,
        }
    }

    /// The object of this name, case-insensitively.
    pub fn object(&self, name: &str) -> Option<&ObjectDef> {
        self.objects
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
    }

    pub fn object_mut(&mut self, name: &str) -> Option<&mut ObjectDef> {
        self.objects
            .iter_mut()
            .find(|o| o.name.eq_ignore_ascii_case(name))
    }

    fn next_id(&mut self, prefix: &str) -> String {
        let n = self.counters.entry(prefix.to_owned()).or_insert(0);
        *n += 1;
        ids::make(prefix, *n)
    }

    /// The record `(object, id)`, deleted or not; `id` in any accepted form.
    pub fn get(&self, object: &str, id: &str) -> Option<&Record> {
        let id = ids::normalise(id)?;
        self.records.get(&(object.to_owned(), id))
    }

    /// Live records of `object` whose `field` equals `value` (text case-insensitively unless the
    /// field is case-sensitive).
    pub fn find(&self, object: &str, field: &FieldDef, value: &Value) -> Vec<String> {
        self.records
            .values()
            .filter(|r| r.object == object && !r.deleted)
            .filter(|r| {
                r.fields
                    .get(&field.name)
                    .is_some_and(|v| same(field, v, value))
            })
            .map(|r| r.id.clone())
            .collect()
    }

    /// Converts one value for `f`: `Err` a parse error (the whole write fails with it);
    /// validation errors go to `errs`. `Ok(None)` means null.
    fn convert(&self, f: &FieldDef, v: &Value, errs: &mut Errs) -> Result<Option<Value>, SfError> {
        if v.is_null() {
            return Ok(None);
        }
        let text = || -> Result<String, SfError> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => Err(wrong_type(f, v)),
            }
        };
        match f.ftype {
            FieldType::String
            | FieldType::TextArea
            | FieldType::Phone
            | FieldType::Url
            | FieldType::Email
            | FieldType::Picklist => {
                let s = text()?;
                if s.is_empty() {
                    return Ok(None);
                }
                if f.length > 0 && s.chars().count() > f.length as usize {
                    errs.push(SfError::on(
                        "STRING_TOO_LONG",
                        format!(
                            "{}: data value too large: {} (max length={})",
                            f.label,
                            truncate(&s, 40),
                            f.length
                        ),
                        &[&f.name],
                    ));
                    return Ok(None);
                }
                if f.ftype == FieldType::Email && !valid_email(&s) {
                    errs.push(SfError::on(
                        "INVALID_EMAIL_ADDRESS",
                        format!("{}: invalid email address: {s}", f.label),
                        &[&f.name],
                    ));
                }
                if f.ftype == FieldType::Picklist
                    && f.restricted
                    && !f.picklist.iter().any(|p| p == &s)
                {
                    errs.push(SfError::on(
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        format!("{}: bad value for restricted picklist field: {s}", f.label),
                        &[&f.name],
                    ));
                }
                Ok(Some(Value::String(s)))
            }
            FieldType::Boolean => match v {
                Value::Bool(b) => Ok(Some(Value::Bool(*b))),
                Value::String(s)
                    if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") =>
                {
                    Ok(Some(Value::Bool(s.eq_ignore_ascii_case("true"))))
                }
                _ => Err(wrong_type(f, v)),
            },
            FieldType::Double | FieldType::Currency | FieldType::Percent => {
                let n = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                }
                .filter(|n| n.is_finite())
                .ok_or_else(|| wrong_type(f, v))?;
                let factor = 10f64.powi(f.scale as i32);
                let rounded = (n * factor).round() / factor;
                let limit = 10f64.powi(f.precision.saturating_sub(f.scale) as i32);
                if f.precision > 0 && rounded.abs() >= limit {
                    errs.push(SfError::on(
                        "NUMBER_OUTSIDE_VALID_RANGE",
                        format!(
                            "{}: value outside of valid range on numeric field: {n}",
                            f.label
                        ),
                        &[&f.name],
                    ));
                    return Ok(None);
                }
                Ok(serde_json::Number::from_f64(rounded).map(Value::Number))
            }
            FieldType::Date => {
                let s = text()?;
                if !valid_date(&s) {
                    return Err(wrong_type(f, v));
                }
                Ok(Some(Value::String(s)))
            }
            FieldType::DateTime => {
                let s = text()?;
                let ms = parse_datetime(&s).ok_or_else(|| wrong_type(f, v))?;
                Ok(Some(Value::String(sf_datetime(ms))))
            }
            FieldType::Base64 => {
                let s = text()?;
                let cleaned: String = s.chars().filter(|c| !c.is_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(cleaned.as_bytes())
                    .map_err(|_| wrong_type(f, v))?;
                Ok(Some(Value::String(cleaned)))
            }
            FieldType::Id | FieldType::Reference => {
                let s = text()?;
                if s.is_empty() {
                    return Ok(None);
                }
                let Some(id) = ids::normalise(&s) else {
                    errs.push(SfError::on(
                        "MALFORMED_ID",
                        format!("{}: id value of incorrect type: {s}", f.label),
                        &[&f.name],
                    ));
                    return Ok(None);
                };
                let targets: Vec<&ObjectDef> = if f.reference_to.iter().any(|t| t == "*") {
                    self.objects.iter().collect()
                } else {
                    f.reference_to
                        .iter()
                        .filter_map(|t| self.object(t))
                        .collect()
                };
                let of_type = targets.iter().any(|t| t.key_prefix == ids::prefix(&id));
                if !of_type {
                    errs.push(SfError::on(
                        "FIELD_INTEGRITY_EXCEPTION",
                        format!("{}: id value of incorrect type: {s}", f.label),
                        &[&f.name],
                    ));
                    return Ok(None);
                }
                let target = targets
                    .iter()
                    .filter(|t| t.key_prefix == ids::prefix(&id))
                    .find_map(|t| self.get(&t.name, &id));
                match target {
                    Some(r) if r.deleted => errs.push(SfError::on(
                        "ENTITY_IS_DELETED",
                        format!("{}: entity is deleted", f.label),
                        &[&f.name],
                    )),
                    Some(_) => {}
                    None => errs.push(SfError::on(
                        "INVALID_CROSS_REFERENCE_KEY",
                        format!("{}: invalid cross reference id", f.label),
                        &[&f.name],
                    )),
                }
                Ok(Some(Value::String(id)))
            }
        }
    }

    /// `"Account": {"Ext__c": "x"}`: the id of the target found by its external id.
    fn resolve_relationship(
        &self,
        f: &FieldDef,
        rel_key: &str,
        v: &Value,
        errs: &mut Errs,
    ) -> Result<Option<Value>, SfError> {
        let Value::Object(m) = v else {
            if v.is_null() {
                return Ok(None);
            }
            return Err(SfError::on(
                "JSON_PARSER_ERROR",
                format!(
                    "Cannot deserialize instance of {rel_key} from a {} value: a relationship takes an object naming the related record by an external id",
                    if v.is_string() {
                        "string"
                    } else {
                        "non-object"
                    }
                ),
                &[rel_key],
            ));
        };
        let target_type = m
            .get("attributes")
            .and_then(|a| a.get("type"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| f.reference_to.first().filter(|t| *t != "*").cloned());
        let Some(target) = target_type.as_deref().and_then(|t| self.object(t)) else {
            return Err(SfError::on(
                "INVALID_FIELD",
                format!("{rel_key}: the related object's type is needed (attributes.type)"),
                &[rel_key],
            ));
        };
        let keys: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| *k != "attributes").collect();
        let [(key, value)] = keys.as_slice() else {
            return Err(SfError::on(
                "INVALID_FIELD",
                format!(
                    "{rel_key}: a relationship names exactly one external id field of {}",
                    target.name
                ),
                &[rel_key],
            ));
        };
        let Some(kf) = target
            .field(key)
            .filter(|kf| kf.external_id || kf.ftype == FieldType::Id)
        else {
            return Err(SfError::on(
                "INVALID_FIELD",
                format!(
                    "Field name provided, {key} is not an External ID or indexed field for {}",
                    target.name
                ),
                &[rel_key],
            ));
        };
        let shown = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let found = if kf.ftype == FieldType::Id {
            ids::normalise(&shown)
                .and_then(|id| {
                    self.get(&target.name, &id)
                        .filter(|r| !r.deleted)
                        .map(|r| vec![r.id.clone()])
                })
                .unwrap_or_default()
        } else {
            self.find(&target.name, kf, value)
        };
        match found.as_slice() {
            [id] => Ok(Some(Value::String(id.clone()))),
            [] => {
                errs.push(SfError::on(
                    "INVALID_FIELD",
                    format!(
                        "Foreign key external ID: {shown} not found for field {} in entity {}",
                        kf.name, target.name
                    ),
                    &[&f.name],
                ));
                Ok(None)
            }
            _ => {
                errs.push(SfError::on(
                    "INVALID_FIELD",
                    format!("More than 1 record found for external id field: {} in entity {} for value {shown}", kf.name, target.name),
                    &[&f.name],
                ));
                Ok(None)
            }
        }
    }

    /// Checks `body` for `obj` and returns the record's values after the write.
    fn prepare(
        &self,
        obj: &ObjectDef,
        body: &Map<String, Value>,
        existing: Option<&Record>,
        mode: Mode,
        ctx: &Ctx,
    ) -> Result<Prepared, Errs> {
        let mut changes: BTreeMap<String, Option<Value>> = BTreeMap::new();
        let mut not_writable: Vec<String> = Vec::new();
        let mut errs = Errs::new();
        for (k, v) in body {
            if k == "attributes" {
                continue;
            }
            if k.eq_ignore_ascii_case("Id") {
                let same_id = existing.is_some_and(|r| {
                    v.as_str().and_then(ids::normalise).as_deref() == Some(r.id.as_str())
                });
                if !same_id {
                    not_writable.push("Id".into());
                }
                continue;
            }
            let (f, value) = match obj.field(k) {
                Some(f) => (f, self.convert(f, v, &mut errs).map_err(|e| vec![e])?),
                None => match obj.relationship(k) {
                    Some(f) => (
                        f,
                        self.resolve_relationship(f, k, v, &mut errs)
                            .map_err(|e| vec![e])?,
                    ),
                    None => {
                        return Err(vec![SfError::on(
                            "INVALID_FIELD",
                            format!("No such column '{k}' on sobject of type {}", obj.name),
                            &[k],
                        )]);
                    }
                },
            };
            let writable = match mode {
                Mode::Create => f.createable,
                Mode::Update => f.updateable,
            };
            if !writable {
                not_writable.push(f.name.clone());
                continue;
            }
            changes.insert(f.name.clone(), value);
        }
        if !not_writable.is_empty() {
            let list = not_writable.join(", ");
            let fields: Vec<&str> = not_writable.iter().map(String::as_str).collect();
            return Err(vec![SfError::on(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to create/update fields: {list}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."
                ),
                &fields,
            )]);
        }
        if !errs.is_empty() {
            return Err(errs);
        }

        let mut values = existing.map(|r| r.fields.clone()).unwrap_or_default();
        if mode == Mode::Create {
            for f in &obj.fields {
                if f.defaulted_on_create
                    && !changes.contains_key(&f.name)
                    && let Some(d) = &f.default_value
                {
                    values.insert(f.name.clone(), d.clone());
                }
            }
            if obj.field("OwnerId").is_some() && !changes.contains_key("OwnerId") {
                values.insert("OwnerId".into(), json!(ctx.user_id));
            }
        }
        let mut missing = Vec::new();
        for (k, v) in &changes {
            match v {
                Some(v) => {
                    values.insert(k.clone(), v.clone());
                }
                None => {
                    let boolean = obj.field(k).is_some_and(|f| f.ftype == FieldType::Boolean);
                    if boolean {
                        values.insert(k.clone(), Value::Bool(false));
                    } else {
                        values.remove(k);
                    }
                }
            }
        }
        for f in &obj.fields {
            // A defaulted field is filled when left out, not when sent as null.
            let sent_null = matches!(changes.get(&f.name), Some(None));
            let required = !f.nillable
                && (f.createable || f.updateable)
                && (mode == Mode::Update || !f.defaulted_on_create || sent_null);
            let checked = match mode {
                Mode::Create => f.createable,
                Mode::Update => changes.contains_key(&f.name),
            };
            if required && checked && blank(values.get(&f.name)) {
                missing.push(f.name.clone());
            }
        }
        if !missing.is_empty() {
            let fields: Vec<&str> = missing.iter().map(String::as_str).collect();
            return Err(vec![SfError::on(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
                &fields,
            )]);
        }

        // Derived values.
        derive(obj, &mut values);
        let mut blob = existing.and_then(|r| r.blob.clone());
        if obj.name == "ContentNote"
            && let Some(Some(Value::String(b64))) = changes.get("Content")
        {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .unwrap_or_default();
            let Ok(text) = String::from_utf8(raw) else {
                return Err(vec![SfError::on(
                    "FIELD_INTEGRITY_EXCEPTION",
                    "Note can't be saved because its content is not UTF-8 text.",
                    &["Content"],
                )]);
            };
            if let Some(problem) = note_problem(&text) {
                return Err(vec![SfError::on(
                    "FIELD_INTEGRITY_EXCEPTION",
                    format!(
                        "Note can't be saved because it contains HTML tags or unescaped characters that are not allowed in a Note ({problem})."
                    ),
                    &["Content"],
                )]);
            }
            let clean = strip_unsafe(&text);
            let preview = truncate(note_text(&clean).trim(), 255);
            values.insert("TextPreview".into(), json!(preview));
            values.insert("ContentSize".into(), json!(clean.len() as f64));
            values.remove("Content");
            blob = Some(clean.into_bytes());
        }
        values.remove("Content");

        let mut rule_errs = Errs::new();
        for rule in self
            .validation_rules
            .iter()
            .filter(|r| r.object.eq_ignore_ascii_case(&obj.name))
        {
            if holds(&rule.when, &values) {
                let fields: Vec<&str> = rule.error_field.as_deref().into_iter().collect();
                rule_errs.push(SfError::on(
                    "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                    rule.message.clone(),
                    &fields,
                ));
            }
        }
        if !rule_errs.is_empty() {
            return Err(rule_errs);
        }

        let self_id = existing.map(|r| r.id.as_str());
        for f in obj
            .fields
            .iter()
            .filter(|f| f.unique && f.ftype != FieldType::Id)
        {
            let Some(v) = values.get(&f.name).filter(|v| !v.is_null()) else {
                continue;
            };
            if let Some(other) = self
                .find(&obj.name, f, v)
                .into_iter()
                .find(|id| Some(id.as_str()) != self_id)
            {
                return Err(vec![SfError::on(
                    "DUPLICATE_VALUE",
                    format!(
                        "duplicate value found: {} duplicates value on record with id: {}",
                        f.name,
                        ids::short(&other)
                    ),
                    &[],
                )]);
            }
        }
        if obj.name == "ContentDocumentLink" && mode == Mode::Create {
            let doc = values.get("ContentDocumentId");
            let entity = values.get("LinkedEntityId");
            let dup = self.records.values().any(|r| {
                r.object == "ContentDocumentLink"
                    && !r.deleted
                    && r.fields.get("ContentDocumentId") == doc
                    && r.fields.get("LinkedEntityId") == entity
            });
            if dup {
                return Err(vec![SfError::on(
                    "DUPLICATE_VALUE",
                    format!(
                        "Document with ID: {} is already linked with the entity with ID: {}",
                        doc.and_then(Value::as_str).unwrap_or_default(),
                        entity.and_then(Value::as_str).unwrap_or_default()
                    ),
                    &[],
                )]);
            }
        }
        for rule in self
            .duplicate_rules
            .iter()
            .filter(|r| r.object.eq_ignore_ascii_case(&obj.name))
        {
            if rule.block || !ctx.allow_save {
                let Some(f) = obj.field(&rule.field) else {
                    continue;
                };
                let Some(v) = values.get(&f.name).filter(|v| !blank(Some(v))) else {
                    continue;
                };
                let dup = self
                    .find(&obj.name, f, v)
                    .into_iter()
                    .any(|id| Some(id.as_str()) != self_id);
                if dup {
                    return Err(vec![SfError::on(
                        "DUPLICATES_DETECTED",
                        "Use one of these records?",
                        &[],
                    )]);
                }
            }
        }
        Ok((values, blob))
    }

    fn stamp(values: &mut BTreeMap<String, Value>, ctx: &Ctx, create: bool) {
        let now = json!(sf_datetime(ctx.now_ms));
        if create {
            values.insert("CreatedDate".into(), now.clone());
            values.insert("CreatedById".into(), json!(ctx.user_id));
        }
        values.insert("LastModifiedDate".into(), now.clone());
        values.insert("LastModifiedById".into(), json!(ctx.user_id));
        values.insert("SystemModstamp".into(), now);
        values.insert("IsDeleted".into(), Value::Bool(false));
    }

    /// Creates a record of `object` from `body`; its 18-character id.
    pub fn create(
        &mut self,
        object: &str,
        body: &Map<String, Value>,
        ctx: &Ctx,
    ) -> Result<String, Errs> {
        let obj = self
            .object(object)
            .cloned()
            .ok_or_else(|| vec![SfError::not_found()])?;
        if !obj.createable {
            return Err(vec![SfError::on(
                "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
                format!("entity type {} does not support insert", obj.name),
                &[],
            )]);
        }
        let (mut values, blob) = self.prepare(&obj, body, None, Mode::Create, ctx)?;
        let id = self.next_id(&obj.key_prefix);
        values.insert("Id".into(), json!(id));
        Self::stamp(&mut values, ctx, true);
        if obj.name == "ContentNote" {
            let version = self.next_id("068");
            values.insert("FileType".into(), json!("SNOTE"));
            values.insert("LatestPublishedVersionId".into(), json!(version));
            values.entry("ContentSize".to_owned()).or_insert(json!(0.0));
            self.mirror_document(&id, &values);
        }
        self.records.insert(
            (obj.name.clone(), id.clone()),
            Record {
                object: obj.name.clone(),
                id: id.clone(),
                fields: values,
                deleted: false,
                blob,
            },
        );
        Ok(id)
    }

    /// The ContentDocument of a ContentNote: same id, title, type and size.
    fn mirror_document(&mut self, id: &str, note: &BTreeMap<String, Value>) {
        let mut doc: BTreeMap<String, Value> = BTreeMap::new();
        for k in [
            "Id",
            "Title",
            "FileType",
            "ContentSize",
            "LatestPublishedVersionId",
            "OwnerId",
            "CreatedDate",
            "CreatedById",
            "LastModifiedDate",
            "LastModifiedById",
            "SystemModstamp",
            "IsDeleted",
        ] {
            if let Some(v) = note.get(k) {
                doc.insert(k.to_owned(), v.clone());
            }
        }
        self.records.insert(
            ("ContentDocument".to_owned(), id.to_owned()),
            Record {
                object: "ContentDocument".into(),
                id: id.to_owned(),
                fields: doc,
                deleted: false,
                blob: None,
            },
        );
    }

    /// The live record, or `NOT_FOUND` / `ENTITY_IS_DELETED`.
    pub fn live(&self, object: &str, id: &str) -> Result<&Record, SfError> {
        match self.get(object, id) {
            Some(r) if r.deleted => Err(SfError::deleted()),
            Some(r) => Ok(r),
            None => Err(SfError::not_found()),
        }
    }

    pub fn update(
        &mut self,
        object: &str,
        id: &str,
        body: &Map<String, Value>,
        ctx: &Ctx,
    ) -> Result<(), Errs> {
        let obj = self
            .object(object)
            .cloned()
            .ok_or_else(|| vec![SfError::not_found()])?;
        let existing = self.live(&obj.name, id).map_err(|e| vec![e])?.clone();
        if !obj.updateable {
            return Err(vec![SfError::on(
                "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
                format!("entity type {} does not support update", obj.name),
                &[],
            )]);
        }
        let (mut values, blob) = self.prepare(&obj, body, Some(&existing), Mode::Update, ctx)?;
        Self::stamp(&mut values, ctx, false);
        if obj.name == "ContentNote" {
            self.mirror_document(&existing.id, &values);
        }
        self.records.insert(
            (obj.name.clone(), existing.id.clone()),
            Record {
                fields: values,
                blob,
                ..existing
            },
        );
        Ok(())
    }

    /// Upsert by external id (`docs/crm-connectors.md` section 3.4). `Err` for a field that is
    /// not an External ID of `object` is `NOT_FOUND` (the answer is a 404).
    pub fn upsert(
        &mut self,
        object: &str,
        field: &str,
        value: &str,
        body: &Map<String, Value>,
        update_only: bool,
        ctx: &Ctx,
    ) -> Result<Upserted, Errs> {
        let obj = self
            .object(object)
            .cloned()
            .ok_or_else(|| vec![SfError::not_found()])?;
        let Some(f) = obj.field(field).filter(|f| f.external_id).cloned() else {
            return Err(vec![SfError::not_found()]);
        };
        let mut scratch = Errs::new();
        let key = self
            .convert(&f, &Value::String(value.to_owned()), &mut scratch)
            .map_err(|e| vec![e])?;
        if let Some(e) = scratch.into_iter().next() {
            return Err(vec![e]);
        }
        let key = key.ok_or_else(|| vec![SfError::not_found()])?;
        if let Some((k, v)) = body.iter().find(|(k, _)| k.eq_ignore_ascii_case(&f.name)) {
            let mut s = Errs::new();
            let given = self.convert(&f, v, &mut s).ok().flatten();
            if given.as_ref().is_none_or(|g| !same(&f, g, &key)) {
                return Err(vec![SfError::on(
                    "INVALID_FIELD",
                    format!(
                        "The external ID field {k} in the body differs from the one in the URL ({value})"
                    ),
                    &[&f.name],
                )]);
            }
        }
        let matches = self.find(&obj.name, &f, &key);
        match matches.as_slice() {
            [] if update_only => Err(vec![SfError::new(
                "NOT_FOUND",
                format!("updateOnly: no {} has {} = {value}", obj.name, f.name),
            )]),
            [] => {
                let mut with_key = body.clone();
                with_key.retain(|k, _| !k.eq_ignore_ascii_case(&f.name));
                with_key.insert(f.name.clone(), key);
                self.create(&obj.name, &with_key, ctx)
                    .map(Upserted::Created)
            }
            [id] => {
                let id = id.clone();
                self.update(&obj.name, &id, body, ctx)?;
                Ok(Upserted::Updated(id))
            }
            _ => Ok(Upserted::Multiple(matches)),
        }
    }

    /// Deletes a record (it stays, flagged `IsDeleted`). Deleting a ContentNote or its
    /// ContentDocument deletes both and their links.
    pub fn delete(&mut self, object: &str, id: &str, ctx: &Ctx) -> Result<(), SfError> {
        let obj = self
            .object(object)
            .cloned()
            .ok_or_else(SfError::not_found)?;
        let rec = self.live(&obj.name, id)?.clone();
        if !obj.deletable {
            return Err(SfError::on(
                "INSUFFICIENT_ACCESS_OR_READONLY",
                "insufficient access rights on object id",
                &[],
            ));
        }
        let mut gone = vec![(obj.name.clone(), rec.id.clone())];
        if obj.name == "ContentNote" || obj.name == "ContentDocument" {
            gone.push(("ContentNote".into(), rec.id.clone()));
            gone.push(("ContentDocument".into(), rec.id.clone()));
            for r in self.records.values() {
                if r.object == "ContentDocumentLink"
                    && r.fields.get("ContentDocumentId").and_then(Value::as_str)
                        == Some(rec.id.as_str())
                {
                    gone.push((r.object.clone(), r.id.clone()));
                }
            }
        }
        for key in gone {
            if let Some(r) = self.records.get_mut(&key) {
                r.deleted = true;
                r.fields.insert("IsDeleted".into(), Value::Bool(true));
                r.fields
                    .insert("SystemModstamp".into(), json!(sf_datetime(ctx.now_ms)));
            }
        }
        Ok(())
    }

    /// A record as the API shows it: `attributes`, then every field of the schema (null when
    /// unset) or only `only` (names as the caller wrote them, matched case-insensitively; an
    /// unknown one is `INVALID_FIELD`).
    pub fn view(
        &self,
        r: &Record,
        version: &str,
        only: Option<&[String]>,
    ) -> Result<Value, SfError> {
        let obj = self.object(&r.object).ok_or_else(SfError::not_found)?;
        let url = format!("/services/data/v{version}/sobjects/{}/{}", obj.name, r.id);
        let mut out = Map::new();
        out.insert("attributes".into(), json!({"type": obj.name, "url": url}));
        let names: Vec<&FieldDef> = match only {
            None => obj.fields.iter().collect(),
            Some(list) => {
                let mut v = Vec::new();
                for n in list.iter().filter(|n| !n.trim().is_empty()) {
                    let f = obj.field(n.trim()).ok_or_else(|| {
                        SfError::on(
                            "INVALID_FIELD",
                            format!("No such column '{}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.", n.trim(), obj.name),
                            &[],
                        )
                    })?;
                    v.push(f);
                }
                v
            }
        };
        for f in names {
            let v = if f.ftype == FieldType::Base64 {
                match r.blob {
                    Some(_) => json!(format!("{url}/{}", f.name)),
                    None => Value::Null,
                }
            } else {
                r.fields.get(&f.name).cloned().unwrap_or(Value::Null)
            };
            out.insert(f.name.clone(), v);
        }
        Ok(Value::Object(out))
    }
}

/// Values Salesforce computes: `Name` of people, `IsClosed`/`IsWon` of opportunities.
fn derive(obj: &ObjectDef, values: &mut BTreeMap<String, Value>) {
    match obj.name.as_str() {
        "Contact" | "Lead" | "User" => {
            let first = values
                .get("FirstName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let last = values
                .get("LastName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let name = format!("{first} {last}").trim().to_owned();
            values.insert("Name".into(), json!(name));
        }
        "Opportunity" => {
            let stage = values
                .get("StageName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            values.insert("IsClosed".into(), json!(stage.starts_with("Closed")));
            values.insert("IsWon".into(), json!(stage == "Closed Won"));
        }
        _ => {}
    }
}

fn holds(c: &Condition, values: &BTreeMap<String, Value>) -> bool {
    let get = |name: &str| {
        values
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    match c {
        Condition::Always => true,
        Condition::Blank(f) => blank(get(f)),
        Condition::Equals(f, want) => match (get(f), want) {
            (Some(Value::String(a)), Value::String(b)) => a.eq_ignore_ascii_case(b),
            (Some(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Some(a), b) => a == b,
            (None, b) => b.is_null(),
        },
        Condition::All(list) => list.iter().all(|c| holds(c, values)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_bodies_need_escaped_specials() {
        assert_eq!(note_problem("<p>Tom &amp; Jerry</p>"), None);
        assert_eq!(note_problem("a &#39;b&#39;"), None);
        assert!(note_problem("Tom & Jerry").is_some());
        assert!(note_problem("1 < 2").is_some());
        assert_eq!(
            strip_unsafe("<p>x</p><script>alert(1)</script>"),
            "<p>x</p>"
        );
        assert_eq!(note_text("<p>Tom &amp; Jerry</p>"), "Tom & Jerry");
    }

    #[test]
    fn datetimes_read_both_offset_forms() {
        let a = parse_datetime("2026-11-28T10:00:00Z");
        assert_eq!(a, parse_datetime("2026-11-28T10:00:00.000+0000"));
        assert_eq!(a, parse_datetime("2026-11-28T05:00:00-05:00"));
        assert_eq!(
            sf_datetime(a.unwrap_or_default()),
            "2026-11-28T10:00:00.000+0000"
        );
    }
}
