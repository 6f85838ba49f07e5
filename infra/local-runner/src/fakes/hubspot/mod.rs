//! A faithful local HubSpot, written from the HubSpot wire contract in the team's CRM connector
//! reference (sections 2.1-2.13), not from the connector: contacts, companies, deals and notes
//! with string-only property values, a property registry with unique properties, batch upsert
//! with 207 partial results, pipelines and stage validation, v4 associations, HubSpot's rate
//! limits and headers, scripted faults, a workflow webhook emitter signing like HubSpot
//! (v1/v2/v3) and retrying on HubSpot's schedule, and a read-only page of what it holds.
//!
//! [`HubSpotFake::router`] serves HubSpot's paths at its root, both path families (`/crm/v3`,
//! `/crm/v4` and the date-versioned `/crm/objects/2026-03`, `/crm/properties/2026-03`,
//! `/crm/pipelines/2026-03`, `/crm/associations/2026-03`), so it can be nested (the local runner
//! at `/sandbox/hubspot`) or served alone ([`spawn`]). `GET /` and `GET /_fake/*.json` show its
//! records without the token and accept no writes.
//!
//! Where HubSpot's behaviour is not documented the fake chooses, and says so here:
//! * a property value that is not a JSON string (a number, a boolean) is refused with a 400
//!   `VALIDATION_ERROR` naming the property (code `INVALID_PROPERTY_VALUE_TYPE`); `null` clears
//!   the value like `""`;
//! * in a batch upsert, an input whose unique id is new but whose `email` belongs to another
//!   contact fails alone: an `errors[]` item of the 207 with category `CONFLICT`, the message
//!   "Contact already exists. Existing ID: N" and `context.existingId`;
//! * a taken custom unique value answers 400 `VALIDATION_ERROR` (code `VALUE_NOT_UNIQUE`, message
//!   "... already has that value ...");
//! * a new deal needs a `dealstage` (its `pipeline` defaults to `default`);
//! * requests refused with a 429 do not count against the rate windows;
//! * reads without `properties=` return the type's default properties only (as HubSpot does);
//!   answers to writes return every set property;
//! * `Retry-After` is sent on 429s only with [`FakeOptions::retry_after`].

mod associations;
mod batch;
mod emitter;
mod errors;
mod faults;
mod gate;
mod notes;
mod objects;
mod pipelines;
mod properties;
mod rate;
mod seed;
mod store;
mod view;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::middleware::from_fn_with_state;
use serde_json::{Map, Value};

pub use associations::{AssociationView, Category};
pub use emitter::{
    Attempt, EmitAuth, EmitOptions, EmitResult, RetrySchedule, sign_v1, sign_v2, sign_v3, v3_uri,
};
pub use errors::{ApiError, FieldError};
pub use faults::{Fault, FaultKind};
pub use notes::NOTE_BODY_LIMIT;
pub use pipelines::{Pipeline, Stage};
pub use rate::{Policy, RateState};
pub use seed::seed_profile;
pub use store::{ObjectType, PropOption, PropertyDef};

use errors::WriteError;
use faults::Faults;
use rate::RateLimiter;
use store::Store;

/// How a fake is set up.
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// The private app token every API call must carry as `Authorization: Bearer <token>`.
    pub token: String,
    /// The token's scopes; `None` grants every scope. A call needing a missing one gets a 403.
    pub scopes: Option<Vec<String>>,
    /// The rolling 10-second budget (100 Free/Starter, 190 Professional/Enterprise, 250 with the
    /// limit increase); `None` switches it off.
    pub ten_second_limit: Option<u32>,
    /// Requests per day (250,000 Free/Starter); `None` switches it off.
    pub daily_limit: Option<u64>,
    /// The account's time zone as minutes east of UTC: the daily count resets at its midnight.
    pub daily_reset_utc_offset_minutes: i32,
    /// The search endpoints' own per-second limit (5 as third parties report); `None`: off.
    pub search_per_second: Option<u32>,
    /// How long a write stays invisible to `/search` (HubSpot's index is eventually consistent).
    pub search_lag: Duration,
    /// Whether 429s carry `Retry-After` (seconds); the docs read do not say HubSpot sends it.
    pub retry_after: bool,
    /// Deal pipelines: HubSpot's `default` plus any custom ones.
    pub pipelines: Vec<Pipeline>,
    /// Properties to have from the start besides HubSpot's standard ones (none by default: the
    /// connector's setup creates its own through the properties API).
    pub properties: Vec<(ObjectType, PropertyDef)>,
    /// How the workflow webhook emitter delivers and retries.
    pub emit: EmitOptions,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            token: "pat-na1-00000000-0000-0000-0000-000000000000".into(),
            scopes: None,
            ten_second_limit: Some(100),
            daily_limit: Some(250_000),
            daily_reset_utc_offset_minutes: 0,
            search_per_second: Some(5),
            search_lag: Duration::from_secs(1),
            retry_after: false,
            pipelines: vec![Pipeline::default_sales()],
            properties: Vec::new(),
            emit: EmitOptions::default(),
        }
    }
}

