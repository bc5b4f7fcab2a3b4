//! Discovery by DNS, for a static URL whose host is a name: every address the
//! name resolves to becomes an endpoint of one balanced channel, re-resolved
//! every few seconds. Behind a Kubernetes headless Service that is one
//! endpoint per ready pod, so calls spread over the pods (and follow them as
//! they come and go) instead of riding one HTTP/2 connection to one pod.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, channel::Change};

use crate::tls::ClientTls;

/// How often the name is resolved again.
const REFRESH: Duration = Duration::from_secs(5);

/// A channel balancing over the addresses of `host:port`, kept current until `stop`.
pub fn balanced_channel(scheme: &str, host: &str, port: u16, tls: ClientTls, stop: CancellationToken) -> Channel {
    let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
    let (scheme, host) = (scheme.to_owned(), host.to_owned());
    tokio::spawn(async move {
        let mut known: HashSet<SocketAddr> = HashSet::new();
        loop {
            match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(addresses) => {
                    let current: HashSet<SocketAddr> = addresses.collect();
                    for gone in known.difference(&current) {
                        tracing::info!(%host, address = %gone, "address left");
                        if changes.send(Change::Remove(*gone)).await.is_err() {
                            return;
                        }
                    }
                    for new in current.difference(&known) {
                        let Ok(endpoint) = Endpoint::from_shared(format!("{scheme}://{new}")) else { continue };
                        // The certificate names the service, not the address.
                        let Ok(endpoint) = tls.apply(endpoint, &host) else { continue };
                        let endpoint = endpoint.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true);
                        tracing::info!(%host, address = %new, "address joined");
                        if changes.send(Change::Insert(*new, endpoint)).await.is_err() {
                            return;
                        }
                    }
                    known = current;
                }
                // Keep the known addresses: a resolver hiccup is not an outage.
                Err(err) => tracing::warn!(%host, %err, "cannot resolve; keeping the known addresses"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
    });
    channel
}

/// The scheme, host and port of `url` when its host is a DNS name (not an IP
/// literal and not `localhost`), else `None`.
pub fn named_host(url: &str) -> Option<(String, String, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_owned();
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_ok() || host.eq_ignore_ascii_case("localhost") {
        return None;
    }
    let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    Some((scheme, host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn only_names_are_resolved() {
        assert_eq!(named_host("http://127.0.0.1:8053"), None);
        assert_eq!(named_host("http://[::1]:8053"), None);
        assert_eq!(named_host("http://localhost:8053"), None);
        assert_eq!(
            named_host("http://stamping-headless.omninode.svc.cluster.local:8053"),
            Some(("http".into(), "stamping-headless.omninode.svc.cluster.local".into(), 8053))
        );
        assert_eq!(named_host("https://stamping"), Some(("https".into(), "stamping".into(), 443)));
    }

    /// A name that resolves to a loopback address gives a working channel.
    #[tokio::test]
    async fn a_resolved_name_becomes_an_endpoint() {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_, health) = tonic_health::server::health_reporter();
        let server = tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server.map(drop));
        // "localhost" resolves from /etc/hosts, without a network.
        let stop = CancellationToken::new();
        let channel = balanced_channel("http", "localhost", port, ClientTls::default(), stop.clone());
        let mut client = HealthClient::new(channel);
        let mut answered = false;
        for _ in 0..50 {
            if client.check(HealthCheckRequest { service: String::new() }).await.is_ok() {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        assert!(answered, "the channel never reached the server through the resolved name");
    }
}
