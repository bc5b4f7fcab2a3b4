//! The mesh's names and defaults, defined once: each service's gRPC name
//! (from the generated code), short name, port, and the variables that set
//! its port and its URL for clients. Services, the gateway, the CLI and the
//! deployment docs all read these.

use omninode_proto::{
    orchestrator::v1::orchestrator_service_server, reducer::v1::reducer_service_server,
    stamping::v1::stamping_service_server,
};

/// One service of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshService {
    /// Fully qualified gRPC service name, e.g. `omninode.stamping.v1.StampingService`.
    pub grpc_name: &'static str,
    /// Short name: `stamping`, `orchestrator`, `reducer`.
    pub short: &'static str,
    /// The variable of its listening port, and the port's default.
    pub port_variable: &'static str,
    pub default_port: u16,
    /// The variable clients read for its URL, and the URL's default.
    pub url_variable: &'static str,
    pub default_url: &'static str,
}

impl MeshService {
    /// Its name in Consul.
    pub fn consul_name(&self) -> String {
        format!("omninode-{}", self.short)
    }
}

/// The stamping service.
pub const STAMPING: MeshService = MeshService {
    grpc_name: stamping_service_server::SERVICE_NAME,
    short: "stamping",
    port_variable: "STAMPING_PORT",
    default_port: 8053,
    url_variable: "STAMPING_SERVICE_URL",
    default_url: "http://127.0.0.1:8053",
};

/// The orchestrator.
pub const ORCHESTRATOR: MeshService = MeshService {
    grpc_name: orchestrator_service_server::SERVICE_NAME,
    short: "orchestrator",
    port_variable: "ORCHESTRATOR_PORT",
    default_port: 8060,
    url_variable: "ORCHESTRATOR_SERVICE_URL",
    default_url: "http://127.0.0.1:8060",
};

/// The reducer.
pub const REDUCER: MeshService = MeshService {
    grpc_name: reducer_service_server::SERVICE_NAME,
    short: "reducer",
    port_variable: "REDUCER_PORT",
    default_port: 8061,
    url_variable: "REDUCER_SERVICE_URL",
    default_url: "http://127.0.0.1:8061",
};

/// Every gRPC service of the mesh.
pub const ALL: [MeshService; 3] = [STAMPING, ORCHESTRATOR, REDUCER];

/// `GATEWAY_PORT` default: the REST gateway.
pub const DEFAULT_GATEWAY_PORT: u16 = 8080;
/// `METRICS_PORT` default: /metrics, /health, /ready.
pub const DEFAULT_METRICS_PORT: u16 = 9091;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_urls_point_at_default_ports_and_names_are_distinct() {
        for service in ALL {
            assert_eq!(service.default_url, format!("http://127.0.0.1:{}", service.default_port));
            assert!(service.grpc_name.starts_with(&format!("omninode.{}.v1.", service.short)), "{service:?}");
        }
        assert_eq!(STAMPING.consul_name(), "omninode-stamping");
    }
}
