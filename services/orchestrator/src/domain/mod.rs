//! Workflow rules in plain Rust: the state machine and the workflow record.

pub mod fsm;
pub mod retry;
pub mod workflow;
