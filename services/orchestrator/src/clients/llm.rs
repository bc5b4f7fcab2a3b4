//! An OpenAI-compatible chat-completions endpoint, for `llm` steps:
//! `POST {LLM_BASE_URL}/chat/completions` with `{"model", "messages"}` and
//! `Authorization: Bearer {LLM_API_KEY}`; the first choice's message text
//! is the answer.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{CallError, http::HttpClient};
use crate::config::LlmConfig;

/// Asks chat-completions questions.
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: HttpClient,
    url: String,
    headers: BTreeMap<String, String>,
    model: String,
}

impl LlmClient {
    pub fn new(config: &LlmConfig, http: HttpClient) -> Self {
        let mut headers = BTreeMap::new();
        if let Some(key) = &config.api_key {
            headers.insert("authorization".to_owned(), format!("Bearer {key}"));
        }
        Self {
            http,
            url: format!("{}/chat/completions", config.base_url.trim_end_matches('/')),
            headers,
            model: config.model.clone(),
        }
    }

    /// The answer to `prompt` (after `system`, when not empty), from `model`
    /// or the configured default.
    pub async fn ask(&self, model: &str, system: &str, prompt: &str) -> Result<String, CallError> {
        let mut messages = Vec::new();
        if !system.is_empty() {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        let model = if model.is_empty() { &self.model } else { model };
        let body = json!({"model": model, "messages": messages}).to_string();
        let answer = self.http.call("POST", &self.url, &self.headers, body).await?;
        match &answer.body["choices"][0]["message"]["content"] {
            Value::String(text) => Ok(text.clone()),
            _ => Err(CallError::permanent(format!(
                "the chat-completions answer has no choices[0].message.content: {}",
                omninode_core::limits::prefix(&answer.body.to_string(), 200)
            ))),
        }
    }
}
