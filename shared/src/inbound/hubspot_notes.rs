//! HubSpot sends no webhook for notes, so notes written in HubSpot on synced deals reach Enerflo
//! through this poll (the `hubspot-notes-poll` function on a schedule; a periodic task in the
//! local runner).
//!
//! One run: search the notes modified since the stored watermark minus an overlap (search lags
//! writes by seconds; docs/crm-connectors.md 2.13), oldest first, page by page; skip our own
//! notes (their `enerflo_note_id` property is set, `crate::crm::hubspot::NOTE_KEY`) and notes an
//! earlier run handled; read each note's deals (v4 associations) and hand the note to the
//! canonical notes route ([`crate::inbound::notes`]: `crm_note_id` = the HubSpot note id, `text`
//! = `hs_note_body` without its HTML, `author` = its owner's name) for the first deal linked to an
//! install, so idempotency and echo rules are that route's. The watermark (the newest
//! modification handled) and the ids seen inside the overlap are stored under
//! `StateKey::HubSpotNotesWatermark`. A transient failure (HubSpot, Enerflo, the store) ends the
//! run without moving the watermark past that note, so the next run tries it again; a note that
//! still fails after [`GIVE_UP`] (HubSpot's own retry horizon) is logged as an error and passed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method as HttpMethod};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::crm::CrmError;
use crate::crm::hubspot::NOTE_KEY;
use crate::crm::hubspot::api::{HubSpotApi, HubSpotError};
use crate::enerflo::lenient::value_to_string;
use crate::http::HttpRequest;
use crate::http::router::{InboundRoute, RouteParams};
use crate::store::{
    ClaimStore, EntityKind, IdForm, IdRef, StoreError, SyncState, SyncStateStore, XrefStore,
};
use crate::sync::{EntityLease, StateKey};
use crate::timefmt::now_rfc3339;
use crate::wire::encode_segment;

/// How far before the watermark a search starts.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(5 * 60);
/// Notes per search page (HubSpot's maximum).
pub const PAGE_SIZE: usize = 100;
/// Pages read in one run at most; the next run goes on from the watermark.
pub const DEFAULT_MAX_PAGES: usize = 10;
/// How long a note that keeps failing transiently is retried before it is passed (logged).
pub const GIVE_UP: Duration = Duration::from_secs(3 * 86_400);

pub struct NotesPoll {
    pub api: Arc<HubSpotApi>,
    /// The canonical notes route (`crate::inbound::notes::NotesRoute`).
    pub notes: Arc<dyn InboundRoute>,
    pub xref: Arc<dyn XrefStore>,
    pub state: Arc<dyn SyncStateStore>,
    /// One run at a time (a lease on the watermark).
    pub claims: Arc<dyn ClaimStore>,
    /// HubSpot's notes object (the profile's `note.created` object) and deals object.
    pub notes_object: String,
    pub deals_object: String,
    pub overlap: Duration,
    pub max_pages: usize,
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PollReport {
    /// Notes the searches returned.
    pub read: usize,
    /// Created in Enerflo.
    pub delivered: usize,
    /// Already in Enerflo (a repeat, or our own note echoing): nothing written.
    pub repeats: usize,
    /// Our own notes (`enerflo_note_id` set): skipped.
    pub own: usize,
    /// Handled by an earlier run: skipped.
    pub seen: usize,
    /// On no deal linked to an install: not ours to sync.
    pub unlinked: usize,
    /// Refused for good (empty text, validation) or given up on: logged.
    pub rejected: usize,
    /// Why the run ended early (a transient failure), if it did.
    pub stopped: Option<String>,
    /// Another run holds the lease: nothing was done.
    pub busy: bool,
    pub watermark_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("HubSpot note search failed: {0}")]
    Search(CrmError),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
}

/// The stored position.
#[derive(Debug, Default, PartialEq)]
struct Watermark {
    ms: i64,
    /// Note id -> its modification time, for the notes inside the overlap already handled.
    seen: BTreeMap<String, i64>,
}

impl Watermark {
    fn from_state(s: &SyncState) -> Option<Self> {
        let ms = s.data.get("watermark_ms")?.as_i64()?;
        let seen = s
            .data
            .get("seen")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_i64().map(|t| (k.clone(), t)))
                    .collect()
            })
            .unwrap_or_default();
        Some(Self { ms, seen })
    }

    fn to_state(&self) -> SyncState {
        SyncState {
            hash: self.ms.to_string(),
            data: json!({"watermark_ms": self.ms, "seen": self.seen}),
            updated_at: now_rfc3339(),
            seq: 0,
        }
    }
}

