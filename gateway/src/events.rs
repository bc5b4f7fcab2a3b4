//! The live event fan-out behind `GET /v1/events:subscribe`: one task reads
//! the mesh's event stream (the in-process bus, or a Kafka tail — the same
//! events the reducer reads), keeps the last [`FanoutConfig::history`] for
//! resuming clients, and offers each to every subscriber whose filter
//! matches. An event becomes its proto3 JSON once, when a subscriber first
//! takes it: with no subscriber, an event costs the hub a decode of its
//! header fields, not a JSON rendering. Offering never waits: a
//! subscriber whose bounded queue is full is dropped as too slow (its
//! connection is closed with [`CLOSE_TOO_SLOW`]), so one slow client never
//! slows the others, and memory per subscriber is bounded.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use omninode_proto::events::v1::{EventEnvelope, event_envelope::Payload};
use omninode_runtime::auth::Caller;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

/// The WebSocket close code of a subscriber dropped for falling behind.
pub const CLOSE_TOO_SLOW: u16 = 4001;

/// Fan-out settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutConfig {
    /// `GATEWAY_WS_BUFFER`: events queued for one subscriber before it is
    /// dropped as too slow (default 256).
    pub buffer: usize,
    /// `GATEWAY_WS_HISTORY`: events kept for clients resuming after a
    /// reconnect (default 10000).
    pub history: usize,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self { buffer: 256, history: 10_000 }
    }
}

/// One event as subscribers receive it.
#[derive(Debug)]
pub struct Published {
    pub event_id: String,
    /// `StampCreated`, `WorkflowStateChanged`, `AggregateUpdated`, or for a
    /// workflow's approval `ApprovalRequested` / `ApprovalDecided`.
    pub event_type: &'static str,
    pub namespace: String,
    pub workflow_id: String,
    /// The encoded envelope.
    bytes: Vec<u8>,
    pool: DescriptorPool,
    /// Its proto3 JSON text, once a subscriber has taken it.
    json: OnceLock<String>,
}

impl Published {
    /// The proto3 JSON text sent: the envelope's fields (defaults written)
    /// and `eventType`.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| {
            self.render_json().unwrap_or_else(|problem| {
                // The envelope decoded with code generated from these
                // descriptors, so this is not expected; the client still
                // hears of the event.
                tracing::warn!(%problem, event_id = %self.event_id, "cannot render an event's JSON; sent its header");
                serde_json::json!({
                    "eventId": self.event_id,
                    "eventType": self.event_type,
                    "namespace": self.namespace,
                    "workflowId": self.workflow_id,
                })
                .to_string()
            })
        })
    }

    fn render_json(&self) -> Result<String, String> {
        let descriptor = self
            .pool
            .get_message_by_name("omninode.events.v1.EventEnvelope")
            .ok_or("the descriptor set lacks EventEnvelope")?;
        let message = DynamicMessage::decode(descriptor, self.bytes.as_slice()).map_err(|e| e.to_string())?;
        let options = prost_reflect::SerializeOptions::new().skip_default_fields(false);
        let mut json =
            message.serialize_with_options(serde_json::value::Serializer, &options).map_err(|e| e.to_string())?;
        json["eventType"] = Value::String(self.event_type.to_owned());
        Ok(json.to_string())
    }

    /// Whether `filter` selects this event: each non-empty list must name it.
    fn matches(&self, filter: &Filter) -> bool {
        let types = &filter.event_types;
        (filter.namespaces.is_empty() || filter.namespaces.contains(&self.namespace))
            && (filter.workflow_ids.is_empty() || filter.workflow_ids.contains(&self.workflow_id))
            && (types.is_empty()
                || types.contains(self.event_type)
                || (self.event_type.starts_with("Approval") && types.contains("WorkflowStateChanged")))
    }
}

/// What a subscriber wants; an empty list means every value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub namespaces: HashSet<String>,
    #[serde(default)]
    pub workflow_ids: HashSet<String>,
    #[serde(default)]
    pub event_types: HashSet<String>,
}

/// The event types a filter may name.
pub const EVENT_TYPES: [&str; 5] =
    ["StampCreated", "WorkflowStateChanged", "AggregateUpdated", "ApprovalRequested", "ApprovalDecided"];

impl Filter {
    /// Refuses event types that do not exist (a typo would silently match nothing).
    pub fn check(&self) -> Result<(), String> {
        match self.event_types.iter().find(|t| !EVENT_TYPES.contains(&t.as_str())) {
            Some(unknown) => Err(format!("eventTypes: {unknown:?} is not one of {}", EVENT_TYPES.join(", "))),
            None => Ok(()),
        }
    }
}

