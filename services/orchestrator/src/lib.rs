//! The orchestrator service: stamping workflows as a durable state machine.
//!
//! `domain` holds the state machine and workflow record, `store` persists
//! them, `clients` call stamping (gRPC) and OnexTree (HTTP), `engine` runs
//! workflows, and `grpc` adapts it all to `omninode.orchestrator.v1`.

pub mod clients;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod store;

pub use config::OrchestratorConfig;
pub use engine::WorkflowEngine;
pub use error::OrchestratorError;

use omninode_proto::orchestrator::v1::orchestrator_service_server::OrchestratorServiceServer;
use tokio_util::sync::CancellationToken;

/// The fully qualified gRPC service name, for health and discovery.
pub const SERVICE_NAME: &str = "omninode.orchestrator.v1.OrchestratorService";

/// Starts the engine on an open database (resuming unfinished workflows),
/// calling stamping over `stamping` (static or discovered), and returns its
/// gRPC service; workers stop taking work when `stop` is cancelled.
pub async fn grpc_service(
    db: sea_orm::DatabaseConnection,
    config: OrchestratorConfig,
    stamping: tonic::transport::Channel,
    outbox: omninode_mesh::events::Outbox,
    stop: CancellationToken,
) -> Result<OrchestratorServiceServer<grpc::OrchestratorGrpc>, OrchestratorError> {
    let max_message = config.max_content_bytes.saturating_mul(2).saturating_add(64 * 1024);
    let stamping = clients::stamping::StampingClient::from_channel(stamping, max_message);
    let max_content = config.max_content_bytes;
    let engine = WorkflowEngine::start_workers(store::WorkflowStore::new(db, outbox), config, stamping, stop);
    engine.recover().await?;
    Ok(grpc::OrchestratorGrpc::new(engine, max_content).into_server())
}
