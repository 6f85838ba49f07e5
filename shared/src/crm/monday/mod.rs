//! The `monday` connector (`CRM_CONNECTOR=monday`): every event lands on Monday.com boards
//! through the mapping profile (docs/monday.md 1, 3, 4). Leads become items of the customers board
//! and projects items of the projects board, each found by its Enerflo id column; status changes
//! set the status column's label through the profile's status map, milestones their date column,
//! notes become updates (Monday's comments) on the project's item, and a signed change order
//! writes its columns plus an update saying what changed.
//!
//! Monday has no upsert, and its search may lag a fresh create (docs/monday.md 3.5), so an item
//! is found, in order, by: the event's `crm_id` (the sync's cross-reference), our own record of
//! the item by its external id (`StateKey::MondayItem`, written the moment an item is created),
//! the search by the external id column; only then is it created, under a lease on that id,
//! with an `Idempotency-Key` per entity (a retry after a lost answer gets the first answer back
//! for 30 minutes, by which time the search has caught up). Updates are recorded the same way
//! (`StateKey::MondayUpdate`), and a retry long after a lost answer looks through the item's
//! updates for our marker before posting, so none is posted twice. Every mutation carries an
//! `Idempotency-Key`; the column values we write are recorded (`StateKey::MondayWrites`) before
//! the write, so the inbound route recognises their webhooks as our own.

pub mod api;
pub mod columns;
pub mod signature;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use self::api::{MondayApi, MondayError, Spend, idempotency_key};
use super::profile::{Applied, Conversion, EventMap, Link, Profile, convert_one};
use super::{CrmAck, CrmConnector, CrmError};
use crate::canonical::{CrmEvent, CrmEventType};
use crate::store::{ClaimStore, EntityKind, IdForm, IdRef, SyncState, SyncStateStore, XrefStore};
use crate::sync::{EntityLease, StateKey};

/// Monday's longest item name.
pub const ITEM_NAME_MAX: usize = 255;
/// How long Monday replays an `Idempotency-Key`'s first answer (30 minutes), less a margin: a
/// create or update still pending after this is looked for before it is tried again.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(25 * 60);
/// How long a creation waits for another worker creating the same item.
const CREATE_LEASE_WAIT: Duration = Duration::from_secs(8);
/// The profile property that is the item's name rather than a column.
pub const NAME: &str = "name";

/// Every column the profile writes or watches, per profile object, with its Monday type, in a
/// stable order: keys (`text`), properties and `on_create` columns (their `column_type`), the
/// link to the customer (`board_relation`), the status column (`status`) and the milestone date
/// columns (`date`). The item's name is no column. What `monday setup` checks and creates.
pub fn wanted_columns(profile: &Profile) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    fn add(out: &mut BTreeMap<String, Vec<(String, String)>>, object: &str, id: &str, kind: &str) {
        let cols = out.entry(object.to_owned()).or_default();
        if id != NAME && !cols.iter().any(|(c, _)| c == id) {
            cols.push((id.to_owned(), kind.to_owned()));
        }
    }
    fn walk(out: &mut BTreeMap<String, Vec<(String, String)>>, m: &EventMap) {
        for k in &m.keys {
            add(out, &m.object, &k.property, "text");
        }
        for (id, p) in m.properties.iter().chain(&m.on_create) {
            add(out, &m.object, id, p.column_type());
        }
        if let Some(c) = &m.contact {
            walk(out, c);
        }
        if let Some(Link::Lookup { field }) = &m.link {
            add(out, &m.object, field, "board_relation");
        }
    }
    for t in super::profile::EVENT_TYPES {
        walk(&mut out, profile.event(t));
    }
    let projects = profile.event(CrmEventType::StatusChanged).object.clone();
    add(&mut out, &projects, &profile.stages.property, "status");
    for c in profile.milestone_dates.values() {
        add(&mut out, &projects, c, "date");
    }
    out
}

/// The status labels the profile writes: the first stage and every label of the status map.
pub fn wanted_labels(profile: &Profile) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for l in profile
        .stages
        .first_stage
        .iter()
        .chain(profile.stages.by_status.values())
    {
        if !labels.contains(l) {
            labels.push(l.clone());
        }
    }
    labels
}

