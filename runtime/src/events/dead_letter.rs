//! Dead letters: a record a consumer cannot process goes, as read (key,
//! payload, headers), to `<topic>.dlq` with why in its headers, through the
//! outbox; consumption goes on after it.

use super::{IncomingRecord, OutboxRecord};

/// The dead-letter topic of records read from `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// The dead-letter record of `record`: its key and payload as read, its
/// headers, and the reason: `dlq-reason`, `dlq-message`, `dlq-source-topic`,
/// `dlq-source-partition`, `dlq-source-offset`, `dlq-consumer-group`.
pub fn dead_letter_record(record: &IncomingRecord, why: &str, message: &str, group: &str) -> OutboxRecord {
    let position = &record.position;
    let mut headers: Vec<(String, String)> = record
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with("dlq-") && !matches!(k.as_str(), "event_id" | "event_type"))
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    headers.extend([
        ("dlq-reason".to_owned(), why.to_owned()),
        ("dlq-message".to_owned(), message.chars().take(1000).collect()),
        ("dlq-source-topic".to_owned(), position.topic.clone()),
        ("dlq-source-partition".to_owned(), position.partition.to_string()),
        ("dlq-source-offset".to_owned(), position.offset.to_string()),
        ("dlq-consumer-group".to_owned(), group.to_owned()),
    ]);
    OutboxRecord {
        event_id: uuid::Uuid::now_v7().to_string(),
        topic: dead_letter_topic(&position.topic),
        key: record.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
        record_type: "dead-letter",
        correlation_id: record.header("correlation_id").map(str::to_owned),
        payload: record.payload.clone(),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_keep_the_record_and_say_why() {
        let record = IncomingRecord {
            payload: b"garbage".to_vec(),
            key: Some(b"k".to_vec()),
            headers: vec![("correlation_id".into(), b"c1".to_vec())],
            position: crate::events::RecordPosition { topic: "requests".into(), partition: 2, offset: 9 },
        };
        let dead = dead_letter_record(&record, "UNDECODABLE", "not protobuf", "g");
        assert_eq!(
            (dead.topic.as_str(), dead.key.as_str(), dead.payload.as_slice()),
            ("requests.dlq", "k", &b"garbage"[..])
        );
        let header = |name: &str| dead.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(header("dlq-reason"), Some("UNDECODABLE"));
        assert_eq!(header("dlq-source-offset"), Some("9"));
        assert_eq!(header("correlation_id"), Some("c1"));
    }
}
