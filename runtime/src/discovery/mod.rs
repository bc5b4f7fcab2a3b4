//! Service discovery: static addresses from configuration (the embedded
//! default) or Consul (`CONSUL_HTTP_ADDR`): registration with gRPC health
//! checks, and balanced channels fed by blocking queries.

pub mod consul;
pub mod dns;
pub mod registration;
pub mod watcher;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::tls::ClientTls;

use crate::config::{ConfigError, Env};

pub use consul::ConsulClient;
pub use registration::{ServiceToRegister, spawn_registration};

/// Consul settings; present when `CONSUL_HTTP_ADDR` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulConfig {
    /// `CONSUL_HTTP_ADDR`, e.g. `http://127.0.0.1:8500`.
    pub addr: String,
    /// `CONSUL_HTTP_TOKEN`: the ACL token, if any.
    pub token: Option<String>,
    /// `OMNINODE_ADVERTISE_HOST`: the address other services and the agent's
    /// checks reach this process at (default: `OMNINODE_HOST`, or `HOSTNAME`
    /// when that is 0.0.0.0).
    pub advertise_host: String,
    /// `CONSUL_CHECK_INTERVAL_MS` (default 10000); also the re-registration period.
    pub check_interval: Duration,
    /// `CONSUL_CHECK_TIMEOUT_MS` (default 5000).
    pub check_timeout: Duration,
    /// `CONSUL_DEREGISTER_AFTER_MS`: critical this long → removed (default 60000).
    pub deregister_after: Duration,
    /// `CONSUL_WAIT_MS`: blocking query wait (default 30000).
    pub wait: Duration,
    /// HTTPS to the agent: `CONSUL_CACERT`, and `CONSUL_CLIENT_CERT` /
    /// `CONSUL_CLIENT_KEY` when the agent verifies clients (Consul's own names).
    pub tls: Option<ConsulTls>,
}

/// PEM files for HTTPS to the Consul agent, read and checked at start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsulTls {
    pub ca: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ConsulTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulTls").field("identity", &self.identity.is_some()).finish()
    }
}

impl ConsulTls {
    fn from_env(env: &Env, addr: &str) -> Result<Option<Self>, ConfigError> {
        let read = |variable: &str| -> Result<Option<Vec<u8>>, ConfigError> {
            match env.optional(variable)? {
                None => Ok(None),
                Some(path) => {
                    std::fs::read(&path).map(Some).map_err(|e| ConfigError::new(variable, format!("{path}: {e}")))
                }
            }
        };
        let identity_files = env.pair("CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY")?;
        let Some(ca) = read("CONSUL_CACERT")? else {
            if identity_files.is_some() {
                return Err(ConfigError::new("CONSUL_CACERT", "a Consul client certificate needs the agent's CA"));
            }
            if addr.starts_with("https://") {
                return Err(ConfigError::new(
                    "CONSUL_CACERT",
                    "CONSUL_HTTP_ADDR is https: give the CA that signed the agent's certificate",
                ));
            }
            return Ok(None);
        };
        crate::tls::client_config(&ca, None).map_err(|e| ConfigError::new("CONSUL_CACERT", e))?;
        let identity = match identity_files {
            None => None,
            Some((cert_path, key_path)) => {
                let file = |variable: &str, path: &str| {
                    std::fs::read(path).map_err(|e| ConfigError::new(variable, format!("{path}: {e}")))
                };
                let (cert, key) = (file("CONSUL_CLIENT_CERT", &cert_path)?, file("CONSUL_CLIENT_KEY", &key_path)?);
                crate::tls::client_config(&ca, Some((&cert, &key)))
                    .map_err(|e| ConfigError::new("CONSUL_CLIENT_CERT", e))?;
                Some((cert, key))
            }
        };
        Ok(Some(Self { ca, identity }))
    }
}

impl ConsulConfig {
    pub fn from_env(env: &Env, host: std::net::IpAddr) -> Result<Option<Self>, ConfigError> {
        let Some(addr) = env.optional("CONSUL_HTTP_ADDR")? else { return Ok(None) };
        let advertise_host = match env.optional("OMNINODE_ADVERTISE_HOST")? {
            Some(host) => host,
            None if host.is_unspecified() => env.string("HOSTNAME", "127.0.0.1")?,
            None => host.to_string(),
        };
        Ok(Some(Self {
            token: env.optional("CONSUL_HTTP_TOKEN")?,
            advertise_host,
            check_interval: env.millis("CONSUL_CHECK_INTERVAL_MS", 10_000)?,
            check_timeout: env.millis("CONSUL_CHECK_TIMEOUT_MS", 5_000)?,
            deregister_after: env.millis("CONSUL_DEREGISTER_AFTER_MS", 60_000)?,
            wait: env.millis("CONSUL_WAIT_MS", 30_000)?,
            tls: ConsulTls::from_env(env, &addr)?,
            addr,
        }))
    }

    pub fn client(&self) -> ConsulClient {
        ConsulClient::new(&self.addr, self.token.clone(), self.tls.as_ref())
    }
}

/// How a process finds the services it calls.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// A fixed URL per service, from configuration.
    Static,
    Consul(Box<ConsulConfig>),
}

impl Discovery {
    /// A channel to `consul_name` (Consul) or `static_url` (static), over
    /// TLS when `tls` is on. A static URL whose host is a DNS name balances
    /// over every address the name resolves to (a Kubernetes headless
    /// Service: one per pod).
    pub fn channel(
        &self,
        consul_name: &str,
        static_url: &str,
        tls: &ClientTls,
        stop: CancellationToken,
    ) -> Result<Channel, String> {
        match self {
            Discovery::Static => Ok(match dns::named_host(&tls.url(static_url)) {
                Some((scheme, host, port)) => dns::balanced_channel(&scheme, &host, port, tls.clone(), stop),
                None => tls.endpoint(static_url)?.tcp_nodelay(true).connect_lazy(),
            }),
            Discovery::Consul(config) => {
                Ok(watcher::balanced_channel(config.client(), consul_name, config.wait, tls.clone(), stop))
            }
        }
    }
}
