//! The reducer end to end: stamps and workflows through the outbox and a
//! broker (or the in-process bus) into per-namespace aggregates that must
//! equal a direct count over the source tables.

use std::time::Duration;

use omninode_integration_tests::{
    Backend, ServiceKind, TestDatabase, TestMesh, UpProcess, base_env, free_port, http_request, kafka,
    on_both_backends, reducer_client, wait_until,
};
use omninode_proto::{
    orchestrator::v1 as opb,
    reducer::v1::{self as rpb, reducer_service_client::ReducerServiceClient},
    stamping::v1 as pb,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tonic::{Code, transport::Channel};

const TYPES: [&str; 4] = ["a.py", "b.md", "c.json", "d.txt"];

/// Stamps `count` distinct contents into `namespace`, `chunk` per BatchStamp.
async fn stamp_many(mesh: &TestMesh, namespace: &str, offset: usize, count: usize, chunk: usize) {
    let mut client = mesh.stamping().await;
    for start in (offset..offset + count).step_by(chunk) {
        let items = (start..(start + chunk).min(offset + count))
            .map(|i| pb::BatchStampItem {
                content: format!("item {i} {}", "x".repeat(i % 50)),
                file_path: TYPES[i % TYPES.len()].into(),
                ..Default::default()
            })
            .collect();
        let response = client
            .batch_stamp(pb::BatchStampRequest { namespace: namespace.into(), items, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.failed, 0);
    }
}

/// What the aggregates must say, counted directly in `metadata_stamps`.
async fn counted_in_sql(db: &DatabaseConnection, namespace: &str) -> (u64, u64, Vec<(String, u64)>) {
    let backend = db.get_database_backend();
    let sql = "SELECT content_type, COUNT(*) AS n, CAST(SUM(file_size) AS BIGINT) AS bytes \
               FROM metadata_stamps WHERE namespace = $1 GROUP BY content_type ORDER BY content_type";
    let rows = db.query_all_raw(Statement::from_sql_and_values(backend, sql, [namespace.into()])).await.unwrap();
    let mut per_type = Vec::new();
    let (mut total, mut bytes) = (0, 0);
    for row in rows {
        let n: i64 = row.try_get("", "n").unwrap();
        let b: i64 = row.try_get("", "bytes").unwrap();
        per_type.push((row.try_get("", "content_type").unwrap(), n as u64));
        total += n as u64;
        bytes += b as u64;
    }
    (total, bytes, per_type)
}

/// Polls GetNamespaceStats until it reports `total` stamps (bounded: 90 s).
async fn wait_for_total(
    client: &mut ReducerServiceClient<Channel>,
    namespace: &str,
    total: u64,
) -> rpb::NamespaceStats {
    wait_until(&format!("{total} stamps aggregated in {namespace}"), Duration::from_secs(90), || {
        let mut client = client.clone();
        let request = rpb::GetNamespaceStatsRequest { namespace: namespace.into() };
        async move {
            let stats = client.get_namespace_stats(request).await.ok()?.into_inner().stats?;
            (stats.total_stamps >= total).then_some(stats)
        }
    })
    .await
}

fn assert_matches_sql(stats: &rpb::NamespaceStats, sql: &(u64, u64, Vec<(String, u64)>)) {
    assert_eq!(stats.total_stamps, sql.0, "total stamps");
    assert_eq!(stats.total_size_bytes, sql.1, "total bytes");
    let mut types: Vec<(String, u64)> = stats.file_type_counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
    types.sort();
    assert_eq!(types, sql.2, "per file type");
}

on_both_backends!(
    bus_aggregates_equal_sql_and_the_api_answers,
    bus_batch_in_hand_is_stored_at_shutdown,
    bus_events_a_crash_took_are_aggregated_at_the_next_start,
    bus_recovery_leaves_events_marked_after_the_reducer_subscribed_to_the_bus,
    kafka_two_reducers_one_killed_still_exact
);

async fn bus_aggregates_equal_sql_and_the_api_answers(backend: Backend) {
    let vars = [("AGGREGATION_WINDOW_SIZE_MS", "100"), ("AGGREGATION_BATCH_SIZE", "250")];
    let services = [ServiceKind::Stamping, ServiceKind::Orchestrator, ServiceKind::Reducer];
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, &services, &vars).await;
    stamp_many(&mesh, "agg.bus", 0, 2000, 500).await;
    // Two workflows, one failing on empty input: unique workflows and terminal states.
    let mut orchestrator = mesh.orchestrator().await;
    for content in ["a workflow's content", "  "] {
        let input = opb::WorkflowInput { content: content.into(), file_path: "w.txt".into(), ..Default::default() };
        let request = opb::RunWorkflowRequest { namespace: "agg.bus".into(), input: Some(input), ..Default::default() };
        orchestrator.run_workflow(request).await.unwrap();
    }
    let mut client = mesh.reducer().await;
    let sql = counted_in_sql(&mesh.mesh().database, "agg.bus").await;
    assert_eq!(sql.0, 2001);
    wait_for_total(&mut client, "agg.bus", sql.0).await;
    let stats = wait_until("both workflows' terminal states aggregated", Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let request = rpb::GetNamespaceStatsRequest { namespace: "agg.bus".into() };
            let stats = client.get_namespace_stats(request).await.ok()?.into_inner().stats?;
            (stats.workflow_state_counts.values().sum::<u64>() == 2).then_some(stats)
        }
    })
    .await;
    assert_matches_sql(&stats, &sql);
    assert_eq!(stats.unique_workflows, 2);
    assert_eq!(stats.workflow_state_counts.get("COMPLETED"), Some(&1));
    assert_eq!(stats.workflow_state_counts.get("FAILED"), Some(&1));
    assert!(stats.items_per_second > 0.0 && stats.window_start.is_some() && stats.version > 0);

    // Rebuild from the tables gives the same numbers, as a new version.
    let rebuilt =
        client.rebuild(rpb::RebuildRequest { namespace: "agg.bus".into() }).await.unwrap().into_inner().stats.unwrap();
    assert_matches_sql(&rebuilt, &sql);
    assert_eq!(rebuilt.unique_workflows, 2);
    assert!(rebuilt.version > stats.version);

    // Watch: the current aggregates first, then the next update.
    let mut watch = client
        .watch_namespace_stats(rpb::WatchNamespaceStatsRequest { namespace: "agg.bus".into() })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap().stats.unwrap();
    assert_eq!(first.version, rebuilt.version);
    stamp_many(&mesh, "agg.bus", 5000, 1, 1).await;
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.stats.unwrap().total_stamps, sql.0 + 1);

    let page = client.list_namespaces(rpb::ListNamespacesRequest::default()).await.unwrap().into_inner();
    assert_eq!(page.namespaces.iter().map(|n| n.namespace.as_str()).collect::<Vec<_>>(), ["agg.bus"]);
    let missing = client.get_namespace_stats(rpb::GetNamespaceStatsRequest { namespace: "nobody".into() }).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let bad = client.get_namespace_stats(rpb::GetNamespaceStatsRequest { namespace: "Bad NS".into() }).await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);

    let (_, metrics) = mesh.admin_get("/metrics").await;
    assert!(metrics.contains("aggregation_items_total"), "{metrics}");
    assert!(metrics.contains("aggregation_duration_ms_bucket"), "{metrics}");
    mesh.shutdown().await;
}

