//! HTTP calls of a definition's `http` and `llm` steps: HTTP/1.1 over TCP,
//! or TLS verified against the public web PKI roots compiled in (no system
//! store needed). A response body is read up to [`MAX_RESPONSE_BYTES`].

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use serde_json::Value;

use super::CallError;

/// Largest response body kept (larger ones fail the attempt, not truncated).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A response: its status and its body (parsed when it is JSON, else the text).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: Value,
}

/// A shared HTTP client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
        Self { http: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector) }
    }
}

impl HttpClient {
    /// Sends one request. Unreachable, 408, 429 and 5xx answers are
    /// retryable failures; other non-2xx answers are permanent.
    pub async fn call(
        &self,
        method: &str,
        url: &str,
        headers: &BTreeMap<String, String>,
        body: String,
    ) -> Result<HttpAnswer, CallError> {
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|_| CallError::permanent(format!("{method:?} is not an HTTP method")))?;
        let mut request = http::Request::builder().method(method.clone()).uri(url);
        if !body.is_empty() && !headers.keys().any(|h| h.eq_ignore_ascii_case("content-type")) {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let mut request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::permanent(format!("cannot build the request {method} {url}: {e}")))?;
        let span = client_span(&method, request.uri());
        // The called endpoint continues the workflow's trace (W3C traceparent).
        if omninode_runtime::trace::enabled() {
            omninode_runtime::trace::inject_headers(&span, request.headers_mut());
        }
        let response = {
            use tracing::Instrument;
            self.http.request(request).instrument(span.clone()).await
        };
        let response = response.map_err(|e| {
            span.record("otel.status_code", "ERROR");
            CallError::retryable(format!("{method} {url}: {e}"))
        })?;
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() || status.is_client_error() {
            span.record("otel.status_code", "ERROR");
        }
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| CallError::retryable(format!("{method} {url}: the answer is unreadable: {e}")))?
            .to_bytes();
        let body = match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => value,
            Err(_) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
        };
        if status.is_success() {
            return Ok(HttpAnswer { status: status.as_u16(), body });
        }
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        let message = format!("{method} {url} answered {status}: {text}");
        let transient = status.is_server_error()
            || status == http::StatusCode::TOO_MANY_REQUESTS
            || status == http::StatusCode::REQUEST_TIMEOUT;
        Err(if transient { CallError::retryable(message) } else { CallError::permanent(message) })
    }
}

/// The client span of one call (HTTP conventions): the URL without its
/// query, which may carry secrets.
fn client_span(method: &http::Method, uri: &http::Uri) -> tracing::Span {
    if !omninode_runtime::trace::enabled() {
        return tracing::Span::none();
    }
    let url = format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map_or("", |a| a.as_str()),
        uri.path()
    );
    tracing::info_span!(
        target: omninode_runtime::trace::TARGET,
        "http.client",
        otel.name = %method,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        url.full = url,
        server.address = uri.host().unwrap_or_default(),
        http.response.status_code = tracing::field::Empty,
    )
}
