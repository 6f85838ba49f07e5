//! The mapping profile of the native CRM connectors: which CRM record each event type writes, the
//! unique key properties it is found by, and each CRM property from a canonical field (a path
//! into the event's `data`, docs/design.md 3.3) with its conversion; the Enerflo status -> pipeline stage
//! map and the milestone -> date property map.
//!
//! One JSON file (`CRM_MAPPING_FILE`), or the connector's default built in
//! (`shared/profiles/*.json`). Every problem of a profile is found at start-up and named at once,
//! so a typo never waits for the first event of its type. The README documents the default
//! profiles property by property.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

use crate::canonical::{CrmEvent, CrmEventType};
use crate::crm::CrmError;
use crate::enerflo::lenient::{value_to_f64, value_to_string};

/// Every event type a native connector writes; a profile maps each one.
pub const EVENT_TYPES: [CrmEventType; 7] = [
    CrmEventType::LeadUpserted,
    CrmEventType::ProjectSubmitted,
    CrmEventType::ProjectReceived,
    CrmEventType::MilestoneUpdated,
    CrmEventType::StatusChanged,
    CrmEventType::NoteCreated,
    CrmEventType::ChangeOrderSigned,
];

/// A validated profile.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub events: BTreeMap<&'static str, EventMap>,
    pub stages: StageMap,
    /// Milestone id (as text) or `MILESTONE_KEY_MAP` key -> the date property it sets.
    pub milestone_dates: BTreeMap<String, String>,
}

/// What one event type writes.
#[derive(Clone, Debug, PartialEq)]
pub struct EventMap {
    /// The CRM object (HubSpot: `contacts`, `deals`, `notes`).
    pub object: String,
    /// Unique properties the record is found by, tried in order: the first whose field has a value
    /// is the upsert key; every key with a value is also written.
    pub keys: Vec<Key>,
    pub properties: BTreeMap<String, Property>,
    /// Properties written only when the record is new to us (the event has no `crm_id` yet):
    /// values a CRM user may change afterwards, such as a close date.
    pub on_create: BTreeMap<String, Property>,
    /// For project events: the customer's contact, upserted and associated with the deal.
    pub contact: Option<Box<EventMap>>,
    /// How the deal is linked to the contact where the CRM offers a choice (Salesforce: an
    /// `OpportunityContactRole`, or a lookup field on the deal).
    pub link: Option<Link>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// A contact role with this `Role` (Salesforce `OpportunityContactRole`).
    ContactRole { role: String },
    /// A lookup field on the deal holding the contact's id.
    Lookup { field: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub property: String,
    pub field: FieldPath,
}

/// One CRM property from canonical fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Property {
    /// One path, or several: the first present one for a single value, every present one for a
    /// `list`.
    pub fields: Vec<FieldPath>,
    pub conversion: Conversion,
    /// The Monday.com column type the value is written as (`"column"`, one of
    /// [`MONDAY_COLUMN_TYPES`]); `None` derives it from the conversion ([`Property::column_type`]).
    /// Other connectors ignore it.
    pub column: Option<String>,
}

/// The Monday.com column types a profile can write, each in its own value format
/// ([`FieldValue::monday`]; docs/monday.md 3.2).
pub const MONDAY_COLUMN_TYPES: [&str; 12] = [
    "text",
    "long_text",
    "numbers",
    "status",
    "date",
    "email",
    "phone",
    "location",
    "dropdown",
    "link",
    "checkbox",
    "board_relation",
];