/// The board webhooks the inbound route needs, per profile object: (object, event, config).
/// `enerflo-sync-ops monday setup` creates them; the local sandbox starts with them.
pub fn webhook_subscriptions(profile: &Profile) -> Vec<(String, &'static str, Value)> {
    let projects = profile.event(CrmEventType::StatusChanged).object.clone();
    let customers = profile.event(CrmEventType::LeadUpserted).object.clone();
    let mut out = vec![(
        projects.clone(),
        "change_specific_column_value",
        json!({"columnId": profile.stages.property}),
    )];
    let mut dates: Vec<&String> = profile.milestone_dates.values().collect();
    dates.sort();
    dates.dedup();
    for column in dates {
        out.push((
            projects.clone(),
            "change_specific_column_value",
            json!({"columnId": column}),
        ));
    }
    out.push((projects, "create_update", Value::Null));
    out.push((customers.clone(), "create_item", Value::Null));
    out.push((customers, "change_column_value", Value::Null));
    out
}

/// The marker closing every update we post: what a retry looks for, and what the inbound route
/// recognises as our own.
pub fn update_marker(note_key: &str) -> String {
    match note_key.strip_prefix("change_order:") {
        Some(co) => format!("Enerflo change order {co}"),
        None => format!("Enerflo note {note_key}"),
    }
}

/// Whether an update's text carries one of our markers.
pub fn is_our_update(body: &str) -> bool {
    for prefix in ["Enerflo note ", "Enerflo change order "] {
        let mut rest = body;
        while let Some(at) = rest.find(prefix) {
            let tail = &rest[at + prefix.len()..];
            if tail.starts_with(|c: char| c.is_ascii_alphanumeric()) {
                return true;
            }
            rest = tail;
        }
    }
    false
}

pub struct MondayConnector {
    api: Arc<MondayApi>,
    profile: Arc<Profile>,
    /// Profile object (`customers`, `projects`, or a board id) -> board id.
    boards: BTreeMap<String, String>,
    milestone_keys: BTreeMap<String, u64>,
    xref: Arc<dyn XrefStore>,
    state: Arc<dyn SyncStateStore>,
    claims: Arc<dyn ClaimStore>,
}

/// What the connector needs besides the API: the stores of its own cross-references.
pub struct MondayStores {
    pub xref: Arc<dyn XrefStore>,
    pub state: Arc<dyn SyncStateStore>,
    pub claims: Arc<dyn ClaimStore>,
}

impl MondayConnector {
    pub fn new(
        api: Arc<MondayApi>,
        profile: Arc<Profile>,
        boards: BTreeMap<String, String>,
        milestone_keys: BTreeMap<String, u64>,
        stores: MondayStores,
    ) -> Self {
        Self {
            api,
            profile,
            boards,
            milestone_keys,
            xref: stores.xref,
            state: stores.state,
            claims: stores.claims,
        }
    }
}

#[async_trait]
impl CrmConnector for MondayConnector {
    async fn deliver(&self, event: &CrmEvent) -> Result<CrmAck, CrmError> {
        let spend = Spend::default();
        let map = self.profile.event(event.event_type);
        let result = match event.event_type {
            CrmEventType::LeadUpserted => {
                self.upsert(map, event, event.crm_id.clone(), Map::new(), &spend)
                    .await
            }
            CrmEventType::ProjectSubmitted | CrmEventType::ProjectReceived => {
                self.project(map, event, &spend).await
            }
            CrmEventType::StatusChanged => {
                let mut extra = Map::new();
                if let Some(label) = event
                    .data
                    .pointer("/status/name")
                    .and_then(Value::as_str)
                    .and_then(|n| self.profile.stage_for_status(n))
                {
                    extra.insert(
                        self.profile.stages.property.clone(),
                        json!({"label": label}),
                    );
                }
                self.update_item(map, event, extra, &spend).await
            }
            CrmEventType::MilestoneUpdated => {
                let mut extra = Map::new();
                let milestone_id = event
                    .data
                    .pointer("/milestone/id")
                    .and_then(crate::enerflo::lenient::value_to_u64);
                if let Some(column) = self
                    .profile
                    .milestone_property(milestone_id, &self.milestone_keys)
                {
                    // A cleared completion date clears the column.
                    let value = event
                        .data
                        .get("completed_date")
                        .and_then(|v| convert_one(&Conversion::Date, v))
                        .and_then(|d| d.monday("date").ok())
                        .unwrap_or(Value::Null);
                    extra.insert(column.to_owned(), value);
                }
                self.update_item(map, event, extra, &spend).await
            }
            CrmEventType::NoteCreated => self.note(map, event, &spend).await,
            CrmEventType::ChangeOrderSigned => self.change_order(map, event, &spend).await,
        };
        tracing::info!(
            event_type = event.event_type.as_str(),
            monday_calls = spend.get(),
            ok = result.is_ok(),
            "Monday.com exchange"
        );
        Ok(CrmAck {
            status: 200,
            crm_id: Some(result?),
        })
    }
}

