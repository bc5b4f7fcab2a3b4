//! Checks every API request passes before its body is read: a declared
//! `Content-Length` over the limit is refused at once (413), an unexpected
//! `Host` is refused when an allow-list is set, and a body that is not JSON
//! (form posts and `text/plain` — what a cross-site page can send without a
//! CORS preflight) is refused with 415.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::Response,
};
use tonic::{Code, Status};

/// What the guard enforces.
#[derive(Debug, Clone)]
pub struct Guard {
    pub max_body_bytes: usize,
    /// `GATEWAY_ALLOWED_HOSTS`: `Host` values accepted (with or without port); `None`: any.
    pub allowed_hosts: Option<Vec<String>>,
}

/// The middleware: see the module documentation.
pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if let Some(refusal) = refusal(&guard, request.method(), request.headers()) {
        return refusal;
    }
    next.run(request).await
}

fn refusal(guard: &Guard, method: &Method, headers: &HeaderMap) -> Option<Response> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > guard.max_body_bytes as u64) {
        let message = format!("the body is over the {}-byte limit (GATEWAY_MAX_BODY_BYTES)", guard.max_body_bytes);
        return Some(crate::error_response(
            &Status::new(Code::ResourceExhausted, message),
            Some(StatusCode::PAYLOAD_TOO_LARGE),
        ));
    }
    if let Some(allowed) = &guard.allowed_hosts {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
        let bare = host.rsplit_once(':').map_or(host.as_str(), |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) { name } else { host.as_str() }
        });
        if !allowed.iter().any(|a| a == &host || a == bare) {
            let message = format!(
                "host {:?} is not served here (GATEWAY_ALLOWED_HOSTS)",
                omninode_core::limits::prefix(&host, 100)
            );
            return Some(crate::error_response(
                &Status::new(Code::InvalidArgument, message),
                Some(StatusCode::MISDIRECTED_REQUEST),
            ));
        }
    }
    let sends_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if sends_body && content_type.is_some_and(|ct| !is_json(ct)) {
        let message = format!(
            "the body must be JSON (Content-Type: application/json), not {:?}",
            omninode_core::limits::prefix(content_type.unwrap_or_default(), 100)
        );
        return Some(crate::error_response(
            &Status::new(Code::InvalidArgument, message),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ));
    }
    None
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (axum::http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn refuses_oversized_declarations_foreign_hosts_and_non_json_bodies() {
        let guard = Guard { max_body_bytes: 100, allowed_hosts: Some(vec!["api.example".into()]) };
        let status = |method: Method, pairs: &[(&'static str, &str)]| {
            refusal(&guard, &method, &headers(pairs)).map(|r| r.status())
        };
        let host = ("host", "api.example:8080");
        assert_eq!(
            status(Method::POST, &[host, ("content-length", "10000000000")]),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(status(Method::GET, &[("host", "evil.example")]), Some(StatusCode::MISDIRECTED_REQUEST));
        assert_eq!(
            status(Method::POST, &[host, ("content-type", "text/plain")]),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            status(Method::POST, &[host, ("content-type", "application/x-www-form-urlencoded")]),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(status(Method::POST, &[host, ("content-type", "application/json; charset=utf-8")]), None);
        assert_eq!(status(Method::POST, &[host]), None, "no content type: taken as JSON");
        assert_eq!(status(Method::GET, &[host, ("content-type", "text/plain")]), None);
    }
}
