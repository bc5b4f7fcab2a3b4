//! Hostile and careless input, on both backends alike: NUL characters and
//! over-long values are INVALID_ARGUMENT (never UNAVAILABLE) and store
//! nothing; undecodable messages are INVALID_ARGUMENT; error messages quote
//! only a short prefix of what was sent.

use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh, on_both_backends, reason};
use omninode_proto::{orchestrator::v1 as opb, stamping::v1 as pb};
use tonic::Code;

const BOTH: &[ServiceKind] = &[ServiceKind::Stamping, ServiceKind::Orchestrator];

on_both_backends!(
    nul_bytes_and_long_values_are_invalid_arguments_and_store_nothing,
    undecodable_messages_are_invalid_arguments,
    large_answers_fit_the_message_limit_or_are_refused_before_committing,
);

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    assert!(["VALIDATION_ERROR", "INVALID_HASH_FORMAT"].contains(&reason(&status)), "{what}: {status:?}");
    assert!(status.message().len() < 400, "{what}: the message quotes too much ({} bytes)", status.message().len());
}

async fn rows(mesh: &TestMesh, table: &str) -> i64 {
    omninode_integration_tests::table_rows(mesh, table).await
}

async fn nul_bytes_and_long_values_are_invalid_arguments_and_store_nothing(backend: Backend) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, BOTH, &[]).await;
    let mut stamping = mesh.stamping().await;
    let mut orchestrator = mesh.orchestrator().await;
    let long = "c".repeat(1 << 20);
    let stamp = |content: &str, file_path: &str, correlation_id: &str| pb::StampRequest {
        namespace: "hostile".into(),
        content: content.into(),
        file_path: file_path.into(),
        correlation_id: correlation_id.into(),
        ..Default::default()
    };
    assert_invalid(stamping.stamp(stamp("a\0b", "f.txt", "")).await, "NUL in content");
    assert_invalid(stamping.stamp(stamp("ok", "f\0.txt", "")).await, "NUL in file_path");
    assert_invalid(stamping.stamp(stamp("ok", "f.txt", &"x".repeat(300))).await, "long correlation id");
    assert_invalid(stamping.stamp(stamp("ok", "f.txt", "a\0")).await, "NUL in correlation id");
    assert_invalid(stamping.stamp(stamp("ok", &long, "")).await, "a 1 MiB file path");
    let get = pb::GetStampRequest { namespace: "hostile".into(), file_hash: long.clone() };
    assert_invalid(stamping.get_stamp(get).await.map(drop), "a 1 MiB hash");
    assert_eq!(rows(&mesh, "metadata_stamps").await, 0);

    let start = |input: opb::WorkflowInput, correlation_id: &str| opb::StartWorkflowRequest {
        namespace: "hostile".into(),
        input: Some(input),
        correlation_id: correlation_id.into(),
        ..Default::default()
    };
    let input = |content: &str| opb::WorkflowInput { content: content.into(), ..Default::default() };
    assert_invalid(orchestrator.start_workflow(start(input("a\0b"), "")).await, "NUL in workflow content");
    let mut with_context = input("fine");
    with_context.context.insert("key".into(), "value\0".into());
    assert_invalid(orchestrator.start_workflow(start(with_context, "")).await, "NUL in a context value");
    assert_invalid(orchestrator.start_workflow(start(input("fine"), &"x".repeat(300))).await, "long correlation id");
    let get = opb::GetWorkflowRequest { workflow_id: long.clone() };
    assert_invalid(orchestrator.get_workflow(get).await.map(drop), "a 1 MiB workflow id");
    assert_eq!(rows(&mesh, "workflow_executions").await, 0, "nothing stored");

    // A bad cancel reason changes nothing: the workflow still finishes.
    let run =
        opb::RunWorkflowRequest { namespace: "hostile".into(), input: Some(input("to cancel")), ..Default::default() };
    let done = orchestrator.run_workflow(run).await.unwrap().into_inner().workflow.unwrap();
    let cancel = opb::CancelWorkflowRequest { workflow_id: done.workflow_id.clone(), reason: "stop\0".into() };
    assert_invalid(orchestrator.cancel_workflow(cancel).await, "NUL in a cancel reason");
    let get = opb::GetWorkflowRequest { workflow_id: done.workflow_id };
    let stored = orchestrator.get_workflow(get).await.unwrap().into_inner().workflow.unwrap();
    assert_eq!(stored.state, opb::WorkflowState::Completed as i32);
    mesh.shutdown().await;
}

/// A string field holding invalid UTF-8 (sent as raw bytes through the same
/// wire format) is INVALID_ARGUMENT, not INTERNAL.
async fn undecodable_messages_are_invalid_arguments(backend: Backend) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, BOTH, &[]).await;
    // ValidateRequest.content (field 1, a string) carrying 0xff 0xfe, sent
    // as HashRequest.content (field 1, bytes): the same wire format.
    let channel = omninode_integration_tests::channel(mesh.stamping_url()).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/omninode.stamping.v1.StampingService/Validate");
    let codec = tonic_prost::ProstCodec::<pb::HashRequest, pb::ValidateResponse>::default();
    let answer = grpc
        .unary(tonic::Request::new(pb::HashRequest { content: vec![0xff, 0xfe].into(), normalize: false }), path, codec)
        .await;
    let status = answer.expect_err("invalid UTF-8 is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    mesh.shutdown().await;
}

