//! A faithful local Monday.com, written from the team's Monday reference (docs/monday.md), not
//! from the connector: boards, columns with status labels, items and their column values in each
//! type's format with Monday's validation errors, look-up by column value (with an optional
//! indexing lag), updates, board webhooks with their challenge and (for app tokens) a JWT, the
//! complexity budget, the per-minute and daily limits with Monday's error bodies, and
//! `Idempotency-Key` replays.
//!
//! [`MondayFake::router`] serves `POST /v2` (and `POST /`), so it can be nested (the local runner
//! at `/sandbox/monday`) or served alone ([`spawn`]). `GET /_fake/state.json` shows what it holds
//! without the token.
//!
//! Where Monday's behaviour is not documented the fake chooses, and says so here:
//! * a write fires no `change_column_value` webhook for the values an item is created with (only
//!   `create_pulse`);
//! * the search index (`items_page_by_column_values`) sees a new item [`FakeOptions::search_lag`]
//!   after its creation, and later edits at once;
//! * an `Idempotency-Key` replays the first answer whatever the new request's body;
//! * requests refused for the minute or daily limit count 0.1 call toward the day, as Monday
//!   counts throttled calls; every other call, failed ones included, counts 1.

mod columns;
mod emitter;
mod graphql;
mod store;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

pub use columns::{READ_ONLY, Stored};
pub use emitter::{Delivery, jwt};
pub use store::{Board, Column, Item, Update, Webhook};

use graphql::{RootField, Sel, SelField, id_arg, ids_arg, json_arg, project};
use store::Store;

/// The API versions the fake accepts (maintenance, current, release candidate, next).
pub const VERSIONS: [&str; 4] = ["2026-04", "2026-07", "2026-10", "2027-01"];
/// The version used when a request names none.
pub const CURRENT_VERSION: &str = "2026-10";
/// The most complexity one query may cost.
pub const QUERY_COMPLEXITY_LIMIT: u64 = 5_000_000;
const IDEMPOTENCY_TTL_MS: i64 = 30 * 60 * 1000;

/// How a fake is set up.
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// The API token every call must carry as `Authorization`.
    pub token: String,
    /// The token's user: `me`, the creator of what it writes, the `userId` of their webhooks.
    pub user_id: u64,
    pub account_id: u64,
    /// With a secret, webhooks created through the API are an app's and carry an HS256 JWT.
    pub signing_secret: Option<String>,
    /// Complexity points per minute (10,000,000 for a personal token); `None`: off.
    pub complexity_per_minute: Option<u64>,
    /// What each root field costs; fields not listed cost [`FakeOptions::default_cost`].
    pub costs: BTreeMap<String, u64>,
    pub default_cost: u64,
    /// Requests per minute (1,000 below Pro); `None`: off.
    pub minute_limit: Option<u32>,
    /// Calls per day, 00:00 UTC (1,000 on Standard); `None`: off.
    pub daily_limit: Option<u32>,
    /// How long a new item stays invisible to the search.
    pub search_lag: Duration,
    /// Limit errors in the legacy top-level shape (`error_code`, `error_message`).
    pub legacy_errors: bool,
    /// Gap between failed webhook deliveries and how many tries each gets.
    pub retry_interval: Duration,
    pub retry_count: u32,
    /// How long a mutation takes (its `Idempotency-Key` is in flight meanwhile).
    pub write_latency: Duration,
}

