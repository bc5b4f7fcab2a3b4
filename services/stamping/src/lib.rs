//! The stamping service: BLAKE3 hashes, ONEX stamps (lightweight and rich),
//! validation of stamped content, and the stamp store.
//!
//! `domain` holds the rules in plain Rust, `store` the records, `stamper`
//! the use cases, and `grpc` adapts them to `omninode.stamping.v1`.

pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod stamper;
pub mod store;

pub use config::StampingConfig;
pub use error::StampingError;
pub use grpc::StampingGrpc;
pub use stamper::{StampInput, StampOutcome, Stamper, check_input};
pub use store::StampStore;

/// The fully qualified gRPC service name, for health and discovery.
pub const SERVICE_NAME: &str = "omninode.stamping.v1.StampingService";

/// Builds the stamping gRPC service on an open database.
pub fn grpc_service(
    db: sea_orm::DatabaseConnection,
    config: StampingConfig,
    outbox: omninode_mesh::events::Outbox,
) -> omninode_proto::stamping::v1::stamping_service_server::StampingServiceServer<StampingGrpc> {
    StampingGrpc::new(Stamper::new(StampStore::new(db, outbox), config)).into_server()
}
