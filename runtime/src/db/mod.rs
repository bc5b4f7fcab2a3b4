//! Database connection (SQLite embedded, PostgreSQL in production) and schema
//! migration through the `omninode-migrations` crate.

use std::time::Duration;

use omninode_migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
    sea_query::{InsertStatement, OnConflict, SqliteQueryBuilder},
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};

use crate::config::{DatabaseTarget, MeshConfig};

mod one_statement;
mod sqlite_writer;
pub use one_statement::OneStatement;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: DbErr },
    #[error("cannot migrate {target}: {source}")]
    Migrate { target: String, source: DbErr },
}

/// Opens the configured database and brings its schema up to date.
pub async fn connect_and_migrate(config: &MeshConfig) -> Result<DatabaseConnection, DbSetupError> {
    let db = open(&config.database, config.database_max_connections, Some(config.database_idle_in_transaction)).await?;
    let failed = |source| DbSetupError::Migrate { target: describe(&config.database), source };
    // Replicas and a migration Job may start at once: on PostgreSQL one of
    // them migrates under an advisory lock held by a connection of its own;
    // the others wait for it and then find nothing left to do. (SQLite is
    // one process's file; its write lock already serialises.)
    let lock = match db.get_database_backend() {
        DbBackend::Postgres => {
            let lock = connect(&config.database, 1).await?;
            lock.execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).await.map_err(failed)?;
            Some(lock)
        }
        _ => None,
    };
    let migrated = Migrator::up(&db, None).await.map_err(failed);
    if let Some(lock) = lock {
        // Closing the session releases the lock too; unlocking first is prompt.
        let _ = lock.execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).await;
        let _ = lock.close().await;
    }
    migrated?;
    Ok(db)
}

/// The PostgreSQL advisory lock key that serialises schema migrations.
const MIGRATION_LOCK: i64 = 0x6f6d_6e69_6d69_6772; // "omnimigr"

/// Opens a pool on `target` without migrating. On an SQLite file it also
/// opens the file's writer (see [`sqlite_writer`]), which every
/// [`begin_write`] and [`OneStatement`] on this pool then writes through.
pub async fn connect(target: &DatabaseTarget, max_connections: u32) -> Result<DatabaseConnection, DbSetupError> {
    open(target, max_connections, None).await
}

/// [`connect`]; on PostgreSQL each session is ended by the server once it
/// sits `idle_in_transaction` inside a transaction (see
/// `MeshConfig::database_idle_in_transaction`).
async fn open(
    target: &DatabaseTarget,
    max_connections: u32,
    idle_in_transaction: Option<Duration>,
) -> Result<DatabaseConnection, DbSetupError> {
    let url = match target {
        DatabaseTarget::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|source| DbSetupError::DataDir { path: dir.display().to_string(), source })?;
            }
            format!("sqlite://{}?mode=rwc", path.display())
        }
        DatabaseTarget::Url(url) => url.clone(),
    };
    let failed = |source| DbSetupError::Connect { target: describe(target), source };
    let mut options = pool_options(&url, max_connections, 1, 0);
    if let Some(limit) = idle_in_transaction {
        // Set once per session, after it connects (a `SET`, not a startup
        // option, which connection poolers in front of PostgreSQL may refuse).
        let set = format!("SET idle_in_transaction_session_timeout = {}", limit.as_millis());
        options.map_sqlx_postgres_pool_opts(move |pool| {
            let set = set.clone();
            pool.after_connect(move |conn, _| {
                let set = set.clone();
                Box::pin(async move {
                    use sea_orm::sqlx::{AssertSqlSafe, Executor, raw_sql};
                    conn.execute(raw_sql(AssertSqlSafe(set))).await.map(drop)
                })
            })
        });
    }
    let db = Database::connect(options).await.map_err(failed)?;
    if db.get_database_backend() == DbBackend::Sqlite && !sqlite_writer::registered(&db) {
        // Its one connection closes when idle (and opens again at the next
        // write), so a pool nobody uses any more leaves no file open.
        let mut options = pool_options(&url, 1, 0, sqlite_writer::BACKSTOP_FRAMES);
        options.idle_timeout(SQLITE_WRITER_IDLE);
        sqlite_writer::register(&db, Database::connect(options).await.map_err(failed)?).await;
    }
    Ok(db)
}

