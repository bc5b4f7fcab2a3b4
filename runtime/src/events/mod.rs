//! Events: the transactional outbox, its relay, and the two sinks — Kafka
//! (when `KAFKA_BOOTSTRAP_SERVERS` is set) and the in-process bus.

pub mod bus;
pub mod config;
pub mod dead_letter;
pub mod outbox;
pub mod relay;
pub mod sink;
pub mod topics;

pub use bus::InProcessBus;
pub use config::{EventsConfig, IngressConfig, KafkaConfig};
pub use dead_letter::{dead_letter_record, dead_letter_topic};
pub use outbox::{NewEvent, Outbox, OutboxRecord, WriteIf};
pub use relay::OutboxRelay;
pub use sink::{EventSink, IncomingRecord, OutgoingEvent, RecordPosition};
pub use topics::EventKind;