/// A subscriber as the hub sees it.
struct Subscriber {
    filter: Arc<RwLock<Filter>>,
    /// Only events of namespaces it may read are offered.
    caller: Caller,
    queue: mpsc::Sender<Arc<Published>>,
    slow: Arc<AtomicBool>,
}

struct State {
    history: VecDeque<Arc<Published>>,
    subscribers: HashMap<u64, Subscriber>,
}

/// The fan-out hub. Cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    state: Arc<Mutex<State>>,
    config: FanoutConfig,
    next_id: Arc<AtomicU64>,
    pool: DescriptorPool,
}

/// A registered subscriber's side.
pub struct Subscription {
    pub id: u64,
    pub filter: Arc<RwLock<Filter>>,
    /// Live events, after `backlog`.
    pub queue: mpsc::Receiver<Arc<Published>>,
    /// Set when the hub dropped this subscriber for falling behind.
    pub slow: Arc<AtomicBool>,
    /// Events after the one it resumes from, matching its filter.
    pub backlog: Vec<Arc<Published>>,
    /// It asked to resume from an event no longer kept (or never seen).
    pub gap: bool,
}

impl EventHub {
    pub fn new(config: FanoutConfig) -> Self {
        Self {
            state: Arc::new(Mutex::new(State { history: VecDeque::new(), subscribers: HashMap::new() })),
            config,
            next_id: Arc::new(AtomicU64::new(1)),
            pool: crate::rules::descriptor_pool(),
        }
    }

