//! The orchestrator service: stamping workflows as a durable state machine.
//!
//! The shape every service has: `domain` (the workflow record, steps and
//! retry policy; the state machine is `omninode-core`'s), `engine` (the use
//! case, [`WorkflowEngine`]), `store` (persistence), `events` (what it
//! publishes), `convert` (proto conversions) and a thin `grpc` adapter;
//! plus `clients` for the services it calls (stamping over gRPC, OnexTree
//! over HTTP) and `ingress`, the requests it reads from Kafka.

pub mod clients;
pub mod config;
mod convert;
pub mod domain;
pub mod engine;
pub mod error;
mod events;
pub mod grpc;
pub mod ingress;
pub mod store;

pub use config::OrchestratorConfig;
pub use engine::WorkflowEngine;
pub use error::OrchestratorError;

use omninode_proto::orchestrator::v1::orchestrator_service_server::OrchestratorServiceServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The fully qualified gRPC service name, for health and discovery.
pub const SERVICE_NAME: &str = omninode_runtime::names::ORCHESTRATOR.grpc_name;

/// The orchestrator of a process: its gRPC service, the task that hands
/// its workflows over to the other instances after `stop` (await it before
/// closing the database), and its Kafka ingress when `ONEX_INPUT_TOPIC` is set.
pub struct Started {
    pub service: OrchestratorServiceServer<grpc::OrchestratorGrpc>,
    pub handover: JoinHandle<()>,
    pub ingress: Option<ingress::Ingress>,
}

/// Starts the engine on an open database as `process.instance_id`, calling
/// stamping over `stamping` (in process, static or discovered) with `process.credential`.
pub fn start(
    db: sea_orm::DatabaseConnection,
    config: OrchestratorConfig,
    stamping: omninode_runtime::server::MeshChannel,
    outbox: omninode_runtime::events::Outbox,
    process: &omninode_runtime::MeshConfig,
    ingress: Option<omninode_runtime::events::IngressConfig>,
    stop: CancellationToken,
) -> Started {
    let max_message = config.max_content_bytes.saturating_mul(2).saturating_add(64 * 1024);
    let stamping = clients::stamping::StampingClient::from_channel(stamping, process.credential.clone(), max_message);
    let instance_id = process.instance_id.as_str();
    let max_content = config.max_content_bytes;
    let raw_stamping = stamping.raw();
    let (engine, handover) = WorkflowEngine::start(
        store::WorkflowStore::new(db.clone(), outbox.clone()),
        config,
        stamping,
        instance_id,
        stop,
    );
    let grpc = grpc::OrchestratorGrpc::new(engine, max_content);
    let ingress = ingress.map(|config| ingress::Ingress::new(db, outbox, config, grpc.clone(), raw_stamping));
    Started { service: grpc.into_server(), handover, ingress }
}
