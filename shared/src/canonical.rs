//! Canonical records: the CRM-facing shapes of docs/design.md 3.3, independent of Enerflo's payload
//! generations. Unknown or missing source fields are `None` (serialised as `null`), never invented.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `type` of an event sent to the CRM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CrmEventType {
    #[serde(rename = "lead.upserted")]
    LeadUpserted,
    #[serde(rename = "project.submitted")]
    ProjectSubmitted,
    #[serde(rename = "project.received")]
    ProjectReceived,
    #[serde(rename = "milestone.updated")]
    MilestoneUpdated,
    #[serde(rename = "status.changed")]
    StatusChanged,
    #[serde(rename = "note.created")]
    NoteCreated,
    #[serde(rename = "change_order.signed")]
    ChangeOrderSigned,
}

impl CrmEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeadUpserted => "lead.upserted",
            Self::ProjectSubmitted => "project.submitted",
            Self::ProjectReceived => "project.received",
            Self::MilestoneUpdated => "milestone.updated",
            Self::StatusChanged => "status.changed",
            Self::NoteCreated => "note.created",
            Self::ChangeOrderSigned => "change_order.signed",
        }
    }
}

/// The Enerflo ids an event carries, in every form we know for the entity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EnerfloRefs {
    pub customer_id: Option<u64>,
    pub customer_uuid: Option<String>,
    /// Always the v2 deal UUID (docs/design.md 3.5).
    pub deal_id: Option<String>,
    pub install_id: Option<u64>,
    /// The v1 survey ("deal") number, when known.
    pub survey_id: Option<u64>,
}

/// One event POSTed to the CRM connector (docs/design.md 3.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrmEvent {
    #[serde(rename = "type")]
    pub event_type: CrmEventType,
    /// Stable: the same on every retry of the same change.
    pub id: String,
    pub occurred_at: String,
    pub source_event: String,
    pub crm_id: Option<String>,
    pub enerflo: EnerfloRefs,
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub street: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub zip: Option<String>,
    pub country: Option<String>,
    pub lat: Option<f64>,
    pub lng: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address: Option<Address>,
    pub lead_source: Option<String>,
    pub timezone: Option<String>,
    pub owner: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Panel {
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub capacity_watts: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Inverter {
    pub name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub count: Option<u64>,
    pub ac_output_watts: Option<f64>,
    pub is_micro: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batteries {
    pub count: Option<u64>,
    pub purpose: Option<String>,
    /// Element shape is undocumented: passed through as Enerflo sent it.
    pub items: Vec<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct System {
    pub size_watts: Option<f64>,
    pub panel: Option<Panel>,
    pub panel_count: Option<u64>,
    pub inverters: Vec<Inverter>,
    pub batteries: Batteries,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdderKind {
    System,
    Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adder {
    pub name: Option<String>,
    pub amount: Option<f64>,
    pub kind: AdderKind,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Finance {
    pub product: Option<String>,
    pub method: Option<String>,
    pub term_months: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    pub gross_cost: Option<f64>,
    pub net_cost: Option<f64>,
    pub gross_ppw: Option<f64>,
    pub net_ppw: Option<f64>,
}

/// A file reference: name and source step only. Enerflo's URLs are short-lived pre-signed links
/// (docs/peer-lessons.md 14) and are never handed to the CRM as if permanent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRef {
    pub name: Option<String>,
    pub source: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub customer: Lead,
    pub address: Option<Address>,
    pub system: System,
    pub adders: Vec<Adder>,
    pub finance: Finance,
    pub pricing: Pricing,
    pub files: Vec<FileRef>,
    pub resubmission: bool,
}

/// Trims and drops blank text.
pub fn clean(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

const US_STATES: &[&str] = &[
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA",
    "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM",
    "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA",
    "WV", "WI", "WY", "PR", "GU", "VI", "AS", "MP",
];

pub fn is_us_state(code: &str) -> bool {
    let c = code.trim().to_ascii_uppercase();
    US_STATES.contains(&c.as_str())
}

/// A zip as text; for a US address (US state or country), 5 digits zero-padded when it arrived as
/// a number (`1234` -> `"01234"`, `75001.0` -> `"75001"`). ZIP+4 and foreign codes pass through.
pub fn normalise_zip(
    raw: Option<&str>,
    state: Option<&str>,
    country: Option<&str>,
) -> Option<String> {
    let zip = clean(raw)?;
    let us = country.is_some_and(|c| {
        matches!(
            c.trim().to_ascii_uppercase().as_str(),
            "US" | "USA" | "UNITED STATES"
        )
    }) || (country.is_none_or(|c| c.trim().is_empty()) && state.is_some_and(is_us_state));
    if !us {
        return Some(zip);
    }
    let digits = zip.strip_suffix(".0").unwrap_or(&zip);
    if !digits.is_empty() && digits.len() < 5 && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!("{digits:0>5}"));
    }
    Some(digits.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn us_zips_are_five_digit_strings() {
        assert_eq!(
            normalise_zip(Some("1234"), Some("MA"), None).as_deref(),
            Some("01234")
        );
        assert_eq!(
            normalise_zip(Some("75001.0"), None, Some("US")).as_deref(),
            Some("75001")
        );
        assert_eq!(
            normalise_zip(Some("75001-1234"), Some("TX"), None).as_deref(),
            Some("75001-1234")
        );
        assert_eq!(
            normalise_zip(Some("123"), Some("ON"), Some("CA")).as_deref(),
            Some("123")
        );
        assert_eq!(normalise_zip(Some(" "), Some("TX"), None), None);
    }
}
