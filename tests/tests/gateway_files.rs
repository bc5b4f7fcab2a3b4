//! Files over REST: raw and multipart uploads to stamp, validate and hash,
//! the stamped file as the answer, a streamed hash of a 50 MB body with flat
//! memory (a real `omninode up` process), and `X-Request-Id`.

use std::{net::SocketAddr, time::Duration};

use omninode_integration_tests::{
    Backend, ServiceKind, TestDatabase, TestMesh, UpProcess, http_request, http_request_bytes, memory_kib,
    on_both_backends, wait_until,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICES: &[ServiceKind] = &[ServiceKind::Stamping, ServiceKind::Gateway];

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn send(
    gw: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_request_bytes(gw, "POST", path, headers, body).await
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// A multipart/form-data body of `files` (name, type, bytes) and `fields`.
fn multipart(files: &[(&str, &str, &[u8])], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "omninode-test-boundary-7d3f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    for (file_name, content_type, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn stamp_count(gw: SocketAddr, namespace: &str) -> usize {
    let (status, _, body) = http_request(gw, "GET", &format!("/v1/namespaces/{namespace}/stamps"), &[], "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["stamps"].as_array().unwrap().len()
}

on_both_backends!(files_in_and_out_of_stamp_validate_and_hash);

async fn files_in_and_out_of_stamp_validate_and_hash(backend: Backend) {
    let mesh = TestMesh::start_services(TestDatabase::new(backend).await, SERVICES, &[]).await;
    let gw = mesh.mesh().endpoints.gateway.unwrap();
    let source = b"print('hello')\n";

    // The file as the body, its path as a query parameter, its type from Content-Type.
    let (status, headers, body) =
        send(gw, "/v1/namespaces/gw.files/stamps?file_path=src/hello.py", &[("content-type", "text/x-python")], source)
            .await;
    let created = json_of(&body);
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["stamp"]["filePath"], "src/hello.py");
    assert_eq!(created["stamp"]["contentType"], "text/x-python");
    assert!(header(&headers, "x-request-id").is_some_and(|id| !id.is_empty()), "{headers:?}");
    let (_, _, hashed) = http_request(
        gw,
        "POST",
        "/v1/hash",
        &[("content-type", "application/json")],
        &json!({"content": base64_of(source), "normalize": true}).to_string(),
    )
    .await;
    let file_hash = created["stamp"]["fileHash"].as_str().unwrap().to_owned();
    assert_eq!(serde_json::from_str::<Value>(&hashed).unwrap()["hash"], file_hash.as_str());

    // Asking for the file: the stamped file itself, the record in headers (a repeat: 200, not created).
    let (status, headers, stamped) = send(
        gw,
        "/v1/namespaces/gw.files/stamps",
        &[
            ("content-type", "application/octet-stream"),
            ("accept", "application/octet-stream"),
            ("omninode-file-path", "src/hello.py"),
            ("x-request-id", "files-test-1"),
        ],
        source,
    )
    .await;
    let stamped = String::from_utf8(stamped).unwrap();
    assert_eq!(status, 200, "{stamped}");
    assert!(stamped.starts_with("# ONEX:uid="), "{stamped}");
    assert!(stamped.ends_with("print('hello')\n"), "{stamped}");
    assert_eq!(header(&headers, "omninode-file-hash"), Some(file_hash.as_str()), "{headers:?}");
    assert_eq!(header(&headers, "omninode-created"), Some("false"), "{headers:?}");
    assert_eq!(header(&headers, "omninode-stamp-id"), created["stamp"]["stampId"].as_str());
    assert_eq!(header(&headers, "x-request-id"), Some("files-test-1"), "a client's request id is kept");
    assert!(header(&headers, "content-type").is_some_and(|t| t.starts_with("text/plain")), "{headers:?}");

    // The stamped file validates when uploaded as a file; tampered, it does not.
    let (status, _, verdict) = send(gw, "/v1/validate", &[("content-type", "text/plain")], stamped.as_bytes()).await;
    assert_eq!((status, json_of(&verdict)["valid"].clone()), (200, json!(true)));
    let tampered = stamped.replace("hello", "hullo");
    let (_, _, verdict) = send(gw, "/v1/validate", &[("content-type", "text/plain")], tampered.as_bytes()).await;
    assert_eq!(json_of(&verdict)["valid"], json!(false));

    // A rich stamp asked for by query, as a text file download.
    let (status, _, rich) = send(
        gw,
        "/v1/namespaces/gw.files/stamps?format=STAMP_FORMAT_RICH&file_path=notes.md",
        &[("content-type", "text/markdown"), ("accept", "text/markdown")],
        b"# Notes\n",
    )
    .await;
    assert_eq!(status, 201);
    assert!(String::from_utf8(rich).unwrap().contains("<!-- ONEX"), "rich stamp block");

    // Bytes that are not UTF-8 cannot be stamped: a clear 400 naming the field, nothing stored.
    let before = stamp_count(gw, "gw.files").await;
    let binary = [0xff_u8, 0xfe, 0x00, 0x41];
    let (status, _, error) =
        send(gw, "/v1/namespaces/gw.files/stamps", &[("content-type", "application/octet-stream")], &binary).await;
    let error = json_of(&error);
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["details"][0]["reason"], "VALIDATION_ERROR", "{error}");
    assert_eq!(error["details"][1]["fieldViolations"][0]["field"], "content", "{error}");
    assert_eq!(stamp_count(gw, "gw.files").await, before);

    // Hash takes any bytes; with Accept: text/plain the answer is the hash alone.
    let (status, headers, hash) =
        send(gw, "/v1/hash", &[("content-type", "application/octet-stream"), ("accept", "text/plain")], &binary).await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(hash).unwrap(), blake3::hash(&binary).to_hex().as_str());
    assert_eq!(header(&headers, "omninode-size-bytes"), Some("4"));

    // One file in a multipart form: its name is the path.
    let (content_type, form) = multipart(&[("one.txt", "text/plain", b"one\n")], &[]);
    let (status, _, body) = send(gw, "/v1/namespaces/gw.multi/stamps", &[("content-type", &content_type)], &form).await;
    let one = json_of(&body);
    assert_eq!(status, 201, "{one}");
    assert_eq!(one["stamp"]["filePath"], "one.txt");

    // Several files: one BatchStamp, a result per file, each stored.
    let files: [(&str, &str, &[u8]); 3] =
        [("a.py", "text/x-python", b"a = 1\n"), ("b.md", "text/markdown", b"# b\n"), ("c.txt", "text/plain", b"c\n")];
    let (content_type, form) = multipart(&files, &[("format", "STAMP_FORMAT_RICH")]);
    let (status, _, body) = send(gw, "/v1/namespaces/gw.multi/stamps", &[("content-type", &content_type)], &form).await;
    let batch = json_of(&body);
    assert_eq!(status, 200, "{batch}");
    assert_eq!((batch["succeeded"].clone(), batch["failed"].clone()), (json!(3), json!(0)), "{batch}");
    let paths: Vec<&str> =
        batch["results"].as_array().unwrap().iter().filter_map(|r| r["stamp"]["stamp"]["filePath"].as_str()).collect();
    assert_eq!(paths, ["a.py", "b.md", "c.txt"]);
    assert!(batch["results"][0]["stamp"]["stampedContent"].as_str().unwrap().contains("<!--"), "form field applied");
    assert_eq!(stamp_count(gw, "gw.multi").await, 4);

    // Validate and hash take a one-file form too; validate takes no second file.
    let (content_type, form) = multipart(&[("s.py", "text/plain", stamped.as_bytes())], &[]);
    let (status, _, verdict) = send(gw, "/v1/validate", &[("content-type", &content_type)], &form).await;
    assert_eq!((status, json_of(&verdict)["valid"].clone()), (200, json!(true)));
    let (content_type, form) = multipart(&[("x", "application/octet-stream", &binary)], &[]);
    let (_, _, hashed) = send(gw, "/v1/hash", &[("content-type", &content_type)], &form).await;
    assert_eq!(json_of(&hashed)["hash"], blake3::hash(&binary).to_hex().as_str());
    let (content_type, form) = multipart(&[("a", "text/plain", b"a"), ("b", "text/plain", b"b")], &[]);
    let (status, _, error) = send(gw, "/v1/validate", &[("content-type", &content_type)], &form).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&error));

    // The streamed hash, small: the body as it is.
    let (status, _, streamed) =
        send(gw, "/v1/hash:stream", &[("content-type", "application/octet-stream")], source).await;
    let streamed = json_of(&streamed);
    assert_eq!(status, 200, "{streamed}");
    assert_eq!(streamed["hash"], blake3::hash(source).to_hex().as_str());
    assert_eq!(streamed["sizeBytes"], "15");
    mesh.shutdown().await;
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// 50 MB through `POST /v1/hash:stream` (chunked, over the 32 MiB body limit)
/// of a real `omninode up`: the hash is right and the process's peak memory
/// grows by far less than the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_file_hashes_through_the_stream_with_flat_memory() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mesh = UpProcess::start(env!("CARGO_BIN_EXE_omninode-node"), &[], Some(log.path())).await;
    let (gw, pid) = (mesh.gateway, mesh.pid());
    // Warm up the path (buffers, connection pools) before the baseline.
    let (status, _, _) =
        send(gw, "/v1/hash:stream", &[("content-type", "application/octet-stream")], &[7; 1 << 20]).await;
    assert_eq!(status, 200);
    let (peak_before, _) = memory_kib(pid).expect("its memory");

    const SIZE: usize = 50 * 1000 * 1000;
    let piece: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut expected = blake3::Hasher::new();
    let mut stream = tokio::net::TcpStream::connect(gw).await.unwrap();
    let head = format!(
        "POST /v1/hash:stream HTTP/1.1\r\nHost: {gw}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..SIZE / piece.len() {
        expected.update(&piece);
        stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await.unwrap();
        stream.write_all(&piece).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let json: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(json["hash"], expected.finalize().to_hex().as_str());
    assert_eq!(json["sizeBytes"], SIZE.to_string());

    let (peak_after, rss_after) = memory_kib(pid).expect("its memory");
    let grown_mib = (peak_after.saturating_sub(peak_before)) as f64 / 1024.0;
    println!(
        "50 MB streamed hash: peak RSS {:.1} MiB before, {:.1} MiB after (+{grown_mib:.1} MiB), RSS now {:.1} MiB",
        peak_before as f64 / 1024.0,
        peak_after as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    assert!(grown_mib < 16.0, "peak memory grew by {grown_mib:.1} MiB for a 47.7 MiB upload: it was buffered");

    // A request's id is on the gateway's log line for it.
    let (status, headers, _) =
        http_request(gw, "GET", "/v1/no/such/route", &[("x-request-id", "rid-in-the-logs-42")], "").await;
    assert_eq!((status, header(&headers, "x-request-id")), (404, Some("rid-in-the-logs-42")));
    let log = wait_until("the request's log line", Duration::from_secs(10), || async {
        let log = std::fs::read_to_string(log.path()).unwrap();
        log.lines().find(|line| line.contains("rid-in-the-logs-42")).map(str::to_owned)
    })
    .await;
    let line: Value = serde_json::from_str(&log).unwrap_or_else(|e| panic!("{e}: {log}"));
    assert_eq!(line["span"]["request_id"], "rid-in-the-logs-42", "{line}");
    assert_eq!(line["status"], 404, "{line}");
    mesh.stop().await;
}
