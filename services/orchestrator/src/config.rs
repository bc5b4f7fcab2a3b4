//! Orchestrator settings, read once from the environment.

use std::time::Duration;

use omninode_runtime::{
    ConfigError, Env,
    names::{ORCHESTRATOR, STAMPING},
};

use crate::domain::retry::RetryPolicy;

/// Settings of the orchestrator service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrchestratorConfig {
    /// `ORCHESTRATOR_PORT` (default 8060).
    pub port: u16,
    /// `ORCHESTRATOR_CONCURRENCY`: workflows run at once (default 10).
    pub concurrency: usize,
    /// `MAX_WORKFLOW_QUEUE_SIZE`: runnable workflows waiting unclaimed, across
    /// every instance, before StartWorkflow answers RESOURCE_EXHAUSTED (default 1000).
    pub max_queue: usize,
    /// `ORCHESTRATOR_WORKFLOW_TIMEOUT_MS`: a whole workflow (default 30000).
    pub workflow_timeout: Duration,
    /// `ORCHESTRATOR_STEP_TIMEOUT_MS`: one attempt of one step (default 5000).
    pub step_timeout: Duration,
    /// `ORCHESTRATOR_STEP_MAX_ATTEMPTS`, `ORCHESTRATOR_RETRY_BASE_MS`,
    /// `ORCHESTRATOR_RETRY_MAX_MS`: retries of retryable failures (4, 50, 2000).
    pub retry: RetryPolicy,
    /// `STAMPING_SERVICE_URL`: where the stamping service is (default http://127.0.0.1:8053).
    pub stamping_url: String,
    /// `ONEXTREE_SERVICE_URL`: the OnexTree intelligence service; unset skips the step.
    pub onextree_url: Option<String>,
    /// `STAMPING_MAX_CONTENT_BYTES`: the content limit, shared with stamping.
    pub max_content_bytes: usize,
    /// `ORCHESTRATOR_LEASE_MS`: how long a claim on a workflow lasts without
    /// renewal; another instance takes over a workflow whose owner died
    /// within about 1.25 of it (default 5000, at least 100).
    pub lease: Duration,
}

impl OrchestratorConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let stamping_url = env.string(STAMPING.url_variable, STAMPING.default_url)?;
        check_url(STAMPING.url_variable, &stamping_url)?;
        let onextree_url = env.optional("ONEXTREE_SERVICE_URL")?;
        if let Some(url) = &onextree_url {
            check_url("ONEXTREE_SERVICE_URL", url)?;
        }
        Ok(Self {
            port: env.port(ORCHESTRATOR.port_variable, ORCHESTRATOR.default_port)?,
            concurrency: env.parse_in("ORCHESTRATOR_CONCURRENCY", 10, 1, 1000)?,
            max_queue: env.parse_in("MAX_WORKFLOW_QUEUE_SIZE", 1000, 1, 1_000_000)?,
            workflow_timeout: env.millis("ORCHESTRATOR_WORKFLOW_TIMEOUT_MS", 30_000)?,
            step_timeout: env.millis("ORCHESTRATOR_STEP_TIMEOUT_MS", 5_000)?,
            retry: RetryPolicy {
                max_attempts: env.parse_in("ORCHESTRATOR_STEP_MAX_ATTEMPTS", 4, 1, 100)?,
                base_delay: env.millis("ORCHESTRATOR_RETRY_BASE_MS", 50)?,
                max_delay: env.millis("ORCHESTRATOR_RETRY_MAX_MS", 2_000)?,
            },
            stamping_url,
            onextree_url,
            max_content_bytes: omninode_runtime::config::max_content_bytes(env)?,
            lease: Duration::from_millis(env.parse_in("ORCHESTRATOR_LEASE_MS", 5_000, 100, 3_600_000)?),
        })
    }
}

fn check_url(variable: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(ConfigError::new(variable, format!("{url:?} is not an http:// or https:// URL")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_original_service() {
        let config = OrchestratorConfig::from_env(&Env::default()).unwrap();
        assert_eq!((config.port, config.concurrency, config.max_queue), (8060, 10, 1000));
        assert_eq!(config.onextree_url, None);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("ORCHESTRATOR_CONCURRENCY", "0"),
            ("MAX_WORKFLOW_QUEUE_SIZE", "x"),
            ("STAMPING_SERVICE_URL", "127.0.0.1:8053"),
            ("ONEXTREE_SERVICE_URL", "ftp://x"),
            ("ORCHESTRATOR_STEP_TIMEOUT_MS", "0"),
            ("ORCHESTRATOR_LEASE_MS", "50"),
        ] {
            let err = OrchestratorConfig::from_env(&Env::from_pairs([(name, value)])).unwrap_err();
            assert_eq!(err.variable, name);
        }
    }
}
