//! Requests read from Kafka (`ONEX_INPUT_TOPIC`) and answered on
//! `ONEX_OUTPUT_TOPIC`, against the real broker: every kind answers like
//! its gRPC call; poison records go to the dead-letter topic while the
//! records after them are processed (the reducer's too); two consumers
//! split the partitions; and a consumer SIGKILLed in the middle of 2000
//! requests applies each exactly once.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use omninode_integration_tests::{
    Backend, NodeProcess, ServiceKind, TestDatabase, TestMesh, http_get, kafka, on_both_backends, wait_until,
    workflow_reaches,
};
use omninode_proto::{
    events::v1::EventEnvelope,
    ingress::v1::{self as ingress, request::Request as Kind, response::Result as Answer},
    orchestrator::v1::{self as orch, step_definition::Kind as StepKind},
    reducer::v1::GetNamespaceStatsRequest,
    stamping::v1::{self as stamping, BatchStampItem, BatchStampRequest, StampRequest},
};
use prost::Message as _;
use rdkafka::consumer::StreamConsumer;
use sea_orm::{ConnectionTrait, Database, Statement};

const NODE: &str = env!("CARGO_BIN_EXE_omninode-node");
const INPUT: &str = "requests";
const OUTPUT: &str = "responses";
const PREFIX: &str = "ingress.test";

fn request(kind: Kind) -> Vec<u8> {
    ingress::Request { request: Some(kind) }.encode_to_vec()
}

fn workflow_input(content: &str) -> Option<orch::WorkflowInput> {
    Some(orch::WorkflowInput { content: content.into(), file_path: "in/kafka.md".into(), ..Default::default() })
}

/// A mesh reading requests from a fresh broker.
async fn mesh_with_ingress(backend: Backend, broker: &kafka::Broker, services: &[ServiceKind]) -> TestMesh {
    let bootstrap = broker.bootstrap();
    let vars = [
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
        ("KAFKA_TOPIC_PREFIX", PREFIX),
        ("ONEX_INPUT_TOPIC", INPUT),
        ("ONEX_OUTPUT_TOPIC", OUTPUT),
        ("OUTBOX_POLL_INTERVAL_MS", "50"),
        ("HEALTH_CHECK_INTERVAL_MS", "200"),
        ("AGGREGATION_WINDOW_SIZE_MS", "50"),
    ];
    TestMesh::start_services(TestDatabase::new(backend).await, services, &vars).await
}

/// Every answer read so far, by correlation id.
#[derive(Clone, Default)]
struct Answers(Arc<Mutex<Vec<(kafka::Received, ingress::Response)>>>);

impl Answers {
    /// Reads `consumer` into the collection until the test ends.
    fn collect(consumer: StreamConsumer) -> Self {
        let answers = Self::default();
        let sink = answers.clone();
        tokio::spawn(async move {
            while let Some(record) = kafka::next_received(&consumer, Duration::from_secs(3600)).await {
                let response = match record.header("content-type") {
                    Some("application/json") => json_response(&record.payload),
                    _ => ingress::Response::decode(&*record.payload).expect("answers are ingress.v1.Response"),
                };
                sink.0.lock().unwrap().push((record, response));
            }
        });
        answers
    }

    fn of(&self, correlation_id: &str) -> Vec<(kafka::Received, ingress::Response)> {
        self.0.lock().unwrap().iter().filter(|(_, r)| r.correlation_id == correlation_id).cloned().collect()
    }

    fn all(&self) -> Vec<(kafka::Received, ingress::Response)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits for the answer of `correlation_id` at `stage`.
    async fn wait(&self, correlation_id: &str, stage: ingress::Stage) -> (kafka::Received, ingress::Response) {
        wait_until(&format!("the {stage:?} answer of {correlation_id}"), Duration::from_secs(30), || async {
            self.of(correlation_id).into_iter().find(|(_, r)| r.stage == stage as i32)
        })
        .await
    }
}

/// A JSON answer, read back into the message through its proto3 JSON form.
fn json_response(payload: &[u8]) -> ingress::Response {
    let pool = prost_reflect::DescriptorPool::decode(omninode_proto::FILE_DESCRIPTOR_SET).unwrap();
    let descriptor = pool.get_message_by_name("omninode.ingress.v1.Response").unwrap();
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let message = prost_reflect::DynamicMessage::deserialize(descriptor, &mut deserializer).expect("proto3 JSON");
    message.transcode_to().unwrap()
}

