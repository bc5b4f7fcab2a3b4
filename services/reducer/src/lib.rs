//! The reducer service: per-namespace aggregates of stamp and workflow events.
//!
//! The shape every service has: `domain` (the aggregate rules, in plain
//! Rust), `aggregator` (the use cases, [`Aggregator`]), `store` (the
//! exactly-once batch transaction), `events` (what it publishes), `convert`
//! (proto conversions, events in and messages out) and a thin `grpc`
//! adapter; plus `consumer`, the in-process bus or (feature `kafka`) Kafka
//! input with batching and backpressure.

pub mod aggregator;
pub mod config;
pub mod consumer;
mod convert;
pub mod domain;
pub mod error;
mod events;
pub mod grpc;
pub mod store;

pub use aggregator::Aggregator;
pub use config::ReducerConfig;
pub use convert::item_from;
pub use error::ReducerError;

use omninode_proto::reducer::v1::reducer_service_server::ReducerServiceServer;
use omninode_runtime::events::{EventsConfig, InProcessBus, Outbox};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The fully qualified gRPC service name, for health and discovery.
pub const SERVICE_NAME: &str = omninode_runtime::names::REDUCER.grpc_name;

/// A started reducer: its gRPC service and the task that aggregates its input.
pub struct Started {
    pub service: ReducerServiceServer<grpc::ReducerGrpc>,
    /// Ends after `stop` once what it must store is stored (see
    /// [`consumer`]); the database must stay open until then.
    pub consumer: JoinHandle<()>,
}

/// Starts consuming (Kafka when configured, else `bus`) and returns the
/// gRPC service; consumption stops when `stop` is cancelled.
pub fn start(
    db: sea_orm::DatabaseConnection,
    config: &ReducerConfig,
    events: &EventsConfig,
    bus: Option<&InProcessBus>,
    outbox: Outbox,
    stop: CancellationToken,
) -> Result<Started, ReducerError> {
    let aggregator = Aggregator::new(store::AggregateStore::new(db, outbox));
    let consumer = match (&events.kafka, bus) {
        #[cfg(feature = "kafka")]
        (Some(kafka), _) => consumer::spawn_from_kafka(kafka, &events.topic_prefix, config, aggregator.clone(), stop)?,
        #[cfg(not(feature = "kafka"))]
        (Some(_), _) => {
            return Err(ReducerError::Dependency(
                "KAFKA_BOOTSTRAP_SERVERS is set but this build has no Kafka consumer (feature `kafka`)".into(),
            ));
        }
        (None, Some(bus)) => consumer::spawn_from_bus(bus, &events.topic_prefix, config, aggregator.clone(), stop),
        (None, None) => {
            return Err(ReducerError::Dependency("no event input: set KAFKA_BOOTSTRAP_SERVERS".into()));
        }
    };
    Ok(Started { service: grpc::ReducerGrpc::new(aggregator).into_server(), consumer })
}