impl Default for FakeOptions {
    fn default() -> Self {
        let costs = [
            ("create_item", 10_000),
            ("change_multiple_column_values", 1_000),
            ("change_column_value", 1_000),
            ("change_simple_column_value", 1_000),
            ("create_update", 1_000),
            ("items_page_by_column_values", 5_000),
            ("complexity", 0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Self {
            token: "fake-monday-token-0000".into(),
            user_id: 3_333_333,
            account_id: 1_111_111,
            signing_secret: None,
            complexity_per_minute: Some(10_000_000),
            costs,
            default_cost: 1_000,
            minute_limit: Some(1_000),
            daily_limit: Some(10_000),
            search_lag: Duration::ZERO,
            legacy_errors: false,
            retry_interval: emitter::RETRY_INTERVAL,
            retry_count: 30,
            write_latency: Duration::ZERO,
        }
    }
}

/// One API request and what the fake answered.
#[derive(Clone, Debug)]
pub struct Call {
    pub query: String,
    pub variables: Value,
    /// Root field names of the operation.
    pub fields: Vec<String>,
    pub idempotency_key: Option<String>,
    pub replayed: bool,
    pub status: u16,
    pub response: String,
    pub at_ms: i64,
}

impl Call {
    pub fn response_json(&self) -> Value {
        serde_json::from_str(&self.response).unwrap_or(Value::Null)
    }

    /// Whether the answer carries `errors`.
    pub fn failed(&self) -> bool {
        self.status != 200 || self.response_json().get("errors").is_some()
    }
}

/// A scripted failure for the next call(s).
#[derive(Clone, Debug)]
pub enum Fault {
    /// `COMPLEXITY_BUDGET_EXHAUSTED` (429) asking to wait `retry_in` seconds.
    Complexity { retry_in: u64 },
    /// Any status and body.
    Answer { status: u16, body: Value },
}

#[derive(Default)]
struct Limits {
    minute: Vec<i64>,
    complexity: Vec<(i64, u64)>,
    /// (UTC day, tenths of a call).
    daily: (i64, u64),
}

#[derive(Default)]
struct Idempotency {
    done: BTreeMap<String, (i64, u16, String)>,
    in_flight: std::collections::BTreeSet<String>,
}

pub struct MondayFake {
    opts: FakeOptions,
    store: Mutex<Store>,
    limits: Mutex<Limits>,
    idempotency: Mutex<Idempotency>,
    faults: Mutex<Vec<Fault>>,
    calls: Mutex<Vec<Call>>,
    deliveries: Mutex<Vec<Delivery>>,
    skew: Mutex<Duration>,
    http: reqwest::Client,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn real_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// One root field's error, as Monday reports it inside a 200.
struct FieldError {
    code: &'static str,
    message: String,
    data: Option<Value>,
}

fn ferr(code: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        code,
        message: message.into(),
        data: None,
    }
}

/// A webhook event a mutation caused, sent once the store is released.
struct Emit {
    board: u64,
    item: u64,
    /// `create_item`, `change_column_value` (with the column), `create_update`, `change_name`.
    kind: &'static str,
    column: Option<String>,
    payload: Value,
}

impl MondayFake {
    pub fn new(opts: FakeOptions) -> Arc<Self> {
        Arc::new(Self {
            opts,
            store: Mutex::new(Store::new()),
            limits: Mutex::new(Limits::default()),
            idempotency: Mutex::new(Idempotency::default()),
            faults: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            deliveries: Mutex::new(Vec::new()),
            skew: Mutex::new(Duration::ZERO),
            http: enerflo_sync::wire::client_builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        })
    }

    pub fn options(&self) -> &FakeOptions {
        &self.opts
    }

    /// `POST /v2` (and `POST /`) and `GET /_fake/state.json`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v2", post(api))
            .route("/", post(api))
            .route("/_fake/state.json", get(state_json))
            .with_state(self.clone())
    }

    /// Moves the fake's clock forward (limit windows, the search lag, idempotency replays).
    pub fn advance(&self, d: Duration) {
        *lock(&self.skew) += d;
    }

    pub fn now_ms(&self) -> i64 {
        real_ms() + lock(&self.skew).as_millis() as i64
    }

    // ---- setting up and looking ------------------------------------------------------------

    /// A board with `columns` (id, title, type); status columns get `labels` when given.
    pub fn add_board(&self, name: &str, columns: &[(&str, &str, &str)]) -> u64 {
        let mut s = lock(&self.store);
        let id = s.add_board(name);
        if let Some(b) = s.boards.get_mut(&id) {
            for (cid, title, kind) in columns {
                b.columns.push(Column::new(cid, title, kind));
            }
        }
        id
    }

    /// Sets the labels of a status (or dropdown) column.
    pub fn set_labels(&self, board: u64, column: &str, labels: &[&str]) {
        let mut s = lock(&self.store);
        if let Some(c) = s
            .boards
            .get_mut(&board)
            .and_then(|b| b.columns.iter_mut().find(|c| c.id == column))
        {
            c.labels = labels
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    (
                        if i >= 5 { i as u64 + 1 } else { i as u64 },
                        (*l).to_owned(),
                    )
                })
                .collect();
        }
    }

    pub fn board(&self, id: u64) -> Option<Board> {
        lock(&self.store).boards.get(&id).cloned()
    }

    /// The live items of a board, oldest first.
    pub fn items(&self, board: u64) -> Vec<Item> {
        lock(&self.store)
            .items
            .values()
            .filter(|i| i.board == board && !i.deleted)
            .cloned()
            .collect()
    }

    pub fn item(&self, id: u64) -> Option<Item> {
        lock(&self.store).live_item(id).cloned()
    }

    /// The display text of `column` of `item`.
    pub fn text(&self, item: u64, column: &str) -> Option<String> {
        self.item(item)
            .and_then(|i| i.values.get(column).map(|v| v.text.clone()))
    }

    /// The updates of `item`, oldest first.
    pub fn updates(&self, item: u64) -> Vec<Update> {
        lock(&self.store)
            .updates
            .values()
            .filter(|u| u.item == item)
            .cloned()
            .collect()
    }

    /// A webhook as `create_webhook` would make it, without its challenge (the runner's own
    /// route, before it listens).
    pub fn add_webhook(&self, board: u64, url: &str, event: &str, config: Value) -> u64 {
        let mut s = lock(&self.store);
        let id = s.next_webhook_id();
        let signed = self.opts.signing_secret.is_some();
        s.webhooks.insert(
            id,
            Webhook {
                id,
                board,
                url: url.into(),
                event: event.into(),
                config,
                signed,
            },
        );
        id
    }

    pub fn webhooks(&self) -> Vec<Webhook> {
        lock(&self.store).webhooks.values().cloned().collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    pub fn clear_calls(&self) {
        lock(&self.calls).clear();
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.deliveries).clone()
    }

    /// Fails the next call with `fault` (queued faults apply in order, one call each).
    pub fn fail_next(&self, fault: Fault) {
        lock(&self.faults).push(fault);
    }

    /// Calls counted toward today (tenths rounded down).
    pub fn daily_calls(&self) -> u64 {
        lock(&self.limits).daily.1 / 10
    }

    // ---- what a Monday user does (their webhooks fire, with their user id) -----------------

    /// A person sets `column` of `item` to `value` (a write value as the API takes it).
    pub fn user_sets(
        self: &Arc<Self>,
        item: u64,
        column: &str,
        value: Value,
        user: u64,
    ) -> Result<(), String> {
        let emits = {
            let mut s = lock(&self.store);
            let board = s.live_item(item).ok_or("no such item")?.board;
            let mut values = Map::new();
            values.insert(column.into(), value);
            let now = self.now_ms();
            write_values(&mut s, board, item, &values, true, now, user).map_err(|e| e.message)?
        };
        self.emit(emits, user);
        Ok(())
    }

    /// A person posts an update on `item`.
    pub fn user_posts_update(
        self: &Arc<Self>,
        item: u64,
        body: &str,
        user: u64,
    ) -> Result<u64, String> {
        let (id, emit) = {
            let mut s = lock(&self.store);
            let now = self.now_ms();
            post_update(&mut s, item, body, None, now, user).map_err(|e| e.message)?
        };
        self.emit(vec![emit], user);
        Ok(id)
    }

    /// A person creates an item on `board` with `values`.
    pub fn user_creates_item(
        self: &Arc<Self>,
        board: u64,
        name: &str,
        values: Value,
        user: u64,
    ) -> Result<u64, String> {
        let (id, emits) = {
            let mut s = lock(&self.store);
            let now = self.now_ms();
            let values = values.as_object().cloned().unwrap_or_default();
            create_item(
                &mut s,
                board,
                name,
                &values,
                false,
                now,
                self.opts.search_lag,
                user,
            )
            .map_err(|e| e.message)?
        };
        self.emit(emits, user);
        Ok(id)
    }

    // ---- the API -----------------------------------------------------------------------------

    fn log(&self, call: Call) {
        lock(&self.calls).push(call);
    }

    fn count_day(&self, tenths: u64) {
        let day = self.now_ms().div_euclid(86_400_000);
        let mut l = lock(&self.limits);
        if l.daily.0 != day {
            l.daily = (day, 0);
        }
        l.daily.1 += tenths;
    }

    fn limit_error(&self, code: &str, message: &str, retry_in: u64) -> (u16, Value) {
        let body = if self.opts.legacy_errors {
            json!({"error_code": if code == "COMPLEXITY_BUDGET_EXHAUSTED" { "ComplexityException" } else { code },
                   "status_code": 429, "error_message": format!("{message}. Reset in {retry_in} seconds"),
                   "errors": [message]})
        } else {
            json!({"errors": [{"message": message, "extensions": {"code": code, "status_code": 429, "retry_in_seconds": retry_in}}],
                   "extensions": {"request_id": request_id()}})
        };
        (429, body)
    }

    async fn handle(self: &Arc<Self>, headers: &HeaderMap, body: &Bytes) -> Response {
        let now = self.now_ms();
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let query = parsed
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let variables = parsed.get("variables").cloned().unwrap_or(Value::Null);
        let key = header("idempotency-key").map(str::to_owned);
        let mut call = Call {
            query: query.clone(),
            variables: variables.clone(),
            fields: Vec::new(),
            idempotency_key: key.clone(),
            replayed: false,
            status: 200,
            response: String::new(),
            at_ms: now,
        };
        let version = header("api-version").unwrap_or(CURRENT_VERSION).to_owned();
        let answer =
            |fake: &Self, mut call: Call, status: u16, body: Value, extra: &[(&str, String)]| {
                call.status = status;
                call.response = body.to_string();
                fake.log(call);
                let mut resp = (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                    axum::Json(body),
                )
                    .into_response();
                let h = resp.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&version) {
                    h.insert("api-version", v);
                }
                for (k, v) in extra {
                    if let (Ok(name), Ok(value)) = (
                        axum::http::HeaderName::try_from(*k),
                        HeaderValue::from_str(v),
                    ) {
                        h.insert(name, value);
                    }
                }
                resp
            };
        let auth = header("authorization").unwrap_or("");
        let auth = auth.strip_prefix("Bearer ").unwrap_or(auth);
        if auth != self.opts.token {
            let body = json!({"errors": [{"message": "Not Authenticated", "extensions": {"code": "NOT_AUTHENTICATED", "status_code": 401}}],
                              "extensions": {"request_id": request_id()}});
            return answer(self, call, 401, body, &[]);
        }
        // The minute and daily limits refuse before anything else is read.
        if let Some(limit) = self.opts.minute_limit {
            let mut l = lock(&self.limits);
            l.minute.retain(|t| now - t < 60_000);
            if l.minute.len() >= limit as usize {
                let retry_in = (60_000 - (now - l.minute[0])).max(1000) as u64 / 1000;
                drop(l);
                self.count_day(1);
                let (status, body) = self.limit_error(
                    "MINUTE_RATE_LIMIT_EXCEEDED",
                    "Minute rate limit exceeded",
                    retry_in,
                );
                return answer(
                    self,
                    call,
                    status,
                    body,
                    &[("retry-after", retry_in.to_string())],
                );
            }
            l.minute.push(now);
        }
        if let Some(limit) = self.opts.daily_limit {
            let day = now.div_euclid(86_400_000);
            let used = {
                let l = lock(&self.limits);
                if l.daily.0 == day { l.daily.1 } else { 0 }
            };
            if used >= u64::from(limit) * 10 {
                self.count_day(1);
                let retry_in = ((day + 1) * 86_400_000 - now) as u64 / 1000;
                let (status, body) =
                    self.limit_error("DAILY_LIMIT_EXCEEDED", "Daily limit exceeded", retry_in);
                return answer(
                    self,
                    call,
                    status,
                    body,
                    &[("retry-after", retry_in.to_string())],
                );
            }
        }
        self.count_day(10);
        if !parsed.is_object() {
            let body = json!({"errors": [{"message": "Unexpected token in JSON", "extensions": {"code": "JsonParseException", "status_code": 400}}],
                              "extensions": {"request_id": request_id()}});
            return answer(self, call, 400, body, &[]);
        }
        if !VERSIONS.contains(&version.as_str()) {
            let body = json!({"errors": [{"message": format!("The API version {version} is not valid"),
                "extensions": {"code": "InvalidVersionException", "status_code": 200}}], "extensions": {"request_id": request_id()}});
            return answer(self, call, 200, body, &[]);
        }
        let vars = variables.as_object().cloned().unwrap_or_default();
        let op = match graphql::parse(&query, &vars) {
            Ok(op) => op,
            Err(message) => {
                let body = json!({"errors": [{"message": message, "locations": [{"line": 1, "column": 1}],
                    "extensions": {"code": "GRAPHQL_PARSE_FAILED"}}], "extensions": {"request_id": request_id()}});
                return answer(self, call, 200, body, &[]);
            }
        };
        call.fields = op.fields.iter().map(|f| f.name.clone()).collect();
        if let Some(fault) = {
            let mut f = lock(&self.faults);
            (!f.is_empty()).then(|| f.remove(0))
        } {
            let (status, body) = match fault {
                Fault::Complexity { retry_in } => self.limit_error(
                    "COMPLEXITY_BUDGET_EXHAUSTED",
                    "Complexity budget exhausted",
                    retry_in,
                ),
                Fault::Answer { status, body } => (status, body),
            };
            let retry = body
                .pointer("/errors/0/extensions/retry_in_seconds")
                .and_then(Value::as_u64);
            let extra: Vec<(&str, String)> = retry
                .map(|r| ("retry-after", r.to_string()))
                .into_iter()
                .collect();
            return answer(self, call, status, body, &extra);
        }
        // Complexity: what the operation costs against the minute's budget.
        let cost: u64 = op
            .fields
            .iter()
            .map(|f| {
                self.opts
                    .costs
                    .get(&f.name)
                    .copied()
                    .unwrap_or(self.opts.default_cost)
            })
            .sum();
        let budget = self.opts.complexity_per_minute;
        let (before, after, reset_in) = {
            let mut l = lock(&self.limits);
            l.complexity.retain(|(t, _)| now - t < 60_000);
            let used: u64 = l.complexity.iter().map(|(_, c)| c).sum();
            let reset_in = l
                .complexity
                .first()
                .map_or(60, |(t, _)| ((60_000 - (now - t)) / 1000).max(1));
            match budget {
                Some(b) if cost > QUERY_COMPLEXITY_LIMIT => {
                    drop(l);
                    let body = json!({"errors": [{"message": format!("Query has complexity of {cost}, which exceeds max complexity of {QUERY_COMPLEXITY_LIMIT}"),
                        "extensions": {"code": "maxComplexityExceeded", "status_code": 200, "complexity": cost, "maxComplexity": QUERY_COMPLEXITY_LIMIT}}],
                        "extensions": {"request_id": request_id()}});
                    let _ = b;
                    return answer(self, call, 200, body, &[]);
                }
                Some(b) if used + cost > b => {
                    // Enough of the window must expire for this cost to fit.
                    let mut freed = 0;
                    let mut wait = 60;
                    for (t, c) in &l.complexity {
                        freed += c;
                        if used - freed + cost <= b {
                            wait = ((60_000 - (now - t)) / 1000 + 1) as u64;
                            break;
                        }
                    }
                    drop(l);
                    let (status, mut body) = self.limit_error(
                        "COMPLEXITY_BUDGET_EXHAUSTED",
                        "Complexity budget exhausted",
                        wait,
                    );
                    if let Some(ext) = body.pointer_mut("/errors/0/extensions") {
                        ext["complexity"] = json!(cost);
                        ext["complexity_budget_left"] = json!(b.saturating_sub(used));
                        ext["complexity_budget_limit"] = json!(b);
                    }
                    return answer(
                        self,
                        call,
                        status,
                        body,
                        &[("retry-after", wait.to_string())],
                    );
                }
                Some(b) => {
                    l.complexity.push((now, cost));
                    (b - used, b - used - cost, reset_in)
                }
                None => (u64::MAX, u64::MAX, 60),
            }
        };
        // Idempotency: a replay of a finished mutation, or a conflict with a running one.
        if op.mutation
            && let Some(k) = &key
        {
            let mut idem = lock(&self.idempotency);
            idem.done
                .retain(|_, (t, _, _)| now - *t < IDEMPOTENCY_TTL_MS);
            if let Some((_, status, body)) = idem.done.get(k).cloned() {
                drop(idem);
                call.replayed = true;
                let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                return answer(
                    self,
                    call,
                    status,
                    body,
                    &[("idempotency-replayed", "true".into())],
                );
            }
            if !idem.in_flight.insert(k.clone()) {
                drop(idem);
                let body = json!({"errors": [{"message": "A request with this Idempotency-Key is already being processed",
                    "extensions": {"code": "IDEMPOTENCY_CONFLICT", "status_code": 409}}], "extensions": {"request_id": request_id()}});
                return answer(self, call, 409, body, &[("retry-after", "1".into())]);
            }
        }
        if op.mutation && !self.opts.write_latency.is_zero() {
            tokio::time::sleep(self.opts.write_latency).await;
        }
        let mut data = Map::new();
        let mut errors = Vec::new();
        let mut emits = Vec::new();
        for f in &op.fields {
            if f.name == "complexity" {
                let full = json!({"before": before, "query": cost, "after": after, "reset_in_x_seconds": reset_in});
                data.insert(f.key.clone(), project(&full, &f.selection, &|_, _| None));
                continue;
            }
            match self.resolve(f, op.mutation, now).await {
                Ok((v, e)) => {
                    data.insert(f.key.clone(), v);
                    emits.extend(e);
                }
                Err(e) => {
                    data.insert(f.key.clone(), Value::Null);
                    let mut ext = json!({"code": e.code, "status_code": 200});
                    if let Some(d) = e.data {
                        ext["error_data"] = d;
                    }
                    errors.push(
                        json!({"message": e.message, "locations": [{"line": 1, "column": 1}],
                                       "path": [f.key], "extensions": ext}),
                    );
                }
            }
        }
        let mut body = json!({"data": data, "extensions": {"request_id": request_id()}});
        if !errors.is_empty() {
            body["errors"] = Value::Array(errors);
        }
        if op.mutation
            && let Some(k) = &key
        {
            let mut idem = lock(&self.idempotency);
            idem.in_flight.remove(k);
            idem.done.insert(k.clone(), (now, 200, body.to_string()));
        }
        self.emit(emits, self.opts.user_id);
        let rate = {
            let l = lock(&self.limits);
            let minute_left = self
                .opts
                .minute_limit
                .map_or(0, |m| m as usize - l.minute.len().min(m as usize));
            format!("\"minuteRate\";r={minute_left}, \"complexityMinute\";r={after};t={reset_in}")
        };
        answer(self, call, 200, body, &[("ratelimit", rate)])
    }

    /// One root field: its projected value, and the webhook events it caused.
    async fn resolve(
        &self,
        f: &RootField,
        mutation: bool,
        now: i64,
    ) -> Result<(Value, Vec<Emit>), FieldError> {
        let a = &f.args;
        let user = self.opts.user_id;
        if f.name == "create_webhook" {
            let board = id_arg(a, "board_id")
                .ok_or_else(|| ferr("InvalidArgumentException", "board_id is required"))?;
            let url = a
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let event = a
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let config = json_arg(a, "config")
                .map_err(|m| ferr("InvalidArgumentException", m))?
                .unwrap_or(Value::Null);
            if !lock(&self.store).boards.contains_key(&board) {
                return Err(ferr(
                    "InvalidBoardIdException",
                    format!("Board {board} does not exist"),
                ));
            }
            if url.len() > 255 || !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ferr(
                    "InvalidArgumentException",
                    "url must be an http(s) URL of at most 255 characters",
                ));
            }
            const EVENTS: [&str; 6] = [
                "create_item",
                "change_column_value",
                "change_specific_column_value",
                "change_status_column_value",
                "create_update",
                "change_name",
            ];
            if !EVENTS.contains(&event.as_str()) {
                return Err(ferr(
                    "InvalidArgumentException",
                    format!("event {event} is not served by this fake"),
                ));
            }
            if event == "change_specific_column_value" && config.get("columnId").is_none() {
                return Err(ferr(
                    "InvalidWebhookConfigException",
                    "change_specific_column_value needs config.columnId",
                ));
            }
            if event == "change_status_column_value"
                && (config.get("columnId").is_none() || config.get("columnValue").is_none())
            {
                return Err(ferr(
                    "InvalidWebhookConfigException",
                    "change_status_column_value needs config.columnId and config.columnValue",
                ));
            }
            self.challenge(&url)
                .await
                .map_err(|m| ferr("INTERNAL_SERVER_ERROR", m))?;
            let mut s = lock(&self.store);
            let id = s.next_webhook_id();
            let wh = Webhook {
                id,
                board,
                url,
                event,
                config,
                signed: self.opts.signing_secret.is_some(),
            };
            let full = webhook_json(&wh);
            s.webhooks.insert(id, wh);
            return Ok((project(&full, &f.selection, &|_, _| None), Vec::new()));
        }
        let mut s = lock(&self.store);
        let sel = &f.selection;
        let children = |full: &Value, sf: &SelField| children_of(&s, full, sf);
        let _ = &children;
        match (mutation, f.name.as_str()) {
            (false, "me") => Ok((
                project(
                    &json!({"id": user.to_string(), "name": "Enerflo Sync", "account": {"id": self.opts.account_id.to_string()}}),
                    sel,
                    &|_, _| None,
                ),
                vec![],
            )),
            (false, "boards") => {
                let ids = ids_arg(a, "ids");
                let boards: Vec<Value> = s
                    .boards
                    .values()
                    .filter(|b| ids.is_empty() || ids.contains(&b.id))
                    .map(board_json)
                    .collect();
                Ok((project_items(&s, &Value::Array(boards), sel), vec![]))
            }
            (false, "items") => {
                let ids = ids_arg(a, "ids");
                if ids.len() > 100 {
                    return Err(ferr(
                        "InvalidArgumentException",
                        "items takes at most 100 ids",
                    ));
                }
                let items: Vec<Value> = ids
                    .iter()
                    .filter_map(|i| s.live_item(*i))
                    .map(|i| item_json(&s, i))
                    .collect();
                Ok((project_items(&s, &Value::Array(items), sel), vec![]))
            }
            (false, "items_page_by_column_values") => {
                let board = id_arg(a, "board_id")
                    .ok_or_else(|| ferr("InvalidArgumentException", "board_id is required"))?;
                if !s.boards.contains_key(&board) {
                    return Err(ferr(
                        "InvalidBoardIdException",
                        format!("Board {board} does not exist"),
                    ));
                }
                let limit = a.get("limit").and_then(Value::as_u64).unwrap_or(25);
                if limit == 0 || limit > 500 {
                    return Err(ferr(
                        "InvalidArgumentException",
                        "limit must be from 1 to 500",
                    ));
                }
                let mut rules = Vec::new();
                for c in a
                    .get("columns")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let col = c
                        .get("column_id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    if col != "name" && s.boards.get(&board).and_then(|b| b.column(&col)).is_none()
                    {
                        return Err(FieldError {
                            code: "InvalidColumnIdException",
                            message: "This column ID doesn't exist for the board".into(),
                            data: Some(json!({"column_id": col})),
                        });
                    }
                    let vals = c
                        .get("column_values")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect();
                    rules.push((col, vals));
                }
                let offset = a
                    .get("cursor")
                    .and_then(Value::as_str)
                    .and_then(|c| c.strip_prefix("fake-cursor-"))
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0);
                let found = s.search(board, &rules, now);
                let page: Vec<Value> = found
                    .iter()
                    .skip(offset)
                    .take(limit as usize)
                    .filter_map(|i| s.live_item(*i))
                    .map(|i| item_json(&s, i))
                    .collect();
                let cursor = (found.len() > offset + limit as usize)
                    .then(|| format!("fake-cursor-{}", offset + limit as usize));
                Ok((
                    project_items(&s, &json!({"cursor": cursor, "items": page}), sel),
                    vec![],
                ))
            }
            (false, "webhooks") => {
                let board = id_arg(a, "board_id")
                    .ok_or_else(|| ferr("InvalidArgumentException", "board_id is required"))?;
                let list: Vec<Value> = s
                    .webhooks
                    .values()
                    .filter(|w| w.board == board)
                    .map(webhook_json)
                    .collect();
                Ok((project(&Value::Array(list), sel, &|_, _| None), vec![]))
            }
            (true, "create_item") => {
                let board = id_arg(a, "board_id")
                    .ok_or_else(|| ferr("InvalidArgumentException", "board_id is required"))?;
                let name = a
                    .get("item_name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let values = json_arg(a, "column_values")
                    .map_err(|m| ferr("InvalidArgumentException", m))?
                    .unwrap_or(json!({}));
                let Some(values) = values.as_object().cloned() else {
                    return Err(ferr(
                        "InvalidArgumentException",
                        "column_values must be a JSON object",
                    ));
                };
                let create = a
                    .get("create_labels_if_missing")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let (id, emits) = create_item(
                    &mut s,
                    board,
                    &name,
                    &values,
                    create,
                    now,
                    self.opts.search_lag,
                    user,
                )?;
                let full = s
                    .live_item(id)
                    .map(|i| item_json(&s, i))
                    .unwrap_or(Value::Null);
                Ok((project_items(&s, &full, sel), emits))
            }
            (
                true,
                "change_multiple_column_values"
                | "change_column_value"
                | "change_simple_column_value",
            ) => {
                let item = id_arg(a, "item_id")
                    .ok_or_else(|| ferr("InvalidArgumentException", "item_id is required"))?;
                let board = id_arg(a, "board_id")
                    .ok_or_else(|| ferr("InvalidArgumentException", "board_id is required"))?;
                match s.live_item(item) {
                    Some(i) if i.board == board => {}
                    Some(_) => {
                        return Err(ferr(
                            "InvalidArgumentException",
                            format!("item {item} is not on board {board}"),
                        ));
                    }
                    None => {
                        return Err(ferr(
                            "InvalidItemIdException",
                            format!("Item {item} does not exist"),
                        ));
                    }
                }
                let values: Map<String, Value> = match f.name.as_str() {
                    "change_multiple_column_values" => {
                        let v = json_arg(a, "column_values")
                            .map_err(|m| ferr("InvalidArgumentException", m))?;
                        match v {
                            Some(Value::Object(o)) => o,
                            _ => {
                                return Err(ferr(
                                    "InvalidArgumentException",
                                    "column_values must be a JSON object",
                                ));
                            }
                        }
                    }
                    "change_column_value" => {
                        let col = a
                            .get("column_id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned();
                        let v = json_arg(a, "value")
                            .map_err(|m| ferr("InvalidArgumentException", m))?
                            .unwrap_or(Value::Null);
                        [(col, v)].into_iter().collect()
                    }
                    _ => {
                        let col = a
                            .get("column_id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned();
                        let v = a.get("value").cloned().unwrap_or(Value::Null);
                        [(col, v)].into_iter().collect()
                    }
                };
                let create = a
                    .get("create_labels_if_missing")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let emits = write_values(&mut s, board, item, &values, create, now, user)?;
                let full = s
                    .live_item(item)
                    .map(|i| item_json(&s, i))
                    .unwrap_or(Value::Null);
                Ok((project_items(&s, &full, sel), emits))
            }
            (true, "delete_item" | "archive_item") => {
                let item = id_arg(a, "item_id")
                    .ok_or_else(|| ferr("InvalidArgumentException", "item_id is required"))?;
                let full = s.live_item(item).map(|i| item_json(&s, i)).ok_or_else(|| {
                    ferr(
                        "InvalidItemIdException",
                        format!("Item {item} does not exist"),
                    )
                })?;
                if let Some(i) = s.items.get_mut(&item) {
                    i.deleted = true;
                }
                Ok((project(&full, sel, &|_, _| None), vec![]))
            }
            (true, "create_update") => {
                let item = id_arg(a, "item_id")
                    .ok_or_else(|| ferr("InvalidArgumentException", "item_id is required"))?;
                let body = a
                    .get("body")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let parent = id_arg(a, "parent_id");
                let (id, emit) = post_update(&mut s, item, &body, parent, now, user)?;
                let full = s.updates.get(&id).map(update_json).unwrap_or(Value::Null);
                Ok((project(&full, sel, &|_, _| None), vec![emit]))
            }
            (true, "create_column") => {
                let board = id_arg(a, "board_id")
                    .ok_or_else(|| ferr("InvalidArgumentException", "board_id is required"))?;
                let title = a
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let kind = a
                    .get("column_type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                if kind.is_empty() {
                    return Err(ferr("InvalidArgumentException", "column_type is required"));
                }
                let defaults =
                    json_arg(a, "defaults").map_err(|m| ferr("InvalidArgumentException", m))?;
                let b = s.boards.get_mut(&board).ok_or_else(|| {
                    ferr(
                        "InvalidBoardIdException",
                        format!("Board {board} does not exist"),
                    )
                })?;
                let id = a
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("{kind}_mk{}", b.columns.len()), str::to_owned);
                if b.column(&id).is_some() {
                    return Err(ferr(
                        "ColumnIdTakenException",
                        format!("Column id {id} is taken on board {board}"),
                    ));
                }
                let mut c = Column::new(&id, &title, &kind);
                if let Some(labels) = defaults
                    .as_ref()
                    .and_then(|d| d.get("labels"))
                    .and_then(Value::as_object)
                {
                    c.labels = labels
                        .iter()
                        .filter_map(|(i, l)| Some((i.parse().ok()?, l.as_str()?.to_owned())))
                        .collect();
                }
                if let Some(ids) = defaults
                    .as_ref()
                    .and_then(|d| d.get("boardIds"))
                    .and_then(Value::as_array)
                {
                    c.linked_boards = ids
                        .iter()
                        .filter_map(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                        .collect();
                }
                let full = column_json(&c);
                b.columns.push(c);
                Ok((project(&full, sel, &|_, _| None), vec![]))
            }
            (true, "delete_webhook") => {
                let id = id_arg(a, "id")
                    .ok_or_else(|| ferr("InvalidArgumentException", "id is required"))?;
                let wh = s.webhooks.remove(&id).ok_or_else(|| {
                    ferr(
                        "ResourceNotFoundException",
                        format!("Webhook {id} does not exist"),
                    )
                })?;
                Ok((project(&webhook_json(&wh), sel, &|_, _| None), vec![]))
            }
            (m, name) => Err(ferr(
                "GRAPHQL_VALIDATION_FAILED",
                format!(
                    "Field '{name}' doesn't exist on type '{}'",
                    if m { "Mutation" } else { "Query" }
                ),
            )),
        }
    }

    /// Sends each event to every webhook it matches.
    fn emit(self: &Arc<Self>, emits: Vec<Emit>, user: u64) {
        if emits.is_empty() {
            return;
        }
        let hooks = self.webhooks();
        for e in emits {
            for wh in hooks.iter().filter(|w| w.board == e.board) {
                let matches = match (wh.event.as_str(), e.kind) {
                    ("create_item", "create_item")
                    | ("create_update", "create_update")
                    | ("change_name", "change_name") => true,
                    ("change_column_value", "change_column_value") => true,
                    ("change_specific_column_value", "change_column_value") => {
                        wh.config.get("columnId").and_then(Value::as_str) == e.column.as_deref()
                    }
                    ("change_status_column_value", "change_column_value") => {
                        wh.config.get("columnId").and_then(Value::as_str) == e.column.as_deref()
                            && match wh.config.pointer("/columnValue/index") {
                                Some(i) => e.payload.pointer("/value/label/index") == Some(i),
                                None => wh.config.pointer("/columnValue/$any$").is_some(),
                            }
                    }
                    _ => false,
                };
                if !matches {
                    continue;
                }
                let mut event = e.payload.clone();
                event["app"] = json!("monday");
                event["subscriptionId"] = json!(wh.id);
                event["userId"] = json!(user);
                event["boardId"] = json!(e.board);
                event["pulseId"] = json!(e.item);
                event["originalTriggerUuid"] = Value::Null;
                event["triggerTime"] = json!(iso(self.now_ms()));
                event["triggerUuid"] = json!(uuid_hex());
                self.deliver(wh.id, wh.url.clone(), wh.signed, event);
            }
        }
    }
}