impl Property {
    /// The Monday column type this property is written as: `column` when given, else the one a
    /// conversion's values suit (numbers, date, checkbox, text).
    pub fn column_type(&self) -> &str {
        if let Some(c) = &self.column {
            return c;
        }
        match self.conversion {
            Conversion::Number { .. } => "numbers",
            Conversion::Date | Conversion::DateTime => "date",
            Conversion::Bool => "checkbox",
            _ => "text",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Conversion {
    Text,
    /// A number, multiplied by `scale` (1 unless given: watts -> kW is 0.001).
    Number {
        scale: f64,
    },
    /// A calendar day.
    Date,
    /// An instant.
    DateTime,
    /// A value mapped through `options` (source value -> CRM option; case-insensitive). A value
    /// with no option is left out, never invented.
    Enumeration {
        options: BTreeMap<String, String>,
    },
    /// Every present value (array elements flattened; `item` picks a field of each element),
    /// joined with `separator`.
    List {
        separator: String,
        item: Option<String>,
    },
    /// The value as compact JSON text.
    Json,
    Bool,
}

/// A path into the event: `a.b.c` is under `data`; `$enerflo.deal_id`, `$occurred_at`, `$id` and
/// `$source_event` reach the envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath {
    pub text: String,
    root: Root,
    segments: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Root {
    Data,
    Enerflo,
    OccurredAt,
    Id,
    SourceEvent,
}

/// The status -> stage part.
#[derive(Clone, Debug, PartialEq)]
pub struct StageMap {
    /// The record property holding the stage (`dealstage` in HubSpot, `StageName` in Salesforce).
    pub property: String,
    /// The stage a new deal starts in.
    pub first_stage: Option<String>,
    /// Enerflo status name (lower-cased) -> stage id. An unmapped status leaves the stage alone.
    pub by_status: BTreeMap<String, String>,
    /// Monday.com: whether a status label the board lacks may be created by our write
    /// (`create_labels_if_missing`); off unless the profile says `"create_labels": true`.
    pub create_labels: bool,
}

/// A converted value, before the connector renders it in its CRM's wire format.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    Text(String),
    Number(f64),
    Date(Date),
    DateTime(OffsetDateTime),
    Bool(bool),
}

impl FieldValue {
    /// HubSpot's wire form: every value a string; dates as midnight-UTC epoch milliseconds,
    /// instants as epoch milliseconds (docs/crm-connectors.md 2.3).
    pub fn hubspot(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number(n) => number_text(*n),
            Self::Date(d) => {
                let ms = d.midnight().assume_utc().unix_timestamp() * 1000;
                ms.to_string()
            }
            Self::DateTime(t) => (t.unix_timestamp_nanos() / 1_000_000).to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

impl FieldValue {
    /// Salesforce's wire form: JSON types; dates `YYYY-MM-DD`, instants RFC 3339 in UTC
    /// (docs/crm-connectors.md 3.6).
    pub fn salesforce(&self) -> Value {
        match self {
            Self::Text(s) => Value::String(s.clone()),
            Self::Number(n) => serde_json::Number::from_f64(*n)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Self::Date(d) => Value::String(d.to_string()),
            Self::DateTime(t) => Value::String(
                t.to_offset(time::UtcOffset::UTC)
                    .format(&Rfc3339)
                    .unwrap_or_default(),
            ),
            Self::Bool(b) => Value::Bool(*b),
        }
    }
}

impl FieldValue {
    /// The value as plain text: numbers shortest, dates `YYYY-MM-DD`, instants RFC 3339 UTC.
    pub fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number(n) => number_text(*n),
            Self::Date(d) => d.to_string(),
            Self::DateTime(_) => match self.salesforce() {
                Value::String(s) => s,
                _ => String::new(),
            },
            Self::Bool(b) => b.to_string(),
        }
    }

    /// Monday.com's value format of `column_type` (one of [`MONDAY_COLUMN_TYPES`]; the formats of
    /// docs/monday.md 3.2), as it goes into `column_values`; `Err` says why the value does not
    /// fit the column, for a reason naming it. `Value::Null` clears the column.
    pub fn monday(&self, column_type: &str) -> Result<Value, String> {
        use serde_json::json;
        let text = self.text();
        Ok(match column_type {
            "text" => Value::String(text),
            "long_text" => json!({"text": text}),
            "numbers" => match self {
                Self::Number(n) => Value::String(number_text(*n)),
                Self::Text(s) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
                    Value::String(s.trim().to_owned())
                }
                _ => return Err(format!("`{text}` is not a number")),
            },
            "status" => json!({"label": text}),
            "date" => match self {
                Self::Date(d) => json!({"date": d.to_string()}),
                Self::DateTime(t) => {
                    let utc = t.to_offset(time::UtcOffset::UTC);
                    json!({"date": utc.date().to_string(),
                           "time": format!("{:02}:{:02}:{:02}", utc.hour(), utc.minute(), utc.second())})
                }
                Self::Text(s) => match parse_date(s) {
                    Some(d) => json!({"date": d.to_string()}),
                    None => return Err(format!("`{s}` is not a date")),
                },
                _ => return Err(format!("`{text}` is not a date")),
            },
            "email" => json!({"email": text, "text": text}),
            "phone" => {
                let digits: String = text
                    .chars()
                    .filter(|c| c.is_ascii_digit() || *c == '+')
                    .collect();
                let bare = digits.trim_start_matches('+');
                if bare.len() < 7 || bare.len() > 15 {
                    return Err("is not a phone number of 7 to 15 digits".into());
                }
                // A 10-digit number is a US one (Enerflo's installers are US companies).
                let (phone, country) = if !digits.starts_with('+') && bare.len() == 10 {
                    (format!("+1{bare}"), "US")
                } else if digits.starts_with("+1") || (bare.len() == 11 && bare.starts_with('1')) {
                    (format!("+{bare}"), "US")
                } else {
                    (format!("+{bare}"), "")
                };
                if country.is_empty() {
                    json!({"phone": phone})
                } else {
                    json!({"phone": phone, "countryShortName": country})
                }
            }
            "location" => {
                // `lat,lng[,address]` (a `list` of `address.lat`, `address.lng`, `address.street`
                // joined by `,`): Monday needs the coordinates.
                let mut parts = text.splitn(3, ',').map(str::trim);
                let (lat, lng) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let ok = |s: &str, max: f64| s.parse::<f64>().is_ok_and(|v| v.abs() <= max);
                if !ok(lat, 90.0) || !ok(lng, 180.0) {
                    return Err("a location needs `lat,lng[,address]`".into());
                }
                let address = parts.next().unwrap_or("");
                json!({"lat": lat, "lng": lng, "address": address})
            }
            "dropdown" => {
                let labels: Vec<&str> = text
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                json!({"labels": labels})
            }
            "link" => {
                if !(text.starts_with("https://") || text.starts_with("http://")) {
                    return Err(format!("`{text}` is not an http(s) URL"));
                }
                json!({"url": text, "text": text})
            }
            "checkbox" => match self {
                Self::Bool(true) => json!({"checked": "true"}),
                Self::Bool(false) => Value::Null,
                _ => return Err(format!("`{text}` is not true or false")),
            },
            "board_relation" => match text.parse::<u64>() {
                Ok(id) => json!({"item_ids": [id]}),
                Err(_) => return Err(format!("`{text}` is not an item id")),
            },
            other => {
                return Err(format!(
                    "`{other}` is not a Monday column type this sync writes"
                ));
            }
        })
    }
}

/// A number as the shortest text that reads back the same (`8.4`, `20`, never `20.0`).
pub fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        let s = format!("{n:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A profile that could not be used: every problem, each naming where it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("mapping profile {source_name}: {}", .problems.join("; "))]
pub struct ProfileError {
    pub source_name: String,
    pub problems: Vec<String>,
}

// ---- the file format ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: Option<String>,
    events: BTreeMap<String, RawEvent>,
    #[serde(default)]
    stages: RawStages,
    #[serde(default)]
    milestone_dates: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    /// Another event type whose mapping this one repeats.
    like: Option<String>,
    object: Option<String>,
    #[serde(default)]
    keys: Vec<RawKey>,
    #[serde(default)]
    properties: BTreeMap<String, RawProperty>,
    #[serde(default)]
    on_create: BTreeMap<String, RawProperty>,
    contact: Option<Box<RawEvent>>,
    link: Option<RawLink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    kind: String,
    role: Option<String>,
    field: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    property: String,
    field: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProperty {
    field: OneOrMany,
    #[serde(rename = "type", default = "text")]
    kind: String,
    scale: Option<f64>,
    options: Option<BTreeMap<String, String>>,
    separator: Option<String>,
    item: Option<String>,
    /// Monday.com column type.
    column: Option<String>,
}

fn text() -> String {
    "text".into()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStages {
    property: Option<String>,
    first_stage: Option<String>,
    #[serde(default)]
    by_status: BTreeMap<String, String>,
    #[serde(default)]
    create_labels: bool,
}

impl Profile {
    /// Reads and validates a profile; `source_name` names it in errors (a file path, or
    /// "built-in hubspot").
    pub fn parse(source_name: &str, json: &str) -> Result<Self, ProfileError> {
        let fail = |problems: Vec<String>| ProfileError {
            source_name: source_name.to_owned(),
            problems,
        };
        let raw: RawProfile = serde_json::from_str(json)
            .map_err(|e| fail(vec![format!("is not a valid profile: {e}")]))?;
        let mut problems = Vec::new();
        let mut events = BTreeMap::new();
        for (name, _) in raw.events.iter() {
            if !EVENT_TYPES.iter().any(|t| t.as_str() == name) {
                problems.push(format!(
                    "events.{name}: not an event type (one of {})",
                    EVENT_TYPES.map(|t| t.as_str()).join(", ")
                ));
            }
        }
        for t in EVENT_TYPES {
            let name = t.as_str();
            let Some(mut raw_event) = raw.events.get(name) else {
                problems.push(format!(
                    "events.{name}: missing (every event type needs a mapping)"
                ));
                continue;
            };
            if let Some(like) = &raw_event.like {
                match raw.events.get(like) {
                    Some(other) if other.like.is_none() => raw_event = other,
                    Some(_) => {
                        problems.push(format!("events.{name}.like: `{like}` is itself a `like`"));
                        continue;
                    }
                    None => {
                        problems.push(format!("events.{name}.like: no event `{like}` to repeat"));
                        continue;
                    }
                }
            }
            if let Some(ev) = read_event(&format!("events.{name}"), raw_event, &mut problems) {
                events.insert(name, ev);
            }
        }
        let mut by_status = BTreeMap::new();
        for (status, stage) in raw.stages.by_status {
            if status.trim().is_empty() || stage.trim().is_empty() {
                problems.push(format!(
                    "stages.by_status: `{status}` -> `{stage}` needs a status name and a stage id"
                ));
            } else {
                by_status.insert(status.trim().to_lowercase(), stage.trim().to_owned());
            }
        }
        let stage_property = raw
            .stages
            .property
            .unwrap_or_else(|| "dealstage".to_owned());
        if !is_property_name(&stage_property) {
            problems.push(format!(
                "stages.property: `{stage_property}` is not a property name"
            ));
        }
        let first_stage = raw.stages.first_stage.map(|s| s.trim().to_owned());
        if first_stage.as_deref() == Some("") {
            problems.push("stages.first_stage: must not be empty".into());
        }
        for (milestone, property) in &raw.milestone_dates {
            if milestone.trim().is_empty() {
                problems.push("milestone_dates: a key is empty".into());
            }
            if !is_property_name(property) {
                problems.push(format!(
                    "milestone_dates.{milestone}: `{property}` is not a property name"
                ));
            }
        }
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        Ok(Self {
            name: raw.name.unwrap_or_else(|| source_name.to_owned()),
            events,
            stages: StageMap {
                property: stage_property,
                first_stage,
                by_status,
                create_labels: raw.stages.create_labels,
            },
            milestone_dates: raw.milestone_dates,
        })
    }

    /// The mapping of one event type (every type is mapped once validated).
    pub fn event(&self, t: CrmEventType) -> &EventMap {
        // Validation guarantees every type of EVENT_TYPES is present.
        #[allow(clippy::expect_used)]
        self.events
            .get(t.as_str())
            .expect("a validated profile maps every event type")
    }

    /// Every object the profile writes (contacts of project events included), once each.
    pub fn objects(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for ev in self.events.values() {
            for o in std::iter::once(&ev.object).chain(ev.contact.as_ref().map(|c| &c.object)) {
                if !out.contains(o) {
                    out.push(o.clone());
                }
            }
        }
        out
    }

    /// The Enerflo status names (as the profile spells them, lower-cased) whose stage is `stage`.
    pub fn statuses_for_stage(&self, stage: &str) -> Vec<&str> {
        self.stages
            .by_status
            .iter()
            .filter(|(_, s)| s.trim().eq_ignore_ascii_case(stage.trim()))
            .map(|(status, _)| status.as_str())
            .collect()
    }

    /// The stage a status name moves the deal to; `None` leaves it alone.
    pub fn stage_for_status(&self, status_name: &str) -> Option<&str> {
        self.stages
            .by_status
            .get(&status_name.trim().to_lowercase())
            .map(String::as_str)
    }

    /// The date property for a milestone: by its id, else by a `MILESTONE_KEY_MAP` key naming it.
    pub fn milestone_property(
        &self,
        milestone_id: Option<u64>,
        key_map: &BTreeMap<String, u64>,
    ) -> Option<&str> {
        let id = milestone_id?;
        self.milestone_dates
            .get(&id.to_string())
            .or_else(|| {
                key_map
                    .iter()
                    .filter(|(_, v)| **v == id)
                    .find_map(|(k, _)| self.milestone_dates.get(k))
            })
            .map(String::as_str)
    }

    /// Every property the profile writes, per object, with the conversion that decides its type:
    /// what a setup command creates. Standard properties are included; the caller skips those the
    /// CRM defines.
    pub fn properties_by_object(&self) -> BTreeMap<String, BTreeMap<String, Conversion>> {
        let mut out: BTreeMap<String, BTreeMap<String, Conversion>> = BTreeMap::new();
        fn add(out: &mut BTreeMap<String, BTreeMap<String, Conversion>>, ev: &EventMap) {
            let slot = out.entry(ev.object.clone()).or_default();
            for k in &ev.keys {
                slot.entry(k.property.clone()).or_insert(Conversion::Text);
            }
            for (name, p) in ev.properties.iter().chain(&ev.on_create) {
                slot.entry(name.clone())
                    .or_insert_with(|| p.conversion.clone());
            }
            if let Some(c) = &ev.contact {
                add(out, c);
            }
        }
        for ev in self.events.values() {
            add(&mut out, ev);
        }
        if let Some(deals) = self.events.get(CrmEventType::MilestoneUpdated.as_str()) {
            let slot = out.entry(deals.object.clone()).or_default();
            for p in self.milestone_dates.values() {
                slot.entry(p.clone()).or_insert(Conversion::Date);
            }
        }
        out
    }
}

fn read_event(at: &str, raw: &RawEvent, problems: &mut Vec<String>) -> Option<EventMap> {
    let before = problems.len();
    let object = raw.object.clone().unwrap_or_default();
    if !is_property_name(&object) && !object.contains('-') {
        problems.push(format!("{at}.object: missing or not an object name"));
    }
    if raw.keys.is_empty() {
        problems.push(format!(
            "{at}.keys: at least one unique key property is needed"
        ));
    }
    let mut keys = Vec::new();
    for (i, k) in raw.keys.iter().enumerate() {
        if !is_property_name(&k.property) {
            problems.push(format!(
                "{at}.keys[{i}].property: `{}` is not a property name",
                k.property
            ));
        }
        match FieldPath::parse(&k.field) {
            Ok(field) => keys.push(Key {
                property: k.property.clone(),
                field,
            }),
            Err(why) => problems.push(format!("{at}.keys[{i}].field: {why}")),
        }
    }
    let properties = read_properties(&format!("{at}.properties"), &raw.properties, problems);
    let on_create = read_properties(&format!("{at}.on_create"), &raw.on_create, problems);
    let link = raw.link.as_ref().and_then(|l| match (l.kind.as_str(), &l.role, &l.field) {
        ("contact_role", role, None) => Some(Link::ContactRole {
            role: role.clone().unwrap_or_else(|| "Homeowner".into()),
        }),
        ("lookup", None, Some(field)) if is_property_name(field) => Some(Link::Lookup {
            field: field.clone(),
        }),
        (kind, _, _) => {
            problems.push(format!(
                "{at}.link: `{kind}` needs to be {{\"kind\": \"contact_role\", \"role\": ...}} or {{\"kind\": \"lookup\", \"field\": ...}}"
            ));
            None
        }
    });
    let contact = raw
        .contact
        .as_ref()
        .and_then(|c| read_event(&format!("{at}.contact"), c, problems).map(Box::new));
    (problems.len() == before).then_some(EventMap {
        object,
        keys,
        properties,
        on_create,
        contact,
        link,
    })
}

fn read_properties(
    at: &str,
    raw: &BTreeMap<String, RawProperty>,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Property> {
    let mut properties = BTreeMap::new();
    for (name, p) in raw {
        let here = format!("{at}.{name}");
        if !is_property_name(name) {
            problems.push(format!("{here}: `{name}` is not a property name"));
        }
        let paths = match &p.field {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        };
        if paths.is_empty() {
            problems.push(format!("{here}.field: names no field"));
        }
        let mut fields = Vec::new();
        for f in &paths {
            match FieldPath::parse(f) {
                Ok(fp) => fields.push(fp),
                Err(why) => problems.push(format!("{here}.field: {why}")),
            }
        }
        let stray = |what: &str, set: bool, problems: &mut Vec<String>| {
            if set {
                problems.push(format!(
                    "{here}.{what}: only for another type than `{}`",
                    p.kind
                ));
            }
        };
        let conversion = match p.kind.as_str() {
            "text" => Some(Conversion::Text),
            "number" => match p.scale {
                Some(s) if !s.is_finite() || s == 0.0 => {
                    problems.push(format!("{here}.scale: must be a non-zero number"));
                    None
                }
                s => Some(Conversion::Number {
                    scale: s.unwrap_or(1.0),
                }),
            },
            "date" => Some(Conversion::Date),
            "datetime" => Some(Conversion::DateTime),
            "enumeration" => match &p.options {
                Some(o) if !o.is_empty() => Some(Conversion::Enumeration {
                    options: o
                        .iter()
                        .map(|(k, v)| (k.trim().to_lowercase(), v.clone()))
                        .collect(),
                }),
                _ => {
                    problems.push(format!("{here}.options: an enumeration needs its options"));
                    None
                }
            },
            "list" => Some(Conversion::List {
                separator: p.separator.clone().unwrap_or_else(|| ";".into()),
                item: p.item.clone(),
            }),
            "json" => Some(Conversion::Json),
            "bool" => Some(Conversion::Bool),
            other => {
                problems.push(format!(
                    "{here}.type: `{other}` is not one of text, number, date, datetime, enumeration, list, json, bool"
                ));
                None
            }
        };
        stray("scale", p.scale.is_some() && p.kind != "number", problems);
        stray(
            "options",
            p.options.is_some() && p.kind != "enumeration",
            problems,
        );
        stray(
            "separator",
            p.separator.is_some() && p.kind != "list",
            problems,
        );
        stray("item", p.item.is_some() && p.kind != "list", problems);
        if let Some(c) = &p.column
            && !MONDAY_COLUMN_TYPES.contains(&c.as_str())
        {
            problems.push(format!(
                "{here}.column: `{c}` is not one of {}",
                MONDAY_COLUMN_TYPES.join(", ")
            ));
        }
        if let Some(conversion) = conversion {
            properties.insert(
                name.clone(),
                Property {
                    fields,
                    conversion,
                    column: p.column.clone(),
                },
            );
        }
    }
    properties
}

fn is_property_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (root, rest) = match t.strip_prefix('$') {
            None => (Root::Data, t),
            Some(r) => {
                let (head, tail) = r.split_once('.').unwrap_or((r, ""));
                let root = match head {
                    "enerflo" => Root::Enerflo,
                    "occurred_at" => Root::OccurredAt,
                    "id" => Root::Id,
                    "source_event" => Root::SourceEvent,
                    _ => {
                        return Err(format!(
                            "`{t}`: `${head}` is not one of $enerflo, $occurred_at, $id, $source_event"
                        ));
                    }
                };
                if root == Root::Enerflo && tail.is_empty() {
                    return Err(format!(
                        "`{t}`: $enerflo needs a field, e.g. $enerflo.deal_id"
                    ));
                }
                (root, tail)
            }
        };
        let segments: Vec<String> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('.').map(str::to_owned).collect()
        };
        if root == Root::Data && segments.is_empty() {
            return Err("an empty path".into());
        }
        if let Some(bad) = segments.iter().find(|s| !is_property_name(s)) {
            return Err(format!("`{t}`: segment `{bad}` is not a field name"));
        }
        Ok(Self {
            text: t.to_owned(),
            root,
            segments,
        })
    }

    /// The value at this path in `event`, `None` when absent or null.
    pub fn get<'a>(&self, event: &'a CrmEvent, enerflo: &'a Value) -> Option<Value> {
        let start: Value = match self.root {
            Root::Data => return walk(&event.data, &self.segments).cloned(),
            Root::Enerflo => return walk(enerflo, &self.segments).cloned(),
            Root::OccurredAt => Value::String(event.occurred_at.clone()),
            Root::Id => Value::String(event.id.clone()),
            Root::SourceEvent => Value::String(event.source_event.clone()),
        };
        Some(start)
    }
}

