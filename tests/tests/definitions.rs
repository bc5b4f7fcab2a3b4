//! Workflow definitions: versions assigned by the server and immutable,
//! latest or a given version, listing, bad definitions refused naming the
//! step and the field, and the REST routes — on both backends.

use omninode_integration_tests::{
    Backend, ServiceKind, TestDatabase, TestMesh, http_request, on_both_backends, reason,
};
use omninode_proto::orchestrator::v1::{self as pb, step_definition::Kind};
use serde_json::{Value, json};
use tonic::Code;

on_both_backends!(definitions_are_versioned_and_bad_ones_are_refused, definitions_over_rest);

fn step(name: &str, kind: Kind) -> pb::StepDefinition {
    pb::StepDefinition { name: name.into(), kind: Some(kind), ..Default::default() }
}

fn approval(name: &str) -> pb::StepDefinition {
    step(name, Kind::Approval(pb::ApprovalStep::default()))
}

fn http(name: &str, url: &str, body: &str) -> pb::StepDefinition {
    step(
        name,
        Kind::Http(pb::HttpStep { method: "POST".into(), url: url.into(), body: body.into(), ..Default::default() }),
    )
}

fn create(name: &str, steps: Vec<pb::StepDefinition>) -> pb::CreateWorkflowDefinitionRequest {
    pb::CreateWorkflowDefinitionRequest {
        definition: Some(pb::WorkflowDefinition { name: name.into(), steps, ..Default::default() }),
    }
}

async fn definitions_are_versioned_and_bad_ones_are_refused(backend: Backend) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, &[ServiceKind::Orchestrator], &[]).await;
    let mut client = mesh.orchestrator().await;
    let steps = vec![approval("review"), http("notify", "http://127.0.0.1:9/hook", r#"{"doc":"${input.content}"}"#)];
    let first = client.create_workflow_definition(create("release-notes", steps.clone())).await.unwrap().into_inner();
    let first = first.definition.unwrap();
    assert_eq!((first.name.as_str(), first.version), ("release-notes", 1));
    assert_eq!(first.steps, steps);
    let second = client.create_workflow_definition(create("release-notes", vec![approval("only")])).await.unwrap();
    assert_eq!(
        second.into_inner().definition.unwrap().version,
        2,
        "a create with the same name makes the next version"
    );

    let get = |name: &str| pb::GetWorkflowDefinitionRequest { name: name.into() };
    let latest = client.get_workflow_definition(get("release-notes")).await.unwrap().into_inner().definition.unwrap();
    assert_eq!((latest.version, latest.steps.len()), (2, 1));
    let old = client.get_workflow_definition(get("release-notes@1")).await.unwrap().into_inner().definition.unwrap();
    assert_eq!(old, first, "versions are immutable");
    let missing = client.get_workflow_definition(get("release-notes@9")).await.unwrap_err();
    assert_eq!((missing.code(), reason(&missing)), (Code::NotFound, "DEFINITION_NOT_FOUND"));
    let bad = client.get_workflow_definition(get("Not A Name")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    client.create_workflow_definition(create("another", vec![approval("a")])).await.unwrap();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let list = pb::ListWorkflowDefinitionsRequest { page_size: 2, page_token: token, ..Default::default() };
        let page = client.list_workflow_definitions(list).await.unwrap().into_inner();
        seen.extend(page.definitions.iter().map(|d| format!("{}@{}", d.name, d.version)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["another@1", "release-notes@1", "release-notes@2"]);
    let only = pb::ListWorkflowDefinitionsRequest { name: "release-notes".into(), ..Default::default() };
    assert_eq!(client.list_workflow_definitions(only).await.unwrap().into_inner().definitions.len(), 2);

    let no_kind = pb::StepDefinition { name: "empty".into(), ..Default::default() };
    for (request, says) in [
        (create("x", vec![no_kind]), r#"step "empty": kind"#),
        (create("x", vec![approval("a"), approval("a")]), r#"step "a": name: is used by an earlier step"#),
        (create("x", vec![http("notify", "", "")]), r#"step "notify": http.url: is required"#),
        (create("x", vec![http("notify", "http://h/${steps.later.output}", "")]), "not an earlier step"),
        (create("x", vec![]), "steps:"),
        (create("Bad", vec![approval("a")]), "name:"),
        (pb::CreateWorkflowDefinitionRequest { definition: None }, "definition is required"),
    ] {
        let err = client.create_workflow_definition(request).await.unwrap_err();
        assert_eq!((err.code(), reason(&err)), (Code::InvalidArgument, "VALIDATION_ERROR"), "{says}: {err:?}");
        assert!(err.message().contains(says), "{says}: {}", err.message());
    }
    let list = pb::ListWorkflowDefinitionsRequest { name: "x".into(), ..Default::default() };
    assert!(
        client.list_workflow_definitions(list).await.unwrap().into_inner().definitions.is_empty(),
        "nothing stored"
    );
    mesh.shutdown().await;
}

/// The issue's example, as written, over REST.
async fn definitions_over_rest(backend: Backend) {
    let services = [ServiceKind::Orchestrator, ServiceKind::Gateway];
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, &services, &[]).await;
    let gateway = mesh.mesh().endpoints.gateway.unwrap();
    let json_type = [("content-type", "application/json")];
    let example = r#"{"definition":{"name":"release-notes","steps":[{"name":"review","approval":{}},
        {"name":"notify","http":{"method":"POST","url":"http://127.0.0.1:9/hook","body":"{\"doc\":\"${input.content}\"}"}}]}}"#;
    let (code, _, body) = http_request(gateway, "POST", "/v1/workflowDefinitions", &json_type, example).await;
    assert_eq!(code, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(created["definition"]["version"], json!(1));
    assert_eq!(created["definition"]["steps"][1]["http"]["url"], "http://127.0.0.1:9/hook");
    let (code, _, body) = http_request(gateway, "GET", "/v1/workflowDefinitions/release-notes@1", &[], "").await;
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = http_request(gateway, "GET", "/v1/workflowDefinitions?name=release-notes", &[], "").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("release-notes"), "{body}");
    let bad = r#"{"definition":{"name":"x","steps":[{"name":"a"}]}}"#;
    let (code, _, body) = http_request(gateway, "POST", "/v1/workflowDefinitions", &json_type, bad).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains(r#"step \"a\": kind"#), "{body}");
    mesh.shutdown().await;
}
