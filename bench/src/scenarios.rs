//! What is measured, each against a baseline from the same run.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use anyhow::Context;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use omninode_proto::{
    orchestrator::v1::{
        RunWorkflowRequest, WorkflowInput, WorkflowState, orchestrator_service_client::OrchestratorServiceClient,
    },
    reducer::v1::{GetNamespaceStatsRequest, reducer_service_client::ReducerServiceClient},
    stamping::v1::{HashRequest, StampRequest, stamping_service_client::StampingServiceClient},
};
use tonic::transport::{Channel, Endpoint};

use crate::{
    echo::EchoClient,
    load::{self, Call, Measurement, Timing},
    process::MeshAddrs,
    report::{Report, Row, Section},
};

/// The concurrencies every point is measured at.
pub const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Hash payload sizes.
pub const HASH_SIZES: [(usize, &str); 3] = [(1024, "1 KiB"), (64 * 1024, "64 KiB"), (1024 * 1024, "1 MiB")];
/// Bytes of a Stamp or echo payload (a small source file).
pub const SMALL_PAYLOAD: usize = 100;

/// Shared state of one run.
pub struct Bench {
    pub timing: Timing,
    pub sequence: Arc<AtomicU64>,
    /// Distinguishes this run's content from any earlier run's.
    pub run_id: String,
}

impl Bench {
    pub fn new(timing: Timing) -> Self {
        Self { timing, sequence: Arc::new(AtomicU64::new(0)), run_id: uuid::Uuid::new_v4().simple().to_string() }
    }

    /// Measures `call` at every concurrency, printing progress to stderr.
    pub async fn sweep(&self, operation: &str, call: Call) -> Vec<(usize, Measurement)> {
        let mut points = Vec::new();
        for concurrency in CONCURRENCY {
            eprintln!("  {operation} at concurrency {concurrency}");
            points.push((concurrency, load::run(call.clone(), concurrency, self.timing, &self.sequence).await));
        }
        points
    }

    /// Measures `first` and then `second` at each concurrency before the
    /// next, so each pair of points is taken a few seconds apart: on a
    /// machine whose speed drifts within the hour, their ratio compares the
    /// two calls, not two moments.
    pub async fn sweep_pair(
        &self,
        (first_name, first): (&str, Call),
        (second_name, second): (&str, Call),
    ) -> (Vec<(usize, Measurement)>, Vec<(usize, Measurement)>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for concurrency in CONCURRENCY {
            for (operation, call, points) in [(first_name, &first, &mut a), (second_name, &second, &mut b)] {
                eprintln!("  {operation} at concurrency {concurrency}");
                points.push((concurrency, load::run(call.clone(), concurrency, self.timing, &self.sequence).await));
            }
        }
        (a, b)
    }

    /// A ~100-byte source file, distinct for every `n`.
    pub fn source(&self, n: u64) -> String {
        let mut text = format!("# bench {} {n}\ndef f():\n    return {n}\n", self.run_id);
        while text.len() < SMALL_PAYLOAD {
            text.push('#');
        }
        text
    }
}

/// Rows of `points`, with each point's ratio over `baseline` at the same concurrency.
pub fn rows(
    operation: &str,
    points: Vec<(usize, Measurement)>,
    bytes_per_call: Option<u64>,
    baseline: Option<&[(usize, Measurement)]>,
) -> Vec<Row> {
    points
        .into_iter()
        .map(|(concurrency, measurement)| {
            let ratio = baseline
                .and_then(|b| b.iter().find(|(c, _)| *c == concurrency))
                .map(|(_, base)| measurement.per_second() / base.per_second().max(f64::EPSILON));
            Row { operation: operation.to_owned(), concurrency, measurement, bytes_per_call, ratio }
        })
        .collect()
}

