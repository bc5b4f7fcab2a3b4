//! Waiting is durable: an approval, a timer and an approval's deadline
//! survive kill -9 of the only orchestrator; a waiting workflow holds no
//! lease (the lease here is 60 s, far longer than the test waits), so
//! whichever instance runs later wakes it; an approval sent twice (a client
//! retrying across the restart) is applied once, and a timer fires once
//! with two instances polling. Real processes on PostgreSQL.

use std::time::Duration;

use omninode_integration_tests::{
    Backend, NodeProcess, TestDatabase,
    http_double::{HttpDouble, Reply},
    orchestrator_client, workflow_reaches,
};
use omninode_proto::orchestrator::v1::{
    self as pb, orchestrator_service_client::OrchestratorServiceClient, step_definition::Kind,
};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::json;
use tonic::transport::Channel;

const NODE: &str = env!("CARGO_BIN_EXE_omninode-node");

type Client = OrchestratorServiceClient<Channel>;

fn step(name: &str, timeout_ms: u32, kind: Kind) -> pb::StepDefinition {
    pb::StepDefinition { name: name.into(), timeout_ms, kind: Some(kind), ..Default::default() }
}

fn notify(url: &str) -> pb::StepDefinition {
    let http = pb::HttpStep { method: "POST".into(), url: format!("{url}/n/${{workflow.id}}"), ..Default::default() };
    step("notify", 0, Kind::Http(http))
}

async fn define(client: &mut Client, name: &str, steps: Vec<pb::StepDefinition>) {
    let definition = pb::WorkflowDefinition { name: name.into(), steps, ..Default::default() };
    client
        .create_workflow_definition(pb::CreateWorkflowDefinitionRequest { definition: Some(definition) })
        .await
        .unwrap();
}

async fn start(client: &mut Client, definition: &str) -> String {
    let request = pb::StartWorkflowRequest {
        namespace: "durable".into(),
        input: Some(pb::WorkflowInput { content: "x".into(), ..Default::default() }),
        definition: definition.into(),
        ..Default::default()
    };
    client.start_workflow(request).await.unwrap().into_inner().workflow.unwrap().workflow_id
}

async fn reach(client: &Client, id: &str, wanted: pb::WorkflowState) -> pb::Workflow {
    workflow_reaches(client, id, wanted, Duration::from_secs(30)).await
}

fn spawn(database: &TestDatabase, name: &str) -> NodeProcess {
    let mut vars = database.env();
    vars.push(("OMNINODE_INSTANCE_ID".into(), name.into()));
    vars.push(("ORCHESTRATOR_LEASE_MS".into(), "60000".into()));
    NodeProcess::spawn(NODE, "orchestrator", &vars)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_timers_and_deadlines_survive_kill_9_of_every_orchestrator() {
    let double = HttpDouble::start(|_, _| Reply::json(200, json!({}))).await;
    let database = TestDatabase::new(Backend::Postgres).await;
    let a = spawn(&database, "orch-a");
    let mut client_a = orchestrator_client(a.url()).await;
    let approval = || Kind::Approval(pb::ApprovalStep::default());
    let timer = Kind::Timer(pb::TimerStep { wait: Some(pb::timer_step::Wait::DurationMs(3_000)) });
    define(&mut client_a, "gate", vec![step("review", 0, approval()), notify(&double.url())]).await;
    define(&mut client_a, "sleepy", vec![step("wait", 0, timer), notify(&double.url())]).await;
    define(&mut client_a, "deadline", vec![step("review", 3_000, approval()), notify(&double.url())]).await;
    let gate = start(&mut client_a, "gate").await;
    let sleepy = start(&mut client_a, "sleepy").await;
    let deadline = start(&mut client_a, "deadline").await;
    for id in [&gate, &sleepy, &deadline] {
        reach(&client_a, id, pb::WorkflowState::Waiting).await;
    }
    let db = Database::connect(database.postgres.as_ref().unwrap().url.as_str()).await.unwrap();
    let leased = "SELECT COUNT(*) FROM workflow_executions WHERE lease_owner IS NOT NULL";
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), leased)).await.unwrap().unwrap();
    assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), 0, "waiting workflows hold no lease");

    a.signal("KILL");
    drop(a);
    // Two new instances: both poll for due timers and deadlines.
    let (b, c) = (spawn(&database, "orch-b"), spawn(&database, "orch-c"));
    let (mut client_b, mut client_c) = (orchestrator_client(b.url()).await, orchestrator_client(c.url()).await);
    let approve = pb::ApproveStepRequest {
        workflow_id: gate.clone(),
        step_name: "review".into(),
        approver: "alice".into(),
        comment: "ship it".into(),
    };
    client_b.approve_step(approve.clone()).await.unwrap();
    // The client did not hear back in time and asks the other instance again.
    client_c.approve_step(approve).await.expect("the same approval again is applied once, not refused");

    let gated = reach(&client_b, &gate, pb::WorkflowState::Completed).await;
    assert_eq!(gated.steps.iter().filter(|s| s.name == "review").count(), 1);
    let slept = reach(&client_c, &sleepy, pb::WorkflowState::Completed).await;
    assert_eq!(slept.steps.iter().filter(|s| s.name == "wait").count(), 1, "the timer fired once");
    let owner = &slept.steps.iter().find(|s| s.name == "notify").unwrap().owner;
    assert!(owner.starts_with("orch-b/") || owner.starts_with("orch-c/"), "fired on a new instance: {owner}");
    let expired = reach(&client_b, &deadline, pb::WorkflowState::Failed).await;
    assert!(expired.error_message.contains("approval step review timed out"), "{}", expired.error_message);

    // Give a double firing every chance to show up, then count the calls.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let calls = |id: &str| double.requests().iter().filter(|r| r.uri == format!("/n/{id}")).count();
    assert_eq!((calls(&gate), calls(&sleepy), calls(&deadline)), (1, 1, 0), "{:?}", double.requests());
    drop((b, c));
}
