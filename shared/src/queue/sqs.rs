//! SQS FIFO adapter: one queue and one FIFO DLQ per stage, as `template.yaml` creates them. Same
//! semantics as the embedded queue, proven by `tests/contract/queue.rs`.
//!
//! A dead letter is a copy of the message in the stage's DLQ carrying the original attributes plus
//! `dlq_reason`, `dlq_attempts`, `dlq_failed_at` and `dlq_message_id`. A message the redrive policy
//! moved there (the consumer never judged it) has none of those.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityError;
use aws_sdk_sqs::operation::delete_message::DeleteMessageError;
use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
};

use super::{
    ATTRIBUTE_ALLOWANCE, BODY_ENCODING, DeadLetter, Delivery, EventQueue, MessageMeta, QueueError,
    QueueMessage, attributes_size, decode_body, encode_body,
};
use crate::classify::Stage;
use crate::hashing::sha256_hex;
use crate::timefmt::{from_unix, now_rfc3339};

/// The longest visibility timeout SQS accepts (12 hours).
pub const MAX_VISIBILITY_SECS: u64 = 43_200;
/// SQS allows at most 10 message attributes.
const MAX_ATTRIBUTES: usize = 10;
/// `dlq_reason` is cut to this many bytes (on a character boundary).
const MAX_REASON_BYTES: usize = 1_000;
/// How long [`SqsEventQueue::dead_letters`] hides what it peeks at.
const PEEK_VISIBILITY_SECS: i32 = 2;

const DLQ_REASON: &str = "dlq_reason";
const DLQ_ATTEMPTS: &str = "dlq_attempts";
const DLQ_FAILED_AT: &str = "dlq_failed_at";
const DLQ_MESSAGE_ID: &str = "dlq_message_id";
/// The attributes `MessageMeta` needs, kept first when the attribute budget is tight.
const META_ATTRIBUTES: [&str; 5] = ["stage", "event", "dedupe_key", "group", "received_at"];

/// A stage's source queue and its dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqsStageQueues {
    pub url: String,
    pub dlq_url: String,
}

/// The event queue over SQS FIFO queues, one pair per configured stage.
#[derive(Clone, Debug)]
pub struct SqsEventQueue {
    client: Client,
    queues: BTreeMap<Stage, SqsStageQueues>,
}

fn unavailable(
    context: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> QueueError {
    QueueError::unavailable(context, e)
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| QueueError::Invalid(format!("message attribute does not build: {e}")))
}

/// SQS `MessageGroupId` for a group name: itself, or its hash when too long or not plain ASCII
/// (the rule of [`MessageMeta::group_id`]).
fn group_id_for(group: &str) -> String {
    let ok = !group.is_empty() && group.len() <= 128 && group.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        group.to_owned()
    } else {
        sha256_hex(group.as_bytes())
    }
}

/// `reason` cut to at most [`MAX_REASON_BYTES`] bytes (so at most that many characters).
fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

fn meta_of(attributes: &BTreeMap<String, String>) -> Result<MessageMeta, String> {
    MessageMeta::from_attributes(|k| attributes.get(k).cloned())
}

/// A record of the SQS event Lambda hands to a consumer, as a [`Delivery`]. Metadata that cannot
/// be read becomes `Err` in `meta`: a poison message, dead-lettered by the consumer.
pub fn delivery_from_lambda(msg: &SqsMessage) -> Delivery {
    let mut attributes: BTreeMap<String, String> = msg
        .message_attributes
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.string_value.clone()?)))
        .collect();
    let mut body = msg.body.clone().unwrap_or_default();
    let meta = decode_body(&mut body, &mut attributes).and_then(|()| meta_of(&attributes));
    Delivery {
        message_id: msg.message_id.clone().unwrap_or_default(),
        receipt: msg.receipt_handle.clone().unwrap_or_default(),
        // Lambda always sends it; a record without it was received at least once.
        receive_count: msg
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1),
        meta,
        body,
        attributes,
    }
}

fn string_attributes(msg: &Message) -> BTreeMap<String, String> {
    msg.message_attributes()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
        .collect()
}

fn system_attribute(msg: &Message, name: &MessageSystemAttributeName) -> Option<String> {
    msg.attributes()?.get(name).cloned()
}

fn delivery_from_sdk(msg: &Message) -> Delivery {
    let mut attributes = string_attributes(msg);
    let mut body = msg.body().unwrap_or_default().to_owned();
    let meta = decode_body(&mut body, &mut attributes).and_then(|()| meta_of(&attributes));
    Delivery {
        message_id: msg.message_id().unwrap_or_default().to_owned(),
        receipt: msg.receipt_handle().unwrap_or_default().to_owned(),
        receive_count: system_attribute(msg, &MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|c| c.parse().ok())
            .unwrap_or(1),
        meta,
        body,
        attributes,
    }
}

