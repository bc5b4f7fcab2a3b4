//! Orchestrator scale-out: several orchestrator processes on one database,
//! workflows claimed with leases, taken over when an instance dies or
//! stalls, handed over on a graceful shutdown, fenced when a stale owner wakes
//! up; the queue bound holds across instances. Real processes, real signals.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use omninode_integration_tests::{
    Backend, NodeProcess, ServiceKind, TestDatabase, TestMesh, consul::ConsulDouble, free_port, on_both_backends,
    orchestrator_client, reason, wait_until, workflow_reaches,
};
use omninode_proto::orchestrator::v1::{self as pb, orchestrator_service_client::OrchestratorServiceClient};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use tonic::{Code, transport::Channel};

const NODE: &str = env!("CARGO_BIN_EXE_omninode-node");

fn start_request(namespace: &str, i: usize) -> pb::StartWorkflowRequest {
    pb::StartWorkflowRequest {
        namespace: namespace.into(),
        input: Some(pb::WorkflowInput {
            content: format!("workflow {i} of a scale-out run\n"),
            file_path: format!("docs/{i}.md"),
            // The OnexTree double answers after a pause: work outlasts the starts.
            enable_intelligence: true,
            ..Default::default()
        }),
        idempotency_key: format!("wf-{i}"),
        ..Default::default()
    }
}

