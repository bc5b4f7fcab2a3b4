//! Events end to end: changes → outbox → relay → Kafka (a real tansu broker)
//! or the in-process bus; the same suite on both sinks and both databases.

use std::{collections::HashMap, sync::Arc, time::Duration};

use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh, kafka, wait_until};
use omninode_proto::{
    events::v1::{EventEnvelope, StampCreated, event_envelope::Payload},
    orchestrator::v1::{self as opb, orchestrator_service_client::OrchestratorServiceClient},
    stamping::v1::{self as pb, stamping_service_client::StampingServiceClient},
};
use omninode_runtime::events::{EventKind, NewEvent, Outbox, topics::all_topics};
use prost::Message;
use rdkafka::consumer::StreamConsumer;
use sea_orm::TransactionTrait;
use tokio::sync::mpsc;

const PREFIX: &str = "test.omninode";
const PARTITIONS: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Kafka,
    Bus,
}

/// Where a test reads events from.
enum Events {
    Kafka(StreamConsumer),
    Bus(mpsc::Receiver<omninode_runtime::events::OutgoingEvent>),
    /// Between a broker stop and a new consumer.
    Disconnected,
}

impl Events {
    /// The next event as (topic, key, envelope), or `None` after `wait`.
    async fn next(&mut self, wait: Duration) -> Option<(String, String, EventEnvelope)> {
        let (topic, key, payload) = match self {
            Events::Kafka(consumer) => kafka::next_record(consumer, wait).await?,
            Events::Bus(rx) => {
                let event = tokio::time::timeout(wait, rx.recv()).await.ok()??;
                (event.topic, event.key, event.payload)
            }
            Events::Disconnected => return None,
        };
        Some((topic, key, EventEnvelope::decode(payload.as_slice()).expect("an EventEnvelope")))
    }

    /// Exactly `n` events, failing after 20 s.
    async fn take(&mut self, n: usize) -> Vec<(String, String, EventEnvelope)> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            match self.next(Duration::from_secs(20)).await {
                Some(event) => events.push(event),
                None => panic!("only {} of {n} events arrived", events.len()),
            }
        }
        events
    }

    /// Asserts nothing more arrives within `wait`.
    async fn assert_quiet(&mut self, wait: Duration) {
        if let Some((topic, _, envelope)) = self.next(wait).await {
            panic!("unexpected event on {topic}: {envelope:?}");
        }
    }
}

struct Setup {
    mesh: TestMesh,
    events: Events,
    broker: Option<kafka::Broker>,
}

async fn setup(sink: Sink, backend: Backend, bus_capacity: usize) -> Setup {
    let database = TestDatabase::new(backend).await;
    let broker = match sink {
        Sink::Kafka => Some(kafka::Broker::start().await),
        Sink::Bus => None,
    };
    let bootstrap = broker.as_ref().map(|b| b.bootstrap()).unwrap_or_default();
    let debug = std::env::var("EVENTS_DEBUG").unwrap_or_default();
    let mut vars = vec![
        ("KAFKA_STALL_TIMEOUT_MS", "1500"),
        ("KAFKA_TOPIC_PREFIX", PREFIX),
        ("HEALTH_CHECK_INTERVAL_MS", "200"),
        ("OUTBOX_POLL_INTERVAL_MS", "50"),
    ];
    if sink == Sink::Kafka {
        vars.push(("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()));
    }
    if !debug.is_empty() {
        vars.extend([
            ("KAFKA_DEBUG", debug.as_str()),
            ("RUST_LOG", "warn,rdkafka=debug,librdkafka=debug,omninode_runtime=debug"),
        ]);
    }
    let mesh = TestMesh::start_services(database, &[ServiceKind::Stamping, ServiceKind::Orchestrator], &vars).await;
    let events = match sink {
        Sink::Kafka => Events::Kafka(kafka::consumer(&bootstrap, &all_topics(PREFIX), PARTITIONS)),
        Sink::Bus => Events::Bus(mesh.mesh().bus.as_ref().expect("bus").subscribe(&all_topics(PREFIX), bus_capacity)),
    };
    Setup { mesh, events, broker }
}

async fn stamp(mesh: &TestMesh, content: &str) -> pb::StampRecord {
    let mut client = StampingServiceClient::connect(mesh.stamping_url()).await.unwrap();
    let request = pb::StampRequest {
        namespace: "events".into(),
        content: content.into(),
        file_path: "e.txt".into(),
        correlation_id: format!("corr-{content}"),
        ..Default::default()
    };
    client.stamp(request).await.unwrap().into_inner().stamp.unwrap()
}

macro_rules! on_every_sink_and_backend {
    ($($name:ident),* $(,)?) => {
        mod kafka_sqlite { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Sink::Kafka, super::Backend::Sqlite).await })* }
        mod kafka_postgres { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Sink::Kafka, super::Backend::Postgres).await })* }
        mod bus_sqlite { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Sink::Bus, super::Backend::Sqlite).await })* }
        mod bus_postgres { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Sink::Bus, super::Backend::Postgres).await })* }
    };
}

