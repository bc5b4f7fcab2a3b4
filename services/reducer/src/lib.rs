//! The reducer service: per-namespace aggregates of stamp and workflow events.
//! Its contract is `omninode.reducer.v1`; the consumer lands with its own issue.
