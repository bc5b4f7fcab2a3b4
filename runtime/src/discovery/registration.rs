//! Registering this process's gRPC services with the Consul agent: a native
//! gRPC health check per service, re-registration when the agent forgets
//! them (agent restart), deregistration on graceful shutdown.

use std::collections::BTreeMap;

use tokio_util::sync::CancellationToken;

use super::{
    ConsulConfig,
    consul::{AgentCheck, ConsulClient, ServiceRegistration},
};
use crate::health::HealthRegistry;

/// What to register for one gRPC service.
#[derive(Debug, Clone)]
pub struct ServiceToRegister {
    /// Consul service name, e.g. `omninode-stamping`.
    pub name: String,
    /// Fully qualified gRPC service, e.g. `omninode.stamping.v1.StampingService`.
    pub grpc_service: String,
    pub port: u16,
    pub metrics_port: u16,
    /// `Some(server name)` when the service speaks TLS: the agent's check does too.
    pub tls_server_name: Option<String>,
}

/// The registration body for `service` on `host`.
pub fn registration(config: &ConsulConfig, service: &ServiceToRegister) -> ServiceRegistration {
    let host = &config.advertise_host;
    let version = env!("CARGO_PKG_VERSION").to_owned();
    let package = service.grpc_service.rsplit_once('.').map(|(p, _)| p).unwrap_or_default().to_owned();
    let meta = BTreeMap::from([
        ("version".to_owned(), version.clone()),
        ("proto_package".to_owned(), package),
        ("metrics_port".to_owned(), service.metrics_port.to_string()),
    ]);
    ServiceRegistration {
        id: format!("{}-{host}-{}", service.name, service.port),
        name: service.name.clone(),
        tags: vec!["grpc".to_owned(), "v1".to_owned(), version],
        address: host.clone(),
        port: service.port,
        meta,
        check: AgentCheck {
            name: format!("{} gRPC health", service.name),
            grpc: format!("{host}:{}/{}", service.port, service.grpc_service),
            grpc_use_tls: service.tls_server_name.is_some(),
            tls_server_name: service.tls_server_name.clone(),
            interval: millis(config.check_interval),
            timeout: millis(config.check_timeout),
            deregister_critical_service_after: millis(config.deregister_after),
        },
    }
}

fn millis(duration: std::time::Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// Keeps `service` registered until `stop`, then deregisters it.
pub fn spawn_registration(
    client: ConsulClient,
    config: ConsulConfig,
    service: ServiceToRegister,
    health: HealthRegistry,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let body = registration(&config, &service);
    tokio::spawn(async move {
        loop {
            let result = async {
                if !client.is_registered(&body.id).await? {
                    client.register(&body).await?;
                    tracing::info!(id = %body.id, agent = client.address(), "registered with Consul");
                }
                Ok::<(), String>(())
            }
            .await;
            if let Err(problem) = &result {
                tracing::warn!(%problem, "Consul registration not confirmed");
            }
            health.set_component("consul", false, result).await;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(config.check_interval) => {}
            }
        }
        match client.deregister(&body.id).await {
            Ok(()) => tracing::info!(id = %body.id, "deregistered from Consul"),
            Err(problem) => tracing::warn!(%problem, "cannot deregister from Consul"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    #[test]
    fn a_tls_service_is_checked_over_tls_with_its_server_name() {
        let env = Env::from_pairs([("CONSUL_HTTP_ADDR", "http://127.0.0.1:8500")]);
        let config = ConsulConfig::from_env(&env, [127, 0, 0, 1].into()).unwrap().unwrap();
        let mut service = ServiceToRegister {
            name: "omninode-stamping".into(),
            grpc_service: "omninode.stamping.v1.StampingService".into(),
            port: 8053,
            metrics_port: 9091,
            tls_server_name: None,
        };
        let plain = registration(&config, &service).check;
        assert!(!plain.grpc_use_tls && plain.tls_server_name.is_none());
        service.tls_server_name = Some("stamping.omninode".into());
        let body = serde_json::to_value(registration(&config, &service)).unwrap();
        assert_eq!(body["Check"]["GRPCUseTLS"], true);
        assert_eq!(body["Check"]["TLSServerName"], "stamping.omninode");
    }
}
