//! `OneStatement` on a real PostgreSQL and on SQLite: the parts of one trip
//! commit together or not at all, and outbox rows are written only where
//! their condition holds.

use std::sync::Arc;

use omninode_integration_tests::{Backend, TestDatabase, on_both_backends};
use omninode_proto::events::v1::{StampCreated, event_envelope::Payload};
use omninode_runtime::{
    Env, MeshConfig,
    db::{OneStatement, begin_write, connect_and_migrate, insert_skipping_taken},
    events::{EventKind, EventSink, EventsConfig, NewEvent, Outbox, OutboxRelay, OutgoingEvent, WriteIf},
    health::HealthRegistry,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement};
use tokio_util::sync::CancellationToken;

on_both_backends!(
    a_failing_part_writes_nothing_of_the_others,
    outbox_rows_follow_what_the_parts_before_them_returned,
    a_dropped_caller_leaves_no_half_written_batch,
    batches_queued_behind_a_busy_writer_answer_and_fail_each_alone,
    an_insert_skipping_taken_keys_answers_only_its_new_rows,
);

async fn migrated(database: &TestDatabase) -> DatabaseConnection {
    let config = MeshConfig::from_env(&Env::from_pairs(database.env())).unwrap();
    connect_and_migrate(&config).await.unwrap()
}

/// `sql` written with PostgreSQL's placeholders (each used once, in order),
/// for `db`'s backend (SQLite: `?`, bound in order across the parts).
fn placeholders(db: &DatabaseConnection, sql: &str) -> String {
    match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => sql.to_owned(),
        _ => (1..=9).rev().fold(sql.to_owned(), |sql, n| sql.replace(&format!("${n}"), "?")),
    }
}

fn outbox() -> Outbox {
    Outbox::new("stamping", "test-instance", "onex", Arc::default())
}

fn event(key: &str) -> (String, NewEvent) {
    let event = NewEvent {
        kind: EventKind::StampCreated,
        namespace: "ns".to_owned(),
        partition_key: key.to_owned(),
        correlation_id: Some(format!("corr-{key}")),
        causation_id: None,
        payload: Payload::StampCreated(StampCreated { file_hash: key.to_owned(), ..Default::default() }),
        trace_context: None,
    };
    (key.to_owned(), event)
}

/// The text column `column` of each of `rows`.
fn texts(rows: &[QueryResult], column: &str) -> Vec<String> {
    rows.iter().map(|row| row.try_get::<String>("", column).unwrap()).collect()
}

/// The text column `column` of each row `sql` reads.
async fn read_texts(db: &impl ConnectionTrait, sql: &str, column: &str) -> Vec<String> {
    let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap();
    texts(&rows, column)
}

/// The partition keys of the outbox rows, in id order.
async fn outbox_keys(db: &DatabaseConnection) -> Vec<String> {
    read_texts(db, "SELECT partition_key FROM event_outbox ORDER BY id", "partition_key").await
}

/// An insert of stamp rows `(id, file_hash)` that skips a taken one and
/// returns the ids it inserted, with its values, for `db`'s backend.
fn stamps_insert(db: &DatabaseConnection, rows: &[(&str, &str)]) -> (String, Vec<sea_orm::Value>) {
    let tuples: Vec<String> = (0..rows.len())
        .map(|i| {
            format!(
                "(${}, 'ns', ${}, 'f', 1, 'text/plain', '{{}}', '1', 1, '1', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                2 * i + 1,
                2 * i + 2
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO metadata_stamps (id, namespace, file_hash, file_path, file_size, content_type, stamp_data, \
         protocol_version, version, metadata_version, created_at, updated_at) VALUES {} \
         ON CONFLICT DO NOTHING RETURNING id",
        tuples.join(", ")
    );
    let values = rows.iter().flat_map(|(id, hash)| [sea_orm::Value::from(*id), sea_orm::Value::from(*hash)]);
    (placeholders(db, &sql), values.collect())
}

/// Adds a part that fails: the outbox event id `event_id` twice, a unique violation.
fn add_duplicate_event(statement: &mut OneStatement, db: &DatabaseConnection, event_id: &str) {
    statement.add_sql(
        "dup",
        &placeholders(
            db,
            "INSERT INTO event_outbox (event_id, topic, partition_key, event_type, payload, created_at) \
             VALUES ($1, 't', 'dup', 'x', 'x', '2026-01-01T00:00:00Z'), ($2, 't', 'dup', 'x', 'x', '2026-01-01T00:00:00Z')",
        ),
        vec![event_id.into(), event_id.into()],
    );
}

async fn a_failing_part_writes_nothing_of_the_others(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let db = migrated(&database).await;
    let backend = db.get_database_backend();
    let mut statement = OneStatement::new(backend);
    outbox().add_to(&mut statement, "o", vec![event("a"), event("b")], &WriteIf::Always);
    // The same event id twice: a unique violation in the second part.
    add_duplicate_event(&mut statement, &db, "00000000-0000-0000-0000-000000000001");
    let err = statement.run(&db, "SELECT 1").await.unwrap_err();
    assert!(
        matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))),
        "a unique violation, got {err}"
    );
    assert!(outbox_keys(&db).await.is_empty(), "nothing of the statement was written");

    // The connection that failed is usable: nothing was left open on it.
    for _ in 0..3 {
        let mut statement = OneStatement::new(backend);
        outbox().add_to(&mut statement, "o", vec![event("a"), event("b")], &WriteIf::Always);
        statement.run(&db, "SELECT 1").await.unwrap();
    }
    assert_eq!(outbox_keys(&db).await, ["a", "b", "a", "b", "a", "b"], "written, in order");
}

