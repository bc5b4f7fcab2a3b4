//! Distributed tracing of a real `omninode up` process exporting over OTLP
//! to a receiver double: one REST RunWorkflow is one trace across the
//! gateway, the orchestrator, stamping, the database, the outbox publish and
//! the reducer batch, with the semantic conventions' attributes; log lines
//! and error bodies name the trace; sampling off exports nothing; a Kafka
//! event carries its `traceparent`.

use std::{net::SocketAddr, path::Path, time::Duration};

use omninode_integration_tests::{
    UpProcess, http_request, kafka,
    otlp::{OtlpDouble, ReceivedSpan},
    wait_until,
};
use serde_json::Value;

const NODE: &str = env!("CARGO_BIN_EXE_omninode-node");
/// The client's own trace and span (the REST call continues them).
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// `omninode up` exporting spans promptly, aggregating quickly.
async fn up(vars: &[(&str, String)], log: Option<&Path>) -> UpProcess {
    let mut vars = vars.to_vec();
    vars.extend([("AGGREGATION_WINDOW_SIZE_MS", "100".to_owned()), ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned())]);
    UpProcess::start(NODE, &vars, log).await
}

fn find<'a>(spans: &'a [ReceivedSpan], what: &str, test: impl Fn(&ReceivedSpan) -> bool) -> &'a ReceivedSpan {
    spans.iter().find(|s| test(s)).unwrap_or_else(|| {
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        panic!("no span for {what} among {names:?}")
    })
}

