//! The live event fan-out over WebSocket (`GET /v1/events:subscribe`):
//! filters from the query and from later messages, 500 subscribers beside a
//! deliberately slow one (the others get everything; the slow one is closed
//! with 4001), resuming after a reconnect (the gap delivered once, or said
//! to be too old), and credentials required when keys are set.

use std::time::Duration;

use futures::{SinkExt, StreamExt, stream};
use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh, wait_until};
use omninode_proto::stamping::v1 as spb;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, protocol::frame::coding::CloseCode},
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn mesh(extra: &[(&str, &str)]) -> TestMesh {
    let services = [ServiceKind::Stamping, ServiceKind::Gateway];
    TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, &services, extra).await
}

fn url(mesh: &TestMesh, query: &str) -> String {
    format!("ws://{}/v1/events:subscribe{query}", mesh.mesh().endpoints.gateway.unwrap())
}

async fn connect(mesh: &TestMesh, query: &str) -> Socket {
    tokio_tungstenite::connect_async(url(mesh, query)).await.expect("the WebSocket opens").0
}

/// Stamps `contents` in `namespace` (one BatchStamp): one StampCreated each.
async fn stamp(mesh: &TestMesh, namespace: &str, contents: impl IntoIterator<Item = String>) -> Vec<String> {
    let items = contents
        .into_iter()
        .map(|content| spb::BatchStampItem { content, file_path: "f.md".into(), ..Default::default() })
        .collect();
    let request = spb::BatchStampRequest { namespace: namespace.into(), items, ..Default::default() };
    let response = mesh.stamping().await.batch_stamp(request).await.unwrap().into_inner();
    response
        .results
        .into_iter()
        .map(|r| match r.outcome {
            Some(spb::batch_stamp_result::Outcome::Stamp(stamped)) => stamped.stamp.unwrap().file_hash,
            other => panic!("not stamped: {other:?}"),
        })
        .collect()
}

