//! The orchestrator service: stamping workflows as a durable state machine.
//!
//! The shape every service has: `domain` (the workflow record, steps and
//! retry policy; the state machine is `omninode-core`'s), `engine` (the use
//! case, [`WorkflowEngine`]), `store` (persistence), `events` (what it
//! publishes), `convert` (proto conversions) and a thin `grpc` adapter;
//! plus `clients` for the services it calls (stamping over gRPC, OnexTree
//! over HTTP).

pub mod clients;
pub mod config;
mod convert;
pub mod domain;
pub mod engine;
pub mod error;
mod events;
pub mod grpc;
pub mod store;

pub use config::OrchestratorConfig;
pub use engine::WorkflowEngine;
pub use error::OrchestratorError;

use omninode_proto::orchestrator::v1::orchestrator_service_server::OrchestratorServiceServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The fully qualified gRPC service name, for health and discovery.
pub const SERVICE_NAME: &str = omninode_runtime::names::ORCHESTRATOR.grpc_name;

/// Starts the engine on an open database as `process.instance_id`, calling
/// stamping over `stamping` (static or discovered) with `process.credential`, and returns its
/// gRPC service and the task that hands its workflows over to the other
/// instances after `stop` (await it before closing the database).
pub fn grpc_service(
    db: sea_orm::DatabaseConnection,
    config: OrchestratorConfig,
    stamping: tonic::transport::Channel,
    outbox: omninode_runtime::events::Outbox,
    process: &omninode_runtime::MeshConfig,
    stop: CancellationToken,
) -> (OrchestratorServiceServer<grpc::OrchestratorGrpc>, JoinHandle<()>) {
    let max_message = config.max_content_bytes.saturating_mul(2).saturating_add(64 * 1024);
    let stamping = clients::stamping::StampingClient::from_channel(stamping, process.credential.clone(), max_message);
    let instance_id = process.instance_id.as_str();
    let max_content = config.max_content_bytes;
    let (engine, handover) =
        WorkflowEngine::start(store::WorkflowStore::new(db, outbox), config, stamping, instance_id, stop);
    (grpc::OrchestratorGrpc::new(engine, max_content).into_server(), handover)
}
