//! DynamoDB adapters: every store port over ONE table (`pk`/`sk` strings, TTL attribute
//! `expires_at`, GSI `gsi1` on `gsi1pk`/`gsi1sk` projecting ALL), as `template.yaml` creates it.
//! Same semantics as the embedded adapter, proven by `tests/store_contract.rs`.
//!
//! Item layout (key naming shared with [`super::embedded`]):
//!
//! | record | pk | sk | attributes |
//! |---|---|---|---|
//! | xref pointer | `xref#{kind}#{form}:{value}` | `ptr` | `entity` (entity key), `updated_at` |
//! | entity | `entity#{kind}#{key}` | `entity` | `ids` (SS), `crm_id`, `updated_at` |
//! | claim | `claim#{key}` | `claim` | `status`, `expires_at`, `lease_until_ms`, `outcome` |
//! | sync state | `state#{scope}` | `state` | `hash`, `data` (JSON text), `updated_at` |
//! | event | `event#{dedupe_key}` | `event` | the record's fields, `body_gz` (B), `expires_at`, `gsi1pk`/`gsi1sk` |
//! | attempt count | `attempts#{message_key}` | `attempts` | `attempts` (N), `expires_at` |
//! | outcome counts | `counts#{lane}#{hour_ms:013}` | `counts` | `n_<outcome>` (N) each, `expires_at`, `gsi1pk` = `counts#{lane}`, `gsi1sk` = `{hour_ms:013}` |
//!
//! An event's `history` is a list of `{at, outcome, detail}` maps; `counted_in` names the
//! counts item it is counted in (`set_outcome` reads it back with `ReturnValues=ALL_OLD` and moves
//! the event's count from its old outcome to the new one there).
//!
//! `link` writes an entity's new pointers and its record in one `TransactWriteItems` (pointers
//! conditional on `attribute_not_exists`); a cancelled transaction means another writer linked
//! one of the ids meanwhile, so it reads again and joins that entity. Like the embedded adapter's
//! serialised write, concurrent links of overlapping ids therefore never split an entity.
//!
//! Every SDK or network failure is [`StoreError::Unavailable`]; a failed lookup is never "not
//! found". TTL deletion is lazy, so reads filter on `expires_at` themselves.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::builders::UpdateBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, TransactWriteItem, Update,
};

use super::{
    COUNTS_TTL_SECS, Claim, ClaimStore, EntityKind, EntityLink, EventLog, EventRecord, IdForm,
    IdRef, MAX_HISTORY, OutcomeCounts, OutcomeEntry, RECEIVED, StoreError, SyncState,
    SyncStateStore, XrefStore, compress, counts_lane, decompress, hour_of,
};
use crate::timefmt::{now_millis, now_rfc3339, now_unix};

type Item = HashMap<String, AttributeValue>;

/// The GSI serving "events of an entity, newest first".
pub const GSI1: &str = "gsi1";

const POINTER_SK: &str = "ptr";
const ENTITY_SK: &str = "entity";
const CLAIM_SK: &str = "claim";
const STATE_SK: &str = "state";
const EVENT_SK: &str = "event";
const ATTEMPTS_SK: &str = "attempts";
const COUNTS_SK: &str = "counts";
/// Prefix of the per-outcome number attributes of a counts item.
const COUNT_ATTR: &str = "n_";

/// `link` attempts before giving up with [`StoreError::Conflict`]. A lost race is followed by
/// fresh reads, which find the winner's entity, so two attempts are the norm under contention.
const LINK_ATTEMPTS: u32 = 6;

const IN_PROGRESS: &str = "INPROGRESS";
const COMPLETED: &str = "COMPLETED";

/// Outcomes that count as one more processing attempt (same list as the embedded adapter).
const ATTEMPT_OUTCOMES: [&str; 6] = [
    "retrying",
    "dead_lettered",
    "delivered",
    "unchanged",
    "echo",
    "linked",
];

/// Every store port over one DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

// ----- keys ---------------------------------------------------------------------------------------

fn pointer_pk(kind: EntityKind, id: &IdRef) -> String {
    format!("xref#{}#{}", kind.as_str(), id.key())
}

fn entity_prefix(kind: EntityKind) -> String {
    format!("entity#{}#", kind.as_str())
}

fn entity_pk(kind: EntityKind, key: &str) -> String {
    format!("{}{key}", entity_prefix(kind))
}

