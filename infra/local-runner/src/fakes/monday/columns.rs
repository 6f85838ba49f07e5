//! Column values as Monday.com validates and stores them (the team's Monday reference,
//! docs/monday.md 3.2-3.3): each type's write format, its `ColumnValueException` when the value
//! does not fit, `CorrectedValueException` for a plain string to a JSON-only column, and the
//! `value` JSON and display `text` a read returns.

use serde_json::{Map, Value, json};

use super::store::Column;

/// Why a value was refused: Monday's code and message, and the column it was for.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueError {
    pub code: &'static str,
    pub message: String,
}

fn bad(message: impl Into<String>) -> ValueError {
    ValueError {
        code: "ColumnValueException",
        message: message.into(),
    }
}

/// What a write stores: the `value` JSON (without `changed_at`) and the display text.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub value: Value,
    pub text: String,
}

/// Types whose value can be written only as JSON: a plain string is corrected, not guessed.
const JSON_ONLY: [&str; 6] = [
    "long_text",
    "location",
    "link",
    "board_relation",
    "checkbox",
    "timeline",
];
/// Types no write may touch.
pub const READ_ONLY: [&str; 11] = [
    "mirror",
    "formula",
    "auto_number",
    "creation_log",
    "last_updated",
    "item_id",
    "file",
    "button",
    "progress",
    "subtasks",
    "time_tracking",
];

