//! gRPC-Web on every gRPC server (what a browser speaks): unary calls and a
//! server stream over HTTP/1.1 in both the binary and the base64 text
//! forms, errors in the trailers with their reason, and CORS from
//! `GATEWAY_CORS_ORIGINS` (the gateway's setting).

use std::net::SocketAddr;

use base64::Engine as _;
use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh};
use omninode_proto::{orchestrator::v1 as opb, stamping::v1 as spb};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORIGIN: &str = "http://app.example";

/// One HTTP/1.1 exchange: (status, lower-cased headers, body with any chunked encoding undone).
async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        let (mut decoded, mut rest) = (Vec::new(), body.as_slice());
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..end]).trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 2 + size + 2..];
        }
        body = decoded;
    }
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A gRPC-Web request body: one data frame.
fn frame(message: &impl prost::Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    framed.extend_from_slice(&bytes);
    framed
}

/// The data frames and the trailers of a gRPC-Web response body.
fn unframe(mut body: &[u8]) -> (Vec<Vec<u8>>, Vec<(String, String)>) {
    let (mut messages, mut trailers) = (Vec::new(), Vec::new());
    while body.len() >= 5 {
        let (flag, len) = (body[0], u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize);
        let payload = &body[5..5 + len];
        if flag & 0x80 == 0 {
            messages.push(payload.to_vec());
        } else {
            trailers = String::from_utf8_lossy(payload)
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

async fn call(
    addr: SocketAddr,
    path: &str,
    request: &impl prost::Message,
    text: bool,
) -> (u16, Vec<(String, String)>, Vec<Vec<u8>>, Vec<(String, String)>) {
    let (content_type, body) = if text {
        ("application/grpc-web-text", base64::engine::general_purpose::STANDARD.encode(frame(request)).into_bytes())
    } else {
        ("application/grpc-web+proto", frame(request))
    };
    let headers = [("content-type", content_type), ("accept", content_type), ("x-grpc-web", "1"), ("origin", ORIGIN)];
    let (status, headers, body) = exchange(addr, "POST", path, &headers, &body).await;
    let text = text && header(&headers, "content-type").is_some_and(|t| t.starts_with("application/grpc-web-text"));
    // The text form is base64 per chunk: decode each four-character quantum on its own.
    let body = match text {
        true => body.chunks(4).flat_map(|q| base64::engine::general_purpose::STANDARD.decode(q).unwrap()).collect(),
        false => body,
    };
    let (messages, trailers) = unframe(&body);
    (status, headers, messages, trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_call_every_grpc_server_over_grpc_web() {
    let services = [ServiceKind::Stamping, ServiceKind::Orchestrator];
    let mesh = TestMesh::start_services(
        TestDatabase::new(Backend::Sqlite).await,
        &services,
        &[("GATEWAY_CORS_ORIGINS", ORIGIN)],
    )
    .await;
    let stamping = mesh.mesh().endpoints.stamping.unwrap();
    let orchestrator = mesh.mesh().endpoints.orchestrator.unwrap();

    let hash = spb::HashRequest { content: b"# Title\n".to_vec().into(), normalize: true };
    let expected = mesh.stamping().await.hash(hash.clone()).await.unwrap().into_inner().hash;
    for text in [false, true] {
        let (status, headers, messages, trailers) =
            call(stamping, "/omninode.stamping.v1.StampingService/Hash", &hash, text).await;
        assert_eq!(status, 200);
        let expected_type = if text { "application/grpc-web-text+proto" } else { "application/grpc-web+proto" };
        assert_eq!(header(&headers, "content-type"), Some(expected_type), "{headers:?}");
        assert_eq!(header(&headers, "access-control-allow-origin"), Some(ORIGIN));
        assert_eq!(header(&trailers, "grpc-status"), Some("0"), "{trailers:?}");
        assert_eq!(spb::HashResponse::decode(messages[0].as_slice()).unwrap().hash, expected);
    }

    // A client's mistake: the code and the reason arrive in the trailers (or headers, with no message).
    let bad = spb::StampRequest { namespace: "Not A Namespace".into(), content: "x".into(), ..Default::default() };
    let (status, headers, messages, trailers) =
        call(stamping, "/omninode.stamping.v1.StampingService/Stamp", &bad, false).await;
    assert_eq!(status, 200);
    assert!(messages.is_empty());
    let all: Vec<_> = headers.iter().chain(&trailers).cloned().collect();
    assert_eq!(header(&all, "grpc-status"), Some("3"), "{all:?}");
    assert_eq!(header(&all, "omninode-error-reason"), Some("NAMESPACE_INVALID"), "{all:?}");

    // A server stream: RunWorkflow, then WatchWorkflow streams it to its end.
    let run = opb::RunWorkflowRequest {
        namespace: "web.demo".into(),
        input: Some(opb::WorkflowInput { content: "from a browser".into(), ..Default::default() }),
        ..Default::default()
    };
    let (status, _, messages, trailers) =
        call(orchestrator, "/omninode.orchestrator.v1.OrchestratorService/RunWorkflow", &run, true).await;
    assert_eq!((status, header(&trailers, "grpc-status")), (200, Some("0")));
    let workflow = opb::RunWorkflowResponse::decode(messages[0].as_slice()).unwrap().workflow.unwrap();
    assert_eq!(workflow.state, opb::WorkflowState::Completed as i32);
    let watch = opb::WatchWorkflowRequest { workflow_id: workflow.workflow_id };
    let (_, _, messages, trailers) =
        call(orchestrator, "/omninode.orchestrator.v1.OrchestratorService/WatchWorkflow", &watch, false).await;
    assert_eq!(header(&trailers, "grpc-status"), Some("0"));
    let last = opb::WatchWorkflowResponse::decode(messages.last().unwrap().as_slice()).unwrap().workflow.unwrap();
    assert_eq!(last.state, opb::WorkflowState::Completed as i32);

    // CORS: the configured origin's preflight is allowed, another origin's is not.
    let preflight = |origin: &'static str| {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type,x-grpc-web,x-api-key"),
        ];
        async move { exchange(stamping, "OPTIONS", "/omninode.stamping.v1.StampingService/Hash", &headers, b"").await }
    };
    let (status, headers, _) = preflight(ORIGIN).await;
    assert!(status < 300, "{status} {headers:?}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(ORIGIN));
    let (_, headers, _) = preflight("http://evil.example").await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None, "{headers:?}");
    mesh.shutdown().await;
}
