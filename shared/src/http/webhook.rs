//! `POST /enerflo/webhooks/{token}`: verify, classify, derive the dedupe key, log, enqueue,
//! answer. It never calls Enerflo or the CRM (docs/design.md 4: acknowledge fast).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use super::{HttpRequest, HttpResponse, Problem};
use crate::classify::{Classification, Stage, classify};
use crate::enerflo::envelope::Envelope;
use crate::hashing::json_sha256_hex;
use crate::metrics::{self, Event};
use crate::queue::{EventQueue, MAX_MESSAGE_BYTES, MessageMeta, QueueMessage, check_size};
use crate::secret::SecretSet;
use crate::store::{Acceptance, EventLog, EventRecord, is_unsent};
use crate::timefmt::{now_millis, now_rfc3339};

pub const ROUTE_PREFIX: &str = "/enerflo/webhooks/";

/// How long an accepted event may wait for a consumer's outcome before the sweep sends it again
/// ([`WebhookIngest::resend_unsent`]): past the queues' 5-minute dedupe window, and long past
/// the seconds a consumer normally takes.
pub const RESEND_AFTER: Duration = Duration::from_secs(600);
/// At most this many events per stage are re-sent by one sweep.
pub const RESEND_BATCH: usize = 200;

pub struct WebhookIngest {
    pub tokens: SecretSet,
    pub max_body_bytes: usize,
    pub install_id_paths: Vec<String>,
    pub queue: Arc<dyn EventQueue>,
    pub log: Arc<dyn EventLog>,
    pub dedupe_ttl: Duration,
    pub log_ttl: Duration,
}

/// Where an enqueued event came from (a field of its log lines; the event log tells them apart
/// by the dedupe key, [`RECONCILE_KEY_PREFIX`] for the sweep's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Webhook,
    Reconcile,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Reconcile => "reconcile",
        }
    }
}

/// How the dedupe key of every event the reconciliation sweep enqueues begins (`crate::reconcile`):
/// the event log's record of such an event says `reconcile` where a webhook's names its event.
pub const RECONCILE_KEY_PREFIX: &str = "reconcile:";

/// What became of a routed event handed to the enqueue path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Claimed, logged and on the stage queue; `parked`: the stage has no queue in this
    /// deployment, so it is kept in the event log only (for replay).
    Queued {
        stage: Stage,
        dedupe_key: String,
        parked: bool,
    },
    /// This dedupe key was accepted before: only a delivery was counted.
    Duplicate { stage: Stage, dedupe_key: String },
}

/// Why a routed event was not enqueued; retrying is safe. Only a failed send leaves something:
/// the record (`enqueue_failed`), which the retry, or else the sweep, sends.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotEnqueued {
    #[error("the body does not fit in a queue message, even gzip-compressed")]
    TooLarge,
    #[error("state store unavailable: {0}")]
    Store(String),
    #[error("queue unavailable: {0}")]
    Queue(String),
    #[error("not an Enerflo event body: {0}")]
    Unreadable(String),
    #[error("no stage handles `{0}`")]
    NotRouted(String),
}

/// The dedupe key: event name + entity + a hash of the normalised body (object keys sorted), so
/// a redelivery of the same content is recognised whatever its key order or whitespace.
pub fn dedupe_key(event: &str, entity: Option<&str>, body: &Value) -> String {
    dedupe_key_from_hash(event, entity, &json_sha256_hex(body))
}

fn dedupe_key_from_hash(event: &str, entity: Option<&str>, body_hash: &str) -> String {
    format!(
        "{event}:{}:{}",
        entity.unwrap_or("unidentified"),
        &body_hash[..24]
    )
}