/// A channel to `addr` (one HTTP/2 connection, as a client SDK holds).
pub async fn channel(addr: std::net::SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

/// In-process BLAKE3 on `concurrency` threads: the hashing ceiling.
fn raw_blake3(payload: &[u8], concurrency: usize, timing: Timing) -> Measurement {
    let start = Instant::now();
    let record_from = start + timing.warmup;
    let end = record_from + timing.measure;
    let latencies: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    loop {
                        let began = Instant::now();
                        if began >= end {
                            return latencies;
                        }
                        std::hint::black_box(blake3::hash(std::hint::black_box(payload)));
                        if began >= record_from {
                            latencies.push(began.elapsed());
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a hashing thread does not panic")).collect()
    });
    Measurement::from_latencies(latencies, 0, None, start.elapsed().saturating_sub(timing.warmup))
}

/// Raw BLAKE3 vs the Hash RPC, per payload size.
pub async fn hash(bench: &Bench, mesh: MeshAddrs, report: &mut Report) -> anyhow::Result<()> {
    let client = StampingServiceClient::new(channel(mesh.stamping).await?);
    let mut section = Section {
        title: "BLAKE3 in process vs the Hash RPC".into(),
        ratio_means: "Hash RPC bytes/s over in-process BLAKE3 bytes/s at the same concurrency (1.00 = no RPC overhead)"
            .into(),
        rows: Vec::new(),
    };
    for (size, label) in HASH_SIZES {
        // One buffer for both: hashed in process, and sent by every call
        // (a reference, not a copy), as a client holding its content would.
        let payload = bytes::Bytes::from(payload(size));
        let mut raw = Vec::new();
        for concurrency in CONCURRENCY {
            eprintln!("  blake3 {label} at concurrency {concurrency}");
            let timing = bench.timing;
            let payload = payload.clone();
            let measured = tokio::task::spawn_blocking(move || raw_blake3(&payload, concurrency, timing)).await?;
            raw.push((concurrency, measured));
        }
        let call: Call = {
            let (client, payload) = (client.clone(), payload.clone());
            Arc::new(move |_| {
                let mut client = client.clone();
                let content = payload.clone();
                Box::pin(async move {
                    let answer =
                        client.hash(HashRequest { content, normalize: false }).await.map_err(|s| s.to_string())?;
                    if answer.get_ref().size_bytes == size as u64 { Ok(()) } else { Err("wrong size hashed".into()) }
                })
            })
        };
        let rpc = bench.sweep(&format!("Hash RPC {label}"), call).await;
        section.rows.extend(rows(&format!("Hash RPC {label}"), rpc, Some(size as u64), Some(&raw)));
        section.rows.extend(rows(&format!("BLAKE3 in process {label}"), raw, Some(size as u64), None));
    }
    report.sections.push(section);
    Ok(())
}

/// The echo ceiling: calls per second of a 100-byte echo.
pub async fn echo(bench: &Bench, addr: std::net::SocketAddr) -> anyhow::Result<Vec<(usize, Measurement)>> {
    let client = EchoClient::new(channel(addr).await?);
    let call: Call = Arc::new(move |_| {
        let mut client = client.clone();
        Box::pin(async move { client.echo(vec![7u8; SMALL_PAYLOAD]).await.map_err(|s| s.to_string()) })
    });
    Ok(bench.sweep("tonic echo", call).await)
}

/// Stamp of a distinct ~100-byte file per call, persisted (and its event with it).
pub async fn stamp(bench: &Arc<Bench>, mesh: MeshAddrs, namespace: &str) -> anyhow::Result<Vec<(usize, Measurement)>> {
    Ok(bench.sweep(&format!("Stamp ({namespace})"), stamp_call(bench, mesh, namespace).await?).await)
}

/// One Stamp over gRPC of a new ~100-byte source file in `namespace`.
async fn stamp_call(bench: &Arc<Bench>, mesh: MeshAddrs, namespace: &str) -> anyhow::Result<Call> {
    let client = StampingServiceClient::new(channel(mesh.stamping).await?);
    let (bench_ref, namespace_owned) = (bench.clone(), namespace.to_owned());
    Ok(Arc::new(move |n| {
        let mut client = client.clone();
        let request = StampRequest {
            namespace: namespace_owned.clone(),
            content: bench_ref.source(n),
            file_path: format!("bench/{n}.py"),
            ..Default::default()
        };
        Box::pin(async move {
            let answer = client.stamp(request).await.map_err(|s| s.to_string())?;
            if answer.get_ref().created { Ok(()) } else { Err("the stamp already existed".into()) }
        })
    }))
}

/// RunWorkflow end to end: orchestrator → stamping → completed, persisted at each step.
pub async fn run_workflow(
    bench: &Arc<Bench>,
    mesh: MeshAddrs,
    namespace: &str,
) -> anyhow::Result<Vec<(usize, Measurement)>> {
    run_workflow_across(bench, &[mesh.orchestrator], namespace).await
}

/// RunWorkflow spread round robin over the orchestrator instances at `orchestrators`.
pub async fn run_workflow_across(
    bench: &Arc<Bench>,
    orchestrators: &[std::net::SocketAddr],
    namespace: &str,
) -> anyhow::Result<Vec<(usize, Measurement)>> {
    let mut clients = Vec::new();
    for addr in orchestrators {
        clients.push(OrchestratorServiceClient::new(channel(*addr).await?));
    }
    let (bench_ref, namespace_owned) = (bench.clone(), namespace.to_owned());
    let call: Call = Arc::new(move |n| {
        let mut client = clients[n as usize % clients.len()].clone();
        let request = RunWorkflowRequest {
            namespace: namespace_owned.clone(),
            input: Some(WorkflowInput {
                content: bench_ref.source(n),
                file_path: format!("bench/{n}.py"),
                ..Default::default()
            }),
            ..Default::default()
        };
        Box::pin(async move {
            let answer = client.run_workflow(request).await.map_err(|s| s.to_string())?;
            let state = answer.get_ref().workflow.as_ref().map(|w| w.state).unwrap_or_default();
            if state == WorkflowState::Completed as i32 {
                Ok(())
            } else {
                Err(format!("workflow ended in state {state}"))
            }
        })
    });
    Ok(bench.sweep(&format!("RunWorkflow ({namespace}, {} instance(s))", orchestrators.len()), call).await)
}

/// Stamp over gRPC and through the REST gateway (HTTP/1.1 + JSON,
/// keep-alive), the pair measured back to back at each concurrency:
/// `(gRPC, REST)`.
pub async fn gateway_stamp(
    bench: &Arc<Bench>,
    mesh: MeshAddrs,
    namespace: &str,
) -> anyhow::Result<(Vec<(usize, Measurement)>, Vec<(usize, Measurement)>)> {
    let uri = format!("http://{}/v1/namespaces/{namespace}/stamps", mesh.gateway).parse()?;
    let bench_ref = bench.clone();
    // Content is ASCII without quotes or backslashes: no escaping needed beyond newlines.
    let body = move |n| {
        let content = bench_ref.source(n).replace('\n', "\\n");
        format!(r#"{{"content":"{content}","filePath":"bench/{n}.py"}}"#).into()
    };
    let rest = rest_post(uri, http::StatusCode::CREATED, body);
    let grpc = stamp_call(bench, mesh, namespace).await?;
    Ok(bench
        .sweep_pair((&format!("gRPC Stamp ({namespace})"), grpc), (&format!("REST Stamp ({namespace})"), rest))
        .await)
}

/// POSTs `body(n)` as JSON to `uri` over keep-alive HTTP/1.1; a call
/// succeeds when the gateway answers `expected`.
fn rest_post(
    uri: http::Uri,
    expected: http::StatusCode,
    body: impl Fn(u64) -> bytes::Bytes + Send + Sync + 'static,
) -> Call {
    let http: Client<HttpConnector, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    Arc::new(move |n| {
        let request = http::Request::post(uri.clone())
            .header("content-type", "application/json")
            .body(Full::new(body(n)))
            .expect("a valid request");
        let http = http.clone();
        Box::pin(async move {
            let response = http.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            if status == expected { Ok(()) } else { Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))) }
        })
    })
}

