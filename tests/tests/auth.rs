//! One authentication for every gRPC server and the REST gateway, and
//! namespace permissions: the same keys protect every service over gRPC
//! (UNAUTHENTICATED, PERMISSION_DENIED) and over REST (401, 403); health and
//! reflection stay public; insecure settings refuse to start.

use omninode_integration_tests::{
    Backend, ServiceKind, TestDatabase, TestMesh, base_env, channel, http_request, reason, wait_until,
};
use omninode_proto::{
    orchestrator::v1::{self as opb, orchestrator_service_client::OrchestratorServiceClient},
    reducer::v1::{self as rpb, reducer_service_client::ReducerServiceClient},
    stamping::v1::{self as pb, stamping_service_client::StampingServiceClient},
};
use omninode_runtime::Env;
use tonic::{Code, Request};

const ALL: &[ServiceKind] =
    &[ServiceKind::Stamping, ServiceKind::Orchestrator, ServiceKind::Reducer, ServiceKind::Gateway];
const KEYS: &str = "admin-key;name=admin,\
    reader-key;namespaces=team.*;permissions=read;name=reader,\
    writer-key;namespaces=team.*;permissions=read|write;name=writer";

async fn mesh() -> TestMesh {
    let vars =
        [("GATEWAY_API_KEYS", KEYS), ("OMNINODE_CLIENT_TOKEN", "admin-key"), ("AGGREGATION_WINDOW_SIZE_MS", "50")];
    TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, ALL, &vars).await
}

fn with_key<T>(message: T, key: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(key) = key {
        request.metadata_mut().insert("x-api-key", key.parse().unwrap());
    }
    request
}

fn stamp(namespace: &str, content: &str) -> pb::StampRequest {
    pb::StampRequest { namespace: namespace.into(), content: content.into(), ..Default::default() }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String) {
    match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), reason(&status).to_owned()),
    }
}

