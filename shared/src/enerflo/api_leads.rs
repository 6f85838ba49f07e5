//! Stage 1.1's Enerflo call: `POST /api/v1/partner/action/lead/add` (docs/enerflo-api.md 2.1), an
//! upsert keyed by `lead.integration_record_id`.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::client::{EnerfloApi, EnerfloError};
use super::lenient::{first_path, value_to_u64};
use crate::wire::body_text;

pub const LEAD_ADD_PATH: &str = "/api/v1/partner/action/lead/add";

/// Enerflo's answer to lead/add.
#[derive(Clone, Debug, PartialEq)]
pub struct LeadAdded {
    /// The v1 customer id, from `{"status":"success","customer_id":N}` or
    /// `{"data":{"lead":{"id":N}}}` (or another configured path); `None` when the answer names none.
    pub customer_id: Option<u64>,
}

impl dyn EnerfloApi {
    /// Creates or updates a lead. `body` is the full request (`{"lead": {...}}`).
    pub async fn add_lead(
        &self,
        body: &Value,
        customer_id_paths: &[String],
        budget: Duration,
    ) -> Result<LeadAdded, EnerfloError> {
        let resp = self
            .send(Method::POST, LEAD_ADD_PATH, Some(body), budget)
            .await?;
        read_lead_added(resp.status, &resp.body, customer_id_paths)
    }
}

/// Reads lead/add's 2xx answer. A body whose `status` is not a success word (Laravel-style
/// `{"status":"error","message":...}` with 200) is a rejection, not a created lead.
pub fn read_lead_added(
    status: u16,
    body: &Value,
    customer_id_paths: &[String],
) -> Result<LeadAdded, EnerfloError> {
    if let Some(word) = body.get("status").and_then(Value::as_str)
        && !matches!(
            word.trim().to_ascii_lowercase().as_str(),
            "success" | "ok" | "created" | "updated"
        )
    {
        return Err(EnerfloError::Rejected {
            status,
            message: body_text(body.to_string().as_bytes()),
        });
    }
    Ok(LeadAdded {
        customer_id: first_path(body, customer_id_paths).and_then(|(v, _)| value_to_u64(v)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LeadFields;
    use serde_json::json;

    #[test]
    fn both_known_answer_shapes_yield_the_customer_id() {
        let paths = LeadFields::default().customer_id_paths;
        let documented: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/enerflo/api-lead-add.response.json"
        ))
        .expect("fixture");
        assert_eq!(
            read_lead_added(200, &documented, &paths).expect("ok"),
            LeadAdded {
                customer_id: Some(900001)
            }
        );
        assert_eq!(
            read_lead_added(201, &json!({"data": {"lead": {"id": "67890"}}}), &paths)
                .expect("ok")
                .customer_id,
            Some(67890)
        );
        assert_eq!(
            read_lead_added(200, &Value::Null, &paths)
                .expect("ok")
                .customer_id,
            None
        );
    }

    #[test]
    fn a_200_that_says_error_is_a_rejection() {
        let err = read_lead_added(
            200,
            &json!({"status": "error", "message": "The state field is invalid."}),
            &[],
        )
        .expect_err("rejected");
        assert!(
            matches!(err, EnerfloError::Rejected { status: 200, ref message } if message == "The state field is invalid.")
        );
    }
}
