//! The Kafka input: a consumer-group member whose offsets are committed
//! only after the batch they cover is stored.

use std::sync::Arc;

use omninode_kafka::GroupConsumer;
use omninode_runtime::events::KafkaConfig;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{Queued, aggregate_loop, decode_or_why, input_topics};
use crate::{aggregator::Aggregator, config::ReducerConfig, error::ReducerError};

/// Starts consuming and aggregating until `stop`; returns the aggregating
/// task, which ends after the batch in hand is stored (the records read
/// beyond it are not committed, and the group reads them again).
pub fn spawn_from_kafka(
    kafka: &KafkaConfig,
    topic_prefix: &str,
    config: &ReducerConfig,
    aggregator: Aggregator,
    stop: CancellationToken,
) -> Result<JoinHandle<()>, ReducerError> {
    let consumer =
        GroupConsumer::subscribe(kafka, &config.consumer_group, &input_topics(topic_prefix), config.session_timeout)
            .map_err(|e| {
                ReducerError::Dependency(format!("cannot create the Kafka consumer (KAFKA_BOOTSTRAP_SERVERS): {e}"))
            })?;
    let consumer = Arc::new(consumer);
    let (tx, rx) = mpsc::channel(config.max_queue);
    let reader = consumer.clone();
    let reader_stop = stop.clone();
    let group = config.consumer_group.clone();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = reader_stop.cancelled() => return,
                next = reader.next_record() => next,
            };
            let record = match next {
                Ok(record) => record,
                Err(err) => {
                    tracing::debug!(%err, "consumer error");
                    continue;
                }
            };
            let traceparent = record.header("traceparent").map(str::to_owned);
            let queued = match decode_or_why(&record.payload) {
                Ok(item) => Queued { item, dead: None, position: Some(record.position.clone()), traceparent },
                Err(why) => {
                    metrics::counter!("aggregation_errors_total", "reason" => "undecodable").increment(1);
                    tracing::warn!(%why, topic = %record.position.topic, offset = record.position.offset, "an event record that is not an event goes to its dead-letter topic");
                    let dead = omninode_runtime::events::dead_letter_record(&record, "UNDECODABLE", &why, &group);
                    Queued { item: None, dead: Some(dead), position: Some(record.position.clone()), traceparent }
                }
            };
            if tx.send(queued).await.is_err() {
                return;
            }
        }
    });
    let commit = Box::new(move |positions: &[omninode_runtime::events::RecordPosition]| consumer.commit(positions));
    Ok(tokio::spawn(aggregate_loop(rx, config.clone(), aggregator, Some(commit), stop)))
}