fn claim_pk(key: &str) -> String {
    format!("claim#{key}")
}

fn state_pk(scope: &str) -> String {
    format!("state#{scope}")
}

fn event_pk(dedupe_key: &str) -> String {
    format!("event#{dedupe_key}")
}

fn attempts_pk(message_key: &str) -> String {
    format!("attempts#{message_key}")
}

// ----- attribute values ---------------------------------------------------------------------------

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key_of(pk: impl Into<String>, sk: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

fn get_n<T: FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn need_s(item: &Item, name: &str) -> Result<String, StoreError> {
    get_s(item, name)
        .map(str::to_owned)
        .ok_or_else(|| malformed(item, name))
}

fn need_n<T: FromStr>(item: &Item, name: &str) -> Result<T, StoreError> {
    get_n(item, name).ok_or_else(|| malformed(item, name))
}

fn malformed(item: &Item, name: &str) -> StoreError {
    let pk = get_s(item, "pk").unwrap_or("?");
    StoreError::Invalid(format!("item {pk} lacks a valid `{name}` attribute"))
}

/// `now + secs`, saturating (a TTL of `u64::MAX` means "never").
fn after_secs(now: i64, secs: u64) -> i64 {
    now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX))
}

fn unavailable(
    context: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::unavailable(context, e)
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Invalid(format!("DynamoDB request does not build: {e}"))
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Strongly consistent GetItem.
    async fn get_item(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(format!("get {pk}"), e))?;
        Ok(out.item)
    }

    /// The entity key an id points to.
    async fn pointer(&self, kind: EntityKind, id: &IdRef) -> Result<Option<String>, StoreError> {
        let pk = pointer_pk(kind, id);
        match self.get_item(&pk, POINTER_SK).await? {
            Some(item) => need_s(&item, "entity").map(Some),
            None => Ok(None),
        }
    }

    /// Creates the pointer `id -> key` unless the id already points somewhere (first writer
    /// wins). Returns whether the id now points to `key`.
    async fn put_pointer(
        &self,
        kind: EntityKind,
        id: &IdRef,
        key: &str,
    ) -> Result<bool, StoreError> {
        let pk = pointer_pk(kind, id);
        let mut item = key_of(pk.as_str(), POINTER_SK);
        item.insert("entity".into(), s(key));
        item.insert("updated_at".into(), s(now_rfc3339()));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let existing = match put {
            Ok(_) => return Ok(true),
            Err(e) => match e.into_service_error() {
                PutItemError::ConditionalCheckFailedException(ccf) => ccf.item,
                other => return Err(unavailable(format!("put {pk}"), other)),
            },
        };
        let owner = match existing {
            Some(item) => Some(need_s(&item, "entity")?),
            None => self.pointer(kind, id).await?,
        };
        Ok(owner.as_deref() == Some(key))
    }

    /// One attempt at `link`: reads every pointer, then writes the missing ones together with the
    /// entity record in one transaction, so concurrent links of overlapping ids cannot split an
    /// entity. `None` means another writer got in between: read again.
    async fn try_link(
        &self,
        kind: EntityKind,
        ids: &[IdRef],
    ) -> Result<Option<EntityLink>, StoreError> {
        let mut owners: BTreeMap<String, (&IdRef, Option<String>)> = BTreeMap::new();
        for id in ids {
            if let Entry::Vacant(slot) = owners.entry(id.key()) {
                slot.insert((id, self.pointer(kind, id).await?));
            }
        }
        let key = ids
            .iter()
            .find_map(|id| owners.get(&id.key()).and_then(|(_, owner)| owner.clone()))
            .unwrap_or_else(|| ids[0].key());
        // First writer wins: an id already linked to another entity stays where it is.
        let joined: Vec<&IdRef> = owners
            .values()
            .filter(|(_, owner)| owner.as_ref().is_none_or(|o| *o == key))
            .map(|(id, _)| *id)
            .collect();
        let new: Vec<&IdRef> = owners
            .values()
            .filter(|(_, owner)| owner.is_none())
            .map(|(id, _)| *id)
            .collect();
        let entity = EntityUpdate::new(kind, &key, &joined);

        if new.is_empty() {
            let out = entity
                .apply(self.client.update_item().table_name(&self.table))
                .return_values(ReturnValue::AllNew)
                .send()
                .await
                .map_err(|e| unavailable(format!("update {}", entity.pk), e))?;
            return entity_of(kind, &out.attributes.unwrap_or_default()).map(Some);
        }

        let now = now_rfc3339();
        let mut items = Vec::with_capacity(new.len() + 1);
        for id in &new {
            let mut item = key_of(pointer_pk(kind, id), POINTER_SK);
            item.insert("entity".into(), s(key.as_str()));
            item.insert("updated_at".into(), s(now.as_str()));
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(build_err)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let update = entity
            .apply_in_transaction(Update::builder().table_name(&self.table))
            .build()
            .map_err(build_err)?;
        items.push(TransactWriteItem::builder().update(update).build());

        let written = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        if let Err(e) = written {
            return match e.into_service_error() {
                // A pointer written meanwhile (ConditionalCheckFailed) or a concurrent transaction
                // on the same items (TransactionConflict).
                TransactWriteItemsError::TransactionCanceledException(cancelled)
                    if cancelled.cancellation_reasons().iter().any(|r| {
                        matches!(
                            r.code(),
                            Some("ConditionalCheckFailed" | "TransactionConflict")
                        )
                    }) =>
                {
                    Ok(None)
                }
                TransactWriteItemsError::TransactionInProgressException(_) => Ok(None),
                other => Err(unavailable(format!("link {}", entity.pk), other)),
            };
        }
        match self.get_item(&entity.pk, ENTITY_SK).await? {
            Some(item) => entity_of(kind, &item).map(Some),
            None => Ok(None),
        }
    }
}

