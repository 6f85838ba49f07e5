//! Typed model of the v2 `deal.projectSubmitted` / `deal.projectReceived` payload, read leniently.
//! Field names follow a captured real delivery (see docs/enerflo-api.md 3.9); everything but
//! `deal.id` is optional and unknown fields are ignored here (the raw body is kept by the caller).

use serde::Deserialize;
use serde_json::Value;

use super::lenient::{opt_bool, opt_f64, opt_object, opt_string, opt_u64, vec_of};

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProjectPayload {
    #[serde(deserialize_with = "opt_string")]
    pub target_org: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub initiated_by: Option<String>,
    #[serde(deserialize_with = "opt_object")]
    pub deal: Option<Deal>,
    #[serde(deserialize_with = "opt_object")]
    pub customer: Option<Customer>,
    #[serde(deserialize_with = "opt_object")]
    pub proposal: Option<Proposal>,
    #[serde(deserialize_with = "opt_object")]
    pub design: Option<Design>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Deal {
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub short_code: Option<String>,
    #[serde(deserialize_with = "vec_of")]
    pub files: Vec<DealFile>,
    #[serde(deserialize_with = "opt_object")]
    pub sales_rep: Option<Ref>,
    /// Tenant-defined flags and step keys (docs/peer-lessons.md 12): kept as data, never as code.
    pub state: Option<Value>,
    #[serde(deserialize_with = "opt_string")]
    pub updated_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Ref {
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DealFile {
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub source: Option<String>,
    #[serde(deserialize_with = "opt_bool")]
    pub is_public: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Customer {
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Proposal {
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
    #[serde(deserialize_with = "opt_object")]
    pub finance_product: Option<FinanceProduct>,
    #[serde(deserialize_with = "opt_object")]
    pub pricing_outputs: Option<PricingOutputs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FinanceProduct {
    #[serde(deserialize_with = "opt_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub finance_method_name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub method_id: Option<String>,
    #[serde(deserialize_with = "opt_u64")]
    pub term_months: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PricingOutputs {
    #[serde(deserialize_with = "opt_object")]
    pub deal: Option<PricingDeal>,
    #[serde(deserialize_with = "opt_object")]
    pub design: Option<Design>,
    #[serde(rename = "grossCost", deserialize_with = "opt_f64")]
    pub gross_cost: Option<f64>,
    #[serde(rename = "netCost", deserialize_with = "opt_f64")]
    pub net_cost: Option<f64>,
    #[serde(rename = "grossPPW", deserialize_with = "opt_f64")]
    pub gross_ppw: Option<f64>,
    #[serde(rename = "netPPW", deserialize_with = "opt_f64")]
    pub net_ppw: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub system_size_watts: Option<f64>,
    #[serde(deserialize_with = "vec_of")]
    pub calculated_system_adders: Vec<Adder>,
    #[serde(deserialize_with = "vec_of")]
    pub calculated_value_adders: Vec<Adder>,
    #[serde(deserialize_with = "opt_object")]
    pub finance_product: Option<FinanceProduct>,
    #[serde(deserialize_with = "opt_object")]
    pub finance_method: Option<FinanceMethod>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FinanceMethod {
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub plugin_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PricingDeal {
    #[serde(deserialize_with = "opt_object")]
    pub project_address: Option<Address>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Address {
    #[serde(deserialize_with = "opt_string")]
    pub line1: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub line2: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub city: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub state: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub country: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub postal_code: Option<String>,
    #[serde(deserialize_with = "opt_f64")]
    pub lat: Option<f64>,
    #[serde(deserialize_with = "opt_f64")]
    pub lng: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Design {
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
    #[serde(deserialize_with = "vec_of")]
    pub arrays: Vec<RoofArray>,
    #[serde(deserialize_with = "vec_of")]
    pub inverters: Vec<Inverter>,
    /// Element shape unseen (no capture had a battery): kept as raw objects.
    #[serde(deserialize_with = "vec_of")]
    pub batteries: Vec<Value>,
    /// S-DESIGN also documents a singular `battery` array.
    #[serde(deserialize_with = "vec_of")]
    pub battery: Vec<Value>,
    #[serde(deserialize_with = "opt_u64")]
    pub battery_count: Option<u64>,
    #[serde(deserialize_with = "opt_string")]
    pub battery_purpose: Option<String>,
    #[serde(deserialize_with = "opt_f64")]
    pub total_system_size_watts: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RoofArray {
    #[serde(deserialize_with = "opt_u64")]
    pub module_count: Option<u64>,
    #[serde(deserialize_with = "opt_object")]
    pub module: Option<Module>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Module {
    #[serde(deserialize_with = "opt_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub manufacturer: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub model: Option<String>,
    #[serde(deserialize_with = "opt_f64")]
    pub capacity: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Inverter {
    #[serde(deserialize_with = "opt_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub manufacturer: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub model: Option<String>,
    #[serde(deserialize_with = "opt_u64")]
    pub count: Option<u64>,
    #[serde(deserialize_with = "opt_f64")]
    pub ac_output: Option<f64>,
    #[serde(deserialize_with = "opt_bool")]
    pub is_micro: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Adder {
    #[serde(deserialize_with = "opt_string")]
    pub id: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub display_name: Option<String>,
    #[serde(deserialize_with = "opt_f64")]
    pub amount: Option<f64>,
}

/// A v2 webhook body, read in one typed pass from its bytes (no intermediate `Value`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProjectBody {
    #[serde(deserialize_with = "opt_string")]
    pub event: Option<String>,
    #[serde(deserialize_with = "opt_object")]
    pub payload: Option<ProjectPayload>,
}

impl ProjectBody {
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

impl ProjectPayload {
    pub fn from_record(record: &Value) -> Self {
        // `Value` -> struct with lenient fields cannot fail on field shapes; a non-object record
        // reads as empty and is rejected by the missing deal id.
        serde_json::from_value(record.clone()).unwrap_or_default()
    }

    pub fn deal_id(&self) -> Option<&str> {
        self.deal.as_ref().and_then(|d| d.id.as_deref())
    }
}