/// Closes `db`'s pool; on an SQLite file, the file's writer first (so that
/// the last connection to close copies the WAL back and removes it).
pub async fn close(db: DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() == DbBackend::Sqlite {
        sqlite_writer::close(&db).await;
    }
    db.close().await
}

/// An SQLite writer connection idle this long is closed.
const SQLITE_WRITER_IDLE: Duration = Duration::from_secs(60);

/// The pool's options for `url`: at most `max` connections, `min` kept open;
/// on SQLite, a connection's commit checkpoints at `wal_autocheckpoint` frames (0: never).
fn pool_options(url: &str, max: u32, min: u32, wal_autocheckpoint: i64) -> ConnectOptions {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max)
        .min_connections(min)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        // sqlx pings a pooled connection on every checkout by default: a
        // round trip per transaction (PostgreSQL) or a hop to the
        // connection's thread (SQLite). Only a connection idle long enough
        // to have been dropped by a proxy or firewall is pinged; a broken
        // busy one fails its statement (a retryable UNAVAILABLE) and is
        // replaced.
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
        // Prepared statements keep PostgreSQL's default plan caching: a
        // write's plan is made once per connection, not at every call
        // (forcing custom plans cost 0.37 ms of planning per statement at
        // bind). Lookups whose plan depends on their values set
        // `force_custom_plan` for their transaction (see the stamp store).
        // WAL lets readers run beside the writer; NORMAL sync is durable in WAL
        // mode against process crashes, and a busy timeout queues writers
        // instead of failing them.
        .map_sqlx_sqlite_opts(move |opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                // The writer's checkpointer copies the WAL back (see
                // `sqlite_writer`); no commit does it while holding the gate,
                // unless the checkpointer fell far behind (the writer's
                // backstop). A WAL that grew in a burst is cut back when it
                // starts again.
                .pragma("wal_autocheckpoint", wal_autocheckpoint.to_string())
                .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
        })
        .map_sqlx_sqlite_pool_opts(|pool| {
            pool.after_connect(|conn, _| Box::pin(async move { stable_plans(&mut conn.lock_handle().await?) }))
        });
    options
}

/// The bytes of WAL file SQLite keeps when it starts the WAL again.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// Turns on SQLite's query planner stability guarantee for `conn`
/// (`SQLITE_DBCONFIG_ENABLE_QPSG`): a statement's plan is made once, when it
/// is prepared, and never from the values bound to it. Without it SQLite
/// plans a `LIMIT ?` (every sea-orm `.one()`, the outbox relay's read) or a
/// partial index's condition over a bound value for that value, and so
/// prepares the statement again at every execution — seen as 7 % of the
/// SQLite threads' time at 64 callers, and a third of GetStamp's cost.
/// Conditions a partial index must match are written with literals (see
/// the workflow claim query).
fn stable_plans(conn: &mut sea_orm::sqlx::sqlite::LockedSqliteHandle<'_>) -> Result<(), sea_orm::sqlx::Error> {
    let handle = conn.as_raw_handle().as_ptr();
    let mut enabled: std::os::raw::c_int = 0;
    // SAFETY: the locked handle is an open connection that no other thread
    // uses while it is held; `sqlite3_db_config` with ENABLE_QPSG takes an
    // int and a pointer to an int it writes the new setting to.
    let code = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            handle,
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as std::os::raw::c_int,
            &mut enabled as *mut std::os::raw::c_int,
        )
    };
    match (code, enabled) {
        (libsqlite3_sys::SQLITE_OK, 1) => Ok(()),
        _ => Err(sea_orm::sqlx::Error::Configuration(
            format!("cannot turn on SQLite's query planner stability guarantee (code {code})").into(),
        )),
    }
}

/// A pooled connection idle at least this long is pinged before it is used.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(5);

/// The most bytes of values one multi-row statement should carry. sqlx
/// (0.9) leaves Nagle's algorithm on for its PostgreSQL sockets: a statement
/// larger than the socket's initial send buffer (16 KiB on Linux) goes out
/// in pieces, and its last piece waits for the server's delayed ACK — 40 ms
/// per statement, seen as Stamp at 64 callers taking 95 ms. Statements of a
/// few KiB never wait.
pub const STATEMENT_BYTES: usize = 8 * 1024;

