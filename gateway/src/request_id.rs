//! `X-Request-Id`: every request gets one (the client's own when it sends a
//! sane one), echoed in the response, forwarded to the services as gRPC
//! metadata, and on every log line written while the request is served.
//!
//! With tracing on, each request is also an HTTP server span (OpenTelemetry's
//! HTTP conventions: `http.request.method`, `http.route`,
//! `http.response.status_code`) continuing the client's `traceparent`; the
//! calls to the services are its children. An error body names the request
//! id and the trace id (`google.rpc.RequestInfo`) for the user to quote.

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::Instrument;

/// The header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id kept from a client.
const MAX_LEN: usize = 128;

/// What an error body quotes of the request it answers.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub request_id: String,
    /// The trace this request is part of (its span's, or the client's `traceparent`'s).
    pub trace_id: Option<String>,
}

tokio::task_local! {
    static CURRENT: RequestInfo;
}

/// The request being served by this task, if any.
pub fn current() -> Option<RequestInfo> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The middleware: see the module documentation.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sane(id))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let value = HeaderValue::from_str(&id).expect("a sane id is a header value");
    request.headers_mut().insert(X_REQUEST_ID.clone(), value.clone());
    let span = if omninode_runtime::trace::enabled() {
        let span = tracing::info_span!(
            target: omninode_runtime::trace::TARGET,
            "http.server",
            otel.name = %request.method(),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %request.method(),
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            url.path = %request.uri().path(),
            request_id = %id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        omninode_runtime::trace::continue_from(&span, request.headers());
        span
    } else {
        tracing::info_span!("http", request_id = %id, method = %request.method(), path = %request.uri().path())
    };
    let trace_id = omninode_runtime::trace::trace_id(&span)
        .or_else(|| omninode_runtime::trace::trace_id_of_header(request.headers()));
    let info = RequestInfo { request_id: id, trace_id };
    let mut response = CURRENT.scope(info, next.run(request).instrument(span.clone())).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "request failed");
        } else if status.is_client_error() {
            tracing::info!(status = status.as_u16(), "request refused");
        } else {
            tracing::debug!(status = status.as_u16(), "request served");
        }
    });
    response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    response
}

/// Names the span of the request being served after its route template
/// (`http.route`, and the span name `METHOD /route`).
pub fn record_route(method: &http::Method, route: &str) {
    if omninode_runtime::trace::enabled() {
        let span = tracing::Span::current();
        span.record("http.route", route);
        omninode_runtime::trace::rename(&span, format!("{method} {route}"));
    }
}

/// Visible ASCII without spaces or quotes, not too long: safe to log and echo.
fn is_sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(is_sane("req-42.abc_DEF:1"));
        assert!(!is_sane(""));
        assert!(!is_sane("has space"));
        assert!(!is_sane("quote\"d"));
        assert!(!is_sane(&"x".repeat(129)));
    }
}
