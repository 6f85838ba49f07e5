//! The one redb database the local runner keeps under its data dir: opening it (or an
//! in-memory one), telling "in use by another process" apart, and its tables, created up front.
//! The embedded store ([`crate::store::embedded`]) and the embedded queue
//! ([`crate::queue::embedded`]) both live in it; neither imports the other.
//!
//! ## Commits: shared write transactions
//!
//! A redb commit with [`redb::Durability::Immediate`] fsyncs, and while it does, it holds the
//! database's one write lock; every commit also pays a fixed cost (copy-on-write pages, their
//! checksums, the allocator's state). A transaction per store or queue call made every event pay
//! about a dozen of both, one after the other: the runner was bound by that one lock, not by its
//! CPU. So the writers of one moment share one transaction ([`Db::write`]): a writer runs its
//! writes in the transaction that is open (or begins one), and a task started with the
//! transaction commits it, durably, for all its members, once every task that was ready has run
//! (so theirs join it). Each writer's call returns only once the transaction holding its writes
//! is on disk: the webhook's 202 still means the event is durable, and a crash (even `kill -9`) loses
//! nothing a caller was told is written.
//!
//! A writer whose writes fail ends the shared transaction without committing it: nothing of it
//! is written, its own error is returned, and the other members run their writes again in the
//! next one (so a writer's closure is `Fn`: it may run twice). The order of the writes of one
//! transaction is the order their writers ran, as if each had committed alone.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, TableDefinition, WriteTransaction};
use tokio::sync::watch;

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

/// The database and its shared write transaction ([the module docs](self)). Derefs to the redb
/// [`Database`] for reads.
pub struct Db {
    // Declared first, so an open transaction is dropped (aborted) before the database closes.
    open: tokio::sync::Mutex<Shared>,
    db: Database,
}

impl Deref for Db {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

/// The write transaction writers share, while one is open.
struct Shared {
    tx: Option<WriteTransaction>,
    /// Numbers the transactions, so a committer knows whether the one it was started for is
    /// still open.
    number: u64,
    /// A committer task is started for the open transaction.
    committing: bool,
    /// How the open transaction ends, for its members; replaced when it ends.
    ended: watch::Sender<Option<Ended>>,
    /// Shared transactions committed so far.
    commits: u64,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            tx: None,
            number: 0,
            committing: false,
            ended: watch::channel(None).0,
            commits: 0,
        }
    }
}

/// How a shared transaction ended.
#[derive(Clone, Debug)]
enum Ended {
    /// On disk.
    Committed,
    /// A member's writes failed: nothing was written; the others run theirs again.
    Aborted,
    /// The commit failed (its error): nothing was written.
    Failed(String),
}

/// A failed commit, as each of its members reports it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CommitFailed(String);

impl Shared {
    /// Ends the open transaction: commits it when `commit`, else drops it (nothing written),
    /// and tells its members.
    fn end(&mut self, commit: bool) -> Option<Ended> {
        let tx = self.tx.take()?;
        let ended = if commit {
            match off_the_runtime(|| tx.commit()) {
                Ok(()) => {
                    self.commits += 1;
                    Ended::Committed
                }
                Err(e) => Ended::Failed(e.to_string()),
            }
        } else {
            drop(tx);
            Ended::Aborted
        };
        self.number += 1;
        self.committing = false;
        std::mem::replace(&mut self.ended, watch::channel(None).0)
            .send_replace(Some(ended.clone()));
        Some(ended)
    }
}

impl Db {
    fn new(db: Database) -> Self {
        Self {
            open: tokio::sync::Mutex::new(Shared::default()),
            db,
        }
    }

    /// Runs `f` in the shared write transaction and returns once that is committed to disk
    /// (see [the module docs](self)). An error from `f` ends the transaction uncommitted:
    /// nothing of it is written. `f` may run more than once (when another writer's error ended
    /// the transaction it ran in); only its last run's writes are kept. A caller that stops
    /// waiting (its future dropped) after `f` ran still has its writes committed.
    pub(crate) async fn write<R, E: From<StoreError>>(
        self: &Arc<Self>,
        f: impl Fn(&WriteTransaction) -> Result<R, E>,
    ) -> Result<R, E> {
        loop {
            let (out, mut ended) = {
                let mut shared = self.open.lock().await;
                if shared.tx.is_none() {
                    shared.tx = Some(
                        self.db
                            .begin_write()
                            .map_err(|e| db_err("begin write", e))?,
                    );
                }
                let Some(tx) = shared.tx.as_ref() else {
                    unreachable!("begun above")
                };
                let out = match f(tx) {
                    Ok(out) => out,
                    Err(e) => {
                        shared.end(false);
                        return Err(e);
                    }
                };
                // Subscribed first: ending the transaction replaces its channel.
                let ended = shared.ended.subscribe();
                if !shared.committing {
                    match tokio::runtime::Handle::try_current() {
                        Ok(runtime) => {
                            shared.committing = true;
                            runtime.spawn(Arc::clone(self).commit_soon(shared.number));
                        }
                        // Not on a tokio runtime (another executor): nobody to commit later.
                        Err(_) => {
                            shared.end(true);
                        }
                    }
                }
                (out, ended)
            };
            let ended = ended
                .wait_for(Option::is_some)
                .await
                .map(|e| e.clone())
                .unwrap_or_default();
            match ended {
                Some(Ended::Committed) => return Ok(out),
                Some(Ended::Aborted) => continue,
                Some(Ended::Failed(e)) => {
                    return Err(StoreError::unavailable("durable commit", CommitFailed(e)).into());
                }
                None => {
                    return Err(StoreError::unavailable(
                        "durable commit",
                        CommitFailed("the commit was never made (the runtime stopped)".into()),
                    )
                    .into());
                }
            }
        }
    }