/// An OnexTree test double that answers every analysis after `pause`.
async fn slow_onextree(pause: Duration) -> String {
    use axum::{Router, routing::post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route(
        "/api/v1/intelligence/analyze",
        post(move || async move {
            tokio::time::sleep(pause).await;
            axum::Json(serde_json::json!({"score": 1}))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn vars(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

async fn rows(db: &DatabaseConnection, sql: &str) -> Vec<sea_orm::QueryResult> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap()
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap().unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

async fn count_in(db: &DatabaseConnection, namespace: &str, state: &str) -> i64 {
    scalar(
        db,
        &format!(
            "SELECT COUNT(*) FROM workflow_executions WHERE namespace = '{namespace}' AND current_state = '{state}'"
        ),
    )
    .await
}

/// 3 orchestrator and 2 stamping processes on one PostgreSQL; 3000 workflows
/// started across the orchestrators; one orchestrator SIGKILLed, another
/// SIGSTOPped past its lease and resumed. Every workflow completes exactly
/// once, the dead instance's work is taken over, and the stale owner's
/// writes are fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_paused_orchestrators_lose_no_workflow_and_stale_writes_are_fenced() {
    const TOTAL: usize = 3000;
    const LEASE_MS: u64 = 1500;
    let database = TestDatabase::new(Backend::Postgres).await;
    let consul = ConsulDouble::start().await;
    let onextree = slow_onextree(Duration::from_millis(100)).await;
    let mut shared = database.env();
    shared.extend(vars(&[
        ("ONEXTREE_SERVICE_URL", onextree),
        ("CONSUL_HTTP_ADDR", consul.url()),
        ("CONSUL_CHECK_INTERVAL_MS", "200".into()),
        ("CONSUL_WAIT_MS", "1000".into()),
        ("DATABASE_MAX_CONNECTIONS", "8".into()),
    ]));
    let stamping: Vec<NodeProcess> = (0..2).map(|_| NodeProcess::spawn(NODE, "stamping", &shared)).collect();
    wait_until("both stamping instances pass their checks", Duration::from_secs(30), || {
        std::future::ready((consul.instances("omninode-stamping").len() == 2).then_some(()))
    })
    .await;
    let orchestrators: Vec<NodeProcess> = (1..=3)
        .map(|n| {
            let mut own = shared.clone();
            own.extend(vars(&[
                ("OMNINODE_INSTANCE_ID", format!("orch-{n}")),
                ("ORCHESTRATOR_LEASE_MS", LEASE_MS.to_string()),
                ("ORCHESTRATOR_CONCURRENCY", "8".into()),
                ("MAX_WORKFLOW_QUEUE_SIZE", "10000".into()),
            ]));
            NodeProcess::spawn(NODE, "orchestrator", &own)
        })
        .collect();
    let mut clients = Vec::new();
    for node in &orchestrators {
        clients.push(orchestrator_client(node.url()).await);
    }

    // Start every workflow, round robin over the three instances.
    let started = Instant::now();
    let acknowledged: Vec<String> = stream::iter(0..TOTAL)
        .map(|i| {
            let mut client = clients[i % 3].clone();
            async move {
                let response = client.start_workflow(start_request("scale.out", i)).await.expect("start acknowledged");
                response.into_inner().workflow.unwrap().workflow_id
            }
        })
        .buffer_unordered(48)
        .collect()
        .await;
    assert_eq!(acknowledged.len(), TOTAL);
    println!("{TOTAL} workflows acknowledged in {:?}", started.elapsed());

    // Mid-run: SIGKILL orch-1, SIGSTOP orch-2 for longer than its lease.
    let db = Database::connect(database.postgres.as_ref().unwrap().url.as_str()).await.unwrap();
    let owned_by = |n: u32| {
        format!(
            "SELECT COUNT(*) FROM workflow_executions WHERE lease_owner LIKE 'orch-{n}/%' \
             AND current_state IN ('PENDING', 'PROCESSING')"
        )
    };
    let completed_before = count_in(&db, "scale.out", "COMPLETED").await;
    orchestrators[0].signal("KILL");
    let killed_at = Instant::now();
    let held_by_dead = scalar(&db, &owned_by(1)).await;
    orchestrators[1].signal("STOP");
    assert!(completed_before < TOTAL as i64, "the kill must land mid-run ({completed_before} already done)");
    assert!(held_by_dead > 0, "the killed instance held no workflow");
    wait_until("the survivors take over the killed instance's workflows", Duration::from_secs(30), || async {
        (scalar(&db, &owned_by(1)).await == 0).then_some(())
    })
    .await;
    let takeover = killed_at.elapsed();
    println!(
        "takeover: {held_by_dead} workflows of the SIGKILLed instance claimed by others {} ms after the kill \
         (lease {LEASE_MS} ms; {completed_before} of {TOTAL} had completed)",
        takeover.as_millis()
    );
    assert!(takeover < Duration::from_millis(4 * LEASE_MS), "takeover took {takeover:?}");
    tokio::time::sleep(Duration::from_millis(2 * LEASE_MS)).await;
    orchestrators[1].signal("CONT");

    wait_until("every workflow completes", Duration::from_secs(180), || async {
        (count_in(&db, "scale.out", "COMPLETED").await == TOTAL as i64).then_some(())
    })
    .await;
    println!("all {TOTAL} completed {:?} after the first start", started.elapsed());

    // Exactly once: one stamp record per workflow, no step succeeded twice.
    let stamps = scalar(&db, "SELECT COUNT(*) FROM metadata_stamps WHERE op_id LIKE 'workflow:%'").await;
    let distinct = scalar(&db, "SELECT COUNT(DISTINCT op_id) FROM metadata_stamps WHERE op_id LIKE 'workflow:%'").await;
    assert_eq!((stamps, distinct), (TOTAL as i64, TOTAL as i64), "one stamp record per workflow");
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM workflow_executions WHERE current_state <> 'COMPLETED'").await,
        0,
        "nothing failed"
    );
    let mut resumed = 0;
    for row in rows(&db, "SELECT id, CAST(steps AS TEXT) AS steps FROM workflow_executions").await {
        let id: String = row.try_get("", "id").unwrap();
        let steps: serde_json::Value = serde_json::from_str(&row.try_get::<String>("", "steps").unwrap()).unwrap();
        let mut succeeded: HashMap<String, Vec<String>> = HashMap::new();
        for step in steps.as_array().unwrap() {
            if step["outcome"] == "SUCCEEDED" && step["name"] != "resume" {
                let owner = step["owner"].as_str().unwrap_or_default().to_owned();
                succeeded.entry(step["name"].as_str().unwrap().to_owned()).or_default().push(owner);
            }
            resumed += usize::from(step["name"] == "resume");
        }
        for (name, owners) in succeeded {
            assert_eq!(owners.len(), 1, "workflow {id}: step {name} recorded as succeeded by {owners:?}");
        }
    }
    println!("{resumed} workflows were picked up by another instance");
    assert!(resumed > 0, "no workflow was resumed by another instance");

    // The paused instance woke up to a lost lease: its writes were refused.
    let paused = &orchestrators[1];
    let fenced = wait_until("the stale owner's writes are fenced", Duration::from_secs(30), || async {
        let fenced = paused.metric("workflow_fenced_writes_total").await;
        (fenced > 0.0).then_some(fenced)
    })
    .await;
    let takeovers =
        orchestrators[2].metric("workflow_takeovers_total").await + paused.metric("workflow_takeovers_total").await;
    println!("fenced writes of the paused instance: {fenced}; takeovers: {takeovers}");
    assert!(takeovers > 0.0);
    drop(stamping);
}

/// An instance that stalls inside a transaction (SIGSTOP, a frozen VM, a cut
/// network) holds its locks only until PostgreSQL ends its session, after
/// `DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS`, which an orchestrator lowers to
/// its lease: what it held is then the others' to take, what it wrote in that
/// transaction never lands, and when it wakes its pool connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transaction_holds_its_locks_no_longer_than_the_lease() {
    use omninode_runtime::Env;
    use sea_orm::TransactionTrait;
    const LEASE_MS: u64 = 700;
    let database = TestDatabase::new(Backend::Postgres).await;
    let mut env = database.env();
    env.extend(vars(&[("ORCHESTRATOR_LEASE_MS", LEASE_MS.to_string())]));
    let config = omninode::Config::from_env(&Env::from_pairs(env.clone()), &[ServiceKind::Orchestrator]).unwrap();
    assert_eq!(config.mesh.database_idle_in_transaction, Duration::from_millis(LEASE_MS), "capped by the lease");
    env.extend(vars(&[("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", "1200".into())]));
    let stamping = omninode::Config::from_env(&Env::from_pairs(env), &[ServiceKind::Stamping]).unwrap();
    assert_eq!(stamping.mesh.database_idle_in_transaction, Duration::from_millis(1200), "as configured");

    let stalled = omninode_runtime::db::connect_and_migrate(&config.mesh).await.unwrap();
    let other = Database::connect(database.url()).await.unwrap();
    other.execute_unprepared("CREATE TABLE held (id INTEGER PRIMARY KEY, note TEXT NOT NULL)").await.unwrap();
    other.execute_unprepared("INSERT INTO held VALUES (1, 'before')").await.unwrap();

    let txn = stalled.begin().await.unwrap();
    txn.execute_unprepared("UPDATE held SET note = 'stalled' WHERE id = 1").await.unwrap();
    txn.execute_unprepared("INSERT INTO held VALUES (2, 'stalled')").await.unwrap();
    let stalled_at = Instant::now();
    let take = "SELECT id FROM held WHERE id = 1 FOR UPDATE NOWAIT";
    assert!(other.execute_unprepared(take).await.is_err(), "the stalled transaction holds the row at first");
    wait_until("the stalled session's lock is released", Duration::from_secs(10), || async {
        other.execute_unprepared(take).await.ok()
    })
    .await;
    let released = stalled_at.elapsed();
    println!("a stalled transaction's lock released after {} ms (lease {LEASE_MS} ms)", released.as_millis());
    assert!(released < Duration::from_secs(5), "released after {released:?}: the default, not the lease");

    assert!(txn.commit().await.is_err(), "a commit after the session ended must fail");
    assert_eq!(scalar(&other, "SELECT COUNT(*) FROM held WHERE note = 'stalled'").await, 0, "nothing of it landed");
    let rows = wait_until("the stalled pool serves again", Duration::from_secs(10), || async {
        let row =
            stalled.query_one_raw(Statement::from_string(stalled.get_database_backend(), "SELECT COUNT(*) FROM held"));
        row.await.ok().flatten().and_then(|row| row.try_get_by_index::<i64>(0).ok())
    })
    .await;
    assert_eq!(rows, 1);
}

/// SIGTERM to an instance under load: its workflows are handed over at once
/// (the lease is a minute; they finish within seconds on the other instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_workflows_over_without_waiting_for_the_lease() {
    let database = TestDatabase::new(Backend::Postgres).await;
    let stamping = TestMesh::start_services(database.clone(), &[ServiceKind::Stamping], &[]).await;
    let mut shared = database.env();
    shared.extend(vars(&[
        ("ORCHESTRATOR_LEASE_MS", "60000".into()),
        ("ORCHESTRATOR_CONCURRENCY", "4".into()),
        ("ORCHESTRATOR_STEP_MAX_ATTEMPTS", "100".into()),
        ("ORCHESTRATOR_RETRY_BASE_MS", "100".into()),
        ("ORCHESTRATOR_RETRY_MAX_MS", "200".into()),
    ]));
    // A cannot reach stamping: whatever it claims stays in flight until handed over.
    let mut a_vars = shared.clone();
    a_vars.push(("STAMPING_SERVICE_URL".into(), format!("http://127.0.0.1:{}", free_port())));
    a_vars.push(("OMNINODE_INSTANCE_ID".into(), "orch-a".into()));
    let mut a = NodeProcess::spawn(NODE, "orchestrator", &a_vars);
    let mut client_a = orchestrator_client(a.url()).await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..4 {
            let response = client_a.start_workflow(start_request("handover", i)).await.unwrap();
            ids.push(response.into_inner().workflow.unwrap().workflow_id);
        }
        ids
    };
    let db = Database::connect(database.postgres.as_ref().unwrap().url.as_str()).await.unwrap();
    let held_by_a =
        "SELECT COUNT(*) FROM workflow_executions WHERE lease_owner LIKE 'orch-a/%' AND current_state = 'PROCESSING'";
    wait_until("A runs its four workflows", Duration::from_secs(10), || async {
        (scalar(&db, held_by_a).await == 4).then_some(())
    })
    .await;

    // B joins with a working stamping service; then A is asked to stop.
    let mut b_vars = shared.clone();
    b_vars.push(("STAMPING_SERVICE_URL".into(), stamping.stamping_url()));
    b_vars.push(("OMNINODE_INSTANCE_ID".into(), "orch-b".into()));
    let b = NodeProcess::spawn(NODE, "orchestrator", &b_vars);
    orchestrator_client(b.url()).await;
    assert_eq!(count_in(&db, "handover", "COMPLETED").await, 0, "B cannot take leased workflows");
    let stopped_at = Instant::now();
    a.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(15), a.child.wait()).await.expect("A stops").unwrap();
    assert!(status.success(), "A exits cleanly: {status:?}");
    wait_until("B completes A's workflows", Duration::from_secs(20), || async {
        (count_in(&db, "handover", "COMPLETED").await == ids.len() as i64).then_some(())
    })
    .await;
    let handover = stopped_at.elapsed();
    println!(
        "handover: {} workflows completed by B {} ms after SIGTERM to A (lease 60000 ms)",
        ids.len(),
        handover.as_millis()
    );
    assert!(handover < Duration::from_secs(20));
    let owners = scalar(
        &db,
        "SELECT COUNT(*) FROM workflow_executions w WHERE namespace = 'handover' \
         AND CAST(steps AS TEXT) LIKE '%orch-b/%'",
    )
    .await;
    assert_eq!(owners, ids.len() as i64, "B ran the rest of every workflow");
    drop(b);
    stamping.shutdown().await;
}