/// An item's column values and name, as `change_multiple_column_values` takes them.
struct Write {
    values: Map<String, Value>,
    name: Option<String>,
}

impl MondayConnector {
    fn board(&self, object: &str) -> Result<&str, CrmError> {
        self.boards
            .get(object)
            .map(String::as_str)
            .ok_or_else(|| CrmError::Rejected {
                status: 422,
                message: format!("the mapping profile's object `{object}` names no Monday board"),
            })
    }

    /// The profile's columns in Monday's value formats, plus the keys with values, plus `extra`;
    /// a value that does not fit its column is a rejection naming the column.
    fn write_of(
        &self,
        map: &EventMap,
        applied: &Applied,
        with_on_create: bool,
        extra: Map<String, Value>,
    ) -> Result<Write, CrmError> {
        let mut values = Map::new();
        let mut name = None;
        let props = map
            .properties
            .iter()
            .map(|(k, p)| (k, p, applied.properties.get(k)))
            .chain(
                map.on_create
                    .iter()
                    .filter(|_| with_on_create)
                    .map(|(k, p)| (k, p, applied.on_create.get(k))),
            );
        for (column, property, value) in props {
            let Some(value) = value else { continue };
            if column == NAME {
                name = Some(value.text());
                continue;
            }
            let rendered =
                value
                    .monday(property.column_type())
                    .map_err(|why| CrmError::Rejected {
                        status: 422,
                        message: format!(
                            "column `{column}` ({} column) on board {}: the value {why}",
                            property.column_type(),
                            map.object
                        ),
                    })?;
            values.insert(column.clone(), rendered);
        }
        for (k, v) in &applied.keys {
            values.insert(k.clone(), Value::String(v.clone()));
        }
        values.extend(extra);
        Ok(Write { values, name })
    }

