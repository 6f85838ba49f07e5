//! The generic SQS-style consumer: one span per message, stop at the first failure of a FIFO
//! group, backoff through message visibility, dead-letter with a reason after the retry budget or
//! on a permanent failure, and the outcome written to the event log. Stage handlers only see one
//! typed message.
//!
//! Attempts are real tries, counted in the store per message ([`EventLog::count_attempt`]), not
//! the queue's receive count: a message held back behind a failed one of its group, or handed
//! back unstarted at the Lambda deadline, is received without being tried.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tracing::Instrument;

use crate::deadline;
use crate::error::SyncError;
use crate::metrics::{self, Event};
use crate::queue::{Delivery, EventQueue, MessageMeta};
use crate::retry::RetryPolicy;
use crate::store::EventLog;

/// A message starts only with at least this much time before the deadline: a few seconds for
/// the work, plus [`deadline::MARGIN`] to record its outcome.
pub const MIN_TIME_TO_START: Duration = Duration::from_secs(5);

/// A handler still running this long before the deadline is stopped, so the consumer can still
/// defer the message and answer Lambda. Less than [`deadline::MARGIN`]: calls bounded by
/// [`deadline::bound`] give up first, with their own reason.
const HARD_STOP: Duration = Duration::from_secs(1);

/// How long a message's try count is kept: longer than SQS keeps any message (14 days at most;
/// `template.yaml` keeps them 4).
const ATTEMPT_COUNT_TTL_SECS: u64 = 15 * 24 * 3600;

