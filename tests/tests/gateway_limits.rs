//! The gateway as a server facing the open network: slow or oversized
//! headers, bodies declared too large, cross-site-style bodies, unknown
//! hosts and wrong methods are refused early and cheaply.

use std::time::{Duration, Instant};

use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh, http_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GATEWAY: &[ServiceKind] = &[ServiceKind::Stamping, ServiceKind::Gateway];

/// Reads until the server closes the connection; the bytes it sent.
async fn read_to_close(stream: &mut tokio::net::TcpStream, patience: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(patience, stream.read_to_end(&mut seen)).await;
    read.ok().map(|_| String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_half_sent_headers_are_cut_off() {
    let mesh = TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, GATEWAY, &[]).await;
    let gateway = mesh.mesh().endpoints.gateway.unwrap();
    let started = Instant::now();
    let mut half_sent = Vec::new();
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(gateway).await.unwrap();
        stream.write_all(b"GET /v1/namespaces HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        half_sent.push(stream);
    }
    // One slowloris client: a byte every 2 s never finishes its headers.
    let mut slow = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let dripping = tokio::spawn(async move {
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Drip: aaaaaaaaaa" {
            if slow.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        false
    });
    for stream in &mut half_sent {
        assert!(read_to_close(stream, Duration::from_secs(20)).await.is_some(), "a half-sent request stayed open");
    }
    println!("200 half-sent requests closed {:?} after they began", started.elapsed());
    assert!(dripping.await.unwrap(), "the slowloris connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(25));
    // The server still serves.
    assert_eq!(http_request(gateway, "GET", "/v1/namespaces/a/stamps", &[], "").await.0, 200);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_declared_bodies_foreign_hosts_non_json_and_wrong_methods_are_refused() {
    let vars = [("GATEWAY_ALLOWED_HOSTS", "127.0.0.1,api.example")];
    let mesh = TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, GATEWAY, &vars).await;
    let gateway = mesh.mesh().endpoints.gateway.unwrap();

    let big = "h".repeat(200 * 1024);
    let (code, _, _) = http_request(gateway, "GET", "/v1/namespaces/a/stamps", &[("x-big", &big)], "").await;
    assert_eq!(code, 431, "a 200 KB header");

    // A 10 GB body is announced and none of it is sent: refused at once.
    let mut stream = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let head = "POST /v1/validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered at once")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );

    let json = [("content-type", "application/json")];
    let body = r#"{"content":"x"}"#;
    assert_eq!(http_request(gateway, "POST", "/v1/validate", &json, body).await.0, 200);
    // What a cross-site page can post without a preflight: a form is never
    // taken; a file (text/plain, multipart) only from a non-browser client or
    // a page of this site.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(http_request(gateway, "POST", "/v1/validate", &form, body).await.0, 415);
    for file_type in ["text/plain", "multipart/form-data; boundary=x"] {
        let from_elsewhere = [("content-type", file_type), ("origin", "https://evil.example")];
        let (code, _, answer) = http_request(gateway, "POST", "/v1/validate", &from_elsewhere, body).await;
        assert_eq!(code, 403, "{file_type}: {answer}");
        assert!(answer.contains("HOST_NOT_ALLOWED"), "{answer}");
        // A route that takes no files refuses them whoever sends them.
        let (code, _, answer) =
            http_request(gateway, "POST", "/v1/namespaces/a/stamps:batch", &[("content-type", file_type)], body).await;
        assert_eq!(code, 415, "{file_type}: {answer}");
        assert!(answer.contains("UNSUPPORTED_MEDIA_TYPE"), "{answer}");
    }
    let same_site = [("content-type", "text/plain"), ("origin", &format!("http://{gateway}"))];
    assert_eq!(http_request(gateway, "POST", "/v1/validate", &same_site, "plain text").await.0, 200);

    let (code, headers, _) = http_request(gateway, "DELETE", "/v1/validate", &[], "").await;
    assert_eq!(code, 405);
    assert!(headers.iter().any(|(k, v)| k == "allow" && v == "POST"), "{headers:?}");

    let (code, _, _) = http_request(gateway, "GET", "/v1/namespaces/a/stamps", &[("host", "evil.example")], "").await;
    assert_eq!(code, 421, "a Host outside GATEWAY_ALLOWED_HOSTS");
    mesh.shutdown().await;
}
