//! The orchestrator end to end: stamping and orchestrator as real servers on
//! ephemeral ports, on SQLite and on PostgreSQL.

use std::time::Duration;

use futures::StreamExt;
use omninode_integration_tests::{
    Backend, ServiceKind, TestDatabase, TestMesh, base_env, free_port, on_both_backends, orchestrator_client,
    wait_until,
};
use omninode_proto::{
    orchestrator::v1::{self as pb, orchestrator_service_client::OrchestratorServiceClient},
    stamping::v1::{StampFormat, ValidateRequest},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, transport::Channel};

const BOTH: &[ServiceKind] = &[ServiceKind::Stamping, ServiceKind::Orchestrator];

async fn orchestrator(mesh: &TestMesh) -> OrchestratorServiceClient<Channel> {
    mesh.orchestrator().await
}

/// A mesh whose orchestrator calls a stamping address where nothing listens.
async fn mesh_with_stamping_down(backend: Backend, extra: &[(&str, &str)]) -> TestMesh {
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut vars = vec![("STAMPING_SERVICE_URL", url.as_str())];
    vars.extend_from_slice(extra);
    TestMesh::start_services(TestDatabase::new(backend).await, &[ServiceKind::Orchestrator], &vars).await
}

fn input(content: &str) -> pb::WorkflowInput {
    pb::WorkflowInput { content: content.into(), file_path: "docs/guide.md".into(), ..Default::default() }
}

fn run_request(content: &str) -> pb::RunWorkflowRequest {
    pb::RunWorkflowRequest { namespace: "flows".into(), input: Some(input(content)), ..Default::default() }
}

fn start_request(content: &str, key: &str) -> pb::StartWorkflowRequest {
    pb::StartWorkflowRequest {
        namespace: "flows".into(),
        input: Some(input(content)),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

fn state(workflow: &pb::Workflow) -> pb::WorkflowState {
    pb::WorkflowState::try_from(workflow.state).unwrap()
}

fn step<'a>(workflow: &'a pb::Workflow, name: &str) -> &'a pb::WorkflowStep {
    workflow.steps.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no step {name}: {:?}", workflow.steps))
}

fn outcome(step: &pb::WorkflowStep) -> pb::StepOutcome {
    pb::StepOutcome::try_from(step.outcome).unwrap()
}

/// Polls GetWorkflow until `done` holds (bounded: 10 s).
async fn wait_for(
    client: &mut OrchestratorServiceClient<Channel>,
    id: &str,
    done: impl Fn(&pb::Workflow) -> bool,
) -> pb::Workflow {
    wait_until(&format!("workflow {id} in the expected state"), Duration::from_secs(10), || {
        let mut client = client.clone();
        let request = pb::GetWorkflowRequest { workflow_id: id.into() };
        let done = &done;
        async move {
            let workflow = client.get_workflow(request).await.unwrap().into_inner().workflow.unwrap();
            done(&workflow).then_some(workflow)
        }
    })
    .await
}

/// The first page of ListWorkflows in the tests' namespace, `flows`.
async fn flows(client: &mut OrchestratorServiceClient<Channel>) -> pb::ListWorkflowsResponse {
    let request = pb::ListWorkflowsRequest { namespace: "flows".into(), ..Default::default() };
    client.list_workflows(request).await.unwrap().into_inner()
}

on_both_backends!(
    run_workflow_completes_and_records_every_step,
    invalid_input_fails_from_pending_and_bad_requests_are_refused,
    stamping_down_is_retried_then_fails_with_the_reason,
    cancel_interrupts_a_running_workflow,
    idempotent_start_returns_the_same_workflow,
    racing_runs_of_one_key_answer_one_workflow_and_the_others_write_nothing,
    full_queue_is_resource_exhausted_and_writes_nothing,
    watch_streams_states_until_terminal,
    list_filters_by_state_and_pages,
    intelligence_step_succeeds_or_degrades,
    killed_process_workflows_resume_on_restart,
);

