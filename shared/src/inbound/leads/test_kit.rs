//! What the route's unit tests share: an Enerflo double, a route over an in-memory store, and
//! a valid lead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};

use super::{LeadRequest, LeadsRoute, PEER_WAIT};
use crate::config::LeadFields;
use crate::enerflo::client::ApiResponse;
use crate::enerflo::{EnerfloApi, EnerfloError};
use crate::http::HttpRequest;
use crate::http::problem::FieldError;
use crate::http::router::{InboundRoute, RouteParams};
use crate::store::embedded::EmbeddedStore;
use crate::sync::EchoGuard;

/// Enerflo double: records every call, answers from a script (then lead/add success).
#[derive(Default)]
pub(super) struct FakeEnerflo {
    pub(super) calls: Mutex<Vec<(String, Value)>>,
    pub(super) script: Mutex<VecDeque<Result<ApiResponse, EnerfloError>>>,
    pub(super) delay: Duration,
}

#[async_trait]
impl EnerfloApi for FakeEnerflo {
    async fn send(
        &self,
        _method: Method,
        path: &str,
        body: Option<&Value>,
        _budget: Duration,
    ) -> Result<ApiResponse, EnerfloError> {
        self.calls
            .lock()
            .unwrap()
            .push((path.to_owned(), body.cloned().unwrap_or(Value::Null)));
        tokio::time::sleep(self.delay).await;
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok(ApiResponse {
                status: 200,
                body: json!({"status": "success", "customer_id": 900001}),
            }))
    }
}

impl FakeEnerflo {
    pub(super) fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

pub(super) fn route(enerflo: Arc<FakeEnerflo>, store: Arc<EmbeddedStore>) -> LeadsRoute {
    LeadsRoute {
        enerflo,
        xref: store.clone(),
        claims: store.clone(),
        state: store.clone(),
        echo: EchoGuard::new(store.clone(), store, Duration::from_secs(3600)),
        fields: LeadFields::default(),
        budget: Duration::from_secs(5),
        peer_wait: PEER_WAIT,
    }
}

pub(super) fn setup() -> (Arc<FakeEnerflo>, Arc<EmbeddedStore>, LeadsRoute) {
    let enerflo = Arc::new(FakeEnerflo::default());
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let r = route(enerflo.clone(), store.clone());
    (enerflo, store, r)
}

pub(super) fn good() -> Value {
    json!({
        "crm_id": "crm-lead-0001",
        "first_name": "Pat",
        "last_name": "Placeholder",
        "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX", "zip": "75001"},
        "email": "pat.placeholder@example.com",
        "mobile": "5550100000",
        "rep_email": "closer@example.com",
        "setter_email": "setter@example.com",
        "lead_source": "CRM"
    })
}

pub(super) fn req(body: &Value) -> HttpRequest {
    HttpRequest {
        method: http::Method::POST,
        path: "/crm/leads".into(),
        query: None,
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::from(body.to_string()),
    }
}

pub(super) async fn post(r: &LeadsRoute, body: &Value) -> (u16, Value) {
    let resp = r.handle(&req(body), &RouteParams::default()).await;
    (resp.status.as_u16(), resp.body_json())
}

pub(super) fn parse(v: &Value) -> Result<LeadRequest, Vec<FieldError>> {
    LeadRequest::parse(v.as_object().unwrap())
}
