//! The fake's records, its property registry and the uniqueness rules: every write goes through
//! [`Store::create`] / [`Store::update`], which check each value against its property definition
//! (string-only values, types, enumeration options, read-only properties), the deal pipeline rules
//! (`pipelines.rs`), the note rules (`notes.rs`), and uniqueness (every `hasUniqueValue` property,
//! plus the contact `email`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

use super::associations::Assoc;
use super::errors::{FieldError, WriteError};
use super::pipelines::{self, Pipeline};

/// The object types the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectType {
    Contact,
    Company,
    Deal,
    Note,
}

impl ObjectType {
    pub const ALL: [ObjectType; 4] = [Self::Contact, Self::Company, Self::Deal, Self::Note];

    /// Reads a path's object type: the plural name (`contacts`), the singular (`contact`) or the
    /// type id (`0-1`), as HubSpot accepts them.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "contacts" | "contact" | "0-1" => Some(Self::Contact),
            "companies" | "company" | "0-2" => Some(Self::Company),
            "deals" | "deal" | "0-3" => Some(Self::Deal),
            "notes" | "note" | "0-46" => Some(Self::Note),
            _ => None,
        }
    }

    /// The plural name used in paths.
    pub fn path(self) -> &'static str {
        match self {
            Self::Contact => "contacts",
            Self::Company => "companies",
            Self::Deal => "deals",
            Self::Note => "notes",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Self::Contact => "contact",
            Self::Company => "company",
            Self::Deal => "deal",
            Self::Note => "note",
        }
    }

    pub fn type_id(self) -> &'static str {
        match self {
            Self::Contact => "0-1",
            Self::Company => "0-2",
            Self::Deal => "0-3",
            Self::Note => "0-46",
        }
    }

    /// The property holding the creation time, and those holding the last modification time.
    fn system_times(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::Contact => ("createdate", &["lastmodifieddate"]),
            Self::Company | Self::Deal => ("createdate", &["hs_lastmodifieddate"]),
            Self::Note => ("hs_createdate", &["hs_lastmodifieddate"]),
        }
    }

    /// What a read without `properties=` returns (HubSpot's default property set per type).
    pub fn default_properties(self) -> &'static [&'static str] {
        match self {
            Self::Contact => &[
                "createdate",
                "email",
                "firstname",
                "hs_object_id",
                "lastmodifieddate",
                "lastname",
            ],
            Self::Company => &[
                "createdate",
                "domain",
                "hs_lastmodifieddate",
                "hs_object_id",
                "name",
            ],
            Self::Deal => &[
                "amount",
                "closedate",
                "createdate",
                "dealname",
                "dealstage",
                "hs_lastmodifieddate",
                "hs_object_id",
                "pipeline",
            ],
            Self::Note => &["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
        }
    }
}

impl std::fmt::Display for ObjectType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.path())
    }
}

/// One option of an enumeration property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropOption {
    pub label: String,
    pub value: String,
    pub display_order: i64,
    pub hidden: bool,
}

