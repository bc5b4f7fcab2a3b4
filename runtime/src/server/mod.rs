//! Server bootstrap shared by every service: a gRPC server with health,
//! reflection (v1 and v1alpha) and per-RPC metrics; an HTTP admin server with
//! `/metrics`, `/health` and `/ready`; graceful shutdown on SIGTERM/SIGINT;
//! and in-process calls between the services of one process ([`MeshChannel`]).

mod admin;
mod decode_errors;
pub mod http;
mod local;
mod metrics_layer;
mod request_bytes;

use std::{net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::server::{HealthReporter, HealthService};

pub use admin::admin_router;
pub use local::{BoxError, MeshChannel, TransportError, grpc_timeout, remote};

/// The grpc.health.v1 service name that is SERVING for as long as the process runs.
pub const LIVENESS_SERVICE: &str = "liveness";
pub use metrics_layer::{GrpcMetricsLayer, code_name};

use crate::{
    config::MeshConfig,
    health::{HealthRegistry, Lifecycle},
};

/// The most concurrent calls (HTTP/2 streams) one connection may have open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Flow-control windows: what a peer may send before it hears back. A
/// connection's unread bytes stay within them (the request-bytes bound
/// applies beyond).
pub const HTTP2_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
pub const HTTP2_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// The largest HTTP/2 frame a peer may send: a 1 MiB message comes in 16
/// frames, not 64 (each frame is a write and a wake-up on both sides). A
/// call waiting for the request-bytes budget holds one frame; those frames
/// are bounded by the budget's frame slots.
pub const HTTP2_MAX_FRAME: u32 = 64 * 1024;
/// The most header (metadata) bytes a call may carry.
pub const MAX_HEADER_BYTES: u32 = 64 * 1024;

/// The version every service reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What one process shares across the servers it runs: configuration,
/// health, and the shutdown signal.
#[derive(Clone)]
pub struct Runtime {
    pub config: MeshConfig,
    pub health: HealthRegistry,
    reporter: HealthReporter,
    shutdown: CancellationToken,
    /// The process's bound on request bytes held at once, shared by its servers.
    request_bytes: request_bytes::RequestBytesLayer,
}

impl Runtime {
    /// Must be called inside a Tokio runtime: with TLS it starts watching the certificate files.
    pub fn new(config: MeshConfig) -> Self {
        let reporter = HealthReporter::new();
        let health = HealthRegistry::new(VERSION, reporter.clone());
        let shutdown = CancellationToken::new();
        if let Some(tls) = &config.tls.server {
            tls.spawn_reload(shutdown.clone());
        }
        let request_bytes =
            request_bytes::RequestBytesLayer::new(config.max_inflight_request_bytes, HTTP2_MAX_FRAME as usize);
        Self { config, health, reporter, shutdown, request_bytes }
    }

    /// Cancelled when the process starts shutting down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts draining: health turns NOT_SERVING, then servers stop.
    pub async fn begin_shutdown(&self) {
        self.health.set_lifecycle(Lifecycle::Draining).await;
        self.shutdown.cancel();
    }

    /// Binds `host:port` (port 0 picks a free one).
    pub async fn bind(&self, port: u16) -> std::io::Result<TcpListener> {
        TcpListener::bind(SocketAddr::new(self.config.host, port)).await
    }

    /// Serves `routes` with health, reflection and metrics on `listener`
    /// until shutdown; `tracked` names the gRPC services whose
    /// grpc.health.v1 status follows the process health.
    pub async fn spawn_grpc(
        &self,
        listener: TcpListener,
        routes: Routes,
        tracked: &[&str],
    ) -> JoinHandle<Result<(), tonic::transport::Error>> {
        for name in tracked {
            self.health.track_grpc_service(name).await;
        }
        // Answers while the process answers, whatever its dependencies say:
        // the liveness probe (a database outage makes a process unready, and
        // restarting it would not help).
        self.reporter.set_service_status(LIVENESS_SERVICE, tonic_health::ServingStatus::Serving).await;
        let reflection_v1 = reflection(tracked).build_v1().expect("the compiled descriptor sets are valid");
        let reflection_v1alpha = reflection(tracked).build_v1alpha().expect("the compiled descriptor sets are valid");
        let health = tonic_health::pb::health_server::HealthServer::new(HealthService::from_health_reporter(
            self.reporter.clone(),
        ));
        let routes = routes.add_service(health).add_service(reflection_v1).add_service(reflection_v1alpha);

        let auth = crate::auth::AuthLayer::new(self.config.auth.clone());
        let request_bytes = self.request_bytes.clone();
        let stop = self.shutdown.clone();
        let grace = self.config.shutdown_grace;
        let tls = self.config.tls.server.clone();
        let cors = self.config.cors_origins.as_deref().map(cors_layer);
        tokio::spawn(async move {
            // gRPC-Web (HTTP/1.1 and HTTP/2) beside gRPC, so a browser can call directly.
            let server = Server::builder()
                .accept_http1(true)
                .layer(tower::util::option_layer(cors))
                .layer(tonic_web::GrpcWebLayer::new())
                .layer(GrpcMetricsLayer)
                .layer(decode_errors::DecodeErrorLayer)
                .layer(auth)
                .layer(request_bytes)
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                // A 1 MiB message without waiting for a window update, in few frames.
                .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW))
                .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW))
                .max_frame_size(Some(HTTP2_MAX_FRAME))
                // One connection may not monopolise the server.
                .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
                .http2_max_header_list_size(Some(MAX_HEADER_BYTES))
                .add_routes(routes);
            let server: std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
            > = match tls {
                Some(tls) => Box::pin(server.serve_with_incoming_shutdown(
                    tls.incoming(listener, stop.clone()),
                    stop.clone().cancelled_owned(),
                )),
                None => Box::pin(server.serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    stop.clone().cancelled_owned(),
                )),
            };
            drain_within(server, stop, grace).await
        })
    }

    /// Serves `/metrics`, `/health` and `/ready` on `listener` until shutdown.
    pub fn spawn_admin(&self, listener: TcpListener) -> JoinHandle<std::io::Result<()>> {
        let router = admin_router(self.health.clone());
        let (stop, tls) = (self.shutdown.clone(), self.config.tls.server.clone());
        tokio::spawn(http::serve(listener, router, tls, stop))
    }

    /// Marks the process ready to take traffic.
    pub async fn mark_serving(&self) {
        self.health.set_lifecycle(Lifecycle::Serving).await;
    }
}