    /// The committer of shared transaction `number`: once every task ready now has run (their
    /// writes join it), commits it, unless it ended already.
    async fn commit_soon(self: Arc<Self>, number: u64) {
        tokio::task::yield_now().await;
        let mut shared = self.open.lock().await;
        if shared.number == number {
            shared.end(true);
        }
    }

    /// Runs `f` in a write transaction of its own and commits it durably, blocking. Only for
    /// start-up, before any [`Db::write`] runs (it would wait for an open shared transaction).
    pub(crate) fn write_blocking<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R, E>,
    ) -> Result<R, E> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| db_err("begin write", e))?;
        let out = f(&tx)?;
        tx.commit().map_err(|e| db_err("commit", e))?;
        Ok(out)
    }

    /// How many shared transactions were committed since the database was opened.
    pub async fn commits(&self) -> u64 {
        self.open.lock().await.commits
    }

    /// Commits the shared transaction if one is open (its committer has not run yet): for
    /// shutdown, after the last writes.
    pub async fn flush(&self) -> Result<(), StoreError> {
        match self.open.lock().await.end(true) {
            Some(Ended::Failed(e)) => {
                Err(StoreError::unavailable("durable commit", CommitFailed(e)))
            }
            _ => Ok(()),
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use redb::ReadableDatabase;

    use super::*;

    async fn put(db: &Arc<Db>, key: &str) -> Result<(), StoreError> {
        db.write(|tx| {
            tx.open_table(KV)
                .map_err(|e| db_err("open", e))?
                .insert(key, b"v".as_slice())
                .map_err(|e| db_err("insert", e))?;
            Ok(())
        })
        .await
    }

    fn has(db: &Db, key: &str) -> bool {
        let tx = db.begin_read().unwrap();
        tx.open_table(KV).unwrap().get(key).unwrap().is_some()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_commits_and_each_returns_once_its_write_is_committed() {
        let dir = std::env::temp_dir().join(format!("edb-share-{}", fastrand::u64(..)));
        let db = open_database(Some(&dir)).unwrap();
        let writers: Vec<_> = (0..64)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let key = format!("k{i}");
                    put(&db, &key).await.unwrap();
                    // Returned: committed, so a new read transaction sees it.
                    assert!(has(&db, &key), "{key} returned before it was committed");
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let commits = db.commits().await;
        assert!(
            commits < 64,
            "64 concurrent writes made {commits} commits: none was shared"
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_failing_writer_writes_nothing_and_the_others_of_its_transaction_run_again() {
        let db = open_database(None).unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        // Both join one transaction: spawned together, they run before its committer.
        let ok = tokio::spawn({
            let (db, runs) = (db.clone(), runs.clone());
            async move {
                db.write(|tx| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tx.open_table(KV)
                        .map_err(|e| db_err("open", e))?
                        .insert("kept", b"v".as_slice())
                        .map_err(|e| db_err("insert", e))?;
                    Ok::<_, StoreError>(())
                })
                .await
            }
        });
        let failing = tokio::spawn({
            let db = db.clone();
            async move {
                db.write(|tx| {
                    tx.open_table(KV)
                        .map_err(|e| db_err("open", e))?
                        .insert("half-written", b"v".as_slice())
                        .map_err(|e| db_err("insert", e))?;
                    Err::<(), _>(StoreError::Invalid("refused after a write".into()))
                })
                .await
            }
        });
        ok.await.unwrap().unwrap();
        let err = failing.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("refused after a write"), "{err}");
        assert!(has(&db, "kept"));
        assert!(
            !has(&db, "half-written"),
            "a failed writer's write was kept"
        );
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "the other member ran its writes again after the abort"
        );
    }

    /// Polls a write once (it joins a transaction and waits for the commit), then drops it: a
    /// caller that gave up waiting.
    async fn abandon(db: &Arc<Db>, key: &str) {
        let write = std::pin::pin!(put(db, key));
        let mut write = Some(write);
        std::future::poll_fn(|cx| {
            if let Some(w) = write.as_mut() {
                assert!(
                    w.as_mut().poll(cx).is_pending(),
                    "the write returned before its commit"
                );
            }
            write = None;
            std::task::Poll::Ready(())
        })
        .await;
    }

    #[tokio::test]
    async fn a_writer_that_stops_waiting_still_has_its_write_committed() {
        let db = open_database(None).unwrap();
        abandon(&db, "abandoned").await;
        tokio::task::yield_now().await;
        put(&db, "later").await.unwrap();
        assert!(has(&db, "abandoned"), "the abandoned write was lost");
        assert!(has(&db, "later"));
    }

    #[test]
    fn a_write_outside_a_tokio_runtime_commits_at_once() {
        let db = open_database(None).unwrap();
        let mut write = std::pin::pin!(put(&db, "elsewhere"));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match write.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(done) => done.unwrap(),
            std::task::Poll::Pending => panic!("a write outside a runtime waited for a committer"),
        }
        assert!(has(&db, "elsewhere"));
    }

    #[tokio::test]
    async fn flush_commits_what_an_abandoned_writer_left_open() {
        let db = open_database(None).unwrap();
        abandon(&db, "abandoned").await;
        // Its committer has not run yet (this task did not yield since).
        assert!(!has(&db, "abandoned"));
        db.flush().await.unwrap();
        assert!(has(&db, "abandoned"));
    }
}
