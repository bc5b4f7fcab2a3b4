//! Clients of the services a workflow calls (stamping, OnexTree, and the
//! HTTP and chat-completions endpoints a definition's steps name). Their methods speak domain
//! types; transport errors become a [`CallError`] that says whether a retry
//! may help.

pub mod http;
pub mod intelligence;
pub mod llm;
pub mod stamping;

/// A failed call to another service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// Whether the same call may succeed later (unavailable, timed out, throttled).
    pub retryable: bool,
    pub message: String,
}

impl CallError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { retryable: true, message: message.into() }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { retryable: false, message: message.into() }
    }
}
