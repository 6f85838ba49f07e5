//! Each reproduced Monday.com rule through HTTP, as a client sees it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use super::*;

const TOKEN: &str = "fake-monday-token-0000";

/// What a webhook receiver got: the `Authorization` header and the body, per delivery.
type Received = Arc<Mutex<Vec<(Option<String>, Value)>>>;

async fn fake(opts: FakeOptions) -> (String, Arc<MondayFake>, u64) {
    let (url, fake) = spawn(opts).await;
    let board = fake.add_board(
        "Projects",
        &[
            ("deal", "Deal", "text"),
            ("status", "Status", "status"),
            ("kw", "kW", "numbers"),
            ("notes", "Notes", "long_text"),
            ("date_permit", "Permit", "date"),
            ("phone", "Phone", "phone"),
        ],
    );
    (format!("{url}/v2"), fake, board)
}

async fn gql(url: &str, query: &str, vars: Value, key: Option<&str>) -> (u16, HeaderMap, Value) {
    let mut req = enerflo_sync::wire::client()
        .post(url)
        .header("authorization", TOKEN)
        .header("api-version", "2026-10")
        .json(&json!({"query": query, "variables": vars}));
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

const CREATE: &str = "mutation ($b: ID!, $n: String!, $v: JSON, $l: Boolean) { create_item(board_id: $b, item_name: $n, column_values: $v, create_labels_if_missing: $l) { id name } }";

#[tokio::test]
async fn transport_rules_token_version_and_parse_errors() {
    let (url, _fake, _) = fake(FakeOptions::default()).await;
    let resp = enerflo_sync::wire::client()
        .post(&url)
        .header("authorization", "wrong")
        .json(&json!({"query": "query { me { id } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_AUTHENTICATED");
    let resp = enerflo_sync::wire::client()
        .post(&url)
        .header("authorization", TOKEN)
        .header("api-version", "2023-02")
        .json(&json!({"query": "query { me { id } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "InvalidVersionException"
    );
    let (status, headers, body) = gql(&url, "query { me { id ", json!({}), None).await;
    assert_eq!(status, 200, "Monday answers a parse error with 200");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("Parse error on")
    );
    assert_eq!(headers["api-version"], "2026-10");
    let (_, _, body) = gql(&url, "query { me { id } }", json!({}), None).await;
    assert_eq!(body["data"]["me"]["id"], "3333333", "ids are strings");
}

#[tokio::test]
async fn column_values_are_validated_per_type_and_aliases_fail_alone() {
    let (url, fake, board) = fake(FakeOptions::default()).await;
    let ok = json!({"deal": "d-1", "status": {"label": "Done"}, "kw": "8.4", "notes": {"text": "a\nb"},
                    "date_permit": {"date": "2026-03-04"}, "phone": {"phone": "+15555550100", "countryShortName": "US"}});
    let (_, _, body) = gql(
        &url,
        CREATE,
        json!({"b": board, "n": "P", "v": ok.to_string()}),
        None,
    )
    .await;
    let id: u64 = body["data"]["create_item"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(fake.text(id, "status").as_deref(), Some("Done"));
    assert_eq!(fake.text(id, "date_permit").as_deref(), Some("2026-03-04"));
    for (values, code, column) in [
        (
            json!({"status": {"label": "Permitting Complete"}}),
            "ColumnValueException",
            "status",
        ),
        (json!({"kw": "eight"}), "ColumnValueException", "kw"),
        (
            json!({"notes": "plain"}),
            "CorrectedValueException",
            "notes",
        ),
        (
            json!({"date_permit": {"date": "03/04/2026"}}),
            "ColumnValueException",
            "date_permit",
        ),
        (
            json!({"phone": {"phone": "+15555550100", "countryShortName": "us"}}),
            "ColumnValueException",
            "phone",
        ),
        (json!({"nope": "x"}), "InvalidColumnIdException", "nope"),
        (
            json!({"status": {"label": "Done", "colour": "red"}}),
            "ColumnValueException",
            "status",
        ),
    ] {
        let (status, _, body) = gql(
            &url,
            CREATE,
            json!({"b": board, "n": "P", "v": values.to_string()}),
            None,
        )
        .await;
        assert_eq!(status, 200, "{values}");
        assert_eq!(body["data"]["create_item"], Value::Null, "{values}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], code,
            "{values}: {body}"
        );
        assert_eq!(
            body["errors"][0]["extensions"]["error_data"]["column_id"], column,
            "{values}"
        );
    }
    let long = "x".repeat(256);
    let (_, _, body) = gql(
        &url,
        CREATE,
        json!({"b": board, "n": long, "v": "{}"}),
        None,
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "ItemNameTooLongException"
    );
    // With create_labels_if_missing the label is added.
    let (_, _, body) = gql(
        &url,
        CREATE,
        json!({"b": board, "n": "P", "l": true,
        "v": json!({"status": {"label": "Permitting Complete"}}).to_string()}),
        None,
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    assert!(
        fake.board(board)
            .unwrap()
            .column("status")
            .unwrap()
            .labels
            .iter()
            .any(|(_, l)| l == "Permitting Complete")
    );
    // Two aliased mutations: the bad one is null with its alias as path, the other is done.
    let q = format!(
        "mutation {{ good: change_multiple_column_values(board_id: {board}, item_id: {id}, column_values: \"{{\\\"kw\\\": \\\"9\\\"}}\") {{ id }} bad: change_multiple_column_values(board_id: {board}, item_id: {id}, column_values: \"{{\\\"kw\\\": \\\"nine\\\"}}\") {{ id }} }}"
    );
    let (_, _, body) = gql(&url, &q, json!({}), None).await;
    assert_eq!(body["data"]["good"]["id"], id.to_string());
    assert_eq!(body["data"]["bad"], Value::Null);
    assert_eq!(body["errors"][0]["path"], json!(["bad"]));
    assert_eq!(fake.text(id, "kw").as_deref(), Some("9"));
}

#[tokio::test]
async fn the_search_finds_by_column_value_after_its_lag() {
    let (url, fake, board) = fake(FakeOptions {
        search_lag: Duration::from_secs(30),
        ..FakeOptions::default()
    })
    .await;
    gql(
        &url,
        CREATE,
        json!({"b": board, "n": "P", "v": json!({"deal": "d-1"}).to_string()}),
        None,
    )
    .await;
    let search = "query ($b: ID!, $c: [ItemsPageByColumnValuesQuery!]) { items_page_by_column_values(board_id: $b, limit: 5, columns: $c) { cursor items { id column_values(ids: [\"deal\"]) { id text value } } } }";
    let vars = json!({"b": board.to_string(), "c": [{"column_id": "deal", "column_values": ["d-1", "d-9"]}]});
    let (_, _, body) = gql(&url, search, vars.clone(), None).await;
    assert_eq!(
        body["data"]["items_page_by_column_values"]["items"],
        json!([]),
        "not indexed yet"
    );
    fake.advance(Duration::from_secs(31));
    let (_, _, body) = gql(&url, search, vars, None).await;
    let items = &body["data"]["items_page_by_column_values"]["items"];
    assert_eq!(items.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(items[0]["column_values"][0]["text"], "d-1");
    assert_eq!(items[0]["column_values"][0]["value"], "\"d-1\"");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let (url, fake, board) = fake(FakeOptions::default()).await;
    let vars = json!({"b": board, "n": "P", "v": "{}"});
    let (_, h1, b1) = gql(&url, CREATE, vars.clone(), Some("key-1")).await;
    let (_, h2, b2) = gql(&url, CREATE, vars, Some("key-1")).await;
    assert!(h1.get("idempotency-replayed").is_none());
    assert_eq!(h2["idempotency-replayed"], "true");
    assert_eq!(b1["data"], b2["data"]);
    assert_eq!(fake.items(board).len(), 1);
}

#[tokio::test]
async fn the_complexity_budget_and_the_minute_limit_answer_429_with_the_wait() {
    let (url, _fake, board) = fake(FakeOptions {
        complexity_per_minute: Some(25_000),
        ..FakeOptions::default()
    })
    .await;
    for _ in 0..2 {
        let (status, _, _) =
            gql(&url, CREATE, json!({"b": board, "n": "P", "v": "{}"}), None).await;
        assert_eq!(status, 200);
    }
    let (status, headers, body) =
        gql(&url, CREATE, json!({"b": board, "n": "P", "v": "{}"}), None).await;
    assert_eq!(status, 429);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "COMPLEXITY_BUDGET_EXHAUSTED"
    );
    let wait = body["errors"][0]["extensions"]["retry_in_seconds"]
        .as_u64()
        .unwrap();
    assert!((1..=61).contains(&wait));
    assert_eq!(headers["retry-after"], wait.to_string());
    let (url, _fake, _) = fake(FakeOptions {
        minute_limit: Some(2),
        legacy_errors: true,
        ..FakeOptions::default()
    })
    .await;
    gql(&url, "query { me { id } }", json!({}), None).await;
    gql(&url, "query { me { id } }", json!({}), None).await;
    let (status, _, body) = gql(&url, "query { me { id } }", json!({}), None).await;
    assert_eq!(status, 429);
    assert_eq!(
        body["error_code"], "MINUTE_RATE_LIMIT_EXCEEDED",
        "legacy shape: {body}"
    );
}

#[tokio::test]
async fn a_webhook_needs_its_challenge_echoed_and_then_gets_signed_events() {
    let received: Received = Arc::default();
    let r = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::Json<Value>| {
            let r = r.clone();
            async move {
                if let Some(c) = body.get("challenge") {
                    return axum::Json(json!({"challenge": c}));
                }
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                r.lock().unwrap().push((auth, body.0));
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (url, fake, board) = fake(FakeOptions {
        signing_secret: Some("fake-signing-secret".into()),
        ..FakeOptions::default()
    })
    .await;
    let create = "mutation ($b: ID!, $u: String!, $c: JSON) { create_webhook(board_id: $b, url: $u, event: change_specific_column_value, config: $c) { id board_id } }";
    let (_, _, body) = gql(
        &url,
        create,
        json!({"b": board, "u": "http://127.0.0.1:9/none", "c": "{\"columnId\":\"status\"}"}),
        None,
    )
    .await;
    assert_eq!(
        body["data"]["create_webhook"],
        Value::Null,
        "an unreachable URL fails: {body}"
    );
    let (_, _, body) = gql(
        &url,
        create,
        json!({"b": board, "u": hook, "c": "{\"columnId\":\"status\"}"}),
        None,
    )
    .await;
    assert!(body["data"]["create_webhook"]["id"].is_string(), "{body}");
    let (_, _, body) = gql(&url, CREATE, json!({"b": board, "n": "P", "v": "{}"}), None).await;
    let id: u64 = body["data"]["create_item"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    fake.user_sets(id, "status", json!({"label": "Done"}), 4_444_444)
        .unwrap();
    fake.user_sets(id, "kw", json!("3"), 4_444_444).unwrap();
    let got = loop {
        let got = received.lock().unwrap().clone();
        if !got.is_empty() {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(got.len(), 1, "only the configured column: {got:#?}");
    let (auth, body) = &got[0];
    let e = &body["event"];
    assert_eq!(e["type"], "update_column_value");
    assert_eq!(e["columnType"], "color");
    assert_eq!(e["value"]["label"]["text"], "Done");
    assert_eq!(e["pulseId"], json!(id), "ids are numbers in webhooks");
    assert_eq!(e["userId"], 4_444_444);
    let claims = enerflo_sync::crm::monday::signature::verify(
        b"fake-signing-secret",
        auth.as_deref().unwrap(),
        "/hook",
        enerflo_sync::timefmt::now_unix(),
    )
    .unwrap();
    assert_eq!(claims["userId"], 3_333_333);
}
