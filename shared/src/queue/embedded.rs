//! A durable FIFO queue on redb, with SQS semantics that matter here: per-group ordering (a group
//! with a message in flight delivers nothing else), visibility timeouts, receive counts, dedupe
//! ids within a window, and a dead-letter table. A message that got a 202 is committed to disk
//! before the answer, so it survives `kill -9`.
//!
//! Every write waits for the disk: it joins the shared write transaction of
//! [`crate::embedded_db`], committed durably for all the writes of the same moment, so a receive
//! or an ack costs no fsync of its own. A crash loses only writes whose call had not returned.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{DeadLetter, Delivery, EventQueue, MessageMeta, QueueError, QueueMessage};
use crate::classify::Stage;
use crate::embedded_db::{Db, MESSAGES, db_err};
use crate::timefmt::{now_millis, now_rfc3339};

// Keys of the `queue` table (`MESSAGES`): `q#{stage}#{seq:020}` for messages,
// `dlq#{stage}#{seq:020}` for dead letters, `dedupe#{stage}#{id}` for the dedupe window, `seq`
// for the sequence counter.

const DEDUPE_WINDOW_MS: i64 = 5 * 60 * 1000;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stored {
    seq: u64,
    message: QueueMessage,
    visible_at_ms: i64,
    receive_count: u32,
    /// Changes on every receive, so a stale receipt cannot ack a redelivered message.
    receipt: String,
    /// Received and not yet acknowledged or deferred.
    #[serde(default)]
    in_flight: bool,
    /// How `message.body` is encoded ([`super::BODY_ENCODING`]); `None`: as it was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_encoding: Option<String>,
}

#[derive(Clone)]
pub struct EmbeddedQueue {
    db: Arc<Db>,
    stages: HashSet<Stage>,
    /// Per stage: woken when a message is sent, so a waiting worker need not poll for it.
    sent: Arc<HashMap<Stage, Notify>>,
}

type Messages<'t> = redb::Table<'t, &'static str, &'static [u8]>;

fn open_messages(tx: &WriteTransaction) -> Result<Messages<'_>, QueueError> {
    tx.open_table(MESSAGES).map_err(|e| db_err("open queue", e))
}

fn msg_key(stage: Stage, seq: u64) -> String {
    format!("q#{}#{seq:020}", stage.as_str())
}

fn parse_receipt(receipt: &str) -> Option<(u64, &str)> {
    let (seq, nonce) = receipt.split_once('.')?;
    Some((seq.parse().ok()?, nonce))
}

impl EmbeddedQueue {
    /// A queue serving `stages` (all stages in the local runner).
    pub fn new(db: Arc<Db>, stages: impl IntoIterator<Item = Stage>) -> Self {
        let stages: HashSet<Stage> = stages.into_iter().collect();
        let sent = stages.iter().map(|s| (*s, Notify::new())).collect();
        Self {
            db,
            stages,
            sent: Arc::new(sent),
        }
    }

