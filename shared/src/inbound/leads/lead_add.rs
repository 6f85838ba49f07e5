//! The Enerflo side of stage 1.1: the `lead/add` body a [`LeadRequest`] becomes, the call, and
//! what its answer (or failure) means for the caller.

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::{LeadRequest, LeadsRoute};
use crate::config::LeadFields;
use crate::enerflo::EnerfloError;
use crate::http::Problem;
use crate::http::inbound::enerflo_problem;

impl LeadRequest {
    /// The lead/add body (shape of tests/fixtures/enerflo/api-lead-add.request.json). Absent
    /// optional fields are left out rather than sent as null: Enerflo stores a null it is sent, and
    /// an update must not blank what the CRM did not mention.
    pub fn enerflo_body(&self, fields: &LeadFields) -> Value {
        let mut lead = Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(v) = value
                && !name.is_empty()
            {
                lead.insert(name.to_owned(), v);
            }
        };
        let s = |v: &Option<String>| v.clone().map(Value::String);
        put("first_name", Some(self.first_name.clone().into()));
        put("last_name", Some(self.last_name.clone().into()));
        put("email", s(&self.email));
        put("mobile", s(&self.mobile));
        put("address", Some(self.street.clone().into()));
        put("city", Some(self.city.clone().into()));
        put("state", Some(self.state.clone().into()));
        put("zip", Some(self.zip.clone().into()));
        put("integration_record_id", Some(self.crm_id.clone().into()));
        put("lead_source", s(&self.lead_source));
        put("assign_to_email", s(&self.rep_email));
        put("setter_email", s(&self.setter_email));
        put(&fields.notes_field, s(&self.notes));
        put(
            &fields.create_deal_field,
            self.deal_type_id.map(Value::from),
        );
        put(
            &fields.appointment_type_field,
            self.appointment_type_id.map(Value::from),
        );
        put(
            "office_match",
            Some(fields.office_match.clone())
                .filter(|v| !v.is_empty())
                .map(Value::String),
        );
        json!({ "lead": lead })
    }
}

impl LeadsRoute {
    /// Sends `body` to `lead/add` and returns the Enerflo customer id its answer names. Every
    /// failure is already the caller's answer.
    pub(super) async fn add_lead(&self, body: &Value) -> Result<u64, Problem> {
        let added = match self
            .enerflo
            .add_lead(body, &self.fields.customer_id_paths, self.budget)
            .await
        {
            Ok(a) => a,
            Err(EnerfloError::NotFound { .. }) => {
                tracing::error!(outcome = "enerflo_404", "lead/add answered 404");
                return Err(Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "enerflo-error",
                    "Bad Gateway",
                    "Enerflo answered 404 to lead/add; check ENERFLO_BASE_URL.",
                ));
            }
            Err(e) => {
                // The message may quote the caller's data: it goes back to the caller, not to logs.
                tracing::warn!(
                    outcome = "enerflo_failed",
                    kind = error_kind(&e),
                    "crm lead"
                );
                return Err(enerflo_problem(e));
            }
        };
        added.customer_id.ok_or_else(|| {
            tracing::error!(
                outcome = "no_customer_id",
                "lead/add answer names no customer id"
            );
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "enerflo-bad-response",
                "Bad Gateway",
                "Enerflo accepted the lead but its answer names no customer id; retrying is safe (lead/add is keyed by crm_id).",
            )
        })
    }
}

