//! Cross-references: id pointers and entity records, and `link`'s transaction.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::builders::UpdateBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};

use super::DynamoStore;
use super::item::{
    ENTITY_SK, Item, POINTER_SK, build_err, entity_pk, entity_prefix, get_s, key_of, malformed,
    need_s, pointer_pk, s, unavailable,
};
use crate::store::{EntityKind, EntityLink, IdForm, IdRef, StoreError, XrefStore};
use crate::timefmt::now_rfc3339;

/// `link` attempts before giving up with [`StoreError::Conflict`]. A lost race is followed by
/// fresh reads, which find the winner's entity, so two attempts are the norm under contention.
const LINK_ATTEMPTS: u32 = 6;

impl DynamoStore {
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
        if new.len() == owners.len() {
            // Every id was new, so the entity record was too (it is created with its first
            // pointers, in the same transaction): it holds exactly what was written.
            return Ok(Some(EntityLink {
                kind,
                key,
                ids: joined.iter().map(|id| id.key()).collect(),
                crm_id: joined
                    .iter()
                    .find(|id| id.form == IdForm::Crm)
                    .map(|id| id.value.clone()),
            }));
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
