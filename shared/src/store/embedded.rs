//! Embedded adapters over redb: an ACID, crash-safe file (or memory) database, for the local
//! runner and unit tests. Same semantics as the DynamoDB adapters, proven by the contract suite.

use std::sync::Arc;

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{
    Acceptance, COUNTS_TTL_SECS, Claim, ClaimStore, CommitStore, EntityKind, EntityLink, EventLog,
    EventRecord, IdForm, IdRef, MAX_COMMIT_WRITES, MAX_HISTORY, OutcomeCounts, OutcomeEntry,
    RECEIVED, StoreError, StoreWrite, SyncState, SyncStateStore, XrefStore, compress, counts_lane,
    decompress, hour_of, is_unsent,
};
use crate::embedded_db::{Db, EVENTS_BY_ENTITY, KV, db_err};
use crate::timefmt::{now_millis, now_rfc3339, now_unix};

// Where the database is opened; kept at this path for the local runner and the ops tool.
pub use crate::embedded_db::{InUse, is_in_use, open_database};

/// The embedded store: one redb database holding every port's records.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Db>,
}

impl EmbeddedStore {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    pub fn in_memory() -> Result<Self, StoreError> {
        Ok(Self::new(open_database(None)?))
    }

    /// Drops every entity lock (`sync::EntityLease`, claim keys `lock#...`) still held;
    /// returns how many. Only for start-up of a single-process runner, when no worker can hold
    /// one: a lock left by a killed process would otherwise block its entity for the rest of the
    /// lease (60 s), while that message's backoff grows.
    pub fn clear_entity_locks(&self) -> Result<usize, StoreError> {
        self.db.write_blocking(|tx| {
            let mut kv = tx.open_table(KV).map_err(|e| db_err("open kv", e))?;
            let mut keys = Vec::new();
            for item in kv
                .range("claim#lock#".."claim#lock$")
                .map_err(|e| db_err("range", e))?
            {
                let (k, _) = item.map_err(|e| db_err("range item", e))?;
                keys.push(k.value().to_owned());
            }
            for k in &keys {
                kv.remove(k.as_str()).map_err(|e| db_err("remove", e))?;
            }
            Ok(keys.len())
        })
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| db_err("begin read", e))?;
        let table = tx.open_table(KV).map_err(|e| db_err("open kv", e))?;
        let Some(guard) = table.get(key).map_err(|e| db_err("get", e))? else {
            return Ok(None);
        };
        serde_json::from_slice(guard.value())
            .map(Some)
            .map_err(|e| StoreError::Invalid(format!("record {key} does not parse: {e}")))
    }

    /// Runs `f` on the kv table and the event index inside one serialisable write transaction,
    /// and returns once that is durable: the shared transaction of `shared/src/embedded_db.rs`,
    /// one commit (and one fsync) for the writes of the same moment. `f` may run twice.
    async fn write<R>(
        &self,
        f: impl Fn(&mut redb::Table<&str, &[u8]>, &mut redb::Table<&str, &str>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.db
            .write(|tx| {
                let mut kv = tx.open_table(KV).map_err(|e| db_err("open kv", e))?;
                let mut idx = tx
                    .open_table(EVENTS_BY_ENTITY)
                    .map_err(|e| db_err("open index", e))?;
                f(&mut kv, &mut idx)
            })
            .await
    }
}

fn get_json<T: for<'de> Deserialize<'de>>(
    table: &redb::Table<&str, &[u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let Some(guard) = table.get(key).map_err(|e| db_err("get", e))? else {
        return Ok(None);
    };
    serde_json::from_slice(guard.value())
        .map(Some)
        .map_err(|e| StoreError::Invalid(format!("record {key} does not parse: {e}")))
}

fn put_json<T: Serialize>(
    table: &mut redb::Table<&str, &[u8]>,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Invalid(e.to_string()))?;
    table
        .insert(key, bytes.as_slice())
        .map_err(|e| db_err("insert", e))?;
    Ok(())
}

fn pointer_key(kind: EntityKind, id: &IdRef) -> String {
    format!("xref#{}#{}", kind.as_str(), id.key())
}

