//! Getting events into the aggregator: a Kafka consumer group or the
//! in-process bus feeds one bounded queue (a full queue stops consumption:
//! backpressure, never unbounded memory); the aggregator drains it in
//! batches of AGGREGATION_BATCH_SIZE or every AGGREGATION_WINDOW_SIZE_MS,
//! stores each batch in one transaction, and only then commits the Kafka
//! offsets it covered.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use omninode_mesh::events::{EventKind, InProcessBus, KafkaConfig};
use omninode_proto::events::v1::{EventEnvelope, event_envelope::Payload};
use prost::Message as _;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    config::ReducerConfig,
    domain::aggregate::{Aggregate, Item, ItemKind},
    error::ReducerError,
    store::AggregateStore,
};

/// Most events one transaction takes while a backlog waits.
const BACKLOG_BATCH: usize = 5000;

/// Where a queued item came from, for the offset commit.
#[derive(Debug, Clone)]
struct Position {
    topic: String,
    partition: i32,
    offset: i64,
}

/// One queued event: what it contributes (if anything) and where it was read.
struct Queued {
    item: Option<Item>,
    position: Option<Position>,
}

/// The topics the reducer consumes.
pub fn input_topics(prefix: &str) -> Vec<String> {
    vec![EventKind::StampCreated.topic(prefix), EventKind::WorkflowStateChanged.topic(prefix)]
}

/// What an envelope contributes; `None` for events the reducer does not count.
pub fn item_from(envelope: EventEnvelope) -> Option<Item> {
    let kind = match envelope.payload? {
        Payload::StampCreated(stamp) => {
            ItemKind::Stamp { file_size: stamp.file_size, content_type: stamp.content_type }
        }
        Payload::WorkflowStateChanged(change) => {
            let state = omninode_proto::orchestrator::v1::WorkflowState::try_from(change.to_state).ok()?;
            let name = state.as_str_name().trim_start_matches("WORKFLOW_STATE_").to_owned();
            ItemKind::Workflow { workflow_id: change.workflow_id, state: name }
        }
        Payload::AggregateUpdated(_) => return None,
    };
    Some(Item { event_id: envelope.event_id, namespace: envelope.namespace, kind })
}

fn decode(payload: &[u8]) -> Option<Item> {
    match EventEnvelope::decode(payload) {
        Ok(envelope) => item_from(envelope),
        Err(err) => {
            metrics::counter!("aggregation_errors_total", "reason" => "undecodable").increment(1);
            tracing::warn!(%err, "skipping an event that is not an EventEnvelope");
            None
        }
    }
}

/// Starts consuming and aggregating until `stop`.
pub fn spawn_from_kafka(
    kafka: &KafkaConfig,
    topic_prefix: &str,
    config: &ReducerConfig,
    store: AggregateStore,
    updates: broadcast::Sender<Aggregate>,
    stop: CancellationToken,
) -> Result<(), ReducerError> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", &config.consumer_group)
        .set("client.id", &kafka.client_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
        .set("heartbeat.interval.ms", (config.session_timeout.as_millis() / 4).max(100).to_string())
        .create()
        .map_err(|e| ReducerError::Validation(format!("cannot create the Kafka consumer: {e}")))?;
    consumer
        .subscribe(&input_topics(topic_prefix).iter().map(String::as_str).collect::<Vec<_>>())
        .map_err(|e| ReducerError::Validation(format!("cannot subscribe: {e}")))?;
    let consumer = Arc::new(consumer);
    let (tx, rx) = mpsc::channel(config.max_queue);
    let reader = consumer.clone();
    let reader_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = reader_stop.cancelled() => return,
                message = reader.recv() => message,
            };
            let message = match message {
                Ok(message) => message,
                Err(err) => {
                    tracing::debug!(%err, "consumer error");
                    continue;
                }
            };
            let queued = Queued {
                item: decode(message.payload().unwrap_or_default()),
                position: Some(Position {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                }),
            };
            if tx.send(queued).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(aggregate_loop(rx, config.clone(), store, updates, Some(consumer), stop));
    Ok(())
}

