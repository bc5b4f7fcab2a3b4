//! The stamping service end to end: a real server on an ephemeral port, the
//! same suite on SQLite and on PostgreSQL.

use std::time::Duration;

use omninode_integration_tests::{Backend, TestMesh, channel, on_both_backends, reason, wait_until};
use omninode_proto::stamping::v1::{self as pb, stamping_service_client::StampingServiceClient};
use omninode_runtime::events::{EventKind, topics::DEFAULT_TOPIC_PREFIX};
use tonic::{Code, transport::Channel};

async fn client(mesh: &TestMesh) -> StampingServiceClient<Channel> {
    mesh.stamping().await
}

fn stamp_request(namespace: &str, content: &str, format: pb::StampFormat) -> pb::StampRequest {
    pb::StampRequest {
        namespace: namespace.into(),
        content: content.into(),
        file_path: "src/example.py".into(),
        format: format as i32,
        ..Default::default()
    }
}

on_both_backends!(
    stamped_content_validates_and_a_one_byte_edit_fails,
    restamping_the_same_content_reuses_its_record,
    get_stamp_finds_reports_missing_and_rejects_bad_hashes,
    list_stamps_pages_through_everything_once,
    batch_stamp_reports_each_item_and_writes_only_good_ones,
    batch_limits_are_enforced,
    idempotency_key_conflicts_write_nothing,
    namespaces_are_validated_and_isolated,
    oversized_content_is_refused,
    concurrent_stamps_of_one_content_create_one_record,
    concurrent_stamps_share_commits_yet_each_keeps_its_outcome_and_event,
    hash_unary_and_streaming_agree_with_blake3,
    health_reflection_and_metrics_are_served,
);

