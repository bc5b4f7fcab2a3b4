//! `OneStatement` on a real PostgreSQL: the parts of one statement commit
//! together or not at all, and outbox rows are written only where their
//! condition holds.

use std::sync::Arc;

use omninode_integration_tests::PostgresDatabase;
use omninode_proto::events::v1::{StampCreated, event_envelope::Payload};
use omninode_runtime::{
    Env, MeshConfig,
    db::{OneStatement, connect_and_migrate},
    events::{EventKind, NewEvent, Outbox, WriteIf},
};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

async fn migrated(pg: &PostgresDatabase) -> DatabaseConnection {
    let config = MeshConfig::from_env(&Env::from_pairs([("DATABASE_URL", pg.url.as_str())])).unwrap();
    connect_and_migrate(&config).await.unwrap()
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

/// The partition keys of the outbox rows, in id order.
async fn outbox_keys(db: &DatabaseConnection) -> Vec<String> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT partition_key FROM event_outbox ORDER BY id",
        ))
        .await
        .unwrap();
    rows.iter().map(|row| row.try_get::<String>("", "partition_key").unwrap()).collect()
}

#[tokio::test]
async fn a_failing_part_writes_nothing_of_the_others() {
    let pg = PostgresDatabase::create().await;
    let db = migrated(&pg).await;
    let mut statement = OneStatement::new();
    outbox().add_to(&mut statement, "o", vec![event("a"), event("b")], &WriteIf::Always);
    // The same event id twice: a unique violation in the second part.
    statement.add_sql(
        "dup",
        "INSERT INTO event_outbox (event_id, topic, partition_key, event_type, payload, created_at) \
         VALUES ($1, 't', 'dup', 'x', '\\x00', now()), ($1, 't', 'dup', 'x', '\\x00', now())",
        vec!["00000000-0000-0000-0000-000000000001".into()],
    );
    let err = statement.run(&db, "SELECT 1").await.unwrap_err();
    assert!(
        matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))),
        "a unique violation, got {err}"
    );
    assert!(outbox_keys(&db).await.is_empty(), "nothing of the statement was written");

    let mut statement = OneStatement::new();
    outbox().add_to(&mut statement, "o", vec![event("a"), event("b")], &WriteIf::Always);
    statement.run(&db, "SELECT 1").await.unwrap();
    assert_eq!(outbox_keys(&db).await, ["a", "b"], "written, in order");
}

#[tokio::test]
async fn outbox_rows_follow_what_the_parts_before_them_returned() {
    let pg = PostgresDatabase::create().await;
    let db = migrated(&pg).await;

    // A conditional update that matches nothing: no event.
    let mut statement = OneStatement::new();
    statement.add_sql(
        "u",
        "UPDATE event_outbox SET attempts = attempts + 1 WHERE event_id = $1 RETURNING 1",
        vec!["none".into()],
    );
    outbox().add_to(&mut statement, "o", vec![event("unmatched")], &WriteIf::Returned("u"));
    let rows = statement.run(&db, "SELECT count(*) AS n FROM u").await.unwrap();
    assert_eq!(rows[0].try_get::<i64>("", "n").unwrap(), 0);
    assert!(outbox_keys(&db).await.is_empty());

    // Keyed rows: only the keys the first part returned.
    let mut statement = OneStatement::new();
    statement.add_sql("s", "SELECT * FROM (VALUES ($1), ($2)) AS t(id)", vec!["k1".into(), "k3".into()]);
    outbox().add_to(
        &mut statement,
        "o",
        vec![event("k1"), event("k2"), event("k3")],
        &WriteIf::KeyReturned { part: "s", column: "id" },
    );
    statement.run(&db, "SELECT id FROM s").await.unwrap();
    assert_eq!(outbox_keys(&db).await, ["k1", "k3"]);

    // A conditional update that matches: its event is written.
    let mut statement = OneStatement::new();
    statement.add_sql(
        "u",
        "UPDATE event_outbox SET attempts = attempts + 1 WHERE partition_key = $1 RETURNING 1",
        vec!["k1".into()],
    );
    outbox().add_to(&mut statement, "o", vec![event("matched")], &WriteIf::Returned("u"));
    statement.run(&db, "SELECT count(*) FROM u").await.unwrap();
    assert_eq!(outbox_keys(&db).await, ["k1", "k3", "matched"]);
}