/// The next connection of `listener`, with `TCP_NODELAY`. A failed accept
/// (out of file descriptors and the like) is logged and retried after a
/// pause rather than spun on.
pub(crate) async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(err) => {
                tracing::warn!(%err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reflection that advertises exactly what the server serves: `services`,
/// health and both reflection versions (grpcurl 1.8 asks v1alpha, newer
/// clients v1).
/// CORS for browsers calling from `origins` (or any, with `*`): every method
/// and request header, and every response header exposed (gRPC-Web's
/// `grpc-status`, `grpc-message` and the error reason among them).
pub fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let layer = CorsLayer::new().allow_methods(Any).allow_headers(Any).expose_headers(Any);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        let origins = origins.iter().filter_map(|o| ::http::HeaderValue::from_str(o).ok());
        layer.allow_origin(AllowOrigin::list(origins))
    }
}

fn reflection(services: &[&str]) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(omninode_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    let fixed =
        ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];
    for name in services.iter().copied().chain(fixed) {
        builder = builder.with_service_name(name);
    }
    builder
}

/// Runs `server` to completion, but gives in-flight calls only `grace` once
/// shutdown has begun (a long-lived stream must not hold the process open).
async fn drain_within<F>(server: F, stop: CancellationToken, grace: Duration) -> Result<(), tonic::transport::Error>
where
    F: std::future::Future<Output = Result<(), tonic::transport::Error>>,
{
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        _ = stop.cancelled() => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "in-flight calls cut off after the shutdown grace period"
            );
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
