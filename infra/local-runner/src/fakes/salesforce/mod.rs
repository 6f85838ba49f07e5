//! A faithful local Salesforce, written from the Salesforce wire contract in the team's CRM
//! connector reference (`docs/crm-connectors.md` sections 3.1-3.11), not from the connector:
//! the OAuth token endpoint (client credentials and the JWT bearer flow, RS256 verified), the
//! versioned REST API (`/services/data/vNN.N/`: sObject CRUD, upsert by external id with its
//! version-dependent answers, describe, limits, simple SOQL, composite with references and
//! `allOrNone`, sObject Collections), Salesforce's error arrays, `Sforce-Limit-Info` on every
//! answer and the daily allocation, scripted faults, an Outbound Message emitter (SOAP, retried
//! until acked) and a Flow HTTP Callout emitter, and a read-only page of what it holds.
//!
//! [`SalesforceFake::router`] serves Salesforce's paths at its root (`/services/oauth2/token`,
//! `/services/data/...`), so it can be nested (the local runner at a prefix) or served alone
//! ([`spawn`]). `GET /` and `GET /_fake/records.json` show the records without a token and accept
//! no writes.
//!
//! Where Salesforce's behaviour is not documented the fake chooses, and says so here:
//! * error codes for a malformed composite/collection body (see `composite.rs`), and the status
//!   of `updateOnly` with no match (404 `NOT_FOUND`);
//! * an external id field repeated in an upsert body must equal the URL's value (else 400
//!   `INVALID_FIELD`);
//! * deleted records keep their values but no longer count for uniqueness or upsert matching;
//! * a ContentNote body with an unescaped `&` or `<` is refused with 400
//!   `FIELD_INTEGRITY_EXCEPTION`; `<script>`/`<style>` elements are stripped;
//! * `ContentDocumentLink.ShareType` is required, `Visibility` defaults to `AllUsers`; linking a
//!   document twice to one record is `DUPLICATE_VALUE`; no link to the owner is made;
//! * `aud` of a JWT may be any of [`FakeOptions::jwt_audiences`] or the fake's own instance URL;
//! * requests refused with 401 or 403 `REQUEST_LIMIT_EXCEEDED`, and `GET /services/data/`, do not
//!   count against the daily allocation; every other data API request counts one (a composite
//!   too, whatever its subrequests), faulted ones included;
//! * the 24-hour window is rolling on the fake's clock ([`SalesforceFake::advance`]);
//! * sessions survive [`SalesforceFake::reset`] (a connector's cached token stays valid).

mod auth;
mod composite;
mod emitter;
mod errors;
mod faults;
mod gate;
mod ids;
mod rest;
mod schema;
mod soql;
mod store;
mod view;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{any, get};
use serde_json::Value;

pub use auth::{JWT_BEARER, MAX_ASSERTION_AHEAD_SECS, public_key_der};
pub use composite::{MAX_COLLECTION, MAX_SUBREQUESTS};
pub use emitter::{
    Attempt, CalloutAuth, CalloutResult, NamedCredential, Notification, OutboundMessage,
    OutboundOptions, OutboundResult, RetrySchedule, Values, is_ack, xml_escape,
};
pub use errors::SfError;
pub use faults::{Fault, FaultKind};
pub use ids::{make as make_id, normalise as normalise_id};
pub use rest::release_label;
pub use schema::{
    FieldDef, FieldType, LEAD_STATUSES, OPPORTUNITY_STAGES, ObjectDef, enerflo_fields,
    standard_objects,
};
pub use store::{Condition, DuplicateRule, ValidationRule};

use auth::Sessions;
use faults::Faults;
use store::{Ctx, Db, Record};