/// Splits `items` into runs whose `size`s add up to at most
/// [`STATEMENT_BYTES`] (an item larger than that goes alone) and that hold at
/// most `max_rows` items: one multi-row statement each.
pub fn statement_chunks<'a, T>(
    items: &'a [T],
    max_rows: usize,
    size: impl Fn(&T) -> usize + 'a,
) -> impl Iterator<Item = &'a [T]> + 'a {
    let max_rows = max_rows.max(1);
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (mut bytes, mut end) = (0usize, 0usize);
        while end < rest.len() && end < max_rows {
            let next = size(&rest[end]);
            if end > 0 && bytes + next > STATEMENT_BYTES {
                break;
            }
            bytes += next;
            end += 1;
        }
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

/// `insert` with every row whose unique key is already taken left out, as
/// one statement for `backend`: PostgreSQL's `ON CONFLICT DO NOTHING`,
/// SQLite's `INSERT OR IGNORE`. Give every `NOT NULL` column a value: on
/// SQLite a row that would break any constraint is left out, and answers no
/// `RETURNING` row.
///
/// On SQLite the two differ in cost. A statement that may abort halfway
/// (`ON CONFLICT DO NOTHING` still aborts on a `NOT NULL` column) and writes
/// several rows inside a transaction keeps a statement journal of every page
/// it changes, so as to undo itself alone; past 64 KiB that journal goes to a
/// temporary file, created, written and deleted within the transaction (6 %
/// of the mesh's samples at Stamp with 64 callers, whose group's rows land on
/// random pages of the hash index). With `OR IGNORE` no constraint aborts the
/// statement, so SQLite keeps no journal for it.
pub fn insert_skipping_taken(mut insert: InsertStatement, backend: DbBackend) -> Statement {
    if backend == DbBackend::Sqlite {
        let (sql, values) = insert.build(SqliteQueryBuilder);
        if let Some(rest) = sql.strip_prefix("INSERT ") {
            return Statement::from_sql_and_values(backend, format!("INSERT OR IGNORE {rest}"), values);
        }
    }
    // Also SQLite's, should sea-query ever begin an insert otherwise: the
    // same rows, with the journal.
    insert.on_conflict(OnConflict::new().do_nothing().to_owned());
    backend.build(&insert)
}

/// Begins a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`
/// on the file's writer connection, behind its gate (see
/// [`sqlite_writer`]): a deferred transaction that reads and then writes
/// fails at once with SQLITE_BUSY_SNAPSHOT when another writer committed in
/// between (no busy wait applies to that upgrade); taking the write lock up
/// front makes writers queue instead. PostgreSQL begins as usual.
pub async fn begin_write(db: &DatabaseConnection) -> Result<WriteTransaction, DbErr> {
    if db.get_database_backend() != DbBackend::Sqlite {
        return Ok(WriteTransaction { txn: db.begin().await?, _gate: None });
    }
    let (gate, writer) = sqlite_writer::write_access(db).await;
    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    };
    Ok(WriteTransaction { txn: writer.begin_with_options(options).await?, _gate: Some(gate) })
}

/// PostgreSQL: a one-row subquery that sets `synchronous_commit` for the
/// transaction of the statement that reads it. The setting is read when that
/// transaction commits, and `set_config(…, true)` lasts until then; so a
/// statement committed by itself decides whether its commit waits for the WAL
/// flush. (A `SELECT` subquery or CTE runs only if read: join it.)
pub fn synchronous_commit(on: bool) -> &'static str {
    match on {
        true => "(SELECT set_config('synchronous_commit', 'on', true))",
        false => "(SELECT set_config('synchronous_commit', 'off', true))",
    }
}

/// A transaction from [`begin_write`]; on SQLite it holds the write gate
/// until it commits or is dropped (rolled back).
pub struct WriteTransaction {
    // Dropped first: the rollback is under way before the gate opens.
    txn: DatabaseTransaction,
    _gate: Option<sqlite_writer::WriteGuard>,
}

impl WriteTransaction {
    /// Commits, then opens the gate.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await
    }

    /// Rolls back, then opens the gate.
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.txn.rollback().await
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for WriteTransaction {
    fn get_database_backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.txn.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.txn.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.txn.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.txn.query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.txn.support_returning()
    }
}

/// Whether the database refused a value itself (PostgreSQL SQLSTATE class 22,
/// "data exception": a string too long for its column, a NUL byte, an invalid
/// encoding) — the caller's input, not an outage, so not worth a retry.
pub fn is_refused_value(err: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    match err {
        DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e)) => {
            e.as_database_error().and_then(|d| d.code()).is_some_and(|code| code.starts_with("22"))
        }
        _ => false,
    }
}