/// A connection of this test's own to `database` (the mesh's may be closed).
async fn connect(database: &TestDatabase) -> DatabaseConnection {
    sea_orm::Database::connect(database.url()).await.unwrap()
}

/// A count (the first column of the first row) that `sql` reads, if it can.
async fn count(db: &DatabaseConnection, sql: &str) -> Option<i64> {
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.ok()??;
    row.try_get_by_index::<i64>(0).ok()
}

const UNPUBLISHED: &str = "SELECT COUNT(*) FROM event_outbox WHERE published_at IS NULL";

/// The stamps `bridge_states` counts in `namespace` (0 without a row).
async fn stored_stamps(db: &DatabaseConnection, namespace: &str) -> Option<i64> {
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(total_stamps), 0) AS BIGINT) FROM bridge_states WHERE namespace = '{namespace}'"
    );
    count(db, &sql).await
}

/// Events the relay delivered to the in-process bus are marked published
/// and never delivered again: a shutdown while the reducer holds them in its
/// batch window stores them before the database closes.
async fn bus_batch_in_hand_is_stored_at_shutdown(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let services = [ServiceKind::Stamping, ServiceKind::Reducer];
    // A window and a batch far larger than the test: the batch is still in hand at shutdown.
    let holding = [("AGGREGATION_WINDOW_SIZE_MS", "600000"), ("AGGREGATION_BATCH_SIZE", "5000")];
    let mesh = TestMesh::start_services(database.clone(), &services, &holding).await;
    stamp_many(&mesh, "agg.stop", 0, 300, 100).await;
    let db = connect(&database).await;
    wait_until("every stamp's event delivered and marked published", Duration::from_secs(10), || async {
        (count(&db, UNPUBLISHED).await? == 0).then_some(())
    })
    .await;
    assert_eq!(stored_stamps(&db, "agg.stop").await, Some(0), "the batch is still in the reducer's hands");
    mesh.shutdown().await;

    // Stored before the database closed, not found again by a later start.
    let sql = counted_in_sql(&db, "agg.stop").await;
    assert_eq!(sql.0, 300);
    assert_eq!(stored_stamps(&db, "agg.stop").await, Some(300), "the batch in hand stored at shutdown");
    let bytes = count(&db, "SELECT total_size_bytes FROM bridge_states WHERE namespace = 'agg.stop'").await;
    assert_eq!(bytes, Some(sql.1 as i64));
}