on_every_sink_and_backend!(
    stamp_and_workflow_events_round_trip,
    sink_outage_delays_events_and_loses_none,
    rolled_back_changes_publish_nothing,
);

async fn stamp_and_workflow_events_round_trip(sink: Sink, backend: Backend) {
    let mut s = setup(sink, backend, 64).await;
    let record = stamp(&s.mesh, "round trip").await;
    let (topic, key, envelope) = s.events.take(1).await.remove(0);
    assert_eq!(topic, format!("{PREFIX}.evt.stamp-created.v1"));
    assert_eq!(key, record.file_hash);
    assert_eq!(envelope.event_type, "stamp-created");
    assert_eq!(envelope.event_version, 1);
    assert_eq!((envelope.source_service.as_str(), envelope.namespace.as_str()), ("stamping", "events"));
    assert_eq!(envelope.correlation_id, "corr-round trip");
    assert_eq!(envelope.partition_key, record.file_hash);
    assert!(uuid::Uuid::parse_str(&envelope.event_id).is_ok());
    let Some(Payload::StampCreated(created)) = envelope.payload else { panic!("a StampCreated payload") };
    assert_eq!((created.stamp_id, created.file_size), (record.stamp_id, record.file_size));

    // Re-stamping the same content creates nothing, so publishes nothing.
    stamp(&s.mesh, "round trip").await;

    // A workflow: its state changes on one key, in order, plus its stamp.
    let mut orchestrator = OrchestratorServiceClient::connect(s.mesh.orchestrator_url()).await.unwrap();
    let request = opb::RunWorkflowRequest {
        namespace: "events".into(),
        input: Some(opb::WorkflowInput { content: "workflow".into(), ..Default::default() }),
        ..Default::default()
    };
    let workflow = orchestrator.run_workflow(request).await.unwrap().into_inner().workflow.unwrap();
    let events = s.events.take(4).await;
    let states: Vec<(i32, i32)> = events
        .iter()
        .filter_map(|(_, key, e)| match &e.payload {
            Some(Payload::WorkflowStateChanged(c)) if *key == workflow.workflow_id => Some((c.from_state, c.to_state)),
            _ => None,
        })
        .collect();
    use opb::WorkflowState as W;
    assert_eq!(
        states,
        [
            (W::Unspecified as i32, W::Pending as i32),
            (W::Pending as i32, W::Processing as i32),
            (W::Processing as i32, W::Completed as i32)
        ]
    );
    let stamp_event = events.iter().find(|(_, _, e)| e.event_type == "stamp-created").expect("the workflow's stamp");
    let Some(Payload::StampCreated(created)) = &stamp_event.2.payload else { unreachable!() };
    assert_eq!(created.workflow_id, workflow.workflow_id, "the stamp names the workflow that made it");
    s.events.assert_quiet(Duration::from_millis(500)).await;
    s.mesh.shutdown().await;
}