// ---- resolvers' helpers (the store locked) ----------------------------------------------------

#[allow(clippy::too_many_arguments)]
fn create_item(
    s: &mut Store,
    board: u64,
    name: &str,
    values: &Map<String, Value>,
    create_labels: bool,
    now: i64,
    lag: Duration,
    user: u64,
) -> Result<(u64, Vec<Emit>), FieldError> {
    if !s.boards.contains_key(&board) {
        return Err(ferr(
            "InvalidBoardIdException",
            format!("Board {board} does not exist"),
        ));
    }
    let name = values
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(name)
        .to_owned();
    check_name(&name)?;
    let id = s.next_item_id();
    s.items.insert(
        id,
        Item {
            id,
            board,
            name: name.clone(),
            group: "topics".into(),
            values: BTreeMap::new(),
            changed_ms: BTreeMap::new(),
            created_ms: now,
            updated_ms: now,
            indexed_ms: now + lag.as_millis() as i64,
            indexed: BTreeMap::new(),
            creator_id: user,
            deleted: false,
        },
    );
    let mut rest = values.clone();
    rest.remove("name");
    if let Err(e) = write_values(s, board, id, &rest, create_labels, now, user) {
        s.items.remove(&id);
        return Err(e);
    }
    let emit = Emit {
        board,
        item: id,
        kind: "create_item",
        column: None,
        payload: json!({"type": "create_pulse", "pulseName": name, "groupId": "topics", "groupName": "Group Title",
                        "groupColor": "#579bfc", "isTopGroup": true, "columnValues": {}}),
    };
    Ok((id, vec![emit]))
}

