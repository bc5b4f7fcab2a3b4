//! The REST gateway in front of real upstream servers: routes from the
//! contracts' annotations, proto3 JSON, grpc-gateway's error mapping.

use std::net::SocketAddr;

use omninode_integration_tests::{
    Backend, ServiceKind, TestDatabase, TestMesh, http_request, on_both_backends, wait_until,
};
use serde_json::{Value, json};

const ALL: &[ServiceKind] =
    &[ServiceKind::Stamping, ServiceKind::Orchestrator, ServiceKind::Reducer, ServiceKind::Gateway];

async fn call(gateway: SocketAddr, method: &str, path: &str, body: Value) -> (u16, Vec<(String, String)>, Value) {
    let text = if body.is_null() { String::new() } else { body.to_string() };
    let (status, headers, body) = http_request(
        gateway,
        method,
        path,
        &[("content-type", "application/json"), ("x-correlation-id", "gw-test")],
        &text,
    )
    .await;
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
    (status, headers, body)
}

on_both_backends!(
    stamping_routes_round_trip,
    errors_map_to_http_and_google_rpc_status,
    workflow_and_stats_routes,
    json_is_complete_and_unknown_fields_are_a_setting
);

/// Responses carry every field, defaults included; unknown request fields
/// are ignored unless `GATEWAY_REJECT_UNKNOWN_FIELDS` is set.
async fn json_is_complete_and_unknown_fields_are_a_setting(backend: Backend) {
    let services = [ServiceKind::Stamping, ServiceKind::Gateway];
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, &services, &[]).await;
    let gw = mesh.mesh().endpoints.gateway.unwrap();
    let (status, _, verdict) =
        call(gw, "POST", "/v1/validate", json!({"content": "plain", "olderClientField": 1})).await;
    assert_eq!(status, 200, "an unknown field is ignored: {verdict}");
    assert_eq!(verdict["valid"], json!(false), "false is written, not left out: {verdict}");
    assert_eq!(verdict["stamps"], json!([]), "{verdict}");
    let (_, _, hashed) = call(gw, "POST", "/v1/hash", json!({"content": ""})).await;
    assert!(hashed.as_object().unwrap().contains_key("hash"), "{hashed}");
    mesh.shutdown().await;

    let strict = [("GATEWAY_REJECT_UNKNOWN_FIELDS", "true")];
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, &services, &strict).await;
    let gw = mesh.mesh().endpoints.gateway.unwrap();
    let (status, _, error) = call(gw, "POST", "/v1/validate", json!({"content": "x", "olderClientField": 1})).await;
    assert_eq!((status, error["code"].clone()), (400, json!(3)), "{error}");
    assert!(error["message"].as_str().unwrap().contains("olderClientField"), "{error}");
    mesh.shutdown().await;
}

