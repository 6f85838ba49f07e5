//! Tests of the HubSpot fake through HTTP (reqwest against a spawned fake), one per rule of the
//! HubSpot contract it reproduces, plus the emitter's signatures against HubSpot's published
//! test vectors and its retry behaviour against a local receiver.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::*;

const TOKEN: &str = "pat-na1-test-token-0000";

struct T {
    base: String,
    fake: Arc<HubSpotFake>,
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

fn opts() -> FakeOptions {
    FakeOptions {
        token: TOKEN.into(),
        search_lag: Duration::ZERO,
        ..FakeOptions::default()
    }
}

impl T {
    async fn new() -> Self {
        Self::with(opts()).await
    }

    async fn with(o: FakeOptions) -> Self {
        let (base, fake) = spawn(o).await;
        Self {
            base,
            fake,
            http: enerflo_sync::wire::client(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.send(method, path, body, Some(TOKEN)).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None).await
    }

    async fn contact(&self, props: Value) -> String {
        let a = self
            .post("/crm/v3/objects/contacts", json!({"properties": props}))
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        a.body["id"].as_str().unwrap().to_owned()
    }

    async fn deal(&self, props: Value) -> String {
        let a = self
            .post("/crm/v3/objects/deals", json!({"properties": props}))
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        a.body["id"].as_str().unwrap().to_owned()
    }
}

fn upsert_input(id: &str, props: Value) -> Value {
    json!({"idProperty": "enerflo_customer_id", "id": id, "properties": props})
}

fn codes(body: &Value) -> Vec<(String, String)> {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["code"].as_str().unwrap_or_default().to_owned(),
                        e["in"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---- 1. auth ----------------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_invalid_authentication() {
    let t = T::new().await;
    for token in [None, Some("pat-na1-wrong")] {
        let a = t.send("GET", "/crm/v3/objects/contacts", None, token).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.body["category"], "INVALID_AUTHENTICATION");
        assert_eq!(a.body["status"], "error");
        assert!(
            a.body["correlationId"]
                .as_str()
                .is_some_and(|c| c.len() == 36)
        );
    }
    assert_eq!(t.get("/crm/v3/objects/contacts").await.status, 200);
}

#[tokio::test]
async fn a_call_needing_a_scope_the_token_lacks_is_403_missing_scopes() {
    let t = T::with(FakeOptions {
        scopes: Some(vec!["crm.objects.contacts.read".into()]),
        ..opts()
    })
    .await;
    assert_eq!(t.get("/crm/v3/objects/contacts").await.status, 200);
    let a = t
        .post("/crm/v3/objects/deals", json!({"properties": {}}))
        .await;
    assert_eq!(a.status, 403);
    assert_eq!(a.body["category"], "MISSING_SCOPES");
    assert_eq!(
        a.body["errors"][0]["context"]["requiredGranularScopes"][0],
        "crm.objects.deals.write"
    );
    assert!(t.fake.records(ObjectType::Deal).is_empty());
}

// ---- 2. both path families --------------------------------------------------------------------

#[tokio::test]
async fn both_path_families_serve_one_store() {
    let t = T::new().await;
    let id = t.contact(json!({"email": "jane@example.test"})).await;
    let a = t.get(&format!("/crm/objects/2026-03/contacts/{id}")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["properties"]["email"], "jane@example.test");

    let a = t
        .post(
            "/crm/properties/2026-03/deals",
            json!({"name": "enerflo_deal_id", "label": "Enerflo deal", "type": "string", "fieldType": "text", "groupName": "dealinformation", "hasUniqueValue": true}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(
        t.get("/crm/v3/properties/deals/enerflo_deal_id")
            .await
            .status,
        200
    );

    let a = t.get("/crm/pipelines/2026-03/deals").await;
    assert_eq!(a.body["results"][0]["id"], "default");

    let deal = t
        .deal(json!({"dealname": "d", "dealstage": "appointmentscheduled"}))
        .await;
    let a = t
        .call(
            "PUT",
            &format!("/crm/objects/2026-03/deals/{deal}/associations/default/contacts/{id}"),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = t
        .get(&format!("/crm/v4/objects/contacts/{id}/associations/deals"))
        .await;
    assert_eq!(
        a.body["results"][0]["toObjectId"]
            .as_u64()
            .unwrap()
            .to_string(),
        deal
    );
    let a = t
        .post(
            "/crm/associations/2026-03/deals/contacts/batch/read",
            json!({"inputs": [{"id": deal}]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["results"][0]["to"][0]["toObjectId"]
            .as_u64()
            .unwrap()
            .to_string(),
        id
    );
}

// ---- 3. property registry ---------------------------------------------------------------------

#[tokio::test]
async fn the_property_registry_creates_201_refuses_a_duplicate_409_and_reads_200_or_404() {
    let t = T::new().await;
    let def = json!({"name": "enerflo_customer_id", "label": "Enerflo customer ID", "type": "string",
        "fieldType": "text", "groupName": "contactinformation", "hasUniqueValue": true, "formField": false});
    let a = t.post("/crm/v3/properties/contacts", def.clone()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["hasUniqueValue"], true);
    assert_eq!(a.body["hubspotDefined"], false);
    assert!(a.body["createdAt"].is_string());
    assert!(a.body["modificationMetadata"]["readOnlyValue"].is_boolean());
    let a = t.post("/crm/v3/properties/contacts", def).await;
    assert_eq!(a.status, 409);
    let a = t
        .get("/crm/v3/properties/contacts/enerflo_customer_id")
        .await;
    assert_eq!((a.status, a.body["type"].clone()), (200, json!("string")));
    assert_eq!(
        t.get("/crm/v3/properties/contacts/nope_nothing")
            .await
            .status,
        404
    );
    assert!(
        t.fake
            .property(ObjectType::Contact, "enerflo_customer_id")
            .unwrap()
            .has_unique_value
    );

    // Required fields, a real group, and a type/fieldType pair that goes together.
    let a = t
        .post(
            "/crm/v3/properties/deals",
            json!({"name": "x_prop", "label": "X"}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("type, fieldType, groupName")
    );
    let a = t
        .post("/crm/v3/properties/deals", json!({"name": "x_prop", "label": "X", "type": "string", "fieldType": "text", "groupName": "enerflo"}))
        .await;
    assert_eq!(a.status, 400);
    assert!(a.body["message"].as_str().unwrap().contains("enerflo"));
    let a = t
        .post(
            "/crm/v3/properties/deals/groups",
            json!({"name": "enerflo", "label": "Enerflo", "displayOrder": -1}),
        )
        .await;
    assert_eq!(a.status, 201);
    let a = t
        .post("/crm/v3/properties/deals", json!({"name": "x_prop", "label": "X", "type": "number", "fieldType": "text", "groupName": "enerflo"}))
        .await;
    assert_eq!(a.status, 400);
    let a = t
        .post("/crm/v3/properties/deals", json!({"name": "status_x", "label": "S", "type": "enumeration", "fieldType": "select", "groupName": "enerflo"}))
        .await;
    assert_eq!(a.status, 400, "an enumeration without options");
    let a = t
        .post("/crm/v3/properties/deals", json!({"name": "x_prop", "label": "X", "type": "number", "fieldType": "number", "groupName": "enerflo"}))
        .await;
    assert_eq!(a.status, 201);
}

#[tokio::test]
async fn a_write_with_an_unknown_property_is_400_validation_error_naming_it() {
    let t = T::new().await;
    let a = t
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"dealname": "d", "dealstage": "closedwon", "panel_cnt": "20"}}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["category"], "VALIDATION_ERROR");
    assert_eq!(
        codes(&a.body),
        vec![("PROPERTY_DOESNT_EXIST".into(), "panel_cnt".into())]
    );
    assert_eq!(
        a.body["errors"][0]["context"]["propertyName"][0],
        "panel_cnt"
    );
    assert!(a.body["message"].as_str().unwrap().contains("panel_cnt"));
    assert!(t.fake.records(ObjectType::Deal).is_empty());
}

#[tokio::test]
async fn enumeration_values_are_checked_against_the_options() {
    let t = T::new().await;
    let mut p =
        PropertyDef::enumeration("enerflo_project_status", &["active", "on_hold", "voided"]);
    p.group_name = "dealinformation".into();
    t.fake.seed_property(ObjectType::Deal, p);
    let a = t
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"dealstage": "closedwon", "enerflo_project_status": "paused"}}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        codes(&a.body),
        vec![("INVALID_OPTION".into(), "enerflo_project_status".into())]
    );
    let a = t
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"dealstage": "closedwon", "enerflo_project_status": "on_hold"}}),
        )
        .await;
    assert_eq!(a.status, 201);
    let a = t
        .post(
            "/crm/v3/objects/contacts",
            json!({"properties": {"lifecyclestage": "customer"}}),
        )
        .await;
    assert_eq!(a.status, 201);
}

