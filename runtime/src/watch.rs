//! Versioned watch streams: the current value of one entity, then every newer
//! version of it, from this process's updates or, for changes another
//! process made, from a periodic read of the store.
//!
//! Updates fan out by key ([`KeyedUpdates`]): a change wakes only the
//! watchers of its own entity, so a publish costs the same whether the
//! process has one watcher or thousands (a RunWorkflow caller is one).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{
    broadcast::{self, error::RecvError},
    mpsc,
};
use tokio_stream::wrappers::ReceiverStream;

/// Changes one key can queue for a slow watcher before it falls back to
/// reading the store (an entity changes a few times a second at most).
const PER_KEY_BACKLOG: usize = 16;

type Channels<T> = Arc<Mutex<HashMap<String, broadcast::Sender<T>>>>;

/// This process's stored changes, delivered to the watchers of each key only.
pub struct KeyedUpdates<T> {
    channels: Channels<T>,
}

impl<T> std::fmt::Debug for KeyedUpdates<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.channels.lock().map(|channels| channels.len()).unwrap_or_default();
        f.debug_struct("KeyedUpdates").field("watched_keys", &keys).finish()
    }
}

impl<T> Clone for KeyedUpdates<T> {
    fn clone(&self) -> Self {
        Self { channels: self.channels.clone() }
    }
}

impl<T: Clone> Default for KeyedUpdates<T> {
    fn default() -> Self {
        Self { channels: Arc::default() }
    }
}

impl<T: Clone> KeyedUpdates<T> {
    /// Hands a copy of `value` to the watchers of `key`; nothing is copied
    /// or kept when there are none.
    pub fn publish(&self, key: &str, value: &T) {
        if let Some(channel) = self.channels.lock().expect("update channels").get(key) {
            let _ = channel.send(value.clone());
        }
    }

    /// Starts receiving the changes of `key` published from now on.
    pub fn subscribe(&self, key: &str) -> Subscription<T> {
        let mut channels = self.channels.lock().expect("update channels");
        let channel = channels.entry(key.to_owned()).or_insert_with(|| broadcast::channel(PER_KEY_BACKLOG).0);
        Subscription { receiver: Some(channel.subscribe()), key: key.to_owned(), channels: self.channels.clone() }
    }

    /// Whether anyone in this process watches `key`.
    pub fn is_watched(&self, key: &str) -> bool {
        self.channels.lock().expect("update channels").contains_key(key)
    }
}

/// One watcher's receiver of one key's changes; the key is forgotten when
/// its last watcher goes.
pub struct Subscription<T> {
    receiver: Option<broadcast::Receiver<T>>,
    key: String,
    channels: Channels<T>,
}

impl<T: Clone> Subscription<T> {
    /// The next change; `Err` when changes were missed (read the store then).
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        self.receiver.as_mut().expect("receiver lives until drop").recv().await
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        // Under the lock, so a subscribe to the same key either comes before
        // (and keeps the channel) or after (and makes a new one).
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.receiver = None;
        if channels.get(&self.key).is_some_and(|channel| channel.receiver_count() == 0) {
            channels.remove(&self.key);
        }
    }
}

/// A value with a version that grows with every stored change.
pub trait Versioned: Clone + Send + 'static {
    fn version(&self) -> i64;

    /// Whether no later version can follow (the stream then ends).
    fn is_final(&self) -> bool {
        false
    }
}