/// The entity record's part of a `link`: touch `updated_at`, add the ids (a string set: never
/// empty, no duplicates), and set `crm_id` from a CRM id unless it has one. Creates the record.
struct EntityUpdate {
    pk: String,
    expression: String,
    names: HashMap<String, String>,
    values: Item,
}

impl EntityUpdate {
    fn new(kind: EntityKind, key: &str, ids: &[&IdRef]) -> Self {
        let mut names = HashMap::from([("#updated_at".to_owned(), "updated_at".to_owned())]);
        let mut values = HashMap::from([(":now".to_owned(), s(now_rfc3339()))]);
        let mut set = vec!["#updated_at = :now"];
        if let Some(crm) = ids.iter().find(|id| id.form == IdForm::Crm) {
            set.push("#crm_id = if_not_exists(#crm_id, :crm)");
            names.insert("#crm_id".into(), "crm_id".into());
            values.insert(":crm".into(), s(&crm.value));
        }
        let mut expression = format!("SET {}", set.join(", "));
        let keys: BTreeSet<String> = ids.iter().map(|id| id.key()).collect();
        if !keys.is_empty() {
            expression.push_str(" ADD #ids :ids");
            names.insert("#ids".into(), "ids".into());
            values.insert(
                ":ids".into(),
                AttributeValue::Ss(keys.into_iter().collect()),
            );
        }
        Self {
            pk: entity_pk(kind, key),
            expression,
            names,
            values,
        }
    }

    fn apply(&self, update: UpdateItemFluentBuilder) -> UpdateItemFluentBuilder {
        update
            .set_key(Some(key_of(self.pk.as_str(), ENTITY_SK)))
            .update_expression(&self.expression)
            .set_expression_attribute_names(Some(self.names.clone()))
            .set_expression_attribute_values(Some(self.values.clone()))
    }

    fn apply_in_transaction(&self, update: UpdateBuilder) -> UpdateBuilder {
        update
            .set_key(Some(key_of(self.pk.as_str(), ENTITY_SK)))
            .update_expression(&self.expression)
            .set_expression_attribute_names(Some(self.names.clone()))
            .set_expression_attribute_values(Some(self.values.clone()))
    }
}

fn entity_of(kind: EntityKind, item: &Item) -> Result<EntityLink, StoreError> {
    let pk = need_s(item, "pk")?;
    let key = pk.strip_prefix(&entity_prefix(kind)).ok_or_else(|| {
        StoreError::Invalid(format!("item {pk} is not a {} entity", kind.as_str()))
    })?;
    let ids: BTreeSet<String> = match item.get("ids") {
        Some(AttributeValue::Ss(ids)) => ids.iter().cloned().collect(),
        None => BTreeSet::new(),
        Some(_) => return Err(malformed(item, "ids")),
    };
    Ok(EntityLink {
        kind,
        key: key.to_owned(),
        ids,
        crm_id: get_s(item, "crm_id").map(str::to_owned),
    })
}

