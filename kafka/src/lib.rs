//! Kafka for OmniNode Bridge, the only crate that links librdkafka: the
//! outbox relay's [`KafkaSink`] (idempotent producer, topics created at
//! start-up), [`GroupConsumer`] (a consumer-group member with manual offset
//! commits, for the reducer) and [`tail`] (every partition of some topics,
//! for `omninode events`).

pub mod consumer;
pub mod sink;

pub use consumer::{GroupConsumer, TailRecord, request_reply, tail};
pub use rdkafka::error::KafkaError;
pub use sink::KafkaSink;
