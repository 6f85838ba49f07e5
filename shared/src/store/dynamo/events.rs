//! The event log: one item per dedupe key (body gzipped), indexed by entity on [`GSI1`], and
//! the per-message attempt counter.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::item::{
    ATTEMPTS_SK, EVENT_SK, Item, after_secs, attempts_pk, event_pk, get_s, key_of, malformed, n,
    need_n, need_s, s, unavailable,
};
use super::{DynamoStore, GSI1};
use crate::store::{EventLog, EventRecord, StoreError, compress, decompress};
use crate::timefmt::now_unix;

/// Outcomes that count as one more processing attempt (same list as the embedded adapter).
const ATTEMPT_OUTCOMES: [&str; 6] = [
    "retrying",
    "dead_lettered",
    "delivered",
    "unchanged",
    "echo",
    "linked",
];

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
    item
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
    }))
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
            Ok(_) => return Ok(()),
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
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(pk.as_str(), EVENT_SK)))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#outcome", "outcome")
            .expression_attribute_names("#detail", "detail")
            .expression_attribute_values(":outcome", s(outcome));
        let mut expression = match detail {
            Some(detail) => {
                update = update.expression_attribute_values(":detail", s(detail));
                "SET #outcome = :outcome, #detail = :detail".to_owned()
            }
            None => "SET #outcome = :outcome REMOVE #detail".to_owned(),
        };
        if ATTEMPT_OUTCOMES.contains(&outcome) {
            expression.push_str(" ADD #attempts :one");
            update = update
                .expression_attribute_names("#attempts", "attempts")
                .expression_attribute_values(":one", n(1));
        }
        match update.update_expression(expression).send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                UpdateItemError::ConditionalCheckFailedException(_) => Err(StoreError::Invalid(
                    format!("no event {dedupe_key} in the log"),
                )),
                other => Err(unavailable(format!("set outcome of {pk}"), other)),
            },
        }
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