#[async_trait]
impl XrefStore for DynamoStore {
    async fn resolve(
        &self,
        kind: EntityKind,
        id: &IdRef,
    ) -> Result<Option<EntityLink>, StoreError> {
        let Some(key) = self.pointer(kind, id).await? else {
            return Ok(None);
        };
        match self.get_item(&entity_pk(kind, &key), ENTITY_SK).await? {
            Some(item) => entity_of(kind, &item).map(Some),
            None => Ok(None),
        }
    }

    async fn link(&self, kind: EntityKind, ids: &[IdRef]) -> Result<EntityLink, StoreError> {
        if ids.is_empty() {
            return Err(StoreError::Invalid("link needs at least one id".into()));
        }
        for attempt in 1..=LINK_ATTEMPTS {
            if let Some(link) = self.try_link(kind, ids).await? {
                return Ok(link);
            }
            // Jittered, so racing writers do not collide again in lockstep.
            let backoff = fastrand::u64(10..=40) * u64::from(attempt);
            tokio::time::sleep(Duration::from_millis(backoff)).await;
        }
        Err(StoreError::Conflict(format!(
            "link of {} ({} ids)",
            ids[0],
            ids.len()
        )))
    }

    async fn set_crm_id(
        &self,
        kind: EntityKind,
        key: &str,
        crm_id: &str,
    ) -> Result<EntityLink, StoreError> {
        let crm = IdRef::new(IdForm::Crm, crm_id);
        let pk = entity_pk(kind, key);
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(pk.as_str(), ENTITY_SK)))
            .update_expression("SET #crm_id = :crm, #updated_at = :now ADD #ids :ids")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#crm_id", "crm_id")
            .expression_attribute_names("#updated_at", "updated_at")
            .expression_attribute_names("#ids", "ids")
            .expression_attribute_values(":crm", s(crm_id))
            .expression_attribute_values(":now", s(now_rfc3339()))
            .expression_attribute_values(":ids", AttributeValue::Ss(vec![crm.key()]))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let out = match update {
            Ok(out) => out,
            Err(e) => match e.into_service_error() {
                UpdateItemError::ConditionalCheckFailedException(_) => {
                    return Err(StoreError::Invalid(format!(
                        "no entity {key} to attach a CRM id to"
                    )));
                }
                other => return Err(unavailable(format!("update {pk}"), other)),
            },
        };
        // First writer wins: a CRM id already linked elsewhere keeps its pointer.
        self.put_pointer(kind, &crm, key).await?;
        entity_of(kind, &out.attributes.unwrap_or_default())
    }
}

fn claim_of(item: &Item) -> Claim {
    if get_s(item, "status") == Some(COMPLETED) {
        Claim::Completed {
            outcome: get_s(item, "outcome").unwrap_or_default().to_owned(),
        }
    } else {
        Claim::InProgress
    }
}

#[async_trait]
impl ClaimStore for DynamoStore {
    async fn claim(&self, key: &str, lease_secs: u64, ttl_secs: u64) -> Result<Claim, StoreError> {
        let pk = claim_pk(key);
        // A record that vanishes between the failed put and the read is retried.
        for _ in 0..3 {
            let (now, now_ms) = (now_unix(), now_millis());
            let mut item = key_of(pk.as_str(), CLAIM_SK);
            item.insert("status".into(), s(IN_PROGRESS));
            item.insert("expires_at".into(), n(after_secs(now, ttl_secs)));
            item.insert(
                "lease_until_ms".into(),
                n(now_ms.saturating_add(after_secs(0, lease_secs).saturating_mul(1000))),
            );
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(
                    "attribute_not_exists(pk) OR #expires_at < :now OR (#status = :inprogress AND #lease < :now_ms)",
                )
                .expression_attribute_names("#expires_at", "expires_at")
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#lease", "lease_until_ms")
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":now_ms", n(now_ms))
                .expression_attribute_values(":inprogress", s(IN_PROGRESS))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            let existing = match put {
                Ok(_) => return Ok(Claim::Acquired),
                Err(e) => match e.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(ccf) => ccf.item,
                    other => return Err(unavailable(format!("claim {pk}"), other)),
                },
            };
            let existing = match existing {
                Some(item) => Some(item),
                None => self.get_item(&pk, CLAIM_SK).await?,
            };
            if let Some(item) = existing {
                return Ok(claim_of(&item));
            }
        }
        Err(StoreError::Conflict(pk))
    }

    async fn complete(&self, key: &str, outcome: &str, ttl_secs: u64) -> Result<(), StoreError> {
        let pk = claim_pk(key);
        let mut item = key_of(pk.as_str(), CLAIM_SK);
        item.insert("status".into(), s(COMPLETED));
        item.insert("expires_at".into(), n(after_secs(now_unix(), ttl_secs)));
        item.insert("lease_until_ms".into(), n(0));
        item.insert("outcome".into(), s(outcome));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| unavailable(format!("complete {pk}"), e))?;
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let pk = claim_pk(key);
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_of(pk.as_str(), CLAIM_SK)))
            .send()
            .await
            .map_err(|e| unavailable(format!("release {pk}"), e))?;
        Ok(())
    }
}