async fn run_workflow_completes_and_records_every_step(backend: Backend) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, BOTH, &[]).await;
    let mut client = orchestrator(&mesh).await;
    let response = client.run_workflow(run_request("# Guide\n\nStep one.\n")).await.unwrap().into_inner();
    assert!(response.created);
    let workflow = response.workflow.unwrap();
    assert_eq!(state(&workflow), pb::WorkflowState::Completed, "{}", workflow.error_message);
    let names: Vec<&str> = workflow.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["validate_input", "hash_generation", "stamp_creation", "onextree_intelligence"]);
    for name in ["validate_input", "hash_generation", "stamp_creation"] {
        assert_eq!(outcome(step(&workflow, name)), pb::StepOutcome::Succeeded, "{name}");
        assert_eq!(step(&workflow, name).attempts, 1);
    }
    let intelligence = step(&workflow, "onextree_intelligence");
    assert_eq!(outcome(intelligence), pb::StepOutcome::Skipped);
    assert!(intelligence.message.contains("enable_intelligence"));
    assert!(workflow.started_at.is_some() && workflow.completed_at.is_some());

    // The stamp really exists in stamping, and the stamped content validates.
    let mut stamping = mesh.stamping().await;
    let verdict = stamping
        .validate(ValidateRequest {
            content: workflow.stamped_content.clone(),
            expected_hash: workflow.file_hash.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verdict.valid, "{}", verdict.reason);
    assert_eq!(verdict.stamps[0].stamp_id, workflow.stamp_id);

    // Stored exactly as returned.
    let stored = client
        .get_workflow(pb::GetWorkflowRequest { workflow_id: workflow.workflow_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .workflow
        .unwrap();
    assert_eq!(stored, workflow);
    mesh.shutdown().await;
}

async fn invalid_input_fails_from_pending_and_bad_requests_are_refused(backend: Backend) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, BOTH, &[]).await;
    let mut client = orchestrator(&mesh).await;
    let workflow = client.run_workflow(run_request(" \n\n ")).await.unwrap().into_inner().workflow.unwrap();
    assert_eq!(state(&workflow), pb::WorkflowState::Failed);
    assert!(workflow.error_message.starts_with("invalid input: content is empty"), "{}", workflow.error_message);
    assert!(workflow.started_at.is_none(), "PENDING → FAILED never entered PROCESSING");
    assert_eq!(workflow.steps.len(), 1);
    assert_eq!(outcome(step(&workflow, "validate_input")), pb::StepOutcome::Failed);

    let mut bad_path = run_request("text");
    bad_path.input.as_mut().unwrap().file_path = "a\nb".into();
    let workflow = client.run_workflow(bad_path).await.unwrap().into_inner().workflow.unwrap();
    assert_eq!(state(&workflow), pb::WorkflowState::Failed);
    assert!(workflow.error_message.contains("file_path"), "{}", workflow.error_message);

    let refusals = [
        (pb::RunWorkflowRequest { namespace: "Bad".into(), ..run_request("x") }, "namespace"),
        (pb::RunWorkflowRequest { input: None, ..run_request("x") }, "input is required"),
    ];
    for (request, says) in refusals {
        let err = client.run_workflow(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(says), "{}", err.message());
    }
    let missing = client
        .get_workflow(pb::GetWorkflowRequest { workflow_id: uuid::Uuid::now_v7().to_string() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let malformed = client.get_workflow(pb::GetWorkflowRequest { workflow_id: "nope".into() }).await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    mesh.shutdown().await;
}

async fn stamping_down_is_retried_then_fails_with_the_reason(backend: Backend) {
    let mesh = mesh_with_stamping_down(
        backend,
        &[
            ("ORCHESTRATOR_STEP_MAX_ATTEMPTS", "3"),
            ("ORCHESTRATOR_RETRY_BASE_MS", "10"),
            ("ORCHESTRATOR_RETRY_MAX_MS", "50"),
        ],
    )
    .await;
    let mut client = orchestrator(&mesh).await;
    let workflow = client.run_workflow(run_request("content")).await.unwrap().into_inner().workflow.unwrap();
    assert_eq!(state(&workflow), pb::WorkflowState::Failed);
    assert!(
        workflow.error_message.starts_with("hash_generation failed after 3 attempt(s)")
            && workflow.error_message.contains("Unavailable"),
        "{}",
        workflow.error_message
    );
    let hash = step(&workflow, "hash_generation");
    assert_eq!((outcome(hash), hash.attempts), (pb::StepOutcome::Failed, 3));
    assert!(workflow.started_at.is_some(), "it failed while PROCESSING");
    mesh.shutdown().await;
}

async fn cancel_interrupts_a_running_workflow(backend: Backend) {
    let mesh = mesh_with_stamping_down(
        backend,
        &[("ORCHESTRATOR_STEP_MAX_ATTEMPTS", "100"), ("ORCHESTRATOR_RETRY_BASE_MS", "200")],
    )
    .await;
    let mut client = orchestrator(&mesh).await;
    let started = client.start_workflow(start_request("to cancel", "")).await.unwrap().into_inner().workflow.unwrap();
    let id = started.workflow_id.clone();
    wait_for(&mut client, &id, |w| state(w) == pb::WorkflowState::Processing).await;

    let cancelled = client
        .cancel_workflow(pb::CancelWorkflowRequest { workflow_id: id.clone(), reason: "user asked".into() })
        .await
        .unwrap()
        .into_inner()
        .workflow
        .unwrap();
    assert_eq!(state(&cancelled), pb::WorkflowState::Cancelled);
    assert_eq!(cancelled.error_message, "cancelled: user asked");

    let again =
        client.cancel_workflow(pb::CancelWorkflowRequest { workflow_id: id.clone(), reason: String::new() }).await;
    assert_eq!(again.unwrap_err().code(), Code::FailedPrecondition);
    // The interrupted worker does not overwrite the cancel.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = wait_for(&mut client, &id, |_| true).await;
    assert_eq!(state(&stored), pb::WorkflowState::Cancelled);
    assert_eq!(stored, cancelled);
    mesh.shutdown().await;
}

async fn idempotent_start_returns_the_same_workflow(backend: Backend) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, BOTH, &[]).await;
    let client = orchestrator(&mesh).await;
    let starts = (0..8).map(|_| {
        let mut client = client.clone();
        async move { client.start_workflow(start_request("same", "key-1")).await.unwrap().into_inner() }
    });
    let responses = futures::future::join_all(starts).await;
    assert_eq!(responses.iter().filter(|r| r.created).count(), 1, "exactly one start creates");
    let id = responses[0].workflow.as_ref().unwrap().workflow_id.clone();
    assert!(responses.iter().all(|r| r.workflow.as_ref().unwrap().workflow_id == id));

    let mut client = client;
    let conflict = client.start_workflow(start_request("different", "key-1")).await.unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);
    assert!(conflict.message().contains("key-1"), "{}", conflict.message());
    wait_for(&mut client, &id, |w| state(w) == pb::WorkflowState::Completed).await;
    let page = flows(&mut client).await;
    assert_eq!(page.workflows.len(), 1);
    mesh.shutdown().await;
}

