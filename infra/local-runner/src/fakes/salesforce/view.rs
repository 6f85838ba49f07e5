//! A read-only look at the fake for people: `GET /` is a server-rendered HTML page (no
//! JavaScript, every value escaped) of its org, API usage, records, latest calls and outbound
//! deliveries; `GET /_fake/records.json` is the same records as JSON (a ContentNote with its
//! decoded content under `_content`). Neither needs a session, and neither accepts writes.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};

use super::{RecordView, SalesforceFake};

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

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn record_json(fake: &SalesforceFake, r: &RecordView) -> Value {
    let mut m: Map<String, Value> = r.fields.clone().into_iter().collect();
    if r.object == "ContentNote"
        && let Some(text) = fake.note_content(&r.id)
    {
        m.insert("_content".into(), json!(text));
    }
    Value::Object(m)
}

fn object_names(fake: &SalesforceFake) -> Vec<String> {
    fake.db().objects.iter().map(|o| o.name.clone()).collect()
}

pub async fn records_json(State(fake): State<Arc<SalesforceFake>>) -> Json<Value> {
    let mut out = Map::new();
    for name in object_names(&fake) {
        let list: Vec<Value> = fake
            .records(&name)
            .iter()
            .map(|r| record_json(&fake, r))
            .collect();
        out.insert(name, Value::Array(list));
    }
    Json(Value::Object(out))
}

pub async fn page(
    State(fake): State<Arc<SalesforceFake>>,
    OriginalUri(uri): OriginalUri,
) -> impl IntoResponse {
    // Nested (at a prefix), a relative link would miss the prefix: link from the path asked for.
    let json_link = format!("{}/_fake/records.json", uri.path().trim_end_matches('/'));
    let mut h = String::new();
    h.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>Salesforce fake</title>");
    h.push_str("<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}code{font-size:90%}</style>");
    h.push_str("</head><body><h1>Salesforce fake</h1>");
    h.push_str("<p>What the local Salesforce holds. Read-only; reload to refresh. As JSON: ");
    let _ = write!(h, "<a href=\"{0}\">{0}</a>.</p>", escape(&json_link));
    let limits = fake.limits();
    let _ = write!(
        h,
        "<p>Org <code>{}</code>, instance <code>{}</code>, API versions v{}.0 to v{}.0. API usage (24 h): {} of {}.</p>",
        escape(&fake.opts.org_id),
        escape(&fake.instance_url().unwrap_or_default()),
        fake.opts.api_version_floor,
        fake.opts.api_version_latest,
        limits.used,
        limits.max,
    );
    for name in object_names(&fake) {
        let records = fake.records(&name);
        if records.is_empty() {
            continue;
        }
        let _ = write!(h, "<h2>{} ({})</h2>", escape(&name), records.len());
        h.push_str("<table><tr><th>Id</th><th>fields</th></tr>");
        for r in &records {
            let mut fields: String = r
                .fields
                .iter()
                .filter(|(k, v)| !v.is_null() && !is_audit(k))
                .map(|(k, v)| format!("<code>{}</code> = {}<br>", escape(k), escape(&shown(v))))
                .collect();
            if name == "ContentNote"
                && let Some(text) = fake.note_content(&r.id)
            {
                let _ = write!(
                    fields,
                    "<code>Content</code> (decoded) = {}<br>",
                    escape(&text)
                );
            }
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{fields}</td></tr>",
                escape(&r.id)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Latest calls</h2><table><tr><th>at</th><th>call</th><th>status</th><th>usage</th></tr>");
    for c in fake.calls().iter().rev().take(50) {
        let q = c
            .query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{} {}{}</code></td><td>{}</td><td>{}</td></tr>",
            escape(&c.at),
            escape(&c.method),
            escape(&c.path),
            escape(&q),
            c.status,
            escape(&c.limit_info),
        );
    }
    h.push_str("</table><h2>Outbound message deliveries</h2><table><tr><th>to</th><th>notifications</th><th>attempts</th><th>acked</th></tr>");
    for d in fake.outbound_log().iter().rev().take(20) {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&d.url),
            escape(&d.notification_ids.join(", ")),
            d.attempts.len(),
            if d.acked { "yes" } else { "no" },
        );
    }
    h.push_str("</table></body></html>");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], h)
}

fn is_audit(k: &str) -> bool {
    matches!(
        k,
        "CreatedById" | "LastModifiedById" | "SystemModstamp" | "IsDeleted" | "CreatedDate"
    )
}
