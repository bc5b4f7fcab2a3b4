//! A small client of the Consul agent's HTTP API — only the endpoints the
//! mesh uses. The Rust Consul crates are stale or register through the
//! catalog only (no agent-side gRPC checks), so this speaks the documented
//! JSON directly (https://developer.hashicorp.com/consul/api-docs).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use serde::{Deserialize, Serialize};

/// `PUT /v1/agent/service/register` body (field names as Consul spells them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: std::collections::BTreeMap<String, String>,
    pub check: AgentCheck,
}

/// The agent-side health check: a native gRPC check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentCheck {
    pub name: String,
    /// `host:port/service` — the agent calls grpc.health.v1 Check on it.
    #[serde(rename = "GRPC")]
    pub grpc: String,
    #[serde(rename = "GRPCUseTLS")]
    pub grpc_use_tls: bool,
    /// The name the agent checks in the service's certificate.
    #[serde(rename = "TLSServerName", default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    pub interval: String,
    pub timeout: String,
    pub deregister_critical_service_after: String,
}

/// One entry of `GET /v1/health/service/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    pub node: Node,
    pub service: AgentService,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(default)]
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    #[serde(default)]
    pub address: String,
    pub port: u16,
}

impl ServiceEntry {
    /// Where to call the instance: its service address, else its node's.
    pub fn endpoint(&self) -> String {
        let host = if self.service.address.is_empty() { &self.node.address } else { &self.service.address };
        format!("{host}:{}", self.service.port)
    }
}

/// A blocking-query answer: the entries and the `X-Consul-Index`.
#[derive(Debug, Clone)]
pub struct Indexed<T> {
    pub index: u64,
    pub value: T,
}

/// Talks to one Consul agent.
#[derive(Debug, Clone)]
pub struct ConsulClient {
    base: String,
    token: Option<String>,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl ConsulClient {
    /// `addr` is `http(s)://host:port` (or `host:port`, as CONSUL_HTTP_ADDR
    /// allows); with `tls`, HTTPS trusting its CA (the files were checked at start-up).
    pub fn new(addr: &str, token: Option<String>, tls: Option<&super::ConsulTls>) -> Self {
        let base = if addr.contains("://") { addr.trim_end_matches('/').to_owned() } else { format!("http://{addr}") };
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match tls
            .map(|t| crate::tls::client_config(&t.ca, t.identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()))))
        {
            Some(Ok(config)) => builder.with_tls_config(config).https_or_http().enable_http1().build(),
            // Only HTTP without a CA: an https address then fails its calls, saying why.
            _ => builder.with_tls_config(crate::tls::no_roots()).https_or_http().enable_http1().build(),
        };
        let http = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Self { base, token, http }
    }

    pub fn address(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<(http::HeaderMap, Bytes), String> {
        let mut request = http::Request::builder().method(method.clone()).uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("bad Consul request: {e}"))?;
        let response = tokio::time::timeout(timeout, self.http.request(request))
            .await
            .map_err(|_| format!("Consul {method} {path}: no answer within {timeout:?}"))?
            .map_err(|e| format!("Consul unreachable at {}: {e}", self.base))?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.map_err(|e| format!("Consul answer unreadable: {e}"))?.to_bytes();
        if !parts.status.is_success() {
            return Err(format!(
                "Consul {method} {path} answered {}: {}",
                parts.status,
                String::from_utf8_lossy(&bytes)
            ));
        }
        Ok((parts.headers, bytes))
    }

    /// `PUT /v1/agent/service/register`.
    pub async fn register(&self, service: &ServiceRegistration) -> Result<(), String> {
        let body = serde_json::to_string(service).map_err(|e| e.to_string())?;
        self.call(http::Method::PUT, "/v1/agent/service/register", Some(body), Duration::from_secs(5)).await.map(drop)
    }

    /// `PUT /v1/agent/service/deregister/<id>`.
    pub async fn deregister(&self, id: &str) -> Result<(), String> {
        self.call(http::Method::PUT, &format!("/v1/agent/service/deregister/{id}"), None, Duration::from_secs(5))
            .await
            .map(drop)
    }

    /// `GET /v1/agent/service/<id>`: whether the agent still knows the service.
    pub async fn is_registered(&self, id: &str) -> Result<bool, String> {
        match self.call(http::Method::GET, &format!("/v1/agent/service/{id}"), None, Duration::from_secs(5)).await {
            Ok(_) => Ok(true),
            Err(err) if err.contains(" answered 404") => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// `GET /v1/health/service/<name>?passing=true&index=…&wait=…`: passing
    /// instances, blocking until the index moves past `index` or `wait` ends.
    pub async fn passing(&self, name: &str, index: u64, wait: Duration) -> Result<Indexed<Vec<ServiceEntry>>, String> {
        let path = format!("/v1/health/service/{name}?passing=true&index={index}&wait={}ms", wait.as_millis());
        let (headers, body) =
            self.call(http::Method::GET, &path, None, wait + wait / 16 + Duration::from_secs(5)).await?;
        let index = headers
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or("Consul answered without X-Consul-Index")?;
        let value = serde_json::from_slice(&body).map_err(|e| format!("unexpected Consul answer: {e}"))?;
        Ok(Indexed { index, value })
    }
}