    /// Creates or updates the item `map` describes, found by `known`, our own record, or the
    /// search by its first key with a value; created only when none of them finds it.
    async fn upsert(
        &self,
        map: &EventMap,
        event: &CrmEvent,
        known: Option<String>,
        extra: Map<String, Value>,
        spend: &Spend,
    ) -> Result<String, CrmError> {
        let board = self.board(&map.object)?.to_owned();
        let applied = map.apply(event);
        let Some((key_column, key_value)) = applied.keys.first().cloned() else {
            return Err(CrmError::Rejected {
                status: 422,
                message: format!(
                    "{} event {} has none of the key fields the profile names for board {} ({})",
                    event.event_type.as_str(),
                    event.id,
                    map.object,
                    map.keys
                        .iter()
                        .map(|k| k.field.text.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        let update = self.write_of(map, &applied, false, extra.clone())?;
        let scope = StateKey::MondayItem {
            board: board.clone(),
            column: key_column.clone(),
            value: key_value.clone(),
        };
        let ours = self.item_record(&scope).await?;
        for item in [known, ours.as_ref().and_then(|r| r.item_id.clone())]
            .into_iter()
            .flatten()
        {
            match self.change(&board, &item, &update, event, spend).await {
                Ok(()) => return Ok(item),
                // Deleted on Monday since we linked it: looked for again, or recreated.
                Err(MondayError::NotFound(_)) => continue,
                Err(e) => return Err(e.into_crm(&format!("updating item {item} of board {board}"))),
            }
        }
        if let Some(item) = self.search(&board, &key_column, &key_value, spend).await? {
            self.remember_item(&scope, &item).await?;
            self.change(&board, &item, &update, event, spend)
                .await
                .map_err(|e| e.into_crm(&format!("updating item {item} of board {board}")))?;
            return Ok(item);
        }
        let lease = EntityLease::acquire(&self.claims, &scope, CREATE_LEASE_WAIT)
            .await
            .map_err(|e| CrmError::Unavailable {
                status: None,
                detail: format!("another worker is creating this item: {e}"),
                retry_after: Some(Duration::from_secs(5)),
            })?;
        let created = self
            .create(
                map, event, &board, &scope, &applied, &key_value, extra, spend,
            )
            .await;
        lease.release().await;
        created
    }

    /// Creates the item under the lease, unless another worker just did.
    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        map: &EventMap,
        event: &CrmEvent,
        board: &str,
        scope: &StateKey,
        applied: &Applied,
        key_value: &str,
        extra: Map<String, Value>,
        spend: &Spend,
    ) -> Result<String, CrmError> {
        let update = self.write_of(map, applied, false, extra.clone())?;
        if let Some(item) = self.item_record(scope).await?.and_then(|r| r.item_id) {
            self.change(board, &item, &update, event, spend)
                .await
                .map_err(|e| e.into_crm(&format!("updating item {item} of board {board}")))?;
            return Ok(item);
        }
        let write = self.write_of(map, applied, true, extra)?;
        let name = write
            .name
            .clone()
            .map(|n| cut(&n, ITEM_NAME_MAX))
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| format!("Enerflo {key_value}"));
        // The creation is recorded before it is sent: its values for the webhook route, its
        // start for a retry after a lost answer.
        self.put(
            scope,
            json!({"pending_since": crate::timefmt::now_millis(), "values": write.values}),
        )
        .await?;
        let key = idempotency_key(&["create_item", &scope.scope()]);
        let answer = self
            .api
            .call(
                "mutation ($b: ID!, $n: String!, $v: JSON, $l: Boolean) { create_item(board_id: $b, item_name: $n, column_values: $v, create_labels_if_missing: $l) { id } }",
                json!({"b": board, "n": name, "v": Value::Object(write.values.clone()).to_string(),
                       "l": self.profile.stages.create_labels}),
                Some(&key),
                spend,
            )
            .await
            .map_err(|e| {
                e.into_crm(&format!(
                    "creating an item on board {board} (columns {})",
                    write.values.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
        let item = id_at(&answer.data, "/create_item/id").ok_or_else(|| CrmError::Unavailable {
            status: Some(200),
            detail: "Monday.com created the item but named no id".into(),
            retry_after: None,
        })?;
        // What we wrote first, then where: a webhook of this creation finds either.
        self.record_writes(&item, &write).await?;
        self.remember_item(scope, &item).await?;
        if answer.replayed {
            // The first answer of this key, from an earlier try: write this event's values.
            self.change(board, &item, &update, event, spend)
                .await
                .map_err(|e| e.into_crm(&format!("updating item {item} of board {board}")))?;
        }
        tracing::info!(board, item = %item, "Monday.com item created");
        Ok(item)
    }

    async fn change(
        &self,
        board: &str,
        item: &str,
        write: &Write,
        event: &CrmEvent,
        spend: &Spend,
    ) -> Result<(), MondayError> {
        let mut values = write.values.clone();
        if let Some(n) = &write.name {
            values.insert(NAME.into(), Value::String(cut(n, ITEM_NAME_MAX)));
        }
        if values.is_empty() {
            return Ok(());
        }
        self.record_writes(item, write).await?;
        let encoded = Value::Object(values).to_string();
        let key = idempotency_key(&["change", board, item, &event.id, &encoded]);
        let answer = self
            .api
            .call(
                "mutation ($b: ID!, $i: ID!, $v: JSON!, $l: Boolean) { change_multiple_column_values(board_id: $b, item_id: $i, column_values: $v, create_labels_if_missing: $l) { id } }",
                json!({"b": board, "i": item, "v": encoded, "l": self.profile.stages.create_labels}),
                Some(&key),
                spend,
            )
            .await?;
        if answer
            .data
            .get("change_multiple_column_values")
            .is_none_or(Value::is_null)
        {
            return Err(MondayError::NotFound(format!(
                "item {item} is not on board {board}"
            )));
        }
        Ok(())
    }

    /// The item whose `column` holds `value`, by Monday's search (the oldest when several).
    async fn search(
        &self,
        board: &str,
        column: &str,
        value: &str,
        spend: &Spend,
    ) -> Result<Option<String>, CrmError> {
        let answer = self
            .api
            .call(
                "query ($b: ID!, $c: [ItemsPageByColumnValuesQuery!]) { items_page_by_column_values(board_id: $b, limit: 5, columns: $c) { items { id } } }",
                json!({"b": board, "c": [{"column_id": column, "column_values": [value]}]}),
                None,
                spend,
            )
            .await
            .map_err(|e| e.into_crm(&format!("looking up board {board} by {column}")))?;
        let mut ids: Vec<String> = answer
            .data
            .pointer("/items_page_by_column_values/items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|i| id_at(i, "/id"))
            .collect();
        ids.sort_by_key(|i| (i.len(), i.clone()));
        if ids.len() > 1 {
            tracing::warn!(
                board,
                column,
                items = ids.len(),
                "several Monday.com items hold one Enerflo id; the oldest is used"
            );
        }
        Ok(ids.into_iter().next())
    }

    /// A project: the customer's item, then the project's item linked to it; the first status
    /// label and the `on_create` columns only when the item is new to us.
    async fn project(
        &self,
        map: &EventMap,
        event: &CrmEvent,
        spend: &Spend,
    ) -> Result<String, CrmError> {
        let contact = match &map.contact {
            Some(c) if !c.apply(event).keys.is_empty() => {
                let known = self.customer_item(event).await?;
                Some(self.upsert(c, event, known, Map::new(), spend).await?)
            }
            _ => None,
        };
        let mut extra = Map::new();
        if event.crm_id.is_none()
            && let Some(label) = &self.profile.stages.first_stage
        {
            extra.insert(
                self.profile.stages.property.clone(),
                json!({"label": label}),
            );
        }
        if let (Some(Link::Lookup { field }), Some(c)) = (&map.link, &contact)
            && let Ok(id) = c.parse::<u64>()
        {
            extra.insert(field.clone(), json!({"item_ids": [id]}));
        }
        self.upsert(map, event, event.crm_id.clone(), extra, spend)
            .await
    }

    /// The customer's item as the sync's cross-reference knows it (stage 1.2 linked it).
    async fn customer_item(&self, event: &CrmEvent) -> Result<Option<String>, CrmError> {
        let ids = [
            event
                .enerflo
                .customer_id
                .map(|id| IdRef::new(IdForm::CustomerId, id)),
            event
                .enerflo
                .customer_uuid
                .as_ref()
                .map(|id| IdRef::new(IdForm::CustomerUuid, id)),
        ];
        for id in ids.into_iter().flatten() {
            let link = self
                .xref
                .resolve(EntityKind::Customer, &id)
                .await
                .map_err(store_unavailable)?;
            if let Some(crm) = link.and_then(|l| l.crm_id) {
                return Ok(Some(crm));
            }
        }
        Ok(None)
    }

    /// The item an install-level event is about: its `crm_id`, our record, else the search. One
    /// that is not there yet is transient: the project event creating it may still be queued.
    async fn find_item(
        &self,
        map: &EventMap,
        event: &CrmEvent,
        spend: &Spend,
    ) -> Result<(String, String), CrmError> {
        let board = self.board(&map.object)?.to_owned();
        if let Some(id) = &event.crm_id {
            return Ok((board, id.clone()));
        }
        let applied = map.apply(event);
        for (column, value) in &applied.keys {
            let scope = StateKey::MondayItem {
                board: board.clone(),
                column: column.clone(),
                value: value.clone(),
            };
            if let Some(item) = self.item_record(&scope).await?.and_then(|r| r.item_id) {
                return Ok((board, item));
            }
        }
        for (column, value) in &applied.keys {
            if let Some(item) = self.search(&board, column, value, spend).await? {
                return Ok((board, item));
            }
        }
        Err(applied.not_created_yet(&format!("Monday.com item on board {board}")))
    }

    async fn update_item(
        &self,
        map: &EventMap,
        event: &CrmEvent,
        extra: Map<String, Value>,
        spend: &Spend,
    ) -> Result<String, CrmError> {
        let (board, item) = self.find_item(map, event, spend).await?;
        let applied = map.apply(event);
        let write = self.write_of(map, &applied, false, extra)?;
        match self.change(&board, &item, &write, event, spend).await {
            Ok(()) => Ok(item),
            Err(MondayError::NotFound(m)) => Err(CrmError::Unavailable {
                status: Some(404),
                detail: format!("Monday.com item {item} is gone: {m}"),
                retry_after: None,
            }),
            Err(e) => Err(e.into_crm(&format!("updating item {item} of board {board}"))),
        }
    }

    /// A note as an update on the project's item, posted once.
    async fn note(
        &self,
        map: &EventMap,
        event: &CrmEvent,
        spend: &Spend,
    ) -> Result<String, CrmError> {
        let item_map = self.profile.event(CrmEventType::StatusChanged);
        let (_, item) = self.find_item(item_map, event, spend).await?;
        let applied = map.apply(event);
        let Some((_, note_key)) = applied.keys.first().cloned() else {
            return Err(CrmError::Rejected {
                status: 422,
                message: format!("note event {} carries no note id", event.id),
            });
        };
        let text = applied
            .properties
            .values()
            .next()
            .map(|v| v.text())
            .or_else(|| {
                event
                    .data
                    .pointer("/note/text")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let author = event.data.pointer("/note/author").and_then(Value::as_str);
        let body = update_body(&text, author, &update_marker(&note_key));
        self.post_update_once(&item, &note_key, &body, spend).await
    }

    /// Posts `body` on `item` unless the update for `note_key` exists: by our record, or, for a
    /// try pending longer than Monday replays its idempotency keys, among the item's updates.
    async fn post_update_once(
        &self,
        item: &str,
        note_key: &str,
        body: &str,
        spend: &Spend,
    ) -> Result<String, CrmError> {
        let scope = StateKey::MondayUpdate {
            item: item.to_owned(),
            key: note_key.to_owned(),
        };
        let record = self.get(&scope).await?;
        if let Some(id) = record
            .as_ref()
            .and_then(|r| r.data.get("update_id"))
            .and_then(Value::as_str)
        {
            return Ok(id.to_owned());
        }
        let pending_since = record
            .as_ref()
            .and_then(|r| r.data.get("pending_since"))
            .and_then(Value::as_i64);
        let stale = pending_since.is_some_and(|t| {
            crate::timefmt::now_millis() - t > IDEMPOTENCY_WINDOW.as_millis() as i64
        });
        if stale
            && let Some(id) = self
                .find_update(item, &update_marker(note_key), spend)
                .await?
        {
            self.put(&scope, json!({"update_id": id})).await?;
            return Ok(id);
        }
        if pending_since.is_none() || stale {
            self.put(
                &scope,
                json!({"pending_since": crate::timefmt::now_millis()}),
            )
            .await?;
        }
        let key = idempotency_key(&["create_update", &scope.scope()]);
        let answer = self
            .api
            .call(
                "mutation ($i: ID!, $b: String!) { create_update(item_id: $i, body: $b) { id } }",
                json!({"i": item, "b": body}),
                Some(&key),
                spend,
            )
            .await
            .map_err(|e| match e {
                MondayError::NotFound(m) => CrmError::Unavailable {
                    status: Some(404),
                    detail: format!("posting the update on item {item}: {m}"),
                    retry_after: None,
                },
                e => e.into_crm(&format!("posting the update on item {item}")),
            })?;
        let id = id_at(&answer.data, "/create_update/id").ok_or_else(|| CrmError::Unavailable {
            status: Some(200),
            detail: "Monday.com posted the update but named no id".into(),
            retry_after: None,
        })?;
        self.put(&scope, json!({"update_id": id})).await?;
        Ok(id)
    }

    /// The item's update carrying `marker`, among its newest 100.
    async fn find_update(
        &self,
        item: &str,
        marker: &str,
        spend: &Spend,
    ) -> Result<Option<String>, CrmError> {
        let answer = self
            .api
            .call(
                "query ($i: [ID!]) { items(ids: $i) { updates(limit: 100) { id body text_body } } }",
                json!({"i": [item]}),
                None,
                spend,
            )
            .await
            .map_err(|e| e.into_crm(&format!("reading the updates of item {item}")))?;
        let updates = answer
            .data
            .pointer("/items/0/updates")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for u in updates {
            let has = |k: &str| {
                u.get(k)
                    .and_then(Value::as_str)
                    .is_some_and(|t| ends_marker(t, marker))
            };
            if has("body") || has("text_body") {
                return Ok(id_at(&u, "/id"));
            }
        }
        Ok(None)
    }

    /// The change order's columns, and an update of what changed (old -> new), posted once.
    async fn change_order(
        &self,
        map: &EventMap,
        event: &CrmEvent,
        spend: &Spend,
    ) -> Result<String, CrmError> {
        let item = self.update_item(map, event, Map::new(), spend).await?;
        let co_id = event
            .data
            .pointer("/change_order/id")
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| event.id.clone());
        let mut lines = Vec::new();
        if let Some(changes) = event.data.get("changes").and_then(Value::as_object) {
            for (key, change) in changes {
                let show = |v: Option<&Value>| match v {
                    None | Some(Value::Null) => "none".to_owned(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                lines.push(format!(
                    "{key}: {} -> {}",
                    show(change.get("old")),
                    show(change.get("new"))
                ));
            }
        }
        let text = if lines.is_empty() {
            format!("Change order {co_id} signed.")
        } else {
            format!("Change order {co_id} signed:\n{}", lines.join("\n"))
        };
        let key = format!("change_order:{co_id}");
        let body = update_body(&text, None, &update_marker(&key));
        self.post_update_once(&item, &key, &body, spend).await?;
        Ok(item)
    }

    // ---- our own records ----

    async fn get(&self, scope: &StateKey) -> Result<Option<SyncState>, CrmError> {
        self.state
            .get_state(&scope.scope())
            .await
            .map_err(store_unavailable)
    }

    async fn put(&self, scope: &StateKey, data: Value) -> Result<(), CrmError> {
        let state = SyncState {
            hash: String::new(),
            data,
            updated_at: crate::timefmt::now_rfc3339(),
            seq: 0,
        };
        self.state
            .put_state(&scope.scope(), &state)
            .await
            .map_err(store_unavailable)
    }

    async fn item_record(&self, scope: &StateKey) -> Result<Option<ItemRecord>, CrmError> {
        Ok(self.get(scope).await?.map(|s| ItemRecord {
            item_id: s
                .data
                .get("item_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }))
    }

    async fn remember_item(&self, scope: &StateKey, item: &str) -> Result<(), CrmError> {
        self.put(scope, json!({"item_id": item})).await
    }

    /// Merges `write` into what we last wrote to `item`, before the write goes out.
    async fn record_writes(&self, item: &str, write: &Write) -> Result<(), CrmError> {
        let scope = StateKey::MondayWrites(item.to_owned());
        let mut data = self
            .get(&scope)
            .await?
            .map(|s| s.data)
            .unwrap_or_else(|| json!({}));
        if !data.get("columns").is_some_and(Value::is_object) {
            data = json!({"columns": {}, "name": data.get("name").cloned().unwrap_or(Value::Null)});
        }
        if let Some(columns) = data.get_mut("columns").and_then(Value::as_object_mut) {
            for (k, v) in &write.values {
                columns.insert(k.clone(), v.clone());
            }
        }
        if let Some(n) = &write.name {
            data["name"] = Value::String(n.clone());
        }
        self.put(&scope, data).await
    }
}

struct ItemRecord {
    item_id: Option<String>,
}

fn store_unavailable(e: crate::error::StoreError) -> CrmError {
    CrmError::Unavailable {
        status: None,
        detail: format!("the state store failed: {e}"),
        retry_after: None,
    }
}

/// An id at `pointer`, as text (Monday answers ids as strings; numbers are accepted too).
fn id_at(v: &Value, pointer: &str) -> Option<String> {
    match v.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Whether `text` carries `marker` as a whole word (so note 4 is not found in note 41).
fn ends_marker(text: &str, marker: &str) -> bool {
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let tail = &rest[at + marker.len()..];
        if !tail.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return true;
        }
        rest = tail;
    }
    false
}

/// An update's HTML body: the text escaped, line breaks kept, with who wrote it and our marker.
pub fn update_body(text: &str, author: Option<&str>, marker: &str) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let by = author
        .map(|a| format!("{} &middot; ", escape(a)))
        .unwrap_or_default();
    format!(
        "<p>{}</p><p><small>{by}{}</small></p>",
        escape(text).replace('\n', "<br>"),
        escape(marker)
    )
}

#[cfg(test)]
mod tests;