#[async_trait]
impl SyncStateStore for DynamoStore {
    async fn get_state(&self, scope: &str) -> Result<Option<SyncState>, StoreError> {
        let pk = state_pk(scope);
        let Some(item) = self.get_item(&pk, STATE_SK).await? else {
            return Ok(None);
        };
        let data = serde_json::from_str(&need_s(&item, "data")?).map_err(|e| {
            StoreError::Invalid(format!("item {pk} holds data that does not parse: {e}"))
        })?;
        Ok(Some(SyncState {
            hash: need_s(&item, "hash")?,
            data,
            updated_at: need_s(&item, "updated_at")?,
            // Absent on items written before event ids had a sequence.
            seq: item
                .get("seq")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        }))
    }

    async fn put_state(&self, scope: &str, state: &SyncState) -> Result<(), StoreError> {
        let pk = state_pk(scope);
        let data =
            serde_json::to_string(&state.data).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut item = key_of(pk.as_str(), STATE_SK);
        item.insert("hash".into(), s(&state.hash));
        item.insert("data".into(), s(data));
        item.insert("updated_at".into(), s(&state.updated_at));
        item.insert("seq".into(), AttributeValue::N(state.seq.to_string()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| unavailable(format!("put {pk}"), e))?;
        Ok(())
    }
}

fn event_item(event: &EventRecord, ttl_secs: u64) -> Item {
    let mut item = key_of(event_pk(&event.dedupe_key), EVENT_SK);
    let mut put = |name: &str, value: AttributeValue| {
        item.insert(name.to_owned(), value);
    };
    put("dedupe_key", s(&event.dedupe_key));
    put("event", s(&event.event));
    put("received_at", s(&event.received_at));
    put("received_ms", n(event.received_ms));
    put("outcome", s(&event.outcome));
    put("deliveries", n(event.deliveries.max(1)));
    put("attempts", n(event.attempts));
    put(
        "body_gz",
        AttributeValue::B(Blob::new(compress(&event.raw_body))),
    );
    put("expires_at", n(after_secs(now_unix(), ttl_secs)));
    if let Some(stage) = &event.stage {
        put("stage", s(stage));
    }
    if let Some(detail) = &event.detail {
        put("detail", s(detail));
    }
    if let Some(entity) = &event.entity {
        put("entity", s(entity));
        put("gsi1pk", s(format!("entity#{entity}")));
        put(
            "gsi1sk",
            s(format!("{:013}#{}", event.received_ms, event.dedupe_key)),
        );
    }
    put(
        "history",
        AttributeValue::L(
            event
                .history
                .iter()
                .take(MAX_HISTORY)
                .map(history_entry)
                .collect(),
        ),
    );
    if let Some((pk, _)) = counts_of(event) {
        put("counted_in", s(pk));
    }
    item
}

fn history_entry(entry: &OutcomeEntry) -> AttributeValue {
    let mut map = HashMap::from([
        ("at".to_owned(), s(&entry.at)),
        ("outcome".to_owned(), s(&entry.outcome)),
    ]);
    if let Some(detail) = &entry.detail {
        map.insert("detail".to_owned(), s(detail));
    }
    AttributeValue::M(map)
}

fn history_of(item: &Item) -> Result<Vec<OutcomeEntry>, StoreError> {
    let Some(list) = item.get("history") else {
        return Ok(Vec::new());
    };
    let list = list.as_l().map_err(|_| malformed(item, "history"))?;
    list.iter()
        .map(|entry| {
            let map = entry.as_m().map_err(|_| malformed(item, "history"))?;
            Ok(OutcomeEntry {
                at: need_s(map, "at").map_err(|_| malformed(item, "history"))?,
                outcome: need_s(map, "outcome").map_err(|_| malformed(item, "history"))?,
                detail: get_s(map, "detail").map(str::to_owned),
            })
        })
        .collect()
}

/// The counts item an event is counted in, and its hour.
fn counts_of(event: &EventRecord) -> Option<(String, i64)> {
    let lane = counts_lane(event)?;
    let hour = hour_of(event.received_ms);
    Some((format!("counts#{lane}#{hour:013}"), hour))
}

/// The event in `item`, or `None` when it has expired (TTL deletion lags).
fn event_of(item: &Item) -> Result<Option<EventRecord>, StoreError> {
    if need_n::<i64>(item, "expires_at")? < now_unix() {
        return Ok(None);
    }
    let body = item
        .get("body_gz")
        .and_then(|v| v.as_b().ok())
        .ok_or_else(|| malformed(item, "body_gz"))?;
    let opt = |name: &str| get_s(item, name).map(str::to_owned);
    Ok(Some(EventRecord {
        dedupe_key: need_s(item, "dedupe_key")?,
        event: need_s(item, "event")?,
        stage: opt("stage"),
        entity: opt("entity"),
        received_at: need_s(item, "received_at")?,
        received_ms: need_n(item, "received_ms")?,
        raw_body: decompress(body.as_ref())?,
        outcome: need_s(item, "outcome")?,
        detail: opt("detail"),
        deliveries: need_n(item, "deliveries")?,
        attempts: need_n(item, "attempts")?,
        history: history_of(item)?,
    }))
}

impl DynamoStore {
    /// Adds each delta to its outcome's count in the counts item `pk`. Counts are for the
    /// console's overview: a failure is logged, never the event's failure.
    async fn add_counts(&self, pk: &str, deltas: &[(&str, i64)]) {
        let mut merged: BTreeMap<&str, i64> = BTreeMap::new();
        for (outcome, delta) in deltas {
            *merged.entry(outcome).or_default() += delta;
        }
        merged.retain(|_, d| *d != 0);
        if merged.is_empty() {
            return;
        }
        let (lane, hour) = match pk
            .strip_prefix("counts#")
            .and_then(|rest| rest.rsplit_once('#'))
            .and_then(|(lane, hour)| Some((lane, hour.parse::<i64>().ok()?)))
        {
            Some(parsed) => parsed,
            None => {
                tracing::warn!(pk, "not a counts item key; counts not updated");
                return;
            }
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(pk, COUNTS_SK)))
            .expression_attribute_names("#gp", "gsi1pk")
            .expression_attribute_names("#gs", "gsi1sk")
            .expression_attribute_names("#exp", "expires_at")
            .expression_attribute_values(":gp", s(format!("counts#{lane}")))
            .expression_attribute_values(":gs", s(format!("{hour:013}")))
            .expression_attribute_values(":exp", n(hour / 1000 + COUNTS_TTL_SECS as i64));
        let mut adds = Vec::new();
        for (i, (outcome, delta)) in merged.iter().enumerate() {
            update = update
                .expression_attribute_names(format!("#n{i}"), format!("{COUNT_ATTR}{outcome}"))
                .expression_attribute_values(format!(":n{i}"), n(delta));
            adds.push(format!("#n{i} :n{i}"));
        }
        let expression = format!(
            "SET #gp = :gp, #gs = :gs, #exp = :exp ADD {}",
            adds.join(", ")
        );
        if let Err(e) = update.update_expression(expression).send().await {
            tracing::warn!(error = %unavailable(format!("count outcomes in {pk}"), e), "outcome counts not updated");
        }
    }

