//! DynamoDB adapters: every store port over ONE table (`pk`/`sk` strings, TTL attribute
//! `expires_at`, GSI `gsi1` on `gsi1pk`/`gsi1sk` projecting ALL), as `template.yaml` creates it.
//! Same semantics as the embedded adapter, proven by `tests/contract/store.rs`.
//!
//! Item layout (key naming shared with [`super::embedded`]; `gsi2` lists unsent events,
//! [`GSI2`]):
//!
//! | record | pk | sk | attributes |
//! |---|---|---|---|
//! | xref pointer | `xref#{kind}#{form}:{value}` | `ptr` | `entity` (entity key), `updated_at` |
//! | entity | `entity#{kind}#{key}` | `entity` | `ids` (SS), `crm_id`, `updated_at` |
//! | claim | `claim#{key}` | `claim` | `status`, `expires_at`, `lease_until_ms`, `outcome` |
//! | sync state | `state#{scope}` | `state` | `hash`, `data` (JSON text), `updated_at`, `seq` (N) |
//! | event | `event#{dedupe_key}` | `event` | the record's fields, `body_gz` (B), `expires_at`, `gsi1pk`/`gsi1sk`; while unsent `gsi2pk` = `unsent#{stage}`, `gsi2sk` = `{ms:013}#{dedupe_key}` |
//! | attempt count | `attempts#{message_key}` | `attempts` | `attempts` (N), `expires_at` |
//! | echo fingerprint | `echo#{target}#{hash}` | `echo` | `expires_at` |
//! | outcome counts | `counts#{lane}#{hour_ms:013}` | `counts` | `n_<outcome>` (N) each, `expires_at`, `gsi1pk` = `counts#{lane}`, `gsi1sk` = `{hour_ms:013}` |
//!
//! An event's `history` is a list of `{at, outcome, detail}` maps; `counted_in` names the
//! counts item it is counted in (`set_outcome` reads it back with `ReturnValues=ALL_OLD` and moves
//! the event's count from its old outcome to the new one there).
//!
//! `link` writes an entity's new pointers and its record in one `TransactWriteItems` (pointers
//! conditional on `attribute_not_exists`); a cancelled transaction means another writer linked
//! one of the ids meanwhile, so it reads again and joins that entity. Like the embedded adapter's
//! serialised write, concurrent links of overlapping ids therefore never split an entity.
//!
//! Every SDK or network failure is [`StoreError::Unavailable`]; a failed lookup is never "not
//! found". TTL deletion is lazy, so reads filter on `expires_at` themselves.
//!
//! By responsibility: `item` is the codec (keys, attributes), `xref`, `claims`, `state` (sync
//! state and echo fingerprints) and `events` implement the ports, `table` creates the table.

mod claims;
mod events;
mod item;
mod state;
mod table;
mod xref;

use aws_sdk_dynamodb::Client;

use self::item::{Item, key_of, unavailable};
use super::StoreError;

pub use self::table::create_table;

/// The GSI serving "events of an entity, newest first".
pub const GSI1: &str = "gsi1";
/// The sparse GSI listing events accepted for a stage queue that no consumer took yet
/// (`gsi2pk` = `unsent#{stage}`, `gsi2sk` = `{ms:013}#{dedupe_key}`, keys only): the sweep's
/// worklist ([`crate::store::EventLog::unsent`]).
pub const GSI2: &str = "gsi2";

/// Every store port over one DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Strongly consistent GetItem.
    async fn get_item(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(format!("get {pk}"), e))?;
        Ok(out.item)
    }
}
