//! The v1 install object, as returned by `GET /api/v3/installs/find/{dealId}` and `GET
//! /api/v3/installs/{id}` and embedded in install events. Its response is undocumented
//! (docs/enerflo-api.md 2.2): only the fields we use are typed, all optional, the rest stays in
//! `raw`.

use serde::Deserialize;
use serde_json::Value;

use super::lenient::{opt_f64, opt_object, opt_string, opt_u64, value_to_u64};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Install {
    #[serde(deserialize_with = "opt_u64")]
    pub id: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub customer_id: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub survey_id: Option<u64>,
    #[serde(deserialize_with = "opt_u64")]
    pub status_id: Option<u64>,
    #[serde(deserialize_with = "opt_string")]
    pub status_name: Option<String>,
    #[serde(deserialize_with = "opt_object")]
    pub customer: Option<InstallCustomer>,
    #[serde(rename = "solarData", deserialize_with = "opt_object")]
    pub solar_data: Option<SolarData>,
    #[serde(deserialize_with = "opt_string")]
    pub updated_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct InstallCustomer {
    #[serde(deserialize_with = "opt_u64")]
    pub id: Option<u64>,
    #[serde(deserialize_with = "opt_string")]
    pub first_name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub last_name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub email: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub phone: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub mobile: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub customer_timezone: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub lead_source: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SolarData {
    #[serde(deserialize_with = "opt_f64")]
    pub system_size: Option<f64>,
    #[serde(deserialize_with = "opt_u64")]
    pub panel_count: Option<u64>,
    pub panel: Option<Value>,
    #[serde(deserialize_with = "opt_string")]
    pub finance_method: Option<String>,
}

impl Install {
    /// Reads the install object, unwrapping the `{"data": {...}}` / `{"install": {...}}` /
    /// `{"results": [...]}` envelopes some endpoints use. Returns the typed view plus the install
    /// id, which is the one field hydration needs.
    pub fn from_response(body: &Value) -> Install {
        let inner = unwrap_envelope(body, &mut Vec::new());
        serde_json::from_value(inner.clone()).unwrap_or_default()
    }

    /// The install id exactly as [`Install::from_response`] reads it, with where it looked (for
    /// the error that says an answer holds no install).
    pub fn id_lookup(body: &Value) -> (Option<u64>, String) {
        let mut at = Vec::new();
        unwrap_envelope(body, &mut at);
        let looked_at = if at.is_empty() {
            // No envelope qualified: every place the reader would have taken an id from.
            "id, data.id, install.id, result.id, results[0].id".to_owned()
        } else {
            format!("{}.id", at.join("."))
        };
        (Self::from_response(body).id, looked_at)
    }
}

/// The object inside the envelopes; `at` collects the keys taken to reach it.
fn unwrap_envelope<'a>(body: &'a Value, at: &mut Vec<&'static str>) -> &'a Value {
    for key in ["data", "install", "result"] {
        if let Some(v @ Value::Object(_)) = body.get(key)
            && (v.get("id").and_then(value_to_u64).is_some()
                || v.get("install").is_some()
                || v.get("data").is_some())
        {
            at.push(key);
            return unwrap_envelope(v, at);
        }
    }
    if let Some(Value::Array(items)) = body.get("results")
        && let Some(first) = items.first()
    {
        at.push("results[0]");
        return first;
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn install_reads_flat_and_wrapped_responses() {
        let flat =
            json!({"id": 700001, "survey_id": "4000001", "customer": {"email": "a@example.com"}});
        let i = Install::from_response(&flat);
        assert_eq!((i.id, i.survey_id), (Some(700001), Some(4000001)));
        let wrapped = json!({"data": {"id": "700002"}});
        assert_eq!(Install::from_response(&wrapped).id, Some(700002));
        let odd = json!({"id": "x", "customer": [], "solarData": []});
        let i = Install::from_response(&odd);
        assert_eq!(
            (i.id, i.customer.is_none(), i.solar_data.is_none()),
            (None, true, true)
        );
    }

    #[test]
    fn id_lookup_agrees_with_the_mapping_and_says_where_it_looked() {
        for (body, id, looked_at) in [
            (
                json!({"id": 700001}),
                Some(700001),
                "id, data.id, install.id, result.id, results[0].id",
            ),
            (
                json!({"data": {"install": {"id": "700002"}}}),
                Some(700002),
                "data.install.id",
            ),
            (
                json!({"results": [{"survey_id": 1}]}),
                None,
                "results[0].id",
            ),
            (
                json!({}),
                None,
                "id, data.id, install.id, result.id, results[0].id",
            ),
            (
                json!({"data": {"customer_id": 900001}}),
                None,
                "id, data.id, install.id, result.id, results[0].id",
            ),
            (
                Value::Null,
                None,
                "id, data.id, install.id, result.id, results[0].id",
            ),
        ] {
            assert_eq!(
                Install::id_lookup(&body),
                (id, looked_at.to_owned()),
                "{body}"
            );
            assert_eq!(Install::from_response(&body).id, id, "{body}");
        }
    }
}