/// With 64 KiB content, five completed workflows do not fit one ListWorkflows
/// message: the page is cut and the rest follows; a BatchStamp whose answer
/// could not be sent is refused before anything is stored; the gateway
/// passes answers up to the services' own limit.
async fn large_answers_fit_the_message_limit_or_are_refused_before_committing(backend: Backend) {
    let limit = 64 * 1024;
    let vars = [("STAMPING_MAX_CONTENT_BYTES", "65536")];
    let services = [ServiceKind::Stamping, ServiceKind::Orchestrator, ServiceKind::Gateway];
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, &services, &vars).await;
    let mut orchestrator = mesh.orchestrator().await;
    for i in 0..5 {
        let content = format!("{i}{}", "w".repeat(limit - 100));
        let input = opb::WorkflowInput { content, ..Default::default() };
        let run = opb::RunWorkflowRequest { namespace: "big".into(), input: Some(input), ..Default::default() };
        orchestrator.run_workflow(run).await.unwrap();
    }
    let mut seen = 0;
    let mut pages = 0;
    let mut token = String::new();
    loop {
        let list = opb::ListWorkflowsRequest { namespace: "big".into(), page_token: token, ..Default::default() };
        let page = orchestrator.list_workflows(list).await.expect("a page fits one message").into_inner();
        seen += page.workflows.len();
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, 5, "every workflow, across {pages} pages");
    assert!(pages > 1, "the page was cut");
    let gateway = mesh.mesh().endpoints.gateway.unwrap();
    let (code, _, body) =
        omninode_integration_tests::http_request(gateway, "GET", "/v1/namespaces/big/workflows", &[], "").await;
    assert_eq!(code, 200, "{}", &body[..body.len().min(300)]);

    let mut stamping = mesh.stamping().await;
    let items = (0..5)
        .map(|i| pb::BatchStampItem { content: format!("{i}{}", "b".repeat(limit - 100)), ..Default::default() })
        .collect();
    let batch = pb::BatchStampRequest { namespace: "big".into(), items, ..Default::default() };
    let refused = stamping.batch_stamp(batch).await.expect_err("the answer would not fit");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(rows(&mesh, "metadata_stamps WHERE namespace = 'big' AND op_id IS NULL").await, 0, "nothing stored");
    mesh.shutdown().await;
}

/// A 5 MiB Stamp over REST (over tonic's 4 MiB default) is answered in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_takes_answers_as_large_as_the_services_send() {
    let mesh = TestMesh::start_services(
        TestDatabase::new(Backend::Sqlite).await,
        &[ServiceKind::Stamping, ServiceKind::Gateway],
        &[],
    )
    .await;
    let gateway = mesh.mesh().endpoints.gateway.unwrap();
    let body = serde_json::json!({"content": "x".repeat(5 << 20), "filePath": "big.txt"}).to_string();
    let (code, _, answer) = omninode_integration_tests::http_request(
        gateway,
        "POST",
        "/v1/namespaces/big/stamps",
        &[("content-type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(code, 201, "{}", &answer[..answer.len().min(300)]);
    assert!(answer.len() > 5 << 20, "the stamped content came back");
    mesh.shutdown().await;
}

/// Six concurrent 0.9 MB calls, each on its own connection, against a 1 MiB request-byte budget: the
/// excess waits its turn (counted), every call succeeds, and the budget is
/// whole again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_in_flight_are_bounded() {
    let vars = [("STAMPING_MAX_CONTENT_BYTES", "1048576"), ("MAX_INFLIGHT_REQUEST_BYTES", "1048576")];
    let mesh =
        TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, &[ServiceKind::Stamping], &vars).await;
    let client = mesh.stamping().await;
    let calls = (0..6).map(|i| {
        let mut client = client.clone();
        async move {
            let item = pb::BatchStampItem { content: format!("{i}{}", "m".repeat(900_000)), ..Default::default() };
            client
                .batch_stamp(pb::BatchStampRequest {
                    namespace: "budget".into(),
                    items: vec![item],
                    ..Default::default()
                })
                .await
        }
    });
    for answer in futures::future::join_all(calls).await {
        assert_eq!(answer.expect("every call is served in its turn").into_inner().succeeded, 1);
    }
    let (_, metrics) = mesh.admin_get("/metrics").await;
    let value = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
    };
    assert!(value("grpc_request_bytes_waits_total ") >= 1.0, "{metrics}");
    assert_eq!(value("grpc_inflight_request_bytes "), 0.0, "every reservation released");
    mesh.shutdown().await;
}
