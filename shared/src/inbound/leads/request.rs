//! Reading and validating the body of `POST /crm/leads`: a [`LeadRequest`] cannot hold a
//! missing name, a non-US state or a malformed e-mail, and every bad field is named.

use serde_json::{Map, Value};

use crate::canonical::{Address, Lead, is_us_state, normalise_zip};
use crate::http::problem::FieldError;

const MAX_TEXT: usize = 255;
const MAX_NOTES: usize = 10_000;

/// A lead as the CRM sends it (docs/design.md 3.2), validated: it cannot hold a missing name, a
/// non-US state or a malformed e-mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeadRequest {
    pub crm_id: String,
    pub first_name: String,
    pub last_name: String,
    pub street: String,
    pub city: String,
    /// Upper-case 2-letter US code.
    pub state: String,
    /// `12345` or `12345-6789`.
    pub zip: String,
    pub email: Option<String>,
    /// Digits only.
    pub mobile: Option<String>,
    pub rep_email: Option<String>,
    pub setter_email: Option<String>,
    pub lead_source: Option<String>,
    pub notes: Option<String>,
    pub deal_type_id: Option<u64>,
    pub appointment_type_id: Option<u64>,
}

impl LeadRequest {
    /// Validates the body; on failure, every bad field is named (never its value: no customer
    /// data in error bodies).
    pub fn parse(body: &Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let crm_id = text(
            body.get("crm_id"),
            "crm_id",
            true,
            MAX_TEXT,
            true,
            &mut errors,
        );
        let first_name = text(
            body.get("first_name"),
            "first_name",
            true,
            MAX_TEXT,
            false,
            &mut errors,
        );
        let last_name = text(
            body.get("last_name"),
            "last_name",
            true,
            MAX_TEXT,
            false,
            &mut errors,
        );

        let (mut street, mut city, mut state, mut zip) = (None, None, None, None);
        match body.get("address") {
            Some(Value::Object(a)) => {
                street = text(
                    a.get("street"),
                    "address.street",
                    true,
                    MAX_TEXT,
                    false,
                    &mut errors,
                );
                city = text(
                    a.get("city"),
                    "address.city",
                    true,
                    MAX_TEXT,
                    false,
                    &mut errors,
                );
                state = us_state(a.get("state"), &mut errors);
                zip = us_zip(a.get("zip"), &mut errors);
            }
            None | Some(Value::Null) => {
                for part in ["street", "city", "state", "zip"] {
                    push(&mut errors, &format!("address.{part}"), "is required");
                }
            }
            Some(_) => push(
                &mut errors,
                "address",
                "must be an object with street, city, state and zip",
            ),
        }

        let email = email_field(body.get("email"), "email", &mut errors);
        let mobile = phone(body.get("mobile"), "mobile", &mut errors);
        let rep_email = email_field(body.get("rep_email"), "rep_email", &mut errors);
        let setter_email = email_field(body.get("setter_email"), "setter_email", &mut errors);
        let lead_source = text(
            body.get("lead_source"),
            "lead_source",
            false,
            MAX_TEXT,
            false,
            &mut errors,
        );
        let notes = text(
            body.get("notes"),
            "notes",
            false,
            MAX_NOTES,
            false,
            &mut errors,
        );
        let deal_type_id = positive_id(body.get("deal_type_id"), "deal_type_id", &mut errors);
        let appointment_type_id = positive_id(
            body.get("appointment_type_id"),
            "appointment_type_id",
            &mut errors,
        );

        match (crm_id, first_name, last_name, street, city, state, zip) {
            (
                Some(crm_id),
                Some(first_name),
                Some(last_name),
                Some(street),
                Some(city),
                Some(state),
                Some(zip),
            ) if errors.is_empty() => Ok(Self {
                crm_id,
                first_name,
                last_name,
                street,
                city,
                state,
                zip,
                email,
                mobile,
                rep_email,
                setter_email,
                lead_source,
                notes,
                deal_type_id,
                appointment_type_id,
            }),
            _ => Err(errors),
        }
    }

    /// The lead as the CRM holds it, in the canonical shape stage 1.2 pushes.
    pub fn canonical(&self) -> Lead {
        Lead {
            first_name: Some(self.first_name.clone()),
            last_name: Some(self.last_name.clone()),
            email: self.email.clone(),
            phone: self.mobile.clone(),
            address: Some(Address {
                street: Some(self.street.clone()),
                city: Some(self.city.clone()),
                state: Some(self.state.clone()),
                zip: Some(self.zip.clone()),
                country: None,
                lat: None,
                lng: None,
            }),
            lead_source: self.lead_source.clone(),
            timezone: None,
            owner: self.rep_email.clone(),
        }
    }

    /// Asks Enerflo to do more than store the lead (create a deal, start an appointment): such a
    /// request is never taken for an echo.
    pub(super) fn has_action(&self) -> bool {
        self.deal_type_id.is_some() || self.appointment_type_id.is_some()
    }
}

fn push(errors: &mut Vec<FieldError>, field: &str, message: &str) {
    errors.push(FieldError {
        field: field.to_owned(),
        message: message.to_owned(),
    });
}

