//! Ports for durable state: cross-references, idempotency claims, last-synced state and the event
//! log. Each is a small trait so a function's IAM policy can grant exactly the actions it uses;
//! each has a DynamoDB adapter ([`dynamo`]) and an embedded one ([`embedded`]) that pass the same
//! contract suite.

pub mod dynamo;
pub mod embedded;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::error::StoreError;

/// What a cross-reference links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A person: Enerflo customer / lead, CRM contact.
    Customer,
    /// A deal and its install: the CRM project.
    Project,
    /// An install note: Enerflo note, CRM note.
    Note,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Project => "project",
            Self::Note => "note",
        }
    }
}

/// One of the id forms an entity is known by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdForm {
    /// v2 deal UUID.
    Deal,
    /// v2 deal short code.
    ShortCode,
    /// v1 install id.
    Install,
    /// v1 survey (deal) id.
    Survey,
    /// v2 customer UUID.
    CustomerUuid,
    /// v1 customer id.
    CustomerId,
    /// The CRM's id as Enerflo stores it (`integration_record_id` / `external_id`).
    Integration,
    /// Enerflo note id.
    EnerfloNote,
    /// The CRM record id.
    Crm,
}

impl IdForm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deal => "deal",
            Self::ShortCode => "short_code",
            Self::Install => "install",
            Self::Survey => "survey",
            Self::CustomerUuid => "customer_uuid",
            Self::CustomerId => "customer_id",
            Self::Integration => "integration",
            Self::EnerfloNote => "enerflo_note",
            Self::Crm => "crm",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Deal,
            Self::ShortCode,
            Self::Install,
            Self::Survey,
            Self::CustomerUuid,
            Self::CustomerId,
            Self::Integration,
            Self::EnerfloNote,
            Self::Crm,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }
}

/// An id in one form: `install:700001`, `deal:<uuid>`, `crm:<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdRef {
    pub form: IdForm,
    pub value: String,
}

impl IdRef {
    pub fn new(form: IdForm, value: impl fmt::Display) -> Self {
        Self {
            form,
            value: value.to_string(),
        }
    }

    /// The `form:value` text used in keys and entity records.
    pub fn key(&self) -> String {
        format!("{}:{}", self.form.as_str(), self.value)
    }

    pub fn parse_key(key: &str) -> Option<Self> {
        let (form, value) = key.split_once(':')?;
        Some(Self {
            form: IdForm::parse(form)?,
            value: value.to_owned(),
        })
    }
}

impl fmt::Display for IdRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.form.as_str(), self.value)
    }
}

/// An entity and every id it is known by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityLink {
    pub kind: EntityKind,
    /// Stable key: the first id the entity was linked by.
    pub key: String,
    pub ids: BTreeSet<String>,
    pub crm_id: Option<String>,
}

impl EntityLink {
    pub fn id(&self, form: IdForm) -> Option<String> {
        self.ids
            .iter()
            .filter_map(|k| IdRef::parse_key(k))
            .find(|r| r.form == form)
            .map(|r| r.value)
    }
}

/// Cross-references between every id form of an entity, forward (entity -> ids) and reverse
/// (id -> entity). A lookup that fails is an error, never "not found".
#[async_trait]
pub trait XrefStore: Send + Sync {
    /// The entity an id belongs to, or `None` when that id was never linked.
    async fn resolve(&self, kind: EntityKind, id: &IdRef)
    -> Result<Option<EntityLink>, StoreError>;

    /// Links all `ids` to one entity: the one any of them already belongs to, else a new one keyed
    /// by the first. Idempotent and safe under concurrency (conditional writes).
    async fn link(&self, kind: EntityKind, ids: &[IdRef]) -> Result<EntityLink, StoreError>;

    /// Records the CRM id for an entity (and links it as an id form, for reverse lookups).
    async fn set_crm_id(
        &self,
        kind: EntityKind,
        key: &str,
        crm_id: &str,
    ) -> Result<EntityLink, StoreError>;
}

/// The outcome of claiming an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// We hold the key now; call `complete` or `release`.
    Acquired,
    /// Someone finished this work before; here is what they recorded.
    Completed { outcome: String },
    /// Someone else holds a live lease on it.
    InProgress,
}

/// Idempotency claims: conditional puts with a TTL and an in-progress lease (Powertools semantics,
/// docs/rust-lambda-notes.md 4.4).
#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// Claims `key` for `lease_secs` (in progress); the record lives `ttl_secs` once completed.
    async fn claim(&self, key: &str, lease_secs: u64, ttl_secs: u64) -> Result<Claim, StoreError>;
    async fn complete(&self, key: &str, outcome: &str, ttl_secs: u64) -> Result<(), StoreError>;
    /// Gives the key up after a failure so a retry can claim it.
    async fn release(&self, key: &str) -> Result<(), StoreError>;
}

