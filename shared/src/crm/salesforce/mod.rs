//! The `salesforce` connector (`CRM_CONNECTOR=salesforce`): every event lands as Salesforce
//! records through the mapping profile. Leads become Contacts (or Leads, by profile) upserted by
//! the external id `Enerflo_Customer_Id__c`; projects become Opportunities upserted by
//! `Enerflo_Deal_Id__c`, linked to the contact by a contact role or a lookup; status, milestone
//! and change-order events update the Opportunity; notes become a ContentNote and its
//! ContentDocumentLink, created together in one Composite call and found again on a retry, so
//! none is made twice (docs/crm-connectors.md 3.3-3.6).

pub mod api;
pub mod auth;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use reqwest::Method;
use serde_json::{Map, Value, json};

use self::api::{SalesforceApi, SalesforceError};
use super::profile::{Applied, Conversion, EventMap, Link, Profile, convert_one};
use super::{CrmAck, CrmConnector, CrmError};
use crate::canonical::{CrmEvent, CrmEventType};
use crate::wire::encode_segment;

/// The title marking a note we wrote: what a retry looks for.
pub fn note_title(note_key: &str) -> String {
    format!("Enerflo note {note_key}")
}

pub struct SalesforceConnector {
    api: Arc<SalesforceApi>,
    profile: Arc<Profile>,
    milestone_keys: BTreeMap<String, u64>,
}

impl SalesforceConnector {
    pub fn new(
        api: Arc<SalesforceApi>,
        profile: Arc<Profile>,
        milestone_keys: BTreeMap<String, u64>,
    ) -> Self {
        Self {
            api,
            profile,
            milestone_keys,
        }
    }
}

#[async_trait]
impl CrmConnector for SalesforceConnector {
    async fn deliver(&self, event: &CrmEvent) -> Result<CrmAck, CrmError> {
        let map = self.profile.event(event.event_type);
        let stage_field = self.profile.stages.property.clone();
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
                    extra.insert(stage_field, Value::String(stage.to_owned()));
                }
                self.update_deal(map, event, extra).await?
            }
            CrmEventType::MilestoneUpdated => {
                let mut extra = Map::new();
                let milestone_id = event
                    .data
                    .pointer("/milestone/id")
                    .and_then(crate::enerflo::lenient::value_to_u64);
                if let Some(field) = self
                    .profile
                    .milestone_property(milestone_id, &self.milestone_keys)
                {
                    // A cleared completion date clears the field (null in Salesforce).
                    let value = event
                        .data
                        .get("completed_date")
                        .and_then(|v| convert_one(&Conversion::Date, v))
                        .map(|d| d.salesforce())
                        .unwrap_or(Value::Null);
                    extra.insert(field.to_owned(), value);
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

/// The profile's fields as Salesforce JSON, the keys with values but `skip` (the external id in
/// the URL is never repeated in the body), plus `extra`.
fn fields(applied: &Applied, skip: Option<&str>, extra: Map<String, Value>) -> Map<String, Value> {
    let mut out: Map<String, Value> = applied
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), v.salesforce()))
        .collect();
    for (k, v) in &applied.keys {
        if Some(k.as_str()) != skip {
            out.insert(k.clone(), Value::String(v.clone()));
        }
    }
    out.extend(extra);
    out
}

