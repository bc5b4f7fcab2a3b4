//! A Consul-agent test double: the HTTP endpoints the mesh uses, with
//! Consul's JSON field names, blocking queries (`index`, `wait`,
//! `X-Consul-Index`), and real gRPC health checks run from each registered
//! check definition. It records every registration body for assertions.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, put},
};
use serde_json::{Value, json};
use tokio::sync::watch;

#[derive(Default)]
struct Agent {
    /// Registered services by ID: the body as received, and the check status.
    services: HashMap<String, (Value, &'static str)>,
    /// Every registration body received, in order.
    registrations: Vec<Value>,
    deregistrations: Vec<String>,
    /// The X-Consul-Token of every registration.
    tokens: Vec<String>,
    /// Bumped on every change; the generation guards checker tasks.
    generation: u64,
}

/// A running double.
#[derive(Clone)]
pub struct ConsulDouble {
    pub addr: SocketAddr,
    https: bool,
    agent: Arc<Mutex<Agent>>,
    /// The Consul index; blocking queries wait on it.
    index: Arc<watch::Sender<u64>>,
}

impl ConsulDouble {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// The double behind HTTPS with `tls` (its `url()` is then `https://…`).
    pub async fn start_tls(tls: omninode_runtime::tls::ServerTls) -> Self {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<omninode_runtime::tls::ServerTls>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let double = Self {
            addr: listener.local_addr().unwrap(),
            agent: Arc::default(),
            index: Arc::new(watch::channel(1).0),
            https: tls.is_some(),
        };
        let router = Router::new()
            .route("/v1/agent/service/register", put(register))
            .route("/v1/agent/service/deregister/{id}", put(deregister))
            .route("/v1/agent/service/{id}", get(agent_service))
            .route("/v1/health/service/{name}", get(health_service))
            .with_state(double.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(async move { omninode_runtime::server::http::serve(listener, router, tls, stop).await.unwrap() });
        double
    }

    /// `http(s)://addr` for CONSUL_HTTP_ADDR.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.addr)
    }

    /// An agent restart: every registration forgotten, the index back to 1.
    pub fn restart(&self) {
        let mut agent = self.agent.lock().unwrap();
        agent.services.clear();
        agent.generation += 1;
        self.index.send_replace(1);
    }

    pub fn registrations(&self) -> Vec<Value> {
        self.agent.lock().unwrap().registrations.clone()
    }

    /// The ACL token each registration carried.
    pub fn tokens(&self) -> Vec<String> {
        self.agent.lock().unwrap().tokens.clone()
    }

    pub fn deregistrations(&self) -> Vec<String> {
        self.agent.lock().unwrap().deregistrations.clone()
    }

    /// The registration body and check status of a registered service.
    pub fn service(&self, id: &str) -> Option<(Value, &'static str)> {
        self.agent.lock().unwrap().services.get(id).cloned()
    }

    /// IDs of the registered instances of `name`.
    pub fn instances(&self, name: &str) -> Vec<String> {
        let agent = self.agent.lock().unwrap();
        let mut ids: Vec<String> =
            agent.services.iter().filter(|(_, (body, _))| body["Name"] == name).map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids
    }

    fn bump(&self) {
        self.index.send_modify(|i| *i += 1);
    }

    fn set_status(&self, id: &str, generation: u64, status: &'static str) -> bool {
        let mut agent = self.agent.lock().unwrap();
        if agent.generation != generation {
            return false;
        }
        match agent.services.get_mut(id) {
            Some(entry) => {
                if entry.1 != status {
                    entry.1 = status;
                    drop(agent);
                    self.bump();
                }
                true
            }
            None => false,
        }
    }
}

/// Parses Consul durations as the mesh writes them ("200ms", "10s", "1m").
fn duration(text: &str) -> Option<Duration> {
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit()).map(|i| text.split_at(i))?;
    let n: u64 = number.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return None,
    })
}

