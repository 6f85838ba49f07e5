//! The v1 install object, as returned by `GET /api/v3/installs/find/{dealId}` and
//! `GET /api/v3/installs/{id}` and embedded in install events. Its response is undocumented
//! (ENERFLO_API.md 2.2): only the fields we use are typed, all optional, the rest stays in `raw`.

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
        let inner = unwrap_envelope(body);
        serde_json::from_value(inner.clone()).unwrap_or_default()
    }
}

fn unwrap_envelope(body: &Value) -> &Value {
    for key in ["data", "install", "result"] {
        if let Some(v @ Value::Object(_)) = body.get(key)
            && (v.get("id").and_then(value_to_u64).is_some()
                || v.get("install").is_some()
                || v.get("data").is_some())
        {
            return unwrap_envelope(v);
        }
    }
    if let Some(Value::Array(items)) = body.get("results")
        && let Some(first) = items.first()
    {
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
}