fn check_name(name: &str) -> Result<(), FieldError> {
    let n = name.chars().count();
    if n == 0 || n > 255 {
        return Err(ferr(
            "ItemNameTooLongException",
            "Item name must be between 1 and 255 characters long",
        ));
    }
    Ok(())
}

/// Validates every value first (nothing is written when one fails), then writes them.
fn write_values(
    s: &mut Store,
    board: u64,
    item: u64,
    values: &Map<String, Value>,
    create_labels: bool,
    now: i64,
    _user: u64,
) -> Result<Vec<Emit>, FieldError> {
    let exists: std::collections::BTreeSet<u64> = s
        .items
        .values()
        .filter(|i| !i.deleted)
        .map(|i| i.id)
        .collect();
    let b = s.boards.get_mut(&board).ok_or_else(|| {
        ferr(
            "InvalidBoardIdException",
            format!("Board {board} does not exist"),
        )
    })?;
    let mut staged = Vec::new();
    let mut rename = None;
    for (col, v) in values {
        if col == "name" {
            let n = v.as_str().unwrap_or("").to_owned();
            check_name(&n)?;
            rename = Some(n);
            continue;
        }
        let Some(column) = b.columns.iter_mut().find(|c| &c.id == col) else {
            return Err(FieldError {
                code: "InvalidColumnIdException",
                message: "This column ID doesn't exist for the board".into(),
                data: Some(json!({"column_id": col})),
            });
        };
        let stored = columns::write(column, v, create_labels, &|i| exists.contains(&i)).map_err(|e| FieldError {
            code: e.code,
            message: e.message,
            data: Some(json!({"column_id": col, "column_type": columns::legacy_type(&column.kind), "column_value": v.to_string()})),
        })?;
        staged.push((column.clone(), stored));
    }
    let item_ref = s.items.get_mut(&item).ok_or_else(|| {
        ferr(
            "InvalidItemIdException",
            format!("Item {item} does not exist"),
        )
    })?;
    let mut emits = Vec::new();
    for (column, stored) in staged {
        let previous = item_ref.values.get(&column.id).cloned();
        if previous == stored {
            continue;
        }
        match &stored {
            Some(v) => {
                item_ref.values.insert(column.id.clone(), v.clone());
                item_ref.indexed.insert(column.id.clone(), v.text.clone());
            }
            None => {
                item_ref.values.remove(&column.id);
                item_ref.indexed.remove(&column.id);
            }
        }
        item_ref.changed_ms.insert(column.id.clone(), now);
        emits.push(Emit {
            board,
            item,
            kind: "change_column_value",
            column: Some(column.id.clone()),
            payload: json!({"type": "update_column_value", "groupId": item_ref.group, "pulseName": item_ref.name,
                "columnId": column.id, "columnType": columns::legacy_type(&column.kind), "columnTitle": column.title,
                "value": columns::webhook_value(&column, stored.as_ref()),
                "previousValue": columns::webhook_value(&column, previous.as_ref()),
                "changedAt": now as f64 / 1000.0, "isTopGroup": true}),
        });
    }
    if let Some(n) = rename
        && n != item_ref.name
    {
        let old = std::mem::replace(&mut item_ref.name, n.clone());
        emits.push(Emit { board, item, kind: "change_name", column: None,
            payload: json!({"type": "update_name", "value": {"name": n}, "previousValue": {"name": old}}) });
    }
    item_ref.updated_ms = now;
    Ok(emits)
}