/// Runs of one idempotency key at once: each run's worker starts beside its
/// insert, and those whose insert finds the key taken stop without a write.
async fn racing_runs_of_one_key_answer_one_workflow_and_the_others_write_nothing(backend: Backend) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, BOTH, &[]).await;
    let client = orchestrator(&mesh).await;
    let runs = (0..8).map(|_| {
        let mut client = client.clone();
        let request = pb::RunWorkflowRequest { idempotency_key: "run-key".into(), ..run_request("raced") };
        async move { client.run_workflow(request).await.unwrap().into_inner() }
    });
    let responses = futures::future::join_all(runs).await;
    assert_eq!(responses.iter().filter(|r| r.created).count(), 1, "exactly one run creates");
    let first = responses[0].workflow.as_ref().unwrap();
    for response in &responses {
        let workflow = response.workflow.as_ref().unwrap();
        assert_eq!(workflow.workflow_id, first.workflow_id);
        assert_eq!(state(workflow), pb::WorkflowState::Completed, "{}", workflow.error_message);
    }
    let mut client = client;
    let page = flows(&mut client).await;
    assert_eq!(page.workflows.len(), 1);
    assert_eq!(page.workflows[0], *first, "stored as answered, written by its own worker only");
    assert_eq!(fenced_writes(&mesh).await, 0.0, "no worker wrote to a workflow it did not store");
    mesh.shutdown().await;
}

