//! Column values compared across the two directions: what we wrote (our `column_values` JSON),
//! what a webhook says (`event.value`) and what an item read shows (`column_values { text value }`)
//! reduced to one comparable text per column type, so a webhook of our own write is recognised
//! whatever shape Monday reports it in (docs/monday.md 3.2, 3.3, 6.3).

use serde_json::Value;

/// The comparable text of a value we wrote into a column of `column_type`.
pub fn written(column_type: &str, value: &Value) -> Option<String> {
    let s = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
    let out = match (column_type, value) {
        (_, Value::Null) => Some(String::new()),
        ("status", _) => s("label"),
        ("date", _) => s("date"),
        ("email", _) => s("email"),
        ("phone", _) => s("phone").map(|p| digits(&p)),
        ("long_text", _) => s("text"),
        ("link", _) => s("url"),
        ("checkbox", _) => Some("true".into()),
        ("dropdown", _) => value.get("labels").and_then(Value::as_array).map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        }),
        ("numbers", Value::String(n)) => Some(number(n)),
        (_, Value::String(t)) => Some(t.clone()),
        _ => None,
    };
    out.map(|t| t.trim().to_owned())
}

/// The comparable text of a column as a webhook's `value` reports it (`None`: cleared).
pub fn from_webhook(column_type: &str, value: &Value) -> String {
    let out = match column_type {
        "status" | "color" => value
            .pointer("/label/text")
            .and_then(Value::as_str)
            .map(str::to_owned),
        "date" => value.get("date").and_then(Value::as_str).map(str::to_owned),
        "email" => value
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_owned),
        "phone" => value.get("phone").and_then(Value::as_str).map(digits),
        "numbers" | "numeric" => value
            .get("value")
            .map(|v| number(&v.as_str().map_or_else(|| v.to_string(), str::to_owned))),
        "long_text" => value.get("text").and_then(Value::as_str).map(str::to_owned),
        _ => value
            .get("value")
            .and_then(Value::as_str)
            .or_else(|| value.get("text").and_then(Value::as_str))
            .map(str::to_owned),
    };
    out.unwrap_or_default().trim().to_owned()
}

/// The comparable text of a column as an item read gives it (`text` and the `value` JSON
/// string): dates from `value.date` (`text` is in the caller's time zone), e-mails and phones
/// from their `value`, everything else its display text.
pub fn from_read(column_type: &str, text: Option<&str>, value: Option<&str>) -> String {
    let v: Value = value
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or(Value::Null);
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let out = match column_type {
        "date" => field("date"),
        "email" => field("email").or_else(|| text.map(str::to_owned)),
        "phone" => field("phone").map(|p| digits(&p)),
        "numbers" => text.map(number),
        _ => text.map(str::to_owned),
    };
    out.unwrap_or_default().trim().to_owned()
}

fn digits(p: &str) -> String {
    p.chars().filter(char::is_ascii_digit).collect()
}

fn number(n: &str) -> String {
    match n.trim().trim_matches('"').parse::<f64>() {
        Ok(v) => crate::crm::profile::number_text(v),
        Err(_) => n.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn our_write_and_monday_s_report_of_it_compare_equal() {
        let label = json!({"label": "Permitting Complete"});
        let hook = json!({"label": {"index": 3, "text": "Permitting Complete", "is_done": false}, "post_id": null});
        assert_eq!(
            written("status", &label).unwrap(),
            from_webhook("color", &hook)
        );
        let date = json!({"date": "2026-03-04"});
        assert_eq!(
            written("date", &date).unwrap(),
            from_webhook(
                "date",
                &json!({"date": "2026-03-04", "icon": null, "time": null})
            )
        );
        assert_eq!(
            written("date", &date).unwrap(),
            from_read(
                "date",
                Some("Mar 4"),
                Some(r#"{"date":"2026-03-04","changed_at":"x"}"#)
            )
        );
        assert_eq!(
            written("numbers", &json!("8.40")).unwrap(),
            from_read("numbers", Some("8.4"), Some("\"8.4\""))
        );
        assert_eq!(
            written(
                "phone",
                &json!({"phone": "+15555550100", "countryShortName": "US"})
            )
            .unwrap(),
            from_read(
                "phone",
                Some("+1 555 555 0100"),
                Some(r#"{"phone":"15555550100","countryShortName":"US"}"#)
            )
        );
        assert_eq!(written("text", &Value::Null).unwrap(), "");
    }
}