/// What we last synced for an entity in one stage: the basis of "changed?" decisions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    pub hash: String,
    pub data: serde_json::Value,
    pub updated_at: String,
    /// How many changes of this entity were pushed: the sequence number event ids derive from,
    /// so a later change never reuses an earlier change's id (`crate::pipeline`).
    #[serde(default)]
    pub seq: u64,
}

#[async_trait]
pub trait SyncStateStore: Send + Sync {
    async fn get_state(&self, scope: &str) -> Result<Option<SyncState>, StoreError>;
    async fn put_state(&self, scope: &str, state: &SyncState) -> Result<(), StoreError>;

    /// This store as a [`CommitStore`], when it holds the claims and echo fingerprints too and
    /// can write several records in one request; `None` (the default): write them one by one.
    fn committer(&self) -> Option<&dyn CommitStore> {
        None
    }
}

/// One write of a [`CommitStore::commit`]: what one call of another port would do.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreWrite {
    /// [`SyncStateStore::put_state`].
    State { scope: String, state: SyncState },
    /// [`EchoStore::record_write`].
    Echo {
        target: String,
        hash: String,
        ttl_secs: u64,
    },
    /// [`ClaimStore::release`].
    Release { key: String },
}

/// The most writes one commit takes (DynamoDB's `TransactWriteItems` takes 100 items).
pub const MAX_COMMIT_WRITES: usize = 100;

/// Several writes of the ports above as one: all or none, in one request (DynamoDB:
/// `TransactWriteItems`; embedded: one write transaction), so a pipeline step that writes its
/// state, its echo fingerprints and gives its lease up pays one round trip, not one per record.
#[async_trait]
pub trait CommitStore: Send + Sync {
    /// Applies every write of `writes` (at most [`MAX_COMMIT_WRITES`], no two naming the same
    /// record), or none of them. Each does exactly what its port's call does.
    async fn commit(&self, writes: &[StoreWrite]) -> Result<(), StoreError>;
}

/// One event as received, with its processing outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub dedupe_key: String,
    pub event: String,
    pub stage: Option<String>,
    pub entity: Option<String>,
    pub received_at: String,
    pub received_ms: i64,
    /// The body exactly as Enerflo sent it (stored compressed).
    pub raw_body: String,
    /// `queued`, `parked`, `ignored`, `delivered`, `unchanged`, `echo`, `retrying`, `dead_lettered`...
    pub outcome: String,
    pub detail: Option<String>,
    pub deliveries: u64,
    pub attempts: u64,
    /// Every outcome the event reached, oldest first: the one it was received with, then one per
    /// processing try or operator action (at most [`MAX_HISTORY`]; `attempts` counts on).
    #[serde(default)]
    pub history: Vec<OutcomeEntry>,
}

/// One outcome an event reached, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeEntry {
    pub at: String,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl OutcomeEntry {
    /// An entry at `at`, its detail cut to [`HISTORY_DETAIL_BYTES`] (the event's `detail` keeps
    /// the whole last one).
    pub fn new(at: impl Into<String>, outcome: &str, detail: Option<&str>) -> Self {
        Self {
            at: at.into(),
            outcome: outcome.to_owned(),
            detail: detail.map(|d| cut(d, HISTORY_DETAIL_BYTES)),
        }
    }
}

/// Outcomes an event keeps in its history: a retry budget (24 at most) and a few replays fit;
/// beyond, only `outcome`, `detail` and `attempts` move on, so the item stays well under
/// DynamoDB's 400 KB.
pub const MAX_HISTORY: usize = 50;
/// Longest detail a history entry keeps.
pub const HISTORY_DETAIL_BYTES: usize = 1_000;

/// `text` cut to at most `max` bytes (on a character boundary), marked with `…` when cut.
pub(crate) fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The pseudo-outcome counting every event received in an hour ([`OutcomeCounts`]).
pub const RECEIVED: &str = "received";

/// How long hourly outcome counts are kept: the operator console shows the last 7 days.
pub const COUNTS_TTL_SECS: u64 = 8 * 86_400;

/// The events received in one hour in one lane (a stage, e.g. `status`, or an inbound route,
/// e.g. `crm.status`), by their current outcome, plus [`RECEIVED`]. Kept by the event log as
/// events are recorded and change outcome, so the console's overview reads a few items, not
/// the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    pub lane: String,
    /// Start of the hour, Unix milliseconds.
    pub hour_ms: i64,
    pub counts: BTreeMap<String, i64>,
}

/// The lane an event is counted in: its stage, or for an inbound CRM call (`crm.<route>`
/// events, which no queue carries) its event name. Events of neither (ignored webhooks) are not
/// counted.
pub fn counts_lane(event: &EventRecord) -> Option<String> {
    event.stage.clone().or_else(|| {
        event
            .event
            .starts_with(INBOUND_EVENT_PREFIX)
            .then(|| event.event.clone())
    })
}