/// Writes the mesh's workers were refused for a stale fencing token
/// (`workflow_fenced_writes_total`).
async fn fenced_writes(mesh: &TestMesh) -> f64 {
    let (_, metrics) = mesh.admin_get("/metrics").await;
    metrics
        .lines()
        .filter(|line| line.starts_with("workflow_fenced_writes_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn full_queue_is_resource_exhausted_and_writes_nothing(backend: Backend) {
    let mesh = mesh_with_stamping_down(
        backend,
        &[
            ("ORCHESTRATOR_CONCURRENCY", "1"),
            ("MAX_WORKFLOW_QUEUE_SIZE", "2"),
            ("ORCHESTRATOR_STEP_MAX_ATTEMPTS", "100"),
            ("ORCHESTRATOR_RETRY_BASE_MS", "200"),
        ],
    )
    .await;
    let mut client = orchestrator(&mesh).await;
    let first = client.start_workflow(start_request("one", "")).await.unwrap().into_inner().workflow.unwrap();
    // The only worker is now busy retrying; the queue holds two more.
    wait_for(&mut client, &first.workflow_id, |w| state(w) == pb::WorkflowState::Processing).await;
    client.start_workflow(start_request("two", "")).await.unwrap();
    client.start_workflow(start_request("three", "")).await.unwrap();
    let full = client.start_workflow(start_request("four", "")).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted);
    assert!(full.message().contains("MAX_WORKFLOW_QUEUE_SIZE"), "{}", full.message());
    let page = flows(&mut client).await;
    assert_eq!(page.workflows.len(), 3, "the refused start wrote nothing");
    // The backlog gauge is set on admission and refreshed every second from the database.
    wait_until("the queue gauge shows the two waiting", Duration::from_secs(15), || async {
        mesh.admin_get("/metrics").await.1.lines().any(|l| l == "workflow_queue_size 2").then_some(())
    })
    .await;
    mesh.shutdown().await;
}

async fn watch_streams_states_until_terminal(backend: Backend) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, BOTH, &[]).await;
    let mut client = orchestrator(&mesh).await;
    let started = client.start_workflow(start_request("watched", "")).await.unwrap().into_inner().workflow.unwrap();
    let mut stream = client
        .watch_workflow(pb::WatchWorkflowRequest { workflow_id: started.workflow_id.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut states = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("stream advances")
    {
        states.push(state(&item.unwrap().workflow.unwrap()));
    }
    assert_eq!(states.last(), Some(&pb::WorkflowState::Completed), "{states:?}");
    assert!(states.windows(2).all(|w| (w[0] as i32) <= (w[1] as i32)), "states never go back: {states:?}");

    let unknown =
        client.watch_workflow(pb::WatchWorkflowRequest { workflow_id: uuid::Uuid::now_v7().to_string() }).await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);
    let (_, metrics) = mesh.admin_get("/metrics").await;
    assert!(metrics.contains(r#"workflow_orchestration_total{state="COMPLETED"} 1"#), "{metrics}");
    assert!(metrics.contains("workflow_orchestration_duration_ms_bucket"), "{metrics}");
    mesh.shutdown().await;
}

async fn list_filters_by_state_and_pages(backend: Backend) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, BOTH, &[]).await;
    let mut client = orchestrator(&mesh).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let content = if i == 2 { "   ".to_owned() } else { format!("doc {i}") };
        ids.push(client.run_workflow(run_request(&content)).await.unwrap().into_inner().workflow.unwrap().workflow_id);
    }
    let list = |state: pb::WorkflowState, page_size: u32, page_token: String| pb::ListWorkflowsRequest {
        namespace: "flows".into(),
        state: state as i32,
        page_size,
        page_token,
    };
    let failed = client.list_workflows(list(pb::WorkflowState::Failed, 0, String::new())).await.unwrap().into_inner();
    assert_eq!(failed.workflows.iter().map(|w| w.workflow_id.clone()).collect::<Vec<_>>(), [ids[2].clone()]);

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client.list_workflows(list(pb::WorkflowState::Unspecified, 2, token)).await.unwrap().into_inner();
        assert!(page.workflows.len() <= 2);
        seen.extend(page.workflows.into_iter().map(|w| w.workflow_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");
    let err = client.list_workflows(list(pb::WorkflowState::Unspecified, 2, "forged".into())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    mesh.shutdown().await;
}

/// A one-route HTTP test double for OnexTree: answers every request with
/// `status` and `body`, and counts requests.
async fn onextree_double(status: u16, body: &'static str) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut read = 0;
                // Read the head, then the body by Content-Length.
                loop {
                    let n = socket.read(&mut buf[read..]).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    read += n;
                    let text = String::from_utf8_lossy(&buf[..read]).to_string();
                    if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        assert!(head.starts_with("POST /api/v1/intelligence/analyze "), "{head}");
                        if rest.len() >= length {
                            break;
                        }
                    }
                }
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

async fn intelligence_step_succeeds_or_degrades(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let (good, _) = onextree_double(200, r#"{"patterns":["guide"],"score":0.9}"#).await;
    let (bad, bad_hits) = onextree_double(500, r#"{"error":"model offline"}"#).await;
    for (url, expected) in [(good, pb::StepOutcome::Succeeded), (bad, pb::StepOutcome::Degraded)] {
        let vars = [
            ("ONEXTREE_SERVICE_URL", url.as_str()),
            ("ORCHESTRATOR_STEP_MAX_ATTEMPTS", "2"),
            ("ORCHESTRATOR_RETRY_BASE_MS", "10"),
        ];
        let mesh = TestMesh::start_services(database.clone(), BOTH, &vars).await;
        let mut client = orchestrator(&mesh).await;
        let mut request = run_request(&format!("analysed by {url}"));
        request.input.as_mut().unwrap().enable_intelligence = true;
        let workflow = client.run_workflow(request).await.unwrap().into_inner().workflow.unwrap();
        assert_eq!(state(&workflow), pb::WorkflowState::Completed, "a failing OnexTree never fails the workflow");
        let step = step(&workflow, "onextree_intelligence");
        assert_eq!(outcome(step), expected, "{}", step.message);
        match expected {
            pb::StepOutcome::Succeeded => {
                let data: serde_json::Value = serde_json::from_str(&workflow.intelligence_data).unwrap();
                assert_eq!(data["score"], 0.9);
            }
            _ => {
                assert!(step.message.contains("500") && step.message.contains("model offline"), "{}", step.message);
                assert_eq!(step.attempts, 2, "a 5xx is retried");
                assert!(workflow.intelligence_data.is_empty());
            }
        }
        mesh.shutdown().await;
    }
    assert_eq!(bad_hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// Kills (SIGKILL) an orchestrator process mid-workflow; a new process on
/// the same database resumes the workflow to COMPLETED.
async fn killed_process_workflows_resume_on_restart(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let (port, admin) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_omninode-node"))
        .args(["serve", "orchestrator"])
        .envs(base_env())
        .envs(database.env())
        .env("ORCHESTRATOR_PORT", port.to_string())
        .env("METRICS_PORT", admin.to_string())
        // Nothing listens there: the workflow sits in hash_generation retries.
        .env("STAMPING_SERVICE_URL", format!("http://127.0.0.1:{}", free_port()))
        .env("ORCHESTRATOR_STEP_MAX_ATTEMPTS", "100")
        .env("ORCHESTRATOR_RETRY_BASE_MS", "100")
        .kill_on_drop(true)
        .spawn()
        .expect("the test node starts");
    let mut client = orchestrator_client(format!("http://127.0.0.1:{port}")).await;
    let mut request = start_request("survives a crash", "crash-1");
    request.input.as_mut().unwrap().format = StampFormat::Rich as i32;
    let id = client.start_workflow(request).await.unwrap().into_inner().workflow.unwrap().workflow_id;
    wait_for(&mut client, &id, |w| state(w) == pb::WorkflowState::Processing).await;
    child.kill().await.unwrap();

    // A new process with a working stamping service picks it up.
    let mesh = TestMesh::start_services(database.clone(), BOTH, &[]).await;
    let mut client = orchestrator(&mesh).await;
    let done = wait_for(&mut client, &id, |w| state(w).eq(&pb::WorkflowState::Completed)).await;
    assert_eq!(outcome(step(&done, "resume")), pb::StepOutcome::Succeeded);
    assert_eq!(outcome(step(&done, "stamp_creation")), pb::StepOutcome::Succeeded);
    assert!(done.stamped_content.contains("<!-- ONEX_METADATA_START -->"));
    mesh.shutdown().await;
}

/// RunWorkflow's worker hashes and stamps beside the workflow's insert: with
/// the insert held back by a lock on its table, the stamp is made, and the
/// workflow completes once the insert goes through. (PostgreSQL: only there
/// can one table be locked while another is written.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_hashes_and_stamps_while_its_insert_waits() {
    use sea_orm::{ConnectionTrait, TransactionTrait};

    let database = TestDatabase::new(Backend::Postgres).await;
    let mesh = TestMesh::start_services(database.clone(), BOTH, &[]).await;
    let db = sea_orm::Database::connect(database.url()).await.unwrap();
    let lock = db.begin().await.unwrap();
    lock.execute_unprepared("LOCK TABLE workflow_executions IN SHARE ROW EXCLUSIVE MODE").await.unwrap();

    let mut client = orchestrator(&mesh).await;
    let run = tokio::spawn(async move { client.run_workflow(run_request("# Beside\n\nthe insert.\n")).await });
    let stamp_sql = "SELECT id, op_id FROM metadata_stamps WHERE namespace = 'flows'";
    let (stamp_id, op_id) = wait_until("the stamp made while the insert waits", Duration::from_secs(10), || {
        let db = &db;
        async move {
            let row = db.query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), stamp_sql)).await;
            let row = row.unwrap()?;
            Some((row.try_get_by_index::<String>(0).unwrap(), row.try_get_by_index::<Option<String>>(1).unwrap()))
        }
    })
    .await;
    let waiting = "SELECT COUNT(*) FROM pg_locks WHERE relation = 'workflow_executions'::regclass AND NOT granted";
    let blocked = db.query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), waiting)).await;
    assert!(blocked.unwrap().unwrap().try_get_by_index::<i64>(0).unwrap() >= 1, "the insert waits on the lock");
    assert!(!run.is_finished(), "nothing is answered before the workflow is stored");
    lock.commit().await.unwrap();

    let workflow = run.await.unwrap().unwrap().into_inner().workflow.unwrap();
    assert_eq!(state(&workflow), pb::WorkflowState::Completed, "{}", workflow.error_message);
    assert_eq!(workflow.stamp_id, stamp_id);
    assert_eq!(op_id.as_deref(), Some(format!("workflow:{}", workflow.workflow_id).as_str()));
    let mut client = orchestrator(&mesh).await;
    let stored = wait_for(&mut client, &workflow.workflow_id, |_| true).await;
    assert_eq!(stored, workflow);
    mesh.shutdown().await;
}