/// One API request the fake received and what it answered.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// As the fake's router saw it (without a prefix it is nested under).
    pub path: String,
    pub query: Option<String>,
    /// The raw request body.
    pub body: String,
    pub status: u16,
    /// The raw response body.
    pub response: String,
    /// Arrival time on the fake's clock, ISO and epoch ms.
    pub at: String,
    pub at_ms: i64,
    /// Arrival time since the fake started, on its clock (what its rate windows use).
    pub since_start: Duration,
    /// Whether the rate limiter admitted (counted) it: false for 401/403 and limiter 429s.
    pub counted: bool,
    /// The scripted fault it got, if any.
    pub fault: Option<String>,
}

impl Call {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    pub fn response_json(&self) -> Option<Value> {
        serde_json::from_str(&self.response).ok()
    }
}

/// A record as the inspection API shows it: string values, unset properties absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView {
    pub id: String,
    pub object_type: ObjectType,
    pub properties: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

impl RecordView {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }

    fn of(r: &store::Record) -> Self {
        Self {
            id: r.id.to_string(),
            object_type: r.object_type,
            properties: r.properties.clone(),
            created_at: store::iso_ms(r.created_ms),
            updated_at: store::iso_ms(r.updated_ms),
        }
    }
}

/// The fake's clock: real time (or the moment it was frozen) plus whatever
/// [`HubSpotFake::advance`] added.
struct Clock {
    start: Instant,
    skew: Mutex<Duration>,
    /// Set by [`HubSpotFake::freeze_clock`]: the instant and epoch ms time stands still at.
    frozen: Mutex<Option<(Instant, i64)>>,
}

impl Clock {
    fn skew(&self) -> Duration {
        *lock(&self.skew)
    }

    fn frozen(&self) -> Option<(Instant, i64)> {
        *lock(&self.frozen)
    }

    fn now(&self) -> Instant {
        self.frozen().map_or_else(Instant::now, |(i, _)| i) + self.skew()
    }

    fn now_ms(&self) -> i64 {
        let base = self.frozen().map_or_else(real_ms, |(_, ms)| ms);
        base + self.skew().as_millis() as i64
    }

    fn since_start(&self) -> Duration {
        self.now().saturating_duration_since(self.start)
    }
}

fn real_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The first record id (ids are one increasing sequence of digit strings over all types).
const FIRST_ID: u64 = 101;

