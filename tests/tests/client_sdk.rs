//! The Rust client (`omninode-client`, the SDK the CLI uses) against real
//! services: stamping, validation, batches, paging, workflows run, watched
//! and cancelled, errors with their code and reason, aggregates, and the
//! API key option.

use futures::StreamExt;
use omninode_client::{Endpoints, Error, Mesh, Options};
use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh};
use omninode_proto::orchestrator::v1 as opb;
use tonic::Code;

fn endpoints(mesh: &TestMesh) -> Endpoints {
    Endpoints { stamping: mesh.stamping_url(), orchestrator: mesh.orchestrator_url(), reducer: mesh.reducer_url() }
}

async fn start(extra: &[(&str, &str)]) -> TestMesh {
    let services = [ServiceKind::Stamping, ServiceKind::Orchestrator, ServiceKind::Reducer];
    TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, &services, extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_covers_stamps_workflows_and_errors() {
    let mesh = start(&[("AGGREGATION_WINDOW_SIZE_MS", "100")]).await;
    let client = Mesh::connect(endpoints(&mesh), Options::default()).unwrap();
    let stamped = client.stamp("sdk.rust", "# Title\n", "title.md").await.unwrap();
    assert_eq!(client.hash(b"# Title\n").await.unwrap(), stamped.stamp.as_ref().unwrap().file_hash);
    assert!(client.validate(&stamped.stamped_content, "").await.unwrap().valid);
    let batch = client.batch_stamp("sdk.rust", (0..4).map(|i| (format!("doc {i}"), format!("d{i}.md")))).await.unwrap();
    assert_eq!((batch.succeeded, batch.failed), (4, 0));
    let all: Vec<_> = client.stamps("sdk.rust", 2).map(Result::unwrap).collect().await;
    assert_eq!(all.len(), 5, "every page");

    let done = client.run_workflow("sdk.rust", "# Workflow\n", "").await.unwrap();
    assert_eq!(done.state, opb::WorkflowState::Completed as i32, "{}", done.error_message);
    let states: Vec<i32> = client.watch_workflow(&done.workflow_id).map(|w| w.unwrap().state).collect().await;
    assert_eq!(states.last(), Some(&(opb::WorkflowState::Completed as i32)));
    let listed: Vec<_> = client.workflows("sdk.rust", 1).map(Result::unwrap).collect().await;
    assert_eq!(listed.len(), 1);

    let definition = opb::WorkflowDefinition {
        name: "rust-gate".into(),
        steps: vec![opb::StepDefinition {
            name: "review".into(),
            kind: Some(opb::step_definition::Kind::Approval(opb::ApprovalStep::default())),
            ..Default::default()
        }],
        ..Default::default()
    };
    let create = opb::CreateWorkflowDefinitionRequest { definition: Some(definition) };
    client.orchestrator.clone().create_workflow_definition(create).await.unwrap();
    let waiting = client.run_workflow("sdk.rust", "x", "rust-gate").await.unwrap();
    assert_eq!(waiting.state, opb::WorkflowState::Waiting as i32);
    client.cancel_workflow(&waiting.workflow_id, "not needed").await.unwrap();
    let Error { code, reason, metadata, .. } = client.cancel_workflow(&waiting.workflow_id, "").await.unwrap_err();
    assert_eq!((code, reason.as_str()), (Code::FailedPrecondition, "WORKFLOW_TERMINAL"));
    assert_eq!(metadata.get("workflow_id"), Some(&waiting.workflow_id), "google.rpc.ErrorInfo metadata");
    let bad = client.stamp("Bad Namespace", "x", "").await.unwrap_err();
    assert_eq!((bad.code, bad.reason.as_str()), (Code::InvalidArgument, "NAMESPACE_INVALID"));
    assert_eq!(bad.field_violations[0].0, "namespace", "google.rpc.BadRequest");

    let stats = omninode_integration_tests::wait_until("aggregates", std::time::Duration::from_secs(20), || async {
        client.namespace_stats("sdk.rust").await.ok().filter(|s| s.total_stamps == 6)
    })
    .await;
    assert_eq!(stats.namespace, "sdk.rust", "five stamps and the workflow's");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_option_is_sent_with_every_call() {
    let mesh = start(&[("GATEWAY_API_KEYS", "rust-key"), ("OMNINODE_CLIENT_TOKEN", "rust-key")]).await;
    let anonymous = Mesh::connect(endpoints(&mesh), Options::default().retries(0)).unwrap();
    let refused = anonymous.stamp("sdk.key", "x", "").await.unwrap_err();
    assert_eq!((refused.code, refused.reason.as_str()), (Code::Unauthenticated, "UNAUTHENTICATED"));
    let keyed = Mesh::connect(endpoints(&mesh), Options::default().api_key("rust-key")).unwrap();
    let done = keyed.run_workflow("sdk.key", "# Key\n", "").await.unwrap();
    assert_eq!(done.state, opb::WorkflowState::Completed as i32);
    let bearer = Mesh::connect(endpoints(&mesh), Options::default().bearer("rust-key")).unwrap();
    assert!(bearer.validate(&keyed.stamp("sdk.key", "y", "").await.unwrap().stamped_content, "").await.unwrap().valid);
    mesh.shutdown().await;
}