/// A property definition, as the properties API creates and returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyDef {
    pub name: String,
    pub label: String,
    /// `string`, `number`, `date`, `datetime`, `enumeration`, `bool`, `phone_number`.
    pub kind: String,
    /// `text`, `textarea`, `number`, `date`, `select`, `radio`, `checkbox`, `booleancheckbox`, ...
    pub field_type: String,
    pub group_name: String,
    pub description: String,
    pub options: Vec<PropOption>,
    pub display_order: i64,
    pub has_unique_value: bool,
    pub hidden: bool,
    pub form_field: bool,
    pub hubspot_defined: bool,
    /// Set by HubSpot only (ids, creation and modification times): writes are refused.
    pub read_only_value: bool,
    /// Options kept elsewhere (owners, pipelines, stages): values not checked against `options`.
    pub external_options: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl PropertyDef {
    fn base(name: &str, kind: &str, field_type: &str) -> Self {
        Self {
            name: name.to_owned(),
            label: name.to_owned(),
            kind: kind.to_owned(),
            field_type: field_type.to_owned(),
            group_name: String::new(),
            description: String::new(),
            options: Vec::new(),
            display_order: -1,
            has_unique_value: false,
            hidden: false,
            form_field: false,
            hubspot_defined: false,
            read_only_value: false,
            external_options: false,
            created_at: SEED_TIME.to_owned(),
            updated_at: SEED_TIME.to_owned(),
        }
    }

    /// A `string`/`text` property.
    pub fn text(name: &str) -> Self {
        Self::base(name, "string", "text")
    }

    pub fn textarea(name: &str) -> Self {
        Self::base(name, "string", "textarea")
    }

    pub fn number(name: &str) -> Self {
        Self::base(name, "number", "number")
    }

    pub fn date(name: &str) -> Self {
        Self::base(name, "date", "date")
    }

    pub fn datetime(name: &str) -> Self {
        Self::base(name, "datetime", "date")
    }

    pub fn boolean(name: &str) -> Self {
        let mut p = Self::base(name, "bool", "booleancheckbox");
        p.options = ["true", "false"]
            .iter()
            .enumerate()
            .map(|(i, v)| PropOption {
                label: v.to_string(),
                value: v.to_string(),
                display_order: i as i64,
                hidden: false,
            })
            .collect();
        p
    }

    /// An `enumeration`/`select` property with these option values (labels = values).
    pub fn enumeration(name: &str, values: &[&str]) -> Self {
        let mut p = Self::base(name, "enumeration", "select");
        p.options = values
            .iter()
            .enumerate()
            .map(|(i, v)| PropOption {
                label: v.to_string(),
                value: v.to_string(),
                display_order: i as i64,
                hidden: false,
            })
            .collect();
        p
    }

    /// Marks the property `hasUniqueValue`.
    pub fn unique(mut self) -> Self {
        self.has_unique_value = true;
        self
    }

    pub fn group(mut self, group: &str) -> Self {
        self.group_name = group.to_owned();
        self
    }

    pub fn label(mut self, label: &str) -> Self {
        self.label = label.to_owned();
        self
    }

    fn hubspot(mut self, group: &str) -> Self {
        self.hubspot_defined = true;
        self.group_name = group.to_owned();
        self
    }

    fn read_only(mut self) -> Self {
        self.read_only_value = true;
        self
    }

    fn external(mut self) -> Self {
        self.external_options = true;
        self
    }

    /// The definition as the properties API returns it.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "label": self.label,
            "type": self.kind,
            "fieldType": self.field_type,
            "description": self.description,
            "groupName": self.group_name,
            "options": self.options.iter().map(|o| json!({
                "label": o.label, "value": o.value, "displayOrder": o.display_order, "hidden": o.hidden,
            })).collect::<Vec<_>>(),
            "displayOrder": self.display_order,
            "calculated": false,
            "externalOptions": self.external_options,
            "hasUniqueValue": self.has_unique_value,
            "hidden": self.hidden,
            "hubspotDefined": self.hubspot_defined,
            "modificationMetadata": {
                "archivable": !self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only_value,
            },
            "formField": self.form_field,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "archived": false,
        })
    }
}

const SEED_TIME: &str = "2026-01-01T00:00:00.000Z";

