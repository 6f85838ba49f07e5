//! The event log: one item per dedupe key (body gzipped), indexed by entity on [`GSI1`], and
//! the per-message attempt counter.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use std::collections::{BTreeMap, HashMap};

use super::item::{
    ATTEMPTS_SK, EVENT_SK, Item, after_secs, attempts_pk, event_pk, get_n, get_s, key_of,
    malformed, n, need_n, need_s, s, unavailable,
};
use super::{DynamoStore, GSI1, GSI2};
use crate::store::{
    Acceptance, COUNTS_TTL_SECS, EventLog, EventRecord, MAX_HISTORY, OutcomeCounts, OutcomeEntry,
    RECEIVED, StoreError, compress, counts_lane, decompress, hour_of, is_unsent,
};
use crate::timefmt::{now_millis, now_rfc3339, now_unix};

const COUNTS_SK: &str = "counts";
/// Prefix of the per-outcome number attributes of a counts item.
const COUNT_ATTR: &str = "n_";

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

/// The `gsi2sk` of an unsent event ([`GSI2`]) as of `at_ms`.
fn unsent_sk(at_ms: i64, dedupe_key: &str) -> AttributeValue {
    s(format!("{at_ms:013}#{dedupe_key}"))
}

/// The event in `item`, or `None` when it has expired (TTL deletion lags).
fn event_of(item: &Item) -> Result<Option<EventRecord>, StoreError> {
    if need_n::<i64>(item, "expires_at")? < now_unix() {
        return Ok(None);
    }
    record_of(item).map(Some)
}

/// The event in `item`, expired or not.
fn record_of(item: &Item) -> Result<EventRecord, StoreError> {
    let body = item
        .get("body_gz")
        .and_then(|v| v.as_b().ok())
        .ok_or_else(|| malformed(item, "body_gz"))?;
    let opt = |name: &str| get_s(item, name).map(str::to_owned);
    Ok(EventRecord {
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
    })
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
        let mut remove = Vec::new();
        if detail.is_none() {
            remove.push("#detail");
        }
        // The unsent list (GSI2): a re-send lists the event again as of now (only an event
        // accepted with a stage has a `gsi2pk`, so only it is listed); any other outcome
        // takes it off.
        update = update.expression_attribute_names("#g2s", "gsi2sk");
        if is_unsent(outcome) {
            let key = pk.strip_prefix("event#").unwrap_or(pk);
            update = update.expression_attribute_values(":g2s", unsent_sk(now_millis(), key));
            set.push("#g2s = :g2s".to_owned());
            // An event off the list stays off: `#g2s` alone indexes nothing.
        } else {
            update = update.expression_attribute_names("#g2p", "gsi2pk");
            remove.extend(["#g2p", "#g2s"]);
        }
        expression.push_str(&format!("SET {}", set.join(", ")));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
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

    async fn accept(&self, event: &EventRecord, ttl_secs: u64) -> Result<Acceptance, StoreError> {
        let pk = event_pk(&event.dedupe_key);
        let mut item = event_item(event, ttl_secs);
        if let Some(stage) = event.stage.as_deref().filter(|_| is_unsent(&event.outcome)) {
            item.insert("gsi2pk".into(), s(format!("unsent#{stage}")));
            item.insert(
                "gsi2sk".into(),
                unsent_sk(event.received_ms, &event.dedupe_key),
            );
        }
        // A record that vanishes between the failed put and the read is retried.
        for _ in 0..3 {
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .condition_expression("attribute_not_exists(pk) OR #expires_at < :now")
                .expression_attribute_names("#expires_at", "expires_at")
                .expression_attribute_values(":now", n(now_unix()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let found = match put {
                Ok(_) => return Ok(Acceptance::New),
                Err(e) => match e.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(ccf) => ccf.item,
                    other => return Err(unavailable(format!("accept {pk}"), other)),
                },
            };
            let found = match found {
                Some(item) => Some(item),
                None => self.get_item(&pk, EVENT_SK).await?,
            };
            if let Some(item) = found {
                return record_of(&item).map(|r| Acceptance::Repeat(Box::new(r)));
            }
        }
        Err(StoreError::Conflict(pk))
    }

    async fn tally(&self, event: &EventRecord, repeat: bool) -> Result<(), StoreError> {
        if !repeat {
            if let Some((counts, _)) = counts_of(event) {
                self.add_counts(&counts, &[(RECEIVED, 1), (event.outcome.as_str(), 1)])
                    .await;
            }
            return Ok(());
        }
        let pk = event_pk(&event.dedupe_key);
        let counted = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(pk.as_str(), EVENT_SK)))
            .update_expression("ADD #deliveries :one")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#deliveries", "deliveries")
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match counted {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                // Gone meanwhile (expired): nothing to count on.
                UpdateItemError::ConditionalCheckFailedException(_) => Ok(()),
                other => Err(unavailable(format!("count delivery of {pk}"), other)),
            },
        }
    }

    async fn unsent(
        &self,
        stage: &str,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        while keys.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI2)
                .key_condition_expression("#p = :p AND #s < :s")
                .expression_attribute_names("#p", "gsi2pk")
                .expression_attribute_names("#s", "gsi2sk")
                .expression_attribute_values(":p", s(format!("unsent#{stage}")))
                .expression_attribute_values(":s", s(format!("{before_ms:013}")))
                .limit(i32::try_from(limit - keys.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable(format!("query unsent events of {stage}"), e))?;
            for item in page.items() {
                let pk = need_s(item, "pk")?;
                if let Some(key) = pk.strip_prefix("event#") {
                    keys.push(key.to_owned());
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        // The index is eventually consistent: each event is read again, and kept only while
        // still unsent.
        let mut out = Vec::with_capacity(keys.len());
        for key in keys.into_iter().take(limit) {
            if let Some(event) = self.get(&key).await?
                && is_unsent(&event.outcome)
            {
                out.push(event);
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