/// Event names of inbound CRM calls in the event log: `crm.leads`, `crm.status`, ...
pub const INBOUND_EVENT_PREFIX: &str = "crm.";

/// The start of the hour `ms` falls in.
pub fn hour_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(3_600_000)
}

/// Outcomes of an event accepted for a stage queue that no consumer has recorded an outcome
/// for yet: `queued` (written before the send, `crate::http::webhook`), `enqueue_failed` (the
/// send failed). While an event has one of these, [`EventLog::unsent`] lists it; any other
/// outcome takes it off that list.
pub const UNSENT_OUTCOMES: [&str; 2] = ["queued", "enqueue_failed"];

/// Whether `outcome` is one of [`UNSENT_OUTCOMES`].
pub fn is_unsent(outcome: &str) -> bool {
    UNSENT_OUTCOMES.contains(&outcome)
}

/// What [`EventLog::accept`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Acceptance {
    /// The dedupe key was free (or its record had expired): the record is written.
    New,
    /// The dedupe key was accepted before: its record as it is now (nothing was written).
    Repeat(Box<EventRecord>),
}

#[async_trait]
pub trait EventLog: Send + Sync {
    /// Records a received event; a repeat of the same dedupe key counts one more delivery and
    /// keeps the first record.
    async fn record(&self, event: &EventRecord, ttl_secs: u64) -> Result<(), StoreError>;
    /// The webhook's claim and record in ONE write: writes `event` (raw body included) unless
    /// its dedupe key has an unexpired record, and says which; a repeat finds the record as it
    /// is (conditional put, the old item returned on a failed condition). Of concurrent
    /// accepts of one key exactly one is [`Acceptance::New`]. An event accepted with an
    /// [`UNSENT_OUTCOMES`] outcome and a stage is listed by [`unsent`](Self::unsent) from then
    /// on. Counts nothing: [`tally`](Self::tally) does, beside the queue send.
    async fn accept(&self, event: &EventRecord, ttl_secs: u64) -> Result<Acceptance, StoreError>;
    /// Counts an [`accept`](Self::accept)ed event: a new one in its hour's outcome counts, a
    /// repeat as one more delivery of the record it found. A separate call so the webhook can
    /// run it beside the queue send (they do not wait for each other); counts are for the
    /// console, a failure loses no event.
    async fn tally(&self, event: &EventRecord, repeat: bool) -> Result<(), StoreError>;
    /// Events of `stage` with an [`UNSENT_OUTCOMES`] outcome last written before `before_ms`
    /// (Unix milliseconds; accepted, or re-sent, then), oldest first, at most `limit`: what the
    /// sweep re-sends (`crate::http::webhook::WebhookIngest::resend_unsent`). Setting such an
    /// outcome again (a re-send) moves an event to the end; any other outcome removes it.
    async fn unsent(
        &self,
        stage: &str,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError>;
    async fn set_outcome(
        &self,
        dedupe_key: &str,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), StoreError>;
    async fn get(&self, dedupe_key: &str) -> Result<Option<EventRecord>, StoreError>;
    /// Most recent first.
    async fn for_entity(&self, entity: &str, limit: usize) -> Result<Vec<EventRecord>, StoreError>;
    /// Counts one more try of the queued message `message_key` (its queue message id: the same
    /// on every receive, new for a replay) and returns its tries so far, this one included. The
    /// count is its own record, kept `ttl_secs`; the first call for a key returns 1.
    async fn count_attempt(&self, message_key: &str, ttl_secs: u64) -> Result<u32, StoreError>;
    /// The hourly counts of `lane` from the hour holding `since_ms` on, oldest first (hours
    /// without events have no entry).
    async fn outcome_counts(
        &self,
        lane: &str,
        since_ms: i64,
    ) -> Result<Vec<OutcomeCounts>, StoreError>;
}

/// Gzip for raw bodies: a 1 MiB webhook must fit a 400 KB DynamoDB item.
pub fn compress(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(text.as_bytes());
    enc.finish().unwrap_or_default()
}

pub fn decompress(bytes: &[u8]) -> Result<String, StoreError> {
    use std::io::Read;
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .map_err(|e| StoreError::Invalid(format!("stored body does not decompress: {e}")))?;
    Ok(out)
}

/// Echo fingerprints: every write we make into either system is recorded as (target, content
/// hash) with a TTL. An event coming back with a recorded fingerprint is our own write echoing,
/// not a change to propagate. A set of recent writes (not only the latest), so A -> B -> A is
/// recognised.
#[async_trait]
pub trait EchoStore: Send + Sync {
    /// Records that we wrote `hash` to `target` (e.g. `enerflo:status:install:700001`).
    async fn record_write(&self, target: &str, hash: &str, ttl_secs: u64)
    -> Result<(), StoreError>;
    /// Whether `hash` was written to `target` by us within its TTL.
    async fn is_echo(&self, target: &str, hash: &str) -> Result<bool, StoreError>;
}