async fn outbox_rows_follow_what_the_parts_before_them_returned(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let db = migrated(&database).await;
    let backend = db.get_database_backend();
    let update = |key: &str| {
        let sql = "UPDATE event_outbox SET attempts = attempts + 1 WHERE partition_key = $1 RETURNING 1";
        (placeholders(&db, sql), vec![sea_orm::Value::from(key.to_owned())])
    };

    // A conditional update that matches nothing: no event.
    let mut statement = OneStatement::new(backend);
    let (sql, values) = update("none");
    statement.add_sql("u", &sql, values);
    outbox().add_to(&mut statement, "o", vec![event("unmatched")], &WriteIf::Returned("u"));
    let rows = statement.run(&db, "SELECT 1 FROM u").await.unwrap();
    assert!(rows.is_empty(), "the update matched nothing");
    assert!(outbox_keys(&db).await.is_empty());

    // Keyed rows: only the keys (new stamp ids) the first part inserted;
    // the second stamp's hash is taken, so its row is not.
    let (sql, values) = stamps_insert(&db, &[("id-0", "h2")]);
    db.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await.unwrap();
    let mut statement = OneStatement::new(backend);
    let (sql, values) = stamps_insert(&db, &[("id-1", "h1"), ("id-2", "h2"), ("id-3", "h3")]);
    statement.add_sql("s", &sql, values);
    outbox().add_to(
        &mut statement,
        "o",
        vec![
            ("id-1".to_owned(), event("k1").1),
            ("id-2".to_owned(), event("k2").1),
            ("id-3".to_owned(), event("k3").1),
        ],
        &WriteIf::KeyReturned { part: "s", table: "metadata_stamps", column: "id" },
    );
    let returned = statement.run(&db, "SELECT id FROM s").await.unwrap();
    let mut returned = texts(&returned, "id");
    returned.sort();
    assert_eq!(returned, ["id-1", "id-3"], "the rows the insert returned");
    assert_eq!(outbox_keys(&db).await, ["k1", "k3"]);

    // A conditional update that matches: its event is written.
    let mut statement = OneStatement::new(backend);
    let (sql, values) = update("k1");
    statement.add_sql("u", &sql, values);
    outbox().add_to(&mut statement, "o", vec![event("matched")], &WriteIf::Returned("u"));
    assert_eq!(statement.run(&db, "SELECT 1 FROM u").await.unwrap().len(), 1, "the update matched one row");
    assert_eq!(outbox_keys(&db).await, ["k1", "k3", "matched"]);
}

/// A caller that goes away mid-write (a dropped request) leaves the write
/// whole or absent and no connection inside a transaction.
async fn a_dropped_caller_leaves_no_half_written_batch(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let db = migrated(&database).await;
    let backend = db.get_database_backend();
    for round in 0..20u64 {
        let mut statement = OneStatement::new(backend);
        outbox().add_to(&mut statement, "o", vec![event("a"), event("b")], &WriteIf::Always);
        // Dropped at its first wait, or somewhat later.
        let patience = std::time::Duration::from_micros(round * 50);
        let _ = tokio::time::timeout(patience, statement.run(&db, "SELECT 1")).await;
    }
    // Every connection of the pool can write at once: none holds the write lock.
    let started = std::time::Instant::now();
    for _ in 0..10 {
        let mut statement = OneStatement::new(backend);
        outbox().add_to(&mut statement, "o", vec![event("c")], &WriteIf::Always);
        statement.run(&db, "SELECT 1").await.unwrap();
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "no write waited on a lock left behind");
    let keys = outbox_keys(&db).await;
    let (a, b) = (keys.iter().filter(|k| *k == "a").count(), keys.iter().filter(|k| *k == "b").count());
    assert_eq!(a, b, "each dropped write is whole or absent: {keys:?}");
    assert_eq!(keys.iter().filter(|k| *k == "c").count(), 10);
}

