//! The embedded store's file and its one writer thread: group commit (many callers' writes,
//! one transaction, one fsync), and what happens when the file system refuses a write (full,
//! read-only, an I/O error). redb latches such a failure: every later operation answers
//! `PreviousIo` until the file is closed and opened again. So the writer marks the store
//! unwritable (readiness says so, every write answers 503 `store_unavailable` at once), and
//! reopens the file, a probe write every second, until a commit succeeds again: recovery
//! needs no restart, and no write is ever acknowledged before its transaction committed.

use kassa_actors::store::{StoreError, StoreResult};
use redb::{Database, DatabaseError, Durability, WriteTransaction};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most jobs one transaction carries; bounds the latency of the first job in a batch.
const MAX_BATCH: usize = 1024;
/// The store's own page cache.
const STORE_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Jobs waiting for the writer thread; a full queue makes writers wait (backpressure).
pub(super) const QUEUE_CAPACITY: usize = 8192;
/// While unwritable: how often a probe write tries the file system again.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a reopen waits for reads in flight to let go of the old file.
const READERS_GRACE: Duration = Duration::from_secs(5);

/// The open database file. Its fields drop in order: the file is closed (and its lock
/// released) before `closed` tells the `CloseWaiter`.
pub(super) struct Db {
    file: Database,
    closed: std::sync::mpsc::Sender<()>,
}

impl std::ops::Deref for Db {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.file
    }
}

/// Opens (creating if needed) the database file at `path`.
pub(super) fn open_file(path: &Path) -> Result<Database, StoreError> {
    // redb caches up to 1 GiB of pages by default, which would make the database, not the
    // actors, what sets Kassa's memory; 32 MiB keeps the hot pages (the writer's and recent
    // reads') and leaves the rest to the OS page cache.
    Database::builder()
        .set_cache_size(STORE_CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                "{} is already open in another process: is another kassa running?",
                path.display()
            )),
            DatabaseError::Storage(redb::StorageError::Corrupted(msg)) => {
                StoreError::Corrupt(format!("{}: {msg}", path.display()))
            }
            other => StoreError::Unavailable(format!("cannot open {}: {other}", path.display())),
        })
}

/// The database as readers and the writer reach it: replaced when a write error forced a
/// reopen, absent while that happens.
pub(super) struct Handle {
    path: PathBuf,
    current: RwLock<Option<Arc<Db>>>,
    /// The close waiter's sender while no file is open (between close and reopen).
    spare_closed: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    /// Why writes fail, while they do.
    unwritable: RwLock<Option<String>>,
    commits: AtomicU64,
}

impl Handle {
    pub(super) fn new(path: PathBuf, file: Database, closed: std::sync::mpsc::Sender<()>) -> Self {
        Self {
            path,
            current: RwLock::new(Some(Arc::new(Db { file, closed }))),
            spare_closed: Mutex::new(None),
            unwritable: RwLock::new(None),
            commits: AtomicU64::new(0),
        }
    }

    /// The open file, for a read.
    pub(super) fn db(&self) -> StoreResult<Arc<Db>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store file is being reopened".into()))
    }

    /// Why writes fail, while they do (readiness answers 503 meanwhile).
    pub(super) fn unwritable(&self) -> Option<String> {
        self.unwritable
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn set_unwritable(&self, why: Option<String>) {
        let mut state = self.unwritable.write().unwrap_or_else(|e| e.into_inner());
        match (&*state, &why) {
            (None, Some(why)) => {
                metrics::gauge!("kassa_store_writable").set(0.0);
                tracing::error!(path = %self.path.display(), error = %why, "the store cannot write: answering 503 until it can again");
            }
            (Some(_), None) => {
                metrics::gauge!("kassa_store_writable").set(1.0);
                tracing::warn!(path = %self.path.display(), "the store writes again");
            }
            _ => {}
        }
        *state = why;
    }

    /// Closes the file (once reads in flight let go of it) and opens it again: what redb
    /// needs after an I/O error before it accepts another operation.
    fn reopen(&self) -> Result<(), String> {
        let old = self
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut old) = old {
            let deadline = Instant::now() + READERS_GRACE;
            let db = loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => break db,
                    Err(shared) if Instant::now() < deadline => {
                        old = shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(shared) => {
                        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(shared);
                        return Err("reads in flight kept the old file open".into());
                    }
                }
            };
            let Db { file, closed } = db;
            // A close after an I/O error may itself fail; the file is closed either way.
            if let Err(e) = file.close() {
                tracing::debug!(error = %e, "closing the store file after a write error");
            }
            *self.spare_closed.lock().unwrap_or_else(|e| e.into_inner()) = Some(closed);
        }
        let file = open_file(&self.path).map_err(|e| e.to_string())?;
        let closed = self
            .spare_closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| "the close waiter's sender is gone".to_string())?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::new(Db { file, closed }));
        Ok(())
    }
}

/// One caller's write, type-erased so the writer thread can batch any kind of write.
pub(super) trait Job: Send {
    /// Runs the write inside the batch transaction; `Err` says why it failed.
    fn run(&mut self, txn: &WriteTransaction) -> Result<(), String>;
    /// Answers the caller: `batch_error` is `None` once the batch committed durably.
    fn finish(self: Box<Self>, batch_error: Option<&str>);
}