async fn register(
    State(double): State<ConsulDouble>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> impl IntoResponse {
    let token = headers.get("X-Consul-Token").and_then(|t| t.to_str().ok()).unwrap_or_default().to_owned();
    let (Some(id), Some(_), Some(_)) = (body["ID"].as_str(), body["Name"].as_str(), body["Port"].as_u64()) else {
        return (StatusCode::BAD_REQUEST, "ID, Name and Port are required").into_response();
    };
    let check = &body["Check"];
    let (Some(target), Some(interval), Some(timeout)) = (
        check["GRPC"].as_str(),
        check["Interval"].as_str().and_then(duration),
        check["Timeout"].as_str().and_then(duration),
    ) else {
        return (StatusCode::BAD_REQUEST, "Check needs GRPC, Interval and Timeout").into_response();
    };
    let id = id.to_owned();
    let generation = {
        let mut agent = double.agent.lock().unwrap();
        agent.registrations.push(body.clone());
        agent.tokens.push(token);
        // A new check starts critical, as in Consul.
        agent.services.insert(id.clone(), (body.clone(), "critical"));
        agent.generation
    };
    double.bump();
    let (address, service) = target.split_once('/').map(|(a, s)| (a.to_owned(), s.to_owned())).unwrap();
    tokio::spawn(run_check(double.clone(), id, generation, address, service, interval, timeout));
    StatusCode::OK.into_response()
}

/// The agent's gRPC check: grpc.health.v1 Check at every interval.
async fn run_check(
    double: ConsulDouble,
    id: String,
    generation: u64,
    address: String,
    service: String,
    interval: Duration,
    timeout: Duration,
) {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    loop {
        let probe = async {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://{address}")).ok()?.connect().await.ok()?;
            let response =
                HealthClient::new(channel).check(HealthCheckRequest { service: service.clone() }).await.ok()?;
            Some(response.into_inner().status == ServingStatus::Serving as i32)
        };
        let passing = tokio::time::timeout(timeout, probe).await.ok().flatten().unwrap_or(false);
        if !double.set_status(&id, generation, if passing { "passing" } else { "critical" }) {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

async fn deregister(State(double): State<ConsulDouble>, Path(id): Path<String>) -> impl IntoResponse {
    {
        let mut agent = double.agent.lock().unwrap();
        agent.services.remove(&id);
        agent.deregistrations.push(id);
    }
    double.bump();
    StatusCode::OK
}

async fn agent_service(State(double): State<ConsulDouble>, Path(id): Path<String>) -> impl IntoResponse {
    match double.service(&id) {
        Some((body, _)) => Json(json!({
            "ID": body["ID"], "Service": body["Name"], "Tags": body["Tags"], "Meta": body["Meta"],
            "Address": body["Address"], "Port": body["Port"],
        }))
        .into_response(),
        None => (StatusCode::NOT_FOUND, format!("unknown service ID: {id}")).into_response(),
    }
}

async fn health_service(
    State(double): State<ConsulDouble>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let wanted: u64 = query.get("index").and_then(|i| i.parse().ok()).unwrap_or(0);
    let wait = query.get("wait").and_then(|w| duration(w)).unwrap_or(Duration::from_secs(300));
    let mut index = double.index.subscribe();
    // Blocking query: answer when the index moves past the caller's, or at the end of `wait`.
    let _ = tokio::time::timeout(wait, index.wait_for(|current| *current != wanted)).await;
    let current = *index.borrow();
    let passing_only = query.contains_key("passing");
    let agent = double.agent.lock().unwrap();
    let entries: Vec<Value> = agent
        .services
        .values()
        .filter(|(body, status)| body["Name"] == name.as_str() && (!passing_only || *status == "passing"))
        .map(|(body, status)| {
            json!({
                "Node": {"Node": "consul-double", "Address": "127.0.0.1"},
                "Service": {"ID": body["ID"], "Service": body["Name"], "Tags": body["Tags"], "Meta": body["Meta"],
                            "Address": body["Address"], "Port": body["Port"]},
                "Checks": [{"CheckID": format!("service:{}", body["ID"].as_str().unwrap_or("")), "Status": status,
                            "ServiceID": body["ID"]}],
            })
        })
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert("X-Consul-Index", current.to_string().parse().unwrap());
    (headers, Json(entries))
}