/// Batches that queue while the writer is busy each get their own rows
/// back; one that fails — first, in the middle, last of the queue — fails
/// alone and leaves nothing, and the others commit whole.
async fn batches_queued_behind_a_busy_writer_answer_and_fail_each_alone(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let db = migrated(&database).await;
    let backend = db.get_database_backend();
    const BATCHES: usize = 24;
    let fails = |i: usize| i == 0 || i == 11 || i == BATCHES - 1;
    let batch = |i: usize| {
        let mut statement = OneStatement::new(backend);
        let (sql, values) = stamps_insert(&db, &[(&format!("id-{i}"), &format!("hash-{i}"))]);
        statement.add_sql("s", &sql, values);
        outbox().add_to(&mut statement, "o", vec![event(&format!("k{i}"))], &WriteIf::Always);
        if fails(i) {
            // A unique violation in its last part.
            add_duplicate_event(&mut statement, &db, &format!("dup-{i}"));
        }
        statement
    };
    // The writer is held busy while every batch queues (on SQLite the
    // write gate; on PostgreSQL an open transaction, which holds nothing
    // the batches need).
    let busy = begin_write(&db).await.unwrap();
    let mut runs = Vec::new();
    for i in 0..BATCHES {
        let (db, statement) = (db.clone(), batch(i));
        let mut run = Box::pin(async move { statement.run(&db, "SELECT id FROM s").await });
        // Polled once here, so the batches queue in this order (the first,
        // a middle and the last of the queue fail). On PostgreSQL nothing
        // holds them, so one may finish within that poll (its thread
        // descheduled between sending and reading, the answer is there).
        runs.push(match futures::poll!(&mut run) {
            std::task::Poll::Pending => tokio::spawn(run),
            std::task::Poll::Ready(answer) => {
                assert_eq!(backend, DbBackend::Postgres, "the writer is busy");
                tokio::spawn(std::future::ready(answer))
            }
        });
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    busy.commit().await.unwrap();
    for (i, run) in runs.into_iter().enumerate() {
        match run.await.unwrap() {
            Ok(rows) => {
                assert!(!fails(i), "batch {i} should have failed");
                let ids = texts(&rows, "id");
                assert_eq!(ids, [format!("id-{i}")], "batch {i} answers its own rows");
            }
            Err(err) => {
                assert!(fails(i), "batch {i} failed: {err}");
                assert!(
                    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))),
                    "batch {i}: a unique violation, got {err}"
                );
            }
        }
    }
    let written: Vec<usize> = (0..BATCHES).filter(|i| !fails(*i)).collect();
    let mut keys = outbox_keys(&db).await;
    keys.sort();
    let mut expected: Vec<String> = written.iter().map(|i| format!("k{i}")).collect();
    expected.sort();
    assert_eq!(keys, expected, "the events of the batches that committed, and only those");
    let mut ids = read_texts(&db, "SELECT id FROM metadata_stamps", "id").await;
    ids.sort();
    let mut expected: Vec<String> = written.iter().map(|i| format!("id-{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected, "a failed batch left none of its rows");

    // The writer is free afterwards: nothing was left inside a transaction.
    let mut statement = OneStatement::new(backend);
    outbox().add_to(&mut statement, "o", vec![event("after")], &WriteIf::Always);
    tokio::time::timeout(std::time::Duration::from_secs(5), statement.run(&db, "SELECT 1")).await.unwrap().unwrap();
}

/// The WAL position `function` reports (`pg_current_wal_insert_lsn()`, …), in bytes.
async fn wal_position(db: &DatabaseConnection, function: &str) -> i64 {
    let sql = format!("SELECT ({function} - '0/0'::pg_lsn)::bigint AS position");
    let row = db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await.unwrap().unwrap();
    row.try_get("", "position").unwrap()
}

/// Records, per delivered event, how far the WAL was flushed when it left.
struct FlushWatching {
    db: DatabaseConnection,
    flushed_at_delivery: std::sync::Mutex<Vec<(String, i64)>>,
}

#[tonic::async_trait]
impl EventSink for FlushWatching {
    async fn publish(&self, events: &[OutgoingEvent]) -> (Vec<bool>, Option<String>) {
        let flushed = wal_position(&self.db, "pg_current_wal_flush_lsn()").await;
        let mut seen = self.flushed_at_delivery.lock().unwrap();
        seen.extend(events.iter().map(|event| (event.key.clone(), flushed)));
        (vec![true; events.len()], None)
    }
    async fn probe(&self) -> Result<(), String> {
        Ok(())
    }
    fn name(&self) -> &'static str {
        "flush-watching"
    }
}