/// `size` bytes of a repeating pattern.
fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// The Hash RPC directly and through the gateway, 1 KiB, the pair measured
/// back to back at each concurrency: `(gRPC, REST)`, the gateway's own cost.
pub async fn gateway_hash(
    bench: &Bench,
    mesh: MeshAddrs,
) -> anyhow::Result<(Vec<(usize, Measurement)>, Vec<(usize, Measurement)>)> {
    let payload = bytes::Bytes::from(payload(1024));
    let body = bytes::Bytes::from(format!(
        r#"{{"content":"{}"}}"#,
        base64::engine::general_purpose::STANDARD.encode(&payload)
    ));
    let uri = format!("http://{}/v1/hash", mesh.gateway).parse()?;
    let rest = rest_post(uri, http::StatusCode::OK, move |_| body.clone());
    let client = StampingServiceClient::new(channel(mesh.stamping).await?);
    let grpc: Call = Arc::new(move |_| {
        let mut client = client.clone();
        let content = payload.clone();
        Box::pin(async move {
            client.hash(HashRequest { content, normalize: false }).await.map(drop).map_err(|s| s.to_string())
        })
    });
    Ok(bench.sweep_pair(("gRPC Hash 1 KiB", grpc), ("REST Hash 1 KiB", rest)).await)
}