pub struct HubSpotFake {
    opts: FakeOptions,
    store: Mutex<Store>,
    rate: Mutex<RateLimiter>,
    faults: Mutex<Faults>,
    calls: Mutex<Vec<Call>>,
    clock: Clock,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HubSpotFake {
    pub fn new(opts: FakeOptions) -> Arc<Self> {
        let store = Self::fresh_store(&opts, FIRST_ID);
        Arc::new(Self {
            store: Mutex::new(store),
            rate: Mutex::new(Self::fresh_limiter(&opts)),
            faults: Mutex::new(Faults::default()),
            calls: Mutex::new(Vec::new()),
            clock: Clock {
                start: Instant::now(),
                skew: Mutex::new(Duration::ZERO),
                frozen: Mutex::new(None),
            },
            opts,
        })
    }

    fn fresh_store(opts: &FakeOptions, next_id: u64) -> Store {
        let mut store = Store::new(opts.pipelines.clone(), next_id);
        for (t, p) in &opts.properties {
            store
                .properties
                .entry(*t)
                .or_default()
                .insert(p.name.clone(), p.clone());
        }
        store
    }

    fn fresh_limiter(opts: &FakeOptions) -> RateLimiter {
        RateLimiter::new(
            opts.ten_second_limit,
            opts.daily_limit,
            opts.search_per_second,
            opts.daily_reset_utc_offset_minutes,
        )
    }

    pub fn options(&self) -> &FakeOptions {
        &self.opts
    }

    /// HubSpot's API at the root of the router, plus the read-only view (`/`, `/_fake/...`).
    pub fn router(self: &Arc<Self>) -> Router {
        let core = objects::routes().merge(batch::routes());
        let api = Router::new()
            .nest(
                "/crm/v3/objects",
                core.clone().merge(associations::v3_routes()),
            )
            .nest(
                "/crm/objects/2026-03",
                core.merge(associations::v4_object_routes()),
            )
            .nest("/crm/v4/objects", associations::v4_object_routes())
            .nest("/crm/v4/associations", associations::v4_batch_routes())
            .nest("/crm/associations/2026-03", associations::v4_batch_routes())
            .nest("/crm/v3/properties", properties::routes())
            .nest("/crm/properties/2026-03", properties::routes())
            .nest("/crm/v3/pipelines", pipelines::routes())
            .nest("/crm/pipelines/2026-03", pipelines::routes())
            .fallback(unknown_route)
            .layer(from_fn_with_state(self.clone(), gate::gate));
        view::routes().merge(api).with_state(self.clone())
    }

    // ---- clock -------------------------------------------------------------------------------

    /// Moves the fake's clock forward: rate windows, the daily reset, search lag and record
    /// timestamps all follow it (so tests need not sleep through a 10-second window).
    pub fn advance(&self, d: Duration) {
        *lock(&self.clock.skew) += d;
    }

    /// Stops the fake's clock where it is: from now on only [`HubSpotFake::advance`] moves it,
    /// so tests can put requests exactly at a window's edge.
    pub fn freeze_clock(&self) {
        let mut frozen = lock(&self.clock.frozen);
        if frozen.is_none() {
            *frozen = Some((Instant::now(), real_ms()));
        }
    }

    /// Epoch milliseconds on the fake's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    fn rate(&self) -> MutexGuard<'_, RateLimiter> {
        lock(&self.rate)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    fn log(&self, call: Call) {
        lock(&self.calls).push(call);
    }

    // ---- inspection --------------------------------------------------------------------------

    /// Every live record of type `t`, by id.
    pub fn records(&self, t: ObjectType) -> Vec<RecordView> {
        self.store()
            .records
            .values()
            .filter(|r| r.object_type == t && !r.archived)
            .map(RecordView::of)
            .collect()
    }

    pub fn record(&self, t: ObjectType, id: &str) -> Option<RecordView> {
        let n = id.parse().ok()?;
        self.store().get(t, n).map(RecordView::of)
    }

    /// Live records of `t` whose `property` is `value` (e-mails case-insensitively).
    pub fn find(&self, t: ObjectType, property: &str, value: &str) -> Vec<RecordView> {
        self.store()
            .records
            .values()
            .filter(|r| {
                r.object_type == t
                    && !r.archived
                    && r.properties.get(property).is_some_and(|v| {
                        if property == "email" {
                            v.eq_ignore_ascii_case(value)
                        } else {
                            v == value
                        }
                    })
            })
            .map(RecordView::of)
            .collect()
    }

    /// The associations from record `id` of type `t`, every direction stored from it.
    pub fn associations(&self, t: ObjectType, id: &str) -> Vec<AssociationView> {
        let Ok(n) = id.parse() else {
            return Vec::new();
        };
        self.store()
            .associations_of(t, n, None)
            .iter()
            .map(|a| AssociationView {
                to_type: a.to_type,
                to_id: a.to_id.to_string(),
                category: a.category.as_str(),
                type_id: a.type_id,
            })
            .collect()
    }

    /// Every API call received, oldest first (the view page and `/_fake/*` are not logged).
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    pub fn clear_calls(&self) {
        lock(&self.calls).clear();
    }

    pub fn properties(&self, t: ObjectType) -> Vec<PropertyDef> {
        self.store()
            .properties
            .get(&t)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn property(&self, t: ObjectType, name: &str) -> Option<PropertyDef> {
        self.store().property(t, name).cloned()
    }

    pub fn pipelines(&self) -> Vec<Pipeline> {
        self.store().pipelines.clone()
    }

    /// Where the rate limits stand now.
    pub fn rate_state(&self) -> RateState {
        let now = self.clock.now();
        let ms = self.now_ms();
        self.rate().state(now, ms)
    }

    /// The most requests the rate limiter admitted in any `window` (e.g. 10 s) so far, from the
    /// call log: what a connector's rate-limit test asserts stays within the budget.
    pub fn max_requests_in_any_window(&self, window: Duration) -> usize {
        let times: Vec<Duration> = lock(&self.calls)
            .iter()
            .filter(|c| c.counted)
            .map(|c| c.since_start)
            .collect();
        rate::max_in_any_window(&times, window)
    }

    // ---- scripting ---------------------------------------------------------------------------

    /// Adds a fault rule (see [`Fault`]).
    pub fn script(&self, fault: Fault) {
        self.faults().add(fault);
    }

    pub fn clear_faults(&self) {
        self.faults().clear();
    }

    /// Rules that still have answers to give.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.faults().pending()
    }

    /// Back to the state of [`HubSpotFake::new`]: records, associations, custom properties and
    /// pipelines, the call log, rate windows and faults. Ids keep increasing (never reused).
    pub fn reset(&self) {
        let next = self.store().next_id;
        *self.store() = Self::fresh_store(&self.opts, next);
        *self.rate() = Self::fresh_limiter(&self.opts);
        self.faults().clear();
        self.clear_calls();
    }

    /// Creates a record as the API would (same checks), without auth, limits or the call log.
    pub fn seed_record(
        &self,
        t: ObjectType,
        properties: &[(&str, &str)],
    ) -> Result<String, String> {
        let map: Map<String, Value> = properties
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let (ms, now) = (self.now_ms(), self.clock.now());
        self.store()
            .create(t, &map, ms, now)
            .map(|id| id.to_string())
            .map_err(|e| describe(&e))
    }

    /// Adds (or replaces) a property definition.
    pub fn seed_property(&self, t: ObjectType, def: PropertyDef) {
        self.store()
            .properties
            .entry(t)
            .or_default()
            .insert(def.name.clone(), def);
    }

    /// The two unique keys the connector's setup creates: `enerflo_customer_id` on contacts and
    /// `enerflo_deal_id` on deals (text, `hasUniqueValue`), for tests that skip the setup.
    pub fn seed_enerflo_keys(&self) {
        self.seed_property(
            ObjectType::Contact,
            PropertyDef::text("enerflo_customer_id")
                .unique()
                .label("Enerflo customer ID")
                .group("contactinformation"),
        );
        self.seed_property(
            ObjectType::Deal,
            PropertyDef::text("enerflo_deal_id")
                .unique()
                .label("Enerflo deal ID")
                .group("dealinformation"),
        );
    }

    /// Links two records with their default association type (both directions).
    pub fn seed_association(
        &self,
        from: ObjectType,
        from_id: &str,
        to: ObjectType,
        to_id: &str,
    ) -> Result<(), String> {
        let mut store = self.store();
        let (Some(a), Some(b)) = (
            from_id
                .parse()
                .ok()
                .filter(|n| store.get(from, *n).is_some()),
            to_id.parse().ok().filter(|n| store.get(to, *n).is_some()),
        ) else {
            return Err(format!("no {from} {from_id} or no {to} {to_id}"));
        };
        let (id, rev) = associations::default_type(from, to)
            .ok_or_else(|| format!("no default association type from {from} to {to}"))?;
        associations::apply_inline(&mut store, (from, a), &[(to, b, id, rev)]);
        Ok(())
    }

    /// Adds a deal pipeline.
    pub fn add_pipeline(&self, p: Pipeline) {
        self.store().pipelines.push(p);
    }
}

/// A write error as one line (for seeding helpers).
fn describe(e: &WriteError) -> String {
    match e {
        WriteError::Invalid(errs) => errs
            .iter()
            .map(|f| format!("{} ({}): {}", f.name, f.code, f.message))
            .collect::<Vec<_>>()
            .join("; "),
        WriteError::EmailTaken { existing_id } => errors::email_taken_message(*existing_id),
        WriteError::NotFound(m) => m.clone(),
    }
}

/// Reads a path's object type; anything else is HubSpot's 400.
fn otype(s: &str) -> Result<ObjectType, ApiError> {
    ObjectType::parse(s)
        .ok_or_else(|| ApiError::validation(format!("Unable to infer object type from: {s}")))
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        format!("No HubSpot endpoint at {} in this fake", uri.path()),
    )
}

/// Serves a new fake on 127.0.0.1 at a free port; returns its base URL (no trailing slash).
/// Panics when no port can be bound (a test helper).
pub async fn spawn(opts: FakeOptions) -> (String, Arc<HubSpotFake>) {
    let fake = HubSpotFake::new(opts);
    #[allow(clippy::expect_used)]
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0 for the HubSpot fake");
    #[allow(clippy::expect_used)]
    let addr = listener
        .local_addr()
        .expect("local address of the HubSpot fake");
    let app = fake.router();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HubSpot fake stopped");
        }
    });
    (format!("http://{addr}"), fake)
}
