//! Idempotency claims: a conditional put that takes a free, expired or lapsed claim.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use super::DynamoStore;
use super::item::{CLAIM_SK, Item, after_secs, claim_pk, get_s, key_of, n, s, unavailable};
use crate::store::{Claim, ClaimStore, StoreError};
use crate::timefmt::{now_millis, now_unix};

const IN_PROGRESS: &str = "INPROGRESS";
const COMPLETED: &str = "COMPLETED";

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
