//! The stamping service: BLAKE3 hashes, ONEX stamps (lightweight and rich),
//! validation of stamped content, and the stamp store.
//!
//! The shape every service has: `domain` (its own types, in plain Rust; the
//! shared rules are `omninode-core`'s), `stamper` (the use cases), `store`
//! (the records), `events` (what it publishes), `convert` (proto
//! conversions) and a thin `grpc` adapter.

pub mod config;
mod convert;
pub mod domain;
pub mod error;
mod events;
pub mod grpc;
pub mod stamper;
pub mod store;

pub use config::StampingConfig;
pub use error::StampingError;
pub use grpc::StampingGrpc;
pub use stamper::{StampInput, StampOutcome, Stamper};
pub use store::StampStore;

/// The fully qualified gRPC service name, for health and discovery.
pub const SERVICE_NAME: &str = omninode_runtime::names::STAMPING.grpc_name;

/// Builds the stamping gRPC service on an open database.
pub fn grpc_service(
    db: sea_orm::DatabaseConnection,
    config: StampingConfig,
    outbox: omninode_runtime::events::Outbox,
) -> omninode_proto::stamping::v1::stamping_service_server::StampingServiceServer<StampingGrpc> {
    StampingGrpc::new(Stamper::new(StampStore::new(db, outbox), config)).into_server()
}
