//! `POST /crm/monday/webhooks/{token}`: Monday.com board webhooks driving Enerflo through the
//! canonical `/crm/*` routes (docs/monday.md 6), with their validation, idempotency and echo
//! rules:
//!
//! * the path token is checked first, in constant time, against `MONDAY_WEBHOOK_TOKEN` (a wrong
//!   one is 404, like any unknown path); then Monday's challenge (`{"challenge": ...}`) is
//!   answered with the same JSON; with `MONDAY_SIGNING_SECRET` set, the JWT Monday puts in
//!   `Authorization` on an app's webhooks must verify (401 otherwise);
//! * on the projects board, the status column changed -> 4.1 status (the label through the
//!   profile's status map read backwards; a label no status maps to is taken as the status name),
//!   a mapped date column set -> 3.1 milestone (`milestone_dates` read backwards), an update
//!   posted -> 5.1 note; on the customers board, an item created or a mapped column edited ->
//!   1.1 lead, built from the item's columns (read from the API) through the profile;
//! * our own writes coming back are echoes: a column whose value is what the connector last
//!   wrote there (`StateKey::MondayWrites`, recorded before every write), an update carrying our
//!   marker; they write nothing to Enerflo, and the canonical routes' own fingerprints back this
//!   up;
//! * a delivery Monday retries (same `triggerUuid`) is answered from its first outcome.
//!
//! Answers follow Monday's retry rules (it retries a failed delivery once a minute for 30
//! minutes): 200 for what is done, ignored, an echo or permanently refused (the refusal is in
//! the body and logged: retrying cannot change it); 503 with `Retry-After` for an item whose
//! project is not linked yet (its project event may still be on its way) and for what may pass
//! (Enerflo or the state store unavailable), so Monday's retry delivers it later.

// A route's error is the problem+json answer itself, built once per request.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::canonical::CrmEventType;
use crate::crm::monday::api::{MondayApi, Spend};
use crate::crm::monday::{columns, is_our_update, signature};
use crate::crm::profile::{Conversion, Profile};
use crate::http::router::{InboundRoute, RouteParams};
use crate::http::{HttpRequest, HttpResponse, Problem};
use crate::secret::{Secret, SecretSet};
use crate::store::{Claim, ClaimStore, SyncStateStore};
use crate::sync::StateKey;

/// How long a delivery's outcome is kept to answer Monday's retries of it (30 minutes of
/// retries, with room).
const DELIVERY_TTL: Duration = Duration::from_secs(86_400);
/// How long a delivery being handled holds its `triggerUuid`.
const DELIVERY_LEASE: Duration = Duration::from_secs(30);
/// What an unlinked item is told to wait: Monday retries once a minute anyway.
const UNLINKED_RETRY: Duration = Duration::from_secs(60);

pub struct MondayWebhookRoute {
    /// `MONDAY_WEBHOOK_TOKEN`.
    pub tokens: SecretSet,
    /// `MONDAY_SIGNING_SECRET`.
    pub signing_secret: Option<Secret>,
    /// Reads a customer item's columns (lead events); `None` without `MONDAY_API_TOKEN`.
    pub api: Option<Arc<MondayApi>>,
    pub profile: Arc<Profile>,
    /// Profile object -> board id.
    pub boards: BTreeMap<String, String>,
    pub state: Arc<dyn SyncStateStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub leads: Arc<dyn InboundRoute>,
    pub status: Arc<dyn InboundRoute>,
    pub milestone: Arc<dyn InboundRoute>,
    pub notes: Arc<dyn InboundRoute>,
}

/// What a webhook asks of a canonical route.
enum Target {
    Status {
        item: String,
        name: String,
    },
    Milestone {
        item: String,
        key: String,
        date: Option<String>,
    },
    Note {
        item: String,
        update: String,
        text: String,
    },
    Lead {
        item: String,
    },
}

fn done(status: &str, detail: impl Into<String>) -> HttpResponse {
    HttpResponse::json(
        StatusCode::OK,
        &json!({"status": status, "detail": detail.into()}),
    )
}

fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