/// The target with any password removed, for logs and errors.
pub fn describe(target: &DatabaseTarget) -> String {
    match target {
        DatabaseTarget::Sqlite(path) => format!("sqlite file {}", path.display()),
        DatabaseTarget::Url(url) => redact_password(url),
    }
}

fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_skipping_taken_keys_has_no_conflict_clause_on_sqlite() {
        let insert = || {
            let mut insert = sea_orm::sea_query::Query::insert();
            insert.into_table("t").columns(["k", "v"]).values_panic(["a".into(), 1.into()]);
            insert.values_panic(["b".into(), 2.into()]).returning_col("k");
            insert
        };
        let sqlite = insert_skipping_taken(insert(), DbBackend::Sqlite);
        assert_eq!(sqlite.sql, r#"INSERT OR IGNORE INTO "t" ("k", "v") VALUES (?, ?), (?, ?) RETURNING "k""#);
        assert_eq!(sqlite.values.map(|v| v.0.len()), Some(4));
        let postgres = insert_skipping_taken(insert(), DbBackend::Postgres).sql;
        assert_eq!(
            postgres.split_whitespace().collect::<Vec<_>>().join(" "),
            r#"INSERT INTO "t" ("k", "v") VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING RETURNING "k""#
        );
    }

    #[test]
    fn statements_stay_small_and_every_item_is_in_one() {
        let sizes = [3000, 3000, 3000, 20_000, 100, 100, 100];
        let chunks: Vec<Vec<usize>> = statement_chunks(&sizes, 2, |s| *s).map(<[usize]>::to_vec).collect();
        assert_eq!(chunks, [vec![3000, 3000], vec![3000], vec![20_000], vec![100, 100], vec![100]]);
        let chunks: Vec<usize> = statement_chunks(&sizes, 100, |s| *s).map(<[usize]>::len).collect();
        assert_eq!(chunks, [2, 1, 1, 3]);
        assert_eq!(statement_chunks(&[] as &[usize], 5, |s| *s).count(), 0);
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(redact_password("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(redact_password("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_password("sqlite::memory:"), "sqlite::memory:");
    }

    /// The plan SQLite made for `sql` over `values`, as `EXPLAIN QUERY PLAN` details.
    async fn sqlite_plan(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) -> Vec<String> {
        let explain = Statement::from_sql_and_values(DbBackend::Sqlite, format!("EXPLAIN QUERY PLAN {sql}"), values);
        let rows = db.query_all_raw(explain).await.unwrap();
        rows.iter().map(|row| row.try_get::<String>("", "detail").unwrap()).collect()
    }

    #[tokio::test]
    async fn sqlite_plans_a_statement_once_not_from_its_bound_values() {
        let dir = tempfile::tempdir().unwrap();
        let db = connect(&DatabaseTarget::Sqlite(dir.path().join("plans.db")), 1).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY, state TEXT NOT NULL)").await.unwrap();
        db.execute_unprepared("CREATE INDEX ix_t_open ON t (id) WHERE state = 'OPEN'").await.unwrap();
        let literal = sqlite_plan(&db, "SELECT id FROM t WHERE state = 'OPEN' ORDER BY id LIMIT 5", vec![]).await;
        assert!(literal.iter().any(|d| d.contains("ix_t_open")), "a literal proves the partial index: {literal:?}");
        // A bound value could prove it only for this execution: a plan that
        // used it would be made again at every execution (and would show
        // the index from the first execution on, which binds before it
        // steps). Twice: the second execution reuses the prepared statement.
        for _ in 0..2 {
            let bound = sqlite_plan(
                &db,
                "SELECT id FROM t WHERE state = ? ORDER BY id LIMIT ?",
                vec!["OPEN".into(), 5i64.into()],
            )
            .await;
            assert!(!bound.iter().any(|d| d.contains("ix_t_open")), "planned from a bound value: {bound:?}");
        }
    }

    #[tokio::test]
    async fn sqlite_file_is_created_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/omninode.db");
        let db = connect(&DatabaseTarget::Sqlite(path.clone()), 2).await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        // Running again is a no-op, not an error.
        Migrator::up(&db, None).await.unwrap();
        assert!(path.exists());
        let applied = Migrator::get_applied_migrations(&db).await.unwrap();
        assert_eq!(applied.len(), Migrator::migrations().len());
    }

    /// A pool on a new SQLite file in `dir` with a table `t (id, data)`.
    async fn sqlite_with_table(dir: &std::path::Path, name: &str) -> DatabaseConnection {
        let db = connect(&DatabaseTarget::Sqlite(dir.join(name)), 4).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)").await.unwrap();
        db
    }

    async fn insert(txn: &WriteTransaction, id: i64, bytes: usize) {
        let statement = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT INTO t (id, data) VALUES (?, ?)",
            vec![id.into(), vec![7u8; bytes].into()],
        );
        txn.execute_raw(statement).await.unwrap();
    }

    async fn rows(db: &DatabaseConnection) -> i64 {
        let row = db.query_one_raw(Statement::from_string(DbBackend::Sqlite, "SELECT count(*) AS n FROM t")).await;
        row.unwrap().unwrap().try_get::<i64>("", "n").unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_of_one_sqlite_file_take_turns_and_two_files_do_not_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (sqlite_with_table(dir.path(), "a.db").await, sqlite_with_table(dir.path(), "b.db").await);
        let held = begin_write(&a).await.unwrap();
        insert(&held, 1, 10).await;

        // Another file is written while `a` is held.
        let other = tokio::time::timeout(Duration::from_secs(10), async {
            let txn = begin_write(&b).await.unwrap();
            insert(&txn, 1, 10).await;
            txn.commit().await.unwrap();
        });
        other.await.expect("a write to another file waited for this one");
        assert_eq!(rows(&b).await, 1);

        // A second writer of `a` waits its turn (no SQLITE_BUSY), then writes.
        let second = tokio::spawn({
            let a = a.clone();
            async move {
                let txn = begin_write(&a).await.unwrap();
                insert(&txn, 2, 10).await;
                txn.commit().await.unwrap();
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!second.is_finished(), "two writers of one file at once");
        held.commit().await.unwrap();
        second.await.unwrap();
        assert_eq!(rows(&a).await, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sqlite_file_written_without_pause_keeps_its_wal_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_with_table(dir.path(), "wal.db").await;
        let wal = dir.path().join("wal.db-wal");
        // 60 MB in 15 000 transactions without a pause, each adding a few
        // pages to the WAL: with no checkpoint the WAL holds them all (seen:
        // 189 MB); with the checkpointer it stayed under 10 MB here, and a
        // starved checkpointer leaves it to the writer's backstop (4 000
        // frames, 16 MB).
        let (transactions, bytes) = (15_000i64, 4000);
        let mut largest = 0;
        for id in 0..transactions {
            let txn = begin_write(&db).await.unwrap();
            insert(&txn, id, bytes).await;
            txn.commit().await.unwrap();
            if id % 500 == 0 {
                largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            }
        }
        largest = largest.max(std::fs::metadata(&wal).unwrap().len());
        assert_eq!(rows(&db).await, transactions);
        let written = (transactions as u64) * bytes as u64;
        assert!(largest < written / 3, "the WAL reached {largest} bytes for {written} written");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_an_sqlite_pool_closes_its_writer_and_a_new_pool_writes_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_with_table(dir.path(), "closed.db").await;
        let txn = begin_write(&db).await.unwrap();
        insert(&txn, 1, 10).await;
        txn.commit().await.unwrap();
        close(db).await.unwrap();
        // Every connection closed: the last one copied the WAL back and removed it.
        assert!(!dir.path().join("closed.db-wal").exists(), "a connection to the file is still open");

        let again = connect(&DatabaseTarget::Sqlite(dir.path().join("closed.db")), 2).await.unwrap();
        let txn = begin_write(&again).await.unwrap();
        insert(&txn, 2, 10).await;
        txn.commit().await.unwrap();
        assert_eq!(rows(&again).await, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_whose_pool_was_closed_elsewhere_is_replaced_by_the_next_pool() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_with_table(dir.path(), "replaced.db").await;
        let closed = db.clone();
        db.close().await.unwrap(); // not `db::close`: the writer stays registered, its checkpointer stops
        assert!(!sqlite_writer::registered(&closed), "a writer whose checkpointer stopped counts as none");

        let again = connect(&DatabaseTarget::Sqlite(dir.path().join("replaced.db")), 2).await.unwrap();
        assert!(sqlite_writer::registered(&again), "the new pool has a writer (and checkpointer) of its own");
        let txn = begin_write(&again).await.unwrap();
        insert(&txn, 1, 10).await;
        txn.commit().await.unwrap();
        assert_eq!(rows(&again).await, 1);
    }
}
