//! Every error a caller can provoke names its reason in a `google.rpc.ErrorInfo`
//! (domain, metadata about what it concerns) and, for an invalid field, a
//! `google.rpc.BadRequest` field violation: in the gRPC status details and in
//! the REST body's `details`, on both backends.

use std::net::SocketAddr;

use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh, http_request, on_both_backends};
use omninode_proto::{orchestrator::v1 as wf, reducer::v1 as rd, stamping::v1 as st};
use serde_json::{Value, json};
use tonic::Status;
use tonic_types::StatusExt;

const ALL: &[ServiceKind] =
    &[ServiceKind::Stamping, ServiceKind::Orchestrator, ServiceKind::Reducer, ServiceKind::Gateway];

/// What one provoked error must carry.
struct Expected {
    reason: &'static str,
    /// An `ErrorInfo.metadata` entry.
    metadata: Option<(&'static str, String)>,
    /// The `BadRequest` field violation's field.
    field: Option<&'static str>,
}

fn expect(reason: &'static str, metadata: Option<(&'static str, String)>, field: Option<&'static str>) -> Expected {
    Expected { reason, metadata, field }
}

fn check_grpc(status: &Status, want: &Expected) {
    let details = status.get_error_details();
    let info = details.error_info().unwrap_or_else(|| panic!("{}: no ErrorInfo in {status:?}", want.reason));
    assert_eq!((info.reason.as_str(), info.domain.as_str()), (want.reason, "omninode"), "{status:?}");
    if let Some((key, value)) = &want.metadata {
        assert_eq!(info.metadata.get(*key), Some(value), "{}: metadata {:?}", want.reason, info.metadata);
    }
    match want.field {
        Some(field) => {
            let bad = details.bad_request().unwrap_or_else(|| panic!("{}: no BadRequest", want.reason));
            assert_eq!(bad.field_violations[0].field, field, "{status:?}");
            assert_eq!(bad.field_violations[0].description, status.message());
        }
        None => assert!(details.bad_request().is_none(), "{}: {status:?}", want.reason),
    }
    // The trailer older callers read is still there.
    assert_eq!(omninode_integration_tests::reason(status), want.reason);
}

async fn check_rest(gw: SocketAddr, method: &str, path: &str, body: Value, key: Option<&str>, want: &Expected) {
    let text = if body.is_null() { String::new() } else { body.to_string() };
    let mut headers = vec![("content-type", "application/json")];
    if let Some(key) = key {
        headers.push(("x-api-key", key));
    }
    let (status, _, answer) = http_request(gw, method, path, &headers, &text).await;
    let answer: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{path}: {e}: {answer}"));
    assert!(status >= 400, "{path}: {status} {answer}");
    let info = &answer["details"][0];
    assert_eq!(info["@type"], "type.googleapis.com/google.rpc.ErrorInfo", "{answer}");
    assert_eq!((info["reason"].as_str(), info["domain"].as_str()), (Some(want.reason), Some("omninode")), "{answer}");
    if let Some((key, value)) = &want.metadata {
        assert_eq!(info["metadata"][key], json!(value), "{path}: {answer}");
    }
    let of_type = |name: &str| {
        let name = format!("type.googleapis.com/google.rpc.{name}");
        answer["details"].as_array().unwrap().iter().find(|d| d["@type"] == name.as_str()).cloned()
    };
    match want.field {
        Some(field) => {
            let bad = of_type("BadRequest").unwrap_or_else(|| panic!("no BadRequest: {answer}"));
            assert_eq!(bad["fieldViolations"][0]["field"], field, "{answer}");
        }
        None => assert!(of_type("BadRequest").is_none(), "{answer}"),
    }
    // The request id to quote.
    let request = of_type("RequestInfo").unwrap_or_else(|| panic!("no RequestInfo: {answer}"));
    assert!(request["requestId"].as_str().is_some_and(|id| !id.is_empty()), "{answer}");
}