fn walk<'a>(mut v: &'a Value, segments: &[String]) -> Option<&'a Value> {
    for s in segments {
        v = v.get(s)?;
    }
    (!v.is_null()).then_some(v)
}

/// An event read through a profile: the converted value of each mapped property.
pub struct Applied {
    /// Key property -> its value, in the profile's order, for keys whose field has a value.
    pub keys: Vec<(String, String)>,
    pub properties: BTreeMap<String, FieldValue>,
    /// The `on_create` properties, for a record new to us.
    pub on_create: BTreeMap<String, FieldValue>,
}

impl Applied {
    /// The error of an update whose project record is not in the CRM yet: `record` names it
    /// ("HubSpot deals", "Monday.com item on board 7"), and the keys it was looked up by are
    /// listed. Transient (404): the project event that creates the record comes first in its
    /// group, so a retry finds it once that is delivered.
    pub fn not_created_yet(&self, record: &str) -> CrmError {
        let looked_up_by = if self.keys.is_empty() {
            "nothing: the event carries none of the keys".to_owned()
        } else {
            self.keys
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        CrmError::Unavailable {
            status: Some(404),
            detail: format!(
                "no {record} for this project yet (looked up by {looked_up_by}): the project event that creates it has not been delivered"
            ),
            retry_after: None,
        }
    }
}

impl EventMap {
    /// Converts `event` through this mapping. Absent fields are left out (never invented, never
    /// cleared); a value that cannot be converted is left out too.
    pub fn apply(&self, event: &CrmEvent) -> Applied {
        let enerflo = serde_json::to_value(&event.enerflo).unwrap_or(Value::Null);
        let keys = self
            .keys
            .iter()
            .filter_map(|k| {
                let v = k.field.get(event, &enerflo)?;
                let text = value_to_string(&v)?;
                let text = text.trim();
                (!text.is_empty()).then(|| (k.property.clone(), text.to_owned()))
            })
            .collect();
        let convert = |props: &BTreeMap<String, Property>| {
            props
                .iter()
                .filter_map(|(name, p)| Some((name.clone(), p.convert(event, &enerflo)?)))
                .collect()
        };
        Applied {
            keys,
            properties: convert(&self.properties),
            on_create: convert(&self.on_create),
        }
    }
}

impl Property {
    fn convert(&self, event: &CrmEvent, enerflo: &Value) -> Option<FieldValue> {
        if let Conversion::List { separator, item } = &self.conversion {
            let mut parts = Vec::new();
            for f in &self.fields {
                let Some(v) = f.get(event, enerflo) else {
                    continue;
                };
                let items: Vec<Value> = match v {
                    Value::Array(a) => a,
                    other => vec![other],
                };
                for it in items {
                    let it = match item {
                        Some(field) => it.get(field).cloned().unwrap_or(Value::Null),
                        None => it,
                    };
                    if let Some(s) = scalar_text(&it) {
                        parts.push(s);
                    }
                }
            }
            return (!parts.is_empty()).then(|| FieldValue::Text(parts.join(separator)));
        }
        let v = self.fields.iter().find_map(|f| f.get(event, enerflo))?;
        convert_one(&self.conversion, &v)
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Null | Value::Array(_) | Value::Object(_) => None,
        Value::Number(n) => n.as_f64().map(number_text),
        other => value_to_string(other)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
    }
}

/// One value through one conversion; `None` when it does not convert.
pub fn convert_one(conversion: &Conversion, v: &Value) -> Option<FieldValue> {
    match conversion {
        Conversion::Text => scalar_text(v).map(FieldValue::Text),
        Conversion::Number { scale } => value_to_f64(v).map(|n| {
            let scaled = n * scale;
            // Round away float noise from the scale (8400 W * 0.001 = 8.4, not 8.400000000000001).
            FieldValue::Number((scaled * 1e6).round() / 1e6)
        }),
        Conversion::Date => {
            let s = scalar_text(v)?;
            parse_date(&s).map(FieldValue::Date)
        }
        Conversion::DateTime => {
            let s = scalar_text(v)?;
            if let Ok(t) = OffsetDateTime::parse(&s, &Rfc3339) {
                return Some(FieldValue::DateTime(t));
            }
            parse_date(&s).map(|d| FieldValue::DateTime(d.midnight().assume_utc()))
        }
        Conversion::Enumeration { options } => {
            let s = scalar_text(v)?;
            options
                .get(&s.to_lowercase())
                .map(|o| FieldValue::Text(o.clone()))
        }
        Conversion::List { .. } => scalar_text(v).map(FieldValue::Text),
        Conversion::Json => Some(FieldValue::Text(v.to_string())),
        Conversion::Bool => match v {
            Value::Bool(b) => Some(FieldValue::Bool(*b)),
            other => match scalar_text(other)?.to_lowercase().as_str() {
                "true" | "1" | "yes" => Some(FieldValue::Bool(true)),
                "false" | "0" | "no" => Some(FieldValue::Bool(false)),
                _ => None,
            },
        },
    }
}

/// `YYYY-MM-DD`, or the day of an RFC 3339 instant (in its own offset).
pub fn parse_date(s: &str) -> Option<Date> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = Date::parse(s.get(..10).unwrap_or(s), &fmt) {
        return Some(d);
    }
    OffsetDateTime::parse(s, &Rfc3339).ok().map(|t| t.date())
}

