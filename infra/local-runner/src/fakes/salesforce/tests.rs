//! Tests of the Salesforce fake through HTTP (reqwest against a spawned fake), one or more per
//! item of `docs/crm-connectors.md` section 3.11, plus the emitters against local receivers.
//! The RSA key pairs are generated at test time (aws-lc-rs); none is committed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::*;

const V: &str = "/services/data/v62.0";
const ACK: &str = r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#;

struct T {
    base: String,
    fake: Arc<SalesforceFake>,
    http: reqwest::Client,
    token: String,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body[0]["errorCode"].as_str().unwrap_or_default()
    }
}

fn opts() -> FakeOptions {
    FakeOptions::default().with_enerflo_fields()
}

impl T {
    async fn new() -> Self {
        Self::with(opts()).await
    }

    async fn with(o: FakeOptions) -> Self {
        let (base, fake) = spawn(o).await;
        let token = fake.issue_token();
        Self {
            base,
            fake,
            http: enerflo_sync::wire::client(),
            token,
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
            body: if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            },
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.send(method, path, body, Some(&self.token)).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call("PATCH", path, Some(body)).await
    }

    async fn create(&self, object: &str, body: Value) -> String {
        let a = self.post(&format!("{V}/sobjects/{object}"), body).await;
        assert_eq!(a.status, 201, "{}", a.body);
        a.body["id"].as_str().unwrap().to_owned()
    }

    async fn form(&self, pairs: &[(&str, &str)]) -> Answer {
        let body: String = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let resp = self
            .http
            .post(format!("{}/services/oauth2/token", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- keys and assertions ---------------------------------------------------------------------

/// Two throwaway RSA-2048 key pairs, generated once per test run.
fn keys() -> &'static (KeyPair, KeyPair) {
    static KEYS: OnceLock<(KeyPair, KeyPair)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            KeyPair::generate(KeySize::Rsa2048).expect("generate a test RSA key"),
            KeyPair::generate(KeySize::Rsa2048).expect("generate a second test RSA key"),
        )
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn spki(kp: &KeyPair) -> Vec<u8> {
    kp.public_key().as_der().unwrap().as_ref().to_vec()
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend([0x81, n as u8]);
    } else {
        out.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// A structurally valid X.509 certificate around `spki` (the fake reads only the key).
fn certificate(spki: &[u8]) -> Vec<u8> {
    let alg = der(
        0x30,
        &der(
            0x06,
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
        ),
    );
    let name = der(
        0x30,
        &der(
            0x31,
            &der(
                0x30,
                &[der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, b"test")].concat(),
            ),
        ),
    );
    let validity = der(
        0x30,
        &[der(0x17, b"260101000000Z"), der(0x17, b"360101000000Z")].concat(),
    );
    let tbs = der(
        0x30,
        &[
            der(0xa0, &der(0x02, &[2])),
            der(0x02, &[1]),
            alg.clone(),
            name.clone(),
            validity,
            name,
            spki.to_vec(),
        ]
        .concat(),
    );
    der(0x30, &[tbs, alg, der(0x03, &[0, 1, 2, 3])].concat())
}

fn sign_jwt(kp: &KeyPair, header: &Value, claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let msg = format!("{h}.{p}");
    let mut sig = vec![0u8; kp.public_modulus_len()];
    kp.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        msg.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn jwt_opts(key_pem: String) -> FakeOptions {
    FakeOptions {
        public_key_pem: Some(key_pem),
        ..opts()
    }
}

fn claims(t: &T, exp_in: i64) -> Value {
    let o = t.fake.options();
    json!({
        "iss": o.client_id,
        "sub": o.username,
        "aud": "https://login.salesforce.com",
        "exp": t.fake.now_ms() / 1000 + exp_in,
    })
}

// ---- 1. token endpoint ------------------------------------------------------------------------

#[tokio::test]
async fn client_credentials_issue_a_token_for_the_fakes_instance_and_wrong_credentials_are_refused()
{
    let t = T::new().await;
    let o = t.fake.options().clone();
    let a = t
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &o.client_id),
            ("client_secret", &o.client_secret),
        ])
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["instance_url"], json!(t.base));
    assert_eq!(a.body["token_type"], "Bearer");
    assert!(a.body["issued_at"].as_str().is_some() && a.body["signature"].as_str().is_some());
    assert!(a.body.get("refresh_token").is_none());
    let token = a.body["access_token"].as_str().unwrap();
    let r = t
        .send("GET", &format!("{V}/limits"), None, Some(token))
        .await;
    assert_eq!(r.status, 200);

    let bad_secret = t
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &o.client_id),
            ("client_secret", "nope"),
        ])
        .await;
    assert_eq!(
        (bad_secret.status, bad_secret.body["error"].as_str()),
        (400, Some("invalid_client"))
    );
    let bad_id = t
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "other"),
            ("client_secret", &o.client_secret),
        ])
        .await;
    assert_eq!(
        (bad_id.status, bad_id.body["error"].as_str()),
        (400, Some("invalid_client_id"))
    );
    let password = t.form(&[("grant_type", "password")]).await;
    assert_eq!(password.body["error"], "unsupported_grant_type");
    assert!(password.body["error_description"].as_str().is_some());
}

