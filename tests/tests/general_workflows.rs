//! General workflows: definitions run with `http`, `approval`, `timer` and
//! `llm` steps against local doubles; approvals, rejections, timeouts,
//! retry from the failed step, pause and resume; the history GetWorkflow
//! returns; and the REST routes of every signal — on both backends.

use std::time::Duration;

use omninode_integration_tests::{
    Backend, ServiceKind, TestDatabase, TestMesh,
    http_double::{HttpDouble, Reply},
    http_request, on_both_backends, reason, wait_until, workflow_reaches,
};
use omninode_proto::events::v1::{EventEnvelope, event_envelope::Payload};
use omninode_proto::orchestrator::v1::{
    self as pb, orchestrator_service_client::OrchestratorServiceClient, step_definition::Kind,
};
use omninode_runtime::events::topics::{DEFAULT_TOPIC_PREFIX, all_topics};
use prost::Message as _;
use serde_json::{Value, json};
use tonic::{Code, transport::Channel};

on_both_backends!(
    http_steps_template_call_and_keep_their_output,
    http_steps_retry_time_out_fail_and_retry_from_the_failed_step,
    approvals_are_decided_once_or_time_out,
    pause_holds_a_workflow_until_resume,
    llm_steps_ask_a_chat_completions_endpoint,
    signals_over_rest,
);

type Client = OrchestratorServiceClient<Channel>;

fn step(name: &str, kind: Kind) -> pb::StepDefinition {
    pb::StepDefinition { name: name.into(), kind: Some(kind), ..Default::default() }
}

fn http(name: &str, method: &str, url: &str, body: &str) -> pb::StepDefinition {
    let http = pb::HttpStep { method: method.into(), url: url.into(), body: body.into(), ..Default::default() };
    step(name, Kind::Http(http))
}

fn approval(name: &str, timeout_ms: u32) -> pb::StepDefinition {
    pb::StepDefinition { timeout_ms, ..step(name, Kind::Approval(pb::ApprovalStep::default())) }
}

fn timer(name: &str, ms: u64) -> pb::StepDefinition {
    step(name, Kind::Timer(pb::TimerStep { wait: Some(pb::timer_step::Wait::DurationMs(ms)) }))
}

fn retry(max_attempts: u32) -> Option<pb::StepRetryPolicy> {
    Some(pb::StepRetryPolicy { max_attempts, initial_backoff_ms: 10, max_backoff_ms: 50 })
}

async fn define(client: &mut Client, name: &str, steps: Vec<pb::StepDefinition>) {
    let definition = pb::WorkflowDefinition { name: name.into(), steps, ..Default::default() };
    let request = pb::CreateWorkflowDefinitionRequest { definition: Some(definition) };
    client.create_workflow_definition(request).await.expect("the definition is valid");
}

fn start_request(definition: &str, content: &str) -> pb::StartWorkflowRequest {
    pb::StartWorkflowRequest {
        namespace: "flows.test".into(),
        input: Some(pb::WorkflowInput {
            content: content.into(),
            file_path: "notes.md".into(),
            context: [("ticket".to_owned(), "T-42".to_owned())].into(),
            ..Default::default()
        }),
        definition: definition.into(),
        ..Default::default()
    }
}

async fn start(client: &mut Client, definition: &str, content: &str) -> String {
    let response = client.start_workflow(start_request(definition, content)).await.expect("started");
    response.into_inner().workflow.unwrap().workflow_id
}

fn state(workflow: &pb::Workflow) -> pb::WorkflowState {
    pb::WorkflowState::try_from(workflow.state).unwrap()
}

async fn get(client: &mut Client, id: &str) -> pb::Workflow {
    let request = pb::GetWorkflowRequest { workflow_id: id.into() };
    client.get_workflow(request).await.unwrap().into_inner().workflow.unwrap()
}

/// Waits until the workflow is in `wanted`.
async fn reach(client: &Client, id: &str, wanted: pb::WorkflowState) -> pb::Workflow {
    workflow_reaches(client, id, wanted, Duration::from_secs(20)).await
}

fn record<'a>(workflow: &'a pb::Workflow, name: &str) -> &'a pb::WorkflowStep {
    workflow.steps.iter().rev().find(|s| s.name == name).unwrap_or_else(|| panic!("no step {name}: {workflow:?}"))
}

