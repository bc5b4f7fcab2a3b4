//! The reducer service: per-namespace aggregates of stamp and workflow events.
//!
//! `domain` holds the aggregate rules, `store` the exactly-once batch
//! transaction, `consumer` the Kafka / in-process input with batching and
//! backpressure, and `grpc` the `omninode.reducer.v1` API.

pub mod config;
pub mod consumer;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod store;

pub use config::ReducerConfig;
pub use error::ReducerError;

use omninode_mesh::events::{EventsConfig, InProcessBus, Outbox};
use omninode_proto::reducer::v1::reducer_service_server::ReducerServiceServer;
use tokio_util::sync::CancellationToken;

/// The fully qualified gRPC service name, for health and discovery.
pub const SERVICE_NAME: &str = "omninode.reducer.v1.ReducerService";

/// Starts consuming (Kafka when configured, else `bus`) and returns the
/// gRPC service; consumption stops when `stop` is cancelled.
pub fn start(
    db: sea_orm::DatabaseConnection,
    config: &ReducerConfig,
    events: &EventsConfig,
    bus: Option<&InProcessBus>,
    outbox: Outbox,
    stop: CancellationToken,
) -> Result<ReducerServiceServer<grpc::ReducerGrpc>, ReducerError> {
    let store = store::AggregateStore::new(db, outbox);
    let updates = tokio::sync::broadcast::channel(1024).0;
    match (&events.kafka, bus) {
        (Some(kafka), _) => {
            consumer::spawn_from_kafka(kafka, &events.topic_prefix, config, store.clone(), updates.clone(), stop)?
        }
        (None, Some(bus)) => {
            consumer::spawn_from_bus(bus, &events.topic_prefix, config, store.clone(), updates.clone(), stop)
        }
        (None, None) => return Err(ReducerError::Validation("no event input: set KAFKA_BOOTSTRAP_SERVERS".into())),
    }
    Ok(grpc::ReducerGrpc::new(store, updates).into_server())
}