/// The next JSON text message within `patience`, skipping pings.
async fn next_json(socket: &mut Socket, patience: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(patience, socket.next()).await.ok()?? {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

async fn events(socket: &mut Socket, n: usize) -> Vec<Value> {
    let mut seen = Vec::new();
    while seen.len() < n {
        seen.push(
            next_json(socket, Duration::from_secs(10)).await.unwrap_or_else(|| panic!("{} of {n} events", seen.len())),
        );
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_filter_by_query_then_by_message() {
    let mesh = mesh(&[]).await;
    let mut socket = connect(&mesh, "?namespace=ws.a&eventType=StampCreated").await;
    let mut everything = connect(&mesh, "").await;
    let hashes = stamp(&mesh, "ws.b", ["other".to_owned()]).await;
    let mine = stamp(&mesh, "ws.a", ["mine".to_owned()]).await;
    let event = next_json(&mut socket, Duration::from_secs(10)).await.unwrap();
    assert_eq!((event["eventType"].as_str(), event["namespace"].as_str()), (Some("StampCreated"), Some("ws.a")));
    assert_eq!(event["stampCreated"]["fileHash"].as_str(), Some(mine[0].as_str()));
    assert!(event["eventId"].as_str().is_some_and(|id| !id.is_empty()));
    let all = events(&mut everything, 2).await;
    assert_eq!(all[0]["stampCreated"]["fileHash"].as_str(), Some(hashes[0].as_str()), "none means everything");

    socket.send(Message::text(json!({"namespaces": ["ws.b"]}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut socket, Duration::from_secs(5)).await.unwrap(), json!({"type": "subscribed"}));
    stamp(&mesh, "ws.a", ["mine again".to_owned()]).await;
    let theirs = stamp(&mesh, "ws.b", ["theirs".to_owned()]).await;
    let event = next_json(&mut socket, Duration::from_secs(10)).await.unwrap();
    assert_eq!(event["stampCreated"]["fileHash"].as_str(), Some(theirs[0].as_str()), "the new filter replaced the old");
    socket.send(Message::text(r#"{"eventTypes":["Nope"]}"#)).await.unwrap();
    let answer = next_json(&mut socket, Duration::from_secs(5)).await.unwrap();
    assert_eq!(answer["type"], "error");
    assert!(answer["message"].as_str().unwrap().contains("Nope"), "{answer}");
    assert!(next_json(&mut socket, Duration::from_millis(500)).await.is_none(), "nothing else arrived");

    let refused = tokio_tungstenite::connect_async(url(&mesh, "?eventType=Nope")).await.unwrap_err();
    assert!(refused.to_string().contains("400"), "a bad filter is refused before the upgrade: {refused}");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_subscribers_keep_up_and_a_slow_one_is_closed() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    const SUBSCRIBERS: usize = 500;
    const EVENTS: usize = 1000;
    const BURST: usize = 50;
    // A small kernel buffer per connection: a subscriber that stops reading fills it, then its queue.
    let mesh = mesh(&[("GATEWAY_SEND_BUFFER_BYTES", "8192")]).await;
    let gateway = mesh.mesh().endpoints.gateway.unwrap();
    // The slow one: a tiny receive window, and it reads nothing until the end.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let tcp = socket.connect(gateway).await.unwrap();
    let request = url(&mesh, "?namespace=ws.load").into_client_request().unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)).await.unwrap();

    let sockets: Vec<Socket> =
        stream::iter(0..SUBSCRIBERS).map(|_| connect(&mesh, "?namespace=ws.load")).buffer_unordered(32).collect().await;
    wait_until("every subscriber is registered", Duration::from_secs(10), || async {
        let (_, metrics) = mesh.admin_get("/metrics").await;
        metrics.lines().any(|l| l == format!("ws_subscribers {}", SUBSCRIBERS + 1)).then_some(())
    })
    .await;
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..SUBSCRIBERS).map(|_| AtomicUsize::new(0)).collect());
    let readers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(n, mut socket)| {
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while ids.len() < EVENTS {
                    match next_json(&mut socket, Duration::from_secs(60)).await {
                        Some(event) => ids.push(event["eventId"].as_str().unwrap().to_owned()),
                        None => break,
                    }
                    counts[n].store(ids.len(), Ordering::Relaxed);
                }
                ids
            })
        })
        .collect();
    // Bursts of 50 events, the next once every fast subscriber has read the one before
    // (the slow one's queue of 256 overflows; a fast one's never holds more than two bursts).
    for burst in 0..EVENTS / BURST {
        wait_until("the fast subscribers read the previous burst", Duration::from_secs(10), || {
            let least = counts.iter().map(|c| c.load(Ordering::Relaxed)).min().unwrap();
            std::future::ready((least >= burst.saturating_sub(1) * BURST).then_some(()))
        })
        .await;
        stamp(&mesh, "ws.load", (0..BURST).map(|i| format!("load {burst} {i}"))).await;
    }
    let mut first: Option<Vec<String>> = None;
    for reader in readers {
        let ids = reader.await.unwrap();
        assert_eq!(ids.len(), EVENTS, "every fast subscriber got every event");
        match &first {
            None => first = Some(ids),
            Some(first) => assert_eq!(&ids, first, "in the same order"),
        }
    }
    // Now the slow one reads: what was queued for it, then the close code.
    let mut received = 0;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(30), slow.next()).await.expect("the slow one hears back") {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(frame))) => break frame.expect("a close frame with a code"),
            Some(Ok(_)) => {}
            other => panic!("the slow subscriber expected its close frame, got {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::from(4001), "{close:?}");
    assert!(close.reason.contains("too slow"), "{close:?}");
    assert!(received < EVENTS, "it was cut off ({received} events)");
    let (_, metrics) = mesh.admin_get("/metrics").await;
    let slow_drops = metrics.lines().find_map(|l| l.strip_prefix("ws_slow_disconnects_total ")).unwrap_or("0");
    assert_eq!(slow_drops, "1", "only the slow one was dropped");
    let sent = metrics.lines().find_map(|l| l.strip_prefix("ws_events_sent_total ")).unwrap().parse::<f64>().unwrap();
    assert!(sent >= (SUBSCRIBERS * EVENTS) as f64, "{sent}");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_after_a_reconnect_or_hears_of_the_gap() {
    let mesh = mesh(&[("GATEWAY_WS_HISTORY", "4")]).await;
    let mut socket = connect(&mesh, "?namespace=ws.resume").await;
    stamp(&mesh, "ws.resume", (0..2).map(|i| format!("before {i}"))).await;
    let seen = events(&mut socket, 2).await;
    let last = seen[1]["eventId"].as_str().unwrap().to_owned();
    drop(socket);
    let missed = stamp(&mesh, "ws.resume", (0..2).map(|i| format!("while away {i}"))).await;
    stamp(&mesh, "ws.other", ["not mine".to_owned()]).await;

    let mut again = connect(&mesh, &format!("?namespace=ws.resume&after={last}")).await;
    let replayed = events(&mut again, 2).await;
    let hashes: Vec<_> = replayed.iter().map(|e| e["stampCreated"]["fileHash"].as_str().unwrap().to_owned()).collect();
    assert_eq!(hashes, missed, "the gap, in order");
    let live = stamp(&mesh, "ws.resume", ["live".to_owned()]).await;
    let next = next_json(&mut again, Duration::from_secs(10)).await.unwrap();
    assert_eq!(next["stampCreated"]["fileHash"].as_str(), Some(live[0].as_str()), "then live, nothing twice");

    // The first event is older than the four kept.
    let first = seen[0]["eventId"].as_str().unwrap();
    let mut late = connect(&mesh, &format!("?after={first}")).await;
    let gap = next_json(&mut late, Duration::from_secs(5)).await.unwrap();
    assert_eq!(gap["type"], "gap", "{gap}");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_required_when_keys_are_set() {
    let mesh = mesh(&[("GATEWAY_API_KEYS", "alpha")]).await;
    let refused = tokio_tungstenite::connect_async(url(&mesh, "")).await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    let mut request = url(&mesh, "").into_client_request().unwrap();
    request.headers_mut().insert("x-api-key", "alpha".parse().unwrap());
    let (mut with_header, _) = tokio_tungstenite::connect_async(request).await.expect("a key in a header");
    // A browser cannot set headers: the key rides as a subprotocol.
    let mut request = url(&mesh, "").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "omninode.v1, omninode.key.alpha".parse().unwrap());
    let (mut with_protocol, response) =
        tokio_tungstenite::connect_async(request).await.expect("a key as a subprotocol");
    assert_eq!(response.headers()["sec-websocket-protocol"], "omninode.v1");
    let mut request = url(&mesh, "").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "omninode.v1, omninode.key.wrong".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.unwrap_err().to_string().contains("401"));

    let mut stamping = omninode_integration_tests::stamping_client(mesh.stamping_url()).await;
    let mut request = tonic::Request::new(spb::StampRequest {
        namespace: "ws.auth".into(),
        content: "x".into(),
        ..Default::default()
    });
    request.metadata_mut().insert("x-api-key", "alpha".parse().unwrap());
    stamping.stamp(request).await.unwrap();
    for socket in [&mut with_header, &mut with_protocol] {
        let event = next_json(socket, Duration::from_secs(10)).await.unwrap();
        assert_eq!(event["namespace"], "ws.auth");
    }
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kafka_the_gateway_follows_the_broker() {
    let broker = omninode_integration_tests::kafka::Broker::start().await;
    let bootstrap = broker.bootstrap();
    let vars = [
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
        ("KAFKA_TOPIC_PREFIX", "wsfeed"),
        ("OUTBOX_POLL_INTERVAL_MS", "50"),
    ];
    let mesh = mesh(&vars).await;
    assert!(mesh.mesh().bus.is_none(), "events go through Kafka, not the in-process bus");
    let mut socket = connect(&mesh, "?namespace=ws.kafka&eventType=StampCreated").await;
    // The gateway follows from the moment it holds the topics' partitions: stamp until one arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (hash, event) = loop {
        assert!(tokio::time::Instant::now() < deadline, "no event arrived through Kafka");
        let hash = stamp(&mesh, "ws.kafka", [format!("through kafka {:?}", tokio::time::Instant::now())]).await;
        if let Some(event) = next_json(&mut socket, Duration::from_secs(2)).await {
            break (hash, event);
        }
    };
    assert_eq!(event["eventType"], "StampCreated");
    let later = stamp(&mesh, "ws.kafka", ["one more".to_owned()]).await;
    let mut seen = vec![event["stampCreated"]["fileHash"].as_str().unwrap().to_owned()];
    while !seen.contains(&later[0]) {
        let next = next_json(&mut socket, Duration::from_secs(15)).await.expect("the next event");
        seen.push(next["stampCreated"]["fileHash"].as_str().unwrap().to_owned());
    }
    assert!(seen.contains(&hash[0]) || seen.len() > 1, "{seen:?}");
    mesh.shutdown().await;
    drop(broker);
}
