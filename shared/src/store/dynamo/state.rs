//! Records read by key: the last-synced state of a scope, and the echo fingerprints of our
//! own writes.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoStore;
use super::item::{ECHO_SK, STATE_SK, echo_pk, get_n, key_of, n, need_s, s, state_pk, unavailable};
use crate::store::{EchoStore, StoreError, SyncState, SyncStateStore};
use crate::timefmt::now_unix;

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

#[async_trait]
impl EchoStore for DynamoStore {
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
