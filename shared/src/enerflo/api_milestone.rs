//! Stage 3 REST calls: set an install milestone's dates
//! (`PUT /api/v3/installs/{id}/milestones/{milestoneId}`).
//!
//! The request body is undocumented (docs/enerflo-api.md 2.3, 6.4): its field names are
//! configuration (`ENERFLO_MILESTONE_START_FIELD`, `ENERFLO_MILESTONE_COMPLETED_FIELD`, defaults
//! `start_date`, `completed_date`), dates are sent as `YYYY-MM-DD`, and `null` is assumed to clear
//! a date.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::{ApiResponse, EnerfloApi, EnerfloError};
use crate::config::EnerfloFields;

/// A date the CRM asked for: `None` leaves the field out of the request (unchanged),
/// `Some(None)` clears it, `Some(Some("YYYY-MM-DD"))` sets it.
pub type DateChange = Option<Option<String>>;

/// The request body, with only the fields being changed, under the configured names.
pub fn milestone_body(fields: &EnerfloFields, start: &DateChange, completed: &DateChange) -> Value {
    let mut body = Map::new();
    for (name, change) in [
        (&fields.milestone_start_field, start),
        (&fields.milestone_completed_field, completed),
    ] {
        if let Some(date) = change {
            body.insert(name.clone(), json!(date));
        }
    }
    Value::Object(body)
}

/// Typed calls.
impl dyn EnerfloApi {
    /// `PUT /api/v3/installs/{id}/milestones/{milestoneId}` with `body` (see [`milestone_body`]).
    pub async fn set_install_milestone(
        &self,
        install_id: u64,
        milestone_id: u64,
        body: &Value,
        budget: Duration,
    ) -> Result<ApiResponse, EnerfloError> {
        self.send(
            Method::PUT,
            &format!("/api/v3/installs/{install_id}/milestones/{milestone_id}"),
            Some(body),
            budget,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_only_changed_fields_under_the_configured_names() {
        let mut fields = EnerfloFields::default();
        let b = milestone_body(&fields, &None, &Some(Some("2025-03-01".into())));
        assert_eq!(b, json!({"completed_date": "2025-03-01"}));
        fields.milestone_start_field = "started_on".into();
        let b = milestone_body(&fields, &Some(None), &None);
        assert_eq!(b, json!({"started_on": null}));
    }
}