fn post_update(
    s: &mut Store,
    item: u64,
    body: &str,
    parent: Option<u64>,
    now: i64,
    user: u64,
) -> Result<(u64, Emit), FieldError> {
    let board = s
        .live_item(item)
        .ok_or_else(|| {
            ferr(
                "InvalidItemIdException",
                format!("Item {item} does not exist"),
            )
        })?
        .board;
    if body.trim().is_empty() {
        return Err(ferr("InvalidArgumentException", "body must not be empty"));
    }
    let id = s.next_update_id();
    let text = html_text(body);
    s.updates.insert(
        id,
        Update {
            id,
            item,
            body: body.into(),
            text_body: text.clone(),
            created_ms: now,
            creator_id: user,
            parent_id: parent,
        },
    );
    let emit = Emit {
        board,
        item,
        kind: "create_update",
        column: None,
        payload: json!({"type": "create_update", "body": body, "textBody": text, "updateId": id, "replyId": parent}),
    };
    Ok((id, emit))
}

/// An update's plain text: tags dropped, `<br>` and `</p>` as line breaks, entities decoded.
fn html_text(html: &str) -> String {
    let mut out = String::new();
    let mut tag: Option<String> = None;
    for c in html.chars() {
        match (&mut tag, c) {
            (None, '<') => tag = Some(String::new()),
            (Some(t), '>') => {
                let t = t.trim().to_ascii_lowercase();
                if (t.starts_with("br") || t == "/p") && !out.ends_with('\n') {
                    out.push('\n');
                }
                tag = None;
            }
            (Some(t), c) => t.push(c),
            (None, c) => out.push(c),
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&middot;", "\u{b7}")
        .replace("&amp;", "&")
        .trim()
        .to_owned()
}

fn request_id() -> String {
    let h = uuid_hex();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn uuid_hex() -> String {
    (0..32)
        .map(|_| char::from_digit(fastrand::u32(..16), 16).unwrap_or('0'))
        .collect()
}

fn column_json(c: &Column) -> Value {
    let settings = c.settings();
    json!({"id": c.id, "title": c.title, "type": c.kind, "settings": settings, "settings_str": settings.to_string()})
}

fn board_json(b: &Board) -> Value {
    json!({"id": b.id.to_string(), "name": b.name, "state": "active", "board_kind": "public",
           "columns": b.columns.iter().map(column_json).collect::<Vec<_>>()})
}

fn typename(kind: &str) -> &'static str {
    match kind {
        "status" => "StatusValue",
        "date" => "DateValue",
        "text" => "TextValue",
        "numbers" => "NumbersValue",
        "email" => "EmailValue",
        "phone" => "PhoneValue",
        "long_text" => "LongTextValue",
        "dropdown" => "DropdownValue",
        "link" => "LinkValue",
        "location" => "LocationValue",
        "checkbox" => "CheckboxValue",
        "board_relation" => "BoardRelationValue",
        _ => "ColumnValue",
    }
}

fn item_json(s: &Store, i: &Item) -> Value {
    let board = s.boards.get(&i.board);
    let cols: Vec<Value> = board
        .map(|b| {
            b.columns
                .iter()
                .filter(|c| c.kind != "name")
                .map(|c| {
                    let stored = i.values.get(&c.id);
                    let value = stored.map(|v| {
                        let mut v = v.value.clone();
                        if let Some(o) = v.as_object_mut() {
                            o.insert(
                                "changed_at".into(),
                                json!(iso(*i.changed_ms.get(&c.id).unwrap_or(&i.updated_ms))),
                            );
                        }
                        v.to_string()
                    });
                    let mut cv = json!({"__typename": typename(&c.kind), "id": c.id, "type": c.kind,
                        "text": stored.map(|v| v.text.clone()),
                        "value": value,
                        "column": {"id": c.id, "title": c.title, "type": c.kind}});
                    if c.kind == "status" {
                        cv["label"] = json!(stored.map(|v| v.text.clone()));
                        cv["index"] = stored.map_or(json!(5), |v| v.value["index"].clone());
                    }
                    if c.kind == "date" {
                        cv["date"] = stored.map_or(Value::Null, |v| v.value["date"].clone());
                        cv["time"] = stored.map_or(Value::Null, |v| v.value["time"].clone());
                    }
                    cv
                })
                .collect()
        })
        .unwrap_or_default();
    json!({"id": i.id.to_string(), "name": i.name, "state": "active", "board": {"id": i.board.to_string()},
           "group": {"id": i.group}, "created_at": iso(i.created_ms), "updated_at": iso(i.updated_ms),
           "creator_id": i.creator_id.to_string(), "column_values": cols})
}

fn update_json(u: &Update) -> Value {
    json!({"id": u.id.to_string(), "item_id": u.item.to_string(), "body": u.body, "text_body": u.text_body,
           "created_at": iso(u.created_ms), "creator_id": u.creator_id.to_string(),
           "parent_id": u.parent_id.map(|p| p.to_string())})
}

fn webhook_json(w: &Webhook) -> Value {
    json!({"id": w.id.to_string(), "board_id": w.board.to_string(), "event": w.event, "config": w.config.to_string()})
}

/// Fields that take arguments: `column_values(ids:)`, `updates(limit:)`, `columns(ids:)`,
/// `items_page(limit:)`.
fn children_of(s: &Store, full: &Value, f: &SelField) -> Option<Value> {
    match f.name.as_str() {
        "column_values" => {
            let ids: Vec<String> = match f.args.get("ids") {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                Some(Value::String(one)) => vec![one.clone()],
                _ => Vec::new(),
            };
            let all = full.get("column_values")?.as_array()?.clone();
            Some(Value::Array(
                all.into_iter()
                    .filter(|c| ids.is_empty() || ids.iter().any(|i| c["id"] == *i.as_str()))
                    .collect(),
            ))
        }
        "updates" if full.get("column_values").is_some() => {
            let item: u64 = full.get("id")?.as_str()?.parse().ok()?;
            let limit = f.args.get("limit").and_then(Value::as_u64).unwrap_or(25) as usize;
            let mut ups: Vec<&Update> = s.updates.values().filter(|u| u.item == item).collect();
            ups.reverse();
            Some(Value::Array(
                ups.into_iter().take(limit).map(update_json).collect(),
            ))
        }
        "items_page" => {
            let board: u64 = full.get("id")?.as_str()?.parse().ok()?;
            let limit = f.args.get("limit").and_then(Value::as_u64).unwrap_or(25) as usize;
            let items: Vec<Value> = s
                .items
                .values()
                .filter(|i| i.board == board && !i.deleted)
                .take(limit)
                .map(|i| item_json(s, i))
                .collect();
            Some(json!({"cursor": null, "items": items}))
        }
        _ => None,
    }
}

fn project_items(s: &Store, full: &Value, sel: &Sel) -> Value {
    project(full, sel, &|v, f| children_of(s, v, f))
}

// ---- HTTP -------------------------------------------------------------------------------------

async fn api(State(fake): State<Arc<MondayFake>>, headers: HeaderMap, body: Bytes) -> Response {
    fake.handle(&headers, &body).await
}

async fn state_json(State(fake): State<Arc<MondayFake>>) -> Response {
    let s = lock(&fake.store);
    let boards: Vec<Value> = s
        .boards
        .values()
        .map(|b| {
            let mut j = board_json(b);
            j["items"] = Value::Array(
                s.items
                    .values()
                    .filter(|i| i.board == b.id && !i.deleted)
                    .map(|i| {
                        let mut it = item_json(&s, i);
                        it["updates"] = Value::Array(
                            s.updates
                                .values()
                                .filter(|u| u.item == i.id)
                                .map(update_json)
                                .collect(),
                        );
                        it
                    })
                    .collect(),
            );
            j
        })
        .collect();
    let hooks: Vec<Value> = s.webhooks.values().map(webhook_json).collect();
    axum::Json(json!({"boards": boards, "webhooks": hooks})).into_response()
}

/// The board webhooks a profile needs (`enerflo_sync::crm::monday::webhook_subscriptions`),
/// pointed at `url`, as `monday setup` leaves them.
pub fn seed_webhooks(
    fake: &MondayFake,
    profile: &enerflo_sync::crm::profile::Profile,
    boards: &BTreeMap<String, u64>,
    url: &str,
) {
    for (object, event, config) in enerflo_sync::crm::monday::webhook_subscriptions(profile) {
        if let Some(board) = boards.get(&object) {
            fake.add_webhook(*board, url, event, config);
        }
    }
}

/// Serves a fake on a free loopback port: its base URL (`POST {url}/v2`) and the fake.
pub async fn spawn(opts: FakeOptions) -> (String, Arc<MondayFake>) {
    let fake = MondayFake::new(opts);
    #[allow(clippy::expect_used)]
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0 for the Monday.com fake");
    #[allow(clippy::expect_used)]
    let addr = listener
        .local_addr()
        .expect("local address of the Monday.com fake");
    let app = fake.router();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "Monday.com fake stopped");
        }
    });
    (format!("http://{addr}"), fake)
}

