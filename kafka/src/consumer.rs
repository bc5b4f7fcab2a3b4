//! Reading from Kafka: a consumer-group member that commits offsets only when
//! told (after its records are stored), and a tail of every partition.

use std::{collections::HashMap, time::Duration};

use omninode_runtime::events::{IncomingRecord, KafkaConfig, RecordPosition};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::KafkaError,
    message::Headers,
};

/// A member of a consumer group with manual commits.
pub struct GroupConsumer {
    consumer: StreamConsumer,
}

impl GroupConsumer {
    /// Joins `group` on `kafka.bootstrap_servers`, subscribed to `topics`,
    /// reading from the earliest offset when the group has none.
    pub fn subscribe(
        kafka: &KafkaConfig,
        group: &str,
        topics: &[String],
        session_timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let consumer: StreamConsumer = crate::sink::client_config(kafka)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", (session_timeout.as_millis() / 4).max(100).to_string())
            .create()?;
        consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(Self { consumer })
    }

    /// The next record whole: payload, key, headers and position.
    pub async fn next_record(&self) -> Result<IncomingRecord, KafkaError> {
        let message = self.consumer.recv().await?;
        let headers = headers_of(&message);
        Ok(IncomingRecord {
            payload: message.payload().unwrap_or_default().to_vec(),
            key: message.key().map(<[u8]>::to_vec),
            headers,
            position: RecordPosition {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
            },
        })
    }

    /// Records not yet read by this member, over the partitions assigned to
    /// it (high watermark minus position; 0 with no partition assigned, as a
    /// member beyond the partition count has), or why it cannot be told.
    /// Blocks up to a second per partition: call it off the async threads.
    pub fn lag(&self) -> Result<i64, KafkaError> {
        let assignment = self.consumer.assignment()?;
        if assignment.count() == 0 {
            return Ok(0);
        }
        let positions = self.consumer.position()?;
        let mut lag = 0i64;
        for element in assignment.elements() {
            let (low, high) =
                self.consumer.fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(1))?;
            let position = positions
                .find_partition(element.topic(), element.partition())
                .and_then(|p| match p.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                })
                .unwrap_or(low);
            lag += (high - position).max(0);
        }
        Ok(lag)
    }

    /// The partitions assigned to this member now, as `topic/partition`.
    pub fn assigned(&self) -> Vec<String> {
        self.consumer
            .assignment()
            .map(|list| list.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect())
            .unwrap_or_default()
    }

    /// Commits, per partition, the offset after the last of `positions`.
    pub fn commit<'a>(&self, positions: impl IntoIterator<Item = &'a RecordPosition>) {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for position in positions {
            let entry = next.entry((position.topic.as_str(), position.partition)).or_insert(0);
            *entry = (*entry).max(position.offset + 1);
        }
        if next.is_empty() {
            return;
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            let _ = offsets.add_partition_offset(topic, partition, Offset::Offset(offset));
        }
        // A partition taken away by a rebalance refuses the commit; its new
        // owner re-reads those records (consumers deduplicate them).
        if let Err(err) = self.consumer.commit(&offsets, CommitMode::Async) {
            tracing::debug!(%err, "offset commit refused");
        }
    }
}

/// A record read by [`tail`].
#[derive(Debug, Clone)]
pub struct TailRecord {
    pub payload: Vec<u8>,
    pub position: RecordPosition,
}

/// Follows every partition of `topics` (no group, nothing committed), from
/// the beginning or from now on, and hands each record to `each` until it
/// answers false. A topic with no partitions yet (not created) is an error,
/// so that a caller can try again rather than follow nothing.
pub async fn tail(
    kafka: &KafkaConfig,
    topics: &[String],
    from_beginning: bool,
    mut each: impl FnMut(Result<TailRecord, KafkaError>) -> bool,
) -> Result<(), KafkaError> {
    let consumer: StreamConsumer = crate::sink::client_config(kafka)
        .set("group.id", format!("omninode-tail-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", if from_beginning { "earliest" } else { "latest" })
        .create()?;
    let start = if from_beginning { Offset::Beginning } else { Offset::End };
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        for partition in partitions_of(&consumer, topic)? {
            assignment.add_partition_offset(topic, partition, start)?;
        }
    }
    consumer.assign(&assignment)?;
    loop {
        let record = consumer.recv().await.map(|message| TailRecord {
            payload: message.payload().unwrap_or_default().to_vec(),
            position: RecordPosition {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
            },
        });
        if !each(record) {
            return Ok(());
        }
    }
}

/// Sends one request record to `topic` and hands every record that then
/// arrives on `answers` to `each` (its payload and headers) until `each`
/// answers false or `patience` runs out (then an error). Reading starts at
/// the answer topic's end as it was before the request was sent, so no
/// answer is missed and no older one is read.
#[allow(clippy::too_many_arguments)]
pub async fn request_reply(
    kafka: &KafkaConfig,
    topic: &str,
    answers: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
    patience: Duration,
    mut each: impl FnMut(&[u8], &[(String, Vec<u8>)]) -> bool,
) -> Result<(), KafkaError> {
    use rdkafka::{
        message::{Header, OwnedHeaders},
        producer::{FutureProducer, FutureRecord},
    };
    let consumer: StreamConsumer = crate::sink::client_config(kafka)
        .set("group.id", format!("omninode-request-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in partitions_of(&consumer, answers)? {
        let (_, high) = consumer.fetch_watermarks(answers, partition, Duration::from_secs(10))?;
        assignment.add_partition_offset(answers, partition, Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;

    let producer: FutureProducer = crate::sink::client_config(kafka).set("linger.ms", "0").create()?;
    let mut owned = OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(Header { key: name, value: Some(value.as_bytes()) });
    }
    let record = FutureRecord::to(topic).key(key).payload(payload).headers(owned);
    producer.send(record, patience).await.map_err(|(err, _)| err)?;

    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(message) => message?,
            Err(_) => return Err(KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::RequestTimedOut)),
        };
        if !each(message.payload().unwrap_or_default(), &headers_of(&message)) {
            return Ok(());
        }
    }
}

/// The partitions of `topic`; an error when it has none (not created yet),
/// so that a caller can try again rather than follow nothing.
fn partitions_of(consumer: &StreamConsumer, topic: &str) -> Result<Vec<i32>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions()).map(|p| p.id()).collect();
    if partitions.is_empty() {
        return Err(KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition));
    }
    Ok(partitions)
}

/// A record's headers, as read.
fn headers_of(message: &impl Message) -> Vec<(String, Vec<u8>)> {
    message
        .headers()
        .map(|headers| {
            headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect()
        })
        .unwrap_or_default()
}
