//! The `hubspot` connector (`CRM_CONNECTOR=hubspot`): every event lands as HubSpot records
//! through the mapping profile. Leads become contacts upserted by `enerflo_customer_id` (a
//! contact that exists by e-mail is adopted), projects become deals upserted by
//! `enerflo_deal_id` and associated with the customer's contact, status and milestone events
//! update the deal, notes become HubSpot notes on the deal, and a signed change order updates the
//! deal and adds a note of what changed. Every write is an upsert by an Enerflo id or a look-up
//! before a create, so a retry never makes a second record (docs/crm-connectors.md 2.5-2.9).

pub mod api;
pub mod schema;
pub mod signature;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Map, Value, json};

use self::api::{HubSpotApi, HubSpotError};
use super::profile::{Conversion, EventMap, Profile, convert_one};
use super::{CrmAck, CrmConnector, CrmError};
use crate::canonical::{CrmEvent, CrmEventType};
use crate::wire::encode_segment;

/// HubSpot-defined association type ids (docs/crm-connectors.md 2.8).
pub const NOTE_TO_DEAL: u32 = 214;
/// The note property holding the Enerflo note id (or `change_order:<id>`): what a retry finds.
pub const NOTE_KEY: &str = "enerflo_note_id";
/// `hs_note_body` limit (docs/crm-connectors.md 2.9).
const NOTE_BODY_MAX: usize = 65_536;

pub struct HubSpotConnector {
    api: Arc<HubSpotApi>,
    profile: Arc<Profile>,
    pipeline: String,
    milestone_keys: BTreeMap<String, u64>,
}

impl HubSpotConnector {
    pub fn new(
        api: Arc<HubSpotApi>,
        profile: Arc<Profile>,
        pipeline: &str,
        milestone_keys: BTreeMap<String, u64>,
    ) -> Self {
        Self {
            api,
            profile,
            pipeline: pipeline.to_owned(),
            milestone_keys,
        }
    }
}

#[async_trait]
impl CrmConnector for HubSpotConnector {
    async fn deliver(&self, event: &CrmEvent) -> Result<CrmAck, CrmError> {
        let map = self.profile.event(event.event_type);
        let id = match event.event_type {
            CrmEventType::LeadUpserted => {
                self.upsert(map, event, event.crm_id.as_deref(), Map::new())
                    .await?
            }
            CrmEventType::ProjectSubmitted | CrmEventType::ProjectReceived => {
                self.project(map, event).await?
            }
            CrmEventType::StatusChanged => {
                let mut extra = Map::new();
                if let Some(stage) = event
                    .data
                    .pointer("/status/name")
                    .and_then(Value::as_str)
                    .and_then(|n| self.profile.stage_for_status(n))
                {
                    extra.insert(
                        self.profile.stages.property.clone(),
                        Value::String(stage.to_owned()),
                    );
                }
                self.update_deal(map, event, extra).await?
            }
            CrmEventType::MilestoneUpdated => {
                let mut extra = Map::new();
                let milestone_id = event
                    .data
                    .pointer("/milestone/id")
                    .and_then(crate::enerflo::lenient::value_to_u64);
                if let Some(property) = self
                    .profile
                    .milestone_property(milestone_id, &self.milestone_keys)
                {
                    // A cleared completion date clears the property ("" clears in HubSpot).
                    let value = event
                        .data
                        .get("completed_date")
                        .and_then(|v| convert_one(&Conversion::Date, v))
                        .map(|d| d.hubspot())
                        .unwrap_or_default();
                    extra.insert(property.to_owned(), Value::String(value));
                }
                self.update_deal(map, event, extra).await?
            }
            CrmEventType::NoteCreated => self.note(map, event).await?,
            CrmEventType::ChangeOrderSigned => self.change_order(map, event).await?,
        };
        Ok(CrmAck {
            status: 200,
            crm_id: Some(id),
        })
    }
}

/// The profile's properties as HubSpot strings, plus the keys with values but the one used as
/// `idProperty`, plus `extra`.
fn properties(
    applied: &super::profile::Applied,
    id_property: Option<&str>,
    extra: Map<String, Value>,
) -> Map<String, Value> {
    let mut props: Map<String, Value> = applied
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.hubspot())))
        .collect();
    for (k, v) in &applied.keys {
        if Some(k.as_str()) != id_property {
            props.insert(k.clone(), Value::String(v.clone()));
        }
    }
    props.extend(extra);
    props
}