fn answer_id(body: &Value) -> Option<String> {
    body.get("id")
        .or_else(|| body.get("Id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

impl SalesforceConnector {
    fn sobject(&self, object: &str, rest: &str) -> String {
        self.api
            .data_path(&format!("/sobjects/{}{rest}", encode_segment(object)))
    }

    /// Creates or updates the record: by its Salesforce id when we know it, else an upsert by the
    /// first external id with a value.
    async fn upsert(
        &self,
        map: &EventMap,
        event: &CrmEvent,
        known_id: Option<&str>,
        extra: Map<String, Value>,
    ) -> Result<String, CrmError> {
        let applied = map.apply(event);
        if let Some(id) = known_id {
            let body = Value::Object(fields(&applied, None, extra.clone()));
            let path = self.sobject(&map.object, &format!("/{}", encode_segment(id)));
            match self.api.call(Method::PATCH, &path, Some(&body)).await {
                Ok(_) => return Ok(id.to_owned()),
                // Deleted in Salesforce since we linked it: the upsert finds or recreates it.
                Err(SalesforceError::NotFound(_)) => {}
                Err(e) => return Err(e.into_crm(&format!("updating {} {id}", map.object))),
            }
        }
        let Some((field, value)) = applied.keys.first().cloned() else {
            return Err(CrmError::Rejected {
                status: 422,
                message: format!(
                    "{} event {} has none of the external id fields the profile names for {} ({})",
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
        let mut extra = extra;
        if known_id.is_none() {
            extra.extend(
                applied
                    .on_create
                    .iter()
                    .map(|(k, v)| (k.clone(), v.salesforce())),
            );
        }
        let body = Value::Object(fields(&applied, Some(&field), extra));
        let path = self.sobject(
            &map.object,
            &format!("/{}/{}", encode_segment(&field), encode_segment(&value)),
        );
        let what = format!("upserting {} {field}={value}", map.object);
        let answer = self
            .api
            .call(Method::PATCH, &path, Some(&body))
            .await
            .map_err(|e| e.into_crm(&what))?;
        // 201 and (from v46) 200 name the record; 204 (older versions) has no body: read it back.
        if let Some(id) = answer_id(&answer.body) {
            return Ok(id);
        }
        self.find_by(&map.object, &field, &value)
            .await?
            .ok_or_else(|| CrmError::Unavailable {
                status: Some(answer.status),
                detail: format!(
                    "{what}: Salesforce answered {} but the record cannot be read back",
                    answer.status
                ),
                retry_after: None,
            })
    }

    /// The record with `field` = `value`, if any.
    async fn find_by(
        &self,
        object: &str,
        field: &str,
        value: &str,
    ) -> Result<Option<String>, CrmError> {
        let path = self.sobject(
            object,
            &format!(
                "/{}/{}?fields=Id",
                encode_segment(field),
                encode_segment(value)
            ),
        );
        match self.api.call(Method::GET, &path, None).await {
            Ok(a) => Ok(answer_id(&a.body)),
            Err(SalesforceError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into_crm(&format!("finding {object} by {field}"))),
        }
    }

    async fn project(&self, map: &EventMap, event: &CrmEvent) -> Result<String, CrmError> {
        let contact = match &map.contact {
            Some(c) if !c.apply(event).keys.is_empty() => {
                Some(self.upsert(c, event, None, Map::new()).await?)
            }
            _ => None,
        };
        let mut extra = Map::new();
        if event.crm_id.is_none()
            && let Some(stage) = &self.profile.stages.first_stage
        {
            extra.insert(
                self.profile.stages.property.clone(),
                Value::String(stage.clone()),
            );
        }
        if let (Some(Link::Lookup { field }), Some(c)) = (&map.link, &contact) {
            extra.insert(field.clone(), Value::String(c.clone()));
        }
        let deal = self
            .upsert(map, event, event.crm_id.as_deref(), extra)
            .await?;
        if let (Some(Link::ContactRole { role }), Some(c)) = (&map.link, &contact) {
            self.ensure_contact_role(&deal, c, role).await?;
        }
        Ok(deal)
    }

    /// One `OpportunityContactRole` for the pair, made only when none exists.
    async fn ensure_contact_role(
        &self,
        deal: &str,
        contact: &str,
        role: &str,
    ) -> Result<(), CrmError> {
        let q = format!(
            "SELECT Id FROM OpportunityContactRole WHERE OpportunityId = '{}' AND ContactId = '{}'",
            soql_text(deal),
            soql_text(contact)
        );
        if !self.query(&q).await?.is_empty() {
            return Ok(());
        }
        let body =
            json!({"OpportunityId": deal, "ContactId": contact, "Role": role, "IsPrimary": true});
        self.api
            .call(
                Method::POST,
                &self.sobject("OpportunityContactRole", ""),
                Some(&body),
            )
            .await
            .map_err(|e| e.into_crm(&format!("linking contact {contact} to opportunity {deal}")))?;
        Ok(())
    }

    /// A SOQL query's records (first page; the connector's queries are small).
    async fn query(&self, soql: &str) -> Result<Vec<Value>, CrmError> {
        let path = self
            .api
            .data_path(&format!("/query?q={}", encode_segment(soql)));
        let a = self
            .api
            .call(Method::GET, &path, None)
            .await
            .map_err(|e| e.into_crm("querying Salesforce"))?;
        Ok(a.body
            .get("records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// The deal an install-level event is about: its Salesforce id when linked, else found by the
    /// profile's external ids; not there yet is transient (its project event may be queued).
    async fn find_deal(&self, map: &EventMap, event: &CrmEvent) -> Result<String, CrmError> {
        if let Some(id) = &event.crm_id {
            return Ok(id.clone());
        }
        let applied = map.apply(event);
        for (field, value) in &applied.keys {
            if let Some(id) = self.find_by(&map.object, field, value).await? {
                return Ok(id);
            }
        }
        Err(applied.not_created_yet(&format!("Salesforce {}", map.object)))
    }

    async fn update_deal(
        &self,
        map: &EventMap,
        event: &CrmEvent,
        extra: Map<String, Value>,
    ) -> Result<String, CrmError> {
        let deal = self.find_deal(map, event).await?;
        let applied = map.apply(event);
        let body = Value::Object(fields(&applied, None, extra));
        let path = self.sobject(&map.object, &format!("/{}", encode_segment(&deal)));
        match self.api.call(Method::PATCH, &path, Some(&body)).await {
            Ok(_) => Ok(deal),
            Err(SalesforceError::NotFound(m)) => Err(CrmError::Unavailable {
                status: Some(404),
                detail: format!("Salesforce {} {deal} is gone: {m}", map.object),
                retry_after: None,
            }),
            Err(e) => Err(e.into_crm(&format!("updating {} {deal}", map.object))),
        }
    }

    async fn note(&self, map: &EventMap, event: &CrmEvent) -> Result<String, CrmError> {
        let deal_map = self.profile.event(CrmEventType::StatusChanged);
        let deal = self.find_deal(deal_map, event).await?;
        let applied = map.apply(event);
        let Some((_, note_key)) = applied.keys.first().cloned() else {
            return Err(CrmError::Rejected {
                status: 422,
                message: format!("note event {} carries no note id", event.id),
            });
        };
        let text = applied
            .properties
            .get("Content")
            .map(|v| match v.salesforce() {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .unwrap_or_default();
        let author = event.data.pointer("/note/author").and_then(Value::as_str);
        self.create_note_once(&deal, &note_key, &text, author).await
    }

    /// A ContentNote linked to `deal`, in one Composite call (both or neither), unless a note
    /// with this key's title is already linked to it.
    async fn create_note_once(
        &self,
        deal: &str,
        note_key: &str,
        text: &str,
        author: Option<&str>,
    ) -> Result<String, CrmError> {
        let title = note_title(note_key);
        if let Some(existing) = self.find_note(deal, &title).await? {
            return Ok(existing);
        }
        let html = note_html(text, author);
        let content = base64::engine::general_purpose::STANDARD.encode(html.as_bytes());
        let body = json!({
            "allOrNone": true,
            "compositeRequest": [
                {"method": "POST", "referenceId": "note",
                 "url": self.sobject("ContentNote", ""),
                 "body": {"Title": title, "Content": content}},
                {"method": "POST", "referenceId": "link",
                 "url": self.sobject("ContentDocumentLink", ""),
                 "body": {"ContentDocumentId": "@{note.id}", "LinkedEntityId": deal,
                          "ShareType": "V", "Visibility": "AllUsers"}},
            ],
        });
        let path = self.api.data_path("/composite");
        let answer = self
            .api
            .call(Method::POST, &path, Some(&body))
            .await
            .map_err(|e| e.into_crm(&format!("creating the note on {deal}")))?;
        let items = answer
            .body
            .get("compositeResponse")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let failed: Vec<&Value> = items
            .iter()
            .filter(|i| {
                i.get("httpStatusCode")
                    .and_then(Value::as_u64)
                    .is_none_or(|s| s >= 300)
            })
            .collect();
        if items.len() < 2 || !failed.is_empty() {
            // The first real failure, not the `PROCESSING_HALTED` of the rolled-back others.
            let cause = failed
                .iter()
                .map(|i| i.get("body").cloned().unwrap_or(Value::Null))
                .find(|b| !api::error_codes(b).iter().all(|c| c == "PROCESSING_HALTED"))
                .or_else(|| failed.first().and_then(|i| i.get("body").cloned()))
                .unwrap_or(Value::Null);
            let codes = api::error_codes(&cause);
            let message = format!(
                "creating the note on {deal}: {}",
                api::error_message(&cause)
            );
            let transient = codes
                .iter()
                .any(|c| c == "UNABLE_TO_LOCK_ROW" || c == "SERVER_UNAVAILABLE")
                || items.len() < 2;
            return Err(if transient {
                CrmError::Unavailable {
                    status: Some(answer.status),
                    detail: message,
                    retry_after: None,
                }
            } else {
                CrmError::Rejected {
                    status: 400,
                    message,
                }
            });
        }
        items
            .iter()
            .find(|i| i.get("referenceId").and_then(Value::as_str) == Some("note"))
            .and_then(|i| i.get("body"))
            .and_then(answer_id)
            .ok_or_else(|| CrmError::Unavailable {
                status: Some(answer.status),
                detail: "Salesforce created the note but named no id".into(),
                retry_after: None,
            })
    }

    /// The ContentNote titled `title` among the documents linked to `deal`.
    async fn find_note(&self, deal: &str, title: &str) -> Result<Option<String>, CrmError> {
        let q = format!(
            "SELECT ContentDocumentId FROM ContentDocumentLink WHERE LinkedEntityId = '{}'",
            soql_text(deal)
        );
        let docs = self.query(&q).await?;
        for doc in docs.iter().take(200) {
            let Some(id) = doc.get("ContentDocumentId").and_then(Value::as_str) else {
                continue;
            };
            let path = self.sobject(
                "ContentNote",
                &format!("/{}?fields=Title", encode_segment(id)),
            );
            match self.api.call(Method::GET, &path, None).await {
                Ok(a) if a.body.get("Title").and_then(Value::as_str) == Some(title) => {
                    return Ok(Some(id.to_owned()));
                }
                Ok(_) | Err(SalesforceError::NotFound(_)) => {}
                Err(e) => return Err(e.into_crm("reading a linked note")),
            }
        }
        Ok(None)
    }

    async fn change_order(&self, map: &EventMap, event: &CrmEvent) -> Result<String, CrmError> {
        let deal = self.update_deal(map, event, Map::new()).await?;
        let (co_id, text) = super::change_order_summary(event);
        self.create_note_once(&deal, &format!("change order {co_id}"), &text, None)
            .await?;
        Ok(deal)
    }
}

/// A value inside a SOQL string literal: quotes and backslashes escaped.
fn soql_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

/// A ContentNote body: escaped HTML (Salesforce requires special characters escaped).
fn note_html(text: &str, author: Option<&str>) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    let mut html = format!("<p>{}</p>", escape(text).replace('\n', "<br>"));
    if let Some(a) = author {
        html.push_str(&format!("<p>{}</p>", escape(a)));
    }
    html
}

#[cfg(test)]
mod tests;
