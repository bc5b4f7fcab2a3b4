//! Aggregation rules in plain Rust: what an event contributes to its
//! namespace's aggregate.

pub mod aggregate;
