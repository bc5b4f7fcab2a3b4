//! Calls between services of one process. A gRPC client's transport is a
//! [`MeshChannel`]: either a network channel, or the server's own stack —
//! authentication, per-RPC metrics, the request-bytes bound, deadlines and
//! the routes — called directly, with no HTTP/2 framing, loopback socket or
//! task hop between caller and service. `omninode up` uses the local kind for
//! the gateway's and the orchestrator's calls to services in the same process;
//! what the service sees (credentials, metadata, trace context) is the same.

use std::time::Duration;

use tonic::{Status, body::Body, service::Routes, transport::Channel};
use tower::{ServiceBuilder, ServiceExt, util::BoxCloneSyncService};

use super::{GrpcMetricsLayer, Runtime, decode_errors::DecodeErrorLayer};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The transport of a gRPC client: a network [`Channel`] or an in-process service stack.
pub type MeshChannel = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, TransportError>;

/// Why a [`MeshChannel`] could not carry a call. A concrete type, not a boxed
/// `dyn Error`: async callers generic over `Into<BoxError>` then compile
/// without higher-ranked lifetime trouble.
/// The inner error is its `source`, so tonic's mapping to a status (a
/// refused connection is UNAVAILABLE) finds it as it would unwrapped.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(#[source] BoxError);

impl TransportError {
    fn new(error: impl Into<BoxError>) -> Self {
        Self(error.into())
    }
}

/// A network channel as a [`MeshChannel`].
pub fn remote(channel: Channel) -> MeshChannel {
    BoxCloneSyncService::new(channel.map_err(TransportError::new))
}

impl Runtime {
    /// A [`MeshChannel`] that calls `routes` in this process through the same
    /// layers [`Runtime::spawn_grpc`] puts in front of them.
    pub fn local_channel(&self, routes: Routes) -> MeshChannel {
        let stack = ServiceBuilder::new()
            .layer(GrpcMetricsLayer)
            .layer(DecodeErrorLayer)
            .layer(crate::auth::AuthLayer::new(self.config.auth.clone()))
            .layer(self.request_bytes.clone())
            .service(routes)
            .map_response(|response| response.map(Body::new))
            .map_err(TransportError::new);
        BoxCloneSyncService::new(Local { stack: BoxCloneSyncService::new(stack) })
    }
}

/// The server stack called in process, with the server's `grpc-timeout`
/// handling, which a direct call does not pass through. Each call goes to
/// this clone's stack (made ready by `poll_ready`), not to a fresh copy.
#[derive(Clone)]
struct Local {
    stack: MeshChannel,
}

impl tower::Service<http::Request<Body>> for Local {
    type Response = http::Response<Body>;
    type Error = TransportError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.stack.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let limit = grpc_timeout(request.headers());
        let call = self.stack.call(request);
        Box::pin(async move {
            match limit {
                None => call.await,
                Some(limit) => match tokio::time::timeout(limit, call).await {
                    Ok(answer) => answer,
                    Err(_) => Ok(Status::deadline_exceeded("deadline exceeded").into_http()),
                },
            }
        })
    }
}

/// The deadline a `grpc-timeout` header in `headers` asks for, if any.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    headers.get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout)
}

/// A `grpc-timeout` value (`<digits><unit>`, units H M S m u n) as a duration.
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" | "" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Env, MeshConfig};
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

    fn runtime(pairs: &[(&str, &str)]) -> Runtime {
        Runtime::new(MeshConfig::from_env(&Env::from_pairs(pairs.iter().copied())).expect("a valid configuration"))
    }

    #[tokio::test]
    async fn a_call_in_process_goes_through_the_server_stack_and_back() {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status("omninode.test.v1.Up", tonic_health::ServingStatus::Serving).await;
        let channel = runtime(&[]).local_channel(Routes::new(health));
        let mut client = HealthClient::new(channel);
        let answer = client.check(HealthCheckRequest { service: "omninode.test.v1.Up".into() }).await.unwrap();
        assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32);
        // The status of a refusal (a trailer) arrives as it would over the network.
        let missing = client.check(HealthCheckRequest { service: "omninode.test.v1.Nope".into() }).await.unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn in_process_calls_are_authenticated_like_network_ones() {
        // `omninode.*` paths need credentials; health stays public (as on the network).
        let (_, health) = tonic_health::server::health_reporter();
        let routes = Routes::new(health);
        let channel = runtime(&[("GATEWAY_API_KEYS", "k-1")]).local_channel(routes);
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/omninode.stamping.v1.StampingService/Hash");
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckRequest>::default();
        let refused = grpc.unary(tonic::Request::new(HealthCheckRequest::default()), path, codec).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_refuse_the_rest() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout(&format!("{}H", u64::MAX)), None);
    }
}