#[tokio::test]
async fn a_property_value_that_is_not_a_string_is_400_naming_the_property() {
    let t = T::new().await;
    let a = t
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"dealstage": "closedwon", "amount": 31250}}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["category"], "VALIDATION_ERROR");
    assert_eq!(
        codes(&a.body),
        vec![("INVALID_PROPERTY_VALUE_TYPE".into(), "amount".into())]
    );
    let a = t
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"dealstage": "closedwon", "amount": "31250.00"}}),
        )
        .await;
    assert_eq!(a.status, 201);
    assert_eq!(a.body["properties"]["amount"], "31250.00");
    let a = t
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"dealstage": "closedwon", "amount": "lots"}}),
        )
        .await;
    assert_eq!(
        codes(&a.body),
        vec![("INVALID_DECIMAL".into(), "amount".into())]
    );
}

// ---- 4. strings, clearing, ids, timestamps ----------------------------------------------------

#[tokio::test]
async fn values_are_strings_in_and_out_empty_clears_and_ids_increase() {
    let t = T::new().await;
    t.fake.seed_property(
        ObjectType::Deal,
        PropertyDef::date("milestone_pto_date").group("dealinformation"),
    );
    let a = t
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"dealname": "Doe", "dealstage": "contractsent", "amount": "10", "closedate": "1767225600000", "milestone_pto_date": "1767225600000"}}),
        )
        .await;
    assert_eq!(a.status, 201);
    let id = a.body["id"].as_str().unwrap().to_owned();
    assert!(id.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(a.body["properties"]["hs_object_id"], id.as_str());
    assert_eq!(a.body["properties"]["pipeline"], "default");
    assert_eq!(
        a.body["properties"]["closedate"],
        "2026-01-01T00:00:00.000Z"
    );
    assert_eq!(a.body["properties"]["milestone_pto_date"], "2026-01-01");
    assert_eq!(a.body["archived"], false);
    for k in ["createdAt", "updatedAt"] {
        let v = a.body[k].as_str().unwrap();
        assert!(v.ends_with('Z') && v.contains('T'), "{k} = {v}");
    }
    for v in a.body["properties"].as_object().unwrap().values() {
        assert!(v.is_string(), "{v}");
    }
    // A date that is not midnight UTC is refused.
    let a = t
        .call(
            "PATCH",
            &format!("/crm/v3/objects/deals/{id}"),
            Some(json!({"properties": {"milestone_pto_date": "1767229200000"}})),
        )
        .await;
    assert_eq!(
        codes(&a.body),
        vec![("INVALID_DATE".into(), "milestone_pto_date".into())]
    );
    // "" clears.
    let a = t
        .call(
            "PATCH",
            &format!("/crm/v3/objects/deals/{id}"),
            Some(json!({"properties": {"amount": ""}})),
        )
        .await;
    assert_eq!(a.status, 200);
    assert!(
        t.fake
            .record(ObjectType::Deal, &id)
            .unwrap()
            .get("amount")
            .is_none()
    );
    let a = t
        .get(&format!(
            "/crm/v3/objects/deals/{id}?properties=amount,dealname"
        ))
        .await;
    assert_eq!(a.body["properties"]["amount"], Value::Null);
    assert_eq!(a.body["properties"]["dealname"], "Doe");
    // Ids keep increasing across types.
    let next = t.contact(json!({"firstname": "A"})).await;
    assert!(next.parse::<u64>().unwrap() > id.parse::<u64>().unwrap());
    // Read-only properties cannot be written.
    let a = t
        .call(
            "PATCH",
            &format!("/crm/v3/objects/deals/{id}"),
            Some(json!({"properties": {"hs_object_id": "5"}})),
        )
        .await;
    assert_eq!(
        codes(&a.body),
        vec![("READ_ONLY_VALUE".into(), "hs_object_id".into())]
    );
}

#[tokio::test]
async fn a_read_without_properties_returns_the_default_set_only() {
    let t = T::new().await;
    t.fake.seed_enerflo_keys();
    let id = t
        .contact(
            json!({"email": "a@example.test", "city": "Springfield", "enerflo_customer_id": "c1"}),
        )
        .await;
    let a = t.get(&format!("/crm/v3/objects/contacts/{id}")).await;
    let props = a.body["properties"].as_object().unwrap();
    assert_eq!(props["email"], "a@example.test");
    assert!(!props.contains_key("city"), "{props:?}");
    assert!(!props.contains_key("enerflo_customer_id"));
    let a = t
        .get(&format!(
            "/crm/v3/objects/contacts/{id}?properties=city&properties=enerflo_customer_id"
        ))
        .await;
    assert_eq!(a.body["properties"]["city"], "Springfield");
    assert_eq!(a.body["properties"]["enerflo_customer_id"], "c1");
}

// ---- 5. uniqueness ----------------------------------------------------------------------------

#[tokio::test]
async fn creating_a_contact_with_a_taken_email_is_409_conflict_naming_the_existing_id() {
    let t = T::new().await;
    let id = t.contact(json!({"email": "jane@example.test"})).await;
    let a = t
        .post(
            "/crm/v3/objects/contacts",
            json!({"properties": {"email": "JANE@example.test"}}),
        )
        .await;
    assert_eq!(a.status, 409);
    assert_eq!(a.body["category"], "CONFLICT");
    assert_eq!(
        a.body["message"],
        format!("Contact already exists. Existing ID: {id}")
    );
    assert_eq!(t.fake.records(ObjectType::Contact).len(), 1);
    let a = t
        .post(
            "/crm/v3/objects/contacts",
            json!({"properties": {"email": "not-an-email"}}),
        )
        .await;
    assert_eq!(
        codes(&a.body),
        vec![("INVALID_EMAIL".into(), "email".into())]
    );
}

#[tokio::test]
async fn a_taken_custom_unique_value_is_400() {
    let t = T::new().await;
    t.fake.seed_enerflo_keys();
    t.contact(json!({"enerflo_customer_id": "cust_1"})).await;
    let a = t
        .post(
            "/crm/v3/objects/contacts",
            json!({"properties": {"enerflo_customer_id": "cust_1"}}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["category"], "VALIDATION_ERROR");
    assert_eq!(
        codes(&a.body),
        vec![("VALUE_NOT_UNIQUE".into(), "enerflo_customer_id".into())]
    );
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("already has that value")
    );
    assert_eq!(t.fake.records(ObjectType::Contact).len(), 1);
}

// ---- 6. batch upsert --------------------------------------------------------------------------

#[tokio::test]
async fn batch_upsert_creates_then_updates_with_the_new_flag_and_echoes_the_trace_id() {
    let t = T::new().await;
    t.fake.seed_enerflo_keys();
    let mut input = upsert_input(
        "cust_0001",
        json!({"firstname": "Jane", "email": "jane@example.test"}),
    );
    input["objectWriteTraceId"] = json!("cmd-7f1c");
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [input.clone()]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], "COMPLETE");
    for k in ["requestedAt", "startedAt", "completedAt"] {
        assert!(a.body[k].is_string(), "{k}");
    }
    let r = &a.body["results"][0];
    assert_eq!(r["new"], true);
    assert_eq!(r["objectWriteTraceId"], "cmd-7f1c");
    assert_eq!(r["properties"]["enerflo_customer_id"], "cust_0001");
    let id = r["id"].as_str().unwrap().to_owned();
    let updated = t.fake.record(ObjectType::Contact, &id).unwrap().updated_at;

    // The same input again: the same record, not new, nothing changed.
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [input.clone()]}),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["results"][0]["new"], false);
    assert_eq!(a.body["results"][0]["id"], id.as_str());
    t.fake.advance(Duration::from_secs(1));
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [input]}),
        )
        .await;
    assert_eq!(a.body["results"][0]["new"], false);
    assert_eq!(
        t.fake.record(ObjectType::Contact, &id).unwrap().updated_at,
        updated
    );
    assert_eq!(t.fake.records(ObjectType::Contact).len(), 1);

    // A change updates.
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [upsert_input("cust_0001", json!({"city": "Springfield"}))]}),
        )
        .await;
    assert_eq!(a.body["results"][0]["new"], false);
    let rec = t.fake.record(ObjectType::Contact, &id).unwrap();
    assert_eq!(
        (rec.get("city"), rec.get("firstname")),
        (Some("Springfield"), Some("Jane"))
    );
    assert_ne!(rec.updated_at, updated);
}