    /// Feeds the hub from `events` (encoded envelopes) until it closes.
    pub fn spawn(&self, mut events: mpsc::Receiver<Vec<u8>>) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            while let Some(bytes) = events.recv().await {
                match hub.render(bytes) {
                    Ok(event) => hub.publish(event),
                    Err(problem) => tracing::warn!(%problem, "an event the fan-out cannot read; skipped"),
                }
            }
        })
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        self.state.lock().expect("hub state").subscribers.len()
    }

    /// Registers `caller` with `filter`, resuming after event `after` when given.
    pub fn subscribe(&self, caller: Caller, filter: Filter, after: Option<&str>) -> Subscription {
        let (queue, receiver) = mpsc::channel(self.config.buffer.max(1));
        let filter = Arc::new(RwLock::new(filter));
        let slow = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().expect("hub state");
        // Under the lock that publishing takes: nothing falls between the backlog and the queue.
        let (backlog, gap) = match after {
            None => (Vec::new(), false),
            Some(after) => match state.history.iter().position(|e| e.event_id == after) {
                Some(at) => {
                    let wanted = filter.read().expect("filter").clone();
                    let backlog = state.history.iter().skip(at + 1);
                    (backlog.filter(|e| e.matches(&wanted) && caller.may_read(&e.namespace)).cloned().collect(), false)
                }
                None => (Vec::new(), true),
            },
        };
        state.subscribers.insert(id, Subscriber { filter: filter.clone(), caller, queue, slow: slow.clone() });
        metrics::gauge!("ws_subscribers").set(state.subscribers.len() as f64);
        Subscription { id, filter, queue: receiver, slow, backlog, gap }
    }

    pub fn unsubscribe(&self, id: u64) {
        let mut state = self.state.lock().expect("hub state");
        state.subscribers.remove(&id);
        metrics::gauge!("ws_subscribers").set(state.subscribers.len() as f64);
    }

    /// Keeps `event` for resuming clients and offers it to every matching subscriber.
    pub fn publish(&self, event: Published) {
        let event = Arc::new(event);
        let mut state = self.state.lock().expect("hub state");
        state.history.push_back(event.clone());
        while state.history.len() > self.config.history {
            state.history.pop_front();
        }
        let mut dropped = Vec::new();
        for (id, subscriber) in &state.subscribers {
            if !event.matches(&subscriber.filter.read().expect("filter"))
                || !subscriber.caller.may_read(&event.namespace)
            {
                continue;
            }
            if subscriber.queue.try_send(event.clone()).is_err() {
                subscriber.slow.store(true, Ordering::SeqCst);
                dropped.push(*id);
            }
        }
        for id in dropped {
            // Dropping its sender ends its queue after what is already in it.
            state.subscribers.remove(&id);
            metrics::counter!("ws_slow_disconnects_total").increment(1);
        }
        metrics::gauge!("ws_subscribers").set(state.subscribers.len() as f64);
    }

    /// An encoded envelope as subscribers receive it (its JSON rendered when
    /// first taken), with `eventType` naming the payload.
    pub fn render(&self, bytes: Vec<u8>) -> Result<Published, String> {
        let envelope = EventEnvelope::decode(bytes.as_slice()).map_err(|e| format!("not an EventEnvelope: {e}"))?;
        let (event_type, workflow_id) = match &envelope.payload {
            Some(Payload::StampCreated(stamp)) => ("StampCreated", stamp.workflow_id.clone()),
            Some(Payload::WorkflowStateChanged(change)) => {
                let waiting = omninode_proto::orchestrator::v1::WorkflowState::Waiting as i32;
                let kind = if change.to_state == waiting && change.waiting_for == "approval" {
                    "ApprovalRequested"
                } else if change.from_state == waiting && !change.actor.is_empty() {
                    "ApprovalDecided"
                } else {
                    "WorkflowStateChanged"
                };
                (kind, change.workflow_id.clone())
            }
            Some(Payload::AggregateUpdated(_)) => ("AggregateUpdated", String::new()),
            None => return Err("an envelope without a payload".into()),
        };
        Ok(Published {
            event_id: envelope.event_id,
            event_type,
            namespace: envelope.namespace,
            workflow_id,
            bytes,
            pool: self.pool.clone(),
            json: OnceLock::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omninode_proto::events::v1::StampCreated;

    fn envelope(id: &str, namespace: &str) -> Vec<u8> {
        EventEnvelope {
            event_id: id.into(),
            event_type: "stamp-created".into(),
            namespace: namespace.into(),
            payload: Some(Payload::StampCreated(StampCreated { file_size: 3, ..Default::default() })),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn events_become_proto3_json_with_their_type() {
        let hub = EventHub::new(FanoutConfig::default());
        let event = hub.render(envelope("e1", "a.b")).unwrap();
        let json: Value = serde_json::from_str(event.json()).unwrap();
        assert_eq!((json["eventId"].as_str(), json["eventType"].as_str()), (Some("e1"), Some("StampCreated")));
        assert_eq!(json["stampCreated"]["fileSize"], "3");
        assert_eq!(json["stampCreated"]["workflowId"], "", "fields with default values are written");
        assert!(hub.render(b"\xff\xff".to_vec()).is_err());
    }

    #[test]
    fn an_event_is_rendered_once_and_only_when_a_subscriber_takes_it() {
        let hub = EventHub::new(FanoutConfig::default());
        hub.publish(hub.render(envelope("unseen", "a")).unwrap());
        let mut subscriber = hub.subscribe(Caller::anonymous(), Filter::default(), None);
        hub.publish(hub.render(envelope("seen", "a")).unwrap());
        let kept = hub.state.lock().unwrap().history.clone();
        assert!(kept.iter().all(|event| event.json.get().is_none()), "published and kept, nothing rendered yet");
        let taken = subscriber.queue.try_recv().unwrap();
        let first = taken.json().as_ptr();
        let resumed = hub.subscribe(Caller::anonymous(), Filter::default(), Some("unseen"));
        assert!(resumed.backlog[0].json().contains(r#""eventId":"seen""#));
        assert_eq!(resumed.backlog[0].json().as_ptr(), first, "every subscriber sends the one rendering");
        assert!(kept[0].json.get().is_none(), "an event no subscriber took stays unrendered");
    }

    #[test]
    fn a_full_queue_drops_that_subscriber_only_and_resume_replays_the_gap() {
        let hub = EventHub::new(FanoutConfig { buffer: 2, history: 3 });
        let anyone = Caller::anonymous;
        let mut slow = hub.subscribe(anyone(), Filter::default(), None);
        let z_only = Filter { namespaces: ["z".into()].into(), ..Filter::default() };
        let mut other_ns = hub.subscribe(anyone(), z_only, None);
        for i in 0..3 {
            hub.publish(hub.render(envelope(&format!("e{i}"), "a")).unwrap());
        }
        assert!(slow.slow.load(Ordering::SeqCst), "the third event overflowed its queue of two");
        assert_eq!(slow.queue.try_recv().unwrap().event_id, "e0", "what was queued is still delivered");
        assert!(other_ns.queue.try_recv().is_err() && !other_ns.slow.load(Ordering::SeqCst));
        assert_eq!(hub.subscribers(), 1);
        let resumed = hub.subscribe(anyone(), Filter::default(), Some("e0"));
        let ids: Vec<_> = resumed.backlog.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!((ids, resumed.gap), (vec!["e1", "e2"], false));
        hub.publish(hub.render(envelope("e3", "a")).unwrap());
        assert!(hub.subscribe(anyone(), Filter::default(), Some("e0")).gap, "e0 is older than the history kept");
    }

    #[test]
    fn filters_refuse_unknown_event_types() {
        let filter: Filter = serde_json::from_str(r#"{"eventTypes":["StampCreated"]}"#).unwrap();
        assert_eq!(filter.check(), Ok(()));
        let filter: Filter = serde_json::from_str(r#"{"eventTypes":["Stamp"]}"#).unwrap();
        assert!(filter.check().unwrap_err().contains("Stamp"));
        assert!(serde_json::from_str::<Filter>(r#"{"namespace":["a"]}"#).is_err(), "unknown fields are refused");
    }
}
