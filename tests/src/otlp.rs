//! An OTLP trace receiver double: the collector's `TraceService` over gRPC
//! (tonic, from `opentelemetry-proto`) and `POST /v1/traces` over HTTP with a
//! protobuf body, keeping every span it is sent.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, any_value::Value},
};
use prost::Message as _;

/// One received span, flattened for assertions (ids in lowercase hex).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service_name: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// `SpanKind` number: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    pub attributes: HashMap<String, String>,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
    /// `Status.code`: 0 unset, 1 ok, 2 error.
    pub status: i32,
    /// From start to end.
    pub duration: std::time::Duration,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The receiver: a gRPC and an HTTP listener on loopback.
pub struct OtlpDouble {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    counted: Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    counted: Arc<std::sync::atomic::AtomicU64>,
    /// Keeps the spans (tests), or only counts them (benchmarks: memory stays flat).
    keep: bool,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    fn keep(&self, request: ExportTraceServiceRequest) {
        if !self.keep {
            let count: usize = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
            self.counted.fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let mut kept = self.spans.lock().unwrap();
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
            let service_name = resource
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(text)
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    kept.push(ReceivedSpan {
                        service_name: service_name.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span.kind,
                        attributes: span
                            .attributes
                            .into_iter()
                            .map(|kv| (kv.key, kv.value.as_ref().map(text).unwrap_or_default()))
                            .collect(),
                        links: span.links.into_iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
                        status: span.status.map(|s| s.code).unwrap_or_default(),
                        duration: std::time::Duration::from_nanos(
                            span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano),
                        ),
                    });
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

impl OtlpDouble {
    /// Starts both listeners, keeping every span.
    pub async fn start() -> Self {
        Self::start_with(true).await
    }

    /// Starts both listeners; `keep` false only counts the spans.
    pub async fn start_with(keep: bool) -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let receiver = Receiver { spans: spans.clone(), counted: counted.clone(), keep };
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let service = TraceServiceServer::new(receiver.clone());
        let grpc_task = tokio::spawn(async move {
            let incoming = tokio_stream_listener(grpc_listener);
            let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
        });
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = http_listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let receiver = receiver.clone();
                async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(request) => {
                            receiver.keep(request);
                            (
                                [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                                ExportTraceServiceResponse { partial_success: None }.encode_to_vec(),
                            )
                                .into_response()
                        }
                        Err(_) => http::StatusCode::BAD_REQUEST.into_response(),
                    }
                }
            }),
        );
        let http_task = tokio::spawn(async move {
            let _ = axum::serve(http_listener, app).await;
        });
        Self { grpc, http, spans, counted, tasks: vec![grpc_task, http_task] }
    }

    /// How many spans a counting receiver was sent.
    pub fn counted(&self) -> u64 {
        self.counted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }
}

impl Drop for OtlpDouble {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

use axum::response::IntoResponse as _;

/// The accepted connections of `listener` as the stream tonic serves.
fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = Result<tokio::net::TcpStream, std::io::Error>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}