/// A crash (SIGKILL) of `omninode up` while its reducer holds events the
/// relay already marked published: the bus never sends them again, and the
/// next start finds them in the outbox (published, not processed) and
/// counts them, once.
async fn bus_events_a_crash_took_are_aggregated_at_the_next_start(backend: Backend) {
    const NODE: &str = env!("CARGO_BIN_EXE_omninode-node");
    let database = TestDatabase::new(backend).await;
    let env = database.env();
    let vars = |window: &str| {
        let mut vars: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        vars.extend([("AGGREGATION_WINDOW_SIZE_MS", window.to_owned()), ("AGGREGATION_BATCH_SIZE", "5000".into())]);
        vars
    };
    // A window far longer than the test: the events stay in the reducer's hands.
    let up = UpProcess::start(NODE, &vars("600000"), None).await;
    for i in 0..200 {
        let body = format!(r#"{{"content":"crash {i}\n","filePath":"{}"}}"#, TYPES[i % TYPES.len()]);
        let headers = [("content-type", "application/json")];
        let (status, _, answer) =
            http_request(up.gateway, "POST", "/v1/namespaces/agg.crash/stamps", &headers, &body).await;
        assert_eq!(status, 201, "{answer}");
    }
    let db = connect(&database).await;
    wait_until("every stamp's event delivered and marked published", Duration::from_secs(10), || async {
        (count(&db, UNPUBLISHED).await? == 0).then_some(())
    })
    .await;
    assert_eq!(stored_stamps(&db, "agg.crash").await, Some(0), "the events are still in the reducer's hands");

    let up = up.kill_and_restart(NODE, &vars("100")).await;
    let sql = counted_in_sql(&db, "agg.crash").await;
    assert_eq!(sql.0, 200);
    wait_until("the events the crash took aggregated", Duration::from_secs(10), || async {
        (stored_stamps(&db, "agg.crash").await? == 200).then_some(())
    })
    .await;
    let bytes = count(&db, "SELECT total_size_bytes FROM bridge_states WHERE namespace = 'agg.crash'").await;
    assert_eq!(bytes, Some(sql.1 as i64), "each event counted once");
    up.stop().await;
}

/// At start the reducer recovers the events marked published before it
/// subscribed to the bus and not aggregated (a crash took them), and only
/// those: an event marked later was handed to its subscription, and counting
/// it from the outbox too would count it before the reducer received it.
async fn bus_recovery_leaves_events_marked_after_the_reducer_subscribed_to_the_bus(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    // No reducer: the relay marks every stamp's event published, and nothing aggregates them.
    let stamping = TestMesh::start_services(database.clone(), &[ServiceKind::Stamping], &[]).await;
    stamp_many(&stamping, "agg.bound", 0, 40, 40).await;
    let db = connect(&database).await;
    wait_until("every stamp's event marked published", Duration::from_secs(10), || async {
        (count(&db, UNPUBLISHED).await? == 0).then_some(())
    })
    .await;
    stamping.shutdown().await;
    let stamp_events = "SELECT id FROM event_outbox WHERE topic LIKE '%.evt.stamp-created.v1'";
    assert_eq!(count(&db, &format!("SELECT COUNT(*) FROM ({stamp_events}) AS s")).await, Some(40));
    // The newer half as a running relay marks the events it hands to the
    // reducer's subscription: after the reducer subscribed.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let sql = format!(
        "UPDATE event_outbox SET published_at = $1 WHERE id IN (SELECT id FROM ({stamp_events}) AS s ORDER BY id DESC LIMIT 20)"
    );
    let marked = db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, [later.into()])).await;
    assert_eq!(marked.unwrap().rows_affected(), 20);

    let vars = [("AGGREGATION_WINDOW_SIZE_MS", "100")];
    let reducer = TestMesh::start_services(database.clone(), &[ServiceKind::Reducer], &vars).await;
    // Recovery stores what it finds in one transaction.
    let recovered = wait_until("the events marked before the start recovered", Duration::from_secs(10), || async {
        stored_stamps(&db, "agg.bound").await.filter(|n| *n > 0)
    })
    .await;
    assert_eq!(recovered, 20, "only the events marked before the reducer subscribed are recovered");
    reducer.shutdown().await;
}

