//! The orchestrator's domain in plain Rust: the workflow record, its steps
//! and retry policy. The state machine is `omninode-core`'s
//! ([`WorkflowState`]), shared with the reducer.

pub mod definition;
pub mod retry;
pub mod template;
pub mod workflow;

pub use omninode_core::{IllegalTransition, WorkflowState};