fn run_workflow_request(
    gateway: SocketAddr,
    namespace: &str,
) -> impl std::future::Future<Output = (u16, Vec<(String, String)>, String)> {
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    async move {
        http_request(
            gateway,
            "POST",
            &format!("/v1/namespaces/{namespace}/workflows:run"),
            &[("content-type", "application/json"), ("traceparent", &traceparent)],
            r#"{"input":{"content":"print('traced')\n","filePath":"traced.py"}}"#,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rest_run_workflow_is_one_trace_across_the_mesh() {
    let otlp = OtlpDouble::start().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", otlp.grpc)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_SERVICE_NAME", "mesh-under-test".to_owned()),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test".to_owned()),
    ];
    let mesh = up(&vars, Some(log.path())).await;
    let (status, _, body) = run_workflow_request(mesh.gateway, "trace.demo").await;
    assert_eq!(status, 201, "{body}");
    let workflow_id =
        serde_json::from_str::<Value>(&body).unwrap()["workflow"]["workflowId"].as_str().unwrap().to_owned();

    // Everything up to the reducer's batch arrives in the client's trace.
    let spans = wait_until("the reducer batch span", Duration::from_secs(30), || async {
        let spans = otlp.trace(CLIENT_TRACE);
        spans.iter().any(|s| s.name == "process reducer batch").then_some(spans)
    })
    .await;
    assert!(spans.iter().all(|s| s.service_name == "mesh-under-test"), "OTEL_SERVICE_NAME");

    let gateway =
        find(&spans, "the REST request", |s| s.kind == 2 && s.attribute("http.request.method") == Some("POST"));
    assert_eq!(gateway.parent_span_id, CLIENT_SPAN, "continues the client's traceparent");
    assert_eq!(gateway.attribute("http.route"), Some("/v1/namespaces/{namespace}/workflows:run"));
    assert_eq!(gateway.attribute("http.response.status_code"), Some("201"));
    assert_eq!(gateway.name, "POST /v1/namespaces/{namespace}/workflows:run");

    let rpc = |service: &str, method: &str, kind: i32| {
        let service = format!("omninode.{service}");
        let method = method.to_owned();
        move |s: &ReceivedSpan| {
            s.kind == kind
                && s.attribute("rpc.system") == Some("grpc")
                && s.attribute("rpc.service") == Some(service.as_str())
                && s.attribute("rpc.method") == Some(method.as_str())
        }
    };
    let run = find(&spans, "RunWorkflow (server)", rpc("orchestrator.v1.OrchestratorService", "RunWorkflow", 2));
    assert_eq!(run.parent_span_id, gateway.span_id, "the orchestrator's call is a child of the gateway's span");
    assert_eq!(run.attribute("rpc.grpc.status_code"), Some("0"));

    let workflow = find(&spans, "the workflow run", |s| {
        s.attribute("workflow.id") == Some(workflow_id.as_str()) && s.name.starts_with("workflow ")
    });
    assert_eq!(workflow.parent_span_id, run.span_id, "the run continues the request that started it");
    for method in ["Hash", "Stamp"] {
        let client = find(&spans, "the call to stamping", rpc("stamping.v1.StampingService", method, 3));
        let step = spans.iter().find(|s| s.span_id == client.parent_span_id).expect("the client span's parent");
        assert!(step.name.starts_with("step "), "{} is a child of a step: {}", client.name, step.name);
        assert_eq!(step.parent_span_id, workflow.span_id);
        let server = find(&spans, "stamping's server span", rpc("stamping.v1.StampingService", method, 2));
        assert_eq!(server.parent_span_id, client.span_id, "stamping continues the orchestrator's call");
    }
    let insert = find(&spans, "the stamp's transaction", |s| s.name == "INSERT metadata_stamps");
    assert_eq!(insert.attribute("db.system.name"), Some("sqlite"));
    let publishes: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.kind == 4).collect();
    for topic in ["stamp-created", "workflow-state-changed"] {
        assert!(
            publishes.iter().any(|s| s.attribute("messaging.destination.name").is_some_and(|d| d.contains(topic))),
            "an outbox publish to {topic}: {publishes:?}"
        );
    }
    let batch = find(&spans, "the reducer batch", |s| s.name == "process reducer batch");
    assert_eq!(batch.kind, 5, "a consumer span");
    assert!(
        batch.links.iter().any(|(trace, span)| trace == CLIENT_TRACE && publishes.iter().any(|p| &p.span_id == span)),
        "the batch links to the publications it folds in: {:?}",
        batch.links
    );

    // An error names the trace for the user to quote; the log line names it too.
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (status, _, error) = http_request(
        mesh.gateway,
        "GET",
        &format!("/v1/namespaces/trace.demo/stamps/{}", "0".repeat(64)),
        &[("traceparent", &traceparent), ("x-request-id", "trace-test-404")],
        "",
    )
    .await;
    assert_eq!(status, 404);
    assert!(error.contains(&format!("trace_id={CLIENT_TRACE}")), "{error}");
    let line = wait_until("the traced log line", Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(log.path()).unwrap();
        text.lines().find(|l| l.contains("trace-test-404") && l.contains("request refused")).map(str::to_owned)
    })
    .await;
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["span"]["trace_id"], CLIENT_TRACE, "{line}");
    assert_eq!(line["span"]["span_id"].as_str().map(str::len), Some(16), "{line}");
    mesh.stop().await;
}

/// The same over OTLP/HTTP (protobuf), and with sampling off nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_exports_and_sampling_off_exports_nothing() {
    let otlp = OtlpDouble::start().await;
    let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", otlp.http))];
    let mesh = up(&vars, None).await;
    let (status, _, body) = run_workflow_request(mesh.gateway, "trace.http").await;
    assert_eq!(status, 201, "{body}");
    wait_until("spans over OTLP/HTTP", Duration::from_secs(30), || async {
        (otlp.trace(CLIENT_TRACE).len() >= 5).then_some(())
    })
    .await;
    mesh.stop().await;

    let off = OtlpDouble::start().await;
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", off.grpc)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_TRACES_SAMPLER", "always_off".to_owned()),
    ];
    let mesh = up(&vars, None).await;
    let (status, _, body) = run_workflow_request(mesh.gateway, "trace.off").await;
    assert_eq!(status, 201, "{body}");
    // Let the batch processor run a few times, then flush by stopping.
    tokio::time::sleep(Duration::from_secs(1)).await;
    mesh.stop().await;
    assert!(off.spans().is_empty(), "sampling off exported {:?}", off.spans());
}