/// The metrics stage of a message whose attributes could not be read.
const UNREADABLE: &str = "unreadable";

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
    /// Processes a batch in order, with no deadline (the local runner); returns each message's
    /// disposition in the same order.
    pub async fn process_batch(&self, batch: &[Delivery]) -> Vec<Disposition> {
        self.run_batch(batch).await
    }

    /// [`process_batch`](Self::process_batch) for a Lambda invocation that ends at `deadline`:
    /// no message starts with less than [`MIN_TIME_TO_START`] left, every call is bounded by
    /// the time left ([`deadline::bound`]), and a handler still running near the deadline is
    /// stopped (a transient failure). Messages not started are `Retry`, neither deferred nor
    /// counted as attempts.
    pub async fn process_batch_until(
        &self,
        batch: &[Delivery],
        deadline: Instant,
    ) -> Vec<Disposition> {
        deadline::scope(deadline, self.run_batch(batch)).await
    }

    async fn run_batch(&self, batch: &[Delivery]) -> Vec<Disposition> {
        // A failed group and how long its head was deferred, if it was.
        let mut failed_groups: HashMap<String, Option<Duration>> = HashMap::new();
        let mut out = Vec::with_capacity(batch.len());
        for delivery in batch {
            if let Some(left) = deadline::remaining()
                && left < MIN_TIME_TO_START
            {
                let unstarted = batch.len() - out.len();
                tracing::warn!(
                    unstarted,
                    left_ms = left.as_millis() as u64,
                    "no time left in this invocation; handing the rest of the batch back untried"
                );
                out.resize(batch.len(), Disposition::Retry);
                break;
            }
            let group = delivery
                .meta
                .as_ref()
                .map(|m| m.group.clone())
                .unwrap_or_default();
            if let Some(head_delay) = failed_groups.get(&group).filter(|_| !group.is_empty()) {
                // FIFO: a later message of a failed group must not overtake it. Not a try. It
                // is deferred as long as its head: SQS hands out none of a group while one of
                // its messages is in flight, so left at the queue's visibility timeout it would
                // hold the group for minutes after the head's short backoff.
                if let (Some(delay), Ok(meta)) = (head_delay, &delivery.meta)
                    && let Some(Err(e)) =
                        before_deadline(self.queue.defer(meta.stage, &delivery.receipt, *delay))
                            .await
                {
                    tracing::warn!(error = %e, message_id = %delivery.message_id, "could not defer a held-back message; the queue's visibility timeout applies");
                }
                out.push(Disposition::Retry);
                continue;
            }
            let span = tracing::info_span!(
                "message",
                message_id = %delivery.message_id,
                stage = delivery.meta.as_ref().map(|m| m.stage.as_str()).unwrap_or("unknown"),
                dedupe_key = delivery.meta.as_ref().map(|m| m.dedupe_key.as_str()).unwrap_or(""),
                entity = %group,
                receive_count = delivery.receive_count,
                attempt = tracing::field::Empty,
            );
            let stage = delivery
                .meta
                .as_ref()
                .map_or(UNREADABLE, |m| m.stage.as_str());
            let mut deferred = None;
            let disposition = metrics::scope(stage, self.process_one(delivery, &mut deferred))
                .instrument(span)
                .await;
            if disposition == Disposition::Retry && !group.is_empty() {
                failed_groups.insert(group, deferred);
            }
            out.push(disposition);
        }
        out
    }

    /// One message's try; `deferred` gets the backoff it was deferred by, if it was.
    async fn process_one(
        &self,
        delivery: &Delivery,
        deferred: &mut Option<Duration>,
    ) -> Disposition {
        let meta = match &delivery.meta {
            Ok(m) => m,
            Err(why) => {
                let reason = format!("unreadable message: {why}");
                return self
                    .dead_letter(delivery, None, delivery.receive_count, &reason, &reason)
                    .await;
            }
        };
        if meta.is_resend() && self.taken_already(meta).await {
            // A re-send (a repeat delivery's, or the sweep's) of an event a consumer took
            // already: processing it again could write older content over a later change.
            tracing::info!(
                outcome = "duplicate",
                "re-send of an event already taken; dropped"
            );
            return Disposition::Done;
        }
        let Some(attempt) = before_deadline(self.count_attempt(delivery)).await else {
            tracing::warn!("no time left to count the attempt; handing the message back untried");
            return Disposition::Retry;
        };
        tracing::Span::current().record("attempt", attempt);
        if attempt > self.retry.max_attempts {
            // Tries were counted that left no verdict: the function was stopped mid-try (timeout,
            // crash), or parking the message failed. Do not try a budget's worth more.
            let tries = attempt - 1;
            let log_reason = format!(
                "retry budget of {} attempts exhausted: {tries} tries ended without a verdict (the function was stopped mid-try, or dead-lettering failed)",
                self.retry.max_attempts
            );
            let reason = match self.log.get(meta.log_key()).await {
                Ok(Some(record)) => format!(
                    "{log_reason}; last outcome in the event log: {} {}",
                    record.outcome,
                    record.detail.unwrap_or_default()
                ),
                _ => log_reason.clone(),
            };
            return self
                .dead_letter(delivery, Some(meta), tries, &reason, &log_reason)
                .await;
        }
        let handled = before_deadline(self.handler.handle(meta, &delivery.body, attempt)).await;
        let result = handled.unwrap_or_else(|| {
            Err(SyncError::transient(
                "stopped before the Lambda invocation's deadline without finishing",
            ))
        });
        match result {
            Ok(outcome) => {
                tracing::info!(outcome = outcome.status.as_str(), detail = %outcome.detail, "processed");
                if let Some(event) = Event::from_outcome(outcome.status.as_str()) {
                    metrics::count(meta.stage.as_str(), event);
                }
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
                metrics::count(meta.stage.as_str(), Event::Retried);
                match self.queue.defer(meta.stage, &delivery.receipt, delay).await {
                    Ok(()) => *deferred = Some(delay),
                    Err(e) => {
                        tracing::error!(error = %e, "could not defer; the queue's visibility timeout applies")
                    }
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
                self.dead_letter(delivery, Some(meta), attempt, &reason, &log_reason)
                    .await
            }
        }
    }

    /// This try's number: one more than the tries counted for this message before. When the
    /// count cannot be kept, the queue's receive count stands in (it only ever counts more).
    async fn count_attempt(&self, delivery: &Delivery) -> u32 {
        if delivery.message_id.is_empty() {
            return delivery.receive_count.max(1);
        }
        match self
            .log
            .count_attempt(&delivery.message_id, ATTEMPT_COUNT_TTL_SECS)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "attempt not counted; the queue's receive count stands in");
                delivery.receive_count.max(1)
            }
        }
    }

    /// Parks the message with `reason` (kept with it and in the event log); `log_reason` is the
    /// same without what another system answered, for log lines. The DLQ records `attempts`
    /// (real tries) as the message's attempts.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        meta: Option<&MessageMeta>,
        attempts: u32,
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
        // The queue adapters record a delivery's receive count as its attempts.
        let parked = Delivery {
            receive_count: attempts,
            ..delivery.clone()
        };
        match self.queue.dead_letter(stage, &parked, reason).await {
            Ok(()) => {
                tracing::error!(reason = log_reason, "dead-lettered");
                metrics::count(stage.as_str(), Event::DeadLettered);
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

    /// Whether the event log holds an outcome a consumer recorded for this message's event
    /// (not one of [`crate::store::UNSENT_OUTCOMES`]). Unknown (a failed read) is `false`:
    /// the message is processed, and the stage's own state makes a repeat harmless.
    async fn taken_already(&self, meta: &MessageMeta) -> bool {
        match self.log.get(meta.log_key()).await {
            Ok(Some(record)) => !crate::store::is_unsent(&record.outcome),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "event log unreadable; processing the re-send");
                false
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

/// Runs `fut`, stopped [`HARD_STOP`] before the current deadline (`None` then); unbounded
/// without one.
async fn before_deadline<T>(fut: impl Future<Output = T>) -> Option<T> {
    match deadline::remaining() {
        Some(left) => tokio::time::timeout(left.saturating_sub(HARD_STOP), fut)
            .await
            .ok(),
        None => Some(fut.await),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::classify::Stage;
    use crate::queue::{QueueError, QueueMessage};
    use crate::store::embedded::EmbeddedStore;

    /// A queue that only records what the consumer asked of it.
    #[derive(Default)]
    struct RecordingQueue {
        deferred: Mutex<Vec<String>>,
        delays: Mutex<Vec<(String, Duration)>>,
        dead: Mutex<Vec<(String, String, u32)>>,
    }

    #[async_trait]
    impl EventQueue for RecordingQueue {
        async fn send(&self, _msg: &QueueMessage) -> Result<(), QueueError> {
            Ok(())
        }
        fn has_stage(&self, _stage: Stage) -> bool {
            true
        }
        async fn defer(
            &self,
            _stage: Stage,
            receipt: &str,
            delay: Duration,
        ) -> Result<(), QueueError> {
            self.deferred.lock().unwrap().push(receipt.to_owned());
            self.delays
                .lock()
                .unwrap()
                .push((receipt.to_owned(), delay));
            Ok(())
        }
        async fn dead_letter(
            &self,
            _stage: Stage,
            delivery: &Delivery,
            reason: &str,
        ) -> Result<(), QueueError> {
            self.dead.lock().unwrap().push((
                delivery.message_id.clone(),
                reason.to_owned(),
                delivery.receive_count,
            ));
            Ok(())
        }
    }

    /// Fails each message transiently as often as scripted, then succeeds; records every try as
    /// (dedupe key, attempt).
    #[derive(Default)]
    struct Scripted {
        failures: Mutex<BTreeMap<String, u32>>,
        tries: Mutex<Vec<(String, u32)>>,
    }

    impl Scripted {
        fn failing(script: &[(&str, u32)]) -> Self {
            Self {
                failures: Mutex::new(script.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()),
                tries: Mutex::default(),
            }
        }
        fn tries_of(&self, key: &str) -> Vec<u32> {
            let tries = self.tries.lock().unwrap();
            tries
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, a)| *a)
                .collect()
        }
    }

    #[async_trait]
    impl StageHandler for Scripted {
        async fn handle(
            &self,
            meta: &MessageMeta,
            _body: &str,
            attempt: u32,
        ) -> Result<Outcome, SyncError> {
            self.tries
                .lock()
                .unwrap()
                .push((meta.dedupe_key.clone(), attempt));
            let mut failures = self.failures.lock().unwrap();
            match failures.get_mut(&meta.dedupe_key) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    Err(SyncError::transient("CRM answered 503"))
                }
                _ => Ok(Outcome::new(OutcomeKind::Delivered, "ok")),
            }
        }
    }

    fn meta(key: &str, group: &str) -> MessageMeta {
        MessageMeta {
            stage: Stage::Project,
            event: "deal_updated".into(),
            dedupe_key: key.into(),
            group: group.into(),
            received_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    /// What SQS hands over: the message as received for the `receive_count`-th time.
    fn delivery(key: &str, group: &str, receive_count: u32) -> Delivery {
        let meta = meta(key, group);
        Delivery {
            message_id: format!("id-{key}"),
            receipt: format!("receipt-{key}-{receive_count}"),
            receive_count,
            attributes: meta
                .to_attributes()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            meta: Ok(meta),
            body: "{}".into(),
        }
    }

    fn consumer(handler: Arc<dyn StageHandler>, queue: Arc<RecordingQueue>, max: u32) -> Consumer {
        Consumer {
            handler,
            queue,
            log: Arc::new(EmbeddedStore::in_memory().expect("in-memory store")),
            retry: RetryPolicy {
                max_attempts: max,
                ..RetryPolicy::default()
            },
        }
    }

    /// Takes `takes` for every message (`None`: never answers); records each start with the
    /// bound a 20 s call would get there.
    struct Sleepy {
        takes: Option<Duration>,
        started: Mutex<Vec<(String, Duration)>>,
    }

    impl Sleepy {
        fn new(takes: Option<Duration>) -> Arc<Self> {
            Arc::new(Self {
                takes,
                started: Mutex::default(),
            })
        }
        fn started(&self) -> Vec<String> {
            let started = self.started.lock().unwrap();
            started.iter().map(|(k, _)| k.clone()).collect()
        }
    }

    #[async_trait]
    impl StageHandler for Sleepy {
        async fn handle(&self, meta: &MessageMeta, _: &str, _: u32) -> Result<Outcome, SyncError> {
            self.started.lock().unwrap().push((
                meta.dedupe_key.clone(),
                deadline::bound(Duration::from_secs(20)),
            ));
            match self.takes {
                Some(takes) => tokio::time::sleep(takes).await,
                None => std::future::pending::<()>().await,
            }
            Ok(Outcome::new(OutcomeKind::Delivered, "ok"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_runs_only_what_fits_before_the_deadline_and_hands_back_the_rest_untried() {
        // GIVEN a handler taking 10 s a message, and 33 s left: room for 3 of a batch of 4
        let handler = Sleepy::new(Some(Duration::from_secs(10)));
        let queue = Arc::new(RecordingQueue::default());
        let consumer = consumer(handler.clone(), queue.clone(), 18);
        let batch: Vec<Delivery> = (1..=4)
            .map(|n| delivery(&format!("evt-{n}"), &format!("deal:{n}"), 1))
            .collect();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(33);

        // WHEN the batch is processed against that deadline
        let dispositions = consumer.process_batch_until(&batch, deadline).await;

        // THEN the 3 that fit were done, the 4th was handed back, and the batch ended in time
        use Disposition::{Done, Retry};
        assert_eq!(dispositions, [Done, Done, Done, Retry]);
        assert_eq!(handler.started(), ["evt-1", "evt-2", "evt-3"]);
        assert!(
            Instant::now() <= deadline,
            "{:?} after the start",
            start.elapsed()
        );
        // ... not deferred with backoff, and not counted as an attempt: its first try is attempt 1
        assert!(queue.deferred.lock().unwrap().is_empty());
        assert!(queue.dead.lock().unwrap().is_empty());
        assert_eq!(
            consumer.log.count_attempt("id-evt-4", 60).await.unwrap(),
            1,
            "never counted before"
        );
        // ... and each handler's 20 s calls were bounded by the time left less the 2 s margin:
        // 31 s and 21 s left over at 0 s and 10 s (the budget stands), 11 s at 20 s
        let bounds: Vec<Duration> = handler
            .started
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| *b)
            .collect();
        assert_eq!(bounds, [20, 20, 11].map(Duration::from_secs));
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_still_running_at_the_deadline_is_stopped_and_retried_as_a_counted_attempt() {
        // GIVEN a handler that never answers, and 30 s left for a batch of two groups
        let handler = Sleepy::new(None);
        let queue = Arc::new(RecordingQueue::default());
        let consumer = consumer(handler.clone(), queue.clone(), 18);
        let batch = [
            delivery("hung", "deal:1", 1),
            delivery("other", "deal:2", 1),
        ];
        let deadline = Instant::now() + Duration::from_secs(30);

        // WHEN the batch is processed
        let dispositions = consumer.process_batch_until(&batch, deadline).await;

        // THEN the hung call was stopped before the deadline: a transient failure, deferred with
        // backoff and counted as attempt 1; the other message was handed back untried
        assert_eq!(dispositions, [Disposition::Retry, Disposition::Retry]);
        assert!(Instant::now() < deadline);
        assert_eq!(handler.started(), ["hung"]);
        assert_eq!(*queue.deferred.lock().unwrap(), ["receipt-hung-1"]);
        assert_eq!(consumer.log.count_attempt("id-hung", 60).await.unwrap(), 2);
        assert_eq!(consumer.log.count_attempt("id-other", 60).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_message_whose_tries_all_ended_without_a_verdict_is_dead_lettered_untried() {
        // GIVEN a message whose 3 counted tries (the whole budget) never reported back: the
        // function was stopped mid-try each time
        let handler = Arc::new(Scripted::default());
        let queue = Arc::new(RecordingQueue::default());
        let consumer = consumer(handler.clone(), queue.clone(), 3);
        for _ in 0..3 {
            consumer.log.count_attempt("id-killer", 60).await.unwrap();
        }

        // WHEN it is received again
        let dispositions = consumer
            .process_batch(&[delivery("killer", "deal:9", 4)])
            .await;

        // THEN it goes to the DLQ with the reason and its 3 tries, without a 4th
        assert_eq!(dispositions, [Disposition::Done]);
        assert!(handler.tries_of("killer").is_empty());
        let dead = queue.dead.lock().unwrap().clone();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].2, 3);
        assert!(
            dead[0].1.contains("retry budget of 3 attempts exhausted")
                && dead[0].1.contains("ended without a verdict"),
            "{}",
            dead[0].1
        );
    }

    #[tokio::test]
    async fn a_message_held_back_behind_its_failing_group_head_waits_only_as_long_as_the_head() {
        // GIVEN a batch whose group deal:1 has a head that fails once and a second message, and
        // a message of another group
        let handler = Arc::new(Scripted::failing(&[("head", 1)]));
        let queue = Arc::new(RecordingQueue::default());
        let consumer = consumer(handler.clone(), queue.clone(), 3);

        // WHEN the batch is processed
        let dispositions = consumer
            .process_batch(&[
                delivery("head", "deal:1", 1),
                delivery("next", "deal:1", 1),
                delivery("other", "deal:2", 1),
            ])
            .await;

        // THEN the held-back message is handed back untried, deferred by the head's own backoff
        // (not left in flight for the queue's visibility timeout, which would hold the group
        // that long), and the other group went through
        assert_eq!(
            dispositions,
            [Disposition::Retry, Disposition::Retry, Disposition::Done]
        );
        assert!(handler.tries_of("next").is_empty());
        let delays = queue.delays.lock().unwrap().clone();
        assert_eq!(delays.len(), 2, "{delays:?}");
        assert_eq!(delays[0].0, "receipt-head-1");
        assert_eq!(delays[1].0, "receipt-next-1");
        assert_eq!(delays[0].1, delays[1].1, "the same backoff as the head");
        assert!(delays[0].1 > Duration::ZERO);
    }

    #[tokio::test]
    async fn a_message_held_back_behind_its_failing_group_head_is_tried_from_attempt_one() {
        // GIVEN a budget of 3 attempts, and a FIFO group whose head fails 3 times (then it is
        // dead-lettered) and whose second message fails 2 times before it goes through
        let handler = Arc::new(Scripted::failing(&[("head", 3), ("next", 2)]));
        let queue = Arc::new(RecordingQueue::default());
        let consumer = consumer(handler.clone(), queue.clone(), 3);
        let mut receives: BTreeMap<&str, u32> = BTreeMap::new();
        let mut pending: VecDeque<&str> = VecDeque::from(["head", "next"]);
        let mut batches = Vec::new();

        // WHEN SQS keeps redelivering what is not done, counting every receive
        while !pending.is_empty() && batches.len() < 10 {
            let batch: Vec<Delivery> = pending
                .iter()
                .map(|k| {
                    let n = receives.entry(k).or_insert(0);
                    *n += 1;
                    delivery(k, "deal:1", *n)
                })
                .collect();
            let dispositions = consumer.process_batch(&batch).await;
            batches.push(dispositions.clone());
            let mut kept = VecDeque::new();
            for (k, d) in pending.iter().zip(dispositions) {
                if d == Disposition::Retry {
                    kept.push_back(*k);
                }
            }
            pending = kept;
        }

        // THEN the head was dead-lettered after its 3 tries, with the reason
        assert_eq!(handler.tries_of("head"), [1, 2, 3]);
        // ... and the second message, held back twice and received a 3rd time, was tried as
        // attempt 1, 2 and 3: never dead-lettered for receives that were not tries
        assert_eq!(handler.tries_of("next"), [1, 2, 3]);
        assert_eq!(receives["next"], 5, "2 hold-backs + 3 tries");
        let dead = queue.dead.lock().unwrap().clone();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].0, "id-head");
        assert!(
            dead[0].1.contains("retry budget of 3 attempts exhausted")
                && dead[0].1.contains("CRM answered 503"),
            "{}",
            dead[0].1
        );
        assert!(pending.is_empty(), "next was delivered: {batches:?}");
    }

    #[tokio::test]
    async fn a_message_is_dead_lettered_with_the_reason_after_its_real_tries_only() {
        // GIVEN a budget of 3 attempts; the group's head fails twice then goes through, and the
        // second message never succeeds
        let handler = Arc::new(Scripted::failing(&[("head", 2), ("next", u32::MAX)]));
        let queue = Arc::new(RecordingQueue::default());
        let consumer = consumer(handler.clone(), queue.clone(), 3);
        let mut receives: BTreeMap<&str, u32> = BTreeMap::new();
        let mut pending: VecDeque<&str> = VecDeque::from(["head", "next"]);

        // WHEN SQS keeps redelivering what is not done
        for _ in 0..10 {
            if pending.is_empty() {
                break;
            }
            let batch: Vec<Delivery> = pending
                .iter()
                .map(|k| {
                    let n = receives.entry(k).or_insert(0);
                    *n += 1;
                    delivery(k, "deal:2", *n)
                })
                .collect();
            let dispositions = consumer.process_batch(&batch).await;
            pending = pending
                .iter()
                .zip(dispositions)
                .filter(|(_, d)| *d == Disposition::Retry)
                .map(|(k, _)| *k)
                .collect();
        }

        // THEN the second message had exactly 3 real tries, then went to the DLQ with the
        // reason and its real attempt count (not its 5 receives)
        assert_eq!(handler.tries_of("next"), [1, 2, 3]);
        assert_eq!(receives["next"], 5);
        let dead = queue.dead.lock().unwrap().clone();
        assert_eq!(dead.len(), 1, "{dead:?}");
        let (id, reason, attempts) = &dead[0];
        assert_eq!((id.as_str(), *attempts), ("id-next", 3));
        assert!(
            reason.contains("retry budget of 3 attempts exhausted; last error:")
                && reason.contains("CRM answered 503"),
            "{reason}"
        );
        assert!(pending.is_empty());
    }
}
