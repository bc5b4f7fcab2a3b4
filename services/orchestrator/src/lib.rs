//! The orchestrator service: stamping workflows as a durable state machine.
//! Its contract is `omninode.orchestrator.v1`; the engine lands with its own issue.