fn dead_letter_from_sdk(stage: Stage, msg: &Message) -> DeadLetter {
    let mut attributes = string_attributes(msg);
    let mut body = msg.body().unwrap_or_default().to_owned();
    if let Err(why) = decode_body(&mut body, &mut attributes) {
        // Kept as it is, `body_encoding` and all, for the operator to see.
        tracing::warn!(stage = stage.as_str(), error = %why, "dead letter body does not decode");
    }
    let mut take = |k: &str| attributes.remove(k);
    let reason = take(DLQ_REASON);
    let attempts = take(DLQ_ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(0);
    let failed_at = take(DLQ_FAILED_AT);
    let message_id = take(DLQ_MESSAGE_ID);
    let sent_at = || {
        system_attribute(msg, &MessageSystemAttributeName::SentTimestamp)
            .and_then(|ms| ms.parse::<i64>().ok())
            .map(|ms| from_unix(ms / 1000))
    };
    DeadLetter {
        message_id: message_id.unwrap_or_else(|| msg.message_id().unwrap_or_default().to_owned()),
        stage,
        reason: reason.unwrap_or_else(|| {
            "moved by the queue's redrive policy (no reason recorded)".to_owned()
        }),
        attempts,
        failed_at: failed_at.or_else(sent_at).unwrap_or_default(),
        attributes,
        body,
    }
}

impl SqsEventQueue {
    pub fn new(client: Client, queues: BTreeMap<Stage, SqsStageQueues>) -> Self {
        Self { client, queues }
    }

    fn queues(&self, stage: Stage) -> Result<&SqsStageQueues, QueueError> {
        self.queues
            .get(&stage)
            .ok_or_else(|| QueueError::Invalid(format!("no queue for stage {stage}")))
    }

    async fn send_to(
        &self,
        url: &str,
        group_id: String,
        dedupe_id: String,
        body: &str,
        attributes: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), QueueError> {
        let mut send = self
            .client
            .send_message()
            .queue_url(url)
            .message_group_id(group_id)
            .message_deduplication_id(dedupe_id)
            .message_body(body);
        for (name, value) in attributes {
            // SQS rejects empty attribute values; a missing one reads the same.
            if !value.is_empty() {
                send = send.message_attributes(name, string_attribute(&value)?);
            }
        }
        send.send()
            .await
            .map_err(|e| unavailable(format!("send to {url}"), e))?;
        Ok(())
    }

    async fn receive_from(
        &self,
        url: &str,
        max: usize,
        wait_secs: u32,
        visibility_secs: u32,
    ) -> Result<Vec<Message>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait_secs.min(20) as i32)
            .visibility_timeout(u64::from(visibility_secs).min(MAX_VISIBILITY_SECS) as i32)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| unavailable(format!("receive from {url}"), e))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Receives up to `max` (at most 10) messages of a stage, waiting up to `wait_secs` (long
    /// poll, at most 20) and hiding them for `visibility_secs`. For tests and operator tools; in
    /// AWS the Lambda event source mapping receives.
    pub async fn receive(
        &self,
        stage: Stage,
        max: usize,
        wait_secs: u32,
        visibility_secs: u32,
    ) -> Result<Vec<Delivery>, QueueError> {
        let url = &self.queues(stage)?.url;
        let messages = self
            .receive_from(url, max, wait_secs, visibility_secs)
            .await?;
        Ok(messages.iter().map(delivery_from_sdk).collect())
    }

    /// Deletes a received message.
    pub async fn ack(&self, stage: Stage, receipt: &str) -> Result<(), QueueError> {
        let url = &self.queues(stage)?.url;
        match self
            .client
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                DeleteMessageError::ReceiptHandleIsInvalid(_) => Err(QueueError::Invalid(format!(
                    "receipt {receipt} is invalid for {url}"
                ))),
                other => Err(unavailable(format!("delete from {url}"), other)),
            },
        }
    }

    /// Peeks at up to `max` dead letters of a stage: receives them with a short visibility and
    /// does not delete them, so they reappear after [`PEEK_VISIBILITY_SECS`].
    pub async fn dead_letters(
        &self,
        stage: Stage,
        max: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let url = &self.queues(stage)?.dlq_url;
        let mut out: Vec<DeadLetter> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while out.len() < max {
            let batch = self
                .receive_from(url, max - out.len(), 0, PEEK_VISIBILITY_SECS as u32)
                .await?;
            let before = out.len();
            for msg in &batch {
                if seen.insert(msg.message_id().unwrap_or_default().to_owned()) {
                    out.push(dead_letter_from_sdk(stage, msg));
                }
            }
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl EventQueue for SqsEventQueue {
    async fn send(&self, msg: &QueueMessage) -> Result<(), QueueError> {
        let url = &self.queues(msg.meta.stage)?.url;
        let (body, encoding) =
            encode_body(&msg.body, msg.meta.attributes_size(), ATTRIBUTE_ALLOWANCE)?;
        let mut attributes: Vec<(String, String)> = msg
            .meta
            .to_attributes()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        if let Some(encoding) = encoding {
            attributes.push((BODY_ENCODING.to_owned(), encoding.to_owned()));
        }
        self.send_to(
            url,
            msg.meta.group_id(),
            msg.meta.dedupe_id(),
            &body,
            attributes,
        )
        .await
    }

    fn has_stage(&self, stage: Stage) -> bool {
        self.queues.contains_key(&stage)
    }

    async fn defer(&self, stage: Stage, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        let url = &self.queues(stage)?.url;
        let secs = delay.as_secs().min(MAX_VISIBILITY_SECS) as i32;
        let change = self
            .client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await;
        match change {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                // Acknowledged or visible again already: nothing to defer (as the embedded queue).
                ChangeMessageVisibilityError::MessageNotInflight(_) => Ok(()),
                ChangeMessageVisibilityError::ReceiptHandleIsInvalid(_) => Err(
                    QueueError::Invalid(format!("receipt {receipt} is invalid for {url}")),
                ),
                other => Err(unavailable(format!("change visibility in {url}"), other)),
            },
        }
    }

    async fn dead_letter(
        &self,
        stage: Stage,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), QueueError> {
        let url = &self.queues(stage)?.dlq_url;
        let group_id = match &delivery.meta {
            Ok(meta) => meta.group_id(),
            Err(_) => match delivery.attributes.get("group") {
                Some(group) if !group.is_empty() => group_id_for(group),
                _ => group_id_for(&format!("unreadable:{}", delivery.message_id)),
            },
        };
        let dedupe_id = sha256_hex(format!("{}dlq", delivery.message_id).as_bytes());

        let mut attributes: Vec<(String, String)> = vec![
            (DLQ_REASON.into(), truncate_reason(reason).to_owned()),
            (DLQ_ATTEMPTS.into(), delivery.receive_count.to_string()),
            (DLQ_FAILED_AT.into(), now_rfc3339()),
            (DLQ_MESSAGE_ID.into(), delivery.message_id.clone()),
        ];
        // The metadata first, then anything else, within SQS's 10-attribute limit (one kept
        // for `body_encoding`, which follows the body, not the original).
        let mut originals: Vec<(&String, &String)> = delivery
            .attributes
            .iter()
            .filter(|(k, _)| !k.starts_with("dlq_") && k.as_str() != BODY_ENCODING)
            .collect();
        originals.sort_by_key(|(k, _)| !META_ATTRIBUTES.contains(&k.as_str()));
        let room = MAX_ATTRIBUTES - attributes.len() - 1;
        attributes.extend(
            originals
                .into_iter()
                .take(room)
                .map(|(k, v)| (k.clone(), v.clone())),
        );

        // A body that did not decode on receive is still in its encoding: it goes as it is.
        let (body, encoding) = match delivery.attributes.get(BODY_ENCODING) {
            Some(undecoded) => (delivery.body.as_str().into(), Some(undecoded.clone())),
            None => {
                let (body, encoding) = encode_body(
                    &delivery.body,
                    attributes_size(attributes.iter().map(|(k, v)| (k, v))),
                    0,
                )?;
                (body, encoding.map(str::to_owned))
            }
        };
        if let Some(encoding) = encoding {
            attributes.push((BODY_ENCODING.to_owned(), encoding));
        }
        self.send_to(url, group_id, dedupe_id, &body, attributes)
            .await
    }
}

/// Creates `{prefix}.fifo` and its DLQ `{prefix}-dlq.fifo` with the template's settings (FIFO,
/// explicit dedupe ids, per-group throughput, redrive after 25 receives). For tests and the local
/// runner (moto); queues that exist already with the same attributes are returned as they are.
pub async fn create_queues(client: &Client, prefix: &str) -> Result<SqsStageQueues, QueueError> {
    let dlq_name = format!("{prefix}-dlq.fifo");
    let dlq_url = client
        .create_queue()
        .queue_name(&dlq_name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .map_err(|e| unavailable(format!("create queue {dlq_name}"), e))?
        .queue_url
        .ok_or_else(|| QueueError::Invalid(format!("no URL for queue {dlq_name}")))?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| unavailable(format!("get ARN of {dlq_name}"), e))?
        .attributes
        .and_then(|mut a: HashMap<QueueAttributeName, String>| {
            a.remove(&QueueAttributeName::QueueArn)
        })
        .ok_or_else(|| QueueError::Invalid(format!("no ARN for queue {dlq_name}")))?;

    let name = format!("{prefix}.fifo");
    let redrive =
        serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 25 }).to_string();
    let url = client
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
        .attributes(QueueAttributeName::DeduplicationScope, "messageGroup")
        .attributes(QueueAttributeName::FifoThroughputLimit, "perMessageGroupId")
        .attributes(QueueAttributeName::VisibilityTimeout, "180")
        .attributes(QueueAttributeName::MessageRetentionPeriod, "345600")
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .map_err(|e| unavailable(format!("create queue {name}"), e))?
        .queue_url
        .ok_or_else(|| QueueError::Invalid(format!("no URL for queue {name}")))?;
    Ok(SqsStageQueues { url, dlq_url })
}

