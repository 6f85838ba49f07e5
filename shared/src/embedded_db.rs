//! The one redb database the local runner keeps under its data dir: opening it (or an
//! in-memory one), telling "in use by another process" apart, and its tables, created up front.
//! The embedded store ([`crate::store::embedded`]) and the embedded queue
//! ([`crate::queue::embedded`]) both live in it; neither imports the other.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, TableDefinition};

use crate::error::StoreError;

/// The store's records, by key (see [`crate::store::embedded`]).
pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// The event log's index by entity.
pub(crate) const EVENTS_BY_ENTITY: TableDefinition<&str, &str> =
    TableDefinition::new("events_by_entity");
/// The queue's messages, dead letters and dedupe window (key layout in
/// [`crate::queue::embedded`]).
pub(crate) const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("queue");

pub(crate) fn db_err(context: &str, e: impl Into<redb::Error>) -> StoreError {
    StoreError::unavailable(context.to_owned(), Box::new(e.into()))
}

/// Why [`open_database`] failed when another process holds the database open (another local
/// runner, or the ops tool, on the same data dir).
#[derive(Debug, thiserror::Error)]
#[error("the database is open in another process")]
pub struct InUse(#[source] redb::DatabaseError);

/// Whether `e` is [`open_database`] finding the database open in another process.
pub fn is_in_use(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable { source, .. } if source.is::<InUse>())
}

/// Opens (or creates) the database file under `dir`, or an in-memory one when `dir` is `None`.
pub fn open_database(dir: Option<&Path>) -> Result<Arc<Database>, StoreError> {
    let db = match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::unavailable(format!("create data dir {}", dir.display()), e)
            })?;
            let file = dir.join("sync.redb");
            Database::create(&file).map_err(|e| match e {
                // redb holds a lock on the file while a database is open: another process has it.
                redb::DatabaseError::DatabaseAlreadyOpen
                | redb::DatabaseError::LockProtocolMismatch => StoreError::unavailable(
                    format!("{} is in use by another process", file.display()),
                    InUse(e),
                ),
                e => StoreError::unavailable(format!("open database {}", file.display()), e),
            })?
        }
        None => Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| db_err("open in-memory database", e))?,
    };
    // Create the tables up front so readers never see "table does not exist".
    let tx = db.begin_write().map_err(|e| db_err("begin", e))?;
    tx.open_table(KV).map_err(|e| db_err("open kv", e))?;
    tx.open_table(EVENTS_BY_ENTITY)
        .map_err(|e| db_err("open index", e))?;
    tx.open_table(MESSAGES)
        .map_err(|e| db_err("open queue", e))?;
    tx.commit().map_err(|e| db_err("commit", e))?;
    Ok(Arc::new(db))
}