/// HubSpot's standard properties the connector uses, per object type (a subset of a portal's).
pub fn standard_properties(t: ObjectType) -> Vec<PropertyDef> {
    use PropertyDef as P;
    let (created, modified) = t.system_times();
    let group = match t {
        ObjectType::Contact => "contactinformation",
        ObjectType::Company => "companyinformation",
        ObjectType::Deal => "dealinformation",
        ObjectType::Note => "engagement",
    };
    let mut props = vec![
        P::number("hs_object_id").hubspot(group).read_only(),
        P::datetime(created).hubspot(group).read_only(),
        P::enumeration("hubspot_owner_id", &[])
            .hubspot(group)
            .external(),
    ];
    for m in modified {
        props.push(P::datetime(m).hubspot(group).read_only());
    }
    match t {
        ObjectType::Contact => {
            for name in [
                "email",
                "firstname",
                "lastname",
                "phone",
                "mobilephone",
                "address",
                "city",
                "state",
                "zip",
                "country",
                "company",
                "jobtitle",
                "website",
            ] {
                props.push(P::text(name).hubspot(group));
            }
            props.push(
                P::enumeration(
                    "lifecyclestage",
                    &[
                        "subscriber",
                        "lead",
                        "marketingqualifiedlead",
                        "salesqualifiedlead",
                        "opportunity",
                        "customer",
                        "evangelist",
                        "other",
                    ],
                )
                .hubspot(group),
            );
        }
        ObjectType::Company => {
            for name in [
                "name", "domain", "phone", "address", "city", "state", "zip", "country",
            ] {
                props.push(P::text(name).hubspot(group));
            }
        }
        ObjectType::Deal => {
            props.push(P::text("dealname").hubspot(group));
            props.push(P::enumeration("dealstage", &[]).hubspot(group).external());
            props.push(P::enumeration("pipeline", &[]).hubspot(group).external());
            props.push(P::number("amount").hubspot(group));
            props.push(P::datetime("closedate").hubspot(group));
            props.push(P::textarea("description").hubspot(group));
            props.push(
                P::enumeration("dealtype", &["newbusiness", "existingbusiness"]).hubspot(group),
            );
        }
        ObjectType::Note => {
            let mut body = P::base("hs_note_body", "string", "html");
            body = body.hubspot(group);
            props.push(body);
            props.push(P::datetime("hs_timestamp").hubspot(group));
            props.push(P::text("hs_attachment_ids").hubspot(group));
        }
    }
    for p in &mut props {
        if p.label == p.name {
            p.label = p.name.replace('_', " ");
        }
    }
    props
}

/// The property groups a portal starts with (one per type, the one standard properties are in).
pub fn standard_groups(t: ObjectType) -> Vec<Value> {
    let (name, label) = match t {
        ObjectType::Contact => ("contactinformation", "Contact information"),
        ObjectType::Company => ("companyinformation", "Company information"),
        ObjectType::Deal => ("dealinformation", "Deal information"),
        ObjectType::Note => ("engagement", "Engagement"),
    };
    vec![json!({"name": name, "label": label, "displayOrder": 0, "archived": false})]
}

/// A stored record. Property values are strings; an unset property is absent.
#[derive(Clone, Debug)]
pub struct Record {
    pub id: u64,
    pub object_type: ObjectType,
    pub properties: BTreeMap<String, String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub archived: bool,
    /// Each write's properties with the (fake clock) time it was made: `/search` sees the newest
    /// one older than the search lag.
    pub versions: Vec<(Instant, BTreeMap<String, String>)>,
}

/// Which properties a record's JSON carries.
pub enum Selection<'a> {
    /// Every set property (answers to writes).
    All,
    /// The type's default set (reads without `properties=`).
    Default,
    /// These (with `null` when unset) plus the id and times.
    Named(&'a [String]),
}

impl Record {
    /// The record object HubSpot returns everywhere (SimplePublicObject).
    pub fn to_json(&self, sel: Selection<'_>) -> Value {
        self.json_of(&self.properties, sel)
    }

    pub fn json_of(&self, props: &BTreeMap<String, String>, sel: Selection<'_>) -> Value {
        let mut out = Map::new();
        let (created, modified) = self.object_type.system_times();
        let mut put = |name: &str| {
            out.insert(
                name.to_owned(),
                props
                    .get(name)
                    .map_or(Value::Null, |v| Value::String(v.clone())),
            );
        };
        match sel {
            Selection::All => {
                for k in props.keys() {
                    put(k);
                }
            }
            Selection::Default => {
                for k in self.object_type.default_properties() {
                    put(k);
                }
            }
            Selection::Named(names) => {
                for k in names {
                    put(k);
                }
                put("hs_object_id");
                put(created);
                for m in modified {
                    put(m);
                }
            }
        }
        json!({
            "id": self.id.to_string(),
            "properties": out,
            "createdAt": iso_ms(self.created_ms),
            "updatedAt": iso_ms(self.updated_ms),
            "archived": self.archived,
        })
    }
}

