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

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, Mutex as StdMutex, OnceLock},
};

use sea_orm::{DatabaseConnection, DbBackend};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// One SQLite file's writer: its gate and its one-connection pool.
#[derive(Debug)]
struct SqliteWriter {
    gate: Arc<Mutex<()>>,
    db: DatabaseConnection,
}

/// The writers of this process, by file name (as in the pool's options).
static WRITERS: LazyLock<StdMutex<HashMap<PathBuf, Arc<SqliteWriter>>>> = LazyLock::new(Default::default);

/// The file `db` (an SQLite pool) opens, unless it is an in-memory database
/// (each of whose connections is a database of its own: no writer there).
fn file_of(db: &DatabaseConnection) -> Option<PathBuf> {
    let options = db.get_sqlite_connection_pool().connect_options();
    let file = options.get_filename();
    (!file.as_os_str().is_empty() && file != Path::new(":memory:")).then(|| file.to_owned())
}

/// Registers `writer` (a pool of one connection on the same file) as the
/// connection every write to `db`'s file takes. A file keeps the writer
/// registered first; a later one is closed unused.
pub(super) async fn register(db: &DatabaseConnection, writer: DatabaseConnection) {
    let Some(file) = file_of(db) else {
        let _ = writer.close().await;
        return;
    };
    let unused = {
        let mut writers = WRITERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match writers.contains_key(&file) {
            true => Some(writer),
            false => {
                writers.insert(file, Arc::new(SqliteWriter { gate: Arc::default(), db: writer }));
                None
            }
        }
    };
    if let Some(writer) = unused {
        let _ = writer.close().await;
    }
}

/// Whether `db`'s file has a registered writer.
pub(super) fn registered(db: &DatabaseConnection) -> bool {
    file_of(db).is_some_and(|file| WRITERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).contains_key(&file))
}

/// The right to write to `db`'s file, held until dropped, and the connection
/// to write on: the file's writer, or `db` itself (behind a gate of the
/// process) for a pool opened without [`super::connect`].
pub(crate) async fn write_access(db: &DatabaseConnection) -> (OwnedMutexGuard<()>, DatabaseConnection) {
    debug_assert_eq!(db.get_database_backend(), DbBackend::Sqlite);
    let writer = file_of(db).and_then(|file| {
        WRITERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&file).cloned()
    });
    match writer {
        Some(writer) => (writer.gate.clone().lock_owned().await, writer.db.clone()),
        None => {
            static UNREGISTERED: OnceLock<Arc<Mutex<()>>> = OnceLock::new();
            (UNREGISTERED.get_or_init(Arc::default).clone().lock_owned().await, db.clone())
        }
    }
}
