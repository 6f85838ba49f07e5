//! The event queue between the webhook and the stage consumers: FIFO per entity (message group),
//! deduplicated, with a dead-letter queue that keeps the reason. SQS in AWS ([`sqs`]), redb
//! locally ([`embedded`]).

pub mod embedded;
pub mod sqs;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::classify::Stage;
pub use crate::error::StoreError as QueueError;

/// What the consumer needs to know besides the body; SQS message attributes in AWS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub stage: Stage,
    pub event: String,
    pub dedupe_key: String,
    /// FIFO group: the Enerflo entity (`deal:<uuid>`, `install:<id>`, `customer:<id>`), or an
    /// `unidentified:` group for events whose entity id could not be found.
    pub group: String,
    pub received_at: String,
}

impl MessageMeta {
    pub fn to_attributes(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("stage", self.stage.as_str().to_owned()),
            ("event", self.event.clone()),
            ("dedupe_key", self.dedupe_key.clone()),
            ("group", self.group.clone()),
            ("received_at", self.received_at.clone()),
        ])
    }

    pub fn from_attributes(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let need = |k: &str| {
            get(k)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("message attribute `{k}` missing"))
        };
        Ok(Self {
            stage: Stage::parse(&need("stage")?)
                .ok_or("message attribute `stage` names no stage")?,
            event: need("event")?,
            dedupe_key: need("dedupe_key")?,
            group: need("group")?,
            received_at: need("received_at")?,
        })
    }

    /// SQS `MessageDeduplicationId`: at most 128 characters of a restricted alphabet.
    pub fn dedupe_id(&self) -> String {
        crate::hashing::sha256_hex(self.dedupe_key.as_bytes())
    }

    /// SQS `MessageGroupId` (128 characters max): the group itself, or a hash when too long.
    pub fn group_id(&self) -> String {
        let ok = self.group.len() <= 128 && self.group.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            self.group.clone()
        } else {
            crate::hashing::sha256_hex(self.group.as_bytes())
        }
    }
}

/// A message: the raw webhook body plus its metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMessage {
    pub meta: MessageMeta,
    pub body: String,
}

/// A received message.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub message_id: String,
    pub receipt: String,
    pub receive_count: u32,
    /// The metadata, or why it could not be read (a poison message, dead-lettered by the consumer).
    pub meta: Result<MessageMeta, String>,
    pub body: String,
    /// Every attribute as received, so a dead-lettered message keeps them.
    pub attributes: BTreeMap<String, String>,
}

/// A dead-lettered message, as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub message_id: String,
    pub stage: Stage,
    pub reason: String,
    pub attempts: u32,
    pub failed_at: String,
    pub attributes: BTreeMap<String, String>,
    pub body: String,
}

/// Room in an SQS message for the attributes and their names; bodies above
/// `MAX_MESSAGE_BYTES - ATTRIBUTE_ALLOWANCE` are refused before sending.
pub const MAX_MESSAGE_BYTES: usize = 1_048_576;
pub const ATTRIBUTE_ALLOWANCE: usize = 2_048;

/// Refuses a body the queue could not take once its attributes are added. Every adapter calls
/// this first, so the embedded queue refuses exactly what SQS would.
pub fn check_size(body: &str) -> Result<(), QueueError> {
    let max = MAX_MESSAGE_BYTES - ATTRIBUTE_ALLOWANCE;
    if body.len() > max {
        return Err(QueueError::Invalid(format!(
            "message body is {} bytes; the queue takes at most {max} bytes",
            body.len()
        )));
    }
    Ok(())
}

/// Producer and consumer-side operations the handlers need.
#[async_trait]
pub trait EventQueue: Send + Sync {
    /// Enqueues; a repeat of the same dedupe id within the dedupe window is dropped by the queue.
    async fn send(&self, msg: &QueueMessage) -> Result<(), QueueError>;

    /// Whether this stage has a queue configured (a stage without one parks its events in the log).
    fn has_stage(&self, stage: Stage) -> bool;

    /// Makes a received message invisible for `delay` (backoff; `Retry-After`).
    async fn defer(&self, stage: Stage, receipt: &str, delay: Duration) -> Result<(), QueueError>;

    /// Moves a message to the stage's DLQ with a reason. The caller then acknowledges the original.
    async fn dead_letter(
        &self,
        stage: Stage,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), QueueError>;
}

/// A dead letter and the handle that removes it from its DLQ.
#[derive(Clone, Debug)]
pub struct HeldDeadLetter {
    pub dead: DeadLetter,
    pub handle: String,
}

/// Operator access to the dead-letter queues (the `enerflo-sync-ops` tool): read them, and remove
/// what was replayed. SQS has no redrive-with-reason API we can rely on (and moto lacks
/// `StartMessageMoveTask`), so replay is receive -> send -> delete.
#[async_trait]
pub trait DeadLetterAdmin: Send + Sync {
    /// Up to `max` dead letters of a stage. On SQS they stay hidden from other readers for
    /// `hold_secs`, so a replay can remove them before anyone else sees them.
    async fn hold_dead_letters(
        &self,
        stage: Stage,
        max: usize,
        hold_secs: u32,
    ) -> Result<Vec<HeldDeadLetter>, QueueError>;
    async fn remove_dead_letter(&self, stage: Stage, handle: &str) -> Result<(), QueueError>;
    /// Makes a held dead letter visible again at once (it was only looked at).
    async fn release_dead_letter(&self, stage: Stage, handle: &str) -> Result<(), QueueError>;
}

/// Suffix that marks a replayed message: a fresh queue dedupe id, the same event log entry.
pub const REPLAY_MARK: &str = "#replay-";

impl MessageMeta {
    /// The event log key: the dedupe key without a replay mark.
    pub fn log_key(&self) -> &str {
        self.dedupe_key
            .split(REPLAY_MARK)
            .next()
            .unwrap_or(&self.dedupe_key)
    }

    /// The same message marked as a replay, so the queues' dedupe windows do not drop it.
    pub fn for_replay(&self) -> Self {
        let mut meta = self.clone();
        meta.dedupe_key = format!("{}{REPLAY_MARK}{:016x}", self.log_key(), fastrand::u64(..));
        meta
    }
}
