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
    /// `ORCHESTRATOR_CONCURRENCY`: workflows run at once (default 64).
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
    /// `LLM_BASE_URL`, `LLM_API_KEY`, `LLM_MODEL`: the chat-completions
    /// endpoint of `llm` steps; unset fails such a step, saying so.
    pub llm: Option<LlmConfig>,
}

/// An OpenAI-compatible chat-completions endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// `LLM_BASE_URL`: up to the `/chat/completions` path (e.g. `https://api.openai.com/v1`).
    pub base_url: String,
    /// `LLM_API_KEY`: sent as a bearer token.
    pub api_key: Option<String>,
    /// `LLM_MODEL`: the model of steps that name none (default `gpt-4o-mini`).
    pub model: String,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .finish()
    }
}

impl LlmConfig {
    fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let api_key = env.credential("LLM_API_KEY")?;
        let model = env.string("LLM_MODEL", "gpt-4o-mini")?;
        let Some(base_url) = env.optional("LLM_BASE_URL")? else {
            if api_key.is_some() {
                return Err(ConfigError::new("LLM_BASE_URL", "LLM_API_KEY is set: set LLM_BASE_URL too"));
            }
            return Ok(None);
        };
        check_url("LLM_BASE_URL", &base_url)?;
        // A key sent in clear text to another machine is readable on the way.
        if api_key.is_some() && base_url.starts_with("http://") && !is_loopback_url(&base_url) {
            return Err(ConfigError::new(
                "LLM_BASE_URL",
                "is plain http:// to another host while LLM_API_KEY is set; use https:// (the key would travel in clear text)",
            ));
        }
        Ok(Some(Self { base_url, api_key, model }))
    }
}

/// Whether an http(s) URL names this machine (localhost, 127.0.0.0/8, ::1).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
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
            concurrency: env.parse_in("ORCHESTRATOR_CONCURRENCY", 64, 1, 1000)?,
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
            llm: LlmConfig::from_env(env)?,
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
        assert_eq!((config.port, config.concurrency, config.max_queue), (8060, 64, 1000));
        assert_eq!(config.onextree_url, None);
        assert_eq!(config.llm, None);
    }

    #[test]
    fn an_llm_key_never_travels_in_clear_text_to_another_host() {
        let env = |url: &str| Env::from_pairs([("LLM_BASE_URL", url), ("LLM_API_KEY", "sk-1")]);
        let err = OrchestratorConfig::from_env(&env("http://llm.example.com/v1")).unwrap_err();
        assert_eq!(err.variable, "LLM_BASE_URL");
        assert!(err.to_string().contains("clear text"), "{err}");
        for fine in ["https://llm.example.com/v1", "http://127.0.0.1:9000/v1", "http://localhost/v1", "http://[::1]:80"]
        {
            let llm = OrchestratorConfig::from_env(&env(fine)).unwrap().llm.unwrap();
            assert_eq!((llm.base_url.as_str(), llm.api_key.as_deref()), (fine, Some("sk-1")));
            assert!(!format!("{llm:?}").contains("sk-1"), "the key never reaches a log");
        }
        let keyless = Env::from_pairs([("LLM_BASE_URL", "http://llm.internal:8000/v1")]);
        assert!(OrchestratorConfig::from_env(&keyless).unwrap().llm.is_some(), "no key, nothing to leak");
        let err = OrchestratorConfig::from_env(&Env::from_pairs([("LLM_API_KEY", "sk-1")])).unwrap_err();
        assert_eq!(err.variable, "LLM_BASE_URL");
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
            ("LLM_BASE_URL", "api.example.com/v1"),
            ("LLM_API_KEY", "__REPLACE_WITH_LLM_API_KEY__"),
            ("LLM_API_KEY", "   "),
        ] {
            let err = OrchestratorConfig::from_env(&Env::from_pairs([(name, value)])).unwrap_err();
            assert_eq!(err.variable, name);
        }
    }
}