/// The built-in HubSpot profile (documented in the README, "HubSpot").
pub const HUBSPOT_DEFAULT: &str = include_str!("../../profiles/hubspot.json");

/// The built-in Salesforce profile (documented in the README, "Salesforce").
pub const SALESFORCE_DEFAULT: &str = include_str!("../../profiles/salesforce.json");

/// The built-in Monday.com profile (documented in the README, "Monday.com").
pub const MONDAY_DEFAULT: &str = include_str!("../../profiles/monday.json");

/// The profile to use: `CRM_MAPPING_FILE` when set, else `default` (built in).
pub fn load(
    file: Option<&str>,
    default_name: &str,
    default: &str,
) -> Result<Profile, ProfileError> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
                source_name: path.to_owned(),
                problems: vec![format!("CRM_MAPPING_FILE cannot be read: {e}")],
            })?;
            Profile::parse(path, &text)
        }
        None => Profile::parse(default_name, default),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::canonical::EnerfloRefs;
    use serde_json::json;

    #[test]
    fn a_record_not_created_yet_is_a_transient_404_naming_the_keys_looked_up() {
        let applied = Applied {
            keys: vec![
                ("enerflo_deal_id".into(), "deal-uuid-1".into()),
                ("enerflo_install_id".into(), "700001".into()),
            ],
            properties: BTreeMap::new(),
            on_create: BTreeMap::new(),
        };
        match applied.not_created_yet("HubSpot deals") {
            CrmError::Unavailable { status, detail, .. } => {
                assert_eq!(status, Some(404));
                assert!(
                    detail.starts_with("no HubSpot deals for this project yet (looked up by enerflo_deal_id=deal-uuid-1, enerflo_install_id=700001)"),
                    "{detail}"
                );
            }
            other => panic!("not transient: {other:?}"),
        }
        let none = Applied {
            keys: vec![],
            ..applied
        };
        let CrmError::Unavailable { detail, .. } = none.not_created_yet("Salesforce Opportunity")
        else {
            panic!("not transient")
        };
        assert!(
            detail.contains("looked up by nothing: the event carries none of the keys"),
            "{detail}"
        );
    }

    fn event(t: CrmEventType, data: Value) -> CrmEvent {
        CrmEvent {
            event_type: t,
            id: "evt_1".into(),
            occurred_at: "2026-11-28T10:00:00Z".into(),
            source_event: "deal.projectSubmitted".into(),
            crm_id: None,
            enerflo: EnerfloRefs {
                deal_id: Some("deal-uuid-1".into()),
                install_id: Some(42),
                customer_id: Some(7),
                ..EnerfloRefs::default()
            },
            data,
            raw: None,
        }
    }

    #[test]
    fn the_built_in_hubspot_profile_is_valid_and_maps_every_event_type() {
        let p = Profile::parse("built-in hubspot", HUBSPOT_DEFAULT).unwrap();
        for t in EVENT_TYPES {
            assert!(!p.event(t).keys.is_empty(), "{} has keys", t.as_str());
        }
        assert_eq!(p.event(CrmEventType::LeadUpserted).object, "contacts");
        assert_eq!(p.event(CrmEventType::ProjectSubmitted).object, "deals");
        assert_eq!(p.event(CrmEventType::NoteCreated).object, "notes");
    }

    #[test]
    fn an_invalid_profile_names_every_problem_at_once() {
        let bad = json!({
            "events": {
                "lead.upserted": {"object": "contacts", "keys": [],
                    "properties": {"firstname": {"field": "first_name", "type": "words"}}},
                "project.submitted": {"object": "deals",
                    "keys": [{"property": "enerflo_deal_id", "field": "$nowhere.id"}],
                    "properties": {"amount": {"field": "pricing.gross cost", "type": "number", "options": {"a": "b"}}}},
                "project.received": {"like": "project.resubmitted"},
                "lead.deleted": {"object": "contacts"}
            },
            "stages": {"by_status": {"Voided": ""}},
            "milestone_dates": {"pto": "pto date"}
        });
        let err = Profile::parse("test.json", &bad.to_string()).unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "events.lead.deleted: not an event type",
            "events.lead.upserted.keys: at least one",
            "events.lead.upserted.properties.firstname.type: `words`",
            "events.project.submitted.keys[0].field: `$nowhere.id`",
            "events.project.submitted.properties.amount.field: `pricing.gross cost`",
            "events.project.submitted.properties.amount.options: only for another type",
            "events.project.received.like: no event `project.resubmitted`",
            "events.status.changed: missing",
            "stages.by_status: `Voided`",
            "milestone_dates.pto: `pto date` is not a property name",
        ] {
            assert!(all.contains(needle), "missing `{needle}` in:\n{all}");
        }
        assert!(err.to_string().starts_with("mapping profile test.json: "));
    }

    #[test]
    fn a_profile_that_is_not_json_says_so() {
        let err = Profile::parse("x.json", "events: {}").unwrap_err();
        assert!(err.problems[0].contains("is not a valid profile"), "{err}");
    }

    #[test]
    fn conversions_render_as_hubspot_strings() {
        let p = Profile::parse("built-in hubspot", HUBSPOT_DEFAULT).unwrap();
        let ev = event(
            CrmEventType::ProjectSubmitted,
            json!({
                "customer": {"first_name": "Jane", "last_name": "Doe", "email": "jane@example.test"},
                "address": {"street": "1 Solar Way"},
                "system": {"size_watts": 8400, "panel_count": "20", "panel": {"name": "Example 420"},
                           "batteries": {"count": 1, "items": []}},
                "adders": [{"name": "Trenching", "amount": 1500.0, "kind": "system"},
                           {"name": "Main panel upgrade", "amount": 900.5, "kind": "value"}],
                "pricing": {"gross_cost": 31250.0},
                "finance": {"product": "Loan 25y"}
            }),
        );
        let applied = p.event(CrmEventType::ProjectSubmitted).apply(&ev);
        let get = |k: &str| applied.properties.get(k).map(FieldValue::hubspot);
        assert_eq!(
            applied.keys[0],
            ("enerflo_deal_id".into(), "deal-uuid-1".into())
        );
        assert_eq!(get("enerflo_system_size_kw").as_deref(), Some("8.4"));
        assert_eq!(get("enerflo_panel_count").as_deref(), Some("20"));
        assert_eq!(get("amount").as_deref(), Some("31250"));
        assert_eq!(
            get("enerflo_adders").as_deref(),
            Some("Trenching; Main panel upgrade")
        );
        assert_eq!(get("dealname").as_deref(), Some("Jane Doe 1 Solar Way"));
        assert_eq!(applied.keys[1], ("enerflo_install_id".into(), "42".into()));
        // Absent source fields are left out, never written as empty.
        assert_eq!(get("enerflo_finance_method"), None);
        let date = convert_one(&Conversion::Date, &json!("2026-12-15")).unwrap();
        assert_eq!(date.hubspot(), "1797292800000");
        let at = convert_one(&Conversion::DateTime, &json!("2026-11-28T10:15:00Z")).unwrap();
        assert_eq!(at.hubspot(), "1795860900000");
    }

    #[test]
    fn status_and_milestone_maps_resolve_names_ids_and_keys() {
        let p = Profile::parse("built-in hubspot", HUBSPOT_DEFAULT).unwrap();
        assert_eq!(p.stage_for_status("  voided "), Some("closedlost"));
        assert_eq!(p.stage_for_status("Some Custom Status"), None);
        let mut keys = BTreeMap::new();
        keys.insert("pto".to_owned(), 77u64);
        assert_eq!(
            p.milestone_property(Some(77), &keys),
            Some("enerflo_pto_date")
        );
        assert_eq!(p.milestone_property(Some(78), &keys), None);
    }

    #[test]
    fn enumerations_map_known_values_and_leave_out_the_rest() {
        let mut options = BTreeMap::new();
        options.insert("loan".to_owned(), "loan_option".to_owned());
        let c = Conversion::Enumeration { options };
        assert_eq!(
            convert_one(&c, &json!("LOAN")),
            Some(FieldValue::Text("loan_option".into()))
        );
        assert_eq!(convert_one(&c, &json!("lease")), None);
    }
}