/// The boards and columns a profile names, as `enerflo-sync-ops monday setup` would leave them:
/// a customers and a projects board (ids returned: customers, projects), every column of the
/// profile with its type, the status column with the status map's labels, the link column.
pub fn seed_profile(
    fake: &MondayFake,
    profile: &enerflo_sync::crm::profile::Profile,
) -> (u64, u64) {
    use enerflo_sync::canonical::CrmEventType;
    let per_object = enerflo_sync::crm::monday::wanted_columns(profile);
    let projects_object = profile.event(CrmEventType::StatusChanged).object.clone();
    let customers_object = profile.event(CrmEventType::LeadUpserted).object.clone();
    let mut ids = BTreeMap::new();
    for object in [&customers_object, &projects_object] {
        let cols = per_object.get(object.as_str()).cloned().unwrap_or_default();
        let spec: Vec<(&str, &str, &str)> = cols
            .iter()
            .map(|(c, k)| (c.as_str(), c.as_str(), k.as_str()))
            .collect();
        let title = if object == &customers_object {
            "Customers"
        } else {
            "Projects"
        };
        ids.insert(object.clone(), fake.add_board(title, &spec));
    }
    let (customers, projects) = (ids[&customers_object], ids[&projects_object]);
    let labels = enerflo_sync::crm::monday::wanted_labels(profile);
    let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
    fake.set_labels(projects, &profile.stages.property, &refs);
    {
        let mut s = lock(&fake.store);
        for b in s.boards.values_mut() {
            for c in b.columns.iter_mut().filter(|c| c.kind == "board_relation") {
                c.linked_boards = vec![customers];
            }
        }
    }
    (customers, projects)
}
