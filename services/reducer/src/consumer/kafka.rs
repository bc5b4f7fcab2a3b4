//! The Kafka input: a consumer-group member whose offsets are committed
//! only after the batch they cover is stored.

use std::sync::Arc;

use omninode_kafka::GroupConsumer;
use omninode_runtime::events::KafkaConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Queued, aggregate_loop, decode, input_topics};
use crate::{aggregator::Aggregator, config::ReducerConfig, error::ReducerError};

/// Starts consuming and aggregating until `stop`.
pub fn spawn_from_kafka(
    kafka: &KafkaConfig,
    topic_prefix: &str,
    config: &ReducerConfig,
    aggregator: Aggregator,
    stop: CancellationToken,
) -> Result<(), ReducerError> {
    let consumer =
        GroupConsumer::subscribe(kafka, &config.consumer_group, &input_topics(topic_prefix), config.session_timeout)
            .map_err(|e| {
                ReducerError::Dependency(format!("cannot create the Kafka consumer (KAFKA_BOOTSTRAP_SERVERS): {e}"))
            })?;
    let consumer = Arc::new(consumer);
    let (tx, rx) = mpsc::channel(config.max_queue);
    let reader = consumer.clone();
    let reader_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = reader_stop.cancelled() => return,
                next = reader.next() => next,
            };
            let (payload, position, traceparent) = match next {
                Ok(record) => record,
                Err(err) => {
                    tracing::debug!(%err, "consumer error");
                    continue;
                }
            };
            let queued = Queued { item: decode(&payload), position: Some(position), traceparent };
            if tx.send(queued).await.is_err() {
                return;
            }
        }
    });
    let commit = Box::new(move |positions: &[omninode_runtime::events::RecordPosition]| consumer.commit(positions));
    tokio::spawn(aggregate_loop(rx, config.clone(), aggregator, Some(commit), stop));
    Ok(())
}
