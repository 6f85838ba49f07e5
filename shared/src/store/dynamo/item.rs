//! The item codec: key layout (see the table in [`super`]), attribute builders and readers,
//! and the errors they give. Every record module reads and writes items through these.

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::store::{EntityKind, IdRef, StoreError};

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) const POINTER_SK: &str = "ptr";
pub(super) const ENTITY_SK: &str = "entity";
pub(super) const CLAIM_SK: &str = "claim";
pub(super) const STATE_SK: &str = "state";
pub(super) const EVENT_SK: &str = "event";
pub(super) const ATTEMPTS_SK: &str = "attempts";
pub(super) const ECHO_SK: &str = "echo";

// ----- keys ---------------------------------------------------------------------------------------

pub(super) fn pointer_pk(kind: EntityKind, id: &IdRef) -> String {
    format!("xref#{}#{}", kind.as_str(), id.key())
}

pub(super) fn entity_prefix(kind: EntityKind) -> String {
    format!("entity#{}#", kind.as_str())
}

pub(super) fn entity_pk(kind: EntityKind, key: &str) -> String {
    format!("{}{key}", entity_prefix(kind))
}

pub(super) fn claim_pk(key: &str) -> String {
    format!("claim#{key}")
}

pub(super) fn state_pk(scope: &str) -> String {
    format!("state#{scope}")
}

pub(super) fn event_pk(dedupe_key: &str) -> String {
    format!("event#{dedupe_key}")
}

pub(super) fn attempts_pk(message_key: &str) -> String {
    format!("attempts#{message_key}")
}

pub(super) fn echo_pk(target: &str, hash: &str) -> String {
    format!("echo#{target}#{hash}")
}

// ----- attribute values ---------------------------------------------------------------------------

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn key_of(pk: impl Into<String>, sk: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

pub(super) fn get_n<T: FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

pub(super) fn need_s(item: &Item, name: &str) -> Result<String, StoreError> {
    get_s(item, name)
        .map(str::to_owned)
        .ok_or_else(|| malformed(item, name))
}

pub(super) fn need_n<T: FromStr>(item: &Item, name: &str) -> Result<T, StoreError> {
    get_n(item, name).ok_or_else(|| malformed(item, name))
}

pub(super) fn malformed(item: &Item, name: &str) -> StoreError {
    let pk = get_s(item, "pk").unwrap_or("?");
    StoreError::Invalid(format!("item {pk} lacks a valid `{name}` attribute"))
}

/// `now + secs`, saturating (a TTL of `u64::MAX` means "never").
pub(super) fn after_secs(now: i64, secs: u64) -> i64 {
    now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX))
}

pub(super) fn unavailable(
    context: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::unavailable(context, e)
}

pub(super) fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Invalid(format!("DynamoDB request does not build: {e}"))
}