/// How a fake is set up.
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// The connected app's consumer key (client credentials `client_id`, JWT `iss`).
    pub client_id: String,
    pub client_secret: String,
    /// The integration user (JWT `sub`), also the run-as user of client credentials.
    pub username: String,
    /// The certificate (or public key) uploaded to the app, PEM: `CERTIFICATE`, `PUBLIC KEY` or
    /// `RSA PUBLIC KEY`. `None`: the JWT bearer flow is refused.
    pub public_key_pem: Option<String>,
    /// JWT audiences accepted besides the fake's own instance URL.
    pub jwt_audiences: Vec<String>,
    /// The org id (`00D...`, 18 characters).
    pub org_id: String,
    /// What token answers give as `instance_url` (the API base); `None`: the URL the fake was
    /// reached at (what [`spawn`] serves, or the request's host and prefix).
    pub instance_url: Option<String>,
    /// The oldest and newest API versions served (`31` = v31.0).
    pub api_version_floor: u32,
    pub api_version_latest: u32,
    /// API requests allowed in any 24 hours (`REQUEST_LIMIT_EXCEEDED` past it).
    pub daily_limit: u64,
    /// How long an access token is accepted (the session timeout).
    pub token_ttl: Duration,
    /// The sObjects (default: [`standard_objects`]).
    pub objects: Vec<ObjectDef>,
    /// Fields added to those objects, e.g. [`enerflo_fields`].
    pub fields: Vec<(String, FieldDef)>,
    pub duplicate_rules: Vec<DuplicateRule>,
    pub validation_rules: Vec<ValidationRule>,
    /// How outbound messages are delivered.
    pub outbound: OutboundOptions,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            client_id: "3MVG9fakeConsumerKey.localTestOnly".into(),
            client_secret: "FAKE-CLIENT-SECRET-0000".into(),
            username: "integration.user@acme-solar.example.test".into(),
            public_key_pem: None,
            jwt_audiences: vec![
                "https://login.salesforce.com".into(),
                "https://test.salesforce.com".into(),
            ],
            org_id: ids::make("00D", 1),
            instance_url: None,
            api_version_floor: 31,
            api_version_latest: 66,
            daily_limit: 100_000,
            token_ttl: Duration::from_secs(2 * 3600),
            objects: standard_objects(),
            fields: Vec::new(),
            duplicate_rules: Vec::new(),
            validation_rules: Vec::new(),
            outbound: OutboundOptions::default(),
        }
    }
}

impl FakeOptions {
    /// With the connector's custom fields ([`enerflo_fields`]) already created.
    pub fn with_enerflo_fields(mut self) -> Self {
        self.fields.extend(enerflo_fields());
        self
    }
}

/// One request the fake received and what it answered.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// As the fake's router saw it (without a prefix it is nested under).
    pub path: String,
    pub query: Option<String>,
    pub body: String,
    pub status: u16,
    pub response: String,
    /// Arrival on the fake's clock, ISO and epoch ms.
    pub at: String,
    pub at_ms: i64,
    /// Whether it counted against the daily allocation.
    pub counted: bool,
    /// The `Sforce-Limit-Info` it was answered with.
    pub limit_info: String,
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

/// A record as the inspection API shows it: set fields only, under their API names.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordView {
    pub id: String,
    pub object: String,
    pub fields: BTreeMap<String, Value>,
    pub deleted: bool,
}

impl RecordView {
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    /// A text value.
    pub fn str(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(Value::as_str)
    }

    fn of(r: &Record) -> Self {
        Self {
            id: r.id.clone(),
            object: r.object.clone(),
            fields: r.fields.clone(),
            deleted: r.deleted,
        }
    }
}

/// The daily allocation now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Counted requests in the last 24 hours.
    pub used: u64,
    pub max: u64,
}

impl Limits {
    /// The `Sforce-Limit-Info` value.
    pub fn header(&self) -> String {
        format!("api-usage={}/{}", self.used, self.max)
    }
}

/// The fake's clock: real time (or the moment it was frozen) plus whatever
/// [`SalesforceFake::advance`] added.
struct Clock {
    skew: Mutex<Duration>,
    frozen: Mutex<Option<(Instant, i64)>>,
}