const DENIED: (Code, &str) = (Code::PermissionDenied, "PERMISSION_DENIED");
const UNKNOWN: (Code, &str) = (Code::Unauthenticated, "UNAUTHENTICATED");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grpc_service_checks_the_same_credentials_and_namespace_grants() {
    let mesh = mesh().await;
    let mut stamping = StampingServiceClient::new(channel(mesh.stamping_url()).await);
    let mut orchestrator = OrchestratorServiceClient::new(channel(mesh.orchestrator_url()).await);
    let mut reducer = ReducerServiceClient::new(channel(mesh.reducer_url()).await);
    let eq = |got: (Code, String), want: (Code, &str)| assert_eq!((got.0, got.1.as_str()), want);

    // No key and a wrong key: refused by every service, before anything runs.
    for key in [None, Some("wrong")] {
        eq(code_of(stamping.stamp(with_key(stamp("team.a", "x"), key)).await), UNKNOWN);
        let hash = pb::HashRequest { content: b"x".to_vec().into(), normalize: false };
        eq(code_of(stamping.hash(with_key(hash, key)).await), UNKNOWN);
        let list = opb::ListWorkflowsRequest { namespace: "team.a".into(), ..Default::default() };
        eq(code_of(orchestrator.list_workflows(with_key(list, key)).await), UNKNOWN);
        eq(code_of(reducer.list_namespaces(with_key(rpb::ListNamespacesRequest::default(), key)).await), UNKNOWN);
    }

    // Health and reflection stay public.
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(channel(mesh.stamping_url()).await);
    health.check(HealthCheckRequest { service: String::new() }).await.expect("health is public");

    // The reader reads its namespaces and writes nothing.
    let reader = Some("reader-key");
    eq(code_of(stamping.stamp(with_key(stamp("team.a", "by the reader"), reader)).await), DENIED);
    let list = pb::ListStampsRequest { namespace: "team.a".into(), ..Default::default() };
    eq(code_of(stamping.list_stamps(with_key(list, reader)).await), (Code::Ok, ""));
    let list = pb::ListStampsRequest { namespace: "elsewhere".into(), ..Default::default() };
    eq(code_of(stamping.list_stamps(with_key(list, reader)).await), DENIED);
    let hash = pb::HashRequest { content: b"x".to_vec().into(), normalize: false };
    eq(code_of(stamping.hash(with_key(hash, reader)).await), (Code::Ok, ""));

    // The writer writes in its namespaces only; an empty namespace means the default one.
    let writer = Some("writer-key");
    eq(code_of(stamping.stamp(with_key(stamp("team.a", "by the writer"), writer)).await), (Code::Ok, ""));
    eq(code_of(stamping.stamp(with_key(stamp("elsewhere", "by the writer"), writer)).await), DENIED);
    eq(code_of(stamping.stamp(with_key(stamp("", "default namespace"), writer)).await), DENIED);
    // A malformed namespace is the caller's mistake first.
    let bad = code_of(stamping.stamp(with_key(stamp("Not Valid", "x"), writer)).await);
    assert_eq!(bad.0, Code::InvalidArgument);

    // Workflows: started by the writer, run by the orchestrator with its own credential.
    let input = opb::WorkflowInput { content: "a workflow".into(), ..Default::default() };
    let run = opb::RunWorkflowRequest { namespace: "team.a".into(), input: Some(input.clone()), ..Default::default() };
    let done = orchestrator.run_workflow(with_key(run, writer)).await.expect("the writer runs a workflow");
    let workflow = done.into_inner().workflow.unwrap();
    assert_eq!(workflow.state, opb::WorkflowState::Completed as i32, "{workflow:?}");
    let run = opb::RunWorkflowRequest { namespace: "other".into(), input: Some(input), ..Default::default() };
    eq(code_of(orchestrator.run_workflow(with_key(run, writer)).await), DENIED);
    let get = opb::GetWorkflowRequest { workflow_id: workflow.workflow_id.clone() };
    eq(code_of(orchestrator.get_workflow(with_key(get.clone(), reader)).await), (Code::Ok, ""));
    let cancel = opb::CancelWorkflowRequest { workflow_id: workflow.workflow_id.clone(), reason: String::new() };
    eq(code_of(orchestrator.cancel_workflow(with_key(cancel, reader)).await), DENIED);

    // Reducer: rebuild is admin; listing shows only what the caller may read.
    wait_until("team.a aggregated", std::time::Duration::from_secs(10), || {
        let mut reducer = reducer.clone();
        async move {
            let get = rpb::GetNamespaceStatsRequest { namespace: "team.a".into() };
            reducer.get_namespace_stats(with_key(get, Some("admin-key"))).await.ok().map(drop)
        }
    })
    .await;
    stamping.stamp(with_key(stamp("other", "by the admin"), Some("admin-key"))).await.unwrap();
    wait_until("other aggregated", std::time::Duration::from_secs(10), || {
        let mut reducer = reducer.clone();
        async move {
            let get = rpb::GetNamespaceStatsRequest { namespace: "other".into() };
            reducer.get_namespace_stats(with_key(get, Some("admin-key"))).await.ok().map(drop)
        }
    })
    .await;
    let rebuild = rpb::RebuildRequest { namespace: "team.a".into() };
    eq(code_of(reducer.rebuild(with_key(rebuild.clone(), writer)).await), DENIED);
    eq(code_of(reducer.rebuild(with_key(rebuild, Some("admin-key"))).await), (Code::Ok, ""));
    let everything = reducer.list_namespaces(with_key(rpb::ListNamespacesRequest::default(), Some("admin-key")));
    let everything: Vec<String> =
        everything.await.unwrap().into_inner().namespaces.into_iter().map(|n| n.namespace).collect();
    assert!(everything.contains(&"other".to_owned()), "{everything:?}");
    let visible = reducer.list_namespaces(with_key(rpb::ListNamespacesRequest::default(), reader));
    let visible: Vec<String> =
        visible.await.unwrap().into_inner().namespaces.into_iter().map(|n| n.namespace).collect();
    assert_eq!(visible, ["team.a"], "the reader sees only its namespaces");

    let (_, metrics) = mesh.admin_get("/metrics").await;
    assert!(metrics.lines().any(|l| l.starts_with("auth_denied_total") && l.contains("permission")), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("auth_denied_total") && l.contains("unauthenticated")), "{metrics}");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_401_and_403_from_the_same_grants() {
    let mesh = mesh().await;
    let gateway = mesh.mesh().endpoints.gateway.unwrap();
    let call = |method: &'static str, path: &'static str, key: Option<&'static str>, body: &'static str| async move {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(key) = key {
            headers.push(("x-api-key", key));
        }
        http_request(gateway, method, path, &headers, body).await
    };
    let stamp_body = r#"{"content":"over REST"}"#;
    assert_eq!(call("POST", "/v1/namespaces/team.a/stamps", None, stamp_body).await.0, 401);
    let (code, _, body) = call("POST", "/v1/namespaces/team.a/stamps", Some("reader-key"), stamp_body).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains(r#""code":7"#) && body.contains("may not write"), "{body}");
    assert_eq!(call("POST", "/v1/namespaces/team.a/stamps", Some("writer-key"), stamp_body).await.0, 201);
    assert_eq!(call("GET", "/v1/namespaces/team.a/stamps", Some("reader-key"), "").await.0, 200);
    assert_eq!(call("GET", "/v1/namespaces/elsewhere/stamps", Some("reader-key"), "").await.0, 403);
    let (code, _, body) =
        call("POST", "/v1/namespaces/team.a/workflows:run", Some("writer-key"), r#"{"input":{"content":"rest"}}"#)
            .await;
    assert_eq!(code, 201, "{body}");
    assert!(body.contains("WORKFLOW_STATE_COMPLETED"), "{body}");
    assert_eq!(call("POST", "/v1/namespaces/team.a/stats:rebuild", Some("writer-key"), "{}").await.0, 403);
    assert_eq!(call("GET", "/openapi.json", None, "").await.0, 200, "the API description stays public");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_settings_refuse_to_start_naming_the_variable() {
    let database = TestDatabase::new(Backend::Sqlite).await;
    for (vars, variable) in [
        (vec![("GATEWAY_API_KEYS", ",")], "GATEWAY_API_KEYS"),
        (vec![("GATEWAY_API_KEYS", " ")], "GATEWAY_API_KEYS"),
        (vec![("GATEWAY_JWT_HS256_SECRET", " ")], "GATEWAY_JWT_HS256_SECRET"),
        (vec![("GATEWAY_JWT_HS256_SECRET", "too-short")], "GATEWAY_JWT_HS256_SECRET"),
        (vec![("GATEWAY_API_KEYS", "k1")], "OMNINODE_CLIENT_TOKEN"),
    ] {
        let mut env = Env::from_pairs(base_env());
        for (name, value) in database.env() {
            env = env.with(&name, value);
        }
        for (name, value) in &vars {
            env = env.with(name, *value);
        }
        let refused = omninode::start(&env, ALL).await.err().unwrap_or_else(|| panic!("{vars:?} started"));
        assert!(format!("{refused:#}").contains(variable), "{vars:?}: {refused:#}");
    }
}
