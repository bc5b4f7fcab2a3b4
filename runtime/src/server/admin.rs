//! The HTTP admin endpoints of a process: Prometheus metrics and health.

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::health::{HealthRegistry, HealthStatus};

/// `/metrics` (Prometheus text), `/health` (liveness) and `/ready` (readiness).
///
/// Both health bodies are `{"status","version","lifecycle","details"}`;
/// healthy and degraded answer 200, unhealthy 503. `/ready` is also 503
/// while the process is starting or draining.
pub fn admin_router(health: HealthRegistry) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/live", get(|| async { StatusCode::OK }))
        .route("/health", get(liveness))
        .route("/ready", get(readiness))
        .with_state(health)
}

async fn metrics() -> impl IntoResponse {
    let handle = crate::telemetry::prometheus();
    handle.run_upkeep();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}

async fn liveness(State(health): State<HealthRegistry>) -> impl IntoResponse {
    let report = health.report();
    let code = if report.status == HealthStatus::Unhealthy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(report))
}

async fn readiness(State(health): State<HealthRegistry>) -> impl IntoResponse {
    let report = health.report();
    let code = if report.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(report))
}