impl Clock {
    fn now_ms(&self) -> i64 {
        let base = lock(&self.frozen).map_or_else(real_ms, |(_, ms)| ms);
        base + lock(&self.skew).as_millis() as i64
    }
}

fn real_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const DAY_MS: i64 = 24 * 3600 * 1000;

pub struct SalesforceFake {
    opts: FakeOptions,
    /// The configured public key, read once (an error is reported by the JWT flow).
    public_key: Option<Result<Vec<u8>, String>>,
    /// The outbound message action the emitter reports (`04k...`).
    action_id: String,
    db: Mutex<Db>,
    sessions: Mutex<Sessions>,
    /// Times (fake clock, ms) of counted requests in the rolling window.
    usage: Mutex<VecDeque<i64>>,
    faults: Mutex<Faults>,
    calls: Mutex<Vec<Call>>,
    outbound_log: Mutex<Vec<OutboundResult>>,
    callout_log: Mutex<Vec<CalloutResult>>,
    emitter_ids: Mutex<u64>,
    /// The instance URL learned from the first request when none is configured.
    learned_instance: Mutex<Option<String>>,
    clock: Clock,
}

impl SalesforceFake {
    pub fn new(opts: FakeOptions) -> Arc<Self> {
        let public_key = opts.public_key_pem.as_deref().map(public_key_der);
        let db = Self::fresh_db(&opts, BTreeMap::new());
        Arc::new(Self {
            public_key,
            action_id: ids::make("04k", 1),
            db: Mutex::new(db),
            sessions: Mutex::new(Sessions::default()),
            usage: Mutex::new(VecDeque::new()),
            faults: Mutex::new(Faults::default()),
            calls: Mutex::new(Vec::new()),
            outbound_log: Mutex::new(Vec::new()),
            callout_log: Mutex::new(Vec::new()),
            emitter_ids: Mutex::new(0),
            learned_instance: Mutex::new(None),
            clock: Clock {
                skew: Mutex::new(Duration::ZERO),
                frozen: Mutex::new(None),
            },
            opts,
        })
    }

    fn fresh_db(opts: &FakeOptions, mut counters: BTreeMap<String, u64>) -> Db {
        let mut objects = opts.objects.clone();
        for (object, f) in &opts.fields {
            if let Some(o) = objects
                .iter_mut()
                .find(|o| o.name.eq_ignore_ascii_case(object))
            {
                o.add_field(f.clone());
            }
        }
        let user = ids::make("005", 1);
        let c = counters.entry("005".into()).or_insert(0);
        *c = (*c).max(1);
        let mut db = Db::new(
            objects,
            opts.duplicate_rules.clone(),
            opts.validation_rules.clone(),
            counters,
        );
        let mut fields = BTreeMap::new();
        for (k, v) in [
            ("Id", Value::String(user.clone())),
            ("Username", Value::String(opts.username.clone())),
            ("LastName", Value::String("Integration".into())),
            ("Name", Value::String("Integration User".into())),
            ("Email", Value::String(opts.username.clone())),
            ("IsDeleted", Value::Bool(false)),
        ] {
            fields.insert(k.to_owned(), v);
        }
        db.records.insert(
            ("User".into(), user.clone()),
            Record {
                object: "User".into(),
                id: user,
                fields,
                deleted: false,
                blob: None,
            },
        );
        db
    }

    pub fn options(&self) -> &FakeOptions {
        &self.opts
    }

    /// Salesforce's paths at the root of the router, plus the read-only view (`/`,
    /// `/_fake/records.json`).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(view::page))
            .route("/_fake/records.json", get(view::records_json))
            .route("/services/{*rest}", any(gate::handle))
            .fallback(gate::unknown_route)
            .with_state(self.clone())
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        lock(&self.db)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    fn log(&self, call: Call) {
        lock(&self.calls).push(call);
    }

