//! The runtime every OmniNode Bridge service shares: configuration, telemetry,
//! health, server bootstrap, database access, and the one error mapping.

pub mod config;
pub mod db;
pub mod discovery;
pub mod error;
pub mod events;
pub mod group_commit;
pub mod health;
pub mod paging;
pub mod server;
pub mod telemetry;
pub mod time;

pub use config::{ConfigError, DatabaseTarget, Env, MeshConfig};
pub use error::{ErrorCode, MeshError};
pub use health::HealthRegistry;
pub use server::Runtime;
