//! The write side of an SQLite file: one connection that every write of the
//! process takes in turn, behind a gate.
//!
//! SQLite has one writer at a time anyway. Writing through any connection of
//! the pool cost more than the write: in WAL mode a connection that starts a
//! transaction after another connection committed drops its whole page cache,
//! so each write (on whichever pooled connection it got) read its B-tree
//! pages again from the WAL and the file — seen as a fifth of the SQLite
//! threads' time at Stamp on one caller. The writer connection is the only
//! one that commits, so its cache stays valid from one write to the next;
//! readers use the pool as before.
//!
//! Writers queue on an in-process gate (not on SQLite's busy handler, which
//! sleeps 1 to 100 ms between tries and left the CPU idle under load). The
//! gate and the connection belong to the file: two databases in one process
//! do not wait for each other.
//!
//! Checkpoints (copying the WAL back into the database file, with two
//! syncs) are not left to the commit that happens to fill the WAL to 1 000
//! pages, which ran them while holding the gate, every writer waiting
//! behind it (the slowest 1 % of Stamp calls at one caller, 5 ms here). A
//! task of the writer copies what was written, on a reading connection,
//! while the writers go on; then it takes the gate only to copy the last
//! frames, so that the next write starts the WAL again from its beginning
//! and the file stays bounded. Should that task fall far behind, the writer
//! connection checkpoints on commit at four times that length (a backstop).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, Mutex as StdMutex, OnceLock},
    time::Duration,
};

use sea_orm::{DatabaseConnection, DbBackend, sqlx};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

/// One SQLite file's writer: its gate and its one-connection pool.
#[derive(Debug)]
struct SqliteWriter {
    gate: Arc<Mutex<()>>,
    db: DatabaseConnection,
    /// Told when a writer leaves the gate: there may be frames to copy.
    wrote: Arc<Notify>,
    /// The pool it was registered with, which its checkpointer reads through.
    readers: DatabaseConnection,
}

impl SqliteWriter {
    /// Whether its readers' pool was closed without [`close`]: a writer
    /// whose checkpointer has stopped, which a new pool replaces.
    fn stale(&self) -> bool {
        self.readers.get_sqlite_connection_pool().is_closed()
    }
}

/// The right to write to one SQLite file; see [`write_access`].
#[derive(Debug)]
pub(crate) struct WriteGuard {
    _gate: OwnedMutexGuard<()>,
    wrote: Option<Arc<Notify>>,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if let Some(wrote) = &self.wrote {
            wrote.notify_one();
        }
    }
}

/// How long the checkpointer lets writes gather after the first one.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// A WAL of at least this many frames is copied to its end behind the gate,
/// so that the next write starts it again (SQLite's own default size).
const RESTART_FRAMES: i64 = 1000;
/// The writer connection's own auto-checkpoint: should the checkpointer
/// fall far behind (a process starved of CPU runs it rarely), the commit
/// that fills the WAL to this many frames copies it back itself, as SQLite
/// does by default, so the WAL stays bounded however the tasks are scheduled.
pub(super) const BACKSTOP_FRAMES: i64 = 4 * RESTART_FRAMES;

/// The writers of this process, by file name (as in the pool's options).
static WRITERS: LazyLock<StdMutex<HashMap<PathBuf, Arc<SqliteWriter>>>> = LazyLock::new(Default::default);

