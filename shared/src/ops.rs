//! Operator logic shared by the `enerflo-sync-ops` CLI (`infra/ops`) and the operator console
//! (`infra/console`): list and inspect dead letters with their reasons, replay them (all, by
//! stage, by time range, by entity, or exactly the ones an operator confirmed) to their queue,
//! look up an entity's cross-references and recent events, and re-run one event from the event
//! log. Works against AWS (or moto, via `AWS_ENDPOINT_URL`), against a stopped local runner's
//! `DATA_DIR`, and on a running local runner's own store and queue ([`Backend`]'s fields).

use std::path::Path;
use std::sync::Arc;

use std::collections::BTreeSet;

use anyhow::{Context, anyhow};

use crate::classify::Stage;
use crate::config::TableAccess;
use crate::queue::embedded::{EmbeddedQueue, meta_of};
use crate::queue::sqs::{SqsEventQueue, SqsStageQueues};
use crate::queue::{DeadLetter, DeadLetterAdmin, EventQueue, MessageMeta, QueueMessage};
use crate::runtime::CONSUMER_STAGES;
use crate::store::dynamo::DynamoStore;
use crate::store::embedded::{EmbeddedStore, open_database};
use crate::store::{
    EntityKind, EntityLink, EventLog, EventRecord, IdForm, IdRef, SyncStateStore, XrefStore,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The ports the tool needs, on one backend.
pub struct Backend {
    pub xref: Arc<dyn XrefStore>,
    pub log: Arc<dyn EventLog>,
    /// Last synced state (read only).
    pub state: Arc<dyn SyncStateStore>,
    pub queue: Arc<dyn EventQueue>,
    pub dlq: Arc<dyn DeadLetterAdmin>,
    /// Stages with a queue on this backend.
    pub stages: Vec<Stage>,
}

impl Backend {
    /// A local runner's state. The runner must be stopped: its database is single-process.
    pub fn local(data_dir: &Path) -> anyhow::Result<Self> {
        if !data_dir.join("sync.redb").exists() {
            return Err(anyhow!(
                "{} holds no local runner state (no sync.redb)",
                data_dir.display()
            ));
        }
        let db = open_database(Some(data_dir)).map_err(|e| {
            anyhow!(
                "cannot open {} ({e}); stop the local runner first",
                data_dir.display()
            )
        })?;
        let store = Arc::new(EmbeddedStore::new(db.clone()));
        let queue = Arc::new(EmbeddedQueue::new(db, CONSUMER_STAGES.iter().copied()));
        Ok(Self {
            xref: store.clone(),
            log: store.clone(),
            state: store,
            queue: queue.clone(),
            dlq: queue,
            stages: CONSUMER_STAGES.to_vec(),
        })
    }

    /// DynamoDB + SQS from the same variables the Lambdas use (`TABLE_NAME`, `<STAGE>_QUEUE_URL`,
    /// `<STAGE>_DLQ_URL`, `AWS_ENDPOINT_URL`, the usual AWS credentials).
    pub async fn aws(table: &TableAccess) -> anyhow::Result<Self> {
        let sdk = crate::runtime::aws_sdk_config().await;
        let store = Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            table.table_name.clone(),
        ));
        let queues = table
            .queues
            .iter()
            .map(|(s, u)| {
                (
                    *s,
                    SqsStageQueues {
                        url: u.url.clone(),
                        dlq_url: u.dlq_url.clone(),
                    },
                )
            })
            .collect();
        let stages = table.queues.keys().copied().collect();
        let queue = Arc::new(SqsEventQueue::new(aws_sdk_sqs::Client::new(&sdk), queues));
        Ok(Self {
            xref: store.clone(),
            log: store.clone(),
            state: store,
            queue: queue.clone(),
            dlq: queue,
            stages,
        })
    }

    pub fn stages_for(&self, stage: Option<Stage>) -> anyhow::Result<Vec<Stage>> {
        match stage {
            Some(s) if self.stages.contains(&s) => Ok(vec![s]),
            Some(s) => Err(anyhow!(
                "stage {s} has no queue here (set {}_QUEUE_URL and {}_DLQ_URL)",
                s.env_prefix(),
                s.env_prefix()
            )),
            None => Ok(self.stages.clone()),
        }
    }
}

/// Which dead letters an operation applies to.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub stage: Option<Stage>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// A FIFO group: `deal:<uuid>`, `install:<id>`, `customer:<id>`.
    pub entity: Option<String>,
    /// Only these dead letters (message ids): what an operator was shown and confirmed.
    pub message_ids: Option<BTreeSet<String>>,
}

impl Filter {
    pub fn matches(&self, dead: &DeadLetter) -> bool {
        let failed_at = OffsetDateTime::parse(&dead.failed_at, &Rfc3339).ok();
        let in_range = |t: Option<OffsetDateTime>| match (t, self.since, self.until) {
            (None, None, None) => true,
            (None, _, _) => false,
            (Some(t), since, until) => since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u),
        };
        let entity_ok = self
            .entity
            .as_deref()
            .is_none_or(|e| dead.attributes.get("group").map(String::as_str) == Some(e));
        let chosen = self
            .message_ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&dead.message_id));
        in_range(failed_at) && entity_ok && chosen
    }
}