/// Starts aggregating what `bus` delivers until `stop`.
pub fn spawn_from_bus(
    bus: &InProcessBus,
    topic_prefix: &str,
    config: &ReducerConfig,
    store: AggregateStore,
    updates: broadcast::Sender<Aggregate>,
    stop: CancellationToken,
) {
    let mut events = bus.subscribe(&input_topics(topic_prefix), config.max_queue);
    let (tx, rx) = mpsc::channel(config.max_queue);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if tx.send(Queued { item: decode(&event.payload), position: None }).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(aggregate_loop(rx, config.clone(), store, updates, None, stop));
}

async fn aggregate_loop(
    mut rx: mpsc::Receiver<Queued>,
    config: ReducerConfig,
    store: AggregateStore,
    updates: broadcast::Sender<Aggregate>,
    consumer: Option<Arc<StreamConsumer>>,
    stop: CancellationToken,
) {
    let mut last_prune = tokio::time::Instant::now();
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            first = rx.recv() => match first { Some(first) => first, None => return },
        };
        let started = Utc::now();
        let deadline = tokio::time::Instant::now() + config.window;
        let mut batch = vec![first];
        while batch.len() < config.batch_size {
            tokio::select! {
                next = rx.recv() => match next { Some(next) => batch.push(next), None => break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Behind (events already waiting): take them into this transaction
        // too. Per-transaction costs dominate small batches, so a backlog
        // drains several times faster this way; a trickle is unaffected.
        while batch.len() < BACKLOG_BATCH.max(config.batch_size) {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        metrics::gauge!("aggregation_queue_size").set(rx.len() as f64);
        let items: Vec<Item> = batch.iter().filter_map(|q| q.item.clone()).collect();
        let clock = std::time::Instant::now();
        // The batch is retried until stored: its offsets are not committed
        // before, so a crash here only means redelivery, which is deduplicated.
        let mut failures = 0u32;
        let stored = loop {
            match store.apply(&items, (started, Utc::now())).await {
                Ok(stored) => break stored,
                Err(err) => {
                    failures += 1;
                    metrics::counter!("aggregation_errors_total", "reason" => err.reason()).increment(1);
                    if !matches!(err, ReducerError::Conflict(_)) {
                        tracing::warn!(%err, failures, "aggregation batch failed; retrying");
                    }
                    let pause = Duration::from_millis(20).saturating_mul(1 << Ord::min(failures, 8));
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        };
        metrics::histogram!("aggregation_duration_ms").record(clock.elapsed().as_secs_f64() * 1000.0);
        metrics::counter!("aggregation_items_total").increment(items.len() as u64);
        for aggregate in stored {
            let _ = updates.send(aggregate);
        }
        if let Some(consumer) = &consumer {
            commit(consumer, &batch);
        }
        if last_prune.elapsed() > Duration::from_secs(3600) {
            last_prune = tokio::time::Instant::now();
            if let Err(err) = store.prune_processed(Utc::now() - chrono::Duration::days(7)).await {
                tracing::warn!(%err, "cannot prune processed event ids");
            }
        }
    }
}

/// Commits, per partition, the offset after the last item of the batch.
fn commit(consumer: &StreamConsumer, batch: &[Queued]) {
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    for position in batch.iter().filter_map(|q| q.position.as_ref()) {
        let entry = next.entry((position.topic.clone(), position.partition)).or_insert(0);
        *entry = (*entry).max(position.offset + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        let _ = offsets.add_partition_offset(&topic, partition, Offset::Offset(offset));
    }
    // A partition taken away by a rebalance refuses the commit; its new
    // owner re-reads those events and deduplicates them.
    if let Err(err) = consumer.commit(&offsets, CommitMode::Async) {
        tracing::debug!(%err, "offset commit refused");
    }
}
