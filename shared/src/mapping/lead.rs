//! Customers (v1 `new_customer` / `update_customer`, v2 `customer.created` /
//! `customer.updated.v2`) -> canonical [`Lead`], plus what both lead directions need to agree on:
//! the lead key (the fields a CRM lead and an Enerflo customer share, normalised, used for echo
//! fingerprints) and the blank-keeping merge with the last synced state. The store keys both
//! directions use are typed in `crate::sync::keys` (`StateKey::Lead`, `StateKey::CrmLead`,
//! `StateKey::LeadSent`, `StateKey::LeadWritten`, `EchoTarget::Lead`).

use serde_json::{Map, Value};

use crate::canonical::{Address, Lead, clean, normalise_zip};
use crate::config::LeadFields;
use crate::enerflo::envelope::{Envelope, Generation};
use crate::enerflo::lenient::{first_path, path, value_to_f64, value_to_string, value_to_u64};
use crate::hashing::content_hash;
use crate::timefmt::parse_enerflo_time;

/// The fields a CRM lead and an Enerflo customer both carry, normalised so that formatting
/// differences between the two systems (`(555) 010-0000` vs `5550100000`, case, whitespace, a
/// zip+4) do not make the same person look different. Used for echo fingerprints only; what is
/// pushed stays as Enerflo sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LeadKey {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub street: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub zip: Option<String>,
}

fn norm(s: Option<&str>) -> Option<String> {
    let t = s?.split_whitespace().collect::<Vec<_>>().join(" ");
    (!t.is_empty()).then(|| t.to_lowercase())
}

/// The last ten digits of a phone number (drops formatting and a leading country code).
pub fn phone_digits(s: Option<&str>) -> Option<String> {
    let digits: String = s?.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    Some(digits[digits.len().saturating_sub(10)..].to_owned())
}

impl LeadKey {
    pub fn of(lead: &Lead) -> Self {
        let a = lead.address.as_ref();
        Self {
            first_name: norm(lead.first_name.as_deref()),
            last_name: norm(lead.last_name.as_deref()),
            email: norm(lead.email.as_deref()),
            phone: phone_digits(lead.phone.as_deref()),
            street: norm(a.and_then(|a| a.street.as_deref())),
            city: norm(a.and_then(|a| a.city.as_deref())),
            state: norm(a.and_then(|a| a.state.as_deref())),
            zip: norm(a.and_then(|a| a.zip.as_deref())).map(|z| z.chars().take(5).collect()),
        }
    }

    /// From a stored state's `data` (a serialised [`Lead`]); an unreadable one keys as empty.
    pub fn of_value(data: &Value) -> Self {
        Self::of(&serde_json::from_value(data.clone()).unwrap_or_default())
    }

    pub fn hash(&self) -> String {
        content_hash(self)
    }

    /// Whether every field this key has is equal in `other` (fields this key lacks are not
    /// compared: a CRM lead without an e-mail agrees with an Enerflo customer that has one).
    pub fn agrees_with(&self, other: &LeadKey) -> bool {
        let same = |a: &Option<String>, b: &Option<String>| a.is_none() || a == b;
        same(&self.first_name, &other.first_name)
            && same(&self.last_name, &other.last_name)
            && same(&self.email, &other.email)
            && same(&self.phone, &other.phone)
            && same(&self.street, &other.street)
            && same(&self.city, &other.city)
            && same(&self.state, &other.state)
            && same(&self.zip, &other.zip)
    }
}

/// The hash "changed?" is judged by (docs/design.md 3.5) for a serialised [`Lead`]: its content, with the
/// phone as digits, so a v1 copy (`(555) 010-0000`) and a v2 copy (`5550100000`) of the same
/// number are no change.
pub fn state_hash(lead: &Value) -> String {
    let mut v = lead.clone();
    if let Some(phone) = v.get_mut("phone") {
        let digits = phone_digits(phone.as_str());
        *phone = digits.map_or(Value::Null, Value::String);
    }
    content_hash(&v)
}

/// A copy too thin to create a contact from: no name, or nothing to reach the person by.
/// Enerflo sends `customer.created` two or three times within a second, some copies nearly
/// empty; a thin copy of a customer we never synced is skipped (the full copy follows).
pub fn is_thin(lead: &Lead) -> bool {
    let named = lead.first_name.is_some() || lead.last_name.is_some();
    let reachable = lead.email.is_some()
        || lead.phone.is_some()
        || lead
            .address
            .as_ref()
            .is_some_and(|a| a.street.is_some() || a.zip.is_some());
    !(named && reachable)
}

