//! A tower layer that counts every gRPC call and times it to the end of its
//! response stream, labelled by service, method and final status code.
//!
//! With tracing on, each call is also a server span (OpenTelemetry's RPC
//! conventions: `rpc.system`, `rpc.service`, `rpc.method`,
//! `rpc.grpc.status_code`), a child of the caller's `traceparent`, current
//! while the handler runs.
//!
//! Series: `grpc_server_requests_total{service,method,code}`,
//! `grpc_server_errors_total{service,method,code}` (code ≠ OK) and the
//! histogram `grpc_server_request_duration_ms{service,method}`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};

/// Adds per-RPC metrics to a gRPC server.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let mut call = CallRecord::start(request.uri().path());
        if crate::trace::enabled() {
            call.span = Some(server_span(&call.service, &call.method, request.headers()));
        }
        let inner = match &call.span {
            Some(span) => span.in_scope(|| self.inner.call(request)),
            None => self.inner.call(request),
        };
        MeteredFuture { inner, call: Some(call) }
    }
}

pin_project_lite::pin_project! {
    /// Resolves to the response with its body metered.
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<CallRecord>,
    }
}

impl<F, ResBody, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<MeteredBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The handler runs inside the call's span (its own spans are children).
        let entered = this.call.as_ref().and_then(|c| c.span.as_ref()).map(tracing::Span::enter);
        let result = ready!(this.inner.poll(cx));
        drop(entered);
        let mut call = this.call.take().expect("polled after completion");
        Poll::Ready(match result {
            Ok(response) => {
                // A trailers-only response (most errors) carries its status in the headers.
                if let Some(code) = grpc_status(response.headers()) {
                    call.finish(code);
                }
                Ok(response.map(|inner| MeteredBody { inner, call }))
            }
            Err(err) => {
                call.finish(Code::Internal);
                Err(err)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call when its trailers pass by.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: CallRecord,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.call.finish(code);
                }
            }
            Some(Err(_)) => this.call.finish(Code::Internal),
            None => this.call.finish(Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One call being timed; recorded exactly once, as CANCELLED if the response
/// is dropped before its status was seen (the client went away).
pub struct CallRecord {
    service: String,
    method: String,
    started: Instant,
    done: bool,
    /// The server span, when tracing is on; ends with the call.
    span: Option<tracing::Span>,
}

impl CallRecord {
    fn start(path: &str) -> Self {
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
        Self {
            service: service.to_owned(),
            method: method.to_owned(),
            started: Instant::now(),
            done: false,
            span: None,
        }
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        if let Some(span) = self.span.take() {
            span.record("rpc.grpc.status_code", code as i64);
            if crate::trace::server_error(code) {
                span.record("otel.status_code", "ERROR");
            }
        }
        let (service, method, code) = (self.service.clone(), self.method.clone(), code_name(code));
        metrics::counter!("grpc_server_requests_total", "service" => service.clone(), "method" => method.clone(), "code" => code).increment(1);
        if code != "OK" {
            metrics::counter!("grpc_server_errors_total", "service" => service.clone(), "method" => method.clone(), "code" => code).increment(1);
        }
        metrics::histogram!("grpc_server_request_duration_ms", "service" => service, "method" => method)
            .record(elapsed_ms);
    }
}

/// The server span of one call, continuing the caller's trace.
fn server_span(service: &str, method: &str, headers: &http::HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        target: crate::trace::TARGET,
        "grpc.server",
        otel.name = format!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        request_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        span.record("request_id", id);
    }
    crate::trace::continue_from(&span, headers);
    span
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let raw = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(raw))
}

/// The canonical upper-snake-case name of a status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