on_both_backends!(the_queue_bound_holds_across_instances);

/// Two instances, one worker each, stamping unreachable (nothing finishes):
/// the third to fifth workflows wait unclaimed, and the sixth start is refused
/// on either instance with nothing stored.
async fn the_queue_bound_holds_across_instances(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let settings = [
        ("STAMPING_SERVICE_URL", dead.as_str()),
        ("ORCHESTRATOR_CONCURRENCY", "1"),
        ("MAX_WORKFLOW_QUEUE_SIZE", "3"),
        // Long enough that no claim lapses however slow a loaded machine is.
        ("ORCHESTRATOR_LEASE_MS", "60000"),
        ("ORCHESTRATOR_STEP_MAX_ATTEMPTS", "100"),
        ("ORCHESTRATOR_RETRY_BASE_MS", "100"),
    ];
    let a = TestMesh::start_services(database.clone(), &[ServiceKind::Orchestrator], &settings).await;
    let b = TestMesh::start_services(database.clone(), &[ServiceKind::Orchestrator], &settings).await;
    let mut clients: [OrchestratorServiceClient<Channel>; 2] = [a.orchestrator().await, b.orchestrator().await];
    // Start until refused: two run (one per instance), three wait, the next is refused. (On a loaded
    // machine a worker may give a workflow up — a store timeout — and claim a waiting one, so the
    // refusal is awaited rather than expected at exactly the sixth start.)
    let mut started = 0;
    let refused = loop {
        assert!(started < 20, "the queue never filled");
        match clients[started % 2].start_workflow(start_request("bounded", started)).await {
            Ok(_) => started += 1,
            Err(full) => break full,
        }
    };
    assert_eq!((refused.code(), reason(&refused)), (Code::ResourceExhausted, "QUEUE_FULL"), "{refused:?}");
    assert!(started >= 5, "at least two claimed and three waiting before the first refusal ({started})");
    let db = &a.mesh().database;
    let waiting = "SELECT COUNT(*) FROM workflow_executions WHERE lease_owner IS NULL AND current_state = 'PENDING'";
    assert_eq!(scalar(db, waiting).await, 3, "three wait unclaimed when the queue is full");
    let other = clients[(started + 1) % 2].start_workflow(start_request("bounded", 99)).await.unwrap_err();
    assert_eq!((other.code(), reason(&other)), (Code::ResourceExhausted, "QUEUE_FULL"), "either instance refuses");
    assert_eq!(
        scalar(db, "SELECT COUNT(*) FROM workflow_executions").await,
        started as i64,
        "a refused start stores nothing"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// A claim that waits for the database while starts arrive and take the free
/// workers: the workflows it claimed find no worker, and are handed back at
/// once (no owner, no lease: any instance with a free worker takes them), not
/// held unstarted with their leases running out under a live instance, which
/// another instance would take over and run a second time. In process on
/// SQLite, whose writer a test can hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_claimed_while_starts_take_the_workers_are_handed_back_at_once() {
    use omninode_integration_tests::http_double::{HttpDouble, Reply};
    use omninode_proto::orchestrator::v1::step_definition::Kind;
    use omninode_runtime::{
        config::DatabaseTarget,
        db::{begin_write, connect},
    };
    const STEP: Duration = Duration::from_secs(3);
    let double = HttpDouble::start(|_, _| Reply::json(200, serde_json::json!({"ok": true})).after(STEP)).await;
    let database = TestDatabase::new(Backend::Sqlite).await;
    let settings = [("ORCHESTRATOR_CONCURRENCY", "2"), ("ORCHESTRATOR_LEASE_MS", "1000")];
    let mesh = TestMesh::start_services(database.clone(), &[ServiceKind::Orchestrator], &settings).await;
    let mut client = mesh.orchestrator().await;
    let call = |path: &str| pb::StepDefinition {
        name: "call".into(),
        kind: Some(Kind::Http(pb::HttpStep {
            method: "POST".into(),
            url: format!("{}/{path}/${{workflow.id}}", double.url()),
            ..Default::default()
        })),
        ..Default::default()
    };
    let timer = pb::StepDefinition {
        name: "wait".into(),
        kind: Some(Kind::Timer(pb::TimerStep { wait: Some(pb::timer_step::Wait::DurationMs(300)) })),
        ..Default::default()
    };
    for (name, steps) in [("woken", vec![timer, call("woken")]), ("started", vec![call("started")])] {
        let definition = pb::WorkflowDefinition { name: name.into(), steps, ..Default::default() };
        let request = pb::CreateWorkflowDefinitionRequest { definition: Some(definition) };
        client.create_workflow_definition(request).await.unwrap();
    }
    let start = |definition: &'static str| {
        let mut client = client.clone();
        async move {
            let request = pb::StartWorkflowRequest {
                namespace: "claims".into(),
                input: Some(pb::WorkflowInput { content: "x".into(), ..Default::default() }),
                definition: definition.into(),
                ..Default::default()
            };
            client.start_workflow(request).await.unwrap().into_inner().workflow.unwrap().workflow_id
        }
    };
    let woken = [start("woken").await, start("woken").await];
    for id in &woken {
        workflow_reaches(&client, id, pb::WorkflowState::Waiting, Duration::from_secs(10)).await;
    }

    // The test holds the database's writer. The claimer's next look (it looks
    // every quarter lease, with both workers free) waits behind it, and
    // searches once it gets through, by which time both timers are due.
    let file = database.data_dir.path().join("omninode.db");
    let db = connect(&DatabaseTarget::Sqlite(file), 2).await.unwrap();
    let writer = begin_write(&db).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Two starts arrive meanwhile; their inserts wait behind the writer too.
    let starts = [tokio::spawn(start("started")), tokio::spawn(start("started"))];
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(starts.iter().all(|s| !s.is_finished()), "the starts wait for the database");
    writer.rollback().await.unwrap();
    let opened = Instant::now();
    let mut started = Vec::new();
    for start in starts {
        started.push(start.await.unwrap());
    }

    // The starts took the workers: theirs are the first calls.
    let first_two = wait_until("two workflows call out", Duration::from_secs(10), || async {
        let seen = double.requests();
        (seen.len() >= 2).then(|| seen[..2].iter().map(|r| r.uri.clone()).collect::<Vec<_>>())
    })
    .await;
    assert!(first_two.iter().all(|uri| uri.starts_with("/started/")), "the starts took the workers: {first_two:?}");
    // Two leases on, in the middle of those calls: every lease held is live,
    // and only the running workflows hold one.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(opened.elapsed())).await;
    let leases = rows(&db, "SELECT id, lease_expires_at FROM workflow_executions WHERE lease_owner IS NOT NULL").await;
    let now = chrono::Utc::now();
    let mut held = Vec::new();
    for row in &leases {
        let id: String = row.try_get("", "id").unwrap();
        let expires: chrono::DateTime<chrono::Utc> = row.try_get("", "lease_expires_at").unwrap();
        assert!(expires > now, "the lease on {id} ran out at {expires} under a live instance (now {now})");
        held.push(id);
    }
    held.sort();
    let mut running = started.clone();
    running.sort();
    assert_eq!(held, running, "the claimed workflows that found no worker were handed back");
    for id in &woken {
        let workflow = client.clone().get_workflow(pb::GetWorkflowRequest { workflow_id: id.clone() }).await;
        let state = workflow.unwrap().into_inner().workflow.unwrap().state();
        assert_eq!(state, pb::WorkflowState::Waiting, "{id} waits for a worker, runnable by any instance");
    }

    for id in woken.iter().chain(&started) {
        workflow_reaches(&client, id, pb::WorkflowState::Completed, Duration::from_secs(20)).await;
    }
    let mut calls: Vec<String> = double.requests().into_iter().map(|r| r.uri).collect();
    calls.sort();
    let mut expected: Vec<String> = woken
        .iter()
        .map(|id| format!("/woken/{id}"))
        .chain(started.iter().map(|id| format!("/started/{id}")))
        .collect();
    expected.sort();
    assert_eq!(calls, expected, "each workflow called out once");
    // Each claim bumps the fencing token: the start's, the claim that found no
    // worker (so the race above did happen), and the one that ran the call.
    for id in &woken {
        let sql = format!("SELECT lease_attempt FROM workflow_executions WHERE id = '{id}'");
        assert_eq!(scalar(&db, &sql).await, 3, "{id} was claimed three times");
    }
    drop(db);
    mesh.shutdown().await;
}