/// How one note went.
enum Outcome {
    Delivered,
    Repeat,
    Unlinked,
    Rejected(String),
    Transient(String),
}

/// A HubSpot datetime (epoch ms, or ISO 8601) as epoch ms.
pub fn hubspot_millis(v: &Value) -> Option<i64> {
    let s = value_to_string(v)?;
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let t = OffsetDateTime::parse(&s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `hs_note_body` as plain text: tags dropped (`<br>` and block edges become line breaks, HubSpot's
/// editor writing each line as a `<p>`), the common entities decoded, blank runs collapsed.
pub fn strip_html(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        text.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            // A lone `<` is text.
            text.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let tag = rest[start + 1..start + end]
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if tag == "br" {
            text.push('\n');
        } else if matches!(
            tag.as_str(),
            "p" | "div" | "li" | "tr" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6"
        ) && !text.ends_with('\n')
        {
            // A block's edges are one line break, however many blocks meet there.
            text.push('\n');
        }
        rest = &rest[start + end + 1..];
    }
    text.push_str(rest);
    let decoded = decode_entities(&text);
    let mut out = String::new();
    let mut blank_run = 0;
    for line in decoded
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    {
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank_run = 0;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&line);
    }
    out.trim().to_owned()
}

fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let end = tail.find(';').filter(|e| *e <= 10);
        let decoded = end.and_then(|e| {
            let name = &tail[1..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                "middot" => Some('\u{b7}'),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &tail[e + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn transient(e: HubSpotError, what: &str) -> Result<Outcome, CrmError> {
    match e.into_crm(what) {
        e @ CrmError::Unavailable { .. } => Err(e),
        e => Ok(Outcome::Rejected(e.to_string())),
    }
}

impl NotesPoll {
    /// One run, as of `now_ms` (Unix milliseconds).
    pub async fn run_once(&self, now_ms: i64) -> Result<PollReport, PollError> {
        let lease = match EntityLease::acquire(
            &self.claims,
            &StateKey::HubSpotNotesWatermark,
            Duration::ZERO,
        )
        .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::info!(reason = %e, "HubSpot notes poll: another run holds the lease");
                return Ok(PollReport {
                    busy: true,
                    ..PollReport::default()
                });
            }
        };
        let out = self.run_locked(now_ms).await;
        lease.release().await;
        out
    }

    async fn run_locked(&self, now_ms: i64) -> Result<PollReport, PollError> {
        let key = StateKey::HubSpotNotesWatermark.scope();
        let overlap = i64::try_from(self.overlap.as_millis()).unwrap_or(i64::MAX / 4);
        let mut mark = self
            .state
            .get_state(&key)
            .await?
            .and_then(|s| Watermark::from_state(&s))
            .unwrap_or_default();
        if mark.ms == 0 {
            // First run: from now on (minus the overlap), not every note HubSpot ever held.
            mark.ms = now_ms - overlap;
        }
        let since = mark.ms - overlap;
        let mut report = PollReport::default();
        let mut high = mark.ms;
        let mut owners: HashMap<String, Option<String>> = HashMap::new();
        let mut after: Option<String> = None;
        'pages: for _ in 0..self.max_pages.max(1) {
            let page = self
                .search(since, after.as_deref())
                .await
                .map_err(PollError::Search)?;
            let results = page
                .get("results")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for note in &results {
                report.read += 1;
                let Some(id) = note.get("id").and_then(id_of) else {
                    continue;
                };
                let props = note.get("properties").cloned().unwrap_or(Value::Null);
                let modified = props
                    .get("hs_lastmodifieddate")
                    .and_then(hubspot_millis)
                    .or_else(|| note.get("updatedAt").and_then(hubspot_millis))
                    .unwrap_or(mark.ms);
                if mark.seen.contains_key(&id) {
                    report.seen += 1;
                    high = high.max(modified);
                    continue;
                }
                if props.get(NOTE_KEY).and_then(value_to_string).is_some() {
                    report.own += 1;
                } else {
                    let outcome = match self.deliver(&id, &props, &mut owners).await {
                        Ok(o) => o,
                        Err(e) => Outcome::Transient(e.to_string()),
                    };
                    match outcome {
                        Outcome::Delivered => report.delivered += 1,
                        Outcome::Repeat => report.repeats += 1,
                        Outcome::Unlinked => report.unlinked += 1,
                        Outcome::Rejected(why) => {
                            tracing::warn!(note = %id, reason = %why, "HubSpot note not synced to Enerflo");
                            report.rejected += 1;
                        }
                        Outcome::Transient(why)
                            if now_ms - modified > GIVE_UP.as_millis() as i64 =>
                        {
                            tracing::error!(note = %id, reason = %why, "HubSpot note still failing after 3 days; passed");
                            report.rejected += 1;
                        }
                        Outcome::Transient(why) => {
                            tracing::warn!(note = %id, reason = %why, "HubSpot notes poll stopped; the next run retries this note");
                            report.stopped = Some(why);
                            break 'pages;
                        }
                    }
                }
                mark.seen.insert(id, modified);
                high = high.max(modified);
            }
            after = page.pointer("/paging/next/after").and_then(value_to_string);
            if after.is_none() || results.is_empty() {
                break;
            }
        }
        mark.ms = mark.ms.max(high);
        let floor = mark.ms - overlap;
        mark.seen.retain(|_, t| *t >= floor);
        self.state.put_state(&key, &mark.to_state()).await?;
        report.watermark_ms = mark.ms;
        tracing::info!(
            read = report.read,
            delivered = report.delivered,
            own = report.own,
            watermark_ms = mark.ms,
            "HubSpot notes poll"
        );
        Ok(report)
    }

    async fn search(&self, since_ms: i64, after: Option<&str>) -> Result<Value, CrmError> {
        let mut body = json!({
            "filterGroups": [{"filters": [
                {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": since_ms.to_string()}
            ]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": ["hs_note_body", "hs_lastmodifieddate", "hs_timestamp", "hubspot_owner_id", NOTE_KEY],
            "limit": PAGE_SIZE,
        });
        if let Some(a) = after {
            body["after"] = json!(a);
        }
        let path = format!(
            "/crm/v3/objects/{}/search",
            encode_segment(&self.notes_object)
        );
        self.api
            .call(Method::POST, &path, &[], Some(&body))
            .await
            .map(|a| a.body)
            .map_err(|e| e.into_crm("searching HubSpot notes"))
    }

    /// The deals a note is associated with.
    async fn deals_of(&self, note: &str) -> Result<Option<Vec<String>>, HubSpotError> {
        let path = format!(
            "/crm/v4/objects/{}/{}/associations/{}",
            encode_segment(&self.notes_object),
            encode_segment(note),
            encode_segment(&self.deals_object)
        );
        let mut deals = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..5 {
            let mut query = vec![("limit", "500")];
            if let Some(a) = after.as_deref() {
                query.push(("after", a));
            }
            let answer = match self.api.call(Method::GET, &path, &query, None).await {
                Ok(a) => a,
                // Deleted since the search saw it.
                Err(HubSpotError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            deals.extend(
                answer
                    .body
                    .get("results")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.get("toObjectId").or_else(|| r.get("id")).and_then(id_of)),
            );
            after = answer
                .body
                .pointer("/paging/next/after")
                .and_then(value_to_string);
            if after.is_none() {
                break;
            }
        }
        Ok(Some(deals))
    }

    /// The owner's name (or e-mail), once per run per owner; unknown on any failure (the
    /// owners scope may not be granted): a note is not held back for its author.
    async fn owner_name(
        &self,
        owner: &str,
        cache: &mut HashMap<String, Option<String>>,
    ) -> Option<String> {
        if let Some(known) = cache.get(owner) {
            return known.clone();
        }
        let path = format!("/crm/v3/owners/{}", encode_segment(owner));
        let name = match self.api.call(Method::GET, &path, &[], None).await {
            Ok(a) => {
                let part = |k: &str| a.body.get(k).and_then(value_to_string);
                let full = [part("firstName"), part("lastName")]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                Some(full)
                    .filter(|f| !f.is_empty())
                    .or_else(|| part("email"))
            }
            Err(e) => {
                tracing::debug!(owner, error = ?e.into_crm("reading the owner"), "HubSpot owner unknown");
                None
            }
        };
        cache.insert(owner.to_owned(), name.clone());
        name
    }

    async fn deliver(
        &self,
        id: &str,
        props: &Value,
        owners: &mut HashMap<String, Option<String>>,
    ) -> Result<Outcome, CrmError> {
        let text = strip_html(
            &props
                .get("hs_note_body")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_default(),
        );
        if text.is_empty() {
            return Ok(Outcome::Rejected(
                "the note has no text (attachments only?)".into(),
            ));
        }
        let deals = match self.deals_of(id).await {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(Outcome::Unlinked),
            Err(e) => return transient(e, &format!("reading the deals of note {id}")),
        };
        let mut deal = None;
        for d in deals {
            let linked = self
                .xref
                .resolve(EntityKind::Project, &IdRef::new(IdForm::Crm, &d))
                .await
                .map_err(|e| CrmError::Unavailable {
                    status: None,
                    detail: format!("state store: {e}"),
                    retry_after: None,
                })?;
            if linked.is_some() {
                deal = Some(d);
                break;
            }
        }
        let Some(deal) = deal else {
            return Ok(Outcome::Unlinked);
        };
        let author = match props.get("hubspot_owner_id").and_then(value_to_string) {
            Some(owner) => self.owner_name(&owner, owners).await,
            None => None,
        };
        let body = json!({"crm_note_id": id, "text": text, "author": author});
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let req = HttpRequest {
            method: HttpMethod::POST,
            path: format!("/crm/installs/{}/notes", encode_segment(&deal)),
            query: None,
            headers,
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        };
        let params = RouteParams {
            install: Some(deal.clone()),
            milestone: None,
        };
        let resp = self.notes.handle(&req, &params).await;
        let status = resp.status.as_u16();
        let answer = resp.body_json();
        let detail = answer
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        Ok(match status {
            201 => Outcome::Delivered,
            200..=299 => Outcome::Repeat,
            429 | 500..=599 => {
                Outcome::Transient(format!("the notes route answered {status}: {detail}"))
            }
            // Linked to a project whose install Enerflo has not created yet.
            404 if answer["type"]
                .as_str()
                .is_some_and(|t| t.ends_with(":unlinked-install")) =>
            {
                Outcome::Transient(format!("deal {deal}: {detail}"))
            }
            _ => Outcome::Rejected(format!("the notes route answered {status}: {detail}")),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::Config;
    use crate::enerflo::client::HttpEnerfloClient;
    use crate::queue::embedded::EmbeddedQueue;
    use crate::runtime::{self, Ports};
    use crate::store::embedded::{EmbeddedStore, open_database};
    use std::sync::atomic::{AtomicU64, Ordering};
    use wiremock::matchers::{body_partial_json, method, path};
    use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

    const INSTALL: u64 = 700001;
    const DEAL: &str = "9001";

    struct Kit {
        hubspot: MockServer,
        enerflo: MockServer,
        store: Arc<EmbeddedStore>,
        poll: NotesPoll,
    }

    async fn kit() -> Kit {
        let hubspot = MockServer::start().await;
        let enerflo = MockServer::start().await;
        let vars: BTreeMap<&str, String> = [
            ("ENERFLO_BASE_URL", enerflo.uri()),
            ("ENERFLO_API_KEY", "fake-enerflo-key".into()),
            ("CRM_CONNECTOR", "hubspot".into()),
            ("HUBSPOT_ACCESS_TOKEN", "fake-hubspot-token".into()),
            ("HUBSPOT_BASE_URL", hubspot.uri()),
            ("INBOUND_WAIT_SECS", "2".into()),
        ]
        .into_iter()
        .collect();
        let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let ports = Ports::one_store(
            store.clone(),
            Arc::new(EmbeddedQueue::new(open_database(None).unwrap(), [])),
        );
        let client = HttpEnerfloClient::for_tests(&enerflo.uri());
        let api = runtime::hubspot_api(&config.hubspot_crm().unwrap().api).unwrap();
        let poll = runtime::hubspot_notes_poll(&config, &ports, client, api);
        store
            .link(
                EntityKind::Project,
                &[
                    IdRef::new(IdForm::Install, INSTALL),
                    IdRef::new(IdForm::Crm, DEAL),
                ],
            )
            .await
            .unwrap();
        Mock::given(method("POST"))
            .and(path("/api/v3/installs/700001/notes"))
            .respond_with(NewIds(Arc::new(AtomicU64::new(30001))))
            .mount(&enerflo)
            .await;
        for (deal, note) in [(DEAL, "501"), (DEAL, "502"), ("9002", "503")] {
            Mock::given(method("GET"))
                .and(path(format!("/crm/v4/objects/notes/{note}/associations/deals")))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                    "results": [{"toObjectId": deal.parse::<u64>().unwrap(), "associationTypes": []}]
                })))
                .mount(&hubspot)
                .await;
        }
        Mock::given(method("GET"))
            .and(path("/crm/v3/owners/77"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"id": "77", "firstName": "Ann", "lastName": "Example"})),
            )
            .mount(&hubspot)
            .await;
        Kit {
            hubspot,
            enerflo,
            store,
            poll,
        }
    }

    /// Enerflo's notes endpoint: 201 with a new note id each time.
    struct NewIds(Arc<AtomicU64>);

    impl Respond for NewIds {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            ResponseTemplate::new(201)
                .set_body_json(json!({"id": self.0.fetch_add(1, Ordering::SeqCst)}))
        }
    }

    fn note(id: &str, body: &str, modified: &str, own: Option<&str>) -> Value {
        json!({"id": id, "properties": {
            "hs_note_body": body, "hs_lastmodifieddate": modified, "hubspot_owner_id": "77",
            "enerflo_note_id": own,
        }, "createdAt": modified, "updatedAt": modified, "archived": false})
    }

    /// The search: answers whatever `notes` holds (a test changes it between runs), paged two
    /// at a time, and notes the GTE value of every query.
    #[derive(Clone, Default)]
    struct Search {
        notes: Arc<std::sync::Mutex<Vec<Value>>>,
        since: Arc<std::sync::Mutex<Vec<i64>>>,
    }

    impl Respond for Search {
        fn respond(&self, req: &Request) -> ResponseTemplate {
            let q: Value = serde_json::from_slice(&req.body).unwrap();
            let since: i64 = q["filterGroups"][0]["filters"][0]["value"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            self.since.lock().unwrap().push(since);
            let start: usize = q["after"].as_str().map_or(0, |a| a.parse().unwrap());
            let all: Vec<Value> = self
                .notes
                .lock()
                .unwrap()
                .iter()
                .filter(|n| {
                    hubspot_millis(&n["properties"]["hs_lastmodifieddate"]).unwrap() >= since
                })
                .cloned()
                .collect();
            let page: Vec<Value> = all.iter().skip(start).take(2).cloned().collect();
            let mut body = json!({"total": all.len(), "results": page});
            if start + 2 < all.len() {
                body["paging"] = json!({"next": {"after": (start + 2).to_string()}});
            }
            ResponseTemplate::new(200).set_body_json(body)
        }
    }

    async fn mount_search(k: &Kit) -> Search {
        let search = Search::default();
        Mock::given(method("POST"))
            .and(path("/crm/v3/objects/notes/search"))
            .and(body_partial_json(json!({
                "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]
            })))
            .respond_with(search.clone())
            .mount(&k.hubspot)
            .await;
        search
    }

    async fn enerflo_notes(k: &Kit) -> Vec<Value> {
        k.enerflo
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.method.as_str() == "POST")
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }

    fn ms(iso: &str) -> i64 {
        hubspot_millis(&json!(iso)).unwrap()
    }

    #[tokio::test]
    async fn a_hubspot_note_reaches_enerflo_once_ours_are_skipped_and_the_watermark_advances() {
        let k = kit().await;
        let search = mount_search(&k).await;
        let t0 = ms("2026-11-28T10:00:00.000Z");
        // GIVEN a note written in HubSpot on a synced deal, one of ours (pushed from Enerflo), and
        // one on a deal that is not synced
        *search.notes.lock().unwrap() = vec![
            note(
                "501",
                "<p>Site visit <b>booked</b> &amp; confirmed</p><p>Gate code 1234</p>",
                "2026-11-28T10:01:00.000Z",
                None,
            ),
            note(
                "600",
                "<p>From Enerflo</p>",
                "2026-11-28T10:02:00.000Z",
                Some("30000"),
            ),
            note("503", "<p>Other deal</p>", "2026-11-28T10:03:00.000Z", None),
        ];
        // WHEN the poll runs (its first run starts at now - overlap)
        let first = k.poll.run_once(t0 + 5 * 60 * 1000).await.unwrap();
        // THEN the HubSpot note is in Enerflo, as text, with its author; ours is skipped
        assert_eq!(
            (
                first.read,
                first.delivered,
                first.own,
                first.unlinked,
                first.stopped.as_deref()
            ),
            (3, 1, 1, 1, None),
            "{first:?}"
        );
        assert_eq!(
            enerflo_notes(&k).await,
            vec![json!({"note": "Site visit booked & confirmed\nGate code 1234"})]
        );
        assert_eq!(first.watermark_ms, ms("2026-11-28T10:03:00.000Z"));
        // ... and the watermark is stored
        let stored = k
            .store
            .get_state(&StateKey::HubSpotNotesWatermark.scope())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.data["watermark_ms"], first.watermark_ms);

        // WHEN it runs again with one more note (the first three still inside the overlap)
        search.notes.lock().unwrap().push(note(
            "502",
            "Permit filed",
            "2026-11-28T10:20:00.000Z",
            None,
        ));
        let second = k.poll.run_once(t0 + 30 * 60 * 1000).await.unwrap();
        // THEN the search started an overlap before the watermark, the earlier notes were not
        // handed over again, the new one was, and the watermark moved to it
        assert_eq!(
            *search.since.lock().unwrap().last().unwrap(),
            first.watermark_ms - 5 * 60 * 1000
        );
        assert_eq!((second.seen, second.delivered), (3, 1), "{second:?}");
        assert_eq!(second.watermark_ms, ms("2026-11-28T10:20:00.000Z"));
        let sent = enerflo_notes(&k).await;
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1], json!({"note": "Permit filed"}));

        // WHEN the seen-set no longer covers note 501 (it left the overlap) but search returns it
        // again, the notes route's idempotency still writes nothing
        let third = {
            let mut mark = Watermark::from_state(
                &k.store
                    .get_state(&StateKey::HubSpotNotesWatermark.scope())
                    .await
                    .unwrap()
                    .unwrap(),
            )
            .unwrap();
            mark.seen.clear();
            k.store
                .put_state(&StateKey::HubSpotNotesWatermark.scope(), &mark.to_state())
                .await
                .unwrap();
            search.notes.lock().unwrap()[0]["properties"]["hs_lastmodifieddate"] =
                json!("2026-11-28T10:21:00.000Z");
            k.poll.run_once(t0 + 31 * 60 * 1000).await.unwrap()
        };
        assert_eq!(third.repeats, 2, "{third:?}");
        assert_eq!(enerflo_notes(&k).await.len(), 2);
    }

    #[tokio::test]
    async fn a_transient_failure_stops_the_run_before_the_note_and_the_next_run_delivers_it() {
        let k = kit().await;
        let search = mount_search(&k).await;
        let t0 = ms("2026-11-28T10:00:00.000Z");
        *search.notes.lock().unwrap() = vec![
            note("501", "first", "2026-11-28T10:01:00.000Z", None),
            note("502", "second", "2026-11-28T10:02:00.000Z", None),
        ];
        // HubSpot answers 500 once when the second note's deals are read.
        Mock::given(method("GET"))
            .and(path("/crm/v4/objects/notes/502/associations/deals"))
            .respond_with(ResponseTemplate::new(500))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&k.hubspot)
            .await;
        let first = k.poll.run_once(t0 + 5 * 60 * 1000).await.unwrap();
        assert_eq!(first.delivered, 1, "{first:?}");
        assert!(first.stopped.is_some());
        assert_eq!(first.watermark_ms, ms("2026-11-28T10:01:00.000Z"));
        let second = k.poll.run_once(t0 + 6 * 60 * 1000).await.unwrap();
        assert_eq!((second.seen, second.delivered), (1, 1), "{second:?}");
        assert_eq!(second.watermark_ms, ms("2026-11-28T10:02:00.000Z"));
        let texts: Vec<Value> = enerflo_notes(&k)
            .await
            .into_iter()
            .map(|b| b["note"].clone())
            .collect();
        assert_eq!(texts, [json!("first"), json!("second")]);
    }

    #[test]
    fn note_bodies_lose_their_html() {
        assert_eq!(
            strip_html(
                "<div>Line one<br/>Line&nbsp;two</div><p></p><p></p><p>x &lt; y &#8212; &#x41;</p>"
            ),
            "Line one\nLine two\nx < y \u{2014} A"
        );
        assert_eq!(
            strip_html("<p>a</p><p><br></p><p><br></p><p>b</p>"),
            "a\n\nb"
        );
        assert_eq!(strip_html("a < b and c"), "a < b and c");
        assert_eq!(strip_html("<p>  </p>"), "");
        assert_eq!(strip_html("AT&T"), "AT&T");
    }
}