    fn log_outbound(&self, r: &OutboundResult) {
        lock(&self.outbound_log).push(r.clone());
    }

    fn log_callout(&self, r: &CalloutResult) {
        lock(&self.callout_log).push(r.clone());
    }

    fn next_emitter_id(&self, prefix: &str) -> String {
        let mut n = lock(&self.emitter_ids);
        *n += 1;
        ids::make(prefix, *n)
    }

    fn user_id(&self) -> String {
        ids::make("005", 1)
    }

    /// The instance URL token answers give.
    pub fn instance_url(&self) -> Option<String> {
        self.opts
            .instance_url
            .clone()
            .or_else(|| lock(&self.learned_instance).clone())
    }

    fn instance_url_or_default(&self) -> String {
        self.instance_url()
            .unwrap_or_else(|| "https://acme-solar.my.salesforce.com".into())
    }

    fn learn_instance(&self, url: String) {
        let mut l = lock(&self.learned_instance);
        if l.is_none() {
            *l = Some(url);
        }
    }

    // ---- clock -------------------------------------------------------------------------------

    /// Moves the fake's clock forward: token expiry, the 24-hour window and record stamps follow.
    pub fn advance(&self, d: Duration) {
        *lock(&self.clock.skew) += d;
    }

    /// Stops the fake's clock; from now on only [`SalesforceFake::advance`] moves it.
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

    // ---- limits ------------------------------------------------------------------------------

    fn trim_usage(q: &mut VecDeque<i64>, now: i64) {
        while q.front().is_some_and(|t| *t <= now - DAY_MS) {
            q.pop_front();
        }
    }

    /// Where the daily allocation stands.
    pub fn limits(&self) -> Limits {
        let now = self.now_ms();
        let mut q = lock(&self.usage);
        Self::trim_usage(&mut q, now);
        Limits {
            used: q.len() as u64,
            max: self.opts.daily_limit,
        }
    }

    /// Counts one request unless the allocation is used up: the usage after it, or `Err` with
    /// the usage as it stands.
    fn count_request(&self) -> Result<Limits, Limits> {
        let now = self.now_ms();
        let mut q = lock(&self.usage);
        Self::trim_usage(&mut q, now);
        let max = self.opts.daily_limit;
        if q.len() as u64 >= max {
            return Err(Limits {
                used: q.len() as u64,
                max,
            });
        }
        q.push_back(now);
        Ok(Limits {
            used: q.len() as u64,
            max,
        })
    }

    /// Sets the usage of the last 24 hours to `used` requests made now (to start a test near
    /// the limit).
    pub fn set_api_usage(&self, used: u64) {
        let now = self.now_ms();
        let mut q = lock(&self.usage);
        q.clear();
        q.extend(std::iter::repeat_n(now, used as usize));
    }

    // ---- sessions ----------------------------------------------------------------------------

    /// Every token issued so far (live or not).
    pub fn tokens_issued(&self) -> usize {
        lock(&self.sessions).by_token.len()
    }

    /// Whether `token` would be accepted now.
    pub fn token_valid(&self, token: &str) -> bool {
        lock(&self.sessions).valid(token, self.now_ms())
    }

    /// Expires every token issued so far (the next data API call with one gets a 401).
    pub fn expire_tokens(&self) {
        let now = self.now_ms();
        for s in lock(&self.sessions).by_token.values_mut() {
            s.expires_ms = s.expires_ms.min(now);
        }
    }

    pub fn revoke_token(&self, token: &str) {
        if let Some(s) = lock(&self.sessions).by_token.get_mut(token) {
            s.revoked = true;
        }
    }

    /// Issues a token without the token endpoint (for tests of the data API alone).
    pub fn issue_token(&self) -> String {
        let now = self.now_ms();
        let token = auth::new_token(&self.opts.org_id);
        lock(&self.sessions).by_token.insert(
            token.clone(),
            auth::Session {
                token: token.clone(),
                flow: "test",
                issued_ms: now,
                expires_ms: now + self.opts.token_ttl.as_millis() as i64,
                revoked: false,
            },
        );
        token
    }