fn error_kind(e: &EnerfloError) -> &'static str {
    match e {
        EnerfloError::NotFound { .. } => "not_found",
        EnerfloError::RateLimited { .. } => "rate_limited",
        EnerfloError::Unavailable { .. } => "unavailable",
        EnerfloError::Rejected { .. } => "rejected",
        EnerfloError::BadBody { .. } => "bad_body",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::enerflo::client::ApiResponse;
    use crate::http::HttpResponse;
    use crate::http::router::{InboundRoute, RouteParams};
    use crate::inbound::leads::test_kit::{FakeEnerflo, good, parse, post, req, setup};
    use crate::store::{EntityKind, IdForm, IdRef, XrefStore};

    const REQUEST_FIXTURE: &str =
        include_str!("../../../../tests/fixtures/enerflo/api-lead-add.request.json");

    #[test]
    fn a_valid_lead_becomes_the_documented_lead_add_body() {
        let lead = parse(&good()).expect("valid");
        let expected: Value = serde_json::from_str(REQUEST_FIXTURE).unwrap();
        assert_eq!(lead.enerflo_body(&LeadFields::default()), expected);
    }

    #[test]
    fn deal_appointment_and_notes_use_the_configured_field_names() {
        let mut body = good();
        body["deal_type_id"] = json!(12);
        body["appointment_type_id"] = json!("34");
        body["notes"] = json!("  Prefers mornings  ");
        let sent = parse(&body)
            .expect("valid")
            .enerflo_body(&LeadFields::default());
        assert_eq!(sent["lead"]["createDeal"], 12);
        assert_eq!(sent["lead"]["appointment_type_id"], 34);
        assert_eq!(sent["lead"]["notes"], "Prefers mornings");
        let renamed = LeadFields {
            notes_field: "add_note".into(),
            office_match: String::new(),
            ..LeadFields::default()
        };
        let sent = parse(&body).expect("valid").enerflo_body(&renamed);
        assert_eq!(sent["lead"]["add_note"], "Prefers mornings");
        assert!(sent["lead"].get("notes").is_none());
        assert!(sent["lead"].get("office_match").is_none());
    }

    #[test]
    fn absent_optional_fields_are_not_sent_as_null() {
        let body = json!({"crm_id": "c1", "first_name": "A", "last_name": "B",
            "address": {"street": "1 Way", "city": "X", "state": "tx", "zip": "75001"},
            "email": "", "mobile": null});
        let sent = parse(&body)
            .expect("valid")
            .enerflo_body(&LeadFields::default());
        let lead = sent["lead"].as_object().unwrap();
        assert!(!lead.contains_key("email") && !lead.contains_key("mobile"));
        assert_eq!(lead["state"], "TX");
    }

    async fn failing_with(err: EnerfloError) -> (HttpResponse, Arc<FakeEnerflo>, LeadsRoute) {
        let (enerflo, _, r) = setup();
        enerflo.script.lock().unwrap().push_back(Err(err));
        let resp = r.handle(&req(&good()), &RouteParams::default()).await;
        (resp, enerflo, r)
    }

    #[tokio::test]
    async fn enerflo_rate_limiting_is_429_with_its_retry_after() {
        let (resp, _, r) = failing_with(EnerfloError::RateLimited {
            retry_after: Some(Duration::from_secs(41)),
        })
        .await;
        assert_eq!(resp.status.as_u16(), 429);
        assert_eq!(resp.headers["retry-after"], "41");
        // nothing was linked to an Enerflo customer: the retry creates it
        assert_eq!(post(&r, &good()).await.0, 201);
    }

    #[tokio::test]
    async fn enerflo_down_is_502_or_503_with_retry_after() {
        let (resp, ..) = failing_with(EnerfloError::Unavailable {
            status: Some(500),
            detail: "HTTP 500".into(),
            retry_after: None,
        })
        .await;
        assert_eq!(resp.status.as_u16(), 502);
        assert!(resp.headers.get("retry-after").is_some());
        let (resp, ..) = failing_with(EnerfloError::Unavailable {
            status: None,
            detail: "request timed out".into(),
            retry_after: None,
        })
        .await;
        assert_eq!(resp.status.as_u16(), 503);
        assert!(resp.headers.get("retry-after").is_some());
    }

    #[tokio::test]
    async fn enerflo_rejection_is_422_with_its_reason() {
        let (resp, ..) = failing_with(EnerfloError::Rejected {
            status: 422,
            message: "The assign to email must match a user.".into(),
        })
        .await;
        assert_eq!(resp.status.as_u16(), 422);
        let body = resp.body_json();
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("The assign to email must match a user."),
            "{body}"
        );
    }

    #[tokio::test]
    async fn an_answer_without_a_customer_id_is_502_and_links_nothing() {
        let (enerflo, store, r) = setup();
        enerflo.script.lock().unwrap().push_back(Ok(ApiResponse {
            status: 200,
            body: json!({"status": "success"}),
        }));
        let (status, _) = post(&r, &good()).await;
        assert_eq!(status, 502);
        let link = store
            .resolve(
                EntityKind::Customer,
                &IdRef::new(IdForm::Integration, "crm-lead-0001"),
            )
            .await
            .unwrap()
            .expect("the CRM id is pre-linked");
        assert_eq!(link.id(IdForm::CustomerId), None);
        // the retry is an upsert and completes the link
        assert_eq!(post(&r, &good()).await.0, 201);
        assert_eq!(enerflo.calls(), 2);
    }
}
