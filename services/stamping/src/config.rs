//! Stamping settings, read once from the environment.

use omninode_runtime::{ConfigError, Env, names::STAMPING};

/// Settings of the stamping service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampingConfig {
    /// `STAMPING_PORT` (default 8053).
    pub port: u16,
    /// `STAMPING_MAX_CONTENT_BYTES`: largest content a Stamp accepts (default 16 MiB).
    pub max_content_bytes: usize,
    /// `STAMPING_MAX_BATCH_ITEMS`: most items in one BatchStamp (default 1000).
    pub max_batch_items: usize,
}

impl Default for StampingConfig {
    fn default() -> Self {
        Self {
            port: STAMPING.default_port,
            max_content_bytes: omninode_core::limits::DEFAULT_MAX_CONTENT_BYTES,
            max_batch_items: 1000,
        }
    }
}

impl StampingConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            port: env.port(STAMPING.port_variable, defaults.port)?,
            max_content_bytes: omninode_runtime::config::max_content_bytes(env)?,
            max_batch_items: env.parse_in("STAMPING_MAX_BATCH_ITEMS", defaults.max_batch_items, 1, 10_000)?,
        })
    }

    /// The largest gRPC message the server must decode: a full batch of
    /// maximal content would be absurd, so a batch is bounded by 4× one item.
    pub fn max_message_bytes(&self) -> usize {
        self.max_content_bytes.saturating_mul(4).saturating_add(64 * 1024)
    }
}