fn record_id(body: &Value) -> Option<String> {
    match body.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl HubSpotConnector {
    /// Creates or updates the record `map` describes: by its HubSpot id when we know it, else by
    /// batch upsert on the first key with a value. A contact that exists by e-mail (409 or a
    /// conflict item naming the existing id) is adopted: updated, keys included.
    async fn upsert(
        &self,
        map: &EventMap,
        event: &CrmEvent,
        known_id: Option<&str>,
        extra: Map<String, Value>,
    ) -> Result<String, CrmError> {
        let applied = map.apply(event);
        let object = encode_segment(&map.object);
        if let Some(id) = known_id {
            let props = properties(&applied, None, extra.clone());
            match self.patch(&object, id, None, props).await {
                Ok(id) => return Ok(id),
                // Deleted in HubSpot since we linked it: upsert finds or recreates it.
                Err(HubSpotError::NotFound(_)) => {}
                Err(e) => return Err(e.into_crm(&format!("updating {} {id}", map.object))),
            }
        }
        let Some((id_property, key)) = applied.keys.first().cloned() else {
            return Err(CrmError::Rejected {
                status: 422,
                message: format!(
                    "{} event {} has none of the key fields the profile names for {} ({})",
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
        let props = properties(&applied, Some(&id_property), extra);
        let body = json!({"inputs": [{
            "idProperty": id_property,
            "id": key,
            "objectWriteTraceId": event.id,
            "properties": props,
        }]});
        let path = format!("/crm/v3/objects/{object}/batch/upsert");
        match self.api.call(Method::POST, &path, &[], Some(&body)).await {
            Ok(answer) => match batch_item(&answer.body) {
                Ok(id) => Ok(id),
                Err(HubSpotError::Conflict {
                    existing_id: Some(existing),
                    ..
                }) => self.adopt(map, &applied, &object, &existing).await,
                Err(e) => Err(e.into_crm(&format!("upserting {} {id_property}={key}", map.object))),
            },
            Err(HubSpotError::Conflict {
                existing_id: Some(existing),
                ..
            }) => self.adopt(map, &applied, &object, &existing).await,
            Err(e) => Err(e.into_crm(&format!("upserting {} {id_property}={key}", map.object))),
        }
    }

    /// A record that exists under another key (a contact by e-mail): our keys and properties
    /// are written onto it, so it is ours from now on and no second one is made.
    async fn adopt(
        &self,
        map: &EventMap,
        applied: &super::profile::Applied,
        object: &str,
        existing: &str,
    ) -> Result<String, CrmError> {
        tracing::info!(object = %map.object, record = existing, "adopting the existing HubSpot record");
        let props = properties(applied, None, Map::new());
        self.patch(object, existing, None, props)
            .await
            .map_err(|e| e.into_crm(&format!("adopting {} {existing}", map.object)))
    }

    async fn patch(
        &self,
        object: &str,
        id: &str,
        id_property: Option<&str>,
        props: Map<String, Value>,
    ) -> Result<String, HubSpotError> {
        let path = format!("/crm/v3/objects/{object}/{}", encode_segment(id));
        let query: Vec<(&str, &str)> = id_property.map(|p| ("idProperty", p)).into_iter().collect();
        let answer = self
            .api
            .call(
                Method::PATCH,
                &path,
                &query,
                Some(&json!({"properties": props})),
            )
            .await?;
        Ok(record_id(&answer.body).unwrap_or_else(|| id.to_owned()))
    }

    /// A project: the customer's contact, the deal (pipeline and first stage only when it is
    /// new to us), and their association.
    async fn project(&self, map: &EventMap, event: &CrmEvent) -> Result<String, CrmError> {
        let mut extra = Map::new();
        if event.crm_id.is_none() {
            extra.insert("pipeline".into(), Value::String(self.pipeline.clone()));
            if let Some(stage) = &self.profile.stages.first_stage {
                extra.insert(
                    self.profile.stages.property.clone(),
                    Value::String(stage.clone()),
                );
            }
            extra.extend(
                map.apply(event)
                    .on_create
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.hubspot()))),
            );
        }
        let contact = match &map.contact {
            Some(c) if !c.apply(event).keys.is_empty() => {
                Some(self.upsert(c, event, None, Map::new()).await?)
            }
            _ => None,
        };
        let deal = self
            .upsert(map, event, event.crm_id.as_deref(), extra)
            .await?;
        if let (Some(contact), Some(c)) = (contact, &map.contact) {
            let path = format!(
                "/crm/v4/objects/{}/{}/associations/default/{}/{}",
                encode_segment(&map.object),
                encode_segment(&deal),
                encode_segment(&c.object),
                encode_segment(&contact)
            );
            self.api
                .call(Method::PUT, &path, &[], None)
                .await
                .map_err(|e| {
                    e.into_crm(&format!("associating deal {deal} with contact {contact}"))
                })?;
        }
        Ok(deal)
    }

    /// The deal an install-level event is about: its HubSpot id when linked, else found by the
    /// profile's keys. One that is not there yet is transient: the project event that creates it
    /// may still be on its way.
    async fn find_deal(&self, map: &EventMap, event: &CrmEvent) -> Result<String, CrmError> {
        if let Some(id) = &event.crm_id {
            return Ok(id.clone());
        }
        let applied = map.apply(event);
        let object = encode_segment(&map.object);
        for (property, value) in &applied.keys {
            let path = format!("/crm/v3/objects/{object}/{}", encode_segment(value));
            match self
                .api
                .call(
                    Method::GET,
                    &path,
                    &[("idProperty", property), ("properties", "hs_object_id")],
                    None,
                )
                .await
            {
                Ok(answer) => {
                    if let Some(id) = record_id(&answer.body) {
                        return Ok(id);
                    }
                }
                Err(HubSpotError::NotFound(_)) => continue,
                Err(e) => return Err(e.into_crm(&format!("finding the deal by {property}"))),
            }
        }
        Err(applied.not_created_yet(&format!("HubSpot {}", map.object)))
    }

    async fn update_deal(
        &self,
        map: &EventMap,
        event: &CrmEvent,
        extra: Map<String, Value>,
    ) -> Result<String, CrmError> {
        let deal = self.find_deal(map, event).await?;
        let applied = map.apply(event);
        let props = properties(&applied, None, extra);
        match self
            .patch(&encode_segment(&map.object), &deal, None, props)
            .await
        {
            Ok(id) => Ok(id),
            Err(HubSpotError::NotFound(m)) => Err(CrmError::Unavailable {
                status: Some(404),
                detail: format!("HubSpot deal {deal} is gone: {m}"),
                retry_after: None,
            }),
            Err(e) => Err(e.into_crm(&format!("updating deal {deal}"))),
        }
    }

    /// A note on the deal, found again on a retry by its `enerflo_note_id` among the deal's notes
    /// (associations are read back consistently; search is not, so it is never used).
    async fn note(&self, map: &EventMap, event: &CrmEvent) -> Result<String, CrmError> {
        let deal_map = self.profile.event(CrmEventType::StatusChanged);
        let deal = self.find_deal(deal_map, event).await?;
        let applied = map.apply(event);
        let Some((_, note_key)) = applied
            .keys
            .iter()
            .find(|(k, _)| k == NOTE_KEY)
            .cloned()
            .or_else(|| applied.keys.first().cloned())
        else {
            return Err(CrmError::Rejected {
                status: 422,
                message: format!("note event {} carries no note id", event.id),
            });
        };
        let mut props = properties(&applied, None, Map::new());
        let author = event.data.pointer("/note/author").and_then(Value::as_str);
        let text = props
            .get("hs_note_body")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        props.insert(
            "hs_note_body".into(),
            Value::String(note_body(
                &text,
                author,
                &format!("Enerflo note {note_key}"),
            )),
        );
        if !props.contains_key("hs_timestamp") {
            props.insert(
                "hs_timestamp".into(),
                Value::String(crate::timefmt::now_millis().to_string()),
            );
        }
        self.create_note_once(&map.object, &deal, &note_key, props)
            .await
    }

    async fn create_note_once(
        &self,
        notes_object: &str,
        deal: &str,
        note_key: &str,
        mut props: Map<String, Value>,
    ) -> Result<String, CrmError> {
        if let Some(existing) = self.find_note(notes_object, deal, note_key).await? {
            return Ok(existing);
        }
        props.insert(NOTE_KEY.into(), Value::String(note_key.to_owned()));
        let body = json!({
            "properties": props,
            "associations": [{"to": {"id": deal}, "types": [
                {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": NOTE_TO_DEAL}
            ]}],
        });
        let path = format!("/crm/v3/objects/{}", encode_segment(notes_object));
        let answer = self
            .api
            .call(Method::POST, &path, &[], Some(&body))
            .await
            .map_err(|e| e.into_crm(&format!("creating the note on deal {deal}")))?;
        record_id(&answer.body).ok_or_else(|| CrmError::Unavailable {
            status: Some(answer.status),
            detail: "HubSpot created the note but named no id".into(),
            retry_after: None,
        })
    }

    /// The deal's note carrying `note_key`, if one exists.
    async fn find_note(
        &self,
        notes_object: &str,
        deal: &str,
        note_key: &str,
    ) -> Result<Option<String>, CrmError> {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        // A deal with more notes than 5 pages of 500 is not looked through further.
        for _ in 0..5 {
            let path = format!(
                "/crm/v4/objects/deals/{}/associations/{}",
                encode_segment(deal),
                encode_segment(notes_object)
            );
            let mut query = vec![("limit", "500")];
            if let Some(a) = after.as_deref() {
                query.push(("after", a));
            }
            let answer = match self.api.call(Method::GET, &path, &query, None).await {
                Ok(a) => a,
                Err(HubSpotError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into_crm(&format!("listing the notes of deal {deal}"))),
            };
            for r in answer
                .body
                .get("results")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let id = r.get("toObjectId").or_else(|| r.get("id"));
                if let Some(id) = id.and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }) {
                    ids.push(id);
                }
            }
            after = answer
                .body
                .pointer("/paging/next/after")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if after.is_none() {
                break;
            }
        }
        for chunk in ids.chunks(100) {
            let body = json!({
                "properties": [NOTE_KEY],
                "inputs": chunk.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            });
            let path = format!(
                "/crm/v3/objects/{}/batch/read",
                encode_segment(notes_object)
            );
            let answer = self
                .api
                .call(Method::POST, &path, &[], Some(&body))
                .await
                .map_err(|e| e.into_crm(&format!("reading the notes of deal {deal}")))?;
            for r in answer
                .body
                .get("results")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if r.pointer(&format!("/properties/{NOTE_KEY}"))
                    .and_then(Value::as_str)
                    == Some(note_key)
                {
                    return Ok(record_id(r));
                }
            }
        }
        Ok(None)
    }

    /// The deal's change-order properties, and a note of what changed (old -> new), once.
    async fn change_order(&self, map: &EventMap, event: &CrmEvent) -> Result<String, CrmError> {
        let deal = self.update_deal(map, event, Map::new()).await?;
        let (co_id, text) = super::change_order_summary(event);
        let when = event
            .data
            .pointer("/change_order/signed_at")
            .and_then(|v| convert_one(&Conversion::DateTime, v))
            .map(|t| t.hubspot())
            .unwrap_or_else(|| crate::timefmt::now_millis().to_string());
        let mut props = Map::new();
        props.insert(
            "hs_note_body".into(),
            Value::String(note_body(
                &text,
                None,
                &format!("Enerflo change order {co_id}"),
            )),
        );
        props.insert("hs_timestamp".into(), Value::String(when));
        let notes = &self.profile.event(CrmEventType::NoteCreated).object;
        self.create_note_once(notes, &deal, &format!("change_order:{co_id}"), props)
            .await?;
        Ok(deal)
    }
}

