//! The runtime every OmniNode Bridge service shares: configuration, telemetry,
//! health, server bootstrap, database access, discovery, the event outbox and
//! its relay (the Kafka sink lives in `omninode-kafka`), paging, watch
//! streams, and the one error model.

pub mod auth;
pub mod config;
pub mod convert;
pub mod db;
pub mod discovery;
pub mod error;
pub mod events;
pub mod group_commit;
pub mod health;
pub mod names;
pub mod paging;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod trace;

pub mod watch;

pub use config::{ConfigError, DatabaseTarget, Env, MeshConfig};
pub use error::{ApiError, ErrorCode, ServiceError, reason};
pub use health::HealthRegistry;
pub use server::Runtime;