#[tokio::test]
async fn jwt_bearer_verifies_the_rs256_signature_and_each_claim() {
    let (good, other) = keys();
    let t = T::with(jwt_opts(pem("PUBLIC KEY", &spki(good)))).await;
    let header = json!({"alg": "RS256"});
    let ok = t
        .form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", &sign_jwt(good, &header, &claims(&t, 170))),
        ])
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["instance_url"], json!(t.base));
    assert_eq!(ok.body["scope"], "api");
    let token = ok.body["access_token"].as_str().unwrap();
    assert_eq!(
        t.send("GET", &format!("{V}/sobjects"), None, Some(token))
            .await
            .status,
        200
    );

    let refused = |a: &Answer| {
        (
            a.status,
            a.body["error"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let wrong_key = t
        .form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", &sign_jwt(other, &header, &claims(&t, 60))),
        ])
        .await;
    assert_eq!(refused(&wrong_key), (400, "invalid_grant".into()));
    assert!(
        wrong_key.body["error_description"]
            .as_str()
            .unwrap()
            .contains("signature")
    );

    let mut c = claims(&t, 60);
    c["iss"] = json!("someone-else");
    let a = t
        .form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", &sign_jwt(good, &header, &c)),
        ])
        .await;
    assert_eq!(refused(&a), (400, "invalid_client_id".into()));

    let mut c = claims(&t, 60);
    c["sub"] = json!("other.user@example.test");
    let a = t
        .form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", &sign_jwt(good, &header, &c)),
        ])
        .await;
    assert_eq!(refused(&a), (400, "invalid_grant".into()));

    let mut c = claims(&t, 60);
    c["aud"] = json!("https://elsewhere.example.test");
    let a = t
        .form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", &sign_jwt(good, &header, &c)),
        ])
        .await;
    assert!(
        a.body["error_description"]
            .as_str()
            .unwrap()
            .contains("audience")
    );

    let expired = t
        .form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", &sign_jwt(good, &header, &claims(&t, -1))),
        ])
        .await;
    assert_eq!(refused(&expired), (400, "invalid_grant".into()));
    let too_far = t
        .form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", &sign_jwt(good, &header, &claims(&t, 181))),
        ])
        .await;
    assert_eq!(refused(&too_far), (400, "invalid_grant".into()));
    assert!(
        too_far.body["error_description"]
            .as_str()
            .unwrap()
            .contains("180")
    );

    let hs = t
        .form(&[
            ("grant_type", JWT_BEARER),
            (
                "assertion",
                &sign_jwt(good, &json!({"alg": "HS256"}), &claims(&t, 60)),
            ),
        ])
        .await;
    assert_eq!(refused(&hs), (400, "invalid_grant".into()));
    // The fake's own URL is accepted as the audience (the login URL when it is the My Domain).
    let mut c = claims(&t, 60);
    c["aud"] = json!(t.base);
    let a = t
        .form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", &sign_jwt(good, &header, &c)),
        ])
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn jwt_bearer_reads_the_key_from_an_uploaded_certificate() {
    let (good, _) = keys();
    let t = T::with(jwt_opts(pem("CERTIFICATE", &certificate(&spki(good))))).await;
    let a = t
        .form(&[
            ("grant_type", JWT_BEARER),
            (
                "assertion",
                &sign_jwt(good, &json!({"alg": "RS256"}), &claims(&t, 60)),
            ),
        ])
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn an_expired_or_revoked_token_gets_401_invalid_session_id_and_a_new_token_works() {
    let t = T::with(FakeOptions {
        token_ttl: Duration::from_secs(600),
        ..opts()
    })
    .await;
    assert_eq!(t.get(&format!("{V}/limits")).await.status, 200);
    t.fake.advance(Duration::from_secs(601));
    let a = t.get(&format!("{V}/limits")).await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.body,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );
    let fresh = t.fake.issue_token();
    assert_eq!(
        t.send("GET", &format!("{V}/limits"), None, Some(&fresh))
            .await
            .status,
        200
    );

    t.fake.expire_tokens();
    assert_eq!(
        t.send("GET", &format!("{V}/limits"), None, Some(&fresh))
            .await
            .code(),
        "INVALID_SESSION_ID"
    );
    let other = t.fake.issue_token();
    let resp = t
        .http
        .post(format!("{}/services/oauth2/revoke", t.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", enc(&other)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        t.send("GET", &format!("{V}/limits"), None, Some(&other))
            .await
            .status,
        401
    );
    assert_eq!(
        t.send("GET", &format!("{V}/limits"), None, None)
            .await
            .status,
        401
    );
}

// ---- 2. versioned paths -----------------------------------------------------------------------

#[tokio::test]
async fn versions_are_listed_without_a_session_and_an_unknown_version_is_404() {
    let t = T::new().await;
    let a = t.send("GET", "/services/data/", None, None).await;
    assert_eq!(a.status, 200);
    let list = a.body.as_array().unwrap();
    assert_eq!(list.first().unwrap()["version"], "31.0");
    let last = list.last().unwrap();
    assert_eq!(
        last,
        &json!({"label": "Spring '26", "url": "/services/data/v66.0", "version": "66.0"})
    );
    assert!(list.contains(
        &json!({"label": "Summer '19", "url": "/services/data/v46.0", "version": "46.0"})
    ));
    assert_eq!(t.fake.limits().used, 0, "the versions list does not count");
    assert!(a.headers.get("sforce-limit-info").is_some());

    assert_eq!(t.get("/services/data/v99.0/limits").await.status, 404);
    assert_eq!(
        t.get("/services/data/v30.0/limits").await.code(),
        "NOT_FOUND"
    );
    assert_eq!(t.get("/services/data/62.0/limits").await.status, 404);
}

#[tokio::test]
async fn upsert_of_an_existing_record_answers_204_before_v46_and_200_with_created_false_from_v46() {
    let t = T::new().await;
    let path =
        |v: &str| format!("/services/data/{v}/sobjects/Contact/Enerflo_Customer_Id__c/cust_1");
    let created = t.patch(&path("v45.0"), json!({"LastName": "Doe"})).await;
    assert_eq!(created.status, 201);
    assert_eq!(
        created.body.get("created"),
        None,
        "no created flag before v46"
    );
    let old = t.patch(&path("v45.0"), json!({"FirstName": "Jane"})).await;
    assert_eq!((old.status, &old.body), (204, &Value::Null));
    let new = t.patch(&path("v46.0"), json!({"FirstName": "Janet"})).await;
    assert_eq!(new.status, 200);
    assert_eq!(
        new.body,
        json!({"id": created.body["id"], "success": true, "errors": [], "created": false})
    );
}

// ---- 3. schema ---------------------------------------------------------------------------------

#[tokio::test]
async fn describe_reports_types_required_fields_restricted_picklists_external_ids_and_lookups() {
    let t = T::new().await;
    let d = t.get(&format!("{V}/sobjects/Opportunity/describe")).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.body["keyPrefix"], "006");
    let field = |name: &str| {
        d.body["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no field {name}"))
    };
    let stage = field("StageName");
    assert_eq!(
        (
            stage["type"].as_str(),
            stage["restrictedPicklist"].as_bool(),
            stage["nillable"].as_bool()
        ),
        (Some("picklist"), Some(true), Some(false))
    );
    assert!(
        stage["picklistValues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["value"] == "Closed Won")
    );
    let key = field("Enerflo_Deal_Id__c");
    assert_eq!(
        (
            key["externalId"].as_bool(),
            key["unique"].as_bool(),
            key["custom"].as_bool()
        ),
        (Some(true), Some(true), Some(true))
    );
    let status = field("Status__c");
    assert_eq!(status["restrictedPicklist"], true);
    let size = field("System_Size_kW__c");
    assert_eq!(
        (
            size["type"].as_str(),
            size["precision"].as_u64(),
            size["scale"].as_u64()
        ),
        (Some("double"), Some(6), Some(2))
    );
    let account = field("AccountId");
    assert_eq!(
        (
            account["referenceTo"].clone(),
            account["relationshipName"].clone()
        ),
        (json!(["Account"]), json!("Account"))
    );
    assert_eq!(field("CloseDate")["type"], "date");

    let global = t.get(&format!("{V}/sobjects")).await;
    let names: Vec<&str> = global.body["sobjects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    for n in [
        "Contact",
        "Lead",
        "Opportunity",
        "OpportunityContactRole",
        "ContentNote",
        "ContentDocument",
        "ContentDocumentLink",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(
        t.get(&format!("{V}/sobjects/Project__c/describe"))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn ids_are_18_characters_with_each_objects_prefix() {
    let t = T::new().await;
    let contact = t.create("Contact", json!({"LastName": "Doe"})).await;
    let lead = t
        .create(
            "Lead",
            json!({"LastName": "Doe", "Company": "Doe household"}),
        )
        .await;
    let opp = t
        .create(
            "Opportunity",
            json!({"Name": "Doe solar", "StageName": "Prospecting", "CloseDate": "2026-12-31"}),
        )
        .await;
    let role = t
        .create(
            "OpportunityContactRole",
            json!({"OpportunityId": opp, "ContactId": contact, "Role": "Decision Maker"}),
        )
        .await;
    let note = t
        .create(
            "ContentNote",
            json!({"Title": "n", "Content": STANDARD.encode("hello")}),
        )
        .await;
    let link = t
        .create(
            "ContentDocumentLink",
            json!({"ContentDocumentId": note, "LinkedEntityId": opp, "ShareType": "V"}),
        )
        .await;
    for (id, prefix) in [
        (&contact, "003"),
        (&lead, "00Q"),
        (&opp, "006"),
        (&role, "00K"),
        (&note, "069"),
        (&link, "06A"),
    ] {
        assert_eq!(id.len(), 18, "{id}");
        assert!(id.starts_with(prefix), "{id} should start with {prefix}");
        assert_eq!(normalise_id(&id[..15]).as_deref(), Some(id.as_str()));
    }
}

// ---- 4. CRUD -----------------------------------------------------------------------------------

#[tokio::test]
async fn crud_answers_salesforces_statuses_and_records_carry_attributes() {
    let t = T::new().await;
    let a = t
        .post(
            &format!("{V}/sobjects/Contact/"),
            json!({"LastName": "Doe", "Email": "jane@example.test"}),
        )
        .await;
    assert_eq!(a.status, 201);
    let id = a.body["id"].as_str().unwrap().to_owned();
    assert_eq!(a.body, json!({"id": id, "success": true, "errors": []}));

    let got = t.get(&format!("{V}/sobjects/Contact/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body["attributes"],
        json!({"type": "Contact", "url": format!("{V}/sobjects/Contact/{id}")})
    );
    assert_eq!(got.body["LastName"], "Doe");
    assert_eq!(got.body["FirstName"], Value::Null, "unset fields are null");
    let some = t
        .get(&format!("{V}/sobjects/Contact/{id}?fields=Id,lastname"))
        .await;
    let keys: Vec<&str> = some
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["Id", "LastName", "attributes"]);
    assert!(some.body.get("Email").is_none());
    assert_eq!(some.body["LastName"], "Doe");
    assert_eq!(
        t.get(&format!("{V}/sobjects/Contact/{id}?fields=Nope__c"))
            .await
            .code(),
        "INVALID_FIELD"
    );

    let upd = t
        .patch(
            &format!("{V}/sobjects/Contact/{id}"),
            json!({"FirstName": "Jane"}),
        )
        .await;
    assert_eq!((upd.status, &upd.body), (204, &Value::Null));
    assert_eq!(
        t.fake.record("Contact", &id).unwrap().str("Name"),
        Some("Jane Doe")
    );
    // The 15-character id and any case of the 18 work.
    assert_eq!(
        t.get(&format!("{V}/sobjects/Contact/{}", &id[..15]))
            .await
            .status,
        200
    );
    assert_eq!(
        t.get(&format!("{V}/sobjects/Contact/{}", id.to_lowercase()))
            .await
            .status,
        200
    );

    let del = t
        .call("DELETE", &format!("{V}/sobjects/Contact/{id}"), None)
        .await;
    assert_eq!(del.status, 204);
    let gone = t.get(&format!("{V}/sobjects/Contact/{id}")).await;
    assert_eq!((gone.status, gone.code()), (404, "ENTITY_IS_DELETED"));
    assert_eq!(
        t.get(&format!("{V}/sobjects/Contact/003000000000999AAA"))
            .await
            .code(),
        "NOT_FOUND"
    );
    assert_eq!(
        t.get(&format!("{V}/sobjects/Nope/describe")).await.status,
        404
    );
    assert_eq!(
        t.call(
            "PUT",
            &format!("{V}/sobjects/Contact/{id}"),
            Some(json!({}))
        )
        .await
        .code(),
        "METHOD_NOT_ALLOWED"
    );
}

// ---- 5. upsert ---------------------------------------------------------------------------------

#[tokio::test]
async fn upsert_creates_updates_and_refuses_fields_that_are_not_external_ids() {
    let t = T::new().await;
    let path = format!("{V}/sobjects/Contact/Enerflo_Customer_Id__c/cust_0001");
    let a = t.patch(&path, json!({"LastName": "Doe"})).await;
    assert_eq!(a.status, 201);
    assert_eq!(a.body["created"], true);
    let id = a.body["id"].as_str().unwrap().to_owned();
    let b = t.patch(&path, json!({"FirstName": "Jane"})).await;
    assert_eq!(
        (b.status, b.body["id"].as_str(), b.body["created"].as_bool()),
        (200, Some(id.as_str()), Some(false))
    );
    // Matching is case-insensitive on a case-insensitive unique field.
    let c = t
        .patch(
            &format!("{V}/sobjects/Contact/Enerflo_Customer_Id__c/CUST_0001"),
            json!({"Phone": "555"}),
        )
        .await;
    assert_eq!(c.status, 200);
    assert_eq!(t.fake.records("Contact").len(), 1);
    assert_eq!(
        t.fake
            .find("Contact", "Enerflo_Customer_Id__c", "cust_0001")[0]
            .str("Phone"),
        Some("555")
    );

    let by_key = t.get(&path).await;
    assert_eq!(
        (by_key.status, by_key.body["Id"].as_str()),
        (200, Some(id.as_str()))
    );
    let not_ext = t
        .patch(
            &format!("{V}/sobjects/Contact/LastName/Doe"),
            json!({"Phone": "1"}),
        )
        .await;
    assert_eq!(not_ext.status, 404);
    assert_eq!(
        not_ext.body,
        json!([{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}])
    );
    assert_eq!(
        t.patch(&format!("{V}/sobjects/Contact/No_Such__c/x"), json!({}))
            .await
            .status,
        404
    );
    let by_id = t
        .patch(
            &format!("{V}/sobjects/Contact/Id/{id}"),
            json!({"Phone": "2"}),
        )
        .await;
    assert_eq!(by_id.status, 405);
    let post_id = t
        .post(
            &format!("{V}/sobjects/Contact/Id"),
            json!({"LastName": "Roe"}),
        )
        .await;
    assert_eq!(
        (post_id.status, post_id.body["created"].as_bool()),
        (201, Some(true))
    );
}

#[tokio::test]
async fn upsert_on_a_non_unique_external_id_matching_several_records_answers_300_with_their_urls() {
    let t = T::new().await;
    t.fake
        .seed_field(
            "Lead",
            FieldDef::text("Legacy_Key__c", 40).external_id_not_unique(),
        )
        .unwrap();
    let one = t
        .fake
        .seed_record(
            "Lead",
            &json!({"LastName": "A", "Company": "A", "Legacy_Key__c": "k"}),
        )
        .unwrap();
    let two = t
        .fake
        .seed_record(
            "Lead",
            &json!({"LastName": "B", "Company": "B", "Legacy_Key__c": "k"}),
        )
        .unwrap();
    let a = t
        .patch(
            &format!("{V}/sobjects/Lead/Legacy_Key__c/k"),
            json!({"Phone": "1"}),
        )
        .await;
    assert_eq!(a.status, 300);
    assert_eq!(
        a.body,
        json!([
            format!("{V}/sobjects/Lead/{one}"),
            format!("{V}/sobjects/Lead/{two}")
        ])
    );
    assert!(
        t.fake
            .records("Lead")
            .iter()
            .all(|r| r.get("Phone").is_none()),
        "nothing written"
    );
}

#[tokio::test]
async fn update_only_upsert_creates_nothing_from_v61() {
    let t = T::new().await;
    let a = t
        .patch(
            &format!("{V}/sobjects/Contact/Enerflo_Customer_Id__c/c9?updateOnly=true"),
            json!({"LastName": "Doe"}),
        )
        .await;
    assert_eq!((a.status, a.code()), (404, "NOT_FOUND"));
    assert!(t.fake.records("Contact").is_empty());
    // Before v61 the parameter does not exist: the upsert creates.
    let old = t
        .patch(
            "/services/data/v60.0/sobjects/Contact/Enerflo_Customer_Id__c/c9?updateOnly=true",
            json!({"LastName": "Doe"}),
        )
        .await;
    assert_eq!(old.status, 201);
}

#[tokio::test]
async fn a_body_may_reference_a_related_record_by_its_external_id() {
    let t = T::new().await;
    let contact = t
        .create(
            "Contact",
            json!({"LastName": "Doe", "Enerflo_Customer_Id__c": "cust_1"}),
        )
        .await;
    let a = t
        .patch(
            &format!("{V}/sobjects/Opportunity/Enerflo_Deal_Id__c/deal_1"),
            json!({"Name": "Doe solar", "StageName": "Prospecting", "CloseDate": "2026-12-31", "Contact__r": {"Enerflo_Customer_Id__c": "cust_1"}}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let opp = t
        .fake
        .find("Opportunity", "Enerflo_Deal_Id__c", "deal_1")
        .remove(0);
    assert_eq!(opp.str("Contact__c"), Some(contact.as_str()));
    let missing = t
        .patch(
            &format!("{V}/sobjects/Opportunity/Enerflo_Deal_Id__c/deal_1"),
            json!({"Contact__r": {"Enerflo_Customer_Id__c": "nobody"}}),
        )
        .await;
    assert_eq!(missing.code(), "INVALID_FIELD");
    assert!(
        missing.body[0]["message"]
            .as_str()
            .unwrap()
            .contains("nobody")
    );
}

// ---- 6. errors ---------------------------------------------------------------------------------

#[tokio::test]
async fn validation_errors_are_arrays_with_message_error_code_and_fields() {
    let t = T::new().await;
    let lead = t
        .post(&format!("{V}/sobjects/Lead"), json!({"FirstName": "Jane"}))
        .await;
    assert_eq!(lead.status, 400);
    assert_eq!(
        lead.body,
        json!([{"message": "Required fields are missing: [LastName, Company]", "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["LastName", "Company"]}])
    );

    let unknown = t
        .post(
            &format!("{V}/sobjects/Contact"),
            json!({"LastName": "Doe", "Panel_Cnt__c": 3}),
        )
        .await;
    assert_eq!((unknown.status, unknown.code()), (400, "INVALID_FIELD"));
    assert!(
        unknown.body[0]["message"]
            .as_str()
            .unwrap()
            .contains("Panel_Cnt__c")
    );

    let opp = t
        .patch(
            &format!("{V}/sobjects/Opportunity/Enerflo_Deal_Id__c/d1"),
            json!({"Name": "x", "StageName": "Paused", "CloseDate": "2026-12-31"}),
        )
        .await;
    assert_eq!(opp.status, 400);
    assert_eq!(
        opp.body,
        json!([{"message": "Stage: bad value for restricted picklist field: Paused", "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "fields": ["StageName"]}])
    );
    assert!(t.fake.records("Opportunity").is_empty());

    t.create(
        "Contact",
        json!({"LastName": "A", "Enerflo_Customer_Id__c": "c1"}),
    )
    .await;
    let dup = t
        .post(
            &format!("{V}/sobjects/Contact"),
            json!({"LastName": "B", "Enerflo_Customer_Id__c": "C1"}),
        )
        .await;
    assert_eq!((dup.status, dup.code()), (400, "DUPLICATE_VALUE"));
    assert!(dup.body[0]["message"].as_str().unwrap().starts_with(
        "duplicate value found: Enerflo_Customer_Id__c duplicates value on record with id: 003"
    ));

    let bad_date = t
        .post(
            &format!("{V}/sobjects/Opportunity"),
            json!({"Name": "x", "StageName": "Prospecting", "CloseDate": "12/31/2026"}),
        )
        .await;
    assert_eq!(bad_date.code(), "JSON_PARSER_ERROR");
    let long = t
        .post(
            &format!("{V}/sobjects/Contact"),
            json!({"LastName": "x".repeat(81)}),
        )
        .await;
    assert_eq!(long.code(), "STRING_TOO_LONG");
    let email = t
        .post(
            &format!("{V}/sobjects/Contact"),
            json!({"LastName": "x", "Email": "not-an-email"}),
        )
        .await;
    assert_eq!(email.code(), "INVALID_EMAIL_ADDRESS");
    let read_only = t.post(&format!("{V}/sobjects/Opportunity"), json!({"Name": "x", "StageName": "Prospecting", "CloseDate": "2026-12-31", "IsWon": true})).await;
    assert_eq!(read_only.code(), "INVALID_FIELD_FOR_INSERT_UPDATE");
    let not_json = t.call("POST", &format!("{V}/sobjects/Contact"), None).await;
    assert_eq!(not_json.code(), "JSON_PARSER_ERROR");
}

#[tokio::test]
async fn an_org_validation_rule_answers_field_custom_validation_exception_with_its_message() {
    let t = T::new().await;
    t.fake.add_validation_rule(
        ValidationRule::new(
            "Opportunity",
            Condition::All(vec![
                Condition::Equals("StageName".into(), json!("Closed Won")),
                Condition::Blank("Amount".into()),
            ]),
            "Amount is required to close a deal",
        )
        .at("Amount"),
    );
    let a = t
        .post(
            &format!("{V}/sobjects/Opportunity"),
            json!({"Name": "x", "StageName": "Closed Won", "CloseDate": "2026-12-31"}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body,
        json!([{"message": "Amount is required to close a deal", "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": ["Amount"]}])
    );
    let ok = t.post(&format!("{V}/sobjects/Opportunity"), json!({"Name": "x", "StageName": "Closed Won", "CloseDate": "2026-12-31", "Amount": 100})).await;
    assert_eq!(ok.status, 201);
}

#[tokio::test]
async fn a_duplicate_rule_on_email_blocks_unless_an_alert_rule_is_bypassed_by_header() {
    let t = T::with(FakeOptions {
        duplicate_rules: vec![DuplicateRule {
            object: "Contact".into(),
            field: "Email".into(),
            block: false,
        }],
        ..opts()
    })
    .await;
    t.create(
        "Contact",
        json!({"LastName": "A", "Email": "jane@example.test"}),
    )
    .await;
    let dup = t
        .post(
            &format!("{V}/sobjects/Contact"),
            json!({"LastName": "B", "Email": "JANE@example.test"}),
        )
        .await;
    assert_eq!((dup.status, dup.code()), (400, "DUPLICATES_DETECTED"));
    let allowed = t
        .http
        .post(format!("{}{V}/sobjects/Contact", t.base))
        .header("authorization", format!("Bearer {}", t.token))
        .header("content-type", "application/json")
        .header("Sforce-Duplicate-Rule-Header", "allowSave=true")
        .body(json!({"LastName": "B", "Email": "jane@example.test"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status().as_u16(), 201);
}

// ---- 7. composite ------------------------------------------------------------------------------

fn note_link_composite(deal: &str, all_or_none: bool) -> Value {
    json!({
        "allOrNone": all_or_none,
        "compositeRequest": [
            {"method": "GET", "referenceId": "proj", "url": format!("{V}/sobjects/Opportunity/Enerflo_Deal_Id__c/{deal}?fields=Id")},
            {"method": "POST", "referenceId": "note", "url": format!("{V}/sobjects/ContentNote"),
             "body": {"Title": "Enerflo note note_0042", "Content": STANDARD.encode("<p>Site survey rescheduled.</p>")}},
            {"method": "POST", "referenceId": "link", "url": format!("{V}/sobjects/ContentDocumentLink"),
             "body": {"ContentDocumentId": "@{note.id}", "LinkedEntityId": "@{proj.Id}", "ShareType": "V", "Visibility": "AllUsers"}},
        ]
    })
}

async fn seed_deal(t: &T, deal: &str) -> String {
    t.fake
        .seed_record("Opportunity", &json!({"Name": "Doe solar", "StageName": "Prospecting", "CloseDate": "2026-12-31", "Enerflo_Deal_Id__c": deal}))
        .unwrap()
}

#[tokio::test]
async fn composite_chains_references_answers_200_per_item_and_counts_one_call() {
    let t = T::new().await;
    let opp = seed_deal(&t, "deal_1").await;
    let before = t.fake.limits().used;
    let a = t
        .post(
            &format!("{V}/composite"),
            note_link_composite("deal_1", true),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        t.fake.limits().used,
        before + 1,
        "a composite is one API call"
    );
    let items = a.body["compositeResponse"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(
        (
            items[0]["httpStatusCode"].as_u64(),
            items[0]["referenceId"].as_str()
        ),
        (Some(200), Some("proj"))
    );
    assert_eq!(items[0]["body"]["Id"], json!(opp));
    let note = items[1]["body"]["id"].as_str().unwrap().to_owned();
    assert_eq!(items[1]["httpStatusCode"], 201);
    assert_eq!(
        items[1]["httpHeaders"]["Location"],
        json!(format!("{V}/sobjects/ContentNote/{note}"))
    );
    assert_eq!(items[2]["httpStatusCode"], 201);
    let notes = t.fake.notes_of(&opp);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].1, "<p>Site survey rescheduled.</p>");
    assert_eq!(notes[0].0.str("Title"), Some("Enerflo note note_0042"));
}

#[tokio::test]
async fn composite_all_or_none_rolls_everything_back_and_marks_the_others_processing_halted() {
    let t = T::new().await;
    // No such deal: the GET fails, so nothing may be written.
    let a = t
        .post(
            &format!("{V}/composite"),
            note_link_composite("deal_missing", true),
        )
        .await;
    assert_eq!(a.status, 200);
    let items = a.body["compositeResponse"].as_array().unwrap();
    assert_eq!(items[0]["httpStatusCode"], 404);
    for i in [1, 2] {
        assert_eq!(items[i]["httpStatusCode"], 400);
        assert_eq!(items[i]["body"][0]["errorCode"], "PROCESSING_HALTED");
    }
    // A later failure undoes an earlier write.
    let opp = seed_deal(&t, "deal_2").await;
    let mut body = note_link_composite("deal_2", true);
    body["compositeRequest"][2]["body"]["ShareType"] = json!("X");
    let b = t.post(&format!("{V}/composite"), body).await;
    let items = b.body["compositeResponse"].as_array().unwrap();
    assert_eq!(
        items[2]["body"][0]["errorCode"],
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    );
    assert_eq!(items[1]["body"][0]["errorCode"], "PROCESSING_HALTED");
    assert!(
        t.fake.records("ContentNote").is_empty(),
        "the note was rolled back"
    );
    assert!(t.fake.notes_of(&opp).is_empty());
}

#[tokio::test]
async fn composite_without_all_or_none_runs_independent_items_and_fails_dependants() {
    let t = T::new().await;
    let a = t
        .post(
            &format!("{V}/composite"),
            note_link_composite("deal_missing", false),
        )
        .await;
    let items = a.body["compositeResponse"].as_array().unwrap();
    assert_eq!(items[0]["httpStatusCode"], 404);
    assert_eq!(
        items[1]["httpStatusCode"], 201,
        "the note does not depend on the failed GET"
    );
    assert_eq!(items[2]["httpStatusCode"], 400);
    assert_eq!(items[2]["body"][0]["errorCode"], "PROCESSING_HALTED");
    assert_eq!(t.fake.records("ContentNote").len(), 1);
}

#[tokio::test]
async fn composite_refuses_more_than_25_subrequests_and_inherited_headers() {
    let t = T::new().await;
    let sub = |i: usize| json!({"method": "GET", "referenceId": format!("r{i}"), "url": format!("{V}/limits")});
    let ok = t
        .post(
            &format!("{V}/composite"),
            json!({"compositeRequest": (0..25).map(sub).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!(ok.status, 200);
    let too_many = t
        .post(
            &format!("{V}/composite"),
            json!({"compositeRequest": (0..26).map(sub).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!(too_many.status, 400);
    let header = t
        .post(&format!("{V}/composite"), json!({"compositeRequest": [{"method": "GET", "referenceId": "a", "url": format!("{V}/limits"), "httpHeaders": {"Authorization": "Bearer x"}}]}))
        .await;
    assert_eq!(header.status, 400);
    let lower = t.post(&format!("{V}/composite"), json!({"compositeRequest": [{"method": "get", "referenceId": "a", "url": format!("{V}/limits")}]})).await;
    assert_eq!(lower.status, 400, "methods are case-sensitive");
}

// ---- 8. sObject Collections --------------------------------------------------------------------

#[tokio::test]
async fn collections_create_reports_each_record_in_order_with_status_code_errors() {
    let t = T::new().await;
    let a = t
        .post(
            &format!("{V}/composite/sobjects"),
            json!({"allOrNone": false, "records": [
                {"attributes": {"type": "Lead"}, "LastName": "Doe", "Company": "Doe household"},
                {"attributes": {"type": "Lead"}, "LastName": "Roe"},
                {"LastName": "NoType"},
            ]}),
        )
        .await;
    assert_eq!(a.status, 200);
    let r = a.body.as_array().unwrap();
    assert_eq!(r[0]["success"], true);
    assert!(r[0]["id"].as_str().unwrap().starts_with("00Q"));
    assert_eq!(
        r[1],
        json!({"success": false, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Company]", "fields": ["Company"]}]})
    );
    assert_eq!(r[2]["errors"][0]["statusCode"], "INVALID_TYPE");
    assert_eq!(t.fake.records("Lead").len(), 1);
}

#[tokio::test]
async fn collections_upsert_reports_created_per_record_and_all_or_none_rolls_back() {
    let t = T::new().await;
    t.fake
        .seed_record(
            "Contact",
            &json!({"LastName": "Old", "Enerflo_Customer_Id__c": "c1"}),
        )
        .unwrap();
    let path = format!("{V}/composite/sobjects/Contact/Enerflo_Customer_Id__c");
    let a = t
        .patch(&path, json!({"allOrNone": false, "records": [
            {"attributes": {"type": "Contact"}, "Enerflo_Customer_Id__c": "c1", "LastName": "Doe"},
            {"attributes": {"type": "Contact"}, "Enerflo_Customer_Id__c": "c2", "LastName": "Roe"},
        ]}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body[0]["created"], false);
    assert_eq!(a.body[1]["created"], true);
    assert_eq!(t.fake.records("Contact").len(), 2);

    let b = t
        .patch(&path, json!({"allOrNone": true, "records": [
            {"attributes": {"type": "Contact"}, "Enerflo_Customer_Id__c": "c3", "LastName": "New"},
            {"attributes": {"type": "Contact"}, "Enerflo_Customer_Id__c": "c4"},
        ]}))
        .await;
    assert_eq!(
        b.body[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(
        b.body[1]["errors"][0]["statusCode"],
        "REQUIRED_FIELD_MISSING"
    );
    assert_eq!(t.fake.records("Contact").len(), 2, "c3 was rolled back");
    assert_eq!(
        t.patch(
            "/services/data/v45.0/composite/sobjects/Contact/Enerflo_Customer_Id__c",
            json!({"records": []})
        )
        .await
        .status,
        404
    );

    let many: Vec<Value> = (0..201)
        .map(|i| json!({"attributes": {"type": "Contact"}, "LastName": format!("n{i}")}))
        .collect();
    let too_many = t
        .post(&format!("{V}/composite/sobjects"), json!({"records": many}))
        .await;
    assert_eq!(
        (too_many.status, too_many.code()),
        (400, "EXCEEDED_ID_LIMIT")
    );
}

// ---- 9. notes ----------------------------------------------------------------------------------

#[tokio::test]
async fn content_notes_decode_base64_are_their_document_and_links_are_validated() {
    let t = T::new().await;
    let opp = seed_deal(&t, "deal_n").await;
    let note = t
        .create(
            "ContentNote",
            json!({"Title": "Survey", "Content": STANDARD.encode("Panels &amp; battery")}),
        )
        .await;
    assert!(note.starts_with("069"));
    assert_eq!(
        t.fake.note_content(&note).as_deref(),
        Some("Panels &amp; battery")
    );
    let doc = t.get(&format!("{V}/sobjects/ContentDocument/{note}")).await;
    assert_eq!(
        (
            doc.status,
            doc.body["Title"].as_str(),
            doc.body["FileType"].as_str()
        ),
        (200, Some("Survey"), Some("SNOTE"))
    );
    let got = t.get(&format!("{V}/sobjects/ContentNote/{note}")).await;
    assert_eq!(
        got.body["Content"],
        json!(format!("{V}/sobjects/ContentNote/{note}/Content"))
    );
    assert_eq!(got.body["TextPreview"], "Panels & battery");
    let blob = t
        .http
        .get(format!("{}{V}/sobjects/ContentNote/{note}/Content", t.base))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(blob.text().await.unwrap(), "Panels &amp; battery");

    let unescaped = t
        .post(
            &format!("{V}/sobjects/ContentNote"),
            json!({"Title": "x", "Content": STANDARD.encode("Tom & Jerry")}),
        )
        .await;
    assert_eq!(
        (unescaped.status, unescaped.code()),
        (400, "FIELD_INTEGRITY_EXCEPTION")
    );
    let not_b64 = t
        .post(
            &format!("{V}/sobjects/ContentNote"),
            json!({"Title": "x", "Content": "%%%"}),
        )
        .await;
    assert_eq!(not_b64.code(), "JSON_PARSER_ERROR");

    let no_doc = t
        .post(
            &format!("{V}/sobjects/ContentDocumentLink"),
            json!({"LinkedEntityId": opp, "ShareType": "V"}),
        )
        .await;
    assert_eq!(
        no_doc.body,
        json!([{"message": "Required fields are missing: [ContentDocumentId]", "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["ContentDocumentId"]}])
    );
    let bad_share = t
        .post(
            &format!("{V}/sobjects/ContentDocumentLink"),
            json!({"ContentDocumentId": note, "LinkedEntityId": opp, "ShareType": "Z"}),
        )
        .await;
    assert_eq!(bad_share.code(), "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
    let bad_vis = t.post(&format!("{V}/sobjects/ContentDocumentLink"), json!({"ContentDocumentId": note, "LinkedEntityId": opp, "ShareType": "V", "Visibility": "Everyone"})).await;
    assert_eq!(bad_vis.body[0]["fields"], json!(["Visibility"]));
    let link = t
        .create(
            "ContentDocumentLink",
            json!({"ContentDocumentId": note, "LinkedEntityId": opp, "ShareType": "V"}),
        )
        .await;
    assert_eq!(
        t.fake
            .record("ContentDocumentLink", &link)
            .unwrap()
            .str("Visibility"),
        Some("AllUsers")
    );
    let twice = t
        .post(
            &format!("{V}/sobjects/ContentDocumentLink"),
            json!({"ContentDocumentId": note, "LinkedEntityId": opp, "ShareType": "V"}),
        )
        .await;
    assert_eq!(twice.code(), "DUPLICATE_VALUE");
    let nowhere = t.post(&format!("{V}/sobjects/ContentDocumentLink"), json!({"ContentDocumentId": note, "LinkedEntityId": "006000000000999AAA", "ShareType": "V"})).await;
    assert_eq!(nowhere.code(), "INVALID_CROSS_REFERENCE_KEY");
    let only_title = t
        .patch(
            &format!("{V}/sobjects/ContentNote/{note}"),
            json!({"FileType": "TEXT"}),
        )
        .await;
    assert_eq!(only_title.code(), "INVALID_FIELD_FOR_INSERT_UPDATE");
    let classic = t
        .post(
            &format!("{V}/sobjects/Note"),
            json!({"ParentId": opp, "Title": "t", "Body": "plain"}),
        )
        .await;
    assert_eq!(classic.status, 201);
    assert!(classic.body["id"].as_str().unwrap().starts_with("002"));
}

// ---- 10. limits --------------------------------------------------------------------------------

#[tokio::test]
async fn every_answer_carries_sforce_limit_info_and_the_daily_allocation_ends_in_403() {
    let t = T::with(FakeOptions {
        daily_limit: 3,
        ..opts()
    })
    .await;
    let a = t.get(&format!("{V}/limits")).await;
    assert_eq!(a.headers["sforce-limit-info"], "api-usage=1/3");
    assert_eq!(
        a.body["DailyApiRequests"],
        json!({"Max": 3, "Remaining": 2})
    );
    let unauth = t
        .send("GET", &format!("{V}/limits"), None, Some("nope"))
        .await;
    assert_eq!(
        unauth.headers["sforce-limit-info"], "api-usage=1/3",
        "a 401 does not count"
    );
    let err = t.post(&format!("{V}/sobjects/Lead"), json!({})).await;
    assert_eq!(err.headers["sforce-limit-info"], "api-usage=2/3");
    t.get(&format!("{V}/sobjects")).await;
    let over = t.get(&format!("{V}/limits")).await;
    assert_eq!(over.status, 403);
    assert_eq!(
        over.body,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    assert_eq!(over.headers["sforce-limit-info"], "api-usage=3/3");
    let w = t
        .post(&format!("{V}/sobjects/Contact"), json!({"LastName": "Doe"}))
        .await;
    assert_eq!(w.status, 403);
    assert!(
        t.fake.records("Contact").is_empty(),
        "nothing written past the limit"
    );
    // The window is rolling: a day later the requests have aged out.
    t.fake.advance(Duration::from_secs(24 * 3600 + 1));
    let token = t.fake.issue_token();
    assert_eq!(
        t.send("GET", &format!("{V}/limits"), None, Some(&token))
            .await
            .status,
        200
    );
    assert_eq!(t.fake.limits(), Limits { used: 1, max: 3 });
}

#[tokio::test]
async fn set_api_usage_starts_a_test_near_the_limit() {
    let t = T::new().await;
    t.fake.set_api_usage(99_999);
    assert_eq!(
        t.get(&format!("{V}/limits")).await.headers["sforce-limit-info"],
        "api-usage=100000/100000"
    );
    assert_eq!(
        t.get(&format!("{V}/limits")).await.code(),
        "REQUEST_LIMIT_EXCEEDED"
    );
}

// ---- 11. faults --------------------------------------------------------------------------------

#[tokio::test]
async fn scripted_faults_answer_5xx_and_lock_errors_without_applying_the_write() {
    let t = T::new().await;
    let path = format!("{V}/sobjects/Contact/Enerflo_Customer_Id__c/c1");
    t.fake.script(Fault::new(
        "/services/data/*/sobjects/Contact/**",
        FaultKind::Status(503),
    ));
    t.fake.script(
        Fault::new(
            "/services/data/*/sobjects/Contact/**",
            FaultKind::UnableToLockRow,
        )
        .method("PATCH"),
    );
    t.fake.script(Fault::new(
        "/services/data/*/sobjects/Contact/**",
        FaultKind::Status(500),
    ));
    let a = t.patch(&path, json!({"LastName": "Doe"})).await;
    assert_eq!((a.status, a.code()), (503, "SERVER_UNAVAILABLE"));
    let b = t.patch(&path, json!({"LastName": "Doe"})).await;
    assert_eq!((b.status, b.code()), (400, "UNABLE_TO_LOCK_ROW"));
    let c = t.patch(&path, json!({"LastName": "Doe"})).await;
    assert_eq!((c.status, c.code()), (500, "UNKNOWN_EXCEPTION"));
    assert!(t.fake.records("Contact").is_empty());
    assert!(t.fake.pending_faults().is_empty());
    assert_eq!(t.patch(&path, json!({"LastName": "Doe"})).await.status, 201);
    let faulted: Vec<_> = t
        .fake
        .api_calls()
        .iter()
        .filter_map(|c| c.fault.clone())
        .collect();
    assert_eq!(faulted.len(), 3);
}

#[tokio::test]
async fn an_expire_session_fault_expires_the_token_mid_run_and_a_new_one_is_accepted() {
    let t = T::new().await;
    t.fake.script(Fault::new(
        "/services/data/*/sobjects/**",
        FaultKind::ExpireSession,
    ));
    assert_eq!(
        t.get(&format!("{V}/limits")).await.status,
        200,
        "other routes are not faulted"
    );
    let a = t
        .patch(
            &format!("{V}/sobjects/Contact/Enerflo_Customer_Id__c/c1"),
            json!({"LastName": "Doe"}),
        )
        .await;
    assert_eq!((a.status, a.code()), (401, "INVALID_SESSION_ID"));
    assert!(!t.fake.token_valid(&t.token));
    assert_eq!(
        t.get(&format!("{V}/limits")).await.status,
        401,
        "the token stays expired"
    );
    let o = t.fake.options().clone();
    let fresh = t
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &o.client_id),
            ("client_secret", &o.client_secret),
        ])
        .await;
    let token = fresh.body["access_token"].as_str().unwrap();
    let b = t
        .send(
            "PATCH",
            &format!("{V}/sobjects/Contact/Enerflo_Customer_Id__c/c1"),
            Some(json!({"LastName": "Doe"})),
            Some(token),
        )
        .await;
    assert_eq!(b.status, 201);
}

#[tokio::test]
async fn a_slow_fault_still_answers_normally_and_faults_reach_composite_subrequests() {
    let t = T::new().await;
    t.fake.script(Fault::new(
        "/services/data/*/limits",
        FaultKind::Slow(Duration::from_millis(20)),
    ));
    let a = t.get(&format!("{V}/limits")).await;
    assert_eq!(a.status, 200);
    assert!(
        t.fake.api_calls()[0]
            .fault
            .as_deref()
            .unwrap()
            .starts_with("Slow")
    );
    let opp = seed_deal(&t, "deal_f").await;
    t.fake.script(Fault::new(
        "/services/data/*/sobjects/ContentDocumentLink",
        FaultKind::UnableToLockRow,
    ));
    let b = t
        .post(
            &format!("{V}/composite"),
            note_link_composite("deal_f", true),
        )
        .await;
    let items = b.body["compositeResponse"].as_array().unwrap();
    assert_eq!(items[2]["body"][0]["errorCode"], "UNABLE_TO_LOCK_ROW");
    assert!(t.fake.notes_of(&opp).is_empty() && t.fake.records("ContentNote").is_empty());
    // Retried, the same composite goes through once.
    let c = t
        .post(
            &format!("{V}/composite"),
            note_link_composite("deal_f", true),
        )
        .await;
    assert_eq!(c.body["compositeResponse"][2]["httpStatusCode"], 201);
    assert_eq!(t.fake.notes_of(&opp).len(), 1);
}

// ---- SOQL --------------------------------------------------------------------------------------

#[tokio::test]
async fn soql_finds_records_by_field_and_keeps_the_content_document_link_restriction() {
    let t = T::new().await;
    let id = t
        .fake
        .seed_record(
            "Contact",
            &json!({"LastName": "O'Neil", "Enerflo_Customer_Id__c": "cust_7"}),
        )
        .unwrap();
    t.fake
        .seed_record("Contact", &json!({"LastName": "Other"}))
        .unwrap();
    let q = enc("SELECT Id, LastName FROM Contact WHERE Enerflo_Customer_Id__c = 'CUST_7'");
    let a = t.get(&format!("{V}/query?q={q}")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["totalSize"], 1);
    assert_eq!(a.body["done"], true);
    assert_eq!(
        a.body["records"][0],
        json!({"attributes": {"type": "Contact", "url": format!("{V}/sobjects/Contact/{id}")}, "Id": id, "LastName": "O'Neil"})
    );
    let q = enc("SELECT Id FROM Contact WHERE LastName = 'O\\'Neil'");
    assert_eq!(
        t.get(&format!("{V}/query/?q={q}")).await.body["totalSize"],
        1
    );
    let count = t
        .get(&format!(
            "{V}/query?q={}",
            enc("SELECT COUNT() FROM Contact")
        ))
        .await;
    assert_eq!(count.body["totalSize"], 2);
    let bad_field = t
        .get(&format!(
            "{V}/query?q={}",
            enc("SELECT Nope__c FROM Contact")
        ))
        .await;
    assert_eq!((bad_field.status, bad_field.code()), (400, "INVALID_FIELD"));
    assert_eq!(
        t.get(&format!("{V}/query?q={}", enc("SELECT Id FROM Nope")))
            .await
            .code(),
        "INVALID_TYPE"
    );
    let links = t
        .get(&format!(
            "{V}/query?q={}",
            enc("SELECT Id FROM ContentDocumentLink")
        ))
        .await;
    assert_eq!(links.code(), "MALFORMED_QUERY");
    let by_entity = t
        .get(&format!(
            "{V}/query?q={}",
            enc(&format!(
                "SELECT Id FROM ContentDocumentLink WHERE LinkedEntityId = '{}'",
                &id[..15]
            ))
        ))
        .await;
    assert_eq!(by_entity.body["totalSize"], 0);
}

// ---- 12. outbound messages ---------------------------------------------------------------------

type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;
type Hook = Arc<dyn Fn(usize) + Send + Sync>;

/// A receiver answering `answers` in turn (the last one repeated), calling `hook` with the
/// request's index before answering.
async fn receiver(answers: Vec<(u16, &'static str)>, hook: Option<Hook>) -> (String, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let queue = Arc::new(Mutex::new(answers.into_iter().collect::<VecDeque<_>>()));
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
        let s = s.clone();
        let queue = queue.clone();
        let hook = hook.clone();
        async move {
            let n = {
                let mut seen = s.lock().unwrap();
                seen.push((headers, body));
                seen.len() - 1
            };
            if let Some(h) = &hook {
                h(n);
            }
            let mut q = queue.lock().unwrap();
            let (status, body) = if q.len() > 1 {
                q.pop_front().unwrap()
            } else {
                *q.front().unwrap()
            };
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                body.to_owned(),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn outbound_messages_are_soap_notifications_retried_until_acked_with_stable_ids() {
    let t = T::new().await;
    let opp = seed_deal(&t, "deal_om").await;
    let fake = t.fake.clone();
    let id = opp.clone();
    // After the first attempt an admin changes the stage: later attempts carry the new value.
    let hook: Hook = Arc::new(move |n| {
        if n == 0 {
            fake.seed_update("Opportunity", &id, &json!({"StageName": "Closed Won"}))
                .unwrap();
        }
    });
    let nack = r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>false</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#;
    let (url, seen) = receiver(vec![(503, "busy"), (200, nack), (200, ACK)], Some(hook)).await;
    let msg = t
        .fake
        .outbound_message("Opportunity", &[&opp], &["Enerflo_Deal_Id__c", "StageName"])
        .unwrap();
    let r = t
        .fake
        .send_outbound(&format!("{url}/crm/salesforce/outbound-message"), &msg)
        .await;
    assert!(r.acked, "{r:?}");
    assert_eq!(r.attempts.len(), 3);
    assert!(
        r.attempts[1].waited > Duration::ZERO && r.attempts[2].waited > r.attempts[1].waited,
        "gaps grow"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    let (headers, first) = &seen[0];
    assert_eq!(headers["content-type"], "text/xml; charset=utf-8");
    assert_eq!(headers["soapaction"], "\"\"");
    let org = &t.fake.options().org_id;
    for part in [
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"".to_owned(),
        "<notifications xmlns=\"http://soap.sforce.com/2005/09/outbound\">".to_owned(),
        format!("<OrganizationId>{org}</OrganizationId>"),
        format!("<ActionId>{}</ActionId>", msg.action_id),
        "<SessionId xsi:nil=\"true\"/>".to_owned(),
        format!(
            "<EnterpriseUrl>{}/services/Soap/c/66.0/{}</EnterpriseUrl>",
            t.base,
            &org[..15]
        ),
        format!(
            "<PartnerUrl>{}/services/Soap/u/66.0/{}</PartnerUrl>",
            t.base,
            &org[..15]
        ),
        format!("<Id>{}</Id>", msg.notifications[0].id),
        "<sObject xsi:type=\"sf:Opportunity\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">"
            .to_owned(),
        format!("<sf:Id>{opp}</sf:Id>"),
        "<sf:Enerflo_Deal_Id__c>deal_om</sf:Enerflo_Deal_Id__c>".to_owned(),
        "<sf:StageName>Prospecting</sf:StageName>".to_owned(),
    ] {
        assert!(first.contains(&part), "missing {part} in {first}");
    }
    assert!(msg.notifications[0].id.starts_with("04l") && msg.action_id.starts_with("04k"));
    for (_, body) in seen.iter() {
        assert!(
            body.contains(&format!("<Id>{}</Id>", msg.notifications[0].id)),
            "the same notification id on every attempt"
        );
    }
    assert!(
        seen[2]
            .1
            .contains("<sf:StageName>Closed Won</sf:StageName>"),
        "values at send time"
    );
    assert_eq!(t.fake.outbound_log().len(), 1);
}

#[tokio::test]
async fn an_outbound_message_never_acked_is_dropped_when_the_schedule_runs_out() {
    let t = T::with(FakeOptions {
        outbound: OutboundOptions {
            schedule: RetrySchedule::compressed(100_000),
            ..OutboundOptions::default()
        },
        ..opts()
    })
    .await;
    let (url, seen) = receiver(vec![(500, "<soapenv:Fault/>")], None).await;
    let msg = t
        .fake
        .outbound_message_with_values(
            "Opportunity",
            &[vec![
                ("Id", Some("006000000000001AAA")),
                ("Status__c", None),
            ]],
        )
        .unwrap();
    let r = t.fake.send_outbound(&url, &msg).await;
    assert!(!r.acked);
    assert!(
        r.gave_up.as_deref().unwrap().starts_with("dropped"),
        "{:?}",
        r.gave_up
    );
    assert_eq!(seen.lock().unwrap().len(), r.attempts.len());
    assert!(r.attempts.len() > 2, "retried before dropping");
    assert!(
        seen.lock().unwrap()[0]
            .1
            .contains("<sf:Status__c xsi:nil=\"true\"/>")
    );
}

#[tokio::test]
async fn outbound_duplicates_and_reordering_on_demand() {
    let t = T::new().await;
    let (url, seen) = receiver(vec![(200, ACK)], None).await;
    let a = t
        .fake
        .outbound_message_with_values("Opportunity", &[vec![("Id", Some("006000000000001AAA"))]])
        .unwrap();
    let b = t
        .fake
        .outbound_message_with_values("Opportunity", &[vec![("Id", Some("006000000000002AAA"))]])
        .unwrap();
    let opts = OutboundOptions {
        duplicates: 1,
        ..OutboundOptions::default()
    };
    let r = t.fake.send_outbound_with(&url, &a, &opts).await;
    assert_eq!((r.acked, r.duplicates_sent), (true, 1));
    let results = t
        .fake
        .send_outbound_all(&url, &[a.clone(), b.clone()], true)
        .await;
    assert!(results.iter().all(|r| r.acked));
    let seen = seen.lock().unwrap();
    let ids: Vec<bool> = seen
        .iter()
        .map(|(_, body)| body.contains(&a.notifications[0].id))
        .collect();
    assert_eq!(ids, [true, true, false, true], "a twice, then b before a");
    assert!(t.fake.outbound_message("Opportunity", &[], &[]).is_err());
    let many: Vec<&str> = (0..101).map(|_| "006000000000001AAA").collect();
    assert!(t.fake.outbound_message("Opportunity", &many, &[]).is_err());
}

// ---- 13. Flow HTTP callout ---------------------------------------------------------------------

#[tokio::test]
async fn a_flow_callout_posts_json_with_the_named_credentials_bearer() {
    let t = T::new().await;
    let (url, seen) = receiver(vec![(202, "{\"accepted\":true}")], None).await;
    let cred = NamedCredential::bearer(&url, "local-crm-token");
    let body = json!({"record_id": "006000000000001AAA", "enerflo_deal_id": "deal_1", "status": "On Hold"});
    let r = t
        .fake
        .flow_callout(&cred, "POST", "/crm/salesforce/status", &body)
        .await;
    assert_eq!(r.status, Some(202));
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0["authorization"], "Bearer local-crm-token");
    assert_eq!(seen[0].0["content-type"], "application/json");
    assert_eq!(serde_json::from_str::<Value>(&seen[0].1).unwrap(), body);
    assert_eq!(t.fake.callout_log().len(), 1);
}

// ---- 14. test hooks and the view ---------------------------------------------------------------

#[tokio::test]
async fn reset_seed_dump_and_the_call_log() {
    let t = T::new().await;
    let id = t
        .fake
        .seed_record("Contact", &json!({"LastName": "Doe"}))
        .unwrap();
    assert!(
        t.fake
            .seed_record("Lead", &json!({"LastName": "x"}))
            .unwrap_err()
            .contains("REQUIRED_FIELD_MISSING")
    );
    t.get(&format!("{V}/sobjects/Contact/{id}")).await;
    let calls = t.fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].method.as_str(), calls[0].status, calls[0].counted),
        ("GET", 200, true)
    );
    assert_eq!(calls[0].limit_info, "api-usage=1/100000");
    let dump: Value = t
        .http
        .get(format!("{}/_fake/records.json", t.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dump["Contact"][0]["Id"], json!(id));
    t.fake.reset();
    assert!(t.fake.records("Contact").is_empty() && t.fake.calls().is_empty());
    assert_eq!(t.fake.limits().used, 0);
    let again = t
        .fake
        .seed_record("Contact", &json!({"LastName": "Doe"}))
        .unwrap();
    assert_ne!(again, id, "ids are never reused");
    assert_eq!(
        t.get(&format!("{V}/limits")).await.status,
        200,
        "tokens survive a reset"
    );
    assert!(
        t.fake
            .object("Contact")
            .unwrap()
            .field("Enerflo_Customer_Id__c")
            .is_some()
    );
}

#[tokio::test]
async fn the_page_is_read_only_escaped_html_without_scripts() {
    let t = T::new().await;
    t.fake
        .seed_record("Contact", &json!({"LastName": "<script>alert(1)</script>"}))
        .unwrap();
    let resp = t.http.get(format!("{}/", t.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = resp.text().await.unwrap();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.to_ascii_lowercase().contains("<script"));
    assert!(html.contains("/_fake/records.json"));
    let post = t.http.post(format!("{}/", t.base)).send().await.unwrap();
    assert_eq!(post.status().as_u16(), 405);
}

#[tokio::test]
async fn collections_update_needs_each_id_and_delete_takes_an_id_list() {
    let t = T::new().await;
    let a = t
        .fake
        .seed_record("Contact", &json!({"LastName": "A"}))
        .unwrap();
    let b = t
        .fake
        .seed_record("Contact", &json!({"LastName": "B"}))
        .unwrap();
    let upd = t
        .patch(
            &format!("{V}/composite/sobjects"),
            json!({"records": [
                {"attributes": {"type": "Contact"}, "id": a, "Phone": "1"},
                {"attributes": {"type": "Contact"}, "Phone": "2"},
            ]}),
        )
        .await;
    assert_eq!(upd.body[0], json!({"id": a, "success": true, "errors": []}));
    assert_eq!(upd.body[1]["errors"][0]["statusCode"], "MISSING_ARGUMENT");
    assert_eq!(
        t.fake.record("Contact", &a).unwrap().str("Phone"),
        Some("1")
    );
    let del = t
        .call(
            "DELETE",
            &format!("{V}/composite/sobjects?ids={a},{b}&allOrNone=false"),
            None,
        )
        .await;
    assert_eq!(del.status, 200);
    assert!(
        del.body
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["success"] == true)
    );
    assert!(t.fake.records("Contact").is_empty());
    let again = t
        .call("DELETE", &format!("{V}/composite/sobjects?ids={a}"), None)
        .await;
    assert_eq!(
        again.body[0]["errors"][0]["statusCode"],
        "ENTITY_IS_DELETED"
    );
}

#[tokio::test]
async fn composite_references_index_into_query_results() {
    let t = T::new().await;
    let contact = t
        .fake
        .seed_record(
            "Contact",
            &json!({"LastName": "Doe", "Enerflo_Customer_Id__c": "cust_q"}),
        )
        .unwrap();
    let opp = seed_deal(&t, "deal_q").await;
    let q = enc("SELECT Id FROM Contact WHERE Enerflo_Customer_Id__c = 'cust_q'");
    let a = t
        .post(&format!("{V}/composite"), json!({"allOrNone": true, "compositeRequest": [
            {"method": "GET", "referenceId": "q", "url": format!("{V}/query?q={q}")},
            {"method": "POST", "referenceId": "role", "url": format!("{V}/sobjects/OpportunityContactRole"),
             "body": {"OpportunityId": opp, "ContactId": "@{q.records[0].Id}", "Role": "Decision Maker", "IsPrimary": true}},
        ]}))
        .await;
    assert_eq!(
        a.body["compositeResponse"][1]["httpStatusCode"], 201,
        "{}",
        a.body
    );
    let roles = t.fake.records("OpportunityContactRole");
    assert_eq!(roles[0].str("ContactId"), Some(contact.as_str()));
    assert_eq!(roles[0].get("IsPrimary"), Some(&json!(true)));
}

#[tokio::test]
async fn a_flow_callout_may_carry_a_static_secret_header_instead() {
    let t = T::new().await;
    let (url, seen) = receiver(vec![(200, "{}")], None).await;
    let cred = NamedCredential {
        auth: CalloutAuth::Header {
            name: "X-Enerflo-Sync-Token".into(),
            value: "local-crm-token".into(),
        },
        ..NamedCredential::bearer(&url, "unused")
    };
    let r = t
        .fake
        .flow_callout(
            &cred,
            "POST",
            "/crm/salesforce/note",
            &json!({"note_id": "n1"}),
        )
        .await;
    assert_eq!(r.status, Some(200));
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0["x-enerflo-sync-token"], "local-crm-token");
    assert!(seen[0].0.get("authorization").is_none());
}

#[tokio::test]
async fn concurrent_upserts_of_one_external_id_make_one_record() {
    let t = Arc::new(T::new().await);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move {
                t.patch(
                    &format!("{V}/sobjects/Contact/Enerflo_Customer_Id__c/cust_c"),
                    json!({"LastName": format!("Doe {i}")}),
                )
                .await
                .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 201]);
    assert_eq!(t.fake.records("Contact").len(), 1);
}

#[tokio::test]
async fn external_id_values_in_the_path_are_percent_decoded() {
    let t = T::new().await;
    let a = t
        .patch(
            &format!("{V}/sobjects/Contact/Enerflo_Customer_Id__c/cust%20one%2F2"),
            json!({"LastName": "Doe"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(
        t.fake.records("Contact")[0].str("Enerflo_Customer_Id__c"),
        Some("cust one/2")
    );
    let got = t
        .get(&format!(
            "{V}/sobjects/Contact/Enerflo_Customer_Id__c/cust%20one%2F2"
        ))
        .await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn a_defaulted_required_field_gets_its_default_but_an_explicit_null_is_missing() {
    let t = T::new().await;
    let id = t
        .create(
            "Lead",
            json!({"LastName": "Doe", "Company": "Doe household"}),
        )
        .await;
    assert_eq!(
        t.fake.record("Lead", &id).unwrap().str("Status"),
        Some(LEAD_STATUSES[0])
    );
    let a = t
        .post(
            &format!("{V}/sobjects/Lead"),
            json!({"LastName": "Doe", "Company": "Doe household", "Status": null}),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "REQUIRED_FIELD_MISSING"));
    assert_eq!(a.body[0]["fields"], json!(["Status"]));
}

#[tokio::test]
async fn a_timeout_fault_applies_nothing_and_a_hang_after_apply_fault_makes_the_write() {
    let t = T::new().await;
    let client = enerflo_sync::wire::client_builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let send = |path: String| {
        client
            .patch(format!("{}{path}", t.base))
            .bearer_auth(&t.token)
            .header("content-type", "application/json")
            .body(json!({"LastName": "Doe"}).to_string())
            .send()
    };
    t.fake.script(Fault::new(
        "/services/data/*/sobjects/Contact/**",
        FaultKind::Timeout(Duration::from_secs(30)),
    ));
    assert!(
        send(format!("{V}/sobjects/Contact/Enerflo_Customer_Id__c/c1"))
            .await
            .is_err(),
        "the client times out"
    );
    assert!(
        t.fake.records("Contact").is_empty(),
        "a timed-out request applied nothing"
    );
    t.fake.script(Fault::new(
        "/services/data/*/sobjects/Contact/**",
        FaultKind::HangAfterApply(Duration::from_secs(30)),
    ));
    assert!(
        send(format!("{V}/sobjects/Contact/Enerflo_Customer_Id__c/c2"))
            .await
            .is_err()
    );
    assert_eq!(
        t.fake.find("Contact", "Enerflo_Customer_Id__c", "c2").len(),
        1,
        "the write was made before the hang"
    );
}

/// Every custom field the default Salesforce profile writes, with the object it is on.
fn profile_custom_fields() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/profiles/salesforce.json"
    );
    let profile: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    let mut add = |object: &str, spec: &Value| {
        let keys = spec["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["property"].as_str());
        let props = ["properties", "on_create"].into_iter().flat_map(|p| {
            spec[p]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k.as_str())
        });
        for f in keys.chain(props).filter(|f| f.ends_with("__c")) {
            out.push((object.to_owned(), f.to_owned()));
        }
    };
    for (_, spec) in profile["events"].as_object().unwrap() {
        if let Some(object) = spec["object"].as_str() {
            add(object, spec);
        }
        if let Some(object) = spec["contact"]["object"].as_str() {
            add(object, &spec["contact"]);
        }
    }
    for (_, field) in profile["milestone_dates"].as_object().unwrap() {
        out.push(("Opportunity".to_owned(), field.as_str().unwrap().to_owned()));
    }
    out
}

#[test]
fn enerflo_fields_hold_every_custom_field_of_the_default_profile() {
    let fields = profile_custom_fields();
    assert!(fields.len() > 20, "{fields:?}");
    let have = enerflo_fields();
    for (object, field) in fields {
        assert!(
            have.iter().any(|(o, f)| o == &object && f.name == field),
            "{object}.{field} is written by the default profile but not in enerflo_fields()"
        );
    }
    let keys: Vec<&str> = have
        .iter()
        .filter(|(_, f)| f.external_id)
        .map(|(_, f)| f.name.as_str())
        .collect();
    for k in [
        "Enerflo_Customer_Id__c",
        "Enerflo_Customer_Uuid__c",
        "Enerflo_Deal_Id__c",
        "Enerflo_Install_Id__c",
    ] {
        assert!(keys.contains(&k), "{k} is an external id");
    }
}