/// A caller that goes away while its workflow's insert waits leaves nothing
/// waiting: its dropped statement's connection is reset and the insert,
/// waiting on the lock, never commits; the worker, told nothing,
/// asks the store, finds no workflow and stops without a write. What is left
/// is the stamp, which the next run of the same content resolves to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_caller_leaves_during_its_insert_leaves_only_its_stamp() {
    use sea_orm::{ConnectionTrait, TransactionTrait};

    let database = TestDatabase::new(Backend::Postgres).await;
    let mesh = TestMesh::start_services(database.clone(), BOTH, &[("ORCHESTRATOR_LEASE_MS", "500")]).await;
    let db = sea_orm::Database::connect(database.url()).await.unwrap();
    let db = &db;
    let count = move |sql: &'static str| async move {
        let row = db.query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), sql)).await.unwrap();
        row.unwrap().try_get_by_index::<i64>(0).unwrap()
    };
    let lock = db.begin().await.unwrap();
    lock.execute_unprepared("LOCK TABLE workflow_executions IN SHARE ROW EXCLUSIVE MODE").await.unwrap();

    let content = "# Left\n\nbehind.\n";
    let mut client = orchestrator(&mesh).await;
    let run = tokio::spawn(async move { client.run_workflow(run_request(content)).await });
    wait_until("the stamp made while the insert waits", Duration::from_secs(10), move || async move {
        (count("SELECT COUNT(*) FROM metadata_stamps").await == 1).then_some(())
    })
    .await;
    // The caller goes away; its call, and the insert's wait, are dropped.
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_millis(200)).await;
    lock.commit().await.unwrap();

    // Several leases and claim polls later, no workflow was stored, and none waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count("SELECT COUNT(*) FROM workflow_executions").await, 0);
    assert_eq!(fenced_writes(&mesh).await, 0.0, "no worker wrote to a workflow that was not stored");

    // The caller's retry completes, with the stamp the first run made.
    let stamp_id = {
        let row = db.query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT id FROM metadata_stamps",
        ));
        row.await.unwrap().unwrap().try_get_by_index::<String>(0).unwrap()
    };
    let mut client = orchestrator(&mesh).await;
    let workflow = client.run_workflow(run_request(content)).await.unwrap().into_inner().workflow.unwrap();
    assert_eq!(state(&workflow), pb::WorkflowState::Completed, "{}", workflow.error_message);
    assert_eq!(workflow.stamp_id, stamp_id);
    assert_eq!(count("SELECT COUNT(*) FROM metadata_stamps").await, 1, "stamped once");
    assert_eq!(count("SELECT COUNT(*) FROM workflow_executions").await, 1);
    mesh.shutdown().await;
}