fn entity_key(kind: EntityKind, key: &str) -> String {
    format!("entity#{}#{}", kind.as_str(), key)
}

#[async_trait]
impl XrefStore for EmbeddedStore {
    async fn resolve(
        &self,
        kind: EntityKind,
        id: &IdRef,
    ) -> Result<Option<EntityLink>, StoreError> {
        let Some(key): Option<String> = self.read(&pointer_key(kind, id))? else {
            return Ok(None);
        };
        self.read(&entity_key(kind, &key))
    }

    async fn link(&self, kind: EntityKind, ids: &[IdRef]) -> Result<EntityLink, StoreError> {
        if ids.is_empty() {
            return Err(StoreError::Invalid("link needs at least one id".into()));
        }
        self.write(|kv, _| {
            let mut key = None;
            for id in ids {
                if let Some(k) = get_json::<String>(kv, &pointer_key(kind, id))? {
                    key = Some(k);
                    break;
                }
            }
            let key = key.unwrap_or_else(|| ids[0].key());
            let mut link =
                get_json::<EntityLink>(kv, &entity_key(kind, &key))?.unwrap_or_else(|| {
                    EntityLink {
                        kind,
                        key: key.clone(),
                        ids: Default::default(),
                        crm_id: None,
                    }
                });
            for id in ids {
                // First writer wins: an id already linked elsewhere stays where it is.
                if get_json::<String>(kv, &pointer_key(kind, id))?.is_none() {
                    put_json(kv, &pointer_key(kind, id), &key)?;
                }
                if get_json::<String>(kv, &pointer_key(kind, id))?.as_deref() == Some(key.as_str())
                {
                    link.ids.insert(id.key());
                    if id.form == IdForm::Crm && link.crm_id.is_none() {
                        link.crm_id = Some(id.value.clone());
                    }
                }
            }
            put_json(kv, &entity_key(kind, &key), &link)?;
            Ok(link)
        })
        .await
    }

    async fn set_crm_id(
        &self,
        kind: EntityKind,
        key: &str,
        crm_id: &str,
    ) -> Result<EntityLink, StoreError> {
        let crm = IdRef::new(IdForm::Crm, crm_id);
        self.write(|kv, _| {
            let mut link =
                get_json::<EntityLink>(kv, &entity_key(kind, key))?.ok_or_else(|| {
                    StoreError::Invalid(format!("no entity {key} to attach a CRM id to"))
                })?;
            if get_json::<String>(kv, &pointer_key(kind, &crm))?.is_none() {
                put_json(kv, &pointer_key(kind, &crm), &key.to_owned())?;
            }
            link.ids.insert(crm.key());
            link.crm_id = Some(crm_id.to_owned());
            put_json(kv, &entity_key(kind, key), &link)?;
            Ok(link)
        })
        .await
    }
}

#[derive(Serialize, Deserialize)]
struct ClaimRecord {
    status: String,
    expires_at: i64,
    lease_until_ms: i64,
    outcome: Option<String>,
}

#[async_trait]
impl ClaimStore for EmbeddedStore {
    async fn claim(&self, key: &str, lease_secs: u64, ttl_secs: u64) -> Result<Claim, StoreError> {
        let k = format!("claim#{key}");
        self.write(|kv, _| {
            let now = now_unix();
            if let Some(existing) = get_json::<ClaimRecord>(kv, &k)?
                && existing.expires_at >= now
            {
                if existing.status == "COMPLETED" {
                    return Ok(Claim::Completed {
                        outcome: existing.outcome.unwrap_or_default(),
                    });
                }
                if existing.lease_until_ms >= now_millis() {
                    return Ok(Claim::InProgress);
                }
            }
            let record = ClaimRecord {
                status: "INPROGRESS".into(),
                expires_at: now + ttl_secs as i64,
                lease_until_ms: now_millis() + (lease_secs as i64) * 1000,
                outcome: None,
            };
            put_json(kv, &k, &record)?;
            Ok(Claim::Acquired)
        })
        .await
    }