fn writers() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Arc<SqliteWriter>>> {
    WRITERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer registered for `db`'s file, if any (looked up by the file name
/// the pool holds, without copying it: every write asks).
fn writer_of(db: &DatabaseConnection) -> Option<Arc<SqliteWriter>> {
    let options = db.get_sqlite_connection_pool().connect_options();
    writers().get(options.get_filename()).cloned()
}

/// The file `db` (an SQLite pool) opens, unless it is an in-memory database
/// (each of whose connections is a database of its own: no writer there).
fn file_of(db: &DatabaseConnection) -> Option<PathBuf> {
    let options = db.get_sqlite_connection_pool().connect_options();
    let file = options.get_filename();
    (!file.as_os_str().is_empty() && file != Path::new(":memory:")).then(|| file.to_owned())
}

/// Registers `writer` (a pool of one connection on the same file) as the
/// connection every write to `db`'s file takes, and starts its
/// checkpointer, which reads through `db`. A file keeps the writer
/// registered first; a later one is closed unused.
pub(super) async fn register(db: &DatabaseConnection, writer: DatabaseConnection) {
    let Some(file) = file_of(db) else {
        let _ = writer.close().await;
        return;
    };
    let registered = {
        let mut writers = writers();
        match writers.get(&file) {
            Some(registered) if !registered.stale() => Err(writer),
            _ => {
                let registered = Arc::new(SqliteWriter {
                    gate: Arc::default(),
                    db: writer,
                    wrote: Arc::default(),
                    readers: db.clone(),
                });
                writers.insert(file, registered.clone());
                Ok(registered)
            }
        }
    };
    match registered {
        Ok(writer) => {
            tokio::spawn(checkpoint_in_background(writer));
        }
        Err(unused) => {
            let _ = unused.close().await;
        }
    }
}

/// Copies the WAL back into the file while writers go on; see the module docs.
async fn checkpoint_in_background(writer: Arc<SqliteWriter>) {
    loop {
        writer.wrote.notified().await;
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        if writer.stale() {
            return; // its pool was closed, by `close` or by whoever opened it
        }
        if let Err(err) = checkpoint(&writer).await {
            tracing::warn!(%err, "SQLite checkpoint failed");
        }
    }
}

/// Copies what it can on a reading connection; then, if the WAL has grown
/// long, copies its last frames behind the gate (the connection is taken
/// first: the gate is never held waiting for one).
async fn checkpoint(writer: &SqliteWriter) -> Result<(), sqlx::Error> {
    let mut conn = writer.readers.get_sqlite_connection_pool().acquire().await?;
    if passive_checkpoint(&mut conn).await? >= RESTART_FRAMES {
        let _gate = writer.gate.clone().lock_owned().await;
        passive_checkpoint(&mut conn).await?;
    }
    Ok(())
}

/// A passive checkpoint (it never waits for a reader or a writer): copies
/// every frame no reader still needs; answers the frames in the WAL.
async fn passive_checkpoint(conn: &mut sqlx::SqliteConnection) -> Result<i64, sqlx::Error> {
    let (_busy, frames, _copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *conn).await?;
    metrics::counter!("sqlite_checkpoints_total").increment(1);
    Ok(frames)
}

/// Whether `db`'s file has a registered writer whose pool is open.
pub(super) fn registered(db: &DatabaseConnection) -> bool {
    writer_of(db).is_some_and(|writer| !writer.stale())
}

/// Closes the writer of `db`'s file, if it has one, and forgets it: the next
/// [`super::connect`] to the file opens a writer of its own. Writes already
/// behind the gate finish first.
pub(super) async fn close(db: &DatabaseConnection) {
    let options = db.get_sqlite_connection_pool().connect_options();
    let writer = writers().remove(options.get_filename());
    if let Some(writer) = writer {
        let _gate = writer.gate.clone().lock_owned().await;
        let _ = writer.db.clone().close().await;
    }
}

/// The right to write to `db`'s file, held until dropped, and the connection
/// to write on: the file's writer, or `db` itself (behind a gate of the
/// process) for a pool opened without [`super::connect`].
pub(crate) async fn write_access(db: &DatabaseConnection) -> (WriteGuard, DatabaseConnection) {
    debug_assert_eq!(db.get_database_backend(), DbBackend::Sqlite);
    match writer_of(db) {
        Some(writer) => {
            let gate = writer.gate.clone().lock_owned().await;
            (WriteGuard { _gate: gate, wrote: Some(writer.wrote.clone()) }, writer.db.clone())
        }
        None => {
            static UNREGISTERED: OnceLock<Arc<Mutex<()>>> = OnceLock::new();
            let gate = UNREGISTERED.get_or_init(Arc::default).clone().lock_owned().await;
            (WriteGuard { _gate: gate, wrote: None }, db.clone())
        }
    }
}
