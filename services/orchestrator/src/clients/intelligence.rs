//! The OnexTree intelligence service over HTTP/JSON.
//!
//! `POST {ONEXTREE_SERVICE_URL}/api/v1/intelligence/analyze` with
//! `{"workflow_id","namespace","file_path","file_hash","content_type","context"}`;
//! a 2xx answer's JSON body is kept as the workflow's `intelligence_data`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};

use super::CallError;
use crate::domain::workflow::Workflow;

/// Largest answer kept (larger answers are refused, not truncated).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// An HTTP/1.1 client of the OnexTree service.
#[derive(Debug, Clone)]
pub struct IntelligenceClient {
    url: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl IntelligenceClient {
    pub fn new(base_url: &str) -> Self {
        let http = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        Self { url: format!("{}/api/v1/intelligence/analyze", base_url.trim_end_matches('/')), http }
    }

    /// Asks for an analysis of the workflow's stamped file; returns the JSON text.
    pub async fn analyze(&self, workflow: &Workflow) -> Result<String, CallError> {
        let body = serde_json::json!({
            "workflow_id": workflow.id,
            "namespace": workflow.namespace,
            "file_path": workflow.input.file_path,
            "file_hash": workflow.file_hash,
            "content_type": workflow.input.content_type,
            "context": workflow.input.context,
        });
        let request = http::Request::post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-correlation-id", workflow.correlation_id.as_deref().unwrap_or(&workflow.id))
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| CallError::permanent(format!("cannot build the OnexTree request: {e}")))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| CallError::retryable(format!("OnexTree unreachable at {}: {e}", self.url)))?;
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| CallError::retryable(format!("OnexTree answer unreadable: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let message =
                format!("OnexTree answered {status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(200)]));
            let transient = status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS;
            return Err(if transient { CallError::retryable(message) } else { CallError::permanent(message) });
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| CallError::permanent(format!("OnexTree answered invalid JSON: {e}")))?;
        Ok(value.to_string())
    }
}