fn workflow_of(answer: &ingress::Response) -> orch::Workflow {
    match answer.result.clone() {
        Some(Answer::StartWorkflow(r)) => r.workflow.unwrap(),
        Some(Answer::RunWorkflow(r)) => r.workflow.unwrap(),
        Some(Answer::ApproveStep(r)) => r.workflow.unwrap(),
        Some(Answer::RejectStep(r)) => r.workflow.unwrap(),
        other => panic!("not a workflow answer: {other:?}"),
    }
}

async fn gated_workflow(
    client: &mut orch::orchestrator_service_client::OrchestratorServiceClient<tonic::transport::Channel>,
    name: &str,
) -> String {
    let request = orch::StartWorkflowRequest {
        namespace: "ingress.kinds".into(),
        input: workflow_input(&format!("gated {name}\n")),
        definition: "gate".into(),
        ..Default::default()
    };
    let id = client.start_workflow(request).await.unwrap().into_inner().workflow.unwrap().workflow_id;
    workflow_reaches(client, &id, orch::WorkflowState::Waiting, Duration::from_secs(30)).await;
    id
}

on_both_backends!(every_kind_of_request_is_answered_like_its_grpc_call);

async fn every_kind_of_request_is_answered_like_its_grpc_call(backend: Backend) {
    let broker = kafka::Broker::start().await;
    let mesh = mesh_with_ingress(backend, &broker, &[ServiceKind::Stamping, ServiceKind::Orchestrator]).await;
    let answers = Answers::collect(kafka::consumer(&broker.bootstrap(), &[OUTPUT.to_owned()], 3));
    let events = kafka::consumer(&broker.bootstrap(), &[format!("{PREFIX}.evt.stamp-created.v1")], 3);
    let (mut stamping_client, mut orchestrator) = (mesh.stamping().await, mesh.orchestrator().await);

    // Two workflows that wait for a decision, for approve_step and reject_step.
    let review = orch::StepDefinition {
        name: "review".into(),
        kind: Some(StepKind::Approval(orch::ApprovalStep::default())),
        ..Default::default()
    };
    let definition = orch::WorkflowDefinition { name: "gate".into(), steps: vec![review], ..Default::default() };
    orchestrator
        .create_workflow_definition(orch::CreateWorkflowDefinitionRequest { definition: Some(definition) })
        .await
        .unwrap();
    let (to_approve, to_reject) =
        (gated_workflow(&mut orchestrator, "a").await, gated_workflow(&mut orchestrator, "b").await);

    let producer = kafka::producer(&broker.bootstrap());
    let stamp = StampRequest {
        namespace: "ingress.kinds".into(),
        content: "stamped from Kafka\n".into(),
        file_path: "in/stamp.md".into(),
        ..Default::default()
    };
    // The idempotency key comes from the header; the correlation id too.
    kafka::produce(
        &producer,
        INPUT,
        "k-stamp",
        &request(Kind::Stamp(stamp.clone())),
        &[("correlation_id", "c-stamp"), ("idempotency_key", "idem-stamp")],
    )
    .await;
    let json = r#"{"stamp":{"namespace":"ingress.kinds","content":"stamped from JSON\n","file_path":"in/json.md","idempotency_key":"idem-json","correlation_id":"c-json"}}"#;
    kafka::produce(&producer, INPUT, "k-json", json.as_bytes(), &[("content-type", "application/json")]).await;
    let batch = BatchStampRequest {
        namespace: "ingress.kinds".into(),
        items: (0..2).map(|i| BatchStampItem { content: format!("batch item {i}\n"), ..Default::default() }).collect(),
        correlation_id: "c-batch".into(),
        ..Default::default()
    };
    kafka::produce(&producer, INPUT, "k-batch", &request(Kind::BatchStamp(batch)), &[]).await;
    let start = orch::StartWorkflowRequest {
        namespace: "ingress.kinds".into(),
        input: workflow_input("started from Kafka\n"),
        correlation_id: "c-start".into(),
        idempotency_key: "idem-start".into(),
        ..Default::default()
    };
    kafka::produce(&producer, INPUT, "k-start", &request(Kind::StartWorkflow(start.clone())), &[]).await;
    let run = orch::RunWorkflowRequest {
        namespace: "ingress.kinds".into(),
        input: workflow_input("run from Kafka\n"),
        correlation_id: "c-run".into(),
        ..Default::default()
    };
    kafka::produce(&producer, INPUT, "k-run", &request(Kind::RunWorkflow(run)), &[]).await;
    let decide = |id: &str| (id.to_owned(), "review".to_owned(), "alice".to_owned());
    let (workflow_id, step_name, approver) = decide(&to_approve);
    let approve = orch::ApproveStepRequest { workflow_id, step_name, approver, comment: "fine".into() };
    kafka::produce(
        &producer,
        INPUT,
        "k-approve",
        &request(Kind::ApproveStep(approve)),
        &[("correlation_id", "c-approve")],
    )
    .await;
    let (workflow_id, step_name, approver) = decide(&to_reject);
    let reject = orch::RejectStepRequest { workflow_id, step_name, approver, comment: "no".into() };
    kafka::produce(&producer, INPUT, "k-reject", &request(Kind::RejectStep(reject)), &[("correlation_id", "c-reject")])
        .await;

    // Stamp: the answer is what gRPC answers for the same request (same record, same stamped content).
    let (record, answer) = answers.wait("c-stamp", ingress::Stage::Done).await;
    assert_eq!(
        (record.key.as_str(), answer.kind.as_str(), answer.request_id.as_str()),
        ("k-stamp", "stamp", "idem-stamp")
    );
    assert_eq!(record.header("event_id"), Some(answer.event_id.as_str()), "the record carries the answer's event id");
    let Some(Answer::Stamp(from_kafka)) = answer.result else { panic!("{answer:?}") };
    assert!(from_kafka.created);
    let again = StampRequest { idempotency_key: "idem-stamp".into(), ..stamp };
    let from_grpc = stamping_client.stamp(again).await.unwrap().into_inner();
    assert!(!from_grpc.created, "the gRPC call finds the stamp the Kafka request made");
    assert_eq!(from_grpc.stamp, from_kafka.stamp);
    assert_eq!(from_grpc.stamped_content, from_kafka.stamped_content);
    let stamp_id = from_kafka.stamp.unwrap().stamp_id;
    let event = wait_until("the stamp's stamp-created event", Duration::from_secs(30), || async {
        let record = kafka::next_record(&events, Duration::from_millis(500)).await?;
        let envelope = EventEnvelope::decode(&*record.2).ok()?;
        match envelope.payload.clone()? {
            omninode_proto::events::v1::event_envelope::Payload::StampCreated(s) if s.stamp_id == stamp_id => {
                Some(envelope)
            }
            _ => None,
        }
    })
    .await;
    assert_eq!(event.namespace, "ingress.kinds");

    // JSON in, JSON out.
    let (record, answer) = answers.wait("c-json", ingress::Stage::Done).await;
    assert_eq!(record.header("content-type"), Some("application/json"));
    let Some(Answer::Stamp(json_stamp)) = answer.result else { panic!("{answer:?}") };
    let stored = stamping_client
        .get_stamp(stamping::GetStampRequest {
            namespace: "ingress.kinds".into(),
            file_hash: json_stamp.stamp.as_ref().unwrap().file_hash.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.stamp, json_stamp.stamp);

    let (_, answer) = answers.wait("c-batch", ingress::Stage::Done).await;
    let Some(Answer::BatchStamp(batch)) = answer.result else { panic!("{answer:?}") };
    assert_eq!((batch.succeeded, batch.failed), (2, 0));

    // Workflows answer twice: accepted, then ended.
    for (correlation, kind) in [("c-start", "start_workflow"), ("c-run", "run_workflow")] {
        let (_, accepted) = answers.wait(correlation, ingress::Stage::Accepted).await;
        let (record, ended) = answers.wait(correlation, ingress::Stage::Ended).await;
        assert_eq!(record.key, format!("k-{}", &correlation[2..]));
        assert_eq!((accepted.kind.as_str(), ended.kind.as_str()), (kind, kind));
        let (first, last) = (workflow_of(&accepted), workflow_of(&ended));
        assert_eq!(first.workflow_id, last.workflow_id);
        assert_eq!(last.state, orch::WorkflowState::Completed as i32, "{last:?}");
        let stored = orchestrator
            .get_workflow(orch::GetWorkflowRequest { workflow_id: last.workflow_id.clone() })
            .await
            .unwrap()
            .into_inner()
            .workflow
            .unwrap();
        assert_eq!((stored.state, &stored.stamp_id), (last.state, &last.stamp_id));
        assert_ne!(accepted.event_id, ended.event_id);
    }
    let (_, started) = answers.wait("c-start", ingress::Stage::Accepted).await;
    let again = orchestrator.start_workflow(start).await.unwrap().into_inner();
    assert!(!again.created, "the same key over gRPC finds the workflow the Kafka request started");
    assert_eq!(again.workflow.unwrap().workflow_id, workflow_of(&started).workflow_id);

    let (_, approved) = answers.wait("c-approve", ingress::Stage::Done).await;
    assert_eq!(workflow_of(&approved).workflow_id, to_approve);
    workflow_reaches(&orchestrator, &to_approve, orch::WorkflowState::Completed, Duration::from_secs(30)).await;
    let (_, rejected) = answers.wait("c-reject", ingress::Stage::Done).await;
    assert_eq!(workflow_of(&rejected).state, orch::WorkflowState::Failed as i32);

    // One answer per request and stage: nothing answered twice.
    let all = answers.all();
    let stages: HashSet<(String, i32)> = all.iter().map(|(_, r)| (r.correlation_id.clone(), r.stage)).collect();
    assert_eq!(stages.len(), all.len(), "{all:?}");
    let (_, metrics) = mesh.admin_get("/metrics").await;
    assert!(metrics.contains("ingress_requests_applied_total{kind=\"stamp\"} 2"), "{metrics}");
    mesh.shutdown().await;
}

/// A poison record: payload, headers, and the dead-letter reason it must get.
type Poison = (&'static [u8], &'static [(&'static str, &'static str)], &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_with_their_reason_and_the_rest_are_processed() {
    let broker = kafka::Broker::start().await;
    let services = [ServiceKind::Stamping, ServiceKind::Orchestrator, ServiceKind::Reducer];
    let mesh = mesh_with_ingress(Backend::Sqlite, &broker, &services).await;
    let answers = Answers::collect(kafka::consumer(&broker.bootstrap(), &[OUTPUT.to_owned()], 3));
    let stamp_topic = format!("{PREFIX}.evt.stamp-created.v1");
    let dead = kafka::consumer(&broker.bootstrap(), &[format!("{INPUT}.dlq"), format!("{stamp_topic}.dlq")], 3);
    let producer = kafka::producer(&broker.bootstrap());

    // One key: one partition, so "after" means after.
    let poison: [Poison; 5] = [
        (b"\xff\x00 not protobuf", &[("correlation_id", "c-garbage")], "UNDECODABLE"),
        (b"{\"stamp\":{}}", &[("content-type", "text/csv")], "UNSUPPORTED_CONTENT_TYPE"),
        (b"{}", &[("content-type", "application/json")], "EMPTY_REQUEST"),
        (b"{\"stamp\": {\"namespace\": ", &[("content-type", "application/json")], "UNDECODABLE"),
        (
            br#"{"stamp":{"namespace":"Not A Namespace!","content":"x","correlation_id":"c-invalid"}}"#,
            &[("content-type", "application/json")],
            "INVALID_REQUEST",
        ),
    ];
    for (payload, headers, _) in &poison {
        kafka::produce(&producer, INPUT, "same-key", payload, headers).await;
    }
    let valid = StampRequest {
        namespace: "ingress.poison".into(),
        content: "fine content\n".into(),
        correlation_id: "c-ok".into(),
        ..Default::default()
    };
    kafka::produce(&producer, INPUT, "same-key", &request(Kind::Stamp(valid)), &[]).await;
    // An event record the reducer cannot read, on its input topic.
    kafka::produce(&producer, &stamp_topic, "junk", b"\x00\x01 not an event", &[]).await;

    let (_, ok) = answers.wait("c-ok", ingress::Stage::Done).await;
    assert!(matches!(ok.result, Some(Answer::Stamp(_))), "{ok:?}");
    let (_, refused) = answers.wait("c-invalid", ingress::Stage::Done).await;
    let Some(Answer::Error(status)) = refused.result else { panic!("{refused:?}") };
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(!status.details.is_empty(), "the error carries its details (ErrorInfo): {status:?}");
    let (_, garbage) = answers.wait("c-garbage", ingress::Stage::Done).await;
    assert!(matches!(garbage.result, Some(Answer::Error(ref s)) if s.code == 3), "{garbage:?}");

    let mut letters = Vec::new();
    while letters.len() < poison.len() + 1 {
        let record = kafka::next_received(&dead, Duration::from_secs(30)).await.expect("a dead letter");
        letters.push(record);
    }
    let from_requests: Vec<&kafka::Received> = letters.iter().filter(|r| r.topic == format!("{INPUT}.dlq")).collect();
    assert_eq!(from_requests.len(), poison.len(), "{letters:?}");
    let mut by_offset: Vec<&kafka::Received> = from_requests.clone();
    by_offset.sort_by_key(|r| r.header("dlq-source-offset").unwrap().parse::<i64>().unwrap());
    for (letter, (payload, _, reason)) in by_offset.iter().zip(&poison) {
        assert_eq!(letter.header("dlq-reason"), Some(*reason), "{letter:?}");
        assert_eq!(letter.payload, payload.to_vec(), "the dead letter is the record as read");
        assert_eq!((letter.key.as_str(), letter.header("dlq-source-topic")), ("same-key", Some(INPUT)));
        assert!(!letter.header("dlq-message").unwrap_or_default().is_empty());
    }
    let reducer_letter =
        letters.iter().find(|r| r.topic == format!("{stamp_topic}.dlq")).expect("the reducer's dead letter");
    assert_eq!(reducer_letter.header("dlq-reason"), Some("UNDECODABLE"));
    assert_eq!(reducer_letter.payload, b"\x00\x01 not an event".to_vec());

    // The reducer went on: the valid stamp's event, after the junk, is counted.
    let mut reducer = mesh.reducer().await;
    wait_until("the reducer counts the stamp after the junk record", Duration::from_secs(30), || {
        let mut reducer = reducer.clone();
        async move {
            let request = GetNamespaceStatsRequest { namespace: "ingress.poison".into() };
            let stats = reducer.get_namespace_stats(request).await.ok()?.into_inner().stats?;
            (stats.total_stamps == 1).then_some(())
        }
    })
    .await;
    let _ = &mut reducer;
    let (_, metrics) = mesh.admin_get("/metrics").await;
    assert!(metrics.contains("ingress_records_dead_lettered_total{reason=\"UNDECODABLE\"} 2"), "{metrics}");
    assert!(metrics.contains("reducer_events_dead_lettered_total 1"), "{metrics}");
    mesh.shutdown().await;
}

/// `omninode request` sends a JSON request and prints its answers until the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_command_prints_a_workflows_answers_until_it_ends() {
    let broker = kafka::Broker::start().await;
    let mesh = mesh_with_ingress(Backend::Sqlite, &broker, &[ServiceKind::Stamping, ServiceKind::Orchestrator]).await;
    let json = r#"{"run_workflow":{"namespace":"ingress.cli","input":{"content":"from the command line\n","file_path":"cli.md"}}}"#;
    let output = tokio::process::Command::new(NODE)
        .args(["request", json, "--bootstrap", &broker.bootstrap(), "--correlation-id", "cli-1", "--wait", "60"])
        .env("ONEX_INPUT_TOPIC", INPUT)
        .env("ONEX_OUTPUT_TOPIC", OUTPUT)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let stages: Vec<&str> = lines.iter().map(|l| l["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["STAGE_ACCEPTED", "STAGE_ENDED"], "{stdout}");
    assert_eq!(lines[1]["runWorkflow"]["workflow"]["state"], "WORKFLOW_STATE_COMPLETED", "{stdout}");
    assert!(lines.iter().all(|l| l["correlationId"] == "cli-1"));

    // A refused request: its error, and a failing exit code.
    let bad = r#"{"stamp":{"namespace":"NOT VALID","content":"x"}}"#;
    let output = tokio::process::Command::new(NODE)
        .args(["request", bad, "--bootstrap", &broker.bootstrap(), "--wait", "60"])
        .env("ONEX_INPUT_TOPIC", INPUT)
        .env("ONEX_OUTPUT_TOPIC", OUTPUT)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    let answer: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(answer["error"]["code"], 3, "{stdout}");
    mesh.shutdown().await;
}

fn node_vars(database: &TestDatabase, bootstrap: &str, name: &str) -> Vec<(String, String)> {
    let mut vars = database.env();
    vars.extend(
        [
            ("OMNINODE_INSTANCE_ID", name),
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap),
            ("KAFKA_TOPIC_PREFIX", PREFIX),
            ("ONEX_INPUT_TOPIC", INPUT),
            ("ONEX_OUTPUT_TOPIC", OUTPUT),
            ("OUTBOX_POLL_INTERVAL_MS", "50"),
            ("HEALTH_CHECK_INTERVAL_MS", "300"),
            ("ORCHESTRATOR_LEASE_MS", "2000"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    vars
}

fn orchestrator_process(database: &TestDatabase, bootstrap: &str, stamping: &NodeProcess, name: &str) -> NodeProcess {
    let mut vars = node_vars(database, bootstrap, name);
    vars.push((omninode_runtime::names::STAMPING.url_variable.to_owned(), stamping.url()));
    NodeProcess::spawn(NODE, "orchestrator", &vars)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_the_group_split_the_partitions_and_report_their_lag() {
    let broker = kafka::Broker::start().await;
    kafka::create_topics(&broker.bootstrap(), &[INPUT, OUTPUT], 4).await;
    let database = TestDatabase::new(Backend::Postgres).await;
    let stamping = NodeProcess::spawn(NODE, "stamping", &node_vars(&database, &broker.bootstrap(), "stamping"));
    let consumers = [
        orchestrator_process(&database, &broker.bootstrap(), &stamping, "orch-a"),
        orchestrator_process(&database, &broker.bootstrap(), &stamping, "orch-b"),
    ];
    for consumer in &consumers {
        wait_until("the orchestrator answers on its admin port", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(consumer.admin).await.ok().map(drop)
        })
        .await;
    }
    wait_until("the two consumers split the 4 partitions", Duration::from_secs(60), || async {
        let (a, b) = (
            consumers[0].metric("ingress_assigned_partitions").await,
            consumers[1].metric("ingress_assigned_partitions").await,
        );
        (a >= 1.0 && b >= 1.0 && a + b == 4.0).then_some(())
    })
    .await;
    // Each reports its lag in the health document.
    for consumer in &consumers {
        let health = wait_until("the ingress component with its lag", Duration::from_secs(10), || async {
            let (_, body) = http_get(consumer.admin, "/health").await;
            let health: serde_json::Value = serde_json::from_str(&body).ok()?;
            health["details"]["ingress"]["consumer_lag"].as_i64().map(|_| health)
        })
        .await;
        assert_eq!(health["details"]["ingress"]["status"], "up");
    }

    let answers = Answers::collect(kafka::consumer(&broker.bootstrap(), &[OUTPUT.to_owned()], 4));
    let producer = kafka::producer(&broker.bootstrap());
    const N: usize = 80;
    for i in 0..N {
        let stamp = StampRequest {
            namespace: "ingress.split".into(),
            content: format!("split {i}\n"),
            correlation_id: format!("s-{i}"),
            ..Default::default()
        };
        kafka::produce(&producer, INPUT, &format!("key-{i}"), &request(Kind::Stamp(stamp)), &[]).await;
    }
    wait_until("every request answered", Duration::from_secs(60), || async {
        (answers.all().len() >= N).then_some(())
    })
    .await;
    let (a, b) = (
        consumers[0].metric("ingress_records_consumed_total").await,
        consumers[1].metric("ingress_records_consumed_total").await,
    );
    assert!(a > 0.0 && b > 0.0, "both consumers took records: {a} and {b}");
    assert_eq!(a + b, N as f64, "each record read by one of them");
}

/// 2000 requests — stamps without keys (deduplicated by position) and
/// workflows with and without keys — read by one consumer that is
/// SIGKILLed mid-way and replaced: each stamp and workflow exists once,
/// each request has its answers, and an answer seen twice on the wire is
/// the same answer (same event id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_batch_applies_each_of_2000_requests_exactly_once() {
    const N: usize = 2000;
    let broker = kafka::Broker::start().await;
    kafka::create_topics(&broker.bootstrap(), &[INPUT, OUTPUT], 3).await;
    let database = TestDatabase::new(Backend::Postgres).await;
    let bootstrap = broker.bootstrap();
    let stamping = NodeProcess::spawn(NODE, "stamping", &node_vars(&database, &bootstrap, "stamping"));
    let first = orchestrator_process(&database, &bootstrap, &stamping, "orch-1");
    let answers = Answers::collect(kafka::consumer(&bootstrap, &[OUTPUT.to_owned()], 3));

    let producer = kafka::producer(&bootstrap);
    let requests: Vec<(String, Vec<u8>, bool)> = (0..N)
        .map(|i| {
            let correlation_id = format!("r-{i}");
            let kind = match i % 4 {
                0 | 2 => Kind::Stamp(StampRequest {
                    namespace: "ingress.kill.stamps".into(),
                    content: format!("request {i}\n"),
                    correlation_id: correlation_id.clone(),
                    ..Default::default()
                }),
                1 => Kind::StartWorkflow(orch::StartWorkflowRequest {
                    namespace: "ingress.kill.flows".into(),
                    input: workflow_input(&format!("workflow {i}\n")),
                    correlation_id: correlation_id.clone(),
                    ..Default::default()
                }),
                _ => Kind::RunWorkflow(orch::RunWorkflowRequest {
                    namespace: "ingress.kill.flows".into(),
                    input: workflow_input(&format!("workflow {i}\n")),
                    correlation_id: correlation_id.clone(),
                    idempotency_key: format!("run-{i}"),
                    ..Default::default()
                }),
            };
            (correlation_id, request(kind), i % 2 == 1)
        })
        .collect();
    let sends = requests.iter().map(|(c, payload, _)| kafka::produce(&producer, INPUT, c, payload, &[]));
    futures::future::join_all(sends).await;

    wait_until("a quarter answered before the kill", Duration::from_secs(120), || async {
        (answers.all().len() >= N / 4).then_some(())
    })
    .await;
    first.signal("KILL");
    let answered_at_kill = answers.all().len();
    assert!(answered_at_kill < N * 3 / 2, "the kill must land mid-run ({answered_at_kill} answers already)");
    let _second = orchestrator_process(&database, &bootstrap, &stamping, "orch-2");

    let complete = |all: &[(kafka::Received, ingress::Response)]| {
        let mut seen: HashSet<(&str, i32)> = HashSet::new();
        for (_, r) in all {
            seen.insert((r.correlation_id.as_str(), r.stage));
        }
        requests.iter().all(|(c, _, workflow)| {
            if *workflow {
                seen.contains(&(c.as_str(), ingress::Stage::Accepted as i32))
                    && seen.contains(&(c.as_str(), ingress::Stage::Ended as i32))
            } else {
                seen.contains(&(c.as_str(), ingress::Stage::Done as i32))
            }
        })
    };
    wait_until("every request answered after the restart", Duration::from_secs(240), || async {
        complete(&answers.all()).then_some(())
    })
    .await;

    // Each answer once, or repeated as itself.
    let all = answers.all();
    let mut by_answer: HashMap<(String, i32), HashSet<String>> = HashMap::new();
    for (record, response) in &all {
        assert_eq!(record.header("event_id"), Some(response.event_id.as_str()));
        assert!(!matches!(response.result, Some(Answer::Error(_))), "no request is refused: {response:?}");
        by_answer
            .entry((response.correlation_id.clone(), response.stage))
            .or_default()
            .insert(response.event_id.clone());
    }
    let repeated: Vec<_> = by_answer.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(repeated.is_empty(), "answers given twice with different event ids: {repeated:?}");
    for (_, response) in all.iter().filter(|(_, r)| r.stage == ingress::Stage::Ended as i32) {
        assert_eq!(workflow_of(response).state, orch::WorkflowState::Completed as i32);
    }

    // Each stamp and each workflow exactly once.
    let db = Database::connect(database.env().into_iter().find(|(k, _)| k == "DATABASE_URL").unwrap().1).await.unwrap();
    let count = |sql: &str| {
        let db = db.clone();
        let sql = sql.to_owned();
        async move {
            let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap().unwrap();
            row.try_get_by_index::<i64>(0).unwrap()
        }
    };
    let stamps = count("SELECT COUNT(*) FROM metadata_stamps WHERE namespace = 'ingress.kill.stamps'").await;
    let workflows = count("SELECT COUNT(*) FROM workflow_executions WHERE namespace = 'ingress.kill.flows'").await;
    let workflow_stamps = count("SELECT COUNT(*) FROM metadata_stamps WHERE namespace = 'ingress.kill.flows'").await;
    assert_eq!((stamps, workflows, workflow_stamps), (N as i64 / 2, N as i64 / 2, N as i64 / 2));
    let remembered = count("SELECT COUNT(*) FROM ingress_requests").await;
    assert_eq!(remembered, N as i64, "one remembered request per record");
    println!(
        "{N} requests: {answered_at_kill} answers before the SIGKILL, {} answer records in all ({} distinct)",
        all.len(),
        by_answer.len()
    );
}
