//! `X-Request-Id`: every request gets one (the client's own when it sends a
//! sane one), echoed in the response, forwarded to the services as gRPC
//! metadata, and on every log line written while the request is served.

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
    let span = tracing::info_span!("http", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
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