    async fn complete(&self, key: &str, outcome: &str, ttl_secs: u64) -> Result<(), StoreError> {
        let k = format!("claim#{key}");
        self.write(|kv, _| {
            let record = ClaimRecord {
                status: "COMPLETED".into(),
                expires_at: now_unix() + ttl_secs as i64,
                lease_until_ms: 0,
                outcome: Some(outcome.to_owned()),
            };
            put_json(kv, &k, &record)
        })
        .await
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let k = format!("claim#{key}");
        self.write(|kv, _| {
            kv.remove(k.as_str()).map_err(|e| db_err("remove", e))?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl SyncStateStore for EmbeddedStore {
    async fn get_state(&self, scope: &str) -> Result<Option<SyncState>, StoreError> {
        self.read(&format!("state#{scope}"))
    }

    async fn put_state(&self, scope: &str, state: &SyncState) -> Result<(), StoreError> {
        let k = format!("state#{scope}");
        self.write(|kv, _| put_json(kv, &k, state)).await
    }

    fn committer(&self) -> Option<&dyn CommitStore> {
        Some(self)
    }
}

#[async_trait]
impl CommitStore for EmbeddedStore {
    async fn commit(&self, writes: &[StoreWrite]) -> Result<(), StoreError> {
        if writes.len() > MAX_COMMIT_WRITES {
            return Err(StoreError::Invalid(format!(
                "a commit takes at most {MAX_COMMIT_WRITES} writes, not {}",
                writes.len()
            )));
        }
        // One write transaction: redb applies all of it or, on any error, none.
        self.write(|kv, _| {
            for write in writes {
                match write {
                    StoreWrite::State { scope, state } => {
                        put_json(kv, &format!("state#{scope}"), state)?;
                    }
                    StoreWrite::Echo {
                        target,
                        hash,
                        ttl_secs,
                    } => put_json(
                        kv,
                        &format!("echo#{target}#{hash}"),
                        &EchoRecord {
                            expires_at: now_unix() + *ttl_secs as i64,
                        },
                    )?,
                    StoreWrite::Release { key } => {
                        kv.remove(format!("claim#{key}").as_str())
                            .map_err(|e| db_err("remove", e))?;
                    }
                }
            }
            Ok(())
        })
        .await
    }
}

#[derive(Serialize, Deserialize)]
struct StoredEvent {
    #[serde(flatten)]
    meta: EventRecord,
    /// Base64 text: a JSON array of numbers would triple the stored size.
    #[serde(with = "base64_bytes")]
    body_gz: Vec<u8>,
    expires_at: i64,
    /// The hourly counts record this event is counted in ([`counts_key`]); absent for events
    /// recorded before counts were kept, or never counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    counted_in: Option<String>,
    /// Its entry in the list of events no consumer took yet ([`unsent_key`]), while it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unsent: Option<String>,
}

/// The kv key listing an unsent event of `stage` ([`EventLog::unsent`]) as of `at_ms`; its
/// value is the dedupe key.
fn unsent_key(stage: &str, at_ms: i64, dedupe_key: &str) -> String {
    format!("unsent#{stage}#{at_ms:013}#{dedupe_key}")
}

/// The key of an event's entry in the entity index.
fn entity_index_key(entity: &str, received_ms: i64, dedupe_key: &str) -> String {
    format!("{entity}\u{1}{received_ms:013}\u{1}{dedupe_key}")
}

/// An hour's [`OutcomeCounts`] of one lane.
#[derive(Serialize, Deserialize)]
struct StoredCounts {
    counts: std::collections::BTreeMap<String, i64>,
    expires_at: i64,
}

fn counts_key(lane: &str, hour_ms: i64) -> String {
    format!("counts#{lane}#{hour_ms:013}")
}

/// Adds `delta` to each named outcome of the counts record `key`.
fn add_counts(
    kv: &mut redb::Table<&str, &[u8]>,
    key: &str,
    hour_ms: i64,
    deltas: &[(&str, i64)],
) -> Result<(), StoreError> {
    let mut stored = get_json::<StoredCounts>(kv, key)?.unwrap_or(StoredCounts {
        counts: Default::default(),
        expires_at: hour_ms / 1000 + COUNTS_TTL_SECS as i64,
    });
    for (outcome, delta) in deltas {
        *stored.counts.entry((*outcome).to_owned()).or_default() += delta;
    }
    put_json(kv, key, &stored)
}

fn hour_of_key(key: &str) -> i64 {
    key.rsplit('#')
        .next()
        .and_then(|h| h.parse().ok())
        .unwrap_or_default()
}

/// A queued message's tries ([`EventLog::count_attempt`]).
#[derive(Serialize, Deserialize)]
struct AttemptCount {
    attempts: u32,
    expires_at: i64,
}

fn event_key(dedupe_key: &str) -> String {
    format!("event#{dedupe_key}")
}

fn load_event(kv_value: StoredEvent) -> Result<EventRecord, StoreError> {
    let mut record = kv_value.meta;
    record.raw_body = decompress(&kv_value.body_gz)?;
    Ok(record)
}

#[async_trait]
impl EventLog for EmbeddedStore {
    async fn record(&self, event: &EventRecord, ttl_secs: u64) -> Result<(), StoreError> {
        let k = event_key(&event.dedupe_key);
        self.write(|kv, idx| {
            if let Some(mut existing) = get_json::<StoredEvent>(kv, &k)? {
                existing.meta.deliveries += 1;
                return put_json(kv, &k, &existing);
            }
            let mut meta = event.clone();
            meta.raw_body = String::new();
            meta.deliveries = meta.deliveries.max(1);
            meta.history.truncate(MAX_HISTORY);
            let counted_in = counts_lane(event).map(|lane| {
                let hour = hour_of(event.received_ms);
                (counts_key(&lane, hour), hour)
            });
            let stored = StoredEvent {
                body_gz: compress(&event.raw_body),
                meta,
                expires_at: now_unix() + ttl_secs as i64,
                counted_in: counted_in.as_ref().map(|(key, _)| key.clone()),
                unsent: None,
            };
            put_json(kv, &k, &stored)?;
            if let Some((key, hour)) = &counted_in {
                add_counts(
                    kv,
                    key,
                    *hour,
                    &[(RECEIVED, 1), (event.outcome.as_str(), 1)],
                )?;
            }
            if let Some(entity) = &event.entity {
                let ik = entity_index_key(entity, event.received_ms, &event.dedupe_key);
                idx.insert(ik.as_str(), event.dedupe_key.as_str())
                    .map_err(|e| db_err("index", e))?;
            }
            Ok(())
        })
        .await
    }

    async fn accept(&self, event: &EventRecord, ttl_secs: u64) -> Result<Acceptance, StoreError> {
        let k = event_key(&event.dedupe_key);
        self.write(|kv, idx| {
            if let Some(existing) = get_json::<StoredEvent>(kv, &k)? {
                if existing.expires_at >= now_unix() {
                    return load_event(existing).map(|r| Acceptance::Repeat(Box::new(r)));
                }
                // Expired, not yet swept away: its index entries go with it.
                if let Some(entity) = &existing.meta.entity {
                    let ik = entity_index_key(
                        entity,
                        existing.meta.received_ms,
                        &existing.meta.dedupe_key,
                    );
                    idx.remove(ik.as_str()).map_err(|e| db_err("unindex", e))?;
                }
                if let Some(old) = &existing.unsent {
                    kv.remove(old.as_str()).map_err(|e| db_err("remove", e))?;
                }
            }
            let mut meta = event.clone();
            meta.raw_body = String::new();
            meta.deliveries = meta.deliveries.max(1);
            meta.history.truncate(MAX_HISTORY);
            let unsent = event
                .stage
                .as_deref()
                .filter(|_| is_unsent(&event.outcome))
                .map(|stage| unsent_key(stage, event.received_ms, &event.dedupe_key));
            let stored = StoredEvent {
                body_gz: compress(&event.raw_body),
                meta,
                expires_at: now_unix() + ttl_secs as i64,
                counted_in: counts_lane(event)
                    .map(|lane| counts_key(&lane, hour_of(event.received_ms))),
                unsent: unsent.clone(),
            };
            put_json(kv, &k, &stored)?;
            if let Some(unsent) = &unsent {
                kv.insert(unsent.as_str(), event.dedupe_key.as_bytes())
                    .map_err(|e| db_err("insert", e))?;
            }
            if let Some(entity) = &event.entity {
                let ik = entity_index_key(entity, event.received_ms, &event.dedupe_key);
                idx.insert(ik.as_str(), event.dedupe_key.as_str())
                    .map_err(|e| db_err("index", e))?;
            }
            Ok(Acceptance::New)
        })
        .await
    }

    async fn tally(&self, event: &EventRecord, repeat: bool) -> Result<(), StoreError> {
        let k = event_key(&event.dedupe_key);
        self.write(|kv, _| {
            if repeat {
                if let Some(mut existing) = get_json::<StoredEvent>(kv, &k)? {
                    existing.meta.deliveries += 1;
                    put_json(kv, &k, &existing)?;
                }
                return Ok(());
            }
            if let Some(lane) = counts_lane(event) {
                let hour = hour_of(event.received_ms);
                add_counts(
                    kv,
                    &counts_key(&lane, hour),
                    hour,
                    &[(RECEIVED, 1), (event.outcome.as_str(), 1)],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn unsent(
        &self,
        stage: &str,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let keys: Vec<String> = {
            let tx = self.db.begin_read().map_err(|e| db_err("begin read", e))?;
            let kv = tx.open_table(KV).map_err(|e| db_err("open kv", e))?;
            let start = format!("unsent#{stage}#");
            let end = format!("unsent#{stage}#{before_ms:013}");
            let mut keys = Vec::new();
            for item in kv
                .range(start.as_str()..end.as_str())
                .map_err(|e| db_err("range", e))?
            {
                if keys.len() >= limit {
                    break;
                }
                let (_, v) = item.map_err(|e| db_err("range item", e))?;
                keys.push(String::from_utf8_lossy(v.value()).into_owned());
            }
            keys
        };
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(e) = self.get(&k).await?
                && is_unsent(&e.outcome)
            {
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn set_outcome(
        &self,
        dedupe_key: &str,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let k = event_key(dedupe_key);
        self.write(|kv, _| {
            let Some(mut existing) = get_json::<StoredEvent>(kv, &k)? else {
                return Err(StoreError::Invalid(format!(
                    "no event {dedupe_key} in the log"
                )));
            };
            if let Some(key) = &existing.counted_in
                && existing.meta.outcome != outcome
            {
                let deltas = [(existing.meta.outcome.as_str(), -1), (outcome, 1)];
                add_counts(kv, key, hour_of_key(key), &deltas)?;
            }
            if let Some(old) = existing.unsent.take() {
                kv.remove(old.as_str()).map_err(|e| db_err("remove", e))?;
                if is_unsent(outcome)
                    && let Some(stage) = &existing.meta.stage
                {
                    // Still unsent (a re-send): listed again as of now.
                    let again = unsent_key(stage, now_millis(), dedupe_key);
                    kv.insert(again.as_str(), dedupe_key.as_bytes())
                        .map_err(|e| db_err("insert", e))?;
                    existing.unsent = Some(again);
                }
            }
            existing.meta.outcome = outcome.to_owned();
            existing.meta.detail = detail.map(str::to_owned);
            if existing.meta.history.len() < MAX_HISTORY {
                existing
                    .meta
                    .history
                    .push(OutcomeEntry::new(now_rfc3339(), outcome, detail));
            }
            if matches!(
                outcome,
                "retrying" | "dead_lettered" | "delivered" | "unchanged" | "echo" | "linked"
            ) {
                existing.meta.attempts += 1;
            }
            put_json(kv, &k, &existing)
        })
        .await
    }

    async fn get(&self, dedupe_key: &str) -> Result<Option<EventRecord>, StoreError> {
        match self.read::<StoredEvent>(&event_key(dedupe_key))? {
            Some(stored) if stored.expires_at >= now_unix() => load_event(stored).map(Some),
            _ => Ok(None),
        }
    }

    async fn for_entity(&self, entity: &str, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let keys: Vec<String> = {
            let tx = self.db.begin_read().map_err(|e| db_err("begin read", e))?;
            let idx = tx
                .open_table(EVENTS_BY_ENTITY)
                .map_err(|e| db_err("open index", e))?;
            let start = format!("{entity}\u{1}");
            let end = format!("{entity}\u{2}");
            let range = idx
                .range(start.as_str()..end.as_str())
                .map_err(|e| db_err("range", e))?;
            let mut keys = Vec::new();
            for item in range.rev() {
                if keys.len() >= limit {
                    break;
                }
                let (_, v) = item.map_err(|e| db_err("range item", e))?;
                keys.push(v.value().to_owned());
            }
            keys
        };
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(e) = self.get(&k).await? {
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn outcome_counts(
        &self,
        lane: &str,
        since_ms: i64,
    ) -> Result<Vec<OutcomeCounts>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| db_err("begin read", e))?;
        let kv = tx.open_table(KV).map_err(|e| db_err("open kv", e))?;
        let start = counts_key(lane, hour_of(since_ms));
        let end = format!("counts#{lane}$");
        let mut out = Vec::new();
        for item in kv
            .range(start.as_str()..end.as_str())
            .map_err(|e| db_err("range", e))?
        {
            let (k, v) = item.map_err(|e| db_err("range item", e))?;
            let stored: StoredCounts = serde_json::from_slice(v.value()).map_err(|e| {
                StoreError::Invalid(format!("record {} does not parse: {e}", k.value()))
            })?;
            if stored.expires_at < now_unix() {
                continue;
            }
            out.push(OutcomeCounts {
                lane: lane.to_owned(),
                hour_ms: hour_of_key(k.value()),
                counts: stored.counts,
            });
        }
        Ok(out)
    }

    async fn count_attempt(&self, message_key: &str, ttl_secs: u64) -> Result<u32, StoreError> {
        let k = format!("attempts#{message_key}");
        self.write(|kv, _| {
            let attempts = get_json::<AttemptCount>(kv, &k)?.map_or(0, |c| c.attempts) + 1;
            let count = AttemptCount {
                attempts,
                expires_at: now_unix().saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX)),
            };
            put_json(kv, &k, &count)?;
            Ok(attempts)
        })
        .await
    }
}

#[derive(Serialize, Deserialize)]
struct EchoRecord {
    expires_at: i64,
}

#[async_trait]
impl super::EchoStore for EmbeddedStore {
    async fn record_write(
        &self,
        target: &str,
        hash: &str,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        let k = format!("echo#{target}#{hash}");
        self.write(|kv, _| {
            put_json(
                kv,
                &k,
                &EchoRecord {
                    expires_at: now_unix() + ttl_secs as i64,
                },
            )
        })
        .await
    }

    async fn is_echo(&self, target: &str, hash: &str) -> Result<bool, StoreError> {
        let record: Option<EchoRecord> = self.read(&format!("echo#{target}#{hash}"))?;
        Ok(record.is_some_and(|r| r.expires_at >= now_unix()))
    }
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clearing_entity_locks_frees_them_and_keeps_every_other_claim() {
        let store = EmbeddedStore::in_memory().expect("store");
        assert_eq!(
            store.claim("lock#project#d1", 60, 60).await.unwrap(),
            Claim::Acquired
        );
        assert_eq!(
            store.claim("webhook#k1", 60, 60).await.unwrap(),
            Claim::Acquired
        );
        assert_eq!(store.clear_entity_locks().unwrap(), 1);
        assert_eq!(
            store.claim("lock#project#d1", 60, 60).await.unwrap(),
            Claim::Acquired
        );
        assert_eq!(
            store.claim("webhook#k1", 60, 60).await.unwrap(),
            Claim::InProgress
        );
    }
}