/// Kafka: the broker goes away mid-stream and comes back. Bus: the
/// subscriber stops reading and its bounded queue fills. Either way the
/// events wait in the outbox and then arrive exactly once, in key order.
async fn sink_outage_delays_events_and_loses_none(sink: Sink, backend: Backend) {
    let mut s = setup(sink, backend, 4).await;
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    let mut record = |records: &[pb::StampRecord]| {
        for r in records {
            expected.entry(r.file_hash.clone()).or_default().push(r.stamp_id.clone());
        }
    };
    let mut first = Vec::new();
    for i in 0..10 {
        first.push(stamp(&s.mesh, &format!("before {i}")).await);
    }
    record(&first);
    let mut received = s.events.take(10).await;

    if let Some(broker) = s.broker.as_mut() {
        broker.stop().await;
        // The consumer goes with the broker: after a restart, tansu answers a
        // client that asks by topic id with nameless topics, on which
        // librdkafka's consumer crashes (seen: SIGSEGV in
        // rd_kafka_metadata_cache_find). A new consumer asks by name.
        s.events = Events::Disconnected;
    }
    let mut second = Vec::new();
    for i in 0..20 {
        second.push(stamp(&s.mesh, &format!("during {i}")).await);
    }
    record(&second);
    if sink == Sink::Kafka {
        // The broker is down: the process says so, degraded but serving.
        wait_until("health reports kafka down", Duration::from_secs(5), || async {
            let (code, body) = s.mesh.admin_get("/health").await;
            (code == 200 && body.contains(r#""status":"degraded""#) && body.contains(r#""kafka""#)).then_some(())
        })
        .await;
        let broker = s.broker.as_mut().unwrap();
        broker.restart().await;
        s.events = Events::Kafka(kafka::consumer(&broker.bootstrap(), &all_topics(PREFIX), PARTITIONS));
    }
    if std::env::var("EVENTS_DEBUG").is_ok() {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (_, metrics) = s.mesh.admin_get("/metrics").await;
        eprintln!("{}", metrics.lines().filter(|l| l.contains("outbox")).collect::<Vec<_>>().join("\n"));
        eprintln!("{}", s.mesh.admin_get("/health").await.1);
    }
    received.extend(s.events.take(20).await);
    s.events.assert_quiet(Duration::from_millis(500)).await;

    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for (_, key, envelope) in &received {
        assert!(ids.insert(envelope.event_id.clone()), "event {} arrived twice", envelope.event_id);
        let Some(Payload::StampCreated(StampCreated { stamp_id, .. })) = &envelope.payload else { panic!() };
        seen.entry(key.clone()).or_default().push(stamp_id.clone());
    }
    assert_eq!(seen, expected, "every event exactly once, in order per key");
    if sink == Sink::Kafka {
        wait_until("health recovers", Duration::from_secs(5), || async {
            s.mesh.admin_get("/health").await.1.contains(r#""status":"healthy""#).then_some(())
        })
        .await;
    }
    s.mesh.shutdown().await;
}

async fn rolled_back_changes_publish_nothing(sink: Sink, backend: Backend) {
    let mut s = setup(sink, backend, 64).await;
    let db = s.mesh.mesh().database.clone();
    let outbox = Outbox::new("test", "test-1", PREFIX, Arc::new(tokio::sync::Notify::new()));
    let event = |key: &str| NewEvent {
        kind: EventKind::StampCreated,
        namespace: "events".into(),
        partition_key: key.into(),
        correlation_id: None,
        causation_id: None,
        trace_context: None,
        payload: Payload::StampCreated(StampCreated { stamp_id: key.into(), ..Default::default() }),
    };
    let txn = db.begin().await.unwrap();
    outbox.append(&txn, vec![event("rolled-back")]).await.unwrap();
    txn.rollback().await.unwrap();
    let txn = db.begin().await.unwrap();
    outbox.append(&txn, vec![event("committed")]).await.unwrap();
    txn.commit().await.unwrap();

    let (_, key, _) = s.events.take(1).await.remove(0);
    assert_eq!(key, "committed");
    s.events.assert_quiet(Duration::from_millis(700)).await;
    s.mesh.shutdown().await;
}

/// The relay's lead (PostgreSQL) is an advisory lock held by a connection
/// of its own, and each round reads the outbox on that connection: when the
/// database ends that session, the next round's read fails, the relay gives
/// the lead up and takes it again on a new connection, and the events of the
/// stamps made meanwhile go out, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_whose_connection_is_ended_takes_the_lead_again_and_loses_nothing() {
    use sea_orm::ConnectionTrait;
    let mut s = setup(Sink::Bus, Backend::Postgres, 64).await;
    let db = s.mesh.mesh().database.clone();
    // The relay's lock: key 0x6f6d6e696e6f6465, an int8 advisory lock (objsubid 1).
    let holder = async || -> Option<i32> {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND classid = x'6f6d6e69'::int::oid AND objid = x'6e6f6465'::int::oid AND objsubid = 1",
            ))
            .await
            .unwrap()?;
        Some(row.try_get::<i32>("", "pid").unwrap())
    };
    let first = stamp(&s.mesh, "before the cut").await;
    let (_, key, _) = s.events.take(1).await.remove(0);
    assert_eq!(key, first.file_hash);
    let ended = holder().await.expect("the relay holds its lock");

    let terminate = format!("SELECT pg_terminate_backend({ended})");
    db.execute_unprepared(&terminate).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(stamp(&s.mesh, &format!("after the cut {i}")).await.file_hash);
    }
    let received: Vec<String> = s.events.take(5).await.into_iter().map(|(_, key, _)| key).collect();
    assert_eq!(received, expected, "every event of the stamps made after the cut, once, in order");
    s.events.assert_quiet(Duration::from_millis(500)).await;
    let now = holder().await.expect("the relay holds its lock again");
    assert_ne!(now, ended, "on a new connection");
    s.mesh.shutdown().await;
}