    /// Sets an event's outcome (and appends it to its history when `append`, conditional on
    /// the history having room) and returns the item as it was. `Err(None)`: the condition
    /// failed (no such event, or no room when appending).
    async fn update_outcome(
        &self,
        pk: &str,
        outcome: &str,
        detail: Option<&str>,
        append: bool,
    ) -> Result<Item, Option<StoreError>> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(pk, EVENT_SK)))
            .expression_attribute_names("#outcome", "outcome")
            .expression_attribute_names("#detail", "detail")
            .expression_attribute_values(":outcome", s(outcome))
            .return_values(ReturnValue::AllOld);
        let mut set = vec!["#outcome = :outcome".to_owned()];
        let mut expression = String::new();
        if let Some(detail) = detail {
            update = update.expression_attribute_values(":detail", s(detail));
            set.push("#detail = :detail".to_owned());
        }
        if append {
            let entry = OutcomeEntry::new(now_rfc3339(), outcome, detail);
            update = update
                .expression_attribute_names("#history", "history")
                .expression_attribute_values(":entry", AttributeValue::L(vec![history_entry(&entry)]))
                .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
                .expression_attribute_values(":max", n(MAX_HISTORY))
                .condition_expression(
                    "attribute_exists(pk) AND (attribute_not_exists(#history) OR size(#history) < :max)",
                );
            set.push("#history = list_append(if_not_exists(#history, :empty), :entry)".to_owned());
        } else {
            update = update.condition_expression("attribute_exists(pk)");
        }
        expression.push_str(&format!("SET {}", set.join(", ")));
        if detail.is_none() {
            expression.push_str(" REMOVE #detail");
        }
        if ATTEMPT_OUTCOMES.contains(&outcome) {
            expression.push_str(" ADD #attempts :one");
            update = update
                .expression_attribute_names("#attempts", "attempts")
                .expression_attribute_values(":one", n(1));
        }
        match update.update_expression(expression).send().await {
            Ok(out) => Ok(out.attributes.unwrap_or_default()),
            Err(e) => match e.into_service_error() {
                UpdateItemError::ConditionalCheckFailedException(_) => Err(None),
                other => Err(Some(unavailable(format!("set outcome of {pk}"), other))),
            },
        }
    }
}