/// ISO 8601 UTC with milliseconds, as HubSpot writes times: `2026-11-28T10:15:00.000Z`.
pub fn iso_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_else(|_| ms.to_string())
}

/// Reads a datetime value: epoch milliseconds, RFC 3339, or a bare `YYYY-MM-DD` (midnight UTC).
pub fn parse_datetime_ms(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    Date::parse(s, format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
}

const DAY_MS: i64 = 86_400_000;

/// Everything the fake holds.
#[derive(Clone)]
pub struct Store {
    pub records: BTreeMap<u64, Record>,
    /// Ids are one increasing sequence over all types (never reused, not even after a reset).
    pub next_id: u64,
    pub properties: BTreeMap<ObjectType, BTreeMap<String, PropertyDef>>,
    pub groups: BTreeMap<ObjectType, Vec<Value>>,
    pub pipelines: Vec<Pipeline>,
    pub next_pipeline_id: u64,
    pub associations: BTreeSet<Assoc>,
}

impl Store {
    pub fn new(pipelines: Vec<Pipeline>, next_id: u64) -> Self {
        let mut properties = BTreeMap::new();
        let mut groups = BTreeMap::new();
        for t in ObjectType::ALL {
            properties.insert(
                t,
                standard_properties(t)
                    .into_iter()
                    .map(|p| (p.name.clone(), p))
                    .collect(),
            );
            groups.insert(t, standard_groups(t));
        }
        Self {
            records: BTreeMap::new(),
            next_id,
            properties,
            groups,
            pipelines,
            next_pipeline_id: 1_000_001,
            associations: BTreeSet::new(),
        }
    }

    pub fn property(&self, t: ObjectType, name: &str) -> Option<&PropertyDef> {
        self.properties.get(&t).and_then(|p| p.get(name))
    }

    /// Whether `name` can identify records of `t` (`idProperty`): a `hasUniqueValue` property,
    /// the contact `email`, or `hs_object_id`.
    pub fn is_unique(&self, t: ObjectType, name: &str) -> bool {
        name == "hs_object_id"
            || (t == ObjectType::Contact && name == "email")
            || self.property(t, name).is_some_and(|p| p.has_unique_value)
    }

    /// A live (not archived) record of type `t`.
    pub fn get(&self, t: ObjectType, id: u64) -> Option<&Record> {
        self.records
            .get(&id)
            .filter(|r| r.object_type == t && !r.archived)
    }

    /// Resolves a path id: the record id, or (with `id_property`) the value of that unique property.
    pub fn resolve(&self, t: ObjectType, id: &str, id_property: Option<&str>) -> Option<u64> {
        match id_property {
            None | Some("hs_object_id") => id.parse().ok().filter(|n| self.get(t, *n).is_some()),
            Some(prop) => self.find_unique(t, prop, id),
        }
    }

    /// The live record of `t` whose `prop` equals `value` (e-mails compare case-insensitively).
    pub fn find_unique(&self, t: ObjectType, prop: &str, value: &str) -> Option<u64> {
        self.records
            .values()
            .find(|r| {
                r.object_type == t
                    && !r.archived
                    && r.properties
                        .get(prop)
                        .is_some_and(|v| same_value(t, prop, v, value))
            })
            .map(|r| r.id)
    }

    /// Creates a record from a `properties` object; returns its id.
    pub fn create(
        &mut self,
        t: ObjectType,
        incoming: &Map<String, Value>,
        now_ms: i64,
        now: Instant,
    ) -> Result<u64, WriteError> {
        let props = self.prepare(t, incoming, None)?;
        Ok(self.insert(t, props, now_ms, now))
    }

    /// Inserts already checked properties (see [`Store::prepare`]).
    pub fn insert(
        &mut self,
        t: ObjectType,
        mut props: BTreeMap<String, String>,
        now_ms: i64,
        now: Instant,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let (created, modified) = t.system_times();
        props.insert("hs_object_id".into(), id.to_string());
        props.insert(created.into(), iso_ms(now_ms));
        for m in modified {
            props.insert((*m).into(), iso_ms(now_ms));
        }
        self.records.insert(
            id,
            Record {
                id,
                object_type: t,
                properties: props.clone(),
                created_ms: now_ms,
                updated_ms: now_ms,
                archived: false,
                versions: vec![(now, props)],
            },
        );
        id
    }

    /// Updates record `id` (which must be live); `Ok(true)` when a value changed. A write that
    /// changes nothing leaves the record (and its modification time) as it was.
    pub fn update(
        &mut self,
        t: ObjectType,
        id: u64,
        incoming: &Map<String, Value>,
        now_ms: i64,
        now: Instant,
    ) -> Result<bool, WriteError> {
        let Some(existing) = self.get(t, id) else {
            return Err(WriteError::NotFound(format!(
                "resource not found: no {} with id {id}",
                t.singular()
            )));
        };
        let props = self.prepare(t, incoming, Some(existing))?;
        let Some(rec) = self.records.get_mut(&id) else {
            return Ok(false);
        };
        if props == rec.properties {
            return Ok(false);
        }
        rec.properties = props;
        let (_, modified) = t.system_times();
        for m in modified {
            rec.properties.insert((*m).into(), iso_ms(now_ms));
        }
        rec.updated_ms = now_ms;
        rec.versions.push((now, rec.properties.clone()));
        Ok(true)
    }

    /// Archives (deletes) a record and its associations.
    pub fn archive(&mut self, id: u64, now_ms: i64) {
        if let Some(rec) = self.records.get_mut(&id) {
            rec.archived = true;
            rec.updated_ms = now_ms;
        }
        self.associations
            .retain(|a| a.from_id != id && a.to_id != id);
    }

    /// Checks a write and returns the record's properties after it: every value a string (or
    /// `null`, which clears like `""`), every property known and writable, every value valid for
    /// its type, the deal and note rules, and uniqueness.
    pub fn prepare(
        &self,
        t: ObjectType,
        incoming: &Map<String, Value>,
        existing: Option<&Record>,
    ) -> Result<BTreeMap<String, String>, WriteError> {
        let mut errors = Vec::new();
        let mut props = existing.map(|r| r.properties.clone()).unwrap_or_default();
        for (name, value) in incoming {
            let raw = match value {
                Value::String(s) => s.as_str(),
                Value::Null => "",
                other => {
                    // HubSpot's wire contract: every property value travels as a string.
                    errors.push(FieldError::new(
                        name,
                        "INVALID_PROPERTY_VALUE_TYPE",
                        format!(
                            "Property \"{name}\" must be sent as a string, got {}: {other}",
                            json_kind(other)
                        ),
                    ));
                    continue;
                }
            };
            let Some(def) = self.property(t, name) else {
                errors.push(FieldError::new(
                    name,
                    "PROPERTY_DOESNT_EXIST",
                    format!("Property \"{name}\" does not exist"),
                ));
                continue;
            };
            if def.read_only_value {
                // Sending back the value a record already has is harmless; changing it is not.
                if existing.is_some_and(|r| r.properties.get(name).map(String::as_str) == Some(raw))
                {
                    continue;
                }
                errors.push(FieldError::new(
                    name,
                    "READ_ONLY_VALUE",
                    format!("Property \"{name}\" is a read only property; its value cannot be set"),
                ));
                continue;
            }
            if raw.is_empty() {
                props.remove(name);
                continue;
            }
            match normalize(t, def, raw) {
                Ok(v) => {
                    props.insert(name.clone(), v);
                }
                Err(e) => errors.push(e),
            }
        }
        if t == ObjectType::Deal {
            pipelines::check_deal(&self.pipelines, &mut props, existing.is_none(), &mut errors);
        }
        if t == ObjectType::Note {
            super::notes::check_note(&props, &mut errors);
        }
        if !errors.is_empty() {
            return Err(WriteError::Invalid(errors));
        }
        self.check_unique(t, &props, existing.map(|r| r.id))?;
        Ok(props)
    }

    /// Every unique value of `props` must not be held by another live record of the type.
    fn check_unique(
        &self,
        t: ObjectType,
        props: &BTreeMap<String, String>,
        own_id: Option<u64>,
    ) -> Result<(), WriteError> {
        let mut errors = Vec::new();
        for (name, value) in props {
            let is_email = t == ObjectType::Contact && name == "email";
            if !is_email && !self.property(t, name).is_some_and(|p| p.has_unique_value) {
                continue;
            }
            let Some(other) = self.find_unique(t, name, value) else {
                continue;
            };
            if Some(other) == own_id {
                continue;
            }
            if is_email {
                return Err(WriteError::EmailTaken { existing_id: other });
            }
            errors.push(FieldError::new(
                name,
                "VALUE_NOT_UNIQUE",
                format!("{value} already has that value. Property \"{name}\" is unique: record {other} already has that value"),
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(WriteError::Invalid(errors))
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        _ => "a value",
    }
}

fn same_value(t: ObjectType, prop: &str, stored: &str, wanted: &str) -> bool {
    if t == ObjectType::Contact && prop == "email" {
        stored.eq_ignore_ascii_case(wanted)
    } else {
        stored == wanted
    }
}

/// Checks one non-empty value against its definition and returns it as HubSpot stores it:
/// dates as `YYYY-MM-DD`, datetimes as ISO with milliseconds, everything else as sent.
fn normalize(t: ObjectType, def: &PropertyDef, raw: &str) -> Result<String, FieldError> {
    let name = def.name.as_str();
    let bad = |code: &'static str, what: &str| {
        Err(FieldError::new(
            name,
            code,
            format!("{raw} was not a valid {what}. Property \"{name}\""),
        ))
    };
    let len = raw.chars().count();
    if len > super::notes::NOTE_BODY_LIMIT {
        return Err(FieldError::new(
            name,
            "INVALID_STRING_LENGTH",
            format!(
                "Property \"{name}\" is {len} characters long; the limit is {}",
                super::notes::NOTE_BODY_LIMIT
            ),
        ));
    }
    match def.kind.as_str() {
        "number" => match raw.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(raw.trim().to_owned()),
            _ => bad("INVALID_DECIMAL", "number"),
        },
        "bool" => match raw {
            "true" | "false" => Ok(raw.to_owned()),
            _ => bad("INVALID_BOOLEAN", "boolean (\"true\" or \"false\")"),
        },
        "date" => match parse_datetime_ms(raw) {
            Some(ms) if ms.rem_euclid(DAY_MS) == 0 => Ok(iso_ms(ms)[..10].to_owned()),
            Some(_) => Err(FieldError::new(
                name,
                "INVALID_DATE",
                format!(
                    "{raw} is at a time other than midnight UTC; property \"{name}\" is a date"
                ),
            )),
            None => bad("INVALID_DATE", "date (YYYY-MM-DD or epoch milliseconds)"),
        },
        "datetime" => match parse_datetime_ms(raw) {
            Some(ms) => Ok(iso_ms(ms)),
            None => bad(
                "INVALID_DATETIME",
                "datetime (epoch milliseconds or ISO 8601)",
            ),
        },
        "enumeration" if !def.external_options => {
            let values: Vec<&str> = if def.field_type == "checkbox" {
                raw.split(';').collect()
            } else {
                vec![raw]
            };
            for v in values {
                if !def.options.iter().any(|o| o.value == v) {
                    let allowed: Vec<&str> = def.options.iter().map(|o| o.value.as_str()).collect();
                    return Err(FieldError::new(
                        name,
                        "INVALID_OPTION",
                        format!(
                            "{v} was not one of the allowed options: [{}] for property \"{name}\"",
                            allowed.join(", ")
                        ),
                    ));
                }
            }
            Ok(raw.to_owned())
        }
        _ if t == ObjectType::Contact && name == "email" => {
            let ok = raw
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
                && !raw.contains(char::is_whitespace);
            if ok {
                Ok(raw.to_owned())
            } else {
                bad("INVALID_EMAIL", "email address")
            }
        }
        _ if name == "hubspot_owner_id" => {
            if raw.chars().all(|c| c.is_ascii_digit()) {
                Ok(raw.to_owned())
            } else {
                bad("INVALID_OWNER_ID", "owner id (digits)")
            }
        }
        _ => Ok(raw.to_owned()),
    }
}