/// PostgreSQL keeps a finished workflow's old versions in its indexes until
/// a vacuum. The searches for runnable workflows (the backlog count, a
/// claim) read them through plain index scans, which mark the dead entries
/// they meet: the next search skips them instead of reading them all again
/// (as one bitmap scan over both partial indexes did, on every call). And
/// split by state, the searches still find exactly the runnable workflows,
/// in the claim's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_for_runnable_workflows_read_finished_ones_once_not_on_every_claim() {
    use omninode_orchestrator::store::WorkflowStore;
    use omninode_runtime::{Env, events::Outbox};
    const FINISHED: i64 = 3000;
    let database = TestDatabase::new(Backend::Postgres).await;
    let mut env = database.env();
    // One connection: the statistics read below are the searches' own.
    env.extend(vars(&[("DATABASE_MAX_CONNECTIONS", "1".into())]));
    let config = omninode::Config::from_env(&Env::from_pairs(env), &[ServiceKind::Orchestrator]).unwrap();
    let db = omninode_runtime::db::connect_and_migrate(&config.mesh).await.unwrap();
    let insert = |ids: &str, state: &str, owner: &str, lease: &str, wake: &str| {
        format!(
            "INSERT INTO workflow_executions (id, namespace, workflow_type, current_state, input_hash, input, steps, \
             transitions, created_at, updated_at, lease_owner, lease_expires_at, lease_attempt, wake_at) \
             SELECT id, 'ns', 'metadata_stamping', '{state}', 'h', '{{}}', '[]', '[]', now(), now(), {owner}, {lease}, 1, \
             {wake} FROM ({ids}) AS ids (id)"
        )
    };
    let finished = format!("SELECT 'f-' || lpad(n::text, 6, '0') FROM generate_series(1, {FINISHED}) n");
    for sql in [
        insert(&finished, "PROCESSING", "'gone'", "now() + interval '1 minute'", "NULL"),
        "ANALYZE workflow_executions".to_owned(),
        // Each leaves its running version's index entries behind, dead.
        "UPDATE workflow_executions SET current_state = 'COMPLETED', lease_owner = NULL, lease_expires_at = NULL"
            .to_owned(),
        insert("VALUES ('r-p1'), ('r-p2')", "PENDING", "NULL", "NULL", "NULL"),
        insert("VALUES ('r-e1')", "PROCESSING", "'gone'", "now() - interval '1 second'", "NULL"),
        insert("VALUES ('r-w1')", "WAITING", "NULL", "NULL", "now() - interval '1 second'"),
        insert("VALUES ('n-l1')", "PROCESSING", "'alive'", "now() + interval '1 minute'", "NULL"),
        insert("VALUES ('n-w2')", "WAITING", "NULL", "NULL", "now() + interval '1 minute'"),
        "ANALYZE workflow_executions".to_owned(),
    ] {
        db.execute_unprepared(&sql).await.unwrap();
    }
    let store = WorkflowStore::new(db.clone(), Outbox::new("orchestrator", "test", "omninode", Default::default()));
    // Index entries the table's indexes have handed out so far (flushed first).
    let entries_read = async || {
        db.execute_unprepared("SELECT pg_stat_force_next_flush()").await.unwrap();
        let sql = "SELECT COALESCE(SUM(idx_tup_read), 0)::BIGINT FROM pg_stat_user_indexes \
                   WHERE relname = 'workflow_executions'";
        scalar(&db, sql).await
    };

    let before = entries_read().await;
    assert_eq!(store.backlog().await.unwrap(), 4, "two PENDING, one expired lease, one WAITING and due");
    let first = entries_read().await - before;
    assert_eq!(store.backlog().await.unwrap(), 4);
    let second = entries_read().await - before - first;
    println!("index entries read: {first} by the first search, {second} by the second");
    assert!(first >= FINISHED, "the first search meets the finished workflows' dead entries: {first}");
    assert!(second < FINISHED / 4, "the second skips them: {second} entries read");

    // The claim: expired leases first, then the never claimed, by id.
    let lease = Duration::from_secs(60);
    let claimed = store.claim("me", 3, lease).await.unwrap();
    let taken: Vec<(&str, bool)> = claimed.iter().map(|c| (c.id.as_str(), c.taken_over)).collect();
    assert_eq!(taken, [("r-e1", true), ("r-p1", false), ("r-p2", false)]);
    assert!(claimed.iter().all(|c| c.fence.attempt == 2), "{claimed:?}");
    let claimed = store.claim("me", 3, lease).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["r-w1"]);
    assert!(store.claim("other", 3, lease).await.unwrap().is_empty(), "nothing runnable is left");
    assert_eq!(store.backlog().await.unwrap(), 0);

    // A claim's own searches, over another lot of finished workflows.
    let more = format!("SELECT 'g-' || lpad(n::text, 6, '0') FROM generate_series(1, {FINISHED}) n");
    for sql in [
        insert(&more, "PROCESSING", "'gone'", "now() + interval '1 minute'", "NULL"),
        "UPDATE workflow_executions SET current_state = 'COMPLETED', lease_owner = NULL, lease_expires_at = NULL \
         WHERE id LIKE 'g-%'"
            .to_owned(),
    ] {
        db.execute_unprepared(&sql).await.unwrap();
    }
    let before = entries_read().await;
    assert!(store.claim("other", 3, lease).await.unwrap().is_empty());
    let first = entries_read().await - before;
    assert!(store.claim("other", 3, lease).await.unwrap().is_empty());
    let second = entries_read().await - before - first;
    println!("index entries read: {first} by the first claim, {second} by the second");
    assert!(first >= FINISHED, "the first claim meets the new dead entries: {first}");
    assert!(second < FINISHED / 4, "the second skips them: {second} entries read");
}