/// Streams the value `read` returns now, then each newer version.
///
/// `updates` (the entity's key) must be subscribed before the call, so
/// nothing published between the first read and the subscription is
/// missed. `read` answering `Ok(None)` means "not
/// there yet"; an error ends the stream after it is sent. The stream ends
/// after a final value or when the receiver is dropped.
pub fn watch_versioned<T, E, R, Fut>(
    mut updates: Subscription<T>,
    read: R,
    poll: Duration,
) -> ReceiverStream<Result<T, E>>
where
    T: Versioned,
    E: Send + 'static,
    R: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Option<T>, E>> + Send,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut last_version = i64::MIN;
        let mut current = read().await;
        loop {
            match current {
                Err(err) => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
                Ok(Some(value)) if value.version() > last_version => {
                    last_version = value.version();
                    let last = value.is_final();
                    if tx.send(Ok(value)).await.is_err() || last {
                        return;
                    }
                }
                Ok(_) => {}
            }
            current = tokio::select! {
                _ = tx.closed() => return,
                update = updates.recv() => match update {
                    Ok(value) => Ok(Some(value)),
                    // Missed updates: read the store.
                    Err(_) => read().await,
                },
                _ = tokio::time::sleep(poll) => read().await,
            };
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    };

    use futures::StreamExt;

    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Counter {
        key: &'static str,
        version: i64,
    }

    impl Versioned for Counter {
        fn version(&self) -> i64 {
            self.version
        }
        fn is_final(&self) -> bool {
            self.version >= 3
        }
    }

    /// A watch of key "a" over a store holding its version 1 (the returned
    /// number: set it to change what the store answers). It polls too
    /// seldom to matter: changes reach it published or by a missed change.
    fn watch_stored(updates: &KeyedUpdates<Counter>) -> (Arc<AtomicI64>, ReceiverStream<Result<Counter, ()>>) {
        let stored = Arc::new(AtomicI64::new(1));
        let reader = stored.clone();
        let read = move || {
            let version = reader.load(Ordering::SeqCst);
            async move { Ok(Some(Counter { key: "a", version })) }
        };
        (stored, watch_versioned(updates.subscribe("a"), read, Duration::from_secs(60)))
    }

    #[tokio::test]
    async fn sends_each_newer_version_once_and_ends_after_the_final_one() {
        let updates = KeyedUpdates::default();
        let (stored, mut stream) = watch_stored(&updates);
        assert_eq!(stream.next().await, Some(Ok(Counter { key: "a", version: 1 })));
        for (key, version) in [("b", 9), ("a", 1), ("a", 2)] {
            updates.publish(key, &Counter { key, version });
        }
        assert_eq!(
            stream.next().await,
            Some(Ok(Counter { key: "a", version: 2 })),
            "other keys and old versions skipped"
        );
        stored.store(3, Ordering::SeqCst);
        updates.publish("a", &Counter { key: "a", version: 3 });
        assert_eq!(stream.next().await, Some(Ok(Counter { key: "a", version: 3 })));
        assert_eq!(stream.next().await, None, "final version ends the stream");
    }

    #[tokio::test]
    async fn changes_of_other_processes_arrive_by_polling_and_errors_end_the_stream() {
        let updates = KeyedUpdates::<Counter>::default();
        let reads = Arc::new(AtomicI64::new(0));
        let counter = reads.clone();
        let read = move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Ok(None),
                    1 => Ok(Some(Counter { key: "a", version: 1 })),
                    _ => Err("store down"),
                }
            }
        };
        let stream = watch_versioned(updates.subscribe("a"), read, Duration::from_millis(10));
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items, vec![Ok(Counter { key: "a", version: 1 }), Err("store down")]);
    }

    #[tokio::test]
    async fn a_watcher_that_missed_changes_reads_the_store() {
        let updates = KeyedUpdates::default();
        let (stored, mut stream) = watch_stored(&updates);
        assert_eq!(stream.next().await, Some(Ok(Counter { key: "a", version: 1 })));
        stored.store(2, Ordering::SeqCst);
        // More than a key's backlog, sent before the watcher runs again:
        // these values are marked, so the one that arrives shows where it came from.
        for _ in 0..=PER_KEY_BACKLOG {
            updates.publish("a", &Counter { key: "published", version: 2 });
        }
        assert_eq!(stream.next().await, Some(Ok(Counter { key: "a", version: 2 })), "read from the store");
    }

    #[test]
    fn a_change_reaches_only_the_watchers_of_its_key() {
        let updates = KeyedUpdates::default();
        let (mut a1, mut a2, mut b) = (updates.subscribe("a"), updates.subscribe("a"), updates.subscribe("b"));
        updates.publish("a", &Counter { key: "a", version: 1 });
        updates.publish("c", &Counter { key: "c", version: 1 });
        let next = |s: &mut Subscription<Counter>| s.receiver.as_mut().unwrap().try_recv().ok();
        assert_eq!(next(&mut a1), Some(Counter { key: "a", version: 1 }));
        assert_eq!(next(&mut a2), Some(Counter { key: "a", version: 1 }));
        assert_eq!(next(&mut b), None, "b was not woken for a");
        assert!(!updates.is_watched("c"), "publishing to an unwatched key keeps nothing");
    }

    #[test]
    fn a_key_is_forgotten_when_its_last_watcher_goes() {
        let updates = KeyedUpdates::<Counter>::default();
        let (first, second) = (updates.subscribe("a"), updates.subscribe("a"));
        assert!(updates.is_watched("a"));
        drop(first);
        assert!(updates.is_watched("a"), "one watcher left");
        drop(second);
        assert!(!updates.is_watched("a"));
        assert!(updates.channels.lock().unwrap().is_empty(), "no channel left behind");
        // A new watcher after that gets a channel of its own.
        let mut again = updates.subscribe("a");
        updates.publish("a", &Counter { key: "a", version: 7 });
        assert_eq!(again.receiver.as_mut().unwrap().try_recv().ok(), Some(Counter { key: "a", version: 7 }));
    }
}