/// A step's output as JSON (google.protobuf.Value through its JSON mapping).
fn output(step: &pb::WorkflowStep) -> Value {
    fn to_json(value: &prost_types::Value) -> Value {
        use prost_types::value::Kind;
        match value.kind.as_ref() {
            None | Some(Kind::NullValue(_)) => Value::Null,
            Some(Kind::BoolValue(b)) => json!(b),
            Some(Kind::NumberValue(n)) if n.fract() == 0.0 => json!(*n as i64),
            Some(Kind::NumberValue(n)) => json!(n),
            Some(Kind::StringValue(s)) => json!(s),
            Some(Kind::ListValue(list)) => Value::Array(list.values.iter().map(to_json).collect()),
            Some(Kind::StructValue(s)) => s.fields.iter().map(|(k, v)| (k.clone(), to_json(v))).collect(),
        }
    }
    to_json(step.output.as_ref().unwrap_or_else(|| panic!("step {} has an output", step.name)))
}

async fn mesh_with(backend: Backend, services: &[ServiceKind], extra: &[(&str, &str)]) -> (TestMesh, Client) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, services, extra).await;
    let client = mesh.orchestrator().await;
    (mesh, client)
}

async fn http_steps_template_call_and_keep_their_output(backend: Backend) {
    let double = HttpDouble::start(|request, _| match request.uri.as_str() {
        uri if uri.starts_with("/hooks/") => Reply::json(201, json!({"id": "doc 7", "accepted": true})),
        _ => Reply::json(200, json!({"fetched": true})),
    })
    .await;
    let (mesh, mut client) = mesh_with(backend, &[ServiceKind::Stamping, ServiceKind::Orchestrator], &[]).await;
    let mut notify = http(
        "notify",
        "POST",
        &format!("{}/hooks/${{input.context.ticket}}", double.url()),
        r#"{"doc":"${input.content}","hash":"${steps.hash.output.file_hash}","path":"${input.file_path}"}"#,
    );
    if let Some(Kind::Http(http)) = &mut notify.kind {
        http.headers.insert("x-workflow".into(), "${workflow.id}".into());
        http.headers.insert("authorization".into(), "Bearer ${input.context.ticket}".into());
    }
    let steps = vec![
        step("hash", Kind::Hash(pb::HashStep {})),
        notify,
        http("fetch", "GET", &format!("{}/items/${{steps.notify.output.body.id}}", double.url()), ""),
    ];
    define(&mut client, "publish", steps).await;
    let content = "Release \"7\"\nwith a newline";
    let run = pb::RunWorkflowRequest {
        namespace: "flows.test".into(),
        input: start_request("", content).input,
        definition: "publish".into(),
        ..Default::default()
    };
    let workflow = client.run_workflow(run).await.unwrap().into_inner().workflow.unwrap();
    assert_eq!(state(&workflow), pb::WorkflowState::Completed, "{}", workflow.error_message);
    assert_eq!((workflow.definition.as_str(), workflow.workflow_type.as_str()), ("publish@1", "publish"));

    let requests = double.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let hook = &requests[0];
    assert_eq!((hook.method.as_str(), hook.uri.as_str()), ("POST", "/hooks/T-42"));
    assert_eq!(hook.header("x-workflow"), Some(workflow.workflow_id.as_str()));
    assert_eq!(hook.header("authorization"), Some("Bearer T-42"));
    assert_eq!(hook.header("content-type"), Some("application/json"));
    let body = hook.json();
    assert_eq!(body["doc"], content, "the content arrives JSON-escaped into the body");
    assert_eq!(body["hash"].as_str(), Some(workflow.file_hash.as_str()));
    assert_eq!(workflow.file_hash.len(), 64);
    assert_eq!(requests[1].uri, "/items/doc%207", "a URL value is percent-encoded");

    let notify = record(&workflow, "notify");
    assert_eq!(output(notify), json!({"status": 201, "body": {"id": "doc 7", "accepted": true}}));
    assert_eq!((notify.attempts, notify.attempt_history.len()), (1, 1));
    assert_eq!(output(record(&workflow, "fetch"))["body"], json!({"fetched": true}));
    let states: Vec<_> = workflow.transitions.iter().map(|t| (t.from_state, t.to_state)).collect();
    use pb::WorkflowState::*;
    assert_eq!(
        states,
        [(Pending as i32, Processing as i32), (Processing as i32, Completed as i32)],
        "every transition is in the history"
    );

    // The built-in definition is still the default, exactly as before.
    let builtin = pb::RunWorkflowRequest { input: start_request("", "plain").input, ..run_in("flows.test") };
    let builtin = client.run_workflow(builtin).await.unwrap().into_inner().workflow.unwrap();
    assert_eq!(state(&builtin), Completed);
    assert_eq!((builtin.definition.as_str(), builtin.workflow_type.as_str()), ("stamping", "metadata_stamping"));
    let missing = client.start_workflow(start_request("nope", "x")).await.unwrap_err();
    assert_eq!((missing.code(), reason(&missing)), (Code::NotFound, "DEFINITION_NOT_FOUND"));
    let bad = client.start_workflow(start_request("Not A Name", "x")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    mesh.shutdown().await;
}

fn run_in(namespace: &str) -> pb::RunWorkflowRequest {
    pb::RunWorkflowRequest { namespace: namespace.into(), ..Default::default() }
}

async fn http_steps_retry_time_out_fail_and_retry_from_the_failed_step(backend: Backend) {
    // Fails twice with 503, then succeeds; "/down" always 503 until healed; "/slow" answers late; "/gone" 404.
    let healed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heal = healed.clone();
    let double = HttpDouble::start(move |request, nth| match request.uri.as_str() {
        "/flaky" if nth < 2 => Reply::json(503, json!({"error": "busy"})),
        "/down" if !heal.load(std::sync::atomic::Ordering::SeqCst) => Reply::json(503, json!({"error": "down"})),
        "/slow" => Reply::json(200, json!({})).after(Duration::from_secs(2)),
        "/gone" => Reply::json(404, json!({"error": "no such hook"})),
        _ => Reply::json(200, json!({"ok": true})),
    })
    .await;
    let (mesh, mut client) = mesh_with(backend, &[ServiceKind::Orchestrator], &[]).await;
    let with = |name: &str, path: &str, attempts: u32, timeout_ms: u32| pb::StepDefinition {
        retry: retry(attempts),
        timeout_ms,
        ..http(name, "POST", &format!("{}{path}", double.url()), "{}")
    };
    define(&mut client, "flaky", vec![with("call", "/flaky", 3, 0)]).await;
    define(
        &mut client,
        "down",
        vec![with("first", "/ok", 1, 0), with("call", "/down", 2, 0), with("last", "/ok", 1, 0)],
    )
    .await;
    define(&mut client, "slow", vec![with("call", "/slow", 1, 200)]).await;
    define(&mut client, "gone", vec![with("call", "/gone", 5, 0)]).await;

    let id = start(&mut client, "flaky", "x").await;
    let done = reach(&client, &id, pb::WorkflowState::Completed).await;
    let call = record(&done, "call");
    assert_eq!((call.attempts, call.attempt_history.len()), (3, 3), "retried on 503: {call:?}");
    assert!(call.attempt_history[0].error.contains("503"), "{call:?}");
    assert!(call.attempt_history[2].error.is_empty());

    let id = start(&mut client, "down", "x").await;
    let failed = reach(&client, &id, pb::WorkflowState::Failed).await;
    assert!(failed.error_message.contains("step call failed after 2 attempt(s)"), "{}", failed.error_message);
    assert_eq!(failed.current_step, "call");
    assert_eq!(record(&failed, "call").outcome, pb::StepOutcome::Failed as i32);
    let first_calls = double.requests().iter().filter(|r| r.uri == "/ok").count();
    assert_eq!(first_calls, 1);
    // Fixed on the other side: RetryWorkflow runs from the failed step, keeping the history.
    healed.store(true, std::sync::atomic::Ordering::SeqCst);
    let retried =
        client.retry_workflow(pb::RetryWorkflowRequest { workflow_id: id.clone(), reason: "hook is back".into() });
    let retried = retried.await.unwrap().into_inner().workflow.unwrap();
    assert_ne!(state(&retried), pb::WorkflowState::Failed);
    let done = reach(&client, &id, pb::WorkflowState::Completed).await;
    assert_eq!(double.requests().iter().filter(|r| r.uri == "/ok").count(), 2, "the first step did not run again");
    let names: Vec<_> = done.steps.iter().map(|s| (s.name.as_str(), s.outcome)).collect();
    let (ok, failed_outcome) = (pb::StepOutcome::Succeeded as i32, pb::StepOutcome::Failed as i32);
    assert_eq!(names, [("first", ok), ("call", failed_outcome), ("call", ok), ("last", ok)]);
    let retry_move = done.transitions.iter().find(|t| t.from_state == pb::WorkflowState::Failed as i32).unwrap();
    assert_eq!(retry_move.to_state, pb::WorkflowState::Pending as i32);
    assert!(retry_move.reason.contains("retried from step call: hook is back"), "{retry_move:?}");
    assert!(done.error_message.is_empty());
    let again = client.retry_workflow(pb::RetryWorkflowRequest { workflow_id: id.clone(), ..Default::default() });
    let again = again.await.unwrap_err();
    assert_eq!((again.code(), reason(&again)), (Code::FailedPrecondition, "WRONG_WORKFLOW_STATE"));
    assert!(again.message().contains("COMPLETED"), "the message names the current state: {}", again.message());

    let id = start(&mut client, "slow", "x").await;
    let failed = reach(&client, &id, pb::WorkflowState::Failed).await;
    assert!(failed.error_message.contains("no answer within 200 ms"), "{}", failed.error_message);

    let id = start(&mut client, "gone", "x").await;
    let failed = reach(&client, &id, pb::WorkflowState::Failed).await;
    assert_eq!(record(&failed, "call").attempts, 1, "a 404 is not retried");
    assert!(failed.error_message.contains("404"), "{}", failed.error_message);
    mesh.shutdown().await;
}

async fn approvals_are_decided_once_or_time_out(backend: Backend) {
    let double = HttpDouble::start(|_, _| Reply::json(200, json!({"ok": true}))).await;
    let (mesh, mut client) = mesh_with(backend, &[ServiceKind::Stamping, ServiceKind::Orchestrator], &[]).await;
    let notify =
        http("notify", "POST", &format!("{}/hook", double.url()), r#"{"by":"${steps.review.output.approver}"}"#);
    define(&mut client, "release-notes", vec![approval("review", 0), notify]).await;
    define(&mut client, "quick", vec![approval("review", 400)]).await;
    let topics = all_topics(DEFAULT_TOPIC_PREFIX);
    let mut events = mesh.mesh().bus.as_ref().expect("the in-process bus").subscribe(&topics, 10_000);

    // RunWorkflow returns once the workflow waits.
    let run = pb::RunWorkflowRequest {
        input: start_request("", "x").input,
        definition: "release-notes".into(),
        ..run_in("flows.test")
    };
    let waiting = client.run_workflow(run).await.unwrap().into_inner().workflow.unwrap();
    assert_eq!(state(&waiting), pb::WorkflowState::Waiting);
    assert_eq!((waiting.current_step.as_str(), waiting.wake_at), ("review", None));
    let id = waiting.workflow_id.clone();
    let decide = |step: &str, approver: &str| pb::ApproveStepRequest {
        workflow_id: id.clone(),
        step_name: step.into(),
        approver: approver.into(),
        comment: "looks right".into(),
    };
    for (request, code) in [
        (decide("notify", "alice"), Code::FailedPrecondition),
        (decide("nope", "alice"), Code::NotFound),
        (decide("review", " "), Code::InvalidArgument),
    ] {
        let err = client.approve_step(request).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
    }
    let approved = client.approve_step(decide("review", "alice")).await.unwrap().into_inner().workflow.unwrap();
    assert_ne!(state(&approved), pb::WorkflowState::Waiting);
    // A client repeating its approval gets the same answer; it is applied once.
    client.approve_step(decide("review", "alice")).await.expect("a repeat is not an error");
    let done = reach(&client, &id, pb::WorkflowState::Completed).await;
    assert_eq!(done.steps.iter().filter(|s| s.name == "review").count(), 1);
    let review = record(&done, "review");
    assert_eq!((review.actor.as_str(), review.message.as_str()), ("alice", "looks right"));
    assert_eq!(output(review), json!({"approved": true, "approver": "alice", "comment": "looks right"}));
    assert_eq!(double.requests().len(), 1);
    assert_eq!(double.requests()[0].json(), json!({"by": "alice"}));
    let approval_move = done.transitions.iter().find(|t| t.from_state == pb::WorkflowState::Waiting as i32).unwrap();
    assert_eq!((approval_move.actor.as_str(), approval_move.to_state), ("alice", pb::WorkflowState::Pending as i32));
    let late = pb::RejectStepRequest {
        workflow_id: id.clone(),
        step_name: "review".into(),
        approver: "bob".into(),
        comment: String::new(),
    };
    let late = client.reject_step(late).await.unwrap_err();
    assert_eq!((late.code(), reason(&late)), (Code::FailedPrecondition, "WRONG_WORKFLOW_STATE"));
    assert!(late.message().contains("COMPLETED"), "{}", late.message());

    // Rejected: the workflow fails, saying who and why; nothing after the approval runs.
    let id = start(&mut client, "release-notes", "x").await;
    reach(&client, &id, pb::WorkflowState::Waiting).await;
    let reject = pb::RejectStepRequest {
        workflow_id: id.clone(),
        step_name: "review".into(),
        approver: "bob".into(),
        comment: "not yet".into(),
    };
    let rejected = client.reject_step(reject).await.unwrap().into_inner().workflow.unwrap();
    assert_eq!(state(&rejected), pb::WorkflowState::Failed);
    assert!(rejected.error_message.contains("step review rejected: not yet"), "{}", rejected.error_message);
    assert_eq!(rejected.transitions.last().unwrap().actor, "bob");
    assert_eq!(output(record(&rejected, "review"))["approved"], json!(false));
    assert_eq!(double.requests().len(), 1);
    // The state-change events say which step waits and who decided it.
    let mut changes = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        let envelope = EventEnvelope::decode(event.payload.as_slice()).unwrap();
        if let Some(Payload::WorkflowStateChanged(change)) = envelope.payload
            && change.workflow_id == id
        {
            changes.push((change.to_state, change.step, change.actor, change.definition));
            if change.to_state == pb::WorkflowState::Failed as i32 {
                break;
            }
        }
    }
    let gate = "release-notes@1".to_owned();
    let (waiting, failed) = (pb::WorkflowState::Waiting as i32, pb::WorkflowState::Failed as i32);
    assert!(changes.contains(&(waiting, "review".into(), String::new(), gate.clone())), "{changes:?}");
    assert_eq!(changes.last(), Some(&(failed, "review".into(), "bob".into(), gate)), "{changes:?}");

    // Timed out: nobody decided within the step's timeout.
    let id = start(&mut client, "quick", "x").await;
    let waiting = reach(&client, &id, pb::WorkflowState::Waiting).await;
    assert!(waiting.wake_at.is_some(), "a deadline is shown");
    let failed = reach(&client, &id, pb::WorkflowState::Failed).await;
    assert!(failed.error_message.contains("approval step review timed out"), "{}", failed.error_message);

    // The built-in pipeline has no approvals.
    let builtin =
        client.run_workflow(pb::RunWorkflowRequest { input: start_request("", "x").input, ..run_in("flows.test") });
    let builtin = builtin.await.unwrap().into_inner().workflow.unwrap();
    let request = pb::ApproveStepRequest {
        workflow_id: builtin.workflow_id,
        step_name: "review".into(),
        approver: "a".into(),
        comment: String::new(),
    };
    let err = client.approve_step(request).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    mesh.shutdown().await;
}

async fn pause_holds_a_workflow_until_resume(backend: Backend) {
    let double = HttpDouble::start(|request, _| match request.uri.as_str() {
        "/slow" => Reply::json(200, json!({})).after(Duration::from_millis(800)),
        _ => Reply::json(200, json!({})),
    })
    .await;
    let (mesh, mut client) = mesh_with(backend, &[ServiceKind::Orchestrator], &[]).await;
    let notify = http("notify", "POST", &format!("{}/hook", double.url()), "{}");
    define(&mut client, "later", vec![timer("wait", 1_000), notify.clone()]).await;
    let id = start(&mut client, "later", "x").await;
    let waiting = reach(&client, &id, pb::WorkflowState::Waiting).await;
    assert_eq!(waiting.current_step, "wait");
    let pause = pb::PauseWorkflowRequest { workflow_id: id.clone(), reason: "freeze".into() };
    let paused = client.pause_workflow(pause.clone()).await.unwrap().into_inner().workflow.unwrap();
    assert_eq!(state(&paused), pb::WorkflowState::Paused);
    let again = client.pause_workflow(pause).await.unwrap_err();
    assert_eq!((again.code(), reason(&again)), (Code::FailedPrecondition, "WRONG_WORKFLOW_STATE"));
    assert!(again.message().contains("PAUSED"), "{}", again.message());
    // Past the timer's time: a paused workflow does not move.
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    assert_eq!(state(&get(&mut client, &id).await), pb::WorkflowState::Paused);
    assert!(double.requests().is_empty());
    let resume = pb::ResumeWorkflowRequest { workflow_id: id.clone(), reason: String::new() };
    client.resume_workflow(resume.clone()).await.unwrap();
    let done = reach(&client, &id, pb::WorkflowState::Completed).await;
    assert_eq!(double.requests().len(), 1);
    assert_eq!(done.steps.iter().filter(|s| s.name == "wait").count(), 1, "the timer fired once");
    let moves: Vec<_> = done.transitions.iter().map(|t| pb::WorkflowState::try_from(t.to_state).unwrap()).collect();
    use pb::WorkflowState::*;
    assert_eq!(moves, [Processing, Waiting, Paused, Pending, Processing, Completed]);
    let err = client.resume_workflow(resume).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("COMPLETED"), "{}", err.message());
    let pause = pb::PauseWorkflowRequest { workflow_id: id.clone(), reason: String::new() };
    assert_eq!(client.pause_workflow(pause).await.unwrap_err().code(), Code::FailedPrecondition);

    // Paused while a step runs: the step is interrupted, nothing after it runs, and it runs again on resume.
    let slow = http("slow", "POST", &format!("{}/slow", double.url()), "{}");
    define(&mut client, "busy", vec![slow, notify]).await;
    let id = start(&mut client, "busy", "x").await;
    reach(&client, &id, pb::WorkflowState::Processing).await;
    wait_until("the slow call arrives", Duration::from_secs(10), || {
        std::future::ready(double.requests().iter().any(|r| r.uri == "/slow").then_some(()))
    })
    .await;
    let pause = pb::PauseWorkflowRequest { workflow_id: id.clone(), reason: String::new() };
    client.pause_workflow(pause).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let paused = get(&mut client, &id).await;
    assert_eq!(state(&paused), pb::WorkflowState::Paused, "{paused:?}");
    assert_eq!(paused.current_step, "slow");
    let hooks_before = double.requests().iter().filter(|r| r.uri == "/hook").count();
    assert_eq!(hooks_before, 1, "only the first workflow's notify so far");
    client.resume_workflow(pb::ResumeWorkflowRequest { workflow_id: id.clone(), reason: String::new() }).await.unwrap();
    let done = reach(&client, &id, pb::WorkflowState::Completed).await;
    assert_eq!(double.requests().iter().filter(|r| r.uri == "/slow").count(), 2, "the interrupted step ran again");
    assert_eq!(done.steps.iter().filter(|s| s.name == "slow").count(), 1);
    mesh.shutdown().await;
}