    // ---- inspection --------------------------------------------------------------------------

    /// Live records of `object`, in creation order.
    pub fn records(&self, object: &str) -> Vec<RecordView> {
        let db = self.db();
        let Some(name) = db.object(object).map(|o| o.name.clone()) else {
            return Vec::new();
        };
        db.records
            .values()
            .filter(|r| r.object == name && !r.deleted)
            .map(RecordView::of)
            .collect()
    }

    /// A record by id (deleted ones too, flagged).
    pub fn record(&self, object: &str, id: &str) -> Option<RecordView> {
        let db = self.db();
        let name = db.object(object)?.name.clone();
        db.get(&name, id).map(RecordView::of)
    }

    /// Live records of `object` whose `field` equals `value` (text case-insensitively).
    pub fn find(&self, object: &str, field: &str, value: &str) -> Vec<RecordView> {
        let db = self.db();
        let Some(obj) = db.object(object) else {
            return Vec::new();
        };
        let Some(f) = obj.field(field) else {
            return Vec::new();
        };
        let name = obj.name.clone();
        db.find(&name, f, &Value::String(value.to_owned()))
            .iter()
            .filter_map(|id| db.get(&name, id))
            .map(RecordView::of)
            .collect()
    }

    /// A ContentNote's content, decoded (the HTML or text that was sent, unsafe tags removed).
    pub fn note_content(&self, id: &str) -> Option<String> {
        let db = self.db();
        let r = db.get("ContentNote", id)?;
        r.blob
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// The notes linked to a record (through ContentDocumentLink): each note and its content.
    pub fn notes_of(&self, record_id: &str) -> Vec<(RecordView, String)> {
        let Some(id) = ids::normalise(record_id) else {
            return Vec::new();
        };
        let links: Vec<String> = self
            .records("ContentDocumentLink")
            .into_iter()
            .filter(|l| l.str("LinkedEntityId") == Some(id.as_str()))
            .filter_map(|l| l.str("ContentDocumentId").map(str::to_owned))
            .collect();
        links
            .iter()
            .filter_map(|doc| {
                let note = self.record("ContentNote", doc).filter(|n| !n.deleted)?;
                let text = self.note_content(doc).unwrap_or_default();
                Some((note, text))
            })
            .collect()
    }

    /// The schema of an object as describe serves it.
    pub fn object(&self, name: &str) -> Option<ObjectDef> {
        self.db().object(name).cloned()
    }

    /// Every request received, oldest first (the view page is not logged).
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    pub fn clear_calls(&self) {
        lock(&self.calls).clear();
    }

    /// Data API calls only (not the token endpoint).
    pub fn api_calls(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path.starts_with("/services/data/"))
            .collect()
    }

    /// Every outbound message delivery, oldest first.
    pub fn outbound_log(&self) -> Vec<OutboundResult> {
        lock(&self.outbound_log).clone()
    }