pub(super) struct TypedJob<T, F> {
    pub(super) run: Option<F>,
    pub(super) result: Option<StoreResult<T>>,
    pub(super) reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send,
    F: FnOnce(&WriteTransaction) -> StoreResult<T> + Send,
{
    fn run(&mut self, txn: &WriteTransaction) -> Result<(), String> {
        let Some(f) = self.run.take() else {
            return Err("write run twice".into());
        };
        let result = f(txn);
        let outcome = result.as_ref().map(|_| ()).map_err(ToString::to_string);
        self.result = Some(result);
        outcome
    }

    fn finish(self: Box<Self>, batch_error: Option<&str>) {
        let answer = match (self.result, batch_error) {
            // The job that failed the batch keeps its own, more precise error (e.g. Corrupt).
            (Some(Err(e)), _) => Err(e),
            (_, Some(why)) => Err(StoreError::Unavailable(format!(
                "write not committed: {why}"
            ))),
            (Some(Ok(value)), None) => Ok(value),
            (None, None) => Err(StoreError::Unavailable("write was never run".into())),
        };
        // The caller may have given up waiting; nothing to do then.
        let _ = self.reply.send(answer);
    }
}

/// A write that writes nothing: commits an empty transaction (a probe of the file system).
fn probe_job() -> Box<dyn Job> {
    let (reply, _) = oneshot::channel::<StoreResult<()>>();
    Box::new(TypedJob {
        run: Some(|_: &WriteTransaction| Ok(())),
        result: None,
        reply,
    })
}

/// Why a batch did not commit.
enum Failure {
    /// One of its writes refused (a failed condition is not this: it is an answer); the file
    /// is fine.
    Job(String),
    /// The file system or the file: the store is unwritable until a reopen and a commit work.
    Storage(String),
}

/// The writer thread: takes the first job (blocking), drains what else is queued, commits
/// them in one transaction, answers them all; returns once the channel is closed and empty.
/// While the store is unwritable, each batch first reopens the file.
pub(super) fn run_writer(handle: &Handle, mut jobs: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let size = batch.len();
        let started = Instant::now();
        let outcome = match handle.unwritable() {
            Some(_) => handle
                .reopen()
                .map_err(Failure::Storage)
                .and_then(|()| commit_batch(handle, &mut batch)),
            None => commit_batch(handle, &mut batch),
        };
        let batch_error = match outcome {
            Ok(()) => {
                handle.commits.fetch_add(1, Ordering::Relaxed);
                metrics::histogram!("kassa_store_commit_batch_size").record(size as f64);
                metrics::histogram!("kassa_store_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                handle.set_unwritable(None);
                None
            }
            Err(Failure::Job(why)) => {
                tracing::error!(batch = size, error = %why, "store batch not committed");
                Some(why)
            }
            Err(Failure::Storage(why)) => {
                handle.set_unwritable(Some(why.clone()));
                Some(why)
            }
        };
        for job in batch.drain(..) {
            job.finish(batch_error.as_deref());
        }
    }
}

/// While the store is unwritable, sends a probe write every second, so that it finds out
/// it can write again even when nothing else writes (a balancer sends no traffic to a
/// replica that is not ready). Holds the queue weakly: it ends when the store closes.
pub(super) fn run_prober(handle: Weak<Handle>, jobs: mpsc::WeakSender<Box<dyn Job>>) {
    loop {
        std::thread::sleep(PROBE_EVERY);
        let (Some(handle), Some(jobs)) = (handle.upgrade(), jobs.upgrade()) else {
            return;
        };
        if handle.unwritable().is_some() {
            // A full queue already carries writes that will probe.
            let _ = jobs.try_send(probe_job());
        }
    }
}

/// Runs every job in one transaction and commits it with fsync. Any failure aborts the whole
/// transaction (nothing of the batch is written) and is returned as the reason. A panic
/// anywhere (a job, or redb after an I/O error) fails the batch, never the writer thread.
fn commit_batch(handle: &Handle, batch: &mut [Box<dyn Job>]) -> Result<(), Failure> {
    let db = handle.db().map_err(|e| Failure::Storage(e.to_string()))?;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut txn = db
            .begin_write()
            .map_err(|e| Failure::Storage(format!("cannot begin transaction: {e}")))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| Failure::Storage(format!("cannot set durability: {e}")))?;
        for job in batch.iter_mut() {
            match catch_unwind(AssertUnwindSafe(|| job.run(&txn))) {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    return Err(Failure::Job(format!("a write in the batch failed: {why}")));
                }
                Err(_) => return Err(Failure::Job("a write in the batch panicked".into())),
            }
        }
        txn.commit()
            .map_err(|e| Failure::Storage(format!("commit failed: {e}")))
    }));
    match outcome {
        Ok(Err(Failure::Job(why))) if latched(&db) => Err(Failure::Storage(why)),
        Ok(result) => result,
        Err(_) => Err(Failure::Storage(
            "the store panicked while committing".into(),
        )),
    }
}

/// Whether the file has latched an I/O error (a job's read or write may have met it).
fn latched(db: &Database) -> bool {
    match db.begin_write() {
        Ok(txn) => {
            let _ = txn.abort();
            false
        }
        Err(redb::TransactionError::Storage(
            redb::StorageError::PreviousIo | redb::StorageError::Io(_),
        )) => true,
        Err(_) => false,
    }
}
