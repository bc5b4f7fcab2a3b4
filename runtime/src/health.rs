//! Health of a process: its dependencies ("components"), critical or not, and
//! its lifecycle (starting, serving, draining). One registry drives both the
//! HTTP `/health` and `/ready` bodies and the grpc.health.v1 statuses.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sea_orm::DatabaseConnection;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

/// The overall verdict, as the HTTP body spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Every dependency is up.
    Healthy,
    /// A non-critical dependency (Kafka, Consul, OnexTree) is down.
    Degraded,
    /// A critical dependency (the database) is down.
    Unhealthy,
}

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    Starting,
    Serving,
    Draining,
}

/// The last probe of one dependency.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentHealth {
    /// "up" or "down".
    pub status: &'static str,
    pub critical: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339 time of the probe.
    pub checked_at: String,
    /// For a Kafka consumer: records in its partitions it has not read yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_lag: Option<i64>,
}

/// The `/health` and `/ready` body: `{"status", "version", "details"}`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub status: HealthStatus,
    pub version: &'static str,
    pub lifecycle: Lifecycle,
    pub details: BTreeMap<String, ComponentHealth>,
}

impl HealthReport {
    /// Whether the process should receive traffic.
    pub fn is_ready(&self) -> bool {
        self.lifecycle == Lifecycle::Serving && self.status != HealthStatus::Unhealthy
    }
}

struct State {
    components: BTreeMap<String, ComponentHealth>,
    lifecycle: Lifecycle,
    grpc_services: Vec<String>,
    /// What grpc.health.v1 currently says, to flip it only on change.
    serving: Option<bool>,
}

/// Shared, cheaply cloned health state of the process.
#[derive(Clone)]
pub struct HealthRegistry {
    version: &'static str,
    state: Arc<Mutex<State>>,
    reporter: HealthReporter,
    /// Serialises publishing: the verdict is computed and pushed under it, so
    /// a verdict computed earlier can never overwrite a later one.
    publishing: Arc<tokio::sync::Mutex<()>>,
}

impl HealthRegistry {
    /// A registry whose gRPC statuses are published through `reporter`.
    pub fn new(version: &'static str, reporter: HealthReporter) -> Self {
        let state = State {
            components: BTreeMap::new(),
            lifecycle: Lifecycle::Starting,
            grpc_services: vec![String::new()],
            serving: None,
        };
        Self { version, state: Arc::new(Mutex::new(state)), reporter, publishing: Arc::default() }
    }

    /// Adds a gRPC service whose grpc.health.v1 status follows the process health.
    pub async fn track_grpc_service(&self, name: &str) {
        {
            let mut state = self.state.lock().expect("health state");
            state.grpc_services.push(name.to_owned());
            // Force a publish so the new service gets a status at once.
            state.serving = None;
        }
        self.publish().await;
    }

    /// Records the result of probing a dependency.
    pub async fn set_component(&self, name: &str, critical: bool, result: Result<(), String>) {
        self.set_consumer(name, critical, result, None).await;
    }

    /// Records the state of a Kafka consumer: whether it reads, and its lag.
    pub async fn set_consumer(&self, name: &str, critical: bool, result: Result<(), String>, lag: Option<i64>) {
        let health = ComponentHealth {
            status: if result.is_ok() { "up" } else { "down" },
            critical,
            message: result.err().unwrap_or_default(),
            checked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            consumer_lag: lag,
        };
        self.state.lock().expect("health state").components.insert(name.to_owned(), health);
        self.publish().await;
    }

    /// Moves the process to another lifecycle stage.
    pub async fn set_lifecycle(&self, lifecycle: Lifecycle) {
        self.state.lock().expect("health state").lifecycle = lifecycle;
        self.publish().await;
    }

    /// The current report.
    pub fn report(&self) -> HealthReport {
        let state = self.state.lock().expect("health state");
        HealthReport {
            status: overall(&state.components),
            version: self.version,
            lifecycle: state.lifecycle,
            details: state.components.clone(),
        }
    }

    /// Pushes the verdict to grpc.health.v1 when it changed.
    async fn publish(&self) {
        let _publishing = self.publishing.lock().await;
        let serving = self.report().is_ready();
        let services = {
            let mut state = self.state.lock().expect("health state");
            if state.serving == Some(serving) {
                return;
            }
            state.serving = Some(serving);
            state.grpc_services.clone()
        };
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        for service in services {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Probes the database once now, then every `interval` until `stop` is
    /// cancelled. The database is critical: a failed probe makes the process
    /// unhealthy (NOT_SERVING) until a later probe succeeds.
    pub async fn spawn_database_probe(
        &self,
        db: DatabaseConnection,
        interval: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        self.probe_database(&db, interval).await;
        let registry = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                registry.probe_database(&db, interval).await;
            }
        })
    }

    async fn probe_database(&self, db: &DatabaseConnection, interval: Duration) {
        let result = match tokio::time::timeout(interval.max(Duration::from_secs(1)), db.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(format!("database unreachable: {err}")),
            Err(_) => Err("database ping timed out".to_owned()),
        };
        if let Err(problem) = &result {
            tracing::warn!(%problem, "database probe failed");
        }
        self.set_component("database", true, result).await;
    }
}

fn overall(components: &BTreeMap<String, ComponentHealth>) -> HealthStatus {
    let down = components.values().filter(|c| c.status == "down");
    let mut status = HealthStatus::Healthy;
    for component in down {
        if component.critical {
            return HealthStatus::Unhealthy;
        }
        status = HealthStatus::Degraded;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn critical_down_is_unhealthy_and_non_critical_down_is_degraded() {
        let (reporter, _server) = tonic_health::server::health_reporter();
        let registry = HealthRegistry::new("test", reporter);
        registry.set_lifecycle(Lifecycle::Serving).await;
        registry.set_component("database", true, Ok(())).await;
        assert_eq!(registry.report().status, HealthStatus::Healthy);
        assert!(registry.report().is_ready());

        registry.set_component("kafka", false, Err("broker down".into())).await;
        assert_eq!(registry.report().status, HealthStatus::Degraded);
        assert!(registry.report().is_ready());

        registry.set_component("database", true, Err("gone".into())).await;
        let report = registry.report();
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert!(!report.is_ready());
        assert_eq!(report.details["database"].message, "gone");
    }
}