#[async_trait]
impl super::DeadLetterAdmin for SqsEventQueue {
    async fn hold_dead_letters(
        &self,
        stage: Stage,
        max: usize,
        hold_secs: u32,
    ) -> Result<Vec<super::HeldDeadLetter>, QueueError> {
        let url = self.queues(stage)?.dlq_url.clone();
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while out.len() < max {
            let batch = self
                .receive_from(&url, (max - out.len()).min(10), 0, hold_secs)
                .await?;
            let before = out.len();
            for msg in &batch {
                if seen.insert(msg.message_id().unwrap_or_default().to_owned()) {
                    out.push(super::HeldDeadLetter {
                        dead: dead_letter_from_sdk(stage, msg),
                        handle: msg.receipt_handle().unwrap_or_default().to_owned(),
                    });
                }
            }
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }

    async fn release_dead_letter(&self, stage: Stage, handle: &str) -> Result<(), QueueError> {
        let url = &self.queues(stage)?.dlq_url;
        self.client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(handle)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| QueueError::unavailable(format!("release dead letter in {url}"), e))?;
        Ok(())
    }

    async fn remove_dead_letter(&self, stage: Stage, handle: &str) -> Result<(), QueueError> {
        let url = &self.queues(stage)?.dlq_url;
        self.client
            .delete_message()
            .queue_url(url)
            .receipt_handle(handle)
            .send()
            .await
            .map_err(|e| QueueError::unavailable(format!("delete dead letter from {url}"), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_is_cut_on_a_character_boundary() {
        let long = "é".repeat(800); // 1600 bytes
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_REASON_BYTES);
        assert_eq!(cut.chars().count(), 500);
        assert_eq!(truncate_reason("short"), "short");
    }

    #[test]
    fn lambda_record_becomes_a_delivery() {
        let mut msg = SqsMessage::default();
        msg.message_id = Some("m-1".into());
        msg.receipt_handle = Some("r-1".into());
        msg.body = Some("{}".into());
        msg.attributes
            .insert("ApproximateReceiveCount".into(), "3".into());
        let delivery = delivery_from_lambda(&msg);
        assert_eq!(
            (
                delivery.message_id.as_str(),
                delivery.receipt.as_str(),
                delivery.receive_count
            ),
            ("m-1", "r-1", 3)
        );
        // No attributes: a poison message, not a panic.
        assert!(delivery.meta.is_err());
    }

    #[test]
    fn a_lambda_record_whose_body_does_not_decode_is_poison_kept_as_it_came() {
        let mut msg = SqsMessage::default();
        msg.body = Some("not base64!".into());
        let mut encoding = aws_lambda_events::event::sqs::SqsMessageAttribute::default();
        encoding.string_value = Some(super::super::GZIP_BASE64.into());
        encoding.data_type = Some("String".into());
        msg.message_attributes
            .insert(BODY_ENCODING.into(), encoding);
        let delivery = delivery_from_lambda(&msg);
        let why = delivery.meta.expect_err("poison");
        assert!(why.contains("not the base64"), "{why}");
        assert_eq!(delivery.body, "not base64!");
        assert_eq!(
            delivery.attributes.get(BODY_ENCODING).map(String::as_str),
            Some("gzip+base64"),
            "the dead letter keeps how its body is encoded"
        );
    }
}