/// One batch upsert item's result: its id, or its error as the call's error would be.
fn batch_item(body: &Value) -> Result<String, HubSpotError> {
    if let Some(id) = body
        .get("results")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(record_id)
    {
        return Ok(id);
    }
    let Some(err) = body
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    else {
        return Err(CrmError::Unavailable {
            status: None,
            detail: "HubSpot's batch answer has neither a result nor an error".into(),
            retry_after: None,
        }
        .into());
    };
    let message = api::error_message(err);
    let category = err.get("category").and_then(Value::as_str).unwrap_or("");
    let status = err
        .get("status")
        .and_then(|s| {
            s.as_u64()
                .or_else(|| s.as_str().and_then(|t| t.parse().ok()))
        })
        .unwrap_or(0) as u16;
    if let Some(existing) = api::existing_id(&message) {
        return Err(HubSpotError::Conflict {
            existing_id: Some(existing),
            message,
        });
    }
    Err(match (category, status) {
        ("RATE_LIMITS", _) | (_, 429) | (_, 423) | (_, 500..=599) => CrmError::Unavailable {
            status: Some(207),
            detail: message,
            retry_after: None,
        },
        _ => CrmError::Rejected {
            status: if status >= 400 { status } else { 400 },
            message,
        },
    }
    .into())
}

/// A note's HTML body: the text escaped, line breaks kept, with who wrote it and our marker, cut
/// to HubSpot's limit.
fn note_body(text: &str, author: Option<&str>, marker: &str) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut body = format!("<p>{}</p>", escape(text).replace('\n', "<br>"));
    let by = author
        .map(|a| format!("{} &middot; ", escape(a)))
        .unwrap_or_default();
    let tail = format!("<p><small>{by}{}</small></p>", escape(marker));
    let max = NOTE_BODY_MAX - tail.len();
    if body.len() > max {
        let mut cut = max;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    body + &tail
}

#[cfg(test)]
mod tests;
