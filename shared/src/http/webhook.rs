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
use crate::store::{Claim, ClaimStore, EventLog, EventRecord};
use crate::timefmt::{now_millis, now_rfc3339};

pub const ROUTE_PREFIX: &str = "/enerflo/webhooks/";

/// How long a webhook claim stays "in progress" before another delivery may take it over (a
/// crashed ingest must not block the event for long).
const CLAIM_LEASE_SECS: u64 = 30;

pub struct WebhookIngest {
    pub tokens: SecretSet,
    pub max_body_bytes: usize,
    pub install_id_paths: Vec<String>,
    pub queue: Arc<dyn EventQueue>,
    pub claims: Arc<dyn ClaimStore>,
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

/// Why a routed event was not enqueued; nothing of it was kept (retrying is safe).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotEnqueued {
    #[error("the body does not fit in a queue message, even gzip-compressed")]
    TooLarge,
    #[error("the same event is being accepted by a concurrent delivery")]
    InProgress,
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
            // Another delivery of the same event is being enqueued right now. Saying
            // "duplicate" could lose it if that one fails; ask for a retry instead.
            Err(NotEnqueued::InProgress) => Problem::unavailable(
                "The same event is being accepted by a concurrent delivery.",
                Duration::from_secs(5),
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

    /// The one enqueue path of a routed event: size check, claim, event log, queue, completion.
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
        // Before anything is written (claim, event log): a body no queue message can hold, even
        // compressed, is refused whole, so nothing is left half accepted. (A parked event too:
        // replaying it later enqueues it.)
        if let Err(e) = check_size(&meta, &raw_body) {
            tracing::warn!(outcome = "too_large", error = %e, "webhook");
            return Err(NotEnqueued::TooLarge);
        }

        let claim_key = format!("webhook#{key}");
        match self
            .claims
            .claim(&claim_key, CLAIM_LEASE_SECS, self.dedupe_ttl.as_secs())
            .await
        {
            Ok(Claim::Acquired) => {}
            Ok(Claim::Completed { .. }) => {
                let dup = record(
                    &key,
                    event,
                    Some(stage),
                    Some(&group),
                    &received_at,
                    received_ms,
                    String::new(),
                    "duplicate",
                );
                if let Err(e) = self.log.record(&dup, self.log_ttl.as_secs()).await {
                    tracing::warn!(error = %e, "duplicate delivery not counted");
                }
                tracing::info!(outcome = "duplicate", "webhook");
                metrics::count(stage.as_str(), Event::Duplicate);
                return Ok(Enqueued::Duplicate {
                    stage,
                    dedupe_key: key,
                });
            }
            Ok(Claim::InProgress) => return Err(NotEnqueued::InProgress),
            Err(e) => {
                tracing::error!(error = %e, "claim failed");
                return Err(NotEnqueued::Store(e.to_string()));
            }
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
            raw_body.clone(),
            outcome,
        );
        if let Err(e) = self.log.record(&rec, self.log_ttl.as_secs()).await {
            tracing::error!(error = %e, "event log write failed");
            self.release(&claim_key).await;
            return Err(NotEnqueued::Store(e.to_string()));
        }
        if queued {
            let msg = QueueMessage {
                meta,
                body: raw_body,
            };
            if let Err(e) = self.queue.send(&msg).await {
                tracing::error!(error = %e, "enqueue failed");
                let _ = self
                    .log
                    .set_outcome(&key, "enqueue_failed", Some(&e.to_string()))
                    .await;
                self.release(&claim_key).await;
                return Err(NotEnqueued::Queue(e.to_string()));
            }
        }
        if let Err(e) = self
            .claims
            .complete(&claim_key, outcome, self.dedupe_ttl.as_secs())
            .await
        {
            // The message is safely queued; a failed completion only weakens duplicate detection
            // for this key (the queue's own dedupe window and the stage's state still apply).
            tracing::warn!(error = %e, "claim not completed");
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

    async fn release(&self, claim_key: &str) {
        if let Err(e) = self.claims.release(claim_key).await {
            tracing::error!(error = %e, "claim not released; a retry may be answered 503 until its lease ends");
        }
    }
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
            claims: store.clone(),
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