async fn stamping_routes_round_trip(backend: Backend) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, ALL, &[]).await;
    let gw = mesh.mesh().endpoints.gateway.unwrap();

    // Both JSON and proto field names are accepted; camelCase comes out.
    let (status, _, stamped) =
        call(gw, "POST", "/v1/namespaces/gw.docs/stamps", json!({"content": "hello rest\n", "file_path": "r.md"}))
            .await;
    assert_eq!(status, 201, "a create answers 201: {stamped}");
    let record = &stamped["stamp"];
    assert_eq!(record["namespace"], "gw.docs", "the path variable sets the namespace");
    assert_eq!(record["contentType"], "text/markdown");
    let hash = record["fileHash"].as_str().unwrap().to_owned();
    assert_eq!(stamped["created"], true);

    let (status, _, again) =
        call(gw, "POST", "/v1/namespaces/gw.docs/stamps", json!({"content": "hello rest\n", "filePath": "r.md"})).await;
    assert_eq!(
        (status, again["created"].clone()),
        (200, json!(false)),
        "a repeat creates nothing, and says so: {again}"
    );

    let (status, headers, got) = call(gw, "GET", &format!("/v1/namespaces/gw.docs/stamps/{hash}"), Value::Null).await;
    assert_eq!(status, 200);
    // The protocol's own headers are not the service's metadata.
    let protocol = |k: &str| k == "grpc-metadata-content-type" || k.starts_with("grpc-metadata-grpc-");
    assert!(!headers.iter().any(|(k, _)| protocol(k)), "{headers:?}");
    assert_eq!(got["stamp"]["stampId"], record["stampId"]);

    let (status, _, verdict) =
        call(gw, "POST", "/v1/validate", json!({"content": stamped["stampedContent"], "expectedHash": hash})).await;
    assert_eq!((status, verdict["valid"].clone()), (200, json!(true)), "{verdict}");

    let (_, _, batch) = call(
        gw,
        "POST",
        "/v1/namespaces/gw.docs/stamps:batch",
        json!({"items": [{"content": "one"}, {"content": "two"}, {"content": "  "}]}),
    )
    .await;
    assert_eq!((batch["succeeded"].clone(), batch["failed"].clone()), (json!(2), json!(1)), "{batch}");

    // Query parameters fill the fields the path does not bind.
    let (status, _, page) = call(gw, "GET", "/v1/namespaces/gw.docs/stamps?pageSize=2", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(page["stamps"].as_array().unwrap().len(), 2);
    let token = page["nextPageToken"].as_str().unwrap();
    let (_, _, rest) =
        call(gw, "GET", &format!("/v1/namespaces/gw.docs/stamps?page_size=2&pageToken={token}"), Value::Null).await;
    assert_eq!(rest["stamps"].as_array().unwrap().len(), 1);

    let (status, _, hashed) = call(gw, "POST", "/v1/hash", json!({"content": "aGVsbG8="})).await;
    assert_eq!(status, 200);
    assert_eq!(hashed["hash"], "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f");
    mesh.shutdown().await;
}

