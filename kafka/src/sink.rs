//! Kafka through rdkafka: an idempotent producer (acks=all) that keeps
//! retrying while the broker is away, so events wait and then arrive once,
//! in order per key; topics created at start-up when missing.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer, PurgeConfig},
};

use omninode_runtime::events::{EventSink, KafkaConfig, OutgoingEvent};

/// Publishes to Kafka.
pub struct KafkaSink {
    config: KafkaConfig,
    topics: Vec<String>,
    producer: Mutex<FutureProducer>,
    /// Whether the topics were created since the broker was last seen up
    /// (a broker with in-memory storage forgets them when it restarts).
    topics_ready: AtomicBool,
}

impl KafkaSink {
    /// A producer of `topics` on `config.bootstrap_servers` (no I/O yet).
    pub fn new(config: KafkaConfig, topics: Vec<String>) -> Result<Self, KafkaError> {
        let producer = producer(&config)?;
        Ok(Self { config, topics, producer: Mutex::new(producer), topics_ready: AtomicBool::new(false) })
    }

    fn producer(&self) -> FutureProducer {
        self.producer.lock().expect("producer").clone()
    }

    /// Replaces `stuck` with a new producer (a new producer id) and purges
    /// what `stuck` still holds; the relay sends those events again.
    fn restart_producer(&self, stuck: &FutureProducer) {
        match producer(&self.config) {
            Ok(fresh) => {
                tracing::warn!("restarting the Kafka producer");
                *self.producer.lock().expect("producer") = fresh;
                stuck.purge(PurgeConfig::default().queue().inflight());
            }
            Err(err) => tracing::error!(%err, "cannot create a new Kafka producer"),
        }
    }

    /// Creates the topics that do not exist yet.
    pub async fn ensure_topics(&self) -> Result<(), String> {
        let admin: AdminClient<DefaultClientContext> =
            client_config(&self.config).create().map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
        let topics: Vec<NewTopic<'_>> = self
            .topics
            .iter()
            .map(|t| NewTopic::new(t, self.config.partitions, TopicReplication::Fixed(self.config.replication_factor)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
        let results = admin.create_topics(&topics, &options).await.map_err(|e| format!("cannot create topics: {e}"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(format!("cannot create topic {topic}: {code}")),
            }
        }
        Ok(())
    }
}

/// The settings every client of `config` shares: brokers, identity, TLS and SASL.
pub(crate) fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("client.id", &config.client_id)
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000");
    if let Some(debug) = &config.debug {
        client.set("debug", debug);
    }
    for (property, value) in &config.security {
        client.set(*property, value);
    }
    client
}

fn producer(config: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    client_config(config)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Never give up on a message: while the broker is away it waits in
        // the producer, and the outbox row stays unpublished until it is acked.
        .set("message.timeout.ms", "0")
        .set("linger.ms", "2")
        .create()
}

#[async_trait::async_trait]
impl EventSink for KafkaSink {
    async fn publish(&self, events: &[OutgoingEvent]) -> (Vec<bool>, Option<String>) {
        let producer = self.producer();
        let mut delivered = vec![false; events.len()];
        let mut pending = Vec::with_capacity(events.len());
        let mut problem = None;
        for (index, event) in events.iter().enumerate() {
            let mut headers = OwnedHeaders::new()
                .insert(Header { key: "event_type", value: Some(event.event_type.as_bytes()) })
                .insert(Header { key: "event_id", value: Some(event.event_id.as_bytes()) })
                .insert(Header {
                    key: "correlation_id",
                    value: Some(event.correlation_id.as_deref().unwrap_or("").as_bytes()),
                });
            // W3C trace context of the publication (the span of the request that caused the event).
            if let Some(traceparent) = &event.traceparent {
                headers = headers.insert(Header { key: "traceparent", value: Some(traceparent.as_bytes()) });
            }
            for (key, value) in &event.headers {
                headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
            }
            let record = FutureRecord::to(&event.topic).key(&event.key).payload(&event.payload).headers(headers);
            match producer.send_result(record) {
                Ok(delivery) => pending.push((index, delivery)),
                Err((err, _)) => {
                    problem = Some(format!("the producer refused an event: {err}"));
                    break;
                }
            }
        }
        for (index, mut delivery) in pending {
            let outcome = loop {
                match tokio::time::timeout(self.config.stall_timeout, &mut delivery).await {
                    Ok(outcome) => break outcome,
                    // Unacknowledged for a while. Broker away: keep waiting, the
                    // producer retries on its own. Broker there: the producer is
                    // stuck (e.g. a broker that lost its producer-id state keeps
                    // answering UNKNOWN_PRODUCER_ID); start a fresh one.
                    Err(_) if self.probe().await.is_ok() => {
                        self.restart_producer(&producer);
                        problem.get_or_insert_with(|| {
                            "delivery stalled with the broker reachable; producer restarted".to_owned()
                        });
                        return (delivered, problem);
                    }
                    Err(_) => continue,
                }
            };
            match outcome {
                Ok(Ok(_)) => delivered[index] = true,
                Ok(Err((err, _))) => {
                    if producer.client().fatal_error().is_some() {
                        self.restart_producer(&producer);
                    }
                    problem.get_or_insert_with(|| format!("Kafka did not take the event: {err}"));
                }
                Err(_) => {
                    problem.get_or_insert_with(|| "the producer was dropped".to_owned());
                }
            }
        }
        (delivered, problem)
    }

    async fn probe(&self) -> Result<(), String> {
        let producer = self.producer();
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, Duration::from_secs(2)).map(|m| m.brokers().len())
        })
        .await
        .map_err(|e| format!("probe task failed: {e}"))?;
        let result = match metadata {
            Ok(brokers) if brokers > 0 => Ok(()),
            Ok(_) => Err("the cluster reports no brokers".to_owned()),
            Err(err) => Err(format!("Kafka unreachable at {}: {err}", self.config.bootstrap_servers)),
        };
        match &result {
            Ok(()) if !self.topics_ready.load(Ordering::Acquire) => {
                self.ensure_topics().await?;
                self.topics_ready.store(true, Ordering::Release);
            }
            Ok(()) => {}
            Err(_) => self.topics_ready.store(false, Ordering::Release),
        }
        result
    }

    fn name(&self) -> &'static str {
        "kafka"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// librdkafka is built with TLS and SCRAM: a SASL_SSL producer can be made.
    #[test]
    fn sasl_over_tls_is_supported_by_this_build() {
        let config = KafkaConfig {
            bootstrap_servers: "127.0.0.1:1".into(),
            partitions: 1,
            replication_factor: 1,
            client_id: "test".into(),
            stall_timeout: std::time::Duration::from_secs(1),
            debug: None,
            security: vec![
                ("security.protocol", "sasl_ssl".into()),
                ("sasl.mechanism", "SCRAM-SHA-512".into()),
                ("sasl.username", "mesh".into()),
                ("sasl.password", "secret".into()),
            ],
        };
        let producer = producer(&config).expect("a SASL_SSL producer");
        drop(producer);
    }
}
