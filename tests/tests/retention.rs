//! Bounded tables: published outbox events and the reducer's processed event
//! ids are pruned on a schedule (with metrics), on both backends. (That an
//! unpublished event is never pruned is the relay's unit test.)

use std::time::Duration;

use omninode_integration_tests::{
    Backend, ServiceKind, TestDatabase, TestMesh, on_both_backends, table_rows, wait_until,
};
use omninode_proto::stamping::v1::StampRequest;

on_both_backends!(published_events_and_processed_ids_are_pruned);

const PRUNE_NOW: [(&str, &str); 5] = [
    ("OUTBOX_RETENTION_MS", "0"),
    ("OUTBOX_PRUNE_INTERVAL_MS", "100"),
    ("REDUCER_PROCESSED_RETENTION_MS", "0"),
    ("REDUCER_PRUNE_INTERVAL_MS", "100"),
    ("AGGREGATION_WINDOW_SIZE_MS", "50"),
];

async fn stamp(mesh: &TestMesh, count: usize) {
    let mut stamping = mesh.stamping().await;
    for i in 0..count {
        let request =
            StampRequest { namespace: "retention".into(), content: format!("file {i}\n"), ..Default::default() };
        stamping.stamp(request).await.expect("stamped");
    }
}

async fn published_events_and_processed_ids_are_pruned(backend: Backend) {
    let services = [ServiceKind::Stamping, ServiceKind::Reducer];
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, &services, &PRUNE_NOW).await;
    stamp(&mesh, 20).await;
    // Every stamp was counted, and then both tables emptied.
    let mut reducer = mesh.reducer().await;
    wait_until("the aggregate of 20 stamps", Duration::from_secs(20), || {
        let mut reducer = reducer.clone();
        async move {
            let request = omninode_proto::reducer::v1::GetNamespaceStatsRequest { namespace: "retention".into() };
            let stats = reducer.get_namespace_stats(request).await.ok()?.into_inner().stats?;
            (stats.total_stamps == 20).then_some(())
        }
    })
    .await;
    wait_until("an empty outbox and no processed ids", Duration::from_secs(20), || async {
        (table_rows(&mesh, "event_outbox").await == 0 && table_rows(&mesh, "processed_events").await == 0).then_some(())
    })
    .await;
    let (_, metrics) = mesh.admin_get("/metrics").await;
    let counter = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    // 20 stamp-created events and the aggregate updates they caused.
    assert!(counter("outbox_pruned_total") >= 21.0, "{}", counter("outbox_pruned_total"));
    assert!(counter("processed_events_pruned_total") >= 20.0, "{}", counter("processed_events_pruned_total"));
    // The aggregate stays: pruning forgets ids, not counts.
    let request = omninode_proto::reducer::v1::GetNamespaceStatsRequest { namespace: "retention".into() };
    let stats = reducer.get_namespace_stats(request).await.unwrap().into_inner().stats.unwrap();
    assert_eq!(stats.total_stamps, 20);
    mesh.shutdown().await;
}