/// What the reducer run measured.
pub struct ReducerRun {
    pub events: u64,
    pub produced_in: Duration,
    pub aggregated_in: Duration,
}

impl ReducerRun {
    /// Events per second from the first send to the last one counted.
    pub fn per_second(&self) -> f64 {
        self.events as f64 / self.aggregated_in.as_secs_f64().max(f64::EPSILON)
    }
}

/// Sends `events` StampCreated events to the broker and waits until the
/// reducer's aggregate for their namespace counts every one.
pub async fn reducer(bench: &Bench, mesh: MeshAddrs, bootstrap: &str, events: u64) -> anyhow::Result<ReducerRun> {
    use omninode_proto::events::v1::{EventEnvelope, StampCreated, event_envelope::Payload};
    use omninode_runtime::events::{EventKind, topics::DEFAULT_TOPIC_PREFIX};
    use prost::Message as _;
    use rdkafka::{
        ClientConfig,
        producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
    };

    let namespace = format!("bench.reducer.r{}", &bench.run_id[..8]);
    let topic = EventKind::StampCreated.topic(DEFAULT_TOPIC_PREFIX);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("cannot create the benchmark's Kafka producer")?;
    let envelope = |n: u64| {
        let file_hash = blake3::hash(format!("{} {n}", bench.run_id).as_bytes()).to_hex().to_string();
        EventEnvelope {
            event_id: uuid::Uuid::new_v4().to_string(),
            event_type: EventKind::StampCreated.event_type().to_owned(),
            event_version: 1,
            source_service: "bench".into(),
            namespace: namespace.clone(),
            partition_key: file_hash.clone(),
            payload: Some(Payload::StampCreated(StampCreated {
                stamp_id: uuid::Uuid::now_v7().to_string(),
                file_hash,
                file_path: format!("bench/{n}.py"),
                file_size: SMALL_PAYLOAD as u64,
                content_type: "text/x-python".into(),
                ..Default::default()
            })),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let send = |n: u64| -> anyhow::Result<()> {
        let payload = envelope(n);
        let key = n.to_string();
        let mut record = BaseRecord::to(&topic).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((err, _)) => return Err(err.into()),
            }
        }
    };
    let stats = ReducerServiceClient::new(channel(mesh.reducer).await?);
    let counted = |mut stats: ReducerServiceClient<Channel>, namespace: String| async move {
        stats
            .get_namespace_stats(GetNamespaceStatsRequest { namespace })
            .await
            .ok()
            .and_then(|r| r.into_inner().stats)
            .map(|s| s.total_stamps)
            .unwrap_or(0)
    };

    // One event first: the consumer group has joined once it is counted.
    send(0)?;
    producer.flush(Duration::from_secs(30))?;
    let joined = Instant::now();
    while counted(stats.clone(), namespace.clone()).await < 1 {
        anyhow::ensure!(
            joined.elapsed() < Duration::from_secs(120),
            "the reducer did not count a first event in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = Instant::now();
    for n in 1..=events {
        send(n)?;
    }
    producer.flush(Duration::from_secs(120))?;
    let produced_in = started.elapsed();
    let deadline = Duration::from_secs(300);
    loop {
        let total = counted(stats.clone(), namespace.clone()).await;
        // The first (join-check) event plus the measured ones.
        if total > events {
            break;
        }
        anyhow::ensure!(started.elapsed() < deadline, "the reducer counted {total} of {} events in 300 s", events + 1);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let aggregated_in = started.elapsed();
    Ok(ReducerRun { events, produced_in, aggregated_in })
}