#[async_trait]
impl InboundRoute for MondayWebhookRoute {
    async fn handle(&self, req: &HttpRequest, _params: &RouteParams) -> HttpResponse {
        let token = req
            .path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        if self.tokens.is_empty() || !self.tokens.matches(token.as_bytes()) {
            return Problem::not_found().into_response();
        }
        if req.method != Method::POST {
            return Problem::method_not_allowed("POST").into_response();
        }
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(Value::Object(m)) => Value::Object(m),
            _ => {
                return Problem::bad_request("The body must be a JSON object.").into_response();
            }
        };
        if let Some(challenge) = body.get("challenge") {
            return HttpResponse::json(StatusCode::OK, &json!({"challenge": challenge}));
        }
        if let Some(secret) = &self.signing_secret {
            let verified = match req.header("authorization") {
                None => Err("no JWT in Authorization (MONDAY_SIGNING_SECRET is set)".to_owned()),
                Some(h) => signature::verify(
                    secret.expose().as_bytes(),
                    h,
                    &req.path,
                    crate::timefmt::now_unix(),
                )
                .map(|_| ())
                .map_err(|e| e.to_string()),
            };
            if let Err(why) = verified {
                tracing::info!(reason = %why, "Monday.com webhook refused");
                let mut p = Problem::unauthorized();
                p.detail = format!("The webhook's signature is refused: {why}.");
                return p.into_response();
            }
        }
        let Some(event) = body.get("event").filter(|e| e.is_object()) else {
            return Problem::bad_request("The body has neither `challenge` nor `event`.")
                .into_response();
        };
        let delivery = event
            .get("triggerUuid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(|u| {
                format!(
                    "monday-delivery#{}:{u}",
                    id_text(event.get("subscriptionId")).unwrap_or_default()
                )
            });
        let Some(key) = delivery else {
            return self.run(event).await;
        };
        match self
            .claims
            .claim(&key, DELIVERY_LEASE.as_secs(), DELIVERY_TTL.as_secs())
            .await
        {
            Ok(Claim::Completed { outcome }) => {
                return HttpResponse::json(
                    StatusCode::OK,
                    &json!({"status": "duplicate", "first": serde_json::from_str::<Value>(&outcome).unwrap_or(Value::Null)}),
                );
            }
            Ok(Claim::InProgress) => {
                return Problem::unavailable(
                    "This delivery is being handled right now; retry.",
                    Duration::from_secs(5),
                )
                .into_response();
            }
            Ok(Claim::Acquired) => {}
            Err(e) => return crate::http::inbound::store_problem(e).into_response(),
        }
        let answer = self.run(event).await;
        let settled = answer.status.is_success();
        let kept = if settled {
            let outcome = String::from_utf8_lossy(&answer.body).into_owned();
            self.claims
                .complete(&key, &outcome, DELIVERY_TTL.as_secs())
                .await
        } else {
            self.claims.release(&key).await
        };
        if let Err(e) = kept {
            tracing::warn!(error = %e, "Monday.com delivery record not kept; a retry is handled again");
        }
        answer
    }
}

impl MondayWebhookRoute {
    fn board_object(&self, board: &str) -> Option<&str> {
        self.boards
            .iter()
            .find(|(_, id)| id.as_str() == board)
            .map(|(o, _)| o.as_str())
    }

    /// The board the profile writes `t` to.
    fn board_of(&self, t: CrmEventType) -> Option<&str> {
        self.boards
            .get(&self.profile.event(t).object)
            .map(String::as_str)
    }

