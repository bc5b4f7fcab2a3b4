//! Checks every request passes before it is routed: an unexpected `Host` is
//! refused when an allow-list is set (DNS rebinding). What a body may be
//! (size, media type, origin of a file upload) depends on the route and is
//! checked where the route is known (`handle`).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::Next,
    response::Response,
};
use omninode_runtime::{ErrorCode, reason};

/// What the guard enforces.
#[derive(Debug, Clone)]
pub struct Guard {
    /// `GATEWAY_ALLOWED_HOSTS`: `Host` values accepted (with or without port); `None`: any.
    pub allowed_hosts: Option<Vec<String>>,
}

/// The middleware: see the module documentation.
pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if let Some(refusal) = refusal(&guard, request.headers()) {
        return refusal;
    }
    next.run(request).await
}

fn refusal(guard: &Guard, headers: &HeaderMap) -> Option<Response> {
    let allowed = guard.allowed_hosts.as_ref()?;
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
    let bare = host.rsplit_once(':').map_or(host.as_str(), |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) { name } else { host.as_str() }
    });
    if allowed.iter().any(|a| a == &host || a == bare) {
        return None;
    }
    let message =
        format!("host {:?} is not served here (GATEWAY_ALLOWED_HOSTS)", omninode_core::limits::prefix(&host, 100));
    let status = crate::errors::refusal(ErrorCode::InvalidArgument, reason::HOST_NOT_ALLOWED, message);
    Some(crate::error_response(&status, Some(StatusCode::MISDIRECTED_REQUEST)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_foreign_hosts_only_with_an_allow_list() {
        let guard = Guard { allowed_hosts: Some(vec!["api.example".into()]) };
        let status = |host: &str| {
            let headers: HeaderMap = [(header::HOST, host.parse().unwrap())].into_iter().collect();
            refusal(&guard, &headers).map(|r| r.status())
        };
        assert_eq!(status("evil.example"), Some(StatusCode::MISDIRECTED_REQUEST));
        assert_eq!(status("api.example:8080"), None);
        assert_eq!(status("api.example"), None);
        let open = Guard { allowed_hosts: None };
        assert!(refusal(&open, &HeaderMap::new()).is_none());
    }
}