#[tokio::test]
async fn batch_upsert_with_one_bad_input_is_207_with_num_errors_and_the_rest_applied() {
    let t = T::new().await;
    t.fake.seed_enerflo_keys();
    let mut bad = upsert_input("cust_0002", json!({"email": "bad email"}));
    bad["objectWriteTraceId"] = json!("t2");
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [upsert_input("cust_0001", json!({"firstname": "A"})), bad]}),
        )
        .await;
    assert_eq!(a.status, 207, "{}", a.body);
    assert_eq!(a.body["numErrors"], 1);
    assert_eq!(a.body["results"].as_array().unwrap().len(), 1);
    let e = &a.body["errors"][0];
    assert_eq!(e["category"], "VALIDATION_ERROR");
    assert_eq!(e["context"]["ids"][0], "cust_0002");
    assert_eq!(e["objectWriteTraceId"], "t2");
    assert_eq!(e["errors"][0]["in"], "email");
    assert_eq!(
        t.fake
            .find(ObjectType::Contact, "enerflo_customer_id", "cust_0001")
            .len(),
        1
    );
    assert!(
        t.fake
            .find(ObjectType::Contact, "enerflo_customer_id", "cust_0002")
            .is_empty()
    );
}

#[tokio::test]
async fn batch_upsert_refuses_over_100_inputs_a_non_unique_id_property_and_repeated_ids() {
    let t = T::new().await;
    t.fake.seed_enerflo_keys();
    let many: Vec<Value> = (0..101)
        .map(|i| upsert_input(&format!("c{i}"), json!({})))
        .collect();
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": many}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(a.body["message"].as_str().unwrap().contains("100"));
    let hundred: Vec<Value> = (0..100)
        .map(|i| upsert_input(&format!("c{i}"), json!({})))
        .collect();
    assert_eq!(
        t.post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": hundred})
        )
        .await
        .status,
        200
    );
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [{"idProperty": "firstname", "id": "x", "properties": {}}]}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(a.body["message"].as_str().unwrap().contains("firstname"));
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [upsert_input("dup", json!({})), upsert_input("dup", json!({}))]}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(
        t.fake
            .find(ObjectType::Contact, "enerflo_customer_id", "dup")
            .is_empty()
    );
}

