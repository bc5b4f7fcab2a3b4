//! Reducer settings, read once from the environment.

use std::time::Duration;

use omninode_runtime::{ConfigError, Env, names::REDUCER};

/// Settings of the reducer service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReducerConfig {
    /// `REDUCER_PORT` (default 8061).
    pub port: u16,
    /// `AGGREGATION_BATCH_SIZE`: items per aggregation transaction (default 100).
    pub batch_size: usize,
    /// `AGGREGATION_WINDOW_SIZE_MS`: a partial batch is aggregated after this long (default 5000).
    pub window: Duration,
    /// `MAX_AGGREGATION_QUEUE_SIZE`: items waiting; a full queue stops consumption (default 5000).
    pub max_queue: usize,
    /// `REDUCER_CONSUMER_GROUP`: the Kafka consumer group (default `omninode-reducer`).
    pub consumer_group: String,
    /// `REDUCER_SESSION_TIMEOUT_MS`: Kafka group session timeout (default 10000).
    pub session_timeout: Duration,
    /// `REDUCER_PROCESSED_RETENTION_MS`: how long a processed event id is kept
    /// to recognise its redelivery (default 7 days).
    pub processed_retention: Duration,
    /// `REDUCER_PRUNE_INTERVAL_MS`: how often older ids are pruned (default one hour).
    pub prune_interval: Duration,
}

impl ReducerConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            port: env.port(REDUCER.port_variable, REDUCER.default_port)?,
            batch_size: env.parse_in("AGGREGATION_BATCH_SIZE", 100, 1, 5000)?,
            window: env.millis("AGGREGATION_WINDOW_SIZE_MS", 5000)?,
            max_queue: env.parse_in("MAX_AGGREGATION_QUEUE_SIZE", 5000, 1, 1_000_000)?,
            consumer_group: env.string("REDUCER_CONSUMER_GROUP", "omninode-reducer")?,
            session_timeout: env.millis("REDUCER_SESSION_TIMEOUT_MS", 10_000)?,
            processed_retention: Duration::from_millis(env.parse_in(
                "REDUCER_PROCESSED_RETENTION_MS",
                7 * 24 * 3_600_000,
                0,
                u64::MAX,
            )?),
            prune_interval: env.millis("REDUCER_PRUNE_INTERVAL_MS", 3_600_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_original_service() {
        let config = ReducerConfig::from_env(&Env::default()).unwrap();
        assert_eq!((config.port, config.batch_size, config.max_queue), (8061, 100, 5000));
        assert_eq!(config.window, Duration::from_millis(5000));
        let err = ReducerConfig::from_env(&Env::from_pairs([("AGGREGATION_BATCH_SIZE", "0")])).unwrap_err();
        assert_eq!(err.variable, "AGGREGATION_BATCH_SIZE");
    }
}