    async fn run(&self, event: &Value) -> HttpResponse {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        let board = id_text(event.get("boardId")).unwrap_or_default();
        let Some(item) = id_text(event.get("pulseId")).or_else(|| id_text(event.get("itemId")))
        else {
            return done("ignored", format!("a `{kind}` event names no item"));
        };
        if self.board_object(&board).is_none() {
            return done(
                "ignored",
                format!("board {board} is not one the profile syncs"),
            );
        }
        let projects = self.board_of(CrmEventType::StatusChanged) == Some(board.as_str());
        let customers = self.board_of(CrmEventType::LeadUpserted) == Some(board.as_str());
        let column = event.get("columnId").and_then(Value::as_str).unwrap_or("");
        let target = match kind {
            "update_column_value" if projects && column == self.profile.stages.property => {
                let label =
                    columns::from_webhook("status", event.get("value").unwrap_or(&Value::Null));
                if label.is_empty() {
                    return done("ignored", "the status was cleared");
                }
                match self.echo(&item, column, "status", &label).await {
                    Ok(true) => return done("echo", "our own write of the status"),
                    Ok(false) => {}
                    Err(p) => return p.into_response(),
                }
                let statuses = self.profile.statuses_for_stage(&label);
                let name = match statuses.as_slice() {
                    [] => label.clone(),
                    [one] => (*one).to_owned(),
                    several => {
                        return done(
                            "ignored",
                            format!(
                                "the label `{label}` stands for several Enerflo statuses ({}); set the status in Enerflo",
                                several.join(", ")
                            ),
                        );
                    }
                };
                Target::Status { item, name }
            }
            "update_column_value" if projects => {
                let Some(key) = self
                    .profile
                    .milestone_dates
                    .iter()
                    .find(|(_, c)| c.as_str() == column)
                    .map(|(k, _)| k.clone())
                else {
                    return done(
                        "ignored",
                        format!("column {column} drives nothing in Enerflo"),
                    );
                };
                let date =
                    columns::from_webhook("date", event.get("value").unwrap_or(&Value::Null));
                match self.echo(&item, column, "date", &date).await {
                    Ok(true) => return done("echo", "our own write of the date"),
                    Ok(false) => {}
                    Err(p) => return p.into_response(),
                }
                Target::Milestone {
                    item,
                    key,
                    date: (!date.is_empty()).then_some(date),
                }
            }
            "create_update" if projects => {
                let text = event
                    .get("textBody")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| {
                        strip_html(event.get("body").and_then(Value::as_str).unwrap_or(""))
                    });
                let html = event.get("body").and_then(Value::as_str).unwrap_or("");
                if is_our_update(html) || is_our_update(&text) {
                    return done("echo", "our own update");
                }
                let Some(update) = id_text(event.get("updateId")) else {
                    return done("ignored", "the update event names no update");
                };
                Target::Note { item, update, text }
            }
            "create_pulse" | "update_column_value" | "update_name" if customers => {
                Target::Lead { item }
            }
            other => {
                return done(
                    "ignored",
                    format!("`{other}` on board {board} drives nothing in Enerflo"),
                );
            }
        };
        let (route, method, path, body) = match target {
            Target::Status { item, name } => (
                &self.status,
                Method::PUT,
                format!("/crm/installs/{item}/status"),
                json!({"status": name}),
            ),
            Target::Milestone { item, key, date } => (
                &self.milestone,
                Method::PUT,
                format!("/crm/installs/{item}/milestones/{key}"),
                json!({"completed_date": date}),
            ),
            Target::Note { item, update, text } => (
                &self.notes,
                Method::POST,
                format!("/crm/installs/{item}/notes"),
                json!({"crm_note_id": update, "text": text}),
            ),
            Target::Lead { item } => match self.lead_body(&item).await {
                Ok(Some(body)) => (&self.leads, Method::POST, "/crm/leads".to_owned(), body),
                Ok(None) => return done("echo", "our own write of the customer"),
                Err(resp) => return resp,
            },
        };
        let params = RouteParams {
            install: path.split('/').nth(3).map(str::to_owned),
            milestone: path.split('/').nth(5).map(str::to_owned),
        };
        let req = HttpRequest {
            method,
            path,
            query: None,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
        };
        let params = if req.path == "/crm/leads" {
            RouteParams::default()
        } else {
            params
        };
        let answer = route.handle(&req, &params).await;
        self.for_monday(answer)
    }

    /// Whether `column` of `item` now holds what we last wrote there.
    async fn echo(
        &self,
        item: &str,
        column: &str,
        column_type: &str,
        now: &str,
    ) -> Result<bool, Problem> {
        let wrote = self.written(item).await?;
        Ok(wrote
            .get(column)
            .and_then(|v| columns::written(column_type, v))
            .is_some_and(|w| w == now))
    }

    /// The column values we last wrote to `item`.
    async fn written(&self, item: &str) -> Result<Map<String, Value>, Problem> {
        let state = self
            .state
            .get_state(&StateKey::MondayWrites(item.to_owned()).scope())
            .await
            .map_err(crate::http::inbound::store_problem)?;
        Ok(state
            .and_then(|s| s.data.get("columns").and_then(Value::as_object).cloned())
            .unwrap_or_default())
    }

    /// The `/crm/leads` body of a customer item, read from the API; `None` when every mapped
    /// column holds what we last wrote (our own write coming back).
    async fn lead_body(&self, item: &str) -> Result<Option<Value>, HttpResponse> {
        let Some(api) = &self.api else {
            return Err(done(
                "ignored",
                "customer items cannot be read without MONDAY_API_TOKEN",
            ));
        };
        let spend = Spend::default();
        let answer = api
            .call(
                "query ($i: [ID!]) { items(ids: $i) { id name column_values { id type text value } } }",
                json!({"i": [item]}),
                None,
                &spend,
            )
            .await
            .map_err(|e| {
                let e = e.into_crm(&format!("reading customer item {item}"));
                match e {
                    crate::crm::CrmError::Unavailable { retry_after, .. } => Problem::unavailable(
                        "Monday.com could not be read; retry.",
                        retry_after.unwrap_or(Duration::from_secs(30)),
                    )
                    .into_response(),
                    crate::crm::CrmError::Rejected { message, .. } => done("rejected", message),
                }
            })?;
        let Some(found) = answer.data.pointer("/items/0") else {
            return Err(done("ignored", format!("item {item} is gone")));
        };
        let mut read: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
        for c in found
            .get("column_values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(id) = c.get("id").and_then(Value::as_str) {
                read.insert(
                    id.to_owned(),
                    (
                        c.get("text").and_then(Value::as_str).map(str::to_owned),
                        c.get("value").and_then(Value::as_str).map(str::to_owned),
                    ),
                );
            }
        }
        let map = self.profile.event(CrmEventType::LeadUpserted);
        let wrote = self.written(item).await.map_err(Problem::into_response)?;
        let mut lead = Map::new();
        let mut ours = !wrote.is_empty();
        for (column, property) in &map.properties {
            if column == crate::crm::monday::NAME {
                continue;
            }
            let (text, value) = read.get(column).cloned().unwrap_or_default();
            let now = columns::from_read(property.column_type(), text.as_deref(), value.as_deref());
            let ours_here = wrote
                .get(column)
                .and_then(|v| columns::written(property.column_type(), v))
                .unwrap_or_default();
            if ours_here != now {
                ours = false;
            }
            let Some(path) = property.fields.first().map(|f| f.text.clone()) else {
                continue;
            };
            if now.is_empty()
                || path.starts_with('$')
                || !matches!(
                    property.conversion,
                    Conversion::Text | Conversion::Number { .. }
                )
            {
                continue;
            }
            let field = match path.as_str() {
                "phone" => "mobile".to_owned(),
                "owner" => "rep_email".to_owned(),
                other => other.to_owned(),
            };
            set_path(&mut lead, &field, Value::String(now));
        }
        if ours {
            return Ok(None);
        }
        lead.insert("crm_id".into(), Value::String(item.to_owned()));
        Ok(Some(Value::Object(lead)))
    }

    /// A canonical route's answer under Monday's retry rules.
    fn for_monday(&self, answer: HttpResponse) -> HttpResponse {
        let status = answer.status;
        if status.is_success() {
            let mut ok = answer;
            ok.status = StatusCode::OK;
            return ok;
        }
        let body = answer.body_json();
        let unlinked = body
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with(":unlinked-install"));
        if unlinked {
            return Problem::unavailable(
                "This Monday.com item is not linked to an Enerflo install yet; Monday retries.",
                UNLINKED_RETRY,
            )
            .into_response();
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return answer;
        }
        let kind = body.get("type").and_then(Value::as_str).unwrap_or("");
        let detail = body.get("detail").and_then(Value::as_str).unwrap_or("");
        tracing::warn!(
            status = status.as_u16(),
            problem = kind,
            detail,
            "Monday.com webhook refused by the route; answered 200 so Monday does not retry it"
        );
        HttpResponse::json(
            StatusCode::OK,
            &json!({"status": "rejected", "problem": body}),
        )
    }
}

