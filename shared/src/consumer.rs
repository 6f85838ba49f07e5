//! The generic SQS-style consumer: one span per message, stop at the first failure of a FIFO
//! group, backoff through message visibility, dead-letter with a reason after the retry budget or
//! on a permanent failure, and the outcome written to the event log. Stage handlers only see one
//! typed message.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use tracing::Instrument;

use crate::error::SyncError;
use crate::queue::{Delivery, EventQueue, MessageMeta};
use crate::retry::RetryPolicy;
use crate::store::EventLog;

/// What a handler did with a message that needs no retry (the event log's `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeKind {
    /// Pushed to the CRM.
    Delivered,
    /// The CRM already has this content.
    Unchanged,
    /// Our own write coming back: nothing to push.
    Echo,
    /// A thin copy of an entity never synced; the full copy follows.
    Incomplete,
    /// Older than what was already synced.
    Stale,
    /// A milestone without a completion date: nothing for the CRM.
    NoCompletion,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Unchanged => "unchanged",
            Self::Echo => "echo",
            Self::Incomplete => "incomplete",
            Self::Stale => "stale",
            Self::NoCompletion => "no_completion",
        }
    }
}

impl PartialEq<&str> for OutcomeKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: OutcomeKind,
    pub detail: String,
}

impl Outcome {
    pub fn new(status: OutcomeKind, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }
}

/// One stage's logic for one message.
#[async_trait]
pub trait StageHandler: Send + Sync {
    async fn handle(
        &self,
        meta: &MessageMeta,
        body: &str,
        attempt: u32,
    ) -> Result<Outcome, SyncError>;
}

/// The fate of one message in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Done (including dead-lettered): delete it.
    Done,
    /// Leave it for a retry (already deferred when we could).
    Retry,
}

pub struct Consumer {
    pub handler: Arc<dyn StageHandler>,
    pub queue: Arc<dyn EventQueue>,
    pub log: Arc<dyn EventLog>,
    pub retry: RetryPolicy,
}

impl Consumer {
    /// Processes a batch in order; returns each message's disposition in the same order.
    pub async fn process_batch(&self, batch: &[Delivery]) -> Vec<Disposition> {
        let mut failed_groups: HashSet<String> = HashSet::new();
        let mut out = Vec::with_capacity(batch.len());
        for delivery in batch {
            let group = delivery
                .meta
                .as_ref()
                .map(|m| m.group.clone())
                .unwrap_or_default();
            if !group.is_empty() && failed_groups.contains(&group) {
                // FIFO: a later message of a failed group must not overtake it.
                out.push(Disposition::Retry);
                continue;
            }
            let span = tracing::info_span!(
                "message",
                message_id = %delivery.message_id,
                stage = delivery.meta.as_ref().map(|m| m.stage.as_str()).unwrap_or("unknown"),
                dedupe_key = delivery.meta.as_ref().map(|m| m.dedupe_key.as_str()).unwrap_or(""),
                entity = %group,
                attempt = delivery.receive_count,
            );
            let disposition = self.process_one(delivery).instrument(span).await;
            if disposition == Disposition::Retry && !group.is_empty() {
                failed_groups.insert(group);
            }
            out.push(disposition);
        }
        out
    }

    async fn process_one(&self, delivery: &Delivery) -> Disposition {
        let meta = match &delivery.meta {
            Ok(m) => m,
            Err(why) => {
                let reason = format!("unreadable message: {why}");
                return self.dead_letter(delivery, None, &reason, &reason).await;
            }
        };
        let attempt = delivery.receive_count.max(1);
        match self.handler.handle(meta, &delivery.body, attempt).await {
            Ok(outcome) => {
                tracing::info!(outcome = outcome.status.as_str(), detail = %outcome.detail, "processed");
                self.log_outcome(meta, outcome.status.as_str(), Some(&outcome.detail))
                    .await;
                Disposition::Done
            }
            Err(err) if err.is_transient() && !self.retry.exhausted(attempt) => {
                let delay = self.retry.delay(attempt, err.retry_after());
                let reason = err.describe();
                // Logs get the reason without what the other system answered: it may quote the
                // customer data we sent (the event log keeps the whole reason).
                tracing::warn!(reason = %err.log_reason(), delay_secs = delay.as_secs(), "will retry");
                if let Err(e) = self.queue.defer(meta.stage, &delivery.receipt, delay).await {
                    tracing::error!(error = %e, "could not defer; the queue's visibility timeout applies");
                }
                self.log_outcome(
                    meta,
                    "retrying",
                    Some(&format!("attempt {attempt}: {reason}")),
                )
                .await;
                Disposition::Retry
            }
            Err(err) => {
                let (reason, log_reason) = if err.is_transient() {
                    let exhausted = format!(
                        "retry budget of {} attempts exhausted; last error:",
                        self.retry.max_attempts
                    );
                    (
                        format!("{exhausted} {}", err.describe()),
                        format!("{exhausted} {}", err.log_reason()),
                    )
                } else {
                    (err.describe(), err.log_reason())
                };
                self.dead_letter(delivery, Some(meta), &reason, &log_reason)
                    .await
            }
        }
    }

    /// Parks the message with `reason` (kept with it and in the event log); `log_reason` is the
    /// same without what another system answered, for log lines.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        meta: Option<&MessageMeta>,
        reason: &str,
        log_reason: &str,
    ) -> Disposition {
        let stage = meta.map(|m| m.stage).or_else(|| {
            delivery
                .attributes
                .get("stage")
                .and_then(|s| crate::classify::Stage::parse(s))
        });
        let Some(stage) = stage else {
            tracing::error!(
                reason = log_reason,
                "poison message names no stage; leaving it to the queue's redrive policy"
            );
            return Disposition::Retry;
        };
        match self.queue.dead_letter(stage, delivery, reason).await {
            Ok(()) => {
                tracing::error!(reason = log_reason, "dead-lettered");
                if let Some(meta) = meta {
                    self.log_outcome(meta, "dead_lettered", Some(reason)).await;
                }
                Disposition::Done
            }
            Err(e) => {
                // Never drop a message we could not park: let the queue redeliver it.
                tracing::error!(error = %e, reason = log_reason, "dead-lettering failed; will retry");
                Disposition::Retry
            }
        }
    }

    async fn log_outcome(&self, meta: &MessageMeta, outcome: &str, detail: Option<&str>) {
        if let Err(e) = self.log.set_outcome(meta.log_key(), outcome, detail).await {
            // The event log is for tracing; failing to write it must not fail the event.
            tracing::warn!(error = %e, outcome, "event log not updated");
        }
    }
}