/// Trimmed text; blank optional text reads as absent.
fn text(
    v: Option<&Value>,
    field: &str,
    required: bool,
    max: usize,
    numbers_ok: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let t = match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_owned()).filter(|t| !t.is_empty()),
        Some(Value::Number(n)) if numbers_ok => Some(n.to_string()),
        Some(_) => {
            let msg = if numbers_ok {
                "must be a string or a number"
            } else {
                "must be a string"
            };
            push(errors, field, msg);
            return None;
        }
    };
    let Some(t) = t else {
        if required {
            push(errors, field, "is required");
        }
        return None;
    };
    if t.chars().count() > max {
        push(errors, field, &format!("must be at most {max} characters"));
        return None;
    }
    if field != "notes" && t.chars().any(char::is_control) {
        push(errors, field, "must not contain control characters");
        return None;
    }
    Some(t)
}

fn us_state(v: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    let field = "address.state";
    let raw = text(v, field, true, MAX_TEXT, false, errors)?;
    if raw.len() == 2 && is_us_state(&raw) {
        Some(raw.to_ascii_uppercase())
    } else {
        push(errors, field, "must be a 2-letter US state code");
        None
    }
}

fn us_zip(v: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    let field = "address.zip";
    let raw = match v {
        // CRMs export zips as numbers; 2134 is Boston's 02134.
        Some(Value::Number(n)) => Some(n.to_string()),
        other => text(other, field, true, MAX_TEXT, false, errors),
    };
    let zip = normalise_zip(raw.as_deref(), None, Some("US"))?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match zip.split_once('-') {
        None => digits(&zip, 5),
        Some((five, four)) => digits(five, 5) && digits(four, 4),
    };
    if ok {
        Some(zip)
    } else {
        push(errors, field, "must be a US ZIP code (12345 or 12345-6789)");
        None
    }
}

fn email_field(v: Option<&Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let raw = text(v, field, false, 254, false, errors)?;
    if is_email(&raw) {
        Some(raw)
    } else {
        push(errors, field, "must be an e-mail address");
        None
    }
}

/// A practical e-mail check: one `@`, a dot-atom local part, a domain of at least two labels
/// with an alphabetic top level. No whitespace anywhere.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic));
    local_ok && domain_ok
}

/// A phone number as digits: formatting (`+1 (555) 010-0000`) is dropped; 7 to 15 digits.
fn phone(v: Option<&Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let raw = text(v, field, false, 40, true, errors)?;
    let allowed = raw
        .chars()
        .all(|c| c.is_ascii_digit() || " ()-.+".contains(c));
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    if allowed && (7..=15).contains(&digits.len()) {
        Some(digits)
    } else {
        push(errors, field, "must be a phone number of 7 to 15 digits");
        None
    }
}

fn positive_id(v: Option<&Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<u64> {
    let id = match v {
        None | Some(Value::Null) => return None,
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if s.trim().is_empty() => return None,
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    match id {
        Some(n) if n > 0 => Some(n),
        _ => {
            push(errors, field, "must be a positive whole number");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;
    use crate::inbound::leads::test_kit::{good, parse};

    #[test]
    fn crm_exports_are_read_numbers_and_formatting_included() {
        let body = json!({"crm_id": 12345, "first_name": "A", "last_name": "B",
            "address": {"street": "1 Way", "city": "Boston", "state": "MA", "zip": 2134},
            "mobile": "+1 (555) 010-0000", "deal_type_id": "7"});
        let lead = parse(&body).expect("valid");
        assert_eq!(lead.crm_id, "12345");
        assert_eq!(lead.zip, "02134");
        assert_eq!(lead.mobile.as_deref(), Some("15550100000"));
        assert_eq!(lead.deal_type_id, Some(7));
    }

    #[test]
    fn every_bad_field_is_named_without_echoing_its_value() {
        let body = json!({"crm_id": "  ", "first_name": "Pat", "last_name": 7,
            "address": {"street": "1 Example Way", "state": "Texas", "zip": "ABCDE"},
            "email": "pat@@example", "mobile": "call me", "rep_email": "rep at example.com",
            "deal_type_id": -1, "appointment_type_id": "soon"});
        let errors = parse(&body).expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "crm_id",
                "last_name",
                "address.city",
                "address.state",
                "address.zip",
                "email",
                "mobile",
                "rep_email",
                "deal_type_id",
                "appointment_type_id"
            ]
        );
        let text = serde_json::to_string(&errors).unwrap();
        for value in ["Texas", "ABCDE", "pat@@example", "call me"] {
            assert!(!text.contains(value), "{value} echoed in {text}");
        }
    }

    #[test]
    fn a_missing_address_names_each_part_and_a_wrong_shape_names_the_address() {
        let mut body = good();
        body.as_object_mut().unwrap().remove("address");
        let fields: Vec<String> = parse(&body)
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "address.street",
                "address.city",
                "address.state",
                "address.zip"
            ]
        );
        body["address"] = json!("1 Example Way, Exampleville TX");
        let errors = parse(&body).expect_err("invalid");
        assert_eq!(errors[0].field, "address");
    }

    #[test]
    fn emails_are_checked_sensibly() {
        for ok in [
            "a@b.co",
            "first.last+tag@sub.example.com",
            "o'neil@example.org",
        ] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "a@b",
            "a@@b.com",
            "@b.com",
            "a@b.c",
            "a b@c.com",
            "a@-b.com",
            ".a@b.com",
            "a..b@c.com",
            "a@b..com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
