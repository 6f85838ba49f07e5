//! A read-only look at the fake for people: `GET /` is a server-rendered HTML page (no
//! JavaScript, every value escaped) of its records, associations, pipelines, rate windows and
//! latest calls; `GET /_fake/records.json` is the same records as JSON. Neither needs the API
//! token, and neither route accepts anything but GET.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{OriginalUri, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use super::store::ObjectType;
use super::{HubSpotFake, RecordView};

pub fn routes() -> Router<Arc<HubSpotFake>> {
    Router::new()
        .route("/", get(page))
        .route("/_fake/records.json", get(records_json))
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn record_json(fake: &HubSpotFake, r: &RecordView) -> Value {
    json!({
        "id": r.id,
        "properties": r.properties,
        "createdAt": r.created_at,
        "updatedAt": r.updated_at,
        "associations": fake.associations(r.object_type, &r.id).iter().map(|a| json!({
            "toObjectType": a.to_type.path(), "toObjectId": a.to_id,
            "category": a.category, "typeId": a.type_id,
        })).collect::<Vec<_>>(),
    })
}

async fn records_json(State(fake): State<Arc<HubSpotFake>>) -> Json<Value> {
    let mut out = serde_json::Map::new();
    for t in ObjectType::ALL {
        let list: Vec<Value> = fake
            .records(t)
            .iter()
            .map(|r| record_json(&fake, r))
            .collect();
        out.insert(t.path().into(), Value::Array(list));
    }
    Json(Value::Object(out))
}

async fn page(
    State(fake): State<Arc<HubSpotFake>>,
    OriginalUri(uri): OriginalUri,
) -> impl IntoResponse {
    // Nested (the runner serves this page at `/sandbox/hubspot`), a relative link would miss the
    // prefix: link from the path the page was asked for.
    let json_link = format!("{}/_fake/records.json", uri.path().trim_end_matches('/'));
    let mut h = String::new();
    h.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>HubSpot fake</title>");
    h.push_str("<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}code{font-size:90%}</style>");
    h.push_str("</head><body><h1>HubSpot fake</h1>");
    h.push_str("<p>What the local HubSpot holds. Read-only; reload to refresh. As JSON: ");
    let _ = write!(h, "<a href=\"{0}\">{0}</a>.</p>", escape(&json_link));
    let rate = fake.rate_state();
    let _ = write!(
        h,
        "<p>Rate: {} in the last 10 s (limit {}), {} today (limit {}).</p>",
        rate.in_window,
        rate.ten_second_limit
            .map_or("off".into(), |n| n.to_string()),
        rate.daily_used,
        rate.daily_limit.map_or("off".into(), |n| n.to_string()),
    );
    for t in ObjectType::ALL {
        let records = fake.records(t);
        let _ = write!(h, "<h2>{} ({})</h2>", escape(t.path()), records.len());
        if records.is_empty() {
            continue;
        }
        h.push_str(
            "<table><tr><th>id</th><th>properties</th><th>associations</th><th>updated</th></tr>",
        );
        for r in &records {
            let props: String = r
                .properties
                .iter()
                .map(|(k, v)| format!("<code>{}</code> = {}<br>", escape(k), escape(v)))
                .collect();
            let assocs: String = fake
                .associations(t, &r.id)
                .iter()
                .map(|a| {
                    format!(
                        "{} {} (type {})<br>",
                        escape(a.to_type.singular()),
                        escape(&a.to_id),
                        a.type_id
                    )
                })
                .collect();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{props}</td><td>{assocs}</td><td>{}</td></tr>",
                escape(&r.id),
                escape(&r.updated_at)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Deal pipelines</h2><table><tr><th>pipeline</th><th>stages</th></tr>");
    for p in fake.pipelines() {
        let stages: Vec<String> = p
            .stages
            .iter()
            .map(|s| format!("<code>{}</code> {}", escape(&s.id), escape(&s.label)))
            .collect();
        let _ = write!(
            h,
            "<tr><td><code>{}</code> {}</td><td>{}</td></tr>",
            escape(&p.id),
            escape(&p.label),
            stages.join("<br>")
        );
    }
    h.push_str(
        "</table><h2>Latest calls</h2><table><tr><th>at</th><th>call</th><th>status</th></tr>",
    );
    for c in fake.calls().iter().rev().take(50) {
        let q = c
            .query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{} {}{}</code></td><td>{}</td></tr>",
            escape(&c.at),
            escape(&c.method),
            escape(&c.path),
            escape(&q),
            c.status
        );
    }
    h.push_str("</table></body></html>");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], h)
}