/// Checks `value` for `column` and says what is stored: `None` clears it. `create_labels`
/// adds a missing status or dropdown label to the column instead of refusing it; `item_exists`
/// answers whether a linked item exists.
pub fn write(
    column: &mut Column,
    value: &Value,
    create_labels: bool,
    item_exists: &dyn Fn(u64) -> bool,
) -> Result<Option<Stored>, ValueError> {
    if value.is_null() {
        return Ok(None);
    }
    let kind = column.kind.as_str();
    if READ_ONLY.contains(&kind) {
        return Err(bad(format!(
            "the {kind} column cannot be changed through the API"
        )));
    }
    if let Value::String(s) = value
        && JSON_ONLY.contains(&kind)
    {
        return Err(ValueError {
            code: "CorrectedValueException",
            message: format!(
                "a {kind} column takes a JSON object, not the string `{}`",
                cut(s)
            ),
        });
    }
    let obj = value.as_object();
    let only = |allowed: &[&str]| -> Result<&Map<String, Value>, ValueError> {
        let Some(o) = obj else {
            return Err(bad(format!("a {kind} column takes a JSON object")));
        };
        if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad(format!("unknown key `{k}` for a {kind} column")));
        }
        Ok(o)
    };
    let str_at =
        |o: &Map<String, Value>, k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    let stored = match kind {
        "text" | "name" => match value {
            Value::String(s) => Stored {
                value: Value::String(s.clone()),
                text: s.clone(),
            },
            Value::Number(n) => Stored {
                value: Value::String(n.to_string()),
                text: n.to_string(),
            },
            _ => return Err(bad("a text column takes a string")),
        },
        "long_text" => {
            let o = only(&["text"])?;
            let t = str_at(o, "text").ok_or_else(|| bad("a long_text value needs `text`"))?;
            Stored {
                value: json!({"text": t}),
                text: t,
            }
        }
        "numbers" => {
            let raw = match value {
                Value::String(s) => s.trim().to_owned(),
                Value::Number(n) => n.to_string(),
                _ => return Err(bad("a numbers column takes a number as a string")),
            };
            if raw.is_empty() {
                return Ok(None);
            }
            match raw.parse::<f64>() {
                Ok(n) if n.is_finite() => Stored {
                    value: Value::String(raw.clone()),
                    text: raw,
                },
                _ => return Err(bad(format!("`{}` is not a number", cut(&raw)))),
            }
        }
        "status" => {
            let (label, index) = match value {
                Value::String(s) => match s.trim().parse::<u64>() {
                    Ok(i) => (None, Some(i)),
                    Err(_) => (Some(s.trim().to_owned()), None),
                },
                _ => {
                    let o = only(&["label", "index"])?;
                    (str_at(o, "label"), o.get("index").and_then(Value::as_u64))
                }
            };
            let found = match (&label, index) {
                (Some(l), _) => column.labels.iter().find(|(_, t)| t == l).cloned(),
                (None, Some(i)) => column.labels.iter().find(|(j, _)| *j == i).cloned(),
                (None, None) => return Err(bad("a status value needs `label` or `index`")),
            };
            let (i, text) = match (found, label) {
                (Some(f), _) => f,
                (None, Some(l)) if create_labels => {
                    let next = column.labels.iter().map(|(i, _)| *i + 1).max().unwrap_or(0);
                    let next = if next == 5 { 6 } else { next };
                    column.labels.push((next, l.clone()));
                    (next, l)
                }
                (None, l) => {
                    return Err(bad(format!(
                        "invalid value - label `{}` does not exist in column. Labels: {}",
                        l.unwrap_or_else(|| index.map(|i| i.to_string()).unwrap_or_default()),
                        column
                            .labels
                            .iter()
                            .map(|(_, t)| t.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            };
            Stored {
                value: json!({"index": i, "post_id": null}),
                text,
            }
        }
        "date" => {
            let (date, time) = match value {
                Value::String(s) => {
                    let mut parts = s.split_whitespace();
                    (
                        parts.next().unwrap_or("").to_owned(),
                        parts.next().map(str::to_owned),
                    )
                }
                _ => {
                    let o = only(&["date", "time"])?;
                    (
                        str_at(o, "date").ok_or_else(|| bad("a date value needs `date`"))?,
                        str_at(o, "time"),
                    )
                }
            };
            if !is_date(&date) {
                return Err(bad(format!("`{}` is not a date as YYYY-MM-DD", cut(&date))));
            }
            if let Some(t) = &time
                && !is_time(t)
            {
                return Err(bad(format!("`{}` is not a time as HH:MM:SS", cut(t))));
            }
            let text = match &time {
                Some(t) => format!("{date} {}", &t[..5]),
                None => date.clone(),
            };
            Stored {
                value: json!({"date": date, "time": time, "icon": null}),
                text,
            }
        }
        "email" => {
            let (email, text) = match value {
                Value::String(s) => {
                    let mut p = s.splitn(2, ' ');
                    let e = p.next().unwrap_or("").to_owned();
                    let t = p.next().map_or_else(|| e.clone(), str::to_owned);
                    (e, t)
                }
                _ => {
                    let o = only(&["email", "text"])?;
                    let e =
                        str_at(o, "email").ok_or_else(|| bad("an email value needs `email`"))?;
                    let t = str_at(o, "text").unwrap_or_else(|| e.clone());
                    (e, t)
                }
            };
            if !is_email(&email) {
                return Err(bad("invalid email address"));
            }
            Stored {
                value: json!({"email": email, "text": text}),
                text: email,
            }
        }
        "phone" => {
            let (phone, country) = match value {
                Value::String(s) => {
                    let mut p = s.rsplitn(2, ' ');
                    let last = p.next().unwrap_or("").to_owned();
                    match p.next() {
                        Some(num) if last.len() == 2 => (num.to_owned(), Some(last)),
                        _ => (s.clone(), None),
                    }
                }
                _ => {
                    let o = only(&["phone", "countryShortName"])?;
                    (
                        str_at(o, "phone").ok_or_else(|| bad("a phone value needs `phone`"))?,
                        str_at(o, "countryShortName"),
                    )
                }
            };
            let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
            if digits.len() < 5
                || phone
                    .chars()
                    .any(|c| !(c.is_ascii_digit() || "+ -()".contains(c)))
            {
                return Err(bad("invalid phone number"));
            }
            if let Some(c) = &country
                && !(c.len() == 2 && c.chars().all(|ch| ch.is_ascii_uppercase()))
            {
                return Err(bad(format!(
                    "countryShortName `{}` is not an ISO 3166-1 alpha-2 code in upper case",
                    cut(c)
                )));
            }
            Stored {
                value: json!({"phone": digits, "countryShortName": country}),
                text: phone,
            }
        }
        "location" => {
            let o = only(&["lat", "lng", "address"])?;
            let coord = |k: &str, max: f64| {
                o.get(k)
                    .and_then(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .or_else(|| v.as_f64().map(|f| f.to_string()))
                    })
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|f| f.abs() <= max)
                    .ok_or_else(|| bad(format!("a location needs `{k}` as a coordinate")))
            };
            let (lat, lng) = (coord("lat", 90.0)?, coord("lng", 180.0)?);
            let address = str_at(o, "address").unwrap_or_default();
            Stored {
                value: json!({"lat": lat.to_string(), "lng": lng.to_string(), "address": address}),
                text: address,
            }
        }
        "dropdown" => {
            let labels: Vec<String> = match value {
                Value::String(s) => s.split(',').map(|l| l.trim().to_owned()).collect(),
                _ => {
                    let o = only(&["labels", "ids"])?;
                    o.get("labels")
                        .and_then(Value::as_array)
                        .ok_or_else(|| bad("a dropdown value needs `labels`"))?
                        .iter()
                        .map(|l| l.as_str().unwrap_or("").to_owned())
                        .collect()
                }
            };
            let mut ids = Vec::new();
            for l in labels.iter().filter(|l| !l.is_empty()) {
                let found = column.labels.iter().find(|(_, t)| t == l).map(|(i, _)| *i);
                let id = match found {
                    Some(i) => i,
                    None if create_labels => {
                        let next = column.labels.iter().map(|(i, _)| *i + 1).max().unwrap_or(1);
                        column.labels.push((next, l.clone()));
                        next
                    }
                    None => {
                        return Err(bad(format!(
                            "The dropdown label `{}` does not exist",
                            cut(l)
                        )));
                    }
                };
                ids.push(id);
            }
            Stored {
                value: json!({"ids": ids}),
                text: labels.join(", "),
            }
        }
        "link" => {
            let o = only(&["url", "text"])?;
            let url = str_at(o, "url").ok_or_else(|| bad("a link value needs `url`"))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad("invalid url"));
            }
            let text = str_at(o, "text").unwrap_or_else(|| url.clone());
            Stored {
                value: json!({"url": url, "text": text}),
                text: format!("{text} - {url}"),
            }
        }
        "checkbox" => {
            let o = only(&["checked"])?;
            match o.get("checked") {
                Some(Value::String(s)) if s == "true" => Stored {
                    value: json!({"checked": "true"}),
                    text: "v".into(),
                },
                Some(Value::Bool(true)) => Stored {
                    value: json!({"checked": "true"}),
                    text: "v".into(),
                },
                _ => return Ok(None),
            }
        }
        "board_relation" => {
            let o = only(&["item_ids"])?;
            let ids: Vec<u64> = o
                .get("item_ids")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("a board_relation value needs `item_ids`"))?
                .iter()
                .map(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        .ok_or_else(|| bad("item_ids must be item ids"))
                })
                .collect::<Result<_, _>>()?;
            if let Some(missing) = ids.iter().find(|i| !item_exists(**i)) {
                return Err(bad(format!("item {missing} does not exist")));
            }
            Stored {
                value: json!({"linkedPulseIds": ids.iter().map(|i| json!({"linkedPulseId": i})).collect::<Vec<_>>()}),
                text: ids
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        }
        other => return Err(bad(format!("the fake does not write {other} columns"))),
    };
    Ok(Some(stored))
}