    /// Every Flow callout sent, oldest first.
    pub fn callout_log(&self) -> Vec<CalloutResult> {
        lock(&self.callout_log).clone()
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

    /// Back to the state of [`SalesforceFake::new`]: records, schema, rules, the call and
    /// emitter logs, the usage window and faults. Ids keep increasing (never reused); issued
    /// tokens stay valid.
    pub fn reset(&self) {
        let counters = self.db().counters.clone();
        *self.db() = Self::fresh_db(&self.opts, counters);
        lock(&self.usage).clear();
        self.faults().clear();
        self.clear_calls();
        lock(&self.outbound_log).clear();
        lock(&self.callout_log).clear();
    }

    // ---- seeding -----------------------------------------------------------------------------

    /// Creates a record as the API would (same checks), without auth, limits or the call log.
    pub fn seed_record(&self, object: &str, body: &Value) -> Result<String, String> {
        let Value::Object(map) = body else {
            return Err("a record body is a JSON object".into());
        };
        let ctx = self.ctx(false);
        self.db()
            .create(object, map, &ctx)
            .map_err(|errs| describe(&errs))
    }

    /// Updates a record as the API would (e.g. an admin changing a stage in the UI).
    pub fn seed_update(&self, object: &str, id: &str, body: &Value) -> Result<(), String> {
        let Value::Object(map) = body else {
            return Err("a record body is a JSON object".into());
        };
        let ctx = self.ctx(false);
        self.db()
            .update(object, id, map, &ctx)
            .map_err(|errs| describe(&errs))
    }

    /// Adds (or replaces) a field of an object.
    pub fn seed_field(&self, object: &str, field: FieldDef) -> Result<(), String> {
        let mut db = self.db();
        let o = db
            .object_mut(object)
            .ok_or_else(|| format!("no sObject {object}"))?;
        o.add_field(field);
        Ok(())
    }

    /// The connector's custom fields ([`enerflo_fields`]), for tests that skip the setup.
    pub fn seed_enerflo_fields(&self) {
        for (o, f) in enerflo_fields() {
            let _ = self.seed_field(&o, f);
        }
    }

    /// Removes a field (to test what happens when an admin has not created it).
    pub fn remove_field(&self, object: &str, field: &str) {
        if let Some(o) = self.db().object_mut(object) {
            o.fields.retain(|f| !f.name.eq_ignore_ascii_case(field));
        }
    }

    /// Adds (or replaces) an sObject.
    pub fn seed_object(&self, object: ObjectDef) {
        let mut db = self.db();
        db.objects
            .retain(|o| !o.name.eq_ignore_ascii_case(&object.name));
        db.objects.push(object);
    }

    /// Sets a picklist's values.
    pub fn set_picklist(&self, object: &str, field: &str, values: &[&str]) -> Result<(), String> {
        let mut db = self.db();
        let f = db
            .object_mut(object)
            .and_then(|o| o.field_mut(field))
            .ok_or_else(|| format!("no field {object}.{field}"))?;
        f.picklist = values.iter().map(|v| (*v).to_owned()).collect();
        Ok(())
    }

    pub fn add_validation_rule(&self, rule: ValidationRule) {
        self.db().validation_rules.push(rule);
    }

    pub fn add_duplicate_rule(&self, rule: DuplicateRule) {
        self.db().duplicate_rules.push(rule);
    }

    fn ctx(&self, allow_save: bool) -> Ctx {
        Ctx {
            now_ms: self.now_ms(),
            user_id: self.user_id(),
            allow_save,
        }
    }
}

/// Errors as one line (for seeding helpers).
fn describe(errs: &[SfError]) -> String {
    errs.iter()
        .map(|e| format!("{}: {}", e.code, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Decodes a query string (`a=1&b=x%20y`) into pairs, `+` as a space.
pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    form_pairs(q.as_bytes())
}

/// Decodes `application/x-www-form-urlencoded` pairs.
fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Decodes `%XX` escapes (and `+` as a space in forms, not in paths).
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves a new fake on 127.0.0.1 at a free port; returns its base URL (no trailing slash),
/// which is also its instance URL unless the options set one. Panics when no port can be bound
/// (a test helper).
pub async fn spawn(opts: FakeOptions) -> (String, Arc<SalesforceFake>) {
    let fake = SalesforceFake::new(opts);
    #[allow(clippy::expect_used)]
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0 for the Salesforce fake");
    #[allow(clippy::expect_used)]
    let addr = listener
        .local_addr()
        .expect("local address of the Salesforce fake");
    let base = format!("http://{addr}");
    fake.learn_instance(base.clone());
    let app = fake.router();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "Salesforce fake stopped");
        }
    });
    (base, fake)
}