async fn stamped_content_validates_and_a_one_byte_edit_fails(backend: Backend) {
    let mesh = TestMesh::start(backend, &[]).await;
    let mut client = client(&mesh).await;
    for format in [pb::StampFormat::Lightweight, pb::StampFormat::Rich] {
        let content = format!("def main():\n    return {:?}\n", format);
        let stamped = client.stamp(stamp_request("", &content, format)).await.unwrap().into_inner();
        assert!(stamped.created);
        let record = stamped.stamp.unwrap();
        assert_eq!(record.namespace, "omninode.bridge");
        assert_eq!(record.file_hash.len(), 64);
        assert_eq!(record.content_type, "text/x-python");
        assert_eq!(record.protocol_version, "1.0");
        assert!(stamped.stamped_content.contains(&stamped.stamp_text));
        match format {
            pb::StampFormat::Rich => assert!(stamped.stamp_text.starts_with("<!-- ONEX_METADATA_START -->")),
            _ => assert!(
                stamped
                    .stamped_content
                    .starts_with(&format!("# ONEX:uid={},hash={}", record.stamp_id, record.file_hash))
            ),
        }

        let verdict = client
            .validate(pb::ValidateRequest {
                content: stamped.stamped_content.clone(),
                expected_hash: record.file_hash.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(verdict.valid, "{format:?}: {}", verdict.reason);
        assert_eq!(verdict.current_hash, record.file_hash);
        assert_eq!(verdict.stamps.len(), 1);
        assert_eq!(verdict.stamps[0].stamp_id, record.stamp_id);

        let edited = stamped.stamped_content.replacen("main", "maim", 1);
        let verdict = client
            .validate(pb::ValidateRequest { content: edited, expected_hash: String::new() })
            .await
            .unwrap()
            .into_inner();
        assert!(!verdict.valid);
        assert!(verdict.reason.contains("content changed since it was stamped"), "{}", verdict.reason);
    }

    let verdict = client
        .validate(pb::ValidateRequest { content: "no stamp".into(), expected_hash: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert!(!verdict.valid);
    assert_eq!(verdict.reason, "no stamps found");

    let err =
        client.validate(pb::ValidateRequest { content: "x".into(), expected_hash: "xyz".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "INVALID_HASH_FORMAT");
    mesh.shutdown().await;
}

async fn restamping_the_same_content_reuses_its_record(backend: Backend) {
    let mesh = TestMesh::start(backend, &[]).await;
    let mut client = client(&mesh).await;
    let first = client.stamp(stamp_request("", "body\n", pb::StampFormat::Lightweight)).await.unwrap().into_inner();
    // Stamping the stamped output (old stamp replaced) and the raw content again.
    let again =
        client.stamp(stamp_request("", &first.stamped_content, pb::StampFormat::Rich)).await.unwrap().into_inner();
    let raw =
        client.stamp(stamp_request("", "\n\nbody\n\n\n", pb::StampFormat::Lightweight)).await.unwrap().into_inner();
    assert!(first.created);
    assert!(!again.created && !raw.created);
    let id = first.stamp.as_ref().unwrap().stamp_id.clone();
    assert_eq!(again.stamp.unwrap().stamp_id, id);
    assert_eq!(raw.stamp.unwrap().stamp_id, id);
    assert_eq!(raw.stamp_text, first.stamp_text, "same record, same format: same stamp");
    assert_eq!(raw.stamped_content, format!("{}\n\n\nbody\n\n\n", first.stamp_text), "the caller's layout is kept");
    assert_eq!(
        again.stamped_content.matches("ONEX").count(),
        3,
        "only the rich block remains: {}",
        again.stamped_content
    );
    let page = client.list_stamps(pb::ListStampsRequest::default()).await.unwrap().into_inner();
    assert_eq!(page.stamps.len(), 1);
    mesh.shutdown().await;
}

async fn get_stamp_finds_reports_missing_and_rejects_bad_hashes(backend: Backend) {
    let mesh = TestMesh::start(backend, &[]).await;
    let mut client = client(&mesh).await;
    let stamped = client.stamp(stamp_request("team.docs", "hello", pb::StampFormat::Rich)).await.unwrap().into_inner();
    let record = stamped.stamp.unwrap();
    let found = client
        .get_stamp(pb::GetStampRequest { namespace: "team.docs".into(), file_hash: record.file_hash.clone() })
        .await
        .unwrap()
        .into_inner()
        .stamp
        .unwrap();
    assert_eq!(found, record, "the stored record reads back exactly");
    assert_eq!(found.format, pb::StampFormat::Rich as i32);

    let missing = client
        .get_stamp(pb::GetStampRequest { namespace: "other".into(), file_hash: record.file_hash.clone() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "STAMP_NOT_FOUND");
    assert!(missing.message().contains(&record.file_hash));

    let bad = client
        .get_stamp(pb::GetStampRequest { namespace: "team.docs".into(), file_hash: record.file_hash.to_uppercase() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(reason(&bad), "INVALID_HASH_FORMAT");
    mesh.shutdown().await;
}

async fn list_stamps_pages_through_everything_once(backend: Backend) {
    let mesh = TestMesh::start(backend, &[]).await;
    let mut client = client(&mesh).await;
    let mut created = Vec::new();
    for i in 0..25 {
        let r =
            client.stamp(stamp_request("paging", &format!("item {i}"), pb::StampFormat::Lightweight)).await.unwrap();
        created.push(r.into_inner().stamp.unwrap().stamp_id);
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_stamps(pb::ListStampsRequest { namespace: "paging".into(), page_size: 10, page_token: token })
            .await
            .unwrap()
            .into_inner();
        sizes.push(page.stamps.len());
        seen.extend(page.stamps.into_iter().map(|s| s.stamp_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(seen, created, "every record once, oldest first");

    let err = client
        .list_stamps(pb::ListStampsRequest { namespace: "paging".into(), page_size: 10, page_token: "forged".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_token"));
    mesh.shutdown().await;
}

async fn batch_stamp_reports_each_item_and_writes_only_good_ones(backend: Backend) {
    let mesh = TestMesh::start(backend, &[]).await;
    let mut client = client(&mesh).await;
    let item = |content: &str, path: &str| pb::BatchStampItem {
        content: content.into(),
        file_path: path.into(),
        ..Default::default()
    };
    let response = client
        .batch_stamp(pb::BatchStampRequest {
            namespace: "batch".into(),
            items: vec![
                item("alpha", "a.md"),
                item("   \n\n", "empty.txt"),
                item("alpha\n", "copy-of-a.md"),
                item("beta", "bad\npath"),
                pb::BatchStampItem { format: pb::StampFormat::Rich as i32, ..item("gamma", "c.json") },
            ],
            format: pb::StampFormat::Lightweight as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((response.succeeded, response.failed), (3, 2));
    let outcome = |i: usize| response.results[i].outcome.clone().unwrap();
    use pb::batch_stamp_result::Outcome;
    let Outcome::Stamp(a) = outcome(0) else { panic!("item 0 should succeed") };
    let Outcome::Error(empty) = outcome(1) else { panic!("item 1 should fail") };
    let Outcome::Stamp(copy) = outcome(2) else { panic!("item 2 should succeed") };
    let Outcome::Error(bad_path) = outcome(3) else { panic!("item 3 should fail") };
    let Outcome::Stamp(rich) = outcome(4) else { panic!("item 4 should succeed") };
    assert!(a.created && !copy.created);
    assert_eq!(a.stamp.unwrap().stamp_id, copy.stamp.unwrap().stamp_id);
    assert_eq!((empty.code, empty.reason.as_str()), (Code::InvalidArgument as i32, "VALIDATION_ERROR"));
    assert!(empty.message.contains("empty"));
    assert!(bad_path.message.contains("file_path"));
    assert!(rich.stamp_text.contains("content_type: application/json"));
    assert_eq!(response.results.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);

    let stored = client
        .list_stamps(pb::ListStampsRequest { namespace: "batch".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .stamps;
    assert_eq!(stored.len(), 2, "alpha and gamma only");
    mesh.shutdown().await;
}

async fn batch_limits_are_enforced(backend: Backend) {
    let mesh = TestMesh::start(backend, &[("STAMPING_MAX_BATCH_ITEMS", "3")]).await;
    let mut client = client(&mesh).await;
    let empty = client.batch_stamp(pb::BatchStampRequest::default()).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(reason(&empty), "EMPTY_BATCH_REQUEST");
    let items = (0..4).map(|i| pb::BatchStampItem { content: format!("x{i}"), ..Default::default() }).collect();
    let too_many = client.batch_stamp(pb::BatchStampRequest { items, ..Default::default() }).await.unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert!(too_many.message().contains("limit is 3"), "{}", too_many.message());
    let page = client.list_stamps(pb::ListStampsRequest::default()).await.unwrap().into_inner();
    assert!(page.stamps.is_empty(), "a refused batch writes nothing");
    mesh.shutdown().await;
}

async fn idempotency_key_conflicts_write_nothing(backend: Backend) {
    let mesh = TestMesh::start(backend, &[]).await;
    let mut client = client(&mesh).await;
    let keyed = |content: &str| pb::StampRequest {
        idempotency_key: "op-1".into(),
        ..stamp_request("keys", content, pb::StampFormat::Lightweight)
    };
    let first = client.stamp(keyed("one")).await.unwrap().into_inner();
    let retry = client.stamp(keyed("one")).await.unwrap().into_inner();
    assert!(first.created && !retry.created);
    assert_eq!(first.stamp.as_ref().unwrap().idempotency_key, "op-1");
    assert_eq!(first.stamp.unwrap().stamp_id, retry.stamp.unwrap().stamp_id);

    let conflict = client.stamp(keyed("two")).await.unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);
    assert_eq!(reason(&conflict), "OPERATION_ID_CONFLICT");
    assert!(conflict.message().contains("op-1"));
    let stored = client
        .list_stamps(pb::ListStampsRequest { namespace: "keys".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .stamps;
    assert_eq!(stored.len(), 1);
    mesh.shutdown().await;
}

async fn namespaces_are_validated_and_isolated(backend: Backend) {
    let mesh = TestMesh::start(backend, &[]).await;
    let mut client = client(&mesh).await;
    let err = client.stamp(stamp_request("Bad.Namespace", "x", pb::StampFormat::Lightweight)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "NAMESPACE_INVALID");
    assert!(err.message().contains("Bad.Namespace"));

    let a = client.stamp(stamp_request("ns.a", "shared", pb::StampFormat::Lightweight)).await.unwrap().into_inner();
    let b = client.stamp(stamp_request("ns.b", "shared", pb::StampFormat::Lightweight)).await.unwrap().into_inner();
    assert!(a.created && b.created);
    let (a, b) = (a.stamp.unwrap(), b.stamp.unwrap());
    assert_eq!(a.file_hash, b.file_hash);
    assert_ne!(a.stamp_id, b.stamp_id);
    mesh.shutdown().await;
}

async fn oversized_content_is_refused(backend: Backend) {
    let mesh = TestMesh::start(backend, &[("STAMPING_MAX_CONTENT_BYTES", "1024")]).await;
    let mut client = client(&mesh).await;
    let err = client.stamp(stamp_request("", &"x".repeat(1025), pb::StampFormat::Lightweight)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("1025 bytes; the limit is 1024"), "{}", err.message());
    assert!(client.stamp(stamp_request("", &"x".repeat(1024), pb::StampFormat::Lightweight)).await.is_ok());
    mesh.shutdown().await;
}

async fn concurrent_stamps_of_one_content_create_one_record(backend: Backend) {
    let mesh = TestMesh::start(backend, &[]).await;
    let client = client(&mesh).await;
    let calls = (0..16).map(|_| {
        let mut client = client.clone();
        async move { client.stamp(stamp_request("race", "same content", pb::StampFormat::Lightweight)).await }
    });
    let results = futures::future::join_all(calls).await;
    let responses: Vec<pb::StampResponse> =
        results.into_iter().map(|r| r.expect("no call fails").into_inner()).collect();
    assert_eq!(responses.iter().filter(|r| r.created).count(), 1);
    let id = &responses[0].stamp.as_ref().unwrap().stamp_id;
    assert!(responses.iter().all(|r| &r.stamp.as_ref().unwrap().stamp_id == id));
    mesh.shutdown().await;
}

/// Concurrent calls are written in shared transactions (group commit); each
/// must still get its own outcome, and each created record its own event
/// with its own caller's correlation id.
async fn concurrent_stamps_share_commits_yet_each_keeps_its_outcome_and_event(backend: Backend) {
    let mesh = TestMesh::start(backend, &[]).await;
    let topic = EventKind::StampCreated.topic(DEFAULT_TOPIC_PREFIX);
    let mut events = mesh.mesh().bus.as_ref().expect("the in-process bus").subscribe(&[topic], 256);
    let client = client(&mesh).await;
    let mut calls = Vec::new();
    for namespace in ["group.a", "group.b", "group.c"] {
        for i in 0..16 {
            calls.push(pb::StampRequest {
                correlation_id: format!("{namespace}/{i}"),
                ..stamp_request(namespace, &format!("content {i}"), pb::StampFormat::Lightweight)
            });
        }
    }
    // One key, two contents, at once: exactly one wins.
    for content in ["keyed one", "keyed two"] {
        calls.push(pb::StampRequest {
            idempotency_key: "shared-key".into(),
            correlation_id: format!("group.a/{content}"),
            ..stamp_request("group.a", content, pb::StampFormat::Lightweight)
        });
    }
    let results = futures::future::join_all(calls.into_iter().map(|request| {
        let mut client = client.clone();
        async move { (request.correlation_id.clone(), client.stamp(request).await) }
    }))
    .await;

    let mut created = std::collections::HashMap::new();
    let mut conflicts = 0;
    for (correlation, result) in results {
        match result {
            Ok(response) => {
                let response = response.into_inner();
                assert!(response.created, "{correlation} is new content");
                let stamp = response.stamp.unwrap();
                assert_eq!(Some(stamp.namespace.as_str()), correlation.split('/').next());
                created.insert(correlation, stamp.file_hash);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::AlreadyExists, "{correlation}: {status:?}");
                assert!(correlation.starts_with("group.a/keyed"));
                conflicts += 1;
            }
        }
    }
    assert_eq!((created.len(), conflicts), (49, 1));

    for _ in 0..created.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("an event").unwrap();
        let correlation = event.correlation_id.expect("the caller's correlation id");
        let hash = created.remove(&correlation).unwrap_or_else(|| panic!("one event for {correlation}"));
        assert_eq!(event.key, hash, "{correlation}'s event names its own record");
    }
    assert!(created.is_empty());
    mesh.shutdown().await;
}

async fn hash_unary_and_streaming_agree_with_blake3(backend: Backend) {
    let mesh = TestMesh::start(backend, &[]).await;
    let mut client = client(&mesh).await;
    let content: Vec<u8> = (0..(3 * 1024 * 1024 + 7)).map(|i| (i % 251) as u8).collect();
    let expected = blake3::hash(&content).to_hex().to_string();
    let unary = client
        .hash(pb::HashRequest { content: content[..1024].to_vec().into(), normalize: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unary.hash, blake3::hash(&content[..1024]).to_hex().to_string());
    assert_eq!(unary.size_bytes, 1024);
    let text = "# ONEX:uid=u,hash=h,ts=t\nbody\n\n\n\n";
    let normalized = client
        .hash(pb::HashRequest { content: text.as_bytes().to_vec().into(), normalize: true })
        .await
        .unwrap()
        .into_inner();
    let stamped = client.stamp(stamp_request("", "body", pb::StampFormat::Lightweight)).await.unwrap().into_inner();
    assert_eq!(normalized.hash, stamped.stamp.unwrap().file_hash, "normalize hashes as Stamp does");
    let not_text =
        client.hash(pb::HashRequest { content: vec![0xff, 0xfe].into(), normalize: true }).await.unwrap_err();
    assert_eq!(not_text.code(), Code::InvalidArgument);
    assert!(not_text.message().contains("UTF-8"), "{}", not_text.message());
    let chunks: Vec<pb::HashStreamRequest> =
        content.chunks(64 * 1024).map(|c| pb::HashStreamRequest { chunk: c.to_vec().into() }).collect();
    let chunk_count = chunks.len() as u64;
    let streamed = client.hash_stream(futures::stream::iter(chunks)).await.unwrap().into_inner();
    assert_eq!(streamed.hash, expected);
    assert_eq!(streamed.size_bytes, content.len() as u64);
    assert_eq!(streamed.chunks, chunk_count);
    mesh.shutdown().await;
}

async fn health_reflection_and_metrics_are_served(backend: Backend) {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let mesh = TestMesh::start(backend, &[]).await;
    let mut health = HealthClient::new(channel(mesh.stamping_url()).await);
    for service in ["", "omninode.stamping.v1.StampingService"] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "nope.Service".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let (status, body) = mesh.admin_get("/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"healthy""#) && body.contains(r#""database""#), "{body}");
    let (status, body) = mesh.admin_get("/ready").await;
    assert_eq!(status, 200, "{body}");

    let mut client = client(&mesh).await;
    client.stamp(stamp_request("", "metered", pb::StampFormat::Lightweight)).await.unwrap();
    client.stamp(stamp_request("BAD", "metered", pb::StampFormat::Lightweight)).await.unwrap_err();
    // The response body (and with it the metric) finishes just after the client sees it.
    let metrics = wait_until("the failed call's metric", Duration::from_secs(5), || async {
        let (status, metrics) = mesh.admin_get("/metrics").await;
        (status == 200 && metrics.contains("grpc_server_errors_total")).then_some(metrics)
    })
    .await;
    let has = |needle: &str| metrics.lines().any(|l| l.starts_with("grpc_server_requests_total") && l.contains(needle));
    assert!(has(r#"method="Stamp""#) && has(r#"code="OK""#), "{metrics}");
    assert!(
        metrics.lines().any(|l| l.starts_with("grpc_server_errors_total") && l.contains(r#"code="INVALID_ARGUMENT""#)),
        "{metrics}"
    );
    assert!(metrics.contains("grpc_server_request_duration_ms_bucket"), "{metrics}");
    mesh.shutdown().await;
}

/// PostgreSQL only: a database that stops answering turns health NOT_SERVING
/// and /ready 503, and recovers when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_flips_health_and_recovers() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let mesh = TestMesh::start(Backend::Postgres, &[("HEALTH_CHECK_INTERVAL_MS", "100")]).await;
    let mut health = HealthClient::new(channel(mesh.stamping_url()).await);
    let status = |mut h: HealthClient<Channel>| async move {
        h.check(HealthCheckRequest { service: "omninode.stamping.v1.StampingService".into() })
            .await
            .unwrap()
            .into_inner()
            .status
    };
    assert_eq!(status(health.clone()).await, ServingStatus::Serving as i32);

    let pg = mesh.postgres().unwrap();
    pg.take_offline().await;
    let has = |want: ServingStatus| {
        let health = health.clone();
        move || {
            let health = health.clone();
            async move { (status(health).await == want as i32).then_some(()) }
        }
    };
    wait_until("health NOT_SERVING", Duration::from_secs(10), has(ServingStatus::NotServing)).await;
    let (code, body) = mesh.admin_get("/ready").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(r#""status":"unhealthy""#), "{body}");
    let err =
        client(&mesh).await.stamp(stamp_request("", "during outage", pb::StampFormat::Lightweight)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    pg.bring_online().await;
    wait_until("health SERVING again", Duration::from_secs(10), has(ServingStatus::Serving)).await;
    let watched = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
    assert_eq!(watched, ServingStatus::Serving as i32);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_ports() {
    let mesh = TestMesh::start(Backend::Sqlite, &[]).await;
    let (grpc, admin) = (mesh.mesh().endpoints.stamping.unwrap(), mesh.admin_addr());
    mesh.shutdown().await;
    assert!(tokio::net::TcpStream::connect(grpc).await.is_err());
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
}