/// An event on Kafka carries the `traceparent` of its publication, in the trace of the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_event_carries_traceparent() {
    use rdkafka::{Message, message::Headers};
    let broker = kafka::Broker::start().await;
    let otlp = OtlpDouble::start().await;
    let prefix = format!("trace{}", uuid::Uuid::new_v4().simple());
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", otlp.grpc)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap()),
        ("KAFKA_TOPIC_PREFIX", prefix.clone()),
        // As the event tests: a broker not ready at start is retried within a fraction of a second.
        ("KAFKA_STALL_TIMEOUT_MS", "1500".to_owned()),
        ("HEALTH_CHECK_INTERVAL_MS", "200".to_owned()),
        ("OUTBOX_POLL_INTERVAL_MS", "50".to_owned()),
    ];
    let log = tempfile::NamedTempFile::new().unwrap();
    let mesh = up(&vars, Some(log.path())).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (status, _, body) = http_request(
        mesh.gateway,
        "POST",
        "/v1/namespaces/trace.kafka/stamps",
        &[("content-type", "application/json"), ("traceparent", &traceparent)],
        r#"{"content":"kafka traced\n"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let topic = omninode_runtime::events::EventKind::StampCreated.topic(&prefix);
    // A fresh consumer each look, from the beginning: the topic may appear after the first.
    // (A loaded machine can take seconds for a new consumer's metadata and first fetch.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let header = loop {
        let consumer = kafka::consumer(&broker.bootstrap(), std::slice::from_ref(&topic), 3);
        let received =
            tokio::time::timeout(Duration::from_secs(15), rdkafka::consumer::StreamConsumer::recv(&consumer)).await;
        match received {
            Ok(Ok(message)) => {
                let headers: Vec<(String, String)> = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (x.key.to_owned(), String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some((_, value)) = headers.iter().find(|(k, _)| k == "traceparent") {
                    break value.clone();
                }
                seen.push(format!("a record without traceparent: {headers:?}"));
            }
            Ok(Err(err)) => seen.push(format!("consumer error: {err}")),
            Err(_) => seen.push("nothing within 15 s".to_owned()),
        }
        if tokio::time::Instant::now() > deadline {
            let url = format!("sqlite://{}?mode=ro", mesh.data_dir().join("omninode.db").display());
            let outbox = match sea_orm::Database::connect(url).await {
                Ok(db) => {
                    use sea_orm::ConnectionTrait;
                    let sql = "SELECT event_type, COALESCE(trace_context, 'NULL') FROM event_outbox";
                    let statement = sea_orm::Statement::from_string(db.get_database_backend(), sql);
                    let rows = db.query_all_raw(statement).await.unwrap_or_default();
                    rows.iter()
                        .map(|r| {
                            let kind: String = r.try_get_by_index(0).unwrap_or_default();
                            let context: String = r.try_get_by_index(1).unwrap_or_default();
                            format!("{kind}: {context}")
                        })
                        .collect::<Vec<_>>()
                }
                Err(err) => vec![format!("cannot read the outbox: {err}")],
            };
            seen.push(format!("outbox rows (type: trace context): {outbox:?}"));
            let log = std::fs::read_to_string(log.path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains("sea_orm_migration")).rev().take(20).collect();
            panic!(
                "no stamp-created record with a traceparent in 120 s: {seen:?}\nmesh log (last lines first): {tail:#?}"
            );
        }
    };
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(
        (parts.len(), parts[1]),
        (4, CLIENT_TRACE),
        "the record's traceparent is in the request's trace: {header}"
    );
    assert_ne!(parts[2], CLIENT_SPAN, "it names the publication span, not the client's");
    mesh.stop().await;
}