async fn errors_map_to_http_and_google_rpc_status(backend: Backend) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, ALL, &[]).await;
    let gw = mesh.mesh().endpoints.gateway.unwrap();
    let missing = format!("/v1/namespaces/gw/stamps/{}", "0".repeat(64));
    let cases = [
        ("GET", missing.as_str(), Value::Null, 404, 5),
        ("POST", "/v1/namespaces/Bad%20NS/stamps", json!({"content": "x"}), 400, 3),
        ("GET", "/v1/namespaces/gw/stamps/xyz", Value::Null, 400, 3),
        ("POST", "/v1/validate", json!({"content": 5}), 400, 3),
        ("GET", "/v1/nothing/here", Value::Null, 404, 5),
        ("DELETE", "/v1/validate", Value::Null, 405, 12),
        ("GET", "/v1/workflows/not-a-uuid", Value::Null, 400, 3),
    ];
    for (method, path, body, http, grpc) in cases {
        let (status, _, error) = call(gw, method, path, body).await;
        assert_eq!(status, http, "{method} {path}: {error}");
        assert_eq!(error["code"], grpc, "{method} {path}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
        assert!(error["details"].is_array());
    }
    // A client deadline becomes the call's grpc-timeout: a run whose HTTP step
    // waits on a server that never answers cannot settle within it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", silent.local_addr().unwrap());
    let step = json!({"name": "call", "timeout_ms": 2000, "http": {"method": "POST", "url": url}});
    let held = json!({"definition": {"name": "gw-held", "steps": [step]}});
    let (status, _, body) = call(gw, "POST", "/v1/workflowDefinitions", held).await;
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = http_request(
        gw,
        "POST",
        "/v1/namespaces/gw/workflows:run",
        &[("content-type", "application/json"), ("grpc-timeout", "200m")],
        r#"{"definition":"gw-held","input":{"content":"held"}}"#,
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains(r#""code":4"#), "{body}");
    drop(silent);

    let (_, headers, _) = call(gw, "GET", &missing, Value::Null).await;
    assert!(
        headers.iter().any(|(k, v)| k == "grpc-metadata-omninode-error-reason" && v == "STAMP_NOT_FOUND"),
        "{headers:?}"
    );
    assert!(!headers.iter().any(|(k, _)| k.starts_with("grpc-metadata-grpc-")), "{headers:?}");
    mesh.shutdown().await;
}

async fn workflow_and_stats_routes(backend: Backend) {
    let vars = [("AGGREGATION_WINDOW_SIZE_MS", "100")];
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, ALL, &vars).await;
    let gw = mesh.mesh().endpoints.gateway.unwrap();
    let (status, _, run) =
        call(gw, "POST", "/v1/namespaces/gw.flow/workflows:run", json!({"input": {"content": "via rest"}})).await;
    assert_eq!(status, 201, "{run}");
    let workflow = &run["workflow"];
    assert_eq!(workflow["state"], "WORKFLOW_STATE_COMPLETED");
    let id = workflow["workflowId"].as_str().unwrap();
    let (status, _, got) = call(gw, "GET", &format!("/v1/workflows/{id}"), Value::Null).await;
    assert_eq!((status, got["workflow"]["workflowId"].as_str()), (200, Some(id)));
    let (status, _, list) =
        call(gw, "GET", "/v1/namespaces/gw.flow/workflows?state=WORKFLOW_STATE_COMPLETED", Value::Null).await;
    assert_eq!((status, list["workflows"].as_array().map(Vec::len)), (200, Some(1)));
    // A server stream comes as Server-Sent Events.
    let (status, headers, events) = http_request(gw, "GET", &format!("/v1/workflows/{id}:watch"), &[], "").await;
    assert_eq!(status, 200);
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream")), "{headers:?}");
    let data: Vec<Value> = events
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    assert_eq!(data.len(), 1, "{events}");
    assert_eq!(data[0]["workflow"]["state"], "WORKFLOW_STATE_COMPLETED");

    let (status, _, cancel) = call(gw, "POST", &format!("/v1/workflows/{id}:cancel"), json!({})).await;
    assert_eq!(
        (status, cancel["code"].clone()),
        (409, json!(9)),
        "cancelling a finished workflow: a state conflict: {cancel}"
    );

    let stats = wait_until("the namespace's stats", std::time::Duration::from_secs(10), || async {
        let (status, _, body) = call(gw, "GET", "/v1/namespaces/gw.flow/stats", Value::Null).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(stats["stats"]["totalStamps"], "1", "{stats}");
    let (status, _, namespaces) = call(gw, "GET", "/v1/namespaces", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(namespaces["namespaces"][0]["namespace"], "gw.flow");

    let (status, _, rebuilt) = call(gw, "POST", "/v1/namespaces/gw.flow/stats:rebuild", json!({})).await;
    assert_eq!((status, rebuilt["stats"]["totalStamps"].clone()), (200, json!("1")), "{rebuilt}");

    // The stats stream (Server-Sent Events) shows the namespace now; then
    // StartWorkflow answers at once (201, PENDING or later), and the stream
    // shows the new stamp once the workflow has made it. (The stream opens
    // first: the workflow may finish before a later connection's first event.)
    let mut stream = tokio::net::TcpStream::connect(gw).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(format!("GET /v1/namespaces/gw.flow/stats:watch HTTP/1.1\r\nHost: {gw}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buf = vec![0u8; 8192];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut read_until = async |wanted: &str, seen: &mut String| {
        while !seen.contains(wanted) {
            let n =
                tokio::time::timeout_at(deadline, stream.read(&mut buf)).await.expect("stats stream advances").unwrap();
            assert!(n > 0, "stream closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    read_until(r#""totalStamps":"1""#, &mut seen).await;
    assert!(seen.contains("text/event-stream"), "{seen}");
    let (status, _, started) = call(
        gw,
        "POST",
        "/v1/namespaces/gw.flow/workflows",
        json!({"input": {"content": "started via rest"}, "idempotencyKey": "rest-1"}),
    )
    .await;
    assert_eq!((status, started["created"].clone()), (201, json!(true)), "{started}");
    let (status, _, repeat) = call(
        gw,
        "POST",
        "/v1/namespaces/gw.flow/workflows",
        json!({"input": {"content": "started via rest"}, "idempotencyKey": "rest-1"}),
    )
    .await;
    assert_eq!(status, 200, "an idempotent repeat creates nothing: {repeat}");
    assert_eq!(repeat["workflow"]["workflowId"], started["workflow"]["workflowId"]);
    read_until(r#""totalStamps":"2""#, &mut seen).await;
    mesh.shutdown().await;
}
