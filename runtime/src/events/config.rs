//! Event settings, read once from the environment.

use std::time::Duration;

use crate::config::{ConfigError, Env};

use super::topics::DEFAULT_TOPIC_PREFIX;

/// Kafka connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `KAFKA_BOOTSTRAP_SERVERS`, e.g. `127.0.0.1:9092`.
    pub bootstrap_servers: String,
    /// `KAFKA_TOPIC_PARTITIONS` for topics created at start-up (default 3).
    pub partitions: i32,
    /// `KAFKA_REPLICATION_FACTOR` for topics created at start-up (default 1).
    pub replication_factor: i32,
    /// The instance id.
    pub client_id: String,
    /// `KAFKA_STALL_TIMEOUT_MS`: an event unacknowledged this long while the
    /// broker answers means a stuck producer, which is then replaced (default 10000).
    pub stall_timeout: Duration,
    /// `KAFKA_DEBUG`: librdkafka debug contexts (e.g. `broker,msg,eos`), logged at debug level.
    pub debug: Option<String>,
}

/// Where events go and how the relay paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// Set when `KAFKA_BOOTSTRAP_SERVERS` is; otherwise the in-process bus.
    pub kafka: Option<KafkaConfig>,
    /// `KAFKA_TOPIC_PREFIX` (default `dev.omninode_bridge.onex`).
    pub topic_prefix: String,
    /// `OUTBOX_BATCH_SIZE`: events published per round (default 500).
    pub batch_size: u64,
    /// `OUTBOX_POLL_INTERVAL_MS`: how often the outbox is read without a wake-up (default 200).
    pub poll_interval: Duration,
    /// `OUTBOX_MAX_ATTEMPTS`: a refused event is retried this often, then set aside (default 10).
    pub max_attempts: i32,
}

impl EventsConfig {
    pub fn from_env(env: &Env, instance_id: &str) -> Result<Self, ConfigError> {
        let kafka = match env.optional("KAFKA_BOOTSTRAP_SERVERS")? {
            None => None,
            Some(servers) => Some(KafkaConfig {
                bootstrap_servers: servers,
                partitions: env.parse_in("KAFKA_TOPIC_PARTITIONS", 3, 1, 10_000)?,
                replication_factor: env.parse_in("KAFKA_REPLICATION_FACTOR", 1, 1, 100)?,
                client_id: instance_id.to_owned(),
                stall_timeout: env.millis("KAFKA_STALL_TIMEOUT_MS", 10_000)?,
                debug: env.optional("KAFKA_DEBUG")?,
            }),
        };
        let topic_prefix = env.string("KAFKA_TOPIC_PREFIX", DEFAULT_TOPIC_PREFIX)?;
        if topic_prefix.is_empty() || !topic_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(ConfigError::new("KAFKA_TOPIC_PREFIX", "use letters, digits, '.', '_' and '-' only"));
        }
        Ok(Self {
            kafka,
            topic_prefix,
            batch_size: env.parse_in("OUTBOX_BATCH_SIZE", 500, 1, 10_000)?,
            poll_interval: env.millis("OUTBOX_POLL_INTERVAL_MS", 200)?,
            max_attempts: env.parse_in("OUTBOX_MAX_ATTEMPTS", 10, 1, 1_000_000)?,
        })
    }
}
