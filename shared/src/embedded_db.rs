//! The one redb database the local runner keeps under its data dir: opening it (or an
//! in-memory one), telling "in use by another process" apart, and its tables, created up front.
//! The embedded store ([`crate::store::embedded`]) and the embedded queue
//! ([`crate::queue::embedded`]) both live in it; neither imports the other.
//!
//! ## Commits: group commit
//!
//! A redb commit with [`Durability::Immediate`] fsyncs, and while it does, it holds the
//! database's one write lock: with a commit per store or queue call, every event paid several
//! fsyncs in a row, and the runner's stages queued behind each other's. So every write here
//! commits with [`Durability::None`] (no fsync; redb keeps it in this process's memory), and the
//! call then waits ([`Db::write`]) until an `Immediate` commit that began after it returned has
//! finished: redb makes every earlier commit durable with that one. One of the waiting callers
//! makes that commit (an empty one) for all who wait at that moment, so concurrent writers share
//! one fsync. A call that returned has therefore reached the disk, exactly as before: the
//! webhook's 202 still means the event is durable, and a crash (even `kill -9`) loses nothing a
//! caller was told is written, only commits whose call had not returned yet, as a crash mid-commit
//! always could.
//!
//! [`Db::write_unsynced`] skips the wait, for the queue's consumer-side bookkeeping whose loss
//! in a crash only means redelivery (see `shared/src/queue/embedded.rs`); the next durable commit
//! (any caller's, or [`Db::flush`] at shutdown) persists it.

use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use redb::{Database, Durability, TableDefinition, WriteTransaction};

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

/// The database and its group commit ([the module docs](self)). Derefs to the redb
/// [`Database`] for reads.
pub struct Db {
    db: Database,
    commits: GroupCommit,
}

impl Deref for Db {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

#[derive(Default)]
struct GroupCommit {
    state: Mutex<CommitState>,
    /// Wakes blocking waiters when a durable commit ends.
    ended: Condvar,
    /// Wakes async waiters when a durable commit ends (its value: how many have ended).
    ended_async: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct CommitState {
    /// Non-durable commits that have returned, numbered from 1.
    committed: u64,
    /// Every commit up to this number is durable.
    durable: u64,
    /// A caller is making a durable commit for everyone.
    syncing: bool,
}

/// What a waiting writer does next.
enum Turn {
    Done,
    /// Make the durable commit: it covers every commit up to this number.
    Sync(u64),
    Wait,
}

impl GroupCommit {
    fn turn(&self, seq: u64) -> Turn {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.durable >= seq {
            Turn::Done
        } else if s.syncing {
            Turn::Wait
        } else {
            s.syncing = true;
            Turn::Sync(s.committed)
        }
    }

    fn synced(&self, covered: Option<u64>) {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.syncing = false;
            if let Some(c) = covered {
                s.durable = s.durable.max(c);
            }
        }
        self.ended.notify_all();
        self.ended_async.send_modify(|n| *n += 1);
    }

    /// Gives up a [`Turn::Sync`] before starting it.
    fn not_syncing(&self) {
        self.synced(None);
    }

    fn committed(&self) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.committed += 1;
        s.committed
    }
}

impl Db {
    fn new(db: Database) -> Self {
        Self {
            db,
            commits: GroupCommit::default(),
        }
    }

    /// Runs `f` in one write transaction, commits it, and returns once it is durable (see
    /// [the module docs](self)). An error from `f` aborts the transaction: nothing of it is
    /// written.
    pub(crate) async fn write<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R, E>,
    ) -> Result<R, E> {
        let (out, seq) = off_the_runtime(|| self.commit_unsynced(f))?;
        let mut ended = self.commits.ended_async.subscribe();
        let mut yielded = false;
        loop {
            match self.commits.turn(seq) {
                Turn::Done => return Ok(out),
                // Once, before leading: writers ready on this thread commit first and ride along.
                Turn::Sync(_) if !yielded => {
                    self.commits.not_syncing();
                    yielded = true;
                    tokio::task::yield_now().await;
                }
                Turn::Sync(upto) => off_the_runtime(|| self.sync(upto))?,
                // A durable commit is under way: it may not cover `seq`; look again once it ends.
                Turn::Wait => {
                    let _ = ended.changed().await;
                }
            }
        }
    }

    /// [`Db::write`] for callers that cannot await (start-up, the queue's blocking calls).
    pub(crate) fn write_blocking<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R, E>,
    ) -> Result<R, E> {
        let (out, seq) = self.commit_unsynced(f)?;
        loop {
            match self.commits.turn(seq) {
                Turn::Done => return Ok(out),
                Turn::Sync(upto) => self.sync(upto)?,
                Turn::Wait => {
                    let s = self.commits.state.lock().unwrap_or_else(|p| p.into_inner());
                    if s.syncing {
                        drop(
                            self.commits
                                .ended
                                .wait(s)
                                .unwrap_or_else(|p| p.into_inner()),
                        );
                    }
                }
            }
        }
    }

    /// Runs `f` in one write transaction and commits it without waiting for it to be durable:
    /// a crash may lose it until the next durable commit. Only for writes whose loss is harmless.
    pub(crate) fn write_unsynced<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R, E>,
    ) -> Result<R, E> {
        self.commit_unsynced(f).map(|(out, _)| out)
    }

    /// Makes every commit so far durable (one fsync). For shutdown, after the last writes.
    pub fn flush(&self) -> Result<(), StoreError> {
        let upto = self.commits.state.lock().map(|s| s.committed).unwrap_or(0);
        let tx = self
            .db
            .begin_write()
            .map_err(|e| db_err("begin write", e))?;
        tx.commit().map_err(|e| db_err("commit", e))?;
        let mut s = self.commits.state.lock().unwrap_or_else(|p| p.into_inner());
        s.durable = s.durable.max(upto);
        Ok(())
    }

    fn commit_unsynced<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R, E>,
    ) -> Result<(R, u64), E> {
        let mut tx = self
            .db
            .begin_write()
            .map_err(|e| db_err("begin write", e))?;
        tx.set_durability(Durability::None)
            .map_err(|e| db_err("set durability", e))?;
        let out = f(&tx)?;
        tx.commit().map_err(|e| db_err("commit", e))?;
        // Numbered after it returned: a durable commit that reads this number begins after it.
        Ok((out, self.commits.committed()))
    }

    /// The durable commit that covers every commit up to `upto` (numbered before it began).
    fn sync(&self, upto: u64) -> Result<(), StoreError> {
        let result = self
            .db
            .begin_write()
            .map_err(|e| db_err("begin write", e))
            .and_then(|tx| tx.commit().map_err(|e| db_err("durable commit", e)));
        self.commits.synced(result.is_ok().then_some(upto));
        result
    }
}

/// Runs `f`, which may block on the database's write lock or an fsync, without stalling the
/// other tasks of a multi-threaded tokio runtime (their worker thread hands them on); on any
/// other runtime, or none, simply runs it.
fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Opens (or creates) the database file under `dir`, or an in-memory one when `dir` is `None`.
pub fn open_database(dir: Option<&Path>) -> Result<Arc<Db>, StoreError> {
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
    Ok(Arc::new(Db::new(db)))
}