#[async_trait]
impl EventLog for DynamoStore {
    async fn record(&self, event: &EventRecord, ttl_secs: u64) -> Result<(), StoreError> {
        let pk = event_pk(&event.dedupe_key);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(event_item(event, ttl_secs)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => {
                if let Some((counts, _)) = counts_of(event) {
                    self.add_counts(&counts, &[(RECEIVED, 1), (event.outcome.as_str(), 1)])
                        .await;
                }
                return Ok(());
            }
            Err(e) => match e.into_service_error() {
                PutItemError::ConditionalCheckFailedException(_) => {}
                other => return Err(unavailable(format!("put {pk}"), other)),
            },
        }
        // A repeat delivery: count it, keep the first record.
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(pk.as_str(), EVENT_SK)))
            .update_expression("ADD #deliveries :one")
            .expression_attribute_names("#deliveries", "deliveries")
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| unavailable(format!("count delivery of {pk}"), e))?;
        Ok(())
    }

    async fn set_outcome(
        &self,
        dedupe_key: &str,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let pk = event_pk(dedupe_key);
        // With one more history entry while the history has room; past it, without.
        let old = match self.update_outcome(&pk, outcome, detail, true).await {
            Err(None) => self.update_outcome(&pk, outcome, detail, false).await,
            other => other,
        };
        let old = match old {
            Ok(old) => old,
            Err(None) => {
                return Err(StoreError::Invalid(format!(
                    "no event {dedupe_key} in the log"
                )));
            }
            Err(Some(e)) => return Err(e),
        };
        if let (Some(counts), Some(previous)) = (get_s(&old, "counted_in"), get_s(&old, "outcome"))
            && previous != outcome
        {
            self.add_counts(counts, &[(previous, -1), (outcome, 1)])
                .await;
        }
        Ok(())
    }

    async fn get(&self, dedupe_key: &str) -> Result<Option<EventRecord>, StoreError> {
        match self.get_item(&event_pk(dedupe_key), EVENT_SK).await? {
            Some(item) => event_of(&item),
            None => Ok(None),
        }
    }

    async fn for_entity(&self, entity: &str, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let gsi1pk = format!("entity#{entity}");
        let mut out = Vec::new();
        let mut remaining = limit;
        let mut start: Option<Item> = None;
        // A 1 MB page may hold fewer than `limit` events (bodies are large), so page until done.
        while remaining > 0 {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI1)
                .key_condition_expression("#g = :g")
                .expression_attribute_names("#g", "gsi1pk")
                .expression_attribute_values(":g", s(gsi1pk.as_str()))
                .scan_index_forward(false)
                .limit(i32::try_from(remaining).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable(format!("query events of {entity}"), e))?;
            remaining = remaining.saturating_sub(page.items().len());
            for item in page.items() {
                if let Some(event) = event_of(item)? {
                    out.push(event);
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn outcome_counts(
        &self,
        lane: &str,
        since_ms: i64,
    ) -> Result<Vec<OutcomeCounts>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI1)
                .key_condition_expression("#g = :g AND #s >= :s")
                .expression_attribute_names("#g", "gsi1pk")
                .expression_attribute_names("#s", "gsi1sk")
                .expression_attribute_values(":g", s(format!("counts#{lane}")))
                .expression_attribute_values(":s", s(format!("{:013}", hour_of(since_ms))))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable(format!("query outcome counts of {lane}"), e))?;
            for item in page.items() {
                if get_n::<i64>(item, "expires_at").is_some_and(|t| t < now_unix()) {
                    continue;
                }
                let hour_ms = get_s(item, "gsi1sk")
                    .and_then(|h| h.parse().ok())
                    .ok_or_else(|| malformed(item, "gsi1sk"))?;
                let counts = item
                    .iter()
                    .filter_map(|(name, value)| {
                        let outcome = name.strip_prefix(COUNT_ATTR)?;
                        Some((outcome.to_owned(), value.as_n().ok()?.parse().ok()?))
                    })
                    .collect();
                out.push(OutcomeCounts {
                    lane: lane.to_owned(),
                    hour_ms,
                    counts,
                });
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn count_attempt(&self, message_key: &str, ttl_secs: u64) -> Result<u32, StoreError> {
        let pk = attempts_pk(message_key);
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(pk.as_str(), ATTEMPTS_SK)))
            .update_expression("ADD #attempts :one SET #expires_at = :expires_at")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_names("#expires_at", "expires_at")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":expires_at", n(after_secs(now_unix(), ttl_secs)))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| unavailable(format!("count an attempt of {pk}"), e))?;
        let item = out.attributes.unwrap_or_default();
        need_n(&item, "attempts")
    }
}