async fn llm_steps_ask_a_chat_completions_endpoint(backend: Backend) {
    let llm = HttpDouble::start(|request, _| {
        let asked = request.json();
        let prompt = asked["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_owned();
        Reply::json(
            200,
            json!({"choices": [{"message": {"role": "assistant", "content": format!("summary of: {prompt}")}}]}),
        )
    })
    .await;
    let hook = HttpDouble::start(|_, _| Reply::json(200, json!({}))).await;
    let base = format!("{}/v1", llm.url());
    let vars = [("LLM_BASE_URL", base.as_str()), ("LLM_API_KEY", "sk-test"), ("LLM_MODEL", "small")];
    let (mesh, mut client) = mesh_with(backend, &[ServiceKind::Orchestrator], &vars).await;
    let ask = pb::LlmStep {
        model: String::new(),
        prompt: "Summarise ${input.content}".into(),
        system: "Be brief about ${input.file_path}.".into(),
    };
    let notify = http("notify", "POST", &format!("{}/hook", hook.url()), r#"{"summary":"${steps.ask.output}"}"#);
    define(&mut client, "summarise", vec![step("ask", Kind::Llm(ask)), notify]).await;
    let id = start(&mut client, "summarise", "the \"notes\"").await;
    let done = reach(&client, &id, pb::WorkflowState::Completed).await;
    let asked = &llm.requests()[0];
    assert_eq!((asked.method.as_str(), asked.uri.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!(asked.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(
        asked.json(),
        json!({"model": "small", "messages": [
            {"role": "system", "content": "Be brief about notes.md."},
            {"role": "user", "content": "Summarise the \"notes\""}
        ]})
    );
    assert_eq!(output(record(&done, "ask")), json!("summary of: Summarise the \"notes\""));
    assert_eq!(hook.requests()[0].json(), json!({"summary": "summary of: Summarise the \"notes\""}));
    mesh.shutdown().await;

    // Not configured: the step fails, saying what to set.
    let (mesh, mut client) = mesh_with(backend, &[ServiceKind::Orchestrator], &[]).await;
    let ask = pb::LlmStep { prompt: "hello".into(), ..Default::default() };
    define(&mut client, "ask", vec![step("ask", Kind::Llm(ask))]).await;
    let id = start(&mut client, "ask", "x").await;
    let failed = reach(&client, &id, pb::WorkflowState::Failed).await;
    assert!(failed.error_message.contains("LLM_BASE_URL"), "{}", failed.error_message);
    mesh.shutdown().await;
}

async fn signals_over_rest(backend: Backend) {
    let double = HttpDouble::start(|request, _| match request.uri.as_str() {
        "/fail" => Reply::json(500, json!({})),
        _ => Reply::json(200, json!({})),
    })
    .await;
    let services = [ServiceKind::Orchestrator, ServiceKind::Gateway];
    let (mesh, _) = mesh_with(backend, &services, &[]).await;
    let gateway = mesh.mesh().endpoints.gateway.unwrap();
    let json_type = [("content-type", "application/json")];
    let post = |path: String, body: Value| async move {
        let (code, _, text) = http_request(gateway, "POST", &path, &json_type, &body.to_string()).await;
        (code, serde_json::from_str::<Value>(&text).unwrap_or_else(|_| json!({"raw": text})))
    };
    let definition = json!({"definition": {"name": "gate", "steps": [
        {"name": "review", "approval": {}},
        {"name": "call", "http": {"method": "POST", "url": format!("{}/fail", double.url())}, "retry": {"maxAttempts": 1}}
    ]}});
    assert_eq!(post("/v1/workflowDefinitions".into(), definition).await.0, 201);
    let start = json!({"input": {"content": "x"}, "definition": "gate"});
    let (code, started) = post("/v1/namespaces/flows.rest/workflows".into(), start.clone()).await;
    assert_eq!(code, 201, "{started}");
    let id = started["workflow"]["workflowId"].as_str().unwrap().to_owned();
    let get = || async {
        let (_, body) = omninode_integration_tests::http_get(gateway, &format!("/v1/workflows/{id}")).await;
        serde_json::from_str::<Value>(&body).unwrap()["workflow"].clone()
    };
    wait_until("WAITING over REST", Duration::from_secs(20), || async {
        (get().await["state"] == "WORKFLOW_STATE_WAITING").then_some(())
    })
    .await;
    let (code, paused) = post(format!("/v1/workflows/{id}:pause"), json!({"reason": "hold"})).await;
    assert_eq!((code, paused["workflow"]["state"].as_str()), (200, Some("WORKFLOW_STATE_PAUSED")), "{paused}");
    let (code, body) = post(format!("/v1/workflows/{id}/steps/review:approve"), json!({"approver": "alice"})).await;
    assert_eq!(code, 409, "not waiting while paused: a state conflict: {body}");
    let (code, _) = post(format!("/v1/workflows/{id}:resume"), json!({})).await;
    assert_eq!(code, 200);
    wait_until("WAITING again", Duration::from_secs(20), || async {
        (get().await["state"] == "WORKFLOW_STATE_WAITING").then_some(())
    })
    .await;
    let (code, body) =
        post(format!("/v1/workflows/{id}/steps/review:approve"), json!({"approver": "alice", "comment": "ok"})).await;
    assert_eq!(code, 200, "{body}");
    let failed = wait_until("FAILED at the call", Duration::from_secs(20), || async {
        let workflow = get().await;
        (workflow["state"] == "WORKFLOW_STATE_FAILED").then_some(workflow)
    })
    .await;
    let review = failed["steps"].as_array().unwrap().iter().find(|s| s["name"] == "review").unwrap().clone();
    assert_eq!(review["output"], json!({"approved": true, "approver": "alice", "comment": "ok"}), "{review}");
    assert_eq!(review["actor"], "alice");
    let (code, body) = post(format!("/v1/workflows/{id}:retry"), json!({})).await;
    assert_eq!(code, 200, "{body}");
    let (code, started) = post("/v1/namespaces/flows.rest/workflows".into(), start).await;
    assert_eq!(code, 201);
    let second = started["workflow"]["workflowId"].as_str().unwrap().to_owned();
    let waiting = wait_until("the second waits", Duration::from_secs(20), || {
        let second = second.clone();
        async move {
            let (_, body) = omninode_integration_tests::http_get(gateway, &format!("/v1/workflows/{second}")).await;
            let workflow = serde_json::from_str::<Value>(&body).unwrap()["workflow"].clone();
            (workflow["state"] == "WORKFLOW_STATE_WAITING").then_some(workflow)
        }
    })
    .await;
    assert_eq!(waiting["currentStep"], "review");
    let (code, body) =
        post(format!("/v1/workflows/{second}/steps/review:reject"), json!({"approver": "bob", "comment": "no"})).await;
    assert_eq!((code, body["workflow"]["state"].as_str()), (200, Some("WORKFLOW_STATE_FAILED")), "{body}");
    mesh.shutdown().await;
}

/// On PostgreSQL the other instances hear of a change once it has committed:
/// each move of a workflow is announced with its id — reading the workflow
/// on hearing it shows the move — and a workflow made runnable again also
/// wakes every claimer.
#[tokio::test]
async fn committed_changes_are_announced_to_the_other_instances() {
    use sea_orm::sqlx::postgres::PgListener;
    const CHANGES: &str = "omninode_workflow_changes";
    const CLAIMERS: &str = "omninode_workflows";
    let (mesh, mut client) = mesh_with(Backend::Postgres, &[ServiceKind::Orchestrator], &[]).await;
    let url = mesh.postgres().expect("a PostgreSQL mesh").url.clone();
    let mut listener = PgListener::connect(&url).await.unwrap();
    listener.listen_all([CHANGES, CLAIMERS]).await.unwrap();
    // Waits for `payload` on `channel`, skipping everything else.
    async fn hear(listener: &mut PgListener, channel: &str, payload: &str) {
        let heard = async {
            loop {
                let notification = listener.recv().await.expect("the listener stays connected");
                if (notification.channel(), notification.payload()) == (channel, payload) {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), heard)
            .await
            .unwrap_or_else(|_| panic!("nothing heard on {channel} with payload {payload:?}"));
    }

    define(&mut client, "unreachable", vec![http("call", "POST", "http://127.0.0.1:9/hook", "{}")]).await;
    let started = client.start_workflow(start_request("unreachable", "x")).await.expect("started");
    let started = started.into_inner().workflow.unwrap();
    let id = started.workflow_id.clone();
    hear(&mut listener, CHANGES, &id).await;
    let heard = get(&mut client, &id).await;
    assert_ne!(state(&heard), state(&started), "the move announced is stored when it is heard: {heard:?}");
    reach(&client, &id, pb::WorkflowState::Failed).await;

    // RetryWorkflow makes it runnable again: every claimer is woken, and its watchers hear of it.
    let retried = client.retry_workflow(pb::RetryWorkflowRequest { workflow_id: id.clone(), ..Default::default() });
    retried.await.expect("a failed workflow can be retried");
    hear(&mut listener, CLAIMERS, "").await;
    hear(&mut listener, CHANGES, &id).await;
    mesh.shutdown().await;
}
