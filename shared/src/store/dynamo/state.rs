//! Records read by key: the last-synced state of a scope, and the echo fingerprints of our
//! own writes; and [`CommitStore`]: states, fingerprints and claim releases in one
//! `TransactWriteItems`.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};

use super::DynamoStore;
use super::item::{
    CLAIM_SK, ECHO_SK, Item, STATE_SK, build_err, claim_pk, echo_pk, get_n, key_of, n, need_s, s,
    state_pk, unavailable,
};
use crate::store::{
    CommitStore, EchoStore, MAX_COMMIT_WRITES, StoreError, StoreWrite, SyncState, SyncStateStore,
};
use crate::timefmt::now_unix;

/// Commit attempts while a concurrent write to one of its items cancels the transaction.
const COMMIT_ATTEMPTS: u32 = 3;

fn state_item(scope: &str, state: &SyncState) -> Result<Item, StoreError> {
    let data =
        serde_json::to_string(&state.data).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let mut item = key_of(state_pk(scope), STATE_SK);
    item.insert("hash".into(), s(&state.hash));
    item.insert("data".into(), s(data));
    item.insert("updated_at".into(), s(&state.updated_at));
    item.insert("seq".into(), AttributeValue::N(state.seq.to_string()));
    Ok(item)
}

fn echo_item(target: &str, hash: &str, ttl_secs: u64) -> Item {
    let mut item = key_of(echo_pk(target, hash), ECHO_SK);
    item.insert("expires_at".into(), n(now_unix() + ttl_secs as i64));
    item
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
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(state_item(scope, state)?))
            .send()
            .await
            .map_err(|e| unavailable(format!("put {pk}"), e))?;
        Ok(())
    }

    fn committer(&self) -> Option<&dyn CommitStore> {
        Some(self)
    }
}

#[async_trait]
impl EchoStore for DynamoStore {
    async fn record_write(
        &self,
        target: &str,
        hash: &str,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        let pk = echo_pk(target, hash);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(echo_item(target, hash, ttl_secs)))
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

#[async_trait]
impl CommitStore for DynamoStore {
    async fn commit(&self, writes: &[StoreWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        if writes.len() > MAX_COMMIT_WRITES {
            return Err(StoreError::Invalid(format!(
                "a commit takes at most {MAX_COMMIT_WRITES} writes, not {}",
                writes.len()
            )));
        }
        let mut items = Vec::with_capacity(writes.len());
        for write in writes {
            let item = match write {
                StoreWrite::State { scope, state } => TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(state_item(scope, state)?))
                            .build()
                            .map_err(build_err)?,
                    )
                    .build(),
                StoreWrite::Echo {
                    target,
                    hash,
                    ttl_secs,
                } => TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(echo_item(target, hash, *ttl_secs)))
                            .build()
                            .map_err(build_err)?,
                    )
                    .build(),
                StoreWrite::Release { key } => TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(&self.table)
                            .set_key(Some(key_of(claim_pk(key), CLAIM_SK)))
                            .build()
                            .map_err(build_err)?,
                    )
                    .build(),
            };
            items.push(item);
        }
        let what = || format!("commit {} writes", writes.len());
        for attempt in 1..=COMMIT_ATTEMPTS {
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let Err(e) = sent else {
                return Ok(());
            };
            match e.into_service_error() {
                // A concurrent write to one of the items (none of these writes is conditional):
                // nothing was applied; try again shortly.
                TransactWriteItemsError::TransactionCanceledException(cancelled)
                    if attempt < COMMIT_ATTEMPTS
                        && cancelled
                            .cancellation_reasons()
                            .iter()
                            .any(|r| r.code() == Some("TransactionConflict")) => {}
                TransactWriteItemsError::TransactionInProgressException(_)
                    if attempt < COMMIT_ATTEMPTS => {}
                other => return Err(unavailable(what(), other)),
            }
            let backoff = fastrand::u64(10..=40) * u64::from(attempt);
            tokio::time::sleep(Duration::from_millis(backoff)).await;
        }
        Err(StoreError::Conflict(what()))
    }
}