/// Creates the table exactly as `template.yaml` does (on-demand, `pk`/`sk`, `gsi1` projecting
/// ALL, TTL on `expires_at`); an existing table is fine. For tests and the local runner (moto).
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(build_err)
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(build_err)
    };
    let gsi = GlobalSecondaryIndex::builder()
        .index_name(GSI1)
        .key_schema(key("gsi1pk", KeyType::Hash)?)
        .key_schema(key("gsi1sk", KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(build_err)?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .attribute_definitions(attr("gsi1pk")?)
        .attribute_definitions(attr("gsi1sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(gsi)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e) => match e.into_service_error() {
            CreateTableError::ResourceInUseException(_) => {}
            other => return Err(unavailable(format!("create table {table}"), other)),
        },
    }
    wait_active(client, table).await?;

    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| unavailable(format!("describe TTL of {table}"), e))?;
    let enabled = ttl
        .time_to_live_description()
        .and_then(|d| d.attribute_name())
        == Some("expires_at");
    if !enabled {
        let spec = TimeToLiveSpecification::builder()
            .attribute_name("expires_at")
            .enabled(true)
            .build()
            .map_err(build_err)?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| unavailable(format!("enable TTL on {table}"), e))?;
    }
    Ok(())
}

/// Polls until the table is ACTIVE (moto: at once; AWS: seconds).
async fn wait_active(client: &Client, table: &str) -> Result<(), StoreError> {
    for _ in 0..240 {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| unavailable(format!("describe table {table}"), e))?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(StoreError::Invalid(format!(
        "table {table} did not become ACTIVE within 60 s"
    )))
}

// ----- echo fingerprints --------------------------------------------------------------------------

const ECHO_SK: &str = "echo";

fn echo_pk(target: &str, hash: &str) -> String {
    format!("echo#{target}#{hash}")
}

#[async_trait]
impl super::EchoStore for DynamoStore {
    async fn record_write(
        &self,
        target: &str,
        hash: &str,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        let pk = echo_pk(target, hash);
        let mut item = key_of(pk.as_str(), ECHO_SK);
        item.insert("expires_at".into(), n(now_unix() + ttl_secs as i64));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| unavailable(format!("put {pk}"), e))?;
        Ok(())
    }

    async fn is_echo(&self, target: &str, hash: &str) -> Result<bool, StoreError> {
        let pk = echo_pk(target, hash);
        // TTL deletion is lazy (days): expiry is checked here, not trusted to the table.
        Ok(self
            .get_item(&pk, ECHO_SK)
            .await?
            .is_some_and(|item| get_n::<i64>(&item, "expires_at").is_some_and(|e| e >= now_unix())))
    }
}