fn set_path(obj: &mut Map<String, Value>, path: &str, v: Value) {
    match path.split_once('.') {
        None => {
            obj.insert(path.to_owned(), v);
        }
        Some((head, rest)) => {
            let slot = obj
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = slot {
                set_path(inner, rest, v);
            }
        }
    }
}

/// An update's HTML as text: tags dropped, `<br>` and paragraph ends as line breaks, the
/// common entities decoded.
pub fn strip_html(html: &str) -> String {
    let mut out = String::new();
    let mut tag = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match (in_tag, c) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                let t = tag.trim().to_ascii_lowercase();
                if (t.starts_with("br") || t == "/p") && !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            (true, c) => tag.push(c),
            (false, c) => out.push(c),
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&middot;", "\u{b7}")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_text_with_its_line_breaks() {
        assert_eq!(
            strip_html("<p>Permit &amp; HOA<br>approved</p><p>call &lt;Sam&gt;</p>"),
            "Permit & HOA\napproved\ncall <Sam>"
        );
    }

    #[test]
    fn nested_paths_build_the_lead_body() {
        let mut m = Map::new();
        set_path(&mut m, "address.zip", json!("02110"));
        set_path(&mut m, "address.city", json!("Boston"));
        set_path(&mut m, "first_name", json!("Jane"));
        assert_eq!(
            Value::Object(m),
            json!({"address": {"zip": "02110", "city": "Boston"}, "first_name": "Jane"})
        );
    }
}