impl WebhookIngest {
    pub async fn handle(&self, req: &HttpRequest, token: &str) -> HttpResponse {
        if !self.tokens.matches(token.as_bytes()) {
            // Indistinguishable from an unknown route: a wrong token learns nothing.
            return Problem::not_found().into_response();
        }
        if req.body.len() > self.max_body_bytes {
            return Problem::too_large(self.max_body_bytes).into_response();
        }
        let value: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                return Problem::bad_request(format!(
                    "The body is not valid JSON ({}).",
                    e.classify_name()
                ))
                .into_response();
            }
        };
        let hint = req.query_param("event");
        // Hash before the value moves into the envelope: one parse, no clone.
        let body_hash = json_sha256_hex(&value);
        let envelope = match Envelope::from_value(value, hint.as_deref()) {
            Ok(env) => env,
            Err(e) => return Problem::bad_request(e.to_string()).into_response(),
        };
        let raw_body = String::from_utf8_lossy(&req.body).into_owned();
        let received_at = now_rfc3339();
        let received_ms = now_millis();

        let (stage, entity) = match classify(&envelope, &self.install_id_paths) {
            Classification::Ignored => {
                let key = dedupe_key_from_hash(&envelope.event, None, &body_hash);
                let record = record(
                    &key,
                    &envelope.event,
                    None,
                    None,
                    &received_at,
                    received_ms,
                    raw_body,
                    "ignored",
                );
                if let Err(e) = self.log.record(&record, self.log_ttl.as_secs()).await {
                    tracing::warn!(error = %e, event = %envelope.event, "ignored event not logged");
                }
                tracing::info!(event = %envelope.event, dedupe_key = %key, outcome = "ignored", "webhook");
                metrics::count(metrics::UNROUTED, Event::Ignored);
                return HttpResponse::json(
                    StatusCode::ACCEPTED,
                    &json!({"status": "ignored", "event": envelope.event}),
                );
            }
            Classification::Routed { stage, entity } => (stage, entity),
        };

        let key = dedupe_key_from_hash(&envelope.event, entity.as_deref(), &body_hash);
        let body_len = raw_body.len();
        let accepted = self
            .enqueue(
                Source::Webhook,
                &envelope.event,
                stage,
                entity,
                key,
                raw_body,
                (received_at, received_ms),
            )
            .await;
        match accepted {
            Ok(Enqueued::Queued {
                stage,
                dedupe_key,
                parked,
            }) => {
                let mut body =
                    json!({"status": "queued", "stage": stage, "dedupe_key": dedupe_key});
                if parked {
                    // No consumer for this stage in this deployment: kept in the event log for replay.
                    body["parked"] = json!(true);
                }
                HttpResponse::json(StatusCode::ACCEPTED, &body)
            }
            Ok(Enqueued::Duplicate { stage, dedupe_key }) => HttpResponse::json(
                StatusCode::ACCEPTED,
                &json!({"status": "duplicate", "stage": stage, "dedupe_key": dedupe_key}),
            ),
            Err(NotEnqueued::TooLarge) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Payload Too Large",
                format!(
                    "The body ({body_len} bytes) does not fit in a queue message: at most \
                     {MAX_MESSAGE_BYTES} bytes with its attributes, even gzip-compressed."
                ),
            )
            .into_response(),
            Err(NotEnqueued::Store(_)) => {
                Problem::unavailable("State store unavailable; retry.", Duration::from_secs(10))
                    .into_response()
            }
            Err(NotEnqueued::Queue(_)) => {
                Problem::unavailable("Queue unavailable; retry.", Duration::from_secs(10))
                    .into_response()
            }
            // Not reached: this event was classified above.
            Err(e @ (NotEnqueued::Unreadable(_) | NotEnqueued::NotRouted(_))) => {
                Problem::bad_request(e.to_string()).into_response()
            }
        }
    }

    /// Enqueues an event the sync made up itself (the reconciliation sweep, `crate::reconcile`)
    /// exactly as a webhook delivery of `body` would be: classified, claimed under `dedupe_key`,
    /// recorded in the event log (its key says where it came from), queued in its entity's FIFO
    /// group. The key is the caller's: derived from the change, so the same change found again is a
    /// duplicate.
    pub async fn enqueue_synthetic(
        &self,
        body: &Value,
        dedupe_key: &str,
    ) -> Result<Enqueued, NotEnqueued> {
        let envelope = Envelope::from_value(body.clone(), None)
            .map_err(|e| NotEnqueued::Unreadable(e.to_string()))?;
        let (stage, entity) = match classify(&envelope, &self.install_id_paths) {
            Classification::Routed { stage, entity } => (stage, entity),
            Classification::Ignored => return Err(NotEnqueued::NotRouted(envelope.event)),
        };
        self.enqueue(
            Source::Reconcile,
            &envelope.event,
            stage,
            entity,
            dedupe_key.to_owned(),
            body.to_string(),
            (now_rfc3339(), now_millis()),
        )
        .await
    }

    /// The one enqueue path of a routed event, at most two AWS calls one after the other:
    ///
    /// 1. [`EventLog::accept`]: ONE conditional write claims the dedupe key and keeps the event
    ///    (raw body included) with outcome `queued`, or finds the record a repeat left;
    /// 2. the queue send (dedupe id from the dedupe key), beside [`EventLog::tally`] (counts;
    ///    nothing waits for it).
    ///
    /// No completion write: until a consumer records an outcome, the record stays `queued`,
    /// and a repeat delivery, or the sweep ([`resend_unsent`](Self::resend_unsent)) for one
    /// never repeated, sends it again (marked [`MessageMeta::for_resend`]): the queue drops a
    /// re-send within its dedupe window, a consumer one past it when the event was taken.
    #[allow(clippy::too_many_arguments)]
    async fn enqueue(
        &self,
        source: Source,
        event: &str,
        stage: Stage,
        entity: Option<String>,
        key: String,
        raw_body: String,
        (received_at, received_ms): (String, i64),
    ) -> Result<Enqueued, NotEnqueued> {
        use tracing::Instrument;
        let group = entity
            .clone()
            .unwrap_or_else(|| format!("unidentified:{}", &key[key.len().saturating_sub(24)..]));
        let source = source.as_str();
        let span = tracing::info_span!("webhook", event = %event, stage = stage.as_str(), dedupe_key = %key, entity = %group, source);
        // Instrumented, not entered: an entered span's guard held across the store's awaits
        // would tag other tasks' lines on this thread, and lose this one's after a thread switch.
        self.enqueue_in_span(
            event,
            stage,
            group,
            key,
            raw_body,
            (received_at, received_ms),
        )
        .instrument(span)
        .await
    }

    /// [`Self::enqueue`] inside its span.
    async fn enqueue_in_span(
        &self,
        event: &str,
        stage: Stage,
        group: String,
        key: String,
        raw_body: String,
        (received_at, received_ms): (String, i64),
    ) -> Result<Enqueued, NotEnqueued> {
        metrics::count(stage.as_str(), Event::Received);
        let meta = MessageMeta {
            stage,
            event: event.to_owned(),
            dedupe_key: key.clone(),
            group: group.clone(),
            received_at: received_at.clone(),
        };
        // Before anything is written: a body no queue message can hold, even compressed, is
        // refused whole, so nothing is left half accepted. (A parked event too: replaying it
        // later enqueues it.) Checked as a re-send, the larger message, so a re-send fits too.
        if let Err(e) = check_size(&meta.for_resend(), &raw_body) {
            tracing::warn!(outcome = "too_large", error = %e, "webhook");
            return Err(NotEnqueued::TooLarge);
        }

        let queued = self.queue.has_stage(stage);
        let outcome = if queued { "queued" } else { "parked" };
        let rec = record(
            &key,
            event,
            Some(stage),
            Some(&group),
            &received_at,
            received_ms,
            raw_body,
            outcome,
        );
        // The record outlives the dedupe window a claim had, whichever TTL is longer.
        let ttl = self.log_ttl.max(self.dedupe_ttl).as_secs();
        let found = match self.log.accept(&rec, ttl).await {
            Ok(Acceptance::New) => None,
            Ok(Acceptance::Repeat(found)) => Some(*found),
            Err(e) => {
                tracing::error!(error = %e, "event log write failed");
                return Err(NotEnqueued::Store(e.to_string()));
            }
        };
        let repeat = found.is_some();
        // Sent when new, or when a repeat finds no sign a consumer took the event: the first
        // delivery may have stopped before its send (or is sending right now; the queue's
        // dedupe id makes that one message).
        let resend = found
            .as_ref()
            .is_some_and(|f| is_unsent(&f.outcome) && f.stage.as_deref() == Some(stage.as_str()));
        if !queued || (repeat && !resend) {
            if let Err(e) = self.log.tally(&rec, repeat).await {
                tracing::warn!(error = %e, "delivery not counted");
            }
        } else {
            let msg = QueueMessage {
                meta: if repeat { meta.for_resend() } else { meta },
                body: rec.raw_body.clone(),
            };
            let (sent, tallied) = tokio::join!(self.queue.send(&msg), self.log.tally(&rec, repeat));
            if let Err(e) = tallied {
                tracing::warn!(error = %e, "delivery not counted");
            }
            if let Err(e) = sent {
                // Kept, raw body and all: a retry of this delivery, or the sweep, sends it.
                tracing::error!(error = %e, "enqueue failed");
                if let Err(e) = self
                    .log
                    .set_outcome(&key, "enqueue_failed", Some(&e.to_string()))
                    .await
                {
                    tracing::warn!(error = %e, "enqueue_failed not recorded");
                }
                return Err(NotEnqueued::Queue(e.to_string()));
            }
        }
        match found {
            Some(found) if found.outcome == "enqueue_failed" && resend => {
                // Its first send failed (that delivery was answered 503): this one queued it.
                if let Err(e) = self
                    .log
                    .set_outcome(&key, "queued", Some("sent by a repeat delivery"))
                    .await
                {
                    tracing::warn!(error = %e, "queued not recorded");
                }
            }
            Some(_) => {
                tracing::info!(outcome = "duplicate", resent = resend, "webhook");
                metrics::count(stage.as_str(), Event::Duplicate);
                return Ok(Enqueued::Duplicate {
                    stage,
                    dedupe_key: key,
                });
            }
            None => {}
        }
        tracing::info!(outcome, "webhook");
        metrics::count(
            stage.as_str(),
            if queued { Event::Queued } else { Event::Parked },
        );
        Ok(Enqueued::Queued {
            stage,
            dedupe_key: key,
            parked: !queued,
        })
    }

    /// The sweep of the ingest path: sends again every event of a stage with a queue whose
    /// record was written (accepted, or last re-sent) more than `older_than` ago and that no
    /// consumer has recorded an outcome for: the delivery that accepted it stopped before its
    /// send (and was never repeated), or its send failed. At most `limit` per stage. Each is
    /// sent marked as a re-send, then its record notes it (listed again as of now, so the next
    /// sweep waits `older_than` again). Run by the scheduled reconcile function and the local
    /// runner.
    pub async fn resend_unsent(&self, older_than: Duration, limit: usize) -> Resent {
        let before_ms = now_millis()
            .saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX))
            .max(0);
        let mut out = Resent::default();
        for stage in Stage::ALL
            .iter()
            .copied()
            .filter(|s| self.queue.has_stage(*s))
        {
            let events = match self.log.unsent(stage.as_str(), before_ms, limit).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = %e, stage = stage.as_str(), "unsent events not listed");
                    out.failed += 1;
                    continue;
                }
            };
            for rec in events {
                let waited_secs = (now_millis() - rec.received_ms).max(0) / 1000;
                let meta = MessageMeta {
                    stage,
                    event: rec.event.clone(),
                    dedupe_key: rec.dedupe_key.clone(),
                    group: rec.entity.clone().unwrap_or_else(|| {
                        let k = &rec.dedupe_key;
                        format!("unidentified:{}", &k[k.len().saturating_sub(24)..])
                    }),
                    received_at: rec.received_at.clone(),
                };
                let msg = QueueMessage {
                    meta: meta.for_resend(),
                    body: rec.raw_body,
                };
                let span = tracing::info_span!("resend", stage = stage.as_str(), dedupe_key = %rec.dedupe_key, entity = %meta.group);
                let _enter = span.enter();
                if let Err(e) = self.queue.send(&msg).await {
                    tracing::error!(error = %e, "re-send failed; the next sweep tries again");
                    out.failed += 1;
                    continue;
                }
                let detail = format!(
                    "re-sent by the sweep: no consumer outcome {waited_secs} s after it was received"
                );
                if let Err(e) = self
                    .log
                    .set_outcome(&rec.dedupe_key, "queued", Some(&detail))
                    .await
                {
                    tracing::warn!(error = %e, "re-send not recorded; the next sweep sends it again");
                }
                tracing::warn!(waited_secs, "unsent event re-sent");
                out.resent += 1;
            }
        }
        out
    }
}

