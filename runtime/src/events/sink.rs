//! Where the relay delivers events: Kafka or the in-process bus.

/// One outbox event ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEvent {
    pub event_id: String,
    pub topic: String,
    /// The record key (stamp hash, workflow id, namespace).
    pub key: String,
    pub event_type: String,
    pub correlation_id: Option<String>,
    /// The encoded `omninode.events.v1.EventEnvelope`.
    pub payload: Vec<u8>,
    /// W3C `traceparent` of the publish span (Kafka header `traceparent`), when traced.
    pub traceparent: Option<String>,
    /// Further record headers (answers and dead letters carry some).
    pub headers: Vec<(String, String)>,
}

/// A destination for events that confirms delivery.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Publishes `events` in order and waits for their delivery. Returns,
    /// per event, whether it was delivered, and why one was not. (A later
    /// event may be delivered when an earlier one was not only if their keys
    /// differ: one key's events are delivered in order or not at all.)
    async fn publish(&self, events: &[OutgoingEvent]) -> (Vec<bool>, Option<String>);

    /// Whether the sink can deliver now.
    async fn probe(&self) -> Result<(), String>;

    /// The health component name ("kafka", "event_bus").
    fn name(&self) -> &'static str;

    /// Told by the relay once it has stopped for good: nothing more will be
    /// published. A sink whose receivers wait for the end of their input
    /// (the in-process bus) ends it here; a broker's sink has nothing to do.
    async fn close(&self) {}
}

/// Where a consumed record was read (topic, partition, offset), for the
/// offset commit that follows its processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A record read from Kafka whole: payload, key, headers and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRecord {
    pub payload: Vec<u8>,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub position: RecordPosition,
}

impl IncomingRecord {
    /// The value of header `name` as text, if present and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}
