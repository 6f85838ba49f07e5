//! The event queue between the webhook and the stage consumers: FIFO per entity (message group),
//! deduplicated, with a dead-letter queue that keeps the reason. SQS in AWS ([`sqs`]), redb
//! locally ([`embedded`]). A body that does not fit a message as it is travels gzip + base64
//! ([`encode_body`]); every reader gets it back as it was sent ([`decode_body`]).

pub mod embedded;
pub mod sqs;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
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

    /// What [`to_attributes`](Self::to_attributes) takes of a message ([`attributes_size`]).
    pub fn attributes_size(&self) -> usize {
        attributes_size(self.to_attributes())
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

    /// SQS `MessageDeduplicationId`: at most 128 characters of a restricted alphabet. A
    /// re-send ([`RESEND_MARK`]) has the id of the message it repeats, so the queue drops it
    /// within its dedupe window.
    pub fn dedupe_id(&self) -> String {
        let key = self
            .dedupe_key
            .strip_suffix(RESEND_MARK)
            .unwrap_or(&self.dedupe_key);
        crate::hashing::sha256_hex(key.as_bytes())
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

/// SQS's message size limit. It counts the body and every attribute's name, data type
/// (`String`) and value ([`attributes_size`]).
pub const MAX_MESSAGE_BYTES: usize = 1_048_576;

/// Room every message keeps free for what dead-lettering and replaying add to its attributes
/// later: the four `dlq_*` attributes of `sqs.rs` (the reason cut to 1,000 bytes, about 1,250
/// bytes in all) and the replay mark on the dedupe key ([`REPLAY_MARK`], 24 bytes). So a
/// message the queue accepted can always be dead-lettered, and replayed from there.
pub const ATTRIBUTE_ALLOWANCE: usize = 2_048;

/// The message attribute naming how the body travels; absent: as it came.
pub const BODY_ENCODING: &str = "body_encoding";
/// A body too large to travel as it is, with its attributes: gzip-compressed, then base64
/// (standard alphabet, padded), so it stays a valid SQS string body.
pub const GZIP_BASE64: &str = "gzip+base64";

/// The bytes SQS counts for string attributes: name, data type and value of each. Attributes with
/// an empty value are not sent (`sqs.rs`), so they count nothing.
pub fn attributes_size<K: AsRef<str>, V: AsRef<str>>(
    attributes: impl IntoIterator<Item = (K, V)>,
) -> usize {
    attributes
        .into_iter()
        .filter(|(_, v)| !v.as_ref().is_empty())
        .map(|(k, v)| k.as_ref().len() + "String".len() + v.as_ref().len())
        .sum()
}

/// The body as a message whose other attributes take `attributes_bytes` bytes carries it, with
/// `reserve` bytes left free: as it is when that fits, else gzip + base64 (the second value is
/// then the [`BODY_ENCODING`] to send along) when that fits. A body that fits neither way is
/// refused, naming its size and the limit.
pub fn encode_body(
    body: &str,
    attributes_bytes: usize,
    reserve: usize,
) -> Result<(Cow<'_, str>, Option<&'static str>), QueueError> {
    let room = MAX_MESSAGE_BYTES.saturating_sub(attributes_bytes + reserve);
    if body.len() <= room {
        return Ok((Cow::Borrowed(body), None));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(gzip(body));
    let marker = attributes_size([(BODY_ENCODING, GZIP_BASE64)]);
    if encoded.len() + marker <= room {
        return Ok((Cow::Owned(encoded), Some(GZIP_BASE64)));
    }
    Err(QueueError::Invalid(format!(
        "message body is {} bytes ({} gzip+base64); with its attributes ({attributes_bytes} bytes) \
         and {reserve} bytes kept for dead-lettering it exceeds the queue's limit of \
         {MAX_MESSAGE_BYTES} bytes",
        body.len(),
        encoded.len()
    )))
}

fn gzip(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(text.as_bytes());
    enc.finish().unwrap_or_default()
}

/// Turns a received wire body back into the body it was sent with, as its [`BODY_ENCODING`]
/// attribute says, and drops that attribute: readers see the message as it was sent. A body
/// that does not decode is left as it came, attribute and all, and the error says why (the
/// consumer dead-letters such a message as poison).
pub fn decode_body(
    body: &mut String,
    attributes: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let Some(encoding) = attributes.get(BODY_ENCODING) else {
        return Ok(());
    };
    if encoding != GZIP_BASE64 {
        return Err(format!(
            "message attribute `{BODY_ENCODING}` names an unknown encoding `{encoding}`"
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|e| format!("message body is not the base64 its `{BODY_ENCODING}` says: {e}"))
        .and_then(|gz| {
            use std::io::Read;
            let mut out = String::new();
            flate2::read::GzDecoder::new(gz.as_slice())
                .read_to_string(&mut out)
                .map_err(|e| {
                    format!("message body is not the gzip'd UTF-8 its `{BODY_ENCODING}` says: {e}")
                })?;
            Ok(out)
        })?;
    *body = decoded;
    attributes.remove(BODY_ENCODING);
    Ok(())
}

/// Refuses a body no message with `meta`'s attributes could hold, even compressed (keeping
/// [`ATTRIBUTE_ALLOWANCE`] free), before anything is written for it. Both adapters refuse
/// exactly these on `send`.
pub fn check_size(meta: &MessageMeta, body: &str) -> Result<(), QueueError> {
    encode_body(body, meta.attributes_size(), ATTRIBUTE_ALLOWANCE).map(|_| ())
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

/// Suffix that marks a re-send by the webhook's enqueue path of an event accepted before whose
/// message may or may not be on the queue (`crate::http::webhook`): the same queue dedupe id
/// (dropped within the queue's dedupe window), the same event log entry. Past the window it is
/// a second message; the consumer drops it when the event log says a consumer took the event
/// already (`crate::consumer`), so it never overwrites a later change of the entity.
pub const RESEND_MARK: &str = "#resend";

impl MessageMeta {
    /// The event log key: the dedupe key without a replay or re-send mark.
    pub fn log_key(&self) -> &str {
        let key = self
            .dedupe_key
            .split(REPLAY_MARK)
            .next()
            .unwrap_or(&self.dedupe_key);
        key.strip_suffix(RESEND_MARK).unwrap_or(key)
    }

    /// The same message marked as a re-send of one that may be on the queue already.
    pub fn for_resend(&self) -> Self {
        let mut meta = self.clone();
        meta.dedupe_key = format!("{}{RESEND_MARK}", self.log_key());
        meta
    }

    /// Whether this is a re-send ([`for_resend`](Self::for_resend)).
    pub fn is_resend(&self) -> bool {
        self.dedupe_key.ends_with(RESEND_MARK)
    }

    /// The same message marked as a replay, so the queues' dedupe windows do not drop it.
    pub fn for_replay(&self) -> Self {
        let mut meta = self.clone();
        meta.dedupe_key = format!("{}{REPLAY_MARK}{:016x}", self.log_key(), fastrand::u64(..));
        meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> MessageMeta {
        MessageMeta {
            stage: Stage::Project,
            event: "deal.projectSubmitted".into(),
            dedupe_key: "deal.projectSubmitted:deal:d1:0123456789abcdef01234567".into(),
            group: "deal:d1".into(),
            received_at: "2025-01-02T03:04:05Z".into(),
        }
    }

    #[test]
    fn a_body_that_fits_with_its_attributes_travels_as_it_is() {
        let room = MAX_MESSAGE_BYTES - meta().attributes_size() - ATTRIBUTE_ALLOWANCE;
        let body = "a".repeat(room);
        let (wire, encoding) =
            encode_body(&body, meta().attributes_size(), ATTRIBUTE_ALLOWANCE).expect("fits");
        assert!(matches!(wire, Cow::Borrowed(_)) && encoding.is_none());
    }

    #[test]
    fn a_body_one_byte_too_large_to_travel_as_it_is_travels_compressed_and_decodes_back() {
        let room = MAX_MESSAGE_BYTES - meta().attributes_size() - ATTRIBUTE_ALLOWANCE;
        let body = format!("{{\"note\":\"naïve ☀ {}\"}}", "a".repeat(room));
        let (wire, encoding) =
            encode_body(&body, meta().attributes_size(), ATTRIBUTE_ALLOWANCE).expect("fits");
        assert_eq!(encoding, Some(GZIP_BASE64));
        let mut received = wire.into_owned();
        let mut attributes: BTreeMap<String, String> = meta()
            .to_attributes()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain([(BODY_ENCODING.to_owned(), GZIP_BASE64.to_owned())])
            .collect();
        decode_body(&mut received, &mut attributes).expect("decodes");
        assert!(received == body);
        assert!(!attributes.contains_key(BODY_ENCODING));
        assert_eq!(
            MessageMeta::from_attributes(|k| attributes.get(k).cloned()),
            Ok(meta())
        );
    }

    #[test]
    fn the_attributes_count_name_type_and_value_and_empty_ones_nothing() {
        assert_eq!(
            attributes_size([("stage", "project"), ("event", "")]),
            5 + 6 + 7
        );
    }

    #[test]
    fn a_body_that_does_not_decode_is_left_as_it_came_with_the_reason() {
        for (encoding, body, why) in [
            ("zstd", "abc", "unknown encoding `zstd`"),
            (GZIP_BASE64, "not base64!", "not the base64"),
            (GZIP_BASE64, "aGVsbG8=", "not the gzip'd UTF-8"),
        ] {
            let mut received = body.to_owned();
            let mut attributes = BTreeMap::from([(BODY_ENCODING.to_owned(), encoding.to_owned())]);
            let err = decode_body(&mut received, &mut attributes).expect_err(body);
            assert!(err.contains(why), "{err}");
            assert_eq!(received, body);
            assert_eq!(
                attributes[BODY_ENCODING], encoding,
                "kept, for the dead letter"
            );
        }
    }

    #[test]
    fn check_size_names_the_size_and_the_limit_of_what_fits_no_message() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let noise: String = (0..MAX_MESSAGE_BYTES)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b' ' + (x % 95) as u8)
            })
            .collect();
        let err = check_size(&meta(), &noise)
            .expect_err("too large")
            .to_string();
        assert!(
            err.contains("1048576 bytes (") && err.contains("limit of 1048576"),
            "{err}"
        );
    }
}