/// What [`WebhookIngest::resend_unsent`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Resent {
    /// Events sent again.
    pub resent: usize,
    /// Listings or sends that failed (tried again by the next sweep).
    pub failed: usize,
}

#[allow(clippy::too_many_arguments)]
fn record(
    key: &str,
    event: &str,
    stage: Option<Stage>,
    entity: Option<&str>,
    received_at: &str,
    received_ms: i64,
    raw_body: String,
    outcome: &str,
) -> EventRecord {
    EventRecord {
        dedupe_key: key.to_owned(),
        event: event.to_owned(),
        stage: stage.map(|s| s.as_str().to_owned()),
        entity: entity.map(str::to_owned),
        received_at: received_at.to_owned(),
        received_ms,
        raw_body,
        outcome: outcome.to_owned(),
        detail: None,
        deliveries: 1,
        attempts: 0,
        history: vec![crate::store::OutcomeEntry::new(received_at, outcome, None)],
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "unexpected end of input",
        }
    }
}

#[cfg(test)]
#[path = "webhook_crash_tests.rs"]
mod crash_tests;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, Method};

    use super::*;
    use crate::embedded_db::open_database;
    use crate::queue::embedded::EmbeddedQueue;
    use crate::store::embedded::EmbeddedStore;

    fn ingest(stages: &[Stage]) -> (WebhookIngest, Arc<EmbeddedQueue>) {
        let db = open_database(None).expect("db");
        let store = Arc::new(EmbeddedStore::new(db.clone()));
        let queue = Arc::new(EmbeddedQueue::new(db, stages.iter().copied()));
        let ingest = WebhookIngest {
            tokens: SecretSet::parse("tok"),
            max_body_bytes: 1 << 20,
            install_id_paths: vec!["install_id".into()],
            queue: queue.clone(),
            log: store,
            dedupe_ttl: Duration::from_secs(3600),
            log_ttl: Duration::from_secs(3600),
        };
        (ingest, queue)
    }

    fn post(body: &str) -> HttpRequest {
        HttpRequest {
            method: Method::POST,
            path: "/enerflo/webhooks/tok".into(),
            query: None,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[tokio::test]
    async fn an_event_of_a_stage_without_a_queue_is_parked_in_the_event_log_with_its_raw_body() {
        // GIVEN a deployment whose only queue is the project stage's
        let (ingest, queue) = ingest(&[Stage::Project]);
        let body =
            r#"{"webhook_event":"update_install","id":700001,"status":{"id":4,"name":"On Hold"}}"#;
        // WHEN a status event arrives
        let resp = ingest.handle(&post(body), "tok").await;
        // THEN it is acknowledged as queued-but-parked and kept, raw, in the event log
        assert_eq!(resp.status, StatusCode::ACCEPTED);
        let answer = resp.body_json();
        assert_eq!(
            (answer["status"].as_str(), answer["parked"].as_bool()),
            (Some("queued"), Some(true))
        );
        let logged = ingest
            .log
            .get(answer["dedupe_key"].as_str().expect("key"))
            .await
            .expect("log")
            .expect("kept");
        assert_eq!(
            (logged.outcome.as_str(), logged.raw_body.as_str()),
            ("parked", body)
        );
        assert_eq!(queue.depth(Stage::Project).expect("depth"), 0);
    }

    #[tokio::test]
    async fn a_queue_failure_answers_503_and_lets_the_redelivery_through() {
        // GIVEN no queue for the project stage at all: send fails
        let (mut ingest, _) = ingest(&[]);
        struct Failing;
        #[async_trait::async_trait]
        impl EventQueue for Failing {
            async fn send(&self, _: &QueueMessage) -> Result<(), crate::queue::QueueError> {
                Err(crate::queue::QueueError::Invalid("down".into()))
            }
            fn has_stage(&self, _: Stage) -> bool {
                true
            }
            async fn defer(
                &self,
                _: Stage,
                _: &str,
                _: Duration,
            ) -> Result<(), crate::queue::QueueError> {
                Ok(())
            }
            async fn dead_letter(
                &self,
                _: Stage,
                _: &crate::queue::Delivery,
                _: &str,
            ) -> Result<(), crate::queue::QueueError> {
                Ok(())
            }
        }
        ingest.queue = Arc::new(Failing);
        let body = r#"{"event":"deal.projectSubmitted","payload":{"deal":{"id":"d1"}}}"#;
        let first = ingest.handle(&post(body), "tok").await;
        assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(first.headers.contains_key(http::header::RETRY_AFTER));
        // WHEN Enerflo retries after the queue recovered, it is queued, not called a duplicate
        let (fresh, queue) = self::ingest(&[Stage::Project]);
        ingest.queue = queue.clone();
        ingest.tokens = fresh.tokens.clone();
        let again = ingest.handle(&post(body), "tok").await;
        assert_eq!(again.status, StatusCode::ACCEPTED);
        assert_eq!(again.body_json()["status"], "queued");
        assert_eq!(queue.depth(Stage::Project).expect("depth"), 1);
    }
}