/// Two reducer processes in one consumer group split the partitions; one is
/// killed (SIGKILL) mid-run; the survivor takes over its partitions, re-reads
/// what was not committed, and the totals are still exact.
async fn kafka_two_reducers_one_killed_still_exact(backend: Backend) {
    let broker = kafka::Broker::start().await;
    let bootstrap = broker.bootstrap();
    let database = TestDatabase::new(backend).await;
    let group = format!("reducers-{}", uuid::Uuid::new_v4().simple());
    let shared = [
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
        ("REDUCER_CONSUMER_GROUP", group.as_str()),
        ("REDUCER_SESSION_TIMEOUT_MS", "2000"),
        ("AGGREGATION_WINDOW_SIZE_MS", "200"),
        ("AGGREGATION_BATCH_SIZE", "100"),
    ];
    let mesh =
        TestMesh::start_services(database.clone(), &[ServiceKind::Stamping, ServiceKind::Reducer], &shared).await;
    let (port, other_metrics) = (free_port(), free_port());
    let mut other = tokio::process::Command::new(env!("CARGO_BIN_EXE_omninode-node"))
        .args(["serve", "reducer"])
        .envs(base_env())
        .envs(database.env())
        .envs(shared)
        .env("REDUCER_PORT", port.to_string())
        .env("METRICS_PORT", other_metrics.to_string())
        .kill_on_drop(true)
        .spawn()
        .expect("the second reducer starts");
    reducer_client(format!("http://127.0.0.1:{port}")).await;
    // Let the group settle with both members.
    tokio::time::sleep(Duration::from_secs(5)).await;

    stamp_many(&mesh, "agg.kafka", 0, 1500, 500).await;
    // The second reducer must really be doing part of the work when it dies.
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], other_metrics).into();
    wait_until("the second reducer aggregates", Duration::from_secs(10), || async {
        let (_, metrics) = omninode_integration_tests::http_get(admin, "/metrics").await;
        let items = metrics
            .lines()
            .find_map(|l| l.strip_prefix("aggregation_items_total ").and_then(|v| v.trim().parse::<f64>().ok()));
        items.filter(|n| *n > 0.0)
    })
    .await;
    other.kill().await.unwrap();
    stamp_many(&mesh, "agg.kafka", 1500, 1500, 500).await;

    let mut client = mesh.reducer().await;
    let sql = counted_in_sql(&mesh.mesh().database, "agg.kafka").await;
    assert_eq!(sql.0, 3000);
    let stats = wait_for_total(&mut client, "agg.kafka", sql.0).await;
    // Settle: a late duplicate would show up as more than the SQL count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats_after = client
        .get_namespace_stats(rpb::GetNamespaceStatsRequest { namespace: "agg.kafka".into() })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_matches_sql(&stats, &sql);
    assert_matches_sql(&stats_after, &sql);
    mesh.shutdown().await;
    drop(broker);
}
