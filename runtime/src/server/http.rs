//! The HTTP server of the gateway and the admin port: HTTP/1.1 and HTTP/2 on
//! one port, over TLS when the process has a certificate, with the limits a
//! server facing the open network needs, which `axum::serve` does not expose:
//! a header-read timeout (a slowloris connection sending a byte every few
//! seconds is closed), a bound on header bytes (431 beyond it), a cap on
//! concurrent HTTP/2 streams per connection, and a graceful shutdown that
//! lets in-flight requests finish.

use std::time::Duration;

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::tls::ServerTls;

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most header bytes a request may carry.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The most concurrent streams one HTTP/2 connection may open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// How long in-flight requests get once shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// The name of a verified client certificate, put in each request's
/// extensions by [`serve`] (mTLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerName(pub String);

/// Serves `router` on `listener` (over `tls` when given) until `stop`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<ServerTls>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = super::accept(&listener) => accepted,
        };
        let (builder, router, watcher) = (builder.clone(), router.clone(), graceful.watcher());
        let acceptor = tls.as_ref().map(ServerTls::acceptor);
        tokio::spawn(async move {
            match acceptor {
                None => {
                    let service = TowerToHyperService::new(router);
                    let _ = watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service)).await;
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) = tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await
                    else {
                        metrics::counter!("tls_handshake_failures_total").increment(1);
                        return;
                    };
                    let peer = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|cert| crate::tls::certificate_name(cert))
                        .map(PeerName);
                    let router = match peer {
                        Some(peer) => router.layer(axum::Extension(peer)),
                        None => router,
                    };
                    let service = TowerToHyperService::new(router);
                    let _ = watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service)).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("gateway connections still open after the drain period; closing them");
    }
    Ok(())
}