/// `new` with every null or blank field filled from `last` (recursively): an empty copy never
/// overwrites good data with blanks.
pub fn merge_keep(new: &Value, last: &Value) -> Value {
    match (new, last) {
        (Value::Object(n), Value::Object(l)) => {
            let mut out = Map::new();
            for (k, v) in n {
                let merged = match l.get(k) {
                    Some(old) if is_blank(v) => old.clone(),
                    Some(old @ Value::Object(_)) if v.is_object() => merge_keep(v, old),
                    _ => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            for (k, old) in l {
                out.entry(k.clone()).or_insert_with(|| old.clone());
            }
            Value::Object(out)
        }
        (n, l) if is_blank(n) => l.clone(),
        (n, _) => n.clone(),
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// The ids a customer event carries, in every form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomerIds {
    /// v1 customer id (`new_customer.id`).
    pub customer_id: Option<u64>,
    /// v2 customer UUID (`payload.customer.id`).
    pub customer_uuid: Option<String>,
    /// The origin system's id as Enerflo stores it (`external_id` / `integration_record_id`).
    pub external_id: Option<String>,
}

/// One customer event, read tolerantly.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CustomerEvent {
    pub ids: CustomerIds,
    pub lead: Lead,
    /// The change time the payload states, RFC 3339.
    pub occurred_at: Option<String>,
}

impl CustomerEvent {
    /// Reads a v1 (flat record) or v2 (`payload.customer` / `payload.current`) customer.
    pub fn from_envelope(env: &Envelope, fields: &LeadFields) -> Self {
        match env.generation {
            Generation::V1 => Self::from_v1(&env.record, fields),
            Generation::V2 => {
                let customer = ["current", "customer"]
                    .iter()
                    .find_map(|k| env.record.get(*k).filter(|v| v.is_object()))
                    .cloned()
                    .unwrap_or(Value::Null);
                Self::from_v2(&customer, &env.record, fields)
            }
        }
    }

    fn from_v1(r: &Value, fields: &LeadFields) -> Self {
        let text = |paths: &[&str]| first_path(r, paths).and_then(|(v, _)| value_to_string(v));
        // `address` is an object in the documented events; tolerate lead/add's flat shape too.
        let (street, addr) = match r.get("address") {
            Some(a @ Value::Object(_)) => (
                first_path(a, &["street", "address", "line1"])
                    .and_then(|(v, _)| value_to_string(v)),
                a,
            ),
            Some(v) => (value_to_string(v), r),
            None => (None, r),
        };
        let at = |paths: &[&str]| first_path(addr, paths).and_then(|(v, _)| value_to_string(v));
        let coord = |paths: &[&str]| first_path(addr, paths).and_then(|(v, _)| value_to_f64(v));
        let state = at(&["state"]);
        let country = at(&["country"]);
        let address = Address {
            street,
            city: at(&["city"]),
            zip: normalise_zip(
                at(&["zip", "postal_code", "zipcode"]).as_deref(),
                state.as_deref(),
                country.as_deref(),
            ),
            state,
            country,
            lat: coord(&["latitude", "lat"]),
            lng: coord(&["longitude", "lng"]),
        };
        let lead = Lead {
            first_name: text(&["first_name"]),
            last_name: text(&["last_name"]),
            email: text(&["email"]),
            phone: text(&["phone", "mobile"]),
            address: (address != Address::default()).then_some(address),
            lead_source: text(&["lead_source"]),
            timezone: text(&["customer_timezone", "timezone"]),
            owner: owner(r, None, fields),
        };
        Self {
            ids: CustomerIds {
                customer_id: r.get("id").and_then(value_to_u64),
                customer_uuid: None,
                external_id: text(&["external_id", "integration_record_id"]),
            },
            lead,
            occurred_at: text(&[
                "timestamps.updated_at",
                "timestamps.created_at",
                "updated_at",
            ])
            .and_then(|t| parse_enerflo_time(&t)),
        }
    }

    fn from_v2(c: &Value, payload: &Value, fields: &LeadFields) -> Self {
        let text = |paths: &[&str]| first_path(c, paths).and_then(|(v, _)| value_to_string(v));
        let a = c.get("address").filter(|v| v.is_object());
        let at = |k: &str| a.and_then(|a| a.get(k)).and_then(value_to_string);
        let coord = |k: &str| a.and_then(|a| a.get(k)).and_then(value_to_f64);
        let street = match (at("line1"), at("line2")) {
            (Some(l1), Some(l2)) => Some(format!("{l1} {l2}")),
            (l1, l2) => l1.or(l2),
        };
        let state = at("state");
        let country = at("country");
        let address = Address {
            street,
            city: at("city"),
            zip: normalise_zip(
                at("postalCode").or_else(|| at("zip")).as_deref(),
                state.as_deref(),
                country.as_deref(),
            ),
            state,
            country,
            lat: coord("lat"),
            lng: coord("lng"),
        };
        let lead = Lead {
            first_name: text(&["firstName", "first_name"]),
            last_name: text(&["lastName", "last_name"]),
            email: text(&["email"]),
            phone: text(&["phone", "mobile"]),
            address: (address != Address::default()).then_some(address),
            lead_source: text(&["leadSource", "lead_source"]),
            timezone: text(&["tz", "timezone"]),
            owner: owner(c, Some(payload), fields),
        };
        Self {
            ids: CustomerIds {
                customer_id: None,
                customer_uuid: text(&["id"]),
                external_id: text(&[
                    "externalId",
                    "external_id",
                    "integrationRecordId",
                    "integration_record_id",
                ])
                .or_else(|| integration_id(c.get("integrationIds"))),
            },
            lead,
            occurred_at: text(&["updatedAt", "createdAt"]).and_then(|t| parse_enerflo_time(&t)),
        }
    }
}

/// An integration record id from v2 `integrationIds` (element shape undocumented): only an
/// object naming its field explicitly counts; a bare string could be anything.
fn integration_id(v: Option<&Value>) -> Option<String> {
    let Some(Value::Array(items)) = v else {
        return None;
    };
    items.iter().find_map(|item| {
        first_path(
            item,
            &[
                "integrationRecordId",
                "integration_record_id",
                "externalId",
                "external_id",
            ],
        )
        .and_then(|(v, _)| value_to_string(v))
    })
}

/// The lead owner: an object's e-mail (else id, else name), or a plain value as text.
fn owner(customer: &Value, payload: Option<&Value>, fields: &LeadFields) -> Option<String> {
    let found = first_path(customer, &fields.owner_paths)
        .or_else(|| payload.and_then(|p| first_path(p, &fields.owner_paths)))
        .map(|(v, _)| v)?;
    match found {
        Value::Object(_) => ["email", "id", "name", "fullName"]
            .iter()
            .find_map(|k| path(found, k).and_then(value_to_string)),
        other => value_to_string(other),
    }
    .and_then(|s| clean(Some(&s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const V1_NEW: &str = include_str!("../../../tests/fixtures/enerflo/v1-new_customer.json");
    const V1_UPDATE: &str = include_str!("../../../tests/fixtures/enerflo/v1-update_customer.json");
    const V2_CREATED: &str =
        include_str!("../../../tests/fixtures/enerflo/v2-customer.created.json");
    const V2_UPDATED: &str =
        include_str!("../../../tests/fixtures/enerflo/v2-customer.updated.v2.json");

    fn read(body: &str) -> CustomerEvent {
        let env = Envelope::parse(body.as_bytes(), None).expect("envelope");
        CustomerEvent::from_envelope(&env, &LeadFields::default())
    }

    #[test]
    fn v1_new_customer_maps_every_lead_field() {
        let e = read(V1_NEW);
        assert_eq!(e.ids.customer_id, Some(900001));
        assert_eq!(e.ids.external_id, None);
        let l = &e.lead;
        assert_eq!(l.first_name.as_deref(), Some("Pat"));
        assert_eq!(l.last_name.as_deref(), Some("Placeholder"));
        assert_eq!(l.email.as_deref(), Some("pat.placeholder@example.com"));
        assert_eq!(l.phone.as_deref(), Some("(555) 010-0000"));
        assert_eq!(l.timezone.as_deref(), Some("America/Chicago"));
        assert_eq!(l.lead_source, None, "blank lead_source is null, not \"\"");
        let a = l.address.as_ref().expect("address");
        assert_eq!(a.street.as_deref(), Some("1 Example Way"));
        assert_eq!(a.zip.as_deref(), Some("75001"));
        assert_eq!((a.lat, a.lng), (Some(32.0), Some(-97.0)));
        assert_eq!(e.occurred_at.as_deref(), Some("2025-01-01T12:00:00Z"));
    }

    #[test]
    fn v1_update_customer_takes_its_update_time() {
        let e = read(V1_UPDATE);
        assert_eq!(e.ids.customer_id, Some(900001));
        assert_eq!(e.occurred_at.as_deref(), Some("2025-01-02T09:30:00Z"));
    }

    #[test]
    fn v2_created_and_updated_read_the_customer_object() {
        let c = read(V2_CREATED);
        assert_eq!(
            c.ids.customer_uuid.as_deref(),
            Some("00000000-0000-4000-8000-000000000003")
        );
        assert_eq!(c.lead.phone.as_deref(), Some("5550100000"));
        assert_eq!(c.lead.address.as_ref().and_then(|a| a.lat), None);
        let u = read(V2_UPDATED);
        assert_eq!(u.ids.customer_uuid, c.ids.customer_uuid);
        assert_eq!(
            u.lead.email.as_deref(),
            Some("pat.placeholder@example.com"),
            "current, not previous"
        );
    }

    #[test]
    fn drifted_types_are_read_not_rejected() {
        let body = json!({"webhook_event": "new_customer", "id": "900002", "external_id": 42,
            "first_name": " Ann ", "address": {"zip": 1234, "state": "MA",
            "latitude": "41.81174380", "longitude": "-71.4"}});
        let e = read(&body.to_string());
        assert_eq!(e.ids.customer_id, Some(900002));
        assert_eq!(e.ids.external_id.as_deref(), Some("42"));
        assert_eq!(e.lead.first_name.as_deref(), Some("Ann"));
        let a = e.lead.address.expect("address");
        assert_eq!(a.zip.as_deref(), Some("01234"));
        assert_eq!((a.lat, a.lng), (Some(41.8117438), Some(-71.4)));
    }

    #[test]
    fn v2_owner_and_integration_ids_are_read_when_present() {
        let body = json!({"event": "customer.created", "payload": {"customer": {"id": "u1",
            "leadOwner": {"id": "user-1", "email": "rep@example.com"},
            "integrationIds": ["opaque", {"integrationRecordId": "crm-7"}]}}});
        let e = read(&body.to_string());
        assert_eq!(e.lead.owner.as_deref(), Some("rep@example.com"));
        assert_eq!(e.ids.external_id.as_deref(), Some("crm-7"));
    }

    #[test]
    fn lead_key_ignores_formatting_but_not_content() {
        let a = Lead {
            first_name: Some("Pat".into()),
            phone: Some("(555) 010-0000".into()),
            email: Some("Pat@Example.com".into()),
            ..Lead::default()
        };
        let b = Lead {
            first_name: Some(" pat ".into()),
            phone: Some("+1 555 010 0000".into()),
            email: Some("pat@example.com".into()),
            ..Lead::default()
        };
        assert_eq!(LeadKey::of(&a).hash(), LeadKey::of(&b).hash());
        let c = Lead {
            email: Some("other@example.com".into()),
            ..b.clone()
        };
        assert_ne!(LeadKey::of(&a).hash(), LeadKey::of(&c).hash());
        let partial = Lead {
            first_name: Some("PAT".into()),
            ..Lead::default()
        };
        assert!(LeadKey::of(&partial).agrees_with(&LeadKey::of(&a)));
        assert!(!LeadKey::of(&c).agrees_with(&LeadKey::of(&a)));
    }

    #[test]
    fn merge_keeps_known_values_over_blanks_and_takes_real_changes() {
        let last = json!({"first_name": "Pat", "email": "pat@example.com",
            "address": {"street": "1 Example Way", "zip": "75001", "lat": 32.0}});
        let thin = json!({"first_name": "Pat", "email": null,
            "address": {"street": "", "zip": null, "lat": null}});
        assert_eq!(merge_keep(&thin, &last), last);
        let changed = json!({"first_name": "Pat", "email": "new@example.com", "address": null});
        assert_eq!(
            merge_keep(&changed, &last),
            json!({"first_name": "Pat", "email": "new@example.com",
                "address": {"street": "1 Example Way", "zip": "75001", "lat": 32.0}})
        );
    }

    #[test]
    fn phone_formatting_is_no_change() {
        let a = json!({"first_name": "Pat", "phone": "(555) 010-0000"});
        let b = json!({"first_name": "Pat", "phone": "5550100000"});
        let c = json!({"first_name": "Pat", "phone": "5550109999"});
        assert_eq!(state_hash(&a), state_hash(&b));
        assert_ne!(state_hash(&a), state_hash(&c));
    }

    #[test]
    fn lead_field_names_and_paths_are_configurable() {
        let env = |k: &str| match k {
            "ENERFLO_LEAD_NOTES_FIELD" => Some("add_note".to_owned()),
            "ENERFLO_LEAD_OFFICE_MATCH" => Some(String::new()),
            "ENERFLO_LEAD_OWNER_PATHS" => Some(" owner.email , rep ".to_owned()),
            _ => None,
        };
        let lead = crate::config::Config::from_lookup(env)
            .expect("loads")
            .fields
            .lead;
        assert_eq!(lead.notes_field, "add_note");
        assert_eq!(lead.office_match, "");
        assert_eq!(lead.owner_paths, ["owner.email", "rep"]);
        assert_eq!(lead.create_deal_field, "createDeal", "default kept");
    }

    #[test]
    fn thin_copies_are_recognised() {
        assert!(is_thin(&Lead::default()));
        assert!(is_thin(&Lead {
            first_name: Some("Pat".into()),
            ..Lead::default()
        }));
        assert!(!is_thin(&read(V2_CREATED).lead));
    }
}
