//! The in-process event bus: the embedded default when no Kafka is
//! configured. It is fed by the same outbox relay, so events are published
//! in commit order, only after commit, and marked published only once every
//! subscriber of their topic has taken them (bounded queues: a slow
//! subscriber slows the relay, it never grows memory). When the relay stops
//! it closes the bus, and each subscriber's receiver ends after the events
//! already sent to it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::mpsc;

use super::sink::{EventSink, OutgoingEvent};

/// Subscribers by topic.
#[derive(Debug, Clone, Default)]
pub struct InProcessBus {
    subscribers: Arc<Mutex<HashMap<String, Vec<mpsc::Sender<OutgoingEvent>>>>>,
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Receives every event published to `topics` from now on, in order.
    pub fn subscribe(&self, topics: &[String], capacity: usize) -> mpsc::Receiver<OutgoingEvent> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mut subscribers = self.subscribers.lock().expect("bus subscribers");
        for topic in topics {
            subscribers.entry(topic.clone()).or_default().push(tx.clone());
        }
        rx
    }
}

#[async_trait::async_trait]
impl EventSink for InProcessBus {
    async fn publish(&self, events: &[OutgoingEvent]) -> (Vec<bool>, Option<String>) {
        for event in events {
            let senders =
                self.subscribers.lock().expect("bus subscribers").get(&event.topic).cloned().unwrap_or_default();
            for sender in senders {
                // A dropped subscriber simply stops receiving.
                let _ = sender.send(event.clone()).await;
            }
        }
        self.subscribers.lock().expect("bus subscribers").values_mut().for_each(|s| s.retain(|tx| !tx.is_closed()));
        (vec![true; events.len()], None)
    }

    async fn probe(&self) -> Result<(), String> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "event_bus"
    }

    /// Ends every subscriber's input once what was published is taken: a
    /// subscriber that drains at shutdown (the reducer) knows it has
    /// everything the relay delivered, and marked published, when its
    /// receiver ends.
    async fn close(&self) {
        self.subscribers.lock().expect("bus subscribers").clear();
    }
}