/// PostgreSQL: a write committed without waiting for its WAL flush is
/// committed and answers like any other, and its events leave only once its
/// WAL is flushed — by the relay itself when nothing else commits.
#[tokio::test]
async fn postgres_events_of_a_commit_without_flush_leave_only_once_it_is_durable() {
    let database = TestDatabase::new(Backend::Postgres).await;
    let db = migrated(&database).await;
    let mut statement = OneStatement::new(DbBackend::Postgres);
    outbox().add_to(&mut statement, "o", vec![event("unflushed")], &WriteIf::Always);
    statement.commit_without_flush();
    let answer = statement.run(&db, "SELECT 1 AS one").await.unwrap();
    assert_eq!(answer.len(), 1, "the answer reads the parts");
    let committed_by = wal_position(&db, "pg_current_wal_insert_lsn()").await;
    assert_eq!(outbox_keys(&db).await, ["unflushed"], "committed");

    let sink = Arc::new(FlushWatching { db: db.clone(), flushed_at_delivery: Default::default() });
    let events = EventsConfig::from_env(&Env::from_pairs([("OUTBOX_MARK_DELAY_MS", "0")]), "test").unwrap();
    let relay = OutboxRelay::new(db.clone(), sink.clone(), Arc::default(), &events);
    let health = HealthRegistry::new("test", tonic_health::server::health_reporter().0);
    let stop = CancellationToken::new();
    let relaying = relay.spawn(health, std::time::Duration::from_secs(60), stop.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sink.flushed_at_delivery.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the event was never delivered");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.cancel();
    relaying.await.unwrap();
    let delivered = sink.flushed_at_delivery.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let (key, flushed) = &delivered[0];
    assert_eq!(key, "unflushed");
    assert!(
        *flushed >= committed_by,
        "delivered with the WAL flushed to {flushed}, before its commit at {committed_by}"
    );
}

/// The event ids `ids` as a multi-row insert into `processed_events` that
/// leaves out taken ids and returns those it wrote.
fn claim(ids: &[&str], backend: DbBackend) -> Statement {
    let mut insert = sea_orm::sea_query::Query::insert();
    insert.into_table("processed_events").columns(["event_id", "namespace", "processed_at"]);
    for id in ids {
        insert.values_panic([(*id).into(), "ns".into(), chrono::Utc::now().into()]);
    }
    insert.returning_col("event_id");
    insert_skipping_taken(insert, backend)
}

async fn claimed(db: &impl ConnectionTrait, ids: &[&str]) -> Vec<String> {
    let rows = db.query_all_raw(claim(ids, db.get_database_backend())).await.unwrap();
    let mut ids = texts(&rows, "event_id");
    ids.sort();
    ids
}

/// Rows whose key is taken (before, earlier in the transaction, or earlier
/// in the same statement) are left out and not returned; the transaction
/// stays whole: a rollback takes the new rows with it.
async fn an_insert_skipping_taken_keys_answers_only_its_new_rows(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let db = migrated(&database).await;
    assert_eq!(claimed(&db, &["e1"]).await, ["e1"]);

    let txn = begin_write(&db).await.unwrap();
    assert_eq!(claimed(&txn, &["e1", "e2", "e3"]).await, ["e2", "e3"], "e1 was taken before");
    assert_eq!(claimed(&txn, &["e3", "e4", "e4", "e5"]).await, ["e4", "e5"], "e3 earlier, e4 once");
    txn.commit().await.unwrap();

    let txn = begin_write(&db).await.unwrap();
    assert_eq!(claimed(&txn, &["e5", "e6"]).await, ["e6"]);
    txn.rollback().await.unwrap();

    let all = read_texts(&db, "SELECT event_id FROM processed_events ORDER BY event_id", "event_id").await;
    assert_eq!(all, ["e1", "e2", "e3", "e4", "e5"], "each once; the rolled-back e6 is not there");
}