    /// Runs `f` on the queue table in one write transaction; returns once it is durable.
    async fn with_table<R>(
        &self,
        f: impl Fn(&mut Messages<'_>) -> Result<R, QueueError>,
    ) -> Result<R, QueueError> {
        self.db.write(|tx| f(&mut open_messages(tx)?)).await
    }

    /// [`Self::with_table`] for blocking callers.
    fn with_table_blocking<R>(
        &self,
        f: impl FnOnce(&mut Messages<'_>) -> Result<R, QueueError>,
    ) -> Result<R, QueueError> {
        self.db.write_blocking(|tx| f(&mut open_messages(tx)?))
    }

    /// Resolves once a message was sent to `stage` since the last time it resolved (at once if
    /// one was sent while nobody waited). A stage this queue does not serve never resolves.
    pub async fn sent(&self, stage: Stage) {
        match self.sent.get(&stage) {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Commits the open shared transaction, if a write whose caller stopped waiting left one:
    /// for shutdown, after the last acks.
    pub async fn flush(&self) -> Result<(), QueueError> {
        self.db.flush().await
    }

    /// Receives up to `max` visible messages, at most one in flight per group, oldest first, and
    /// hides them for `visibility`.
    pub async fn receive(
        &self,
        stage: Stage,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let now = now_millis();
        // Idle polls are the common case: look in a read transaction first, so an empty queue
        // costs no write lock and no durable commit.
        {
            let tx = self.db.begin_read().map_err(|e| db_err("begin read", e))?;
            let t = tx
                .open_table(MESSAGES)
                .map_err(|e| db_err("open queue", e))?;
            if Self::pick(&t, stage, max, now)?.is_empty() {
                return Ok(Vec::new());
            }
        }
        self.with_table(|t| {
            let picked = Self::pick(t, stage, max, now)?;
            let mut out = Vec::with_capacity(picked.len());
            for mut stored in picked {
                stored.receive_count += 1;
                stored.visible_at_ms = now + visibility.as_millis() as i64;
                stored.receipt = format!("{}.{:016x}", stored.seq, fastrand::u64(..));
                stored.in_flight = true;
                let bytes =
                    serde_json::to_vec(&stored).map_err(|e| QueueError::Invalid(e.to_string()))?;
                t.insert(msg_key(stage, stored.seq).as_str(), bytes.as_slice())
                    .map_err(|e| db_err("insert", e))?;
                let mut attributes: BTreeMap<String, String> = stored
                    .message
                    .meta
                    .to_attributes()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect();
                if let Some(encoding) = &stored.body_encoding {
                    attributes.insert(super::BODY_ENCODING.to_owned(), encoding.clone());
                }
                let mut body = stored.message.body.clone();
                let meta = super::decode_body(&mut body, &mut attributes)
                    .map(|()| stored.message.meta.clone());
                out.push(Delivery {
                    message_id: format!("{}-{}", stage.as_str(), stored.seq),
                    receipt: stored.receipt.clone(),
                    receive_count: stored.receive_count,
                    meta,
                    body,
                    attributes,
                });
            }
            Ok(out)
        })
        .await
    }

    /// The messages a receive at `now` hands out: oldest first, the first message of each group
    /// only (visible or not, later ones wait behind it), at most `max`. Stops reading as soon as
    /// it has `max`, so a deep backlog does not make every receive read the whole queue.
    fn pick(
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        stage: Stage,
        max: usize,
        now: i64,
    ) -> Result<Vec<Stored>, QueueError> {
        let prefix = format!("q#{}#", stage.as_str());
        let end = format!("q#{}$", stage.as_str());
        let mut blocked: HashSet<String> = HashSet::new();
        let mut picked: Vec<Stored> = Vec::new();
        let range = t
            .range(prefix.as_str()..end.as_str())
            .map_err(|e| db_err("range", e))?;
        for item in range {
            if picked.len() >= max {
                break;
            }
            let (_, v) = item.map_err(|e| db_err("range item", e))?;
            let stored: Stored = serde_json::from_slice(v.value())
                .map_err(|e| QueueError::Invalid(format!("queued message does not parse: {e}")))?;
            let group = stored.message.meta.group.clone();
            if blocked.contains(&group) {
                continue;
            }
            // Whatever happens to this message, later ones of its group wait behind it.
            blocked.insert(group);
            if stored.visible_at_ms <= now {
                picked.push(stored);
            }
        }
        Ok(picked)
    }

    /// Deletes a received message; a stale receipt (the message was received again since) is a no-op.
    pub async fn ack(&self, stage: Stage, receipt: &str) -> Result<(), QueueError> {
        self.ack_all(stage, [receipt]).await
    }

    /// [`Self::ack`] for several messages, in one commit. A malformed receipt fails the call
    /// before anything is deleted.
    pub async fn ack_all<'r>(
        &self,
        stage: Stage,
        receipts: impl IntoIterator<Item = &'r str>,
    ) -> Result<(), QueueError> {
        let parsed = receipts
            .into_iter()
            .map(|receipt| {
                parse_receipt(receipt)
                    .map(|(seq, _)| (seq, receipt))
                    .ok_or_else(|| QueueError::Invalid(format!("receipt {receipt} is malformed")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if parsed.is_empty() {
            return Ok(());
        }
        self.with_table(|t| {
            for &(seq, receipt) in &parsed {
                let key = msg_key(stage, seq);
                let current: Option<Stored> =
                    match t.get(key.as_str()).map_err(|e| db_err("get", e))? {
                        Some(v) => serde_json::from_slice(v.value()).ok(),
                        None => None,
                    };
                if current.is_some_and(|s| s.receipt == receipt) {
                    t.remove(key.as_str()).map_err(|e| db_err("remove", e))?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Makes every message that was received but never acknowledged or deferred visible again.
    /// Only for start-up of a single-process runner, when no worker can hold one.
    pub fn recover_in_flight(&self) -> Result<usize, QueueError> {
        self.with_table_blocking(|t| {
            let mut fixed = Vec::new();
            for item in t.range("q#".."q$").map_err(|e| db_err("range", e))? {
                let (k, v) = item.map_err(|e| db_err("range item", e))?;
                if let Ok(mut stored) = serde_json::from_slice::<Stored>(v.value())
                    && stored.in_flight
                {
                    stored.in_flight = false;
                    stored.visible_at_ms = 0;
                    fixed.push((k.value().to_owned(), stored));
                }
            }
            for (k, stored) in &fixed {
                let bytes =
                    serde_json::to_vec(stored).map_err(|e| QueueError::Invalid(e.to_string()))?;
                t.insert(k.as_str(), bytes.as_slice())
                    .map_err(|e| db_err("insert", e))?;
            }
            Ok(fixed.len())
        })
    }

    /// Messages waiting (visible or in flight) in a stage.
    pub fn depth(&self, stage: Stage) -> Result<usize, QueueError> {
        self.count_prefix(
            &format!("q#{}#", stage.as_str()),
            &format!("q#{}$", stage.as_str()),
        )
    }

    pub fn dead_letters(&self, stage: Stage) -> Result<Vec<DeadLetter>, QueueError> {
        let tx = self.db.begin_read().map_err(|e| db_err("begin read", e))?;
        let t = tx
            .open_table(MESSAGES)
            .map_err(|e| db_err("open queue", e))?;
        let (start, end) = (
            format!("dlq#{}#", stage.as_str()),
            format!("dlq#{}$", stage.as_str()),
        );
        let mut out = Vec::new();
        for item in t
            .range(start.as_str()..end.as_str())
            .map_err(|e| db_err("range", e))?
        {
            let (_, v) = item.map_err(|e| db_err("range item", e))?;
            out.push(
                serde_json::from_slice(v.value())
                    .map_err(|e| QueueError::Invalid(e.to_string()))?,
            );
        }
        Ok(out)
    }

    fn count_prefix(&self, start: &str, end: &str) -> Result<usize, QueueError> {
        let tx = self.db.begin_read().map_err(|e| db_err("begin read", e))?;
        let t = tx
            .open_table(MESSAGES)
            .map_err(|e| db_err("open queue", e))?;
        let range = t.range(start..end).map_err(|e| db_err("range", e))?;
        Ok(range.count())
    }

    fn next_seq(t: &mut Messages<'_>) -> Result<u64, QueueError> {
        let current = match t.get("seq").map_err(|e| db_err("get seq", e))? {
            Some(v) => v.value().try_into().map(u64::from_be_bytes).unwrap_or(0),
            None => 0,
        };
        let next = current + 1;
        t.insert("seq", next.to_be_bytes().as_slice())
            .map_err(|e| db_err("put seq", e))?;
        Ok(next)
    }
}

#[async_trait]
impl EventQueue for EmbeddedQueue {
    async fn send(&self, msg: &QueueMessage) -> Result<(), QueueError> {
        let stage = msg.meta.stage;
        if !self.stages.contains(&stage) {
            return Err(QueueError::Invalid(format!("no queue for stage {stage}")));
        }
        // Stored in the form SQS would carry, so this queue refuses (and decodes) what SQS does.
        let (body, body_encoding) = super::encode_body(
            &msg.body,
            msg.meta.attributes_size(),
            super::ATTRIBUTE_ALLOWANCE,
        )?;
        let now = now_millis();
        self.with_table(|t| {
            let dkey = format!("dedupe#{}#{}", stage.as_str(), msg.meta.dedupe_id());
            if let Some(v) = t.get(dkey.as_str()).map_err(|e| db_err("get dedupe", e))? {
                let seen_at = v.value().try_into().map(i64::from_be_bytes).unwrap_or(0);
                if now - seen_at < DEDUPE_WINDOW_MS {
                    return Ok(());
                }
            }
            t.insert(dkey.as_str(), now.to_be_bytes().as_slice())
                .map_err(|e| db_err("put dedupe", e))?;
            let seq = Self::next_seq(t)?;
            let stored = Stored {
                seq,
                message: QueueMessage {
                    meta: msg.meta.clone(),
                    body: body.clone().into_owned(),
                },
                visible_at_ms: 0,
                receive_count: 0,
                receipt: String::new(),
                in_flight: false,
                body_encoding: body_encoding.map(str::to_owned),
            };
            let bytes =
                serde_json::to_vec(&stored).map_err(|e| QueueError::Invalid(e.to_string()))?;
            t.insert(msg_key(stage, seq).as_str(), bytes.as_slice())
                .map_err(|e| db_err("insert", e))?;
            Ok(())
        })
        .await?;
        if let Some(sent) = self.sent.get(&stage) {
            sent.notify_one();
        }
        Ok(())
    }

    fn has_stage(&self, stage: Stage) -> bool {
        self.stages.contains(&stage)
    }

    async fn defer(&self, stage: Stage, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        let Some((seq, _)) = parse_receipt(receipt) else {
            return Err(QueueError::Invalid(format!(
                "receipt {receipt} is malformed"
            )));
        };
        self.with_table(|t| {
            let key = msg_key(stage, seq);
            let Some(mut stored) = (match t.get(key.as_str()).map_err(|e| db_err("get", e))? {
                Some(v) => serde_json::from_slice::<Stored>(v.value()).ok(),
                None => None,
            }) else {
                return Ok(());
            };
            if stored.receipt != receipt {
                return Ok(());
            }
            stored.visible_at_ms = now_millis() + delay.as_millis() as i64;
            stored.in_flight = false;
            let bytes =
                serde_json::to_vec(&stored).map_err(|e| QueueError::Invalid(e.to_string()))?;
            t.insert(key.as_str(), bytes.as_slice())
                .map_err(|e| db_err("insert", e))?;
            Ok(())
        })
        .await
    }

    async fn dead_letter(
        &self,
        stage: Stage,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), QueueError> {
        self.with_table(|t| {
            let seq = Self::next_seq(t)?;
            let dead = DeadLetter {
                message_id: delivery.message_id.clone(),
                stage,
                reason: reason.to_owned(),
                attempts: delivery.receive_count,
                failed_at: now_rfc3339(),
                attributes: delivery.attributes.clone(),
                body: delivery.body.clone(),
            };
            let bytes =
                serde_json::to_vec(&dead).map_err(|e| QueueError::Invalid(e.to_string()))?;
            t.insert(
                format!("dlq#{}#{seq:020}", stage.as_str()).as_str(),
                bytes.as_slice(),
            )
            .map_err(|e| db_err("insert dlq", e))?;
            // Move, not copy: the original goes in the same transaction.
            if let Some((orig, _)) = parse_receipt(&delivery.receipt) {
                let key = msg_key(stage, orig);
                let matches = match t.get(key.as_str()).map_err(|e| db_err("get", e))? {
                    Some(v) => serde_json::from_slice::<Stored>(v.value())
                        .is_ok_and(|s| s.receipt == delivery.receipt),
                    None => false,
                };
                if matches {
                    t.remove(key.as_str()).map_err(|e| db_err("remove", e))?;
                }
            }
            Ok(())
        })
        .await
    }
}

/// Rebuilds the attributes map of a dead letter into message metadata (for replays).
pub fn meta_of(dead: &DeadLetter) -> Result<MessageMeta, String> {
    let attrs: &BTreeMap<String, String> = &dead.attributes;
    MessageMeta::from_attributes(|k| attrs.get(k).cloned())
}

#[async_trait]
impl super::DeadLetterAdmin for EmbeddedQueue {
    async fn hold_dead_letters(
        &self,
        stage: Stage,
        max: usize,
        _hold_secs: u32,
    ) -> Result<Vec<super::HeldDeadLetter>, QueueError> {
        // A single-process store: nobody else reads the DLQ, so nothing needs hiding.
        let tx = self.db.begin_read().map_err(|e| db_err("begin read", e))?;
        let t = tx
            .open_table(MESSAGES)
            .map_err(|e| db_err("open queue", e))?;
        let (start, end) = (
            format!("dlq#{}#", stage.as_str()),
            format!("dlq#{}$", stage.as_str()),
        );
        let mut out = Vec::new();
        for item in t
            .range(start.as_str()..end.as_str())
            .map_err(|e| db_err("range", e))?
        {
            if out.len() >= max {
                break;
            }
            let (k, v) = item.map_err(|e| db_err("range item", e))?;
            let dead: DeadLetter = serde_json::from_slice(v.value())
                .map_err(|e| QueueError::Invalid(e.to_string()))?;
            out.push(super::HeldDeadLetter {
                dead,
                handle: k.value().to_owned(),
            });
        }
        Ok(out)
    }

    async fn release_dead_letter(&self, _stage: Stage, _handle: &str) -> Result<(), QueueError> {
        Ok(())
    }

    async fn remove_dead_letter(&self, stage: Stage, handle: &str) -> Result<(), QueueError> {
        if !handle.starts_with(&format!("dlq#{}#", stage.as_str())) {
            return Err(QueueError::Invalid(format!(
                "{handle} is not a dead letter of stage {stage}"
            )));
        }
        self.with_table(|t| {
            t.remove(handle).map_err(|e| db_err("remove", e))?;
            Ok(())
        })
        .await
    }
}