on_both_backends!(every_reason_a_caller_can_provoke_carries_its_details);

async fn every_reason_a_caller_can_provoke_carries_its_details(backend: Backend) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, ALL, &[]).await;
    let gw = mesh.mesh().endpoints.gateway.unwrap();
    let (mut stamping, mut orchestrator, mut reducer) =
        (mesh.stamping().await, mesh.orchestrator().await, mesh.reducer().await);
    let stamp = |namespace: &str, content: &str, key: &str| st::StampRequest {
        namespace: namespace.into(),
        content: content.into(),
        idempotency_key: key.into(),
        ..Default::default()
    };
    let zero_hash = "0".repeat(64);
    let unknown_id = uuid::Uuid::new_v4().to_string();
    stamping.stamp(stamp("err.ns", "one", "key-1")).await.expect("the first use of key-1");
    let run = wf::RunWorkflowRequest {
        namespace: "err.ns".into(),
        input: Some(wf::WorkflowInput { content: "done".into(), ..Default::default() }),
        ..Default::default()
    };
    let done = orchestrator.run_workflow(run).await.unwrap().into_inner().workflow.unwrap().workflow_id;

    let cases: Vec<(Status, Expected, (&str, String, Value))> = vec![
        (
            stamping.stamp(stamp("err.ns", "a\u{0}b", "")).await.unwrap_err(),
            expect("VALIDATION_ERROR", Some(("field", "content".into())), Some("content")),
            ("POST", "/v1/namespaces/err.ns/stamps".into(), json!({"content": "a\u{0}b"})),
        ),
        (
            stamping.stamp(stamp("Bad", "x", "")).await.unwrap_err(),
            expect("NAMESPACE_INVALID", None, Some("namespace")),
            ("POST", "/v1/namespaces/Bad/stamps".into(), json!({"content": "x"})),
        ),
        (
            stamping
                .get_stamp(st::GetStampRequest { namespace: "err.ns".into(), file_hash: "xyz".into() })
                .await
                .unwrap_err(),
            expect("INVALID_HASH_FORMAT", None, Some("file_hash")),
            ("GET", "/v1/namespaces/err.ns/stamps/xyz".into(), Value::Null),
        ),
        (
            stamping
                .batch_stamp(st::BatchStampRequest { namespace: "err.ns".into(), ..Default::default() })
                .await
                .unwrap_err(),
            expect("EMPTY_BATCH_REQUEST", None, Some("items")),
            ("POST", "/v1/namespaces/err.ns/stamps:batch".into(), json!({"items": []})),
        ),
        (
            stamping
                .get_stamp(st::GetStampRequest { namespace: "err.ns".into(), file_hash: zero_hash.clone() })
                .await
                .unwrap_err(),
            expect("STAMP_NOT_FOUND", Some(("file_hash", zero_hash.clone())), None),
            ("GET", format!("/v1/namespaces/err.ns/stamps/{zero_hash}"), Value::Null),
        ),
        (
            stamping.stamp(stamp("err.ns", "two", "key-1")).await.unwrap_err(),
            expect("OPERATION_ID_CONFLICT", Some(("idempotency_key", "key-1".into())), None),
            ("POST", "/v1/namespaces/err.ns/stamps".into(), json!({"content": "three", "idempotencyKey": "key-1"})),
        ),
        (
            orchestrator.get_workflow(wf::GetWorkflowRequest { workflow_id: unknown_id.clone() }).await.unwrap_err(),
            expect("WORKFLOW_NOT_FOUND", Some(("workflow_id", unknown_id.clone())), None),
            ("GET", format!("/v1/workflows/{unknown_id}"), Value::Null),
        ),
        (
            orchestrator
                .get_workflow_definition(wf::GetWorkflowDefinitionRequest { name: "nope".into() })
                .await
                .unwrap_err(),
            expect("DEFINITION_NOT_FOUND", Some(("definition", "nope".into())), None),
            ("GET", "/v1/workflowDefinitions/nope".into(), Value::Null),
        ),
        (
            reducer
                .get_namespace_stats(rd::GetNamespaceStatsRequest { namespace: "never.used".into() })
                .await
                .unwrap_err(),
            expect("NAMESPACE_NOT_FOUND", Some(("namespace", "never.used".into())), None),
            ("GET", "/v1/namespaces/never.used/stats".into(), Value::Null),
        ),
        (
            orchestrator
                .cancel_workflow(wf::CancelWorkflowRequest { workflow_id: done.clone(), ..Default::default() })
                .await
                .unwrap_err(),
            expect("WORKFLOW_TERMINAL", Some(("workflow_id", done.clone())), None),
            ("POST", format!("/v1/workflows/{done}:cancel"), json!({})),
        ),
        (
            orchestrator
                .resume_workflow(wf::ResumeWorkflowRequest { workflow_id: done.clone(), ..Default::default() })
                .await
                .unwrap_err(),
            expect("WRONG_WORKFLOW_STATE", Some(("state", "COMPLETED".into())), None),
            ("POST", format!("/v1/workflows/{done}:resume"), json!({})),
        ),
    ];
    for (status, want, (method, path, body)) in cases {
        check_grpc(&status, &want);
        check_rest(gw, method, &path, body, None, &want).await;
    }

    // What only the gateway refuses names its reason the same way.
    let gateway_only = [
        ("GET", "/v1/nothing/here", Value::Null, expect("ROUTE_NOT_FOUND", None, None)),
        ("DELETE", "/v1/validate", Value::Null, expect("METHOD_NOT_ALLOWED", None, None)),
        (
            "GET",
            "/v1/namespaces/err.ns/stamps?pageSize=lots",
            Value::Null,
            expect("VALIDATION_ERROR", None, Some("page_size")),
        ),
    ];
    for (method, path, body, want) in gateway_only {
        check_rest(gw, method, path, body, None, &want).await;
    }
    let (status, _, answer) =
        http_request(gw, "POST", "/v1/namespaces/err.ns/workflows", &[("content-type", "text/plain")], "x").await;
    assert_eq!(status, 415);
    assert!(answer.contains(r#""reason":"UNSUPPORTED_MEDIA_TYPE""#), "{answer}");
    mesh.shutdown().await;
}

/// UNAUTHENTICATED and PERMISSION_DENIED (with the namespace refused) over both transports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_errors_carry_their_details() {
    let keys = [
        ("GATEWAY_API_KEYS", "admin-key;name=admin,reader-key;namespaces=team.*;permissions=read;name=reader"),
        ("OMNINODE_CLIENT_TOKEN", "admin-key"),
    ];
    let services = [ServiceKind::Stamping, ServiceKind::Gateway];
    let mesh = TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, &services, &keys).await;
    let gw = mesh.mesh().endpoints.gateway.unwrap();
    let mut stamping = omninode_integration_tests::stamping_client(mesh.stamping_url()).await;
    let request = |key: Option<&str>| {
        let mut request = tonic::Request::new(st::StampRequest {
            namespace: "team.a".into(),
            content: "x".into(),
            ..Default::default()
        });
        if let Some(key) = key {
            request.metadata_mut().insert("x-api-key", key.parse().unwrap());
        }
        request
    };
    let unauthenticated = expect("UNAUTHENTICATED", None, None);
    check_grpc(&stamping.stamp(request(None)).await.unwrap_err(), &unauthenticated);
    check_rest(gw, "POST", "/v1/namespaces/team.a/stamps", json!({"content": "x"}), None, &unauthenticated).await;
    let denied = expect("PERMISSION_DENIED", Some(("namespace", "team.a".into())), None);
    check_grpc(&stamping.stamp(request(Some("reader-key"))).await.unwrap_err(), &denied);
    check_rest(gw, "POST", "/v1/namespaces/team.a/stamps", json!({"content": "x"}), Some("reader-key"), &denied).await;
    mesh.shutdown().await;
}
