//! Versioned watch streams: the current value of one entity, then every newer
//! version of it, from this process's updates or, for changes another
//! process made, from a periodic read of the store.

use std::{future::Future, time::Duration};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

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
/// `updates` must be subscribed before the call, so nothing published
/// between the first read and the subscription is missed; `is_this` picks
/// the watched entity out of them. `read` answering `Ok(None)` means "not
/// there yet"; an error ends the stream after it is sent. The stream ends
/// after a final value or when the receiver is dropped.
pub fn watch_versioned<T, E, R, Fut>(
    mut updates: broadcast::Receiver<T>,
    is_this: impl Fn(&T) -> bool + Send + 'static,
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
            let tick = tokio::time::sleep(poll);
            tokio::pin!(tick);
            current = loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    update = updates.recv() => match update {
                        Ok(value) if is_this(&value) => break Ok(Some(value)),
                        Ok(_) => continue,
                        // Missed updates, or no publisher left: read the store.
                        Err(_) => break read().await,
                    },
                    _ = &mut tick => break read().await,
                }
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

    #[tokio::test]
    async fn sends_each_newer_version_once_and_ends_after_the_final_one() {
        let (updates, _) = broadcast::channel(16);
        let stored = Arc::new(AtomicI64::new(1));
        let reader = stored.clone();
        let read = move || {
            let version = reader.load(Ordering::SeqCst);
            async move { Ok::<_, ()>(Some(Counter { key: "a", version })) }
        };
        let mut stream =
            watch_versioned(updates.subscribe(), |c: &Counter| c.key == "a", read, Duration::from_secs(60));
        assert_eq!(stream.next().await, Some(Ok(Counter { key: "a", version: 1 })));
        for update in [("b", 9), ("a", 1), ("a", 2)] {
            updates.send(Counter { key: update.0, version: update.1 }).unwrap();
        }
        assert_eq!(
            stream.next().await,
            Some(Ok(Counter { key: "a", version: 2 })),
            "other keys and old versions skipped"
        );
        // A change made elsewhere shows up through the poll.
        stored.store(3, Ordering::SeqCst);
        updates.send(Counter { key: "a", version: 3 }).unwrap();
        assert_eq!(stream.next().await, Some(Ok(Counter { key: "a", version: 3 })));
        assert_eq!(stream.next().await, None, "final version ends the stream");
    }

    #[tokio::test]
    async fn changes_of_other_processes_arrive_by_polling_and_errors_end_the_stream() {
        let (updates, _) = broadcast::channel::<Counter>(16);
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
        let stream = watch_versioned(updates.subscribe(), |_| true, read, Duration::from_millis(10));
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items, vec![Ok(Counter { key: "a", version: 1 }), Err("store down")]);
    }
}