pub fn parse_time(s: &str) -> anyhow::Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .with_context(|| format!("`{s}` is not an RFC 3339 time (e.g. 2026-11-28T06:00:00Z)"))
}

/// How long SQS hides a dead letter we are about to replay (it is deleted once re-sent); what we
/// only looked at is released at once.
const HOLD_SECS: u32 = 120;
const PEEK_SECS: u32 = 30;

async fn release(backend: &Backend, stage: Stage, handle: &str) {
    if let Err(e) = backend.dlq.release_dead_letter(stage, handle).await {
        eprintln!("warning: a dead letter stays hidden until its visibility timeout ends: {e}");
    }
}
pub const MAX_PER_STAGE: usize = 10_000;

pub async fn list_dead_letters(
    backend: &Backend,
    filter: &Filter,
) -> anyhow::Result<Vec<DeadLetter>> {
    list_dead_letters_max(backend, filter, MAX_PER_STAGE).await
}

/// [`list_dead_letters`], looking at no more than `max_per_stage` dead letters of each stage.
pub async fn list_dead_letters_max(
    backend: &Backend,
    filter: &Filter,
    max_per_stage: usize,
) -> anyhow::Result<Vec<DeadLetter>> {
    let mut out = Vec::new();
    for stage in backend.stages_for(filter.stage)? {
        let held = backend
            .dlq
            .hold_dead_letters(stage, max_per_stage, PEEK_SECS)
            .await?;
        for h in held {
            release(backend, stage, &h.handle).await;
            if filter.matches(&h.dead) {
                out.push(h.dead);
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub replayed: usize,
    pub failed: Vec<String>,
}

/// Re-sends matching dead letters to their stage queue (as replays: fresh queue dedupe ids, same
/// event log entry) and removes each from its DLQ once re-sent. `progress(done, total)` is called
/// after each message.
pub async fn replay(
    backend: &Backend,
    filter: &Filter,
    dry_run: bool,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<(Vec<DeadLetter>, ReplayReport)> {
    let mut selected = Vec::new();
    let mut selected_dry = Vec::new();
    for stage in backend.stages_for(filter.stage)? {
        let held = backend
            .dlq
            .hold_dead_letters(stage, MAX_PER_STAGE, HOLD_SECS)
            .await?;
        for h in held {
            if filter.matches(&h.dead) && !dry_run {
                selected.push((stage, h));
            } else {
                release(backend, stage, &h.handle).await;
                if filter.matches(&h.dead) {
                    selected_dry.push(h.dead);
                }
            }
        }
    }
    let mut report = ReplayReport::default();
    if dry_run {
        return Ok((selected_dry, report));
    }
    let listed: Vec<DeadLetter> = selected.iter().map(|(_, h)| h.dead.clone()).collect();
    let total = selected.len();
    for (i, (stage, held)) in selected.into_iter().enumerate() {
        let result = async {
            let meta = meta_of(&held.dead)
                .map_err(|e| anyhow!("message {} cannot be replayed: {e}", held.dead.message_id))?;
            let msg = QueueMessage {
                meta: meta.for_replay(),
                body: held.dead.body.clone(),
            };
            backend.queue.send(&msg).await?;
            backend.dlq.remove_dead_letter(stage, &held.handle).await?;
            anyhow::Ok(())
        }
        .await;
        match result {
            Ok(()) => report.replayed += 1,
            Err(e) => report.failed.push(format!("{}: {e}", held.dead.message_id)),
        }
        progress(i + 1, total);
    }
    Ok((listed, report))
}

/// Parses an entity reference: `deal:<uuid>`, `install:<id>`, `customer:<id or uuid>`,
/// `crm:<id>`, `short_code:<code>`, `survey:<id>`.
pub fn entity_refs(reference: &str) -> anyhow::Result<Vec<(EntityKind, IdRef)>> {
    let (form, value) = reference
        .split_once(':')
        .ok_or_else(|| anyhow!("expected <form>:<id>, e.g. install:700001"))?;
    let value = value.trim();
    let refs = match form {
        "deal" => vec![(EntityKind::Project, IdRef::new(IdForm::Deal, value))],
        "install" => vec![(EntityKind::Project, IdRef::new(IdForm::Install, value))],
        "survey" => vec![(EntityKind::Project, IdRef::new(IdForm::Survey, value))],
        "short_code" => vec![(EntityKind::Project, IdRef::new(IdForm::ShortCode, value))],
        "customer" if value.bytes().all(|b| b.is_ascii_digit()) => {
            vec![(EntityKind::Customer, IdRef::new(IdForm::CustomerId, value))]
        }
        "customer" => vec![(
            EntityKind::Customer,
            IdRef::new(IdForm::CustomerUuid, value),
        )],
        "crm" => [EntityKind::Project, EntityKind::Customer, EntityKind::Note]
            .into_iter()
            .map(|k| (k, IdRef::new(IdForm::Crm, value)))
            .collect(),
        other => {
            return Err(anyhow!(
                "unknown id form `{other}` (deal, install, survey, short_code, customer, crm)"
            ));
        }
    };
    Ok(refs)
}

/// The FIFO groups (event log entities) an entity's events are filed under.
pub fn event_groups(link: &EntityLink) -> Vec<String> {
    let mut groups = Vec::new();
    for key in &link.ids {
        let Some(id) = IdRef::parse_key(key) else {
            continue;
        };
        let group = match id.form {
            IdForm::Deal => format!("deal:{}", id.value),
            IdForm::Install => format!("install:{}", id.value),
            IdForm::CustomerId | IdForm::CustomerUuid => format!("customer:{}", id.value),
            _ => continue,
        };
        groups.push(group);
    }
    groups
}

/// An entity as the operator sees it: its cross-references and its events, both directions,
/// newest first.
#[derive(Clone, Debug)]
pub struct EntityView {
    pub reference: String,
    pub links: Vec<EntityLink>,
    /// The event log entities (FIFO groups) its events are filed under.
    pub event_groups: Vec<String>,
    pub events: Vec<EventRecord>,
}

pub async fn entity_view(
    backend: &Backend,
    reference: &str,
    limit: usize,
) -> anyhow::Result<EntityView> {
    let mut links = Vec::new();
    for (kind, id) in entity_refs(reference)? {
        if let Some(link) = backend.xref.resolve(kind, &id).await? {
            links.push(link);
        }
    }
    let mut groups: Vec<String> = links.iter().flat_map(event_groups).collect();
    if groups.is_empty() && !reference.starts_with("crm:") {
        groups.push(reference.to_owned());
    }
    groups.sort();
    groups.dedup();
    let mut events: Vec<EventRecord> = Vec::new();
    for g in &groups {
        events.extend(backend.log.for_entity(g, limit).await?);
    }
    events.sort_by_key(|e| std::cmp::Reverse(e.received_ms));
    events.truncate(limit);
    Ok(EntityView {
        reference: reference.to_owned(),
        links,
        event_groups: groups,
        events,
    })
}

pub async fn entity_report(
    backend: &Backend,
    reference: &str,
    limit: usize,
) -> anyhow::Result<Value> {
    let view = entity_view(backend, reference, limit).await?;
    Ok(json!({
        "reference": view.reference,
        "links": view.links,
        "event_groups": view.event_groups,
        "events": view.events.iter().map(event_summary).collect::<Vec<_>>(),
    }))
}

/// The references an operator's free-text search may mean: `form:value` as [`entity_refs`]
/// reads it, or a bare id tried as every form it could be (digits: install, survey, customer
/// and CRM ids; a UUID: deal, customer and CRM ids; anything else: short code and CRM id).
pub fn search_refs(query: &str) -> Vec<String> {
    let q = query.trim();
    if q.is_empty() {
        return Vec::new();
    }
    if let Some((form, _)) = q.split_once(':')
        && ["deal", "install", "survey", "short_code", "customer", "crm"].contains(&form)
    {
        return vec![q.to_owned()];
    }
    let uuid = q.len() == 36
        && q.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        });
    let forms: &[&str] = if !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit()) {
        &["install", "customer", "survey", "crm"]
    } else if uuid {
        &["deal", "customer", "crm"]
    } else {
        &["short_code", "crm"]
    };
    forms.iter().map(|f| format!("{f}:{q}")).collect()
}

pub fn event_summary(e: &EventRecord) -> Value {
    json!({
        "dedupe_key": e.dedupe_key, "event": e.event, "stage": e.stage, "entity": e.entity,
        "received_at": e.received_at, "deliveries": e.deliveries, "attempts": e.attempts,
        "outcome": e.outcome, "detail": e.detail,
    })
}

pub async fn event_show(backend: &Backend, dedupe_key: &str) -> anyhow::Result<EventRecord> {
    backend.log.get(dedupe_key).await?.ok_or_else(|| {
        anyhow!("no event {dedupe_key} in the event log (expired or never received)")
    })
}

/// Re-enqueues one logged event from its stored raw body (a replay: the stage decides again
/// whether anything changed, so re-running a delivered event writes nothing new).
pub async fn event_rerun(backend: &Backend, dedupe_key: &str) -> anyhow::Result<MessageMeta> {
    let record = event_show(backend, dedupe_key).await?;
    let stage = record
        .stage
        .as_deref()
        .and_then(Stage::parse)
        .ok_or_else(|| {
            anyhow!(
                "event {dedupe_key} was not routed to a stage (outcome {})",
                record.outcome
            )
        })?;
    if !backend.queue.has_stage(stage) {
        return Err(anyhow!("stage {stage} has no queue here"));
    }
    let meta = MessageMeta {
        stage,
        event: record.event.clone(),
        dedupe_key: record.dedupe_key.clone(),
        group: record
            .entity
            .clone()
            .unwrap_or_else(|| format!("unidentified:{dedupe_key}")),
        received_at: record.received_at.clone(),
    }
    .for_replay();
    backend
        .queue
        .send(&QueueMessage {
            meta: meta.clone(),
            body: record.raw_body,
        })
        .await?;
    Ok(meta)
}