/// The column type as webhooks and error data name it (`status` is `color` there).
pub fn legacy_type(kind: &str) -> &str {
    match kind {
        "status" => "color",
        "numbers" => "numeric",
        other => other,
    }
}

/// A webhook's `value` for a stored value (docs/monday.md 6.3).
pub fn webhook_value(column: &Column, stored: Option<&Stored>) -> Value {
    let Some(s) = stored else {
        return Value::Null;
    };
    match column.kind.as_str() {
        "status" => json!({"label": {"index": s.value["index"], "text": s.text,
            "style": {"color": "#00c875", "border": "#00b461", "var_name": "green-shadow"},
            "is_done": false}, "post_id": null}),
        "date" => json!({"date": s.value["date"], "icon": null, "time": s.value["time"]}),
        "text" | "numbers" => json!({"value": s.text}),
        _ => s.value.clone(),
    }
}

fn is_date(s: &str) -> bool {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    s.len() == 10 && time::Date::parse(s, &fmt).is_ok()
}

fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 8
        && b[2] == b':'
        && b[5] == b':'
        && s[..2].parse::<u8>().is_ok_and(|h| h < 24)
        && s[3..5].parse::<u8>().is_ok_and(|m| m < 60)
        && s[6..].parse::<u8>().is_ok_and(|x| x < 60)
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((a, d)) => !a.is_empty() && d.contains('.') && !s.contains(char::is_whitespace),
        None => false,
    }
}

fn cut(s: &str) -> String {
    s.chars().take(60).collect()
}