#[tokio::test]
async fn batch_upsert_of_a_new_id_whose_email_is_taken_fails_that_input_naming_the_existing_id() {
    let t = T::new().await;
    t.fake.seed_enerflo_keys();
    let existing = t.contact(json!({"email": "jane@example.test"})).await;
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [upsert_input("cust_9", json!({"email": "jane@example.test"})), upsert_input("cust_10", json!({"email": "other@example.test"}))]}),
        )
        .await;
    assert_eq!(a.status, 207, "{}", a.body);
    let e = &a.body["errors"][0];
    assert_eq!(e["category"], "CONFLICT");
    assert_eq!(
        e["message"],
        format!("Contact already exists. Existing ID: {existing}")
    );
    assert_eq!(e["context"]["existingId"][0], existing.as_str());
    assert_eq!(e["context"]["ids"][0], "cust_9");
    // Adopting it: upsert by email sets the Enerflo id on the existing contact.
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            json!({"inputs": [{"idProperty": "email", "id": "jane@example.test", "properties": {"enerflo_customer_id": "cust_9"}}]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["results"][0]["id"], existing.as_str());
    assert_eq!(a.body["results"][0]["new"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_upserts_make_one_record() {
    let t = T::new().await;
    t.fake.seed_enerflo_keys();
    let body = json!({"inputs": [upsert_input("cust_c", json!({"firstname": "C"}))]}).to_string();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let req = t
                .http
                .post(format!("{}/crm/v3/objects/contacts/batch/upsert", t.base))
                .bearer_auth(TOKEN)
                .body(body.clone());
            tokio::spawn(async move {
                let r = req.send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200);
        created += usize::from(body["results"][0]["new"] == true);
    }
    assert_eq!(created, 1);
    assert_eq!(t.fake.records(ObjectType::Contact).len(), 1);
}

#[tokio::test]
async fn batch_create_is_atomic_unless_every_input_has_its_own_trace_id() {
    let t = T::new().await;
    let good = json!({"properties": {"firstname": "A"}});
    let bad = json!({"properties": {"nope": "x"}});
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/create",
            json!({"inputs": [good.clone(), bad.clone()]}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(t.fake.records(ObjectType::Contact).is_empty());
    let mut g = good.clone();
    g["objectWriteTraceId"] = json!("g");
    let mut b = bad;
    b["objectWriteTraceId"] = json!("b");
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/create",
            json!({"inputs": [g, b]}),
        )
        .await;
    assert_eq!(a.status, 207, "{}", a.body);
    assert_eq!(a.body["numErrors"], 1);
    assert_eq!(a.body["errors"][0]["objectWriteTraceId"], "b");
    assert_eq!(t.fake.records(ObjectType::Contact).len(), 1);
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/create",
            json!({"inputs": [good]}),
        )
        .await;
    assert_eq!(a.status, 201);
}

#[tokio::test]
async fn batch_read_and_update_report_missing_ids_per_item() {
    let t = T::new().await;
    t.fake.seed_enerflo_keys();
    t.contact(json!({"enerflo_customer_id": "c1", "email": "c1@example.test"}))
        .await;
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/read",
            json!({"idProperty": "enerflo_customer_id", "inputs": [{"id": "c1"}, {"id": "c2"}], "properties": ["email"]}),
        )
        .await;
    assert_eq!(a.status, 207);
    assert_eq!(
        a.body["results"][0]["properties"]["email"],
        "c1@example.test"
    );
    assert_eq!(a.body["errors"][0]["context"]["ids"][0], "c2");
    let a = t
        .post(
            "/crm/v3/objects/contacts/batch/update",
            json!({"inputs": [{"idProperty": "enerflo_customer_id", "id": "c1", "properties": {"city": "X"}}, {"idProperty": "enerflo_customer_id", "id": "c2", "properties": {"city": "Y"}}]}),
        )
        .await;
    assert_eq!(a.status, 207);
    assert_eq!(a.body["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(t.fake.records(ObjectType::Contact).len(), 1);
}

// ---- 7. idProperty ----------------------------------------------------------------------------

#[tokio::test]
async fn patch_and_get_by_id_property_and_patch_never_creates() {
    let t = T::new().await;
    t.fake.seed_enerflo_keys();
    let id = t
        .deal(json!({"enerflo_deal_id": "deal_1", "dealstage": "appointmentscheduled"}))
        .await;
    let a = t
        .call(
            "PATCH",
            "/crm/v3/objects/deals/deal_1?idProperty=enerflo_deal_id",
            Some(json!({"properties": {"dealstage": "closedwon"}})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["id"], id.as_str());
    let a = t
        .get("/crm/v3/objects/deals/deal_1?idProperty=enerflo_deal_id&properties=dealstage")
        .await;
    assert_eq!(a.body["properties"]["dealstage"], "closedwon");
    let a = t
        .call(
            "PATCH",
            "/crm/v3/objects/deals/deal_2?idProperty=enerflo_deal_id",
            Some(json!({"properties": {"dealstage": "closedwon"}})),
        )
        .await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body["category"], "OBJECT_NOT_FOUND");
    assert_eq!(
        t.get("/crm/v3/objects/deals/deal_2?idProperty=enerflo_deal_id")
            .await
            .status,
        404
    );
    assert_eq!(t.fake.records(ObjectType::Deal).len(), 1);
    let a = t
        .get("/crm/v3/objects/deals/deal_1?idProperty=dealname")
        .await;
    assert_eq!(a.status, 400, "dealname is not unique");
    let a = t
        .get(&format!(
            "/crm/v3/objects/contacts/{}?idProperty=email",
            "nobody%40example.test"
        ))
        .await;
    assert_eq!(a.status, 404);
}

// ---- 8. pipelines -----------------------------------------------------------------------------

#[tokio::test]
async fn pipelines_are_seeded_with_the_standard_stages_and_dealstage_must_be_in_the_deal_pipeline()
{
    let mut o = opts();
    o.pipelines.push(Pipeline::custom(
        "solar",
        "Solar installs",
        &[("site_survey", "Site survey"), ("installed", "Installed")],
    ));
    let t = T::with(o).await;
    let a = t.get("/crm/v3/pipelines/deals").await;
    let default = &a.body["results"][0];
    assert_eq!(default["id"], "default");
    let ids: Vec<&str> = default["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "appointmentscheduled",
            "qualifiedtobuy",
            "presentationscheduled",
            "decisionmakerboughtin",
            "contractsent",
            "closedwon",
            "closedlost"
        ]
    );
    assert_eq!(default["stages"][5]["metadata"]["isClosed"], "true");
    assert_eq!(a.body["results"][1]["id"], "solar");
    assert_eq!(
        t.get("/crm/v3/pipelines/deals/solar/stages").await.body["results"][1]["id"],
        "installed"
    );
    assert_eq!(t.get("/crm/v3/pipelines/deals/nope").await.status, 404);

    let a = t
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"dealstage": "installed"}}),
        )
        .await;
    assert_eq!(
        codes(&a.body),
        vec![("INVALID_OPTION".into(), "dealstage".into())],
        "not a stage of default"
    );
    let a = t
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"dealname": "d"}}),
        )
        .await;
    assert_eq!(
        codes(&a.body),
        vec![("REQUIRED_PROPERTY".into(), "dealstage".into())]
    );
    let id = t
        .deal(json!({"pipeline": "solar", "dealstage": "site_survey"}))
        .await;
    let a = t
        .call(
            "PATCH",
            &format!("/crm/v3/objects/deals/{id}"),
            Some(json!({"properties": {"dealstage": "closedwon"}})),
        )
        .await;
    assert_eq!(a.status, 400);
    let a = t
        .call(
            "PATCH",
            &format!("/crm/v3/objects/deals/{id}"),
            Some(json!({"properties": {"pipeline": "default", "dealstage": "closedwon"}})),
        )
        .await;
    assert_eq!(a.status, 200);
    let a = t
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"pipeline": "nope", "dealstage": "closedwon"}}),
        )
        .await;
    assert_eq!(
        codes(&a.body),
        vec![("INVALID_OPTION".into(), "pipeline".into())]
    );

    // A pipeline created through the API gets numeric ids.
    let a = t
        .post(
            "/crm/v3/pipelines/deals",
            json!({"label": "Service", "displayOrder": 2, "stages": [{"label": "Open", "displayOrder": 0, "metadata": {"probability": "0.5"}}]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let (pid, sid) = (
        a.body["id"].as_str().unwrap().to_owned(),
        a.body["stages"][0]["id"].as_str().unwrap().to_owned(),
    );
    assert!(pid.chars().all(|c| c.is_ascii_digit()) && sid.chars().all(|c| c.is_ascii_digit()));
    t.deal(json!({"pipeline": pid, "dealstage": sid})).await;
    let a = t
        .post(
            "/crm/v3/pipelines/deals",
            json!({"label": "X", "stages": [{"label": "No probability"}]}),
        )
        .await;
    assert_eq!(a.status, 400);
}

// ---- 9. associations --------------------------------------------------------------------------

#[tokio::test]
async fn the_v4_default_put_links_both_directions_and_is_idempotent() {
    let t = T::new().await;
    let c = t.contact(json!({"firstname": "A"})).await;
    let d = t.deal(json!({"dealstage": "closedwon"})).await;
    let path = format!("/crm/v4/objects/deals/{d}/associations/default/contacts/{c}");
    let a = t.call("PUT", &path, None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["status"], "COMPLETE");
    let specs: Vec<(String, String, u64)> = a.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["from"]["id"].as_str().unwrap().into(),
                r["to"]["id"].as_str().unwrap().into(),
                r["associationSpec"]["associationTypeId"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        specs,
        vec![(d.clone(), c.clone(), 3), (c.clone(), d.clone(), 4)]
    );
    assert_eq!(t.call("PUT", &path, None).await.status, 200);
    let assoc = t.fake.associations(ObjectType::Deal, &d);
    assert_eq!(assoc.len(), 1);
    assert_eq!(
        (assoc[0].to_type, assoc[0].to_id.as_str(), assoc[0].type_id),
        (ObjectType::Contact, c.as_str(), 3)
    );
    assert_eq!(t.fake.associations(ObjectType::Contact, &c)[0].type_id, 4);
    let a = t
        .get(&format!("/crm/v4/objects/deals/{d}/associations/contacts"))
        .await;
    assert_eq!(a.body["results"][0]["associationTypes"][0]["typeId"], 3);
    let a = t
        .get(&format!("/crm/v3/objects/deals/{d}/associations/contacts"))
        .await;
    assert_eq!(
        a.body["results"][0],
        json!({"id": c, "type": "deal_to_contact"})
    );
    let a = t
        .get(&format!("/crm/v3/objects/deals/{d}?associations=contacts"))
        .await;
    assert_eq!(
        a.body["associations"]["contacts"]["results"][0]["id"],
        c.as_str()
    );
    assert_eq!(
        t.call(
            "PUT",
            &format!("/crm/v4/objects/deals/{d}/associations/default/contacts/999999"),
            None
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn typed_and_batch_associations_check_the_type_for_the_pair() {
    let t = T::new().await;
    let c = t.contact(json!({"firstname": "A"})).await;
    let d = t.deal(json!({"dealstage": "closedwon"})).await;
    let typed = format!("/crm/v4/objects/deals/{d}/associations/contacts/{c}");
    let a = t
        .call(
            "PUT",
            &typed,
            Some(json!([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 214}])),
        )
        .await;
    assert_eq!(a.status, 400, "214 is note -> deal, not deal -> contact");
    let a = t
        .call(
            "PUT",
            &typed,
            Some(json!([{"associationCategory": "USER_DEFINED", "associationTypeId": 3}])),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(t.fake.associations(ObjectType::Deal, &d).is_empty());
    let a = t
        .call(
            "PUT",
            &typed,
            Some(json!([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}])),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["toObjectId"].as_u64().unwrap().to_string(), c);
    assert_eq!(t.fake.associations(ObjectType::Contact, &c)[0].type_id, 4);
    assert_eq!(t.call("DELETE", &typed, None).await.status, 204);
    assert!(t.fake.associations(ObjectType::Contact, &c).is_empty());

    let c2 = t.contact(json!({"firstname": "B"})).await;
    let a = t
        .post(
            "/crm/v4/associations/deals/contacts/batch/associate/default",
            json!({"inputs": [{"from": {"id": d}, "to": {"id": c}}, {"from": {"id": d}, "to": {"id": c2}}, {"from": {"id": d}, "to": {"id": "999999"}}]}),
        )
        .await;
    assert_eq!(a.status, 207, "{}", a.body);
    assert_eq!(a.body["numErrors"], 1);
    assert_eq!(a.body["results"].as_array().unwrap().len(), 4);
    assert_eq!(t.fake.associations(ObjectType::Deal, &d).len(), 2);
    let a = t.get("/crm/v4/associations/deals/contacts/labels").await;
    assert_eq!(a.body["results"][0]["typeId"], 3);
}

// ---- 10. notes --------------------------------------------------------------------------------

#[tokio::test]
async fn notes_need_hs_timestamp_hold_at_most_65536_characters_and_associate_inline() {
    let t = T::new().await;
    let d = t.deal(json!({"dealstage": "closedwon"})).await;
    let c = t.contact(json!({"firstname": "A"})).await;
    let a = t
        .post(
            "/crm/v3/objects/notes",
            json!({"properties": {"hs_note_body": "x"}}),
        )
        .await;
    assert_eq!(
        codes(&a.body),
        vec![("REQUIRED_PROPERTY".into(), "hs_timestamp".into())]
    );
    let long = "a".repeat(NOTE_BODY_LIMIT + 1);
    let a = t
        .post("/crm/v3/objects/notes", json!({"properties": {"hs_note_body": long, "hs_timestamp": "2026-11-28T10:15:00.000Z"}}))
        .await;
    assert_eq!(
        codes(&a.body),
        vec![("INVALID_STRING_LENGTH".into(), "hs_note_body".into())]
    );
    let a = t
        .post(
            "/crm/v3/objects/notes",
            json!({"properties": {"hs_note_body": "a".repeat(NOTE_BODY_LIMIT), "hs_timestamp": "1767225600000"},
                   "associations": [{"to": {"id": d}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 214}]},
                                    {"to": {"id": c}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let n = a.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        a.body["properties"]["hs_timestamp"],
        "2026-01-01T00:00:00.000Z"
    );
    let mut links: Vec<(ObjectType, u32)> = t
        .fake
        .associations(ObjectType::Note, &n)
        .iter()
        .map(|a| (a.to_type, a.type_id))
        .collect();
    links.sort();
    assert_eq!(
        links,
        vec![(ObjectType::Contact, 202), (ObjectType::Deal, 214)]
    );
    assert_eq!(t.fake.associations(ObjectType::Deal, &d)[0].type_id, 213);
    // An inline association to a record that does not exist fails the create.
    let a = t
        .post(
            "/crm/v3/objects/notes",
            json!({"properties": {"hs_timestamp": "1767225600000"}, "associations": [{"to": {"id": "999999"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 214}]}]}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(t.fake.records(ObjectType::Note).len(), 1);
}

// ---- 11. rate limits --------------------------------------------------------------------------

#[tokio::test]
async fn the_rolling_ten_second_window_answers_429_ten_secondly_rolling_with_headers() {
    let t = T::with(FakeOptions {
        ten_second_limit: Some(3),
        daily_limit: Some(1000),
        ..opts()
    })
    .await;
    t.fake.freeze_clock();
    for left in [2, 1, 0] {
        let a = t.get("/crm/v3/objects/contacts").await;
        assert_eq!(a.status, 200);
        let h = |k: &str| a.headers.get(k).unwrap().to_str().unwrap().to_owned();
        assert_eq!(h("x-hubspot-ratelimit-max"), "3");
        assert_eq!(h("x-hubspot-ratelimit-remaining"), left.to_string());
        assert_eq!(h("x-hubspot-ratelimit-interval-milliseconds"), "10000");
        assert_eq!(h("x-hubspot-ratelimit-daily"), "1000");
        assert_eq!(
            h("x-hubspot-ratelimit-daily-remaining"),
            (1000 - 3 + left).to_string()
        );
    }
    let a = t.get("/crm/v3/objects/contacts").await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(a.body["errorType"], "RATE_LIMIT");
    assert_eq!(a.body["category"], "RATE_LIMITS");
    assert!(a.headers.get("x-hubspot-ratelimit-remaining").is_some());
    assert!(
        a.headers.get("retry-after").is_none(),
        "only with FakeOptions::retry_after"
    );
    // Refused requests do not count; the window rolls: 10 s after the first request, exactly.
    t.fake.advance(Duration::from_millis(9_999));
    assert_eq!(t.get("/crm/v3/objects/contacts").await.status, 429);
    t.fake.advance(Duration::from_millis(1));
    assert_eq!(t.get("/crm/v3/objects/contacts").await.status, 200);
    let s = t.fake.rate_state();
    assert_eq!(
        (s.in_window, s.ten_second_limit, s.daily_used),
        (1, Some(3), 4)
    );
    assert_eq!(
        t.fake.max_requests_in_any_window(Duration::from_secs(10)),
        3
    );
}

#[tokio::test]
async fn a_429_carries_retry_after_when_configured() {
    let t = T::with(FakeOptions {
        ten_second_limit: Some(1),
        retry_after: true,
        ..opts()
    })
    .await;
    t.fake.freeze_clock();
    t.get("/crm/v3/objects/contacts").await;
    t.fake.advance(Duration::from_millis(2_500));
    let a = t.get("/crm/v3/objects/contacts").await;
    assert_eq!(a.status, 429);
    assert_eq!(
        a.headers.get("retry-after").unwrap(),
        "8",
        "7.5 s left, rounded up"
    );
}

#[tokio::test]
async fn the_daily_limit_answers_429_daily_and_resets_at_the_accounts_midnight() {
    let t = T::with(FakeOptions {
        daily_limit: Some(2),
        daily_reset_utc_offset_minutes: -300,
        ..opts()
    })
    .await;
    t.fake.freeze_clock();
    assert_eq!(t.get("/crm/v3/objects/contacts").await.status, 200);
    assert_eq!(t.get("/crm/v3/objects/contacts").await.status, 200);
    let a = t.get("/crm/v3/objects/contacts").await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body["policyName"], "DAILY");
    assert_eq!(
        a.headers
            .get("x-hubspot-ratelimit-daily-remaining")
            .unwrap(),
        "0"
    );
    // To a millisecond before the next midnight at UTC-5, then to midnight.
    let to_midnight = 86_400_000 - (t.fake.now_ms() - 300 * 60_000).rem_euclid(86_400_000);
    t.fake
        .advance(Duration::from_millis(to_midnight as u64 - 1));
    assert_eq!(t.get("/crm/v3/objects/contacts").await.status, 429);
    t.fake.advance(Duration::from_millis(1));
    assert_eq!(t.get("/crm/v3/objects/contacts").await.status, 200);
    assert_eq!(t.fake.rate_state().daily_used, 1);
}

#[tokio::test]
async fn search_has_its_own_lower_per_second_limit() {
    let t = T::with(FakeOptions {
        search_per_second: Some(2),
        ..opts()
    })
    .await;
    t.fake.freeze_clock();
    let s = || t.post("/crm/v3/objects/contacts/search", json!({}));
    assert_eq!(s().await.status, 200);
    let a = s().await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers.get("x-hubspot-ratelimit-secondly").unwrap(), "2");
    let a = s().await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body["category"], "RATE_LIMITS");
    assert_eq!(a.body["message"], "You have reached your secondly limit.");
    assert!(a.body.get("policyName").is_none());
    assert_eq!(
        t.get("/crm/v3/objects/contacts").await.status,
        200,
        "other endpoints unaffected"
    );
    t.fake.advance(Duration::from_secs(1));
    assert_eq!(s().await.status, 200);
}

#[tokio::test]
async fn search_does_not_see_writes_younger_than_the_lag_and_filters_and_sorts() {
    let t = T::with(FakeOptions {
        search_lag: Duration::from_secs(5),
        search_per_second: None,
        ..opts()
    })
    .await;
    t.fake.freeze_clock();
    let id = t
        .contact(json!({"email": "jane@example.test", "firstname": "Jane"}))
        .await;
    let q = json!({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "JANE@example.test"}]}], "properties": ["firstname"]});
    let a = t.post("/crm/v3/objects/contacts/search", q.clone()).await;
    assert_eq!((a.status, a.body["total"].clone()), (200, json!(0)));
    t.fake.advance(Duration::from_secs(5));
    let a = t.post("/crm/v3/objects/contacts/search", q.clone()).await;
    assert_eq!(a.body["total"], 1);
    assert_eq!(a.body["results"][0]["id"], id.as_str());
    assert_eq!(a.body["results"][0]["properties"]["firstname"], "Jane");
    // An update is not seen until indexed: search still has the old value.
    t.call(
        "PATCH",
        &format!("/crm/v3/objects/contacts/{id}"),
        Some(json!({"properties": {"firstname": "Janet"}})),
    )
    .await;
    let a = t.post("/crm/v3/objects/contacts/search", q.clone()).await;
    assert_eq!(a.body["results"][0]["properties"]["firstname"], "Jane");
    t.fake.advance(Duration::from_secs(5));
    let a = t.post("/crm/v3/objects/contacts/search", q).await;
    assert_eq!(a.body["results"][0]["properties"]["firstname"], "Janet");

    // Notes modified since a watermark, on a deal, oldest first.
    let d = t.deal(json!({"dealstage": "closedwon"})).await;
    let assoc = json!([{"to": {"id": d}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 214}]}]);
    for body in ["first", "second"] {
        let a = t.post("/crm/v3/objects/notes", json!({"properties": {"hs_note_body": body, "hs_timestamp": "1767225600000"}, "associations": assoc})).await;
        assert_eq!(a.status, 201);
        t.fake.advance(Duration::from_secs(1));
    }
    t.fake.advance(Duration::from_secs(5));
    let watermark = (t.fake.now_ms() - 60_000).to_string();
    let a = t
        .post(
            "/crm/v3/objects/notes/search",
            json!({"filterGroups": [{"filters": [
                {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": watermark},
                {"propertyName": "associations.deal", "operator": "EQ", "value": d}]}],
                "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "DESCENDING"}],
                "properties": ["hs_note_body"], "limit": 1}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["total"], 2);
    assert_eq!(a.body["results"][0]["properties"]["hs_note_body"], "second");
    assert_eq!(a.body["paging"]["next"]["after"], "1");
}

// ---- 12. faults -------------------------------------------------------------------------------

#[tokio::test]
async fn scripted_statuses_answer_the_next_n_matching_requests_and_apply_nothing() {
    let t = T::new().await;
    t.fake.seed_enerflo_keys();
    t.fake.script(
        Fault::new("/crm/v3/objects/*/batch/upsert", FaultKind::Status(503))
            .times(2)
            .method("post"),
    );
    t.fake.script(Fault::new(
        "/crm/v3/objects/deals/**",
        FaultKind::Status(423),
    ));
    let body = json!({"inputs": [upsert_input("c1", json!({}))]});
    assert_eq!(
        t.get("/crm/v3/objects/contacts").await.status,
        200,
        "another route"
    );
    for _ in 0..2 {
        let a = t
            .post("/crm/v3/objects/contacts/batch/upsert", body.clone())
            .await;
        assert_eq!(a.status, 503);
        assert!(a.headers.get("x-hubspot-ratelimit-remaining").is_some());
    }
    assert!(t.fake.records(ObjectType::Contact).is_empty());
    assert_eq!(
        t.post("/crm/v3/objects/contacts/batch/upsert", body)
            .await
            .status,
        200
    );
    let a = t.get("/crm/v3/objects/deals/1").await;
    assert_eq!(
        (a.status, a.body["category"].clone()),
        (423, json!("LOCKED"))
    );
    assert!(t.fake.pending_faults().is_empty());
    let calls = t.fake.calls();
    assert_eq!(calls.iter().filter(|c| c.fault.is_some()).count(), 3);
}

#[tokio::test]
async fn scripted_429s_carry_the_ten_secondly_or_daily_body() {
    let t = T::new().await;
    t.fake.script(Fault::new(
        "/crm/v3/objects/contacts",
        FaultKind::RateLimited(Policy::TenSecondly),
    ));
    t.fake.script(Fault::new(
        "/crm/v3/objects/contacts",
        FaultKind::RateLimited(Policy::Daily),
    ));
    let a = t.get("/crm/v3/objects/contacts").await;
    assert_eq!(
        (a.status, a.body["policyName"].clone()),
        (429, json!("TEN_SECONDLY_ROLLING"))
    );
    let a = t.get("/crm/v3/objects/contacts").await;
    assert_eq!(
        (a.status, a.body["policyName"].clone()),
        (429, json!("DAILY"))
    );
    assert_eq!(t.get("/crm/v3/objects/contacts").await.status, 200);
}

#[tokio::test]
async fn a_timeout_hangs_past_the_client_and_applies_nothing_but_hang_after_apply_writes() {
    let t = T::new().await;
    let client = enerflo_sync::wire::client_builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let create = |email: &str| {
        client
            .post(format!("{}/crm/v3/objects/contacts", t.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(json!({"properties": {"email": email}}).to_string())
            .send()
    };
    t.fake.script(Fault::new(
        "/crm/v3/objects/contacts",
        FaultKind::Timeout(Duration::from_secs(30)),
    ));
    let e = create("a@example.test").await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(t.fake.records(ObjectType::Contact).is_empty());
    t.fake.script(Fault::new(
        "/crm/v3/objects/contacts",
        FaultKind::HangAfterApply(Duration::from_secs(30)),
    ));
    let e = create("b@example.test").await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(
        t.fake
            .find(ObjectType::Contact, "email", "b@example.test")
            .len(),
        1
    );
    // Logged on arrival, with the answer it would have given.
    let statuses: Vec<u16> = t.fake.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![504, 201]);
}

#[tokio::test]
async fn a_slow_answer_arrives_late_and_applied() {
    let t = T::new().await;
    t.fake.script(Fault::new(
        "/crm/v3/objects/contacts",
        FaultKind::Slow(Duration::from_millis(200)),
    ));
    let started = std::time::Instant::now();
    let a = t
        .post(
            "/crm/v3/objects/contacts",
            json!({"properties": {"firstname": "S"}}),
        )
        .await;
    assert_eq!(a.status, 201);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn fault_patterns_match_one_segment_per_star_and_any_rest_for_a_final_double_star() {
    use crate::fakes::faults::pattern_matches as m;
    assert!(m(
        "/crm/v3/objects/*/batch/upsert",
        "/crm/v3/objects/deals/batch/upsert"
    ));
    assert!(!m(
        "/crm/v3/objects/*/batch/upsert",
        "/crm/v3/objects/deals/batch/create"
    ));
    assert!(!m("/crm/v3/objects/*", "/crm/v3/objects/deals/1"));
    assert!(m("/crm/v3/objects/**", "/crm/v3/objects/deals/1"));
    assert!(m("/crm/v3/objects/**", "/crm/v3/objects"));
    assert!(m("/crm/v3/objects/contacts", "/crm/v3/objects/contacts/"));
}

// ---- 13. the webhook emitter ------------------------------------------------------------------

const PUBLISHED_SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
const OWN_SECRET: &str = "fake-client-secret-0001";

#[test]
fn v1_and_v2_signatures_match_hubspots_published_test_vectors() {
    let body = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    assert_eq!(
        sign_v1(PUBLISHED_SECRET, body.as_bytes()),
        "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    );
    assert_eq!(
        sign_v2(
            PUBLISHED_SECRET,
            "GET",
            "https://www.example.com/webhook_uri",
            b""
        ),
        "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
    );
}

#[test]
fn v3_v2_and_v1_signatures_match_the_references_own_vectors() {
    let url = "https://hooks.example.test/crm/hubspot/inbound?tenant=acme";
    let body = br#"{"enerflo_deal_id":"deal-123","dealstage":"closedwon"}"#;
    assert_eq!(
        sign_v3(OWN_SECRET, "POST", url, body, 1767225600000),
        "QGdPgjFr6ARgCETbLLXqijkPpKgleJq1AxNdVYaH0Qk="
    );
    assert_eq!(
        sign_v2(OWN_SECRET, "POST", url, body),
        "49ad76111abdd0d918ae627d87054f30e82b019c9d3f16fe2d05dd0957c4c5d6"
    );
    assert_eq!(
        sign_v1(OWN_SECRET, body),
        "af80d28cdec36cb7c6754a381489062b73862b76c5bfc3e5676c886845396e3b"
    );
    let raw = "https://hooks.example.test/crm/hubspot/inbound?email=jane%40example.test&x=a%20b";
    assert_eq!(
        v3_uri(raw),
        "https://hooks.example.test/crm/hubspot/inbound?email=jane@example.test&x=a%20b"
    );
    assert_eq!(
        sign_v3(OWN_SECRET, "POST", raw, br#"{"a":1}"#, 1767225600000),
        "dO03IYgGLKGKvd6fQRFVaFtBxwwFGDAG3qCMfIZn9oE="
    );
}

#[test]
fn v3_decodes_exactly_the_listed_escapes() {
    assert_eq!(
        v3_uri("https://h.test/p%3A%2F%3F%40%21%24%27%28%29%2A%2C%3B?q=%20%2B%25%3a"),
        "https://h.test/p:/?@!$'()*,;?q=%20%2B%25%3a"
    );
}

#[test]
fn the_retry_schedule_starts_at_a_minute_grows_and_caps_at_eight_hours() {
    let s = RetrySchedule::hubspot();
    assert_eq!(s.delay(1), Duration::from_secs(60));
    assert_eq!(s.delay(2), Duration::from_secs(120));
    assert_eq!(s.delay(30), Duration::from_secs(8 * 3600));
    assert_eq!(s.give_up_after, Duration::from_secs(3 * 24 * 3600));
    let c = RetrySchedule::compressed(60_000);
    assert_eq!(
        (c.delay(1), c.delay(3)),
        (Duration::from_millis(1), Duration::from_millis(4))
    );
}

/// What a receiver saw of one request: method, path and query, headers, body.
type Seen = (String, String, HeaderMap, String);

/// A local webhook receiver answering a script of statuses (then 200), recording each request.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn receiver(script: Vec<(u16, Option<&'static str>)>) -> Receiver {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let script = Arc::new(Mutex::new(script.into_iter()));
    let s2 = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (seen, script) = (s2.clone(), script.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let pq = parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            seen.lock().unwrap().push((
                parts.method.to_string(),
                pq,
                parts.headers,
                String::from_utf8_lossy(&body).into(),
            ));
            let (status, retry_after) = script.lock().unwrap().next().unwrap_or((200, None));
            let mut r = axum::response::Response::new(axum::body::Body::from("{}"));
            *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
            if let Some(ra) = retry_after {
                r.headers_mut().insert("retry-after", ra.parse().unwrap());
            }
            r
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    Receiver {
        url: format!("http://{addr}/crm/hubspot/status?tenant=acme"),
        seen,
    }
}

fn fast() -> EmitOptions {
    EmitOptions {
        schedule: RetrySchedule::compressed(60_000).max_attempts(5),
        ..EmitOptions::default()
    }
}

#[tokio::test]
async fn the_emitter_signs_v3_over_method_url_body_and_timestamp() {
    let t = T::new().await;
    let r = receiver(vec![]).await;
    let body =
        json!({"hs_object_id": "9001", "enerflo_deal_id": "deal_0001", "dealstage": "closedwon"});
    let auth = EmitAuth::SignatureV3 {
        client_secret: OWN_SECRET.into(),
    };
    let res = t
        .fake
        .emit_workflow_with(&r.url, &body, auth, &fast())
        .await;
    assert!(res.delivered, "{res:?}");
    let seen = r.seen.lock().unwrap();
    let (method, pq, headers, got_body) = &seen[0];
    assert_eq!(
        (method.as_str(), got_body.as_str()),
        ("POST", body.to_string().as_str())
    );
    let ts: i64 = headers
        .get("x-hubspot-request-timestamp")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((t.fake.now_ms() - ts).abs() < 60_000);
    // Recomputed independently of the emitter, from what arrived.
    use hmac::{Hmac, KeyInit, Mac};
    let full = format!("{}{pq}", r.url.split("/crm/").next().unwrap());
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(OWN_SECRET.as_bytes()).unwrap();
    mac.update(format!("POST{full}{got_body}{ts}").as_bytes());
    use base64::Engine;
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(
        headers.get("x-hubspot-signature-v3").unwrap(),
        want.as_str()
    );
}

#[tokio::test]
async fn the_emitter_sends_v2_v1_and_api_key_auth_where_configured() {
    let t = T::new().await;
    let r = receiver(vec![]).await;
    let body = json!({"event": "status_changed"});
    let raw = body.to_string();
    let o = fast();
    t.fake
        .emit_workflow_with(
            &r.url,
            &body,
            EmitAuth::SignatureV2 {
                client_secret: OWN_SECRET.into(),
            },
            &o,
        )
        .await;
    t.fake
        .emit_workflow_with(
            &r.url,
            &body,
            EmitAuth::SignatureV1 {
                client_secret: OWN_SECRET.into(),
            },
            &o,
        )
        .await;
    t.fake
        .emit_workflow_with(
            &r.url,
            &body,
            EmitAuth::ApiKeyHeader {
                name: "X-Crm-Token".into(),
                value: "local-crm-token".into(),
            },
            &o,
        )
        .await;
    let q = t
        .fake
        .emit_workflow_with(
            &r.url,
            &body,
            EmitAuth::ApiKeyQuery {
                name: "token".into(),
                value: "a b".into(),
            },
            &o,
        )
        .await;
    assert!(q.delivered);
    let seen = r.seen.lock().unwrap();
    let h = |i: usize, k: &str| seen[i].2.get(k).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(h(0, "x-hubspot-signature-version").as_deref(), Some("v2"));
    assert_eq!(
        h(0, "x-hubspot-signature"),
        Some(sign_v2(OWN_SECRET, "POST", &r.url, raw.as_bytes()))
    );
    assert_eq!(h(1, "x-hubspot-signature-version").as_deref(), Some("v1"));
    assert_eq!(
        h(1, "x-hubspot-signature"),
        Some(sign_v1(OWN_SECRET, raw.as_bytes()))
    );
    assert_eq!(h(2, "x-crm-token").as_deref(), Some("local-crm-token"));
    assert!(h(2, "x-hubspot-signature").is_none());
    assert_eq!(seen[3].1, "/crm/hubspot/status?tenant=acme&token=a%20b");
}

#[tokio::test]
async fn the_emitter_retries_5xx_and_timeouts_on_the_schedule_until_a_2xx() {
    let t = T::new().await;
    let r = receiver(vec![(503, None), (500, None)]).await;
    let res = t
        .fake
        .emit_workflow_with(&r.url, &json!({"a": "1"}), EmitAuth::None, &fast())
        .await;
    assert!(res.delivered);
    let statuses: Vec<Option<u16>> = res.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![Some(503), Some(500), Some(200)]);
    let waits: Vec<Duration> = res.attempts.iter().map(|a| a.waited).collect();
    let s = &fast().schedule;
    assert_eq!(waits, vec![Duration::ZERO, s.delay(1), s.delay(2)]);
    assert_eq!(r.seen.lock().unwrap().len(), 3);
    // Nothing listening: connection errors are retried until the attempts run out.
    let res = t
        .fake
        .emit_workflow_with(
            "http://127.0.0.1:9/none",
            &json!({}),
            EmitAuth::None,
            &fast(),
        )
        .await;
    assert!(!res.delivered);
    assert_eq!(res.attempts.len(), 5);
    assert!(res.attempts.iter().all(|a| a.error.is_some()));
}

#[tokio::test]
async fn the_emitter_stops_on_a_4xx_but_retries_a_429_after_its_retry_after_in_milliseconds() {
    let t = T::new().await;
    let r = receiver(vec![(401, None)]).await;
    let res = t
        .fake
        .emit_workflow_with(&r.url, &json!({}), EmitAuth::None, &fast())
        .await;
    assert!(!res.delivered);
    assert_eq!(res.attempts.len(), 1);
    assert!(res.gave_up.unwrap().contains("4xx"));

    let r = receiver(vec![(429, Some("150")), (429, None)]).await;
    let started = std::time::Instant::now();
    let res = t
        .fake
        .emit_workflow_with(&r.url, &json!({}), EmitAuth::None, &fast())
        .await;
    assert!(res.delivered);
    let waits: Vec<Duration> = res.attempts.iter().map(|a| a.waited).collect();
    assert_eq!(
        waits,
        vec![
            Duration::ZERO,
            Duration::from_millis(150),
            fast().schedule.delay(2)
        ]
    );
    assert_eq!(res.attempts[0].retry_after_ms, Some(150));
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn each_attempt_is_signed_afresh_unless_a_timestamp_is_fixed() {
    let t = T::new().await;
    let r = receiver(vec![(503, None)]).await;
    let o = EmitOptions {
        timestamp_ms: Some(1767225600000),
        ..fast()
    };
    let auth = EmitAuth::SignatureV3 {
        client_secret: OWN_SECRET.into(),
    };
    let body = json!({"enerflo_deal_id": "deal-123", "dealstage": "closedwon"});
    let url = r.url.clone();
    let res = t.fake.emit_workflow_with(&url, &body, auth, &o).await;
    assert_eq!(res.attempts.len(), 2);
    let seen = r.seen.lock().unwrap();
    assert_eq!(
        seen[1].2.get("x-hubspot-request-timestamp").unwrap(),
        "1767225600000"
    );
    assert_eq!(
        seen[1]
            .2
            .get("x-hubspot-signature-v3")
            .unwrap()
            .to_str()
            .unwrap(),
        sign_v3(
            OWN_SECRET,
            "POST",
            &url,
            body.to_string().as_bytes(),
            1767225600000
        )
    );
}

#[tokio::test]
async fn app_webhook_mode_sends_an_event_array() {
    let t = T::new().await;
    let r = receiver(vec![]).await;
    let events = [
        json!({"eventId": 1, "subscriptionType": "deal.propertyChange", "objectId": 9001, "propertyName": "dealstage", "propertyValue": "closedwon"}),
    ];
    let res = t
        .fake
        .emit_app_events(
            &r.url,
            &events,
            EmitAuth::SignatureV1 {
                client_secret: OWN_SECRET.into(),
            },
        )
        .await;
    assert!(res.delivered);
    let seen = r.seen.lock().unwrap();
    let got: Value = serde_json::from_str(&seen[0].3).unwrap();
    assert_eq!(got.as_array().unwrap().len(), 1);
    assert_eq!(
        seen[0]
            .2
            .get("x-hubspot-signature")
            .unwrap()
            .to_str()
            .unwrap(),
        sign_v1(OWN_SECRET, seen[0].3.as_bytes())
    );
}

// ---- 14. test hooks, call log, view -----------------------------------------------------------

#[tokio::test]
async fn the_call_log_records_method_path_query_body_status_and_time() {
    let t = T::new().await;
    t.post(
        "/crm/v3/objects/contacts",
        json!({"properties": {"firstname": "L"}}),
    )
    .await;
    t.get("/crm/v3/objects/contacts?limit=5").await;
    t.send("GET", "/crm/v3/objects/contacts", None, None).await;
    let calls = t.fake.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(
        (
            calls[0].method.as_str(),
            calls[0].path.as_str(),
            calls[0].status
        ),
        ("POST", "/crm/v3/objects/contacts", 201)
    );
    assert_eq!(calls[0].json().unwrap()["properties"]["firstname"], "L");
    assert!(calls[0].response_json().unwrap()["id"].is_string());
    assert!(calls[0].at.ends_with('Z') && calls[0].at_ms > 0);
    assert_eq!(calls[1].query.as_deref(), Some("limit=5"));
    assert_eq!((calls[2].status, calls[2].counted), (401, false));
}

#[tokio::test]
async fn reset_and_seed_helpers_put_the_fake_back_and_fill_it() {
    let t = T::new().await;
    t.fake.seed_enerflo_keys();
    let c = t
        .fake
        .seed_record(
            ObjectType::Contact,
            &[("email", "s@example.test"), ("enerflo_customer_id", "c1")],
        )
        .unwrap();
    let d = t
        .fake
        .seed_record(ObjectType::Deal, &[("dealstage", "closedwon")])
        .unwrap();
    t.fake
        .seed_association(ObjectType::Deal, &d, ObjectType::Contact, &c)
        .unwrap();
    assert!(
        t.fake
            .seed_record(ObjectType::Deal, &[("dealstage", "nope")])
            .unwrap_err()
            .contains("dealstage")
    );
    assert_eq!(
        t.fake
            .find(ObjectType::Contact, "enerflo_customer_id", "c1")[0]
            .id,
        c
    );
    assert_eq!(t.fake.associations(ObjectType::Contact, &c)[0].to_id, d);
    t.get("/crm/v3/objects/contacts").await;
    t.fake.script(Fault::new("/**", FaultKind::Status(500)));
    t.fake
        .add_pipeline(Pipeline::custom("p2", "P2", &[("s1", "S1")]));
    t.fake.reset();
    assert!(t.fake.records(ObjectType::Contact).is_empty());
    assert!(
        t.fake
            .property(ObjectType::Contact, "enerflo_customer_id")
            .is_none()
    );
    assert!(t.fake.property(ObjectType::Contact, "email").is_some());
    assert!(t.fake.calls().is_empty() && t.fake.pending_faults().is_empty());
    assert_eq!(t.fake.pipelines().len(), 1);
    assert_eq!(t.fake.rate_state().in_window, 0);
    let again = t
        .fake
        .seed_record(ObjectType::Contact, &[("firstname", "N")])
        .unwrap();
    assert!(
        again.parse::<u64>().unwrap() > d.parse::<u64>().unwrap(),
        "ids are never reused"
    );
}

#[tokio::test]
async fn the_page_shows_records_escaped_without_the_token_and_accepts_no_writes() {
    let t = T::new().await;
    t.fake
        .seed_record(
            ObjectType::Contact,
            &[
                ("firstname", "<script>alert(1)</script>"),
                ("email", "x@example.test"),
            ],
        )
        .unwrap();
    let a = t.send("GET", "/", None, None).await;
    assert_eq!(a.status, 200);
    assert!(
        a.headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = a.body.as_str().unwrap();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script"));
    assert!(html.contains("x@example.test"));
    let a = t.send("GET", "/_fake/records.json", None, None).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body["contacts"][0]["properties"]["email"],
        "x@example.test"
    );
    for path in ["/", "/_fake/records.json"] {
        let a = t
            .send("POST", path, Some(json!({"properties": {}})), None)
            .await;
        assert_eq!(a.status, 405, "{path}");
    }
    assert_eq!(t.fake.records(ObjectType::Contact).len(), 1);
    assert!(t.fake.calls().is_empty(), "the view is not an API call");
}

#[tokio::test]
async fn the_router_nests_under_a_prefix() {
    let fake = HubSpotFake::new(opts());
    let app = axum::Router::new().nest("/sandbox/hubspot", fake.router());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/sandbox/hubspot", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let http = enerflo_sync::wire::client();
    let r = http
        .post(format!("{base}/crm/v3/objects/contacts"))
        .bearer_auth(TOKEN)
        .body(json!({"properties": {"firstname": "N"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(fake.calls()[0].path, "/crm/v3/objects/contacts");
    let page = http.get(&base).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("href=\"/sandbox/hubspot/_fake/records.json\""),
        "{html}"
    );
    let json = http
        .get(format!("{base}/_fake/records.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json.json::<Value>().await.unwrap()["contacts"][0]["properties"]["firstname"],
        "N"
    );
}

#[tokio::test]
async fn list_pages_with_after_and_bad_json_is_a_validation_error() {
    let t = T::new().await;
    for i in 0..3 {
        t.contact(json!({"firstname": format!("n{i}")})).await;
    }
    let a = t.get("/crm/v3/objects/contacts?limit=2").await;
    assert_eq!(a.body["results"].as_array().unwrap().len(), 2);
    let after = a.body["paging"]["next"]["after"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = t
        .get(&format!("/crm/v3/objects/contacts?limit=2&after={after}"))
        .await;
    assert_eq!(a.body["results"].as_array().unwrap().len(), 1);
    assert!(a.body.get("paging").is_none());
    let r = t
        .http
        .post(format!("{}/crm/v3/objects/contacts", t.base))
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["category"], "VALIDATION_ERROR");
    let a = t.get("/crm/v3/objects/widgets").await;
    assert_eq!(a.status, 400);
    assert!(a.body["message"].as_str().unwrap().contains("widgets"));
}

#[test]
fn max_in_any_window_counts_the_busiest_half_open_window() {
    let ms = |v: &[u64]| {
        v.iter()
            .map(|m| Duration::from_millis(*m))
            .collect::<Vec<_>>()
    };
    let w = Duration::from_secs(10);
    assert_eq!(
        rate::max_in_any_window(&ms(&[0, 1, 9_999, 10_000, 10_001]), w),
        3
    );
    assert_eq!(rate::max_in_any_window(&ms(&[]), w), 0);
}
