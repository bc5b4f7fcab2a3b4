//! Group commit: callers hand their writes to a writer task, which takes
//! everything queued while its previous batch was committing and writes it
//! as one batch (one transaction, one fsync). A lone write goes at once, with
//! no added wait; under load, one commit carries many writes.

use std::{future::Future, pin::Pin, sync::Arc};

use tokio::sync::{Mutex, mpsc, oneshot};

/// Writes a batch of items and answers one output per item, in order.
pub type BatchWrite<I, O> = Arc<dyn Fn(Vec<I>) -> Pin<Box<dyn Future<Output = Vec<O>> + Send>> + Send + Sync>;

struct Job<I, O> {
    item: I,
    reply: oneshot::Sender<O>,
}

/// The callers' end of a group-commit writer.
pub struct GroupCommit<I, O> {
    jobs: mpsc::Sender<Job<I, O>>,
}

impl<I, O> Clone for GroupCommit<I, O> {
    fn clone(&self) -> Self {
        Self { jobs: self.jobs.clone() }
    }
}

impl<I, O> std::fmt::Debug for GroupCommit<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("queued", &(self.jobs.max_capacity() - self.jobs.capacity())).finish()
    }
}

/// Why a write got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the writer has stopped")]
pub struct WriterStopped;

impl<I: Send + 'static, O: Send + 'static> GroupCommit<I, O> {
    /// Starts `writers` tasks that each take up to `max_batch` queued items at
    /// a time and pass them to `write`. The tasks end when every handle is dropped.
    pub fn spawn(write: BatchWrite<I, O>, max_batch: usize, writers: usize) -> Self {
        let max_batch = max_batch.max(1);
        let (jobs, queue) = mpsc::channel::<Job<I, O>>(max_batch * writers.max(1) * 4);
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..writers.max(1) {
            let (queue, write) = (queue.clone(), write.clone());
            tokio::spawn(async move {
                loop {
                    let mut batch = Vec::new();
                    {
                        // One writer collects at a time; the others write meanwhile.
                        let mut queue = queue.lock().await;
                        if queue.recv_many(&mut batch, max_batch).await == 0 {
                            return;
                        }
                    }
                    let (items, replies): (Vec<I>, Vec<oneshot::Sender<O>>) =
                        batch.into_iter().map(|job| (job.item, job.reply)).unzip();
                    metrics::histogram!("group_commit_batch_size").record(items.len() as f64);
                    let outputs = write(items).await;
                    debug_assert_eq!(outputs.len(), replies.len(), "one output per item");
                    for (reply, output) in replies.into_iter().zip(outputs) {
                        // A caller that went away still had its write done.
                        let _ = reply.send(output);
                    }
                }
            });
        }
        Self { jobs }
    }

    /// Queues `item` and waits for its output.
    pub async fn submit(&self, item: I) -> Result<O, WriterStopped> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { item, reply }).await.map_err(|_| WriterStopped)?;
        answer.await.map_err(|_| WriterStopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn doubling(batches: Arc<std::sync::Mutex<Vec<usize>>>) -> BatchWrite<u32, u32> {
        Arc::new(move |items: Vec<u32>| {
            batches.lock().unwrap().push(items.len());
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                items.into_iter().map(|i| i * 2).collect()
            })
        })
    }

    /// Submits every item at once, from tasks of their own; answers in item order.
    async fn submit_all(commit: &GroupCommit<u32, u32>, items: impl IntoIterator<Item = u32>) -> Vec<u32> {
        let tasks: Vec<_> = items
            .into_iter()
            .map(|i| {
                let commit = commit.clone();
                tokio::spawn(async move { commit.submit(i).await.unwrap() })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    }

    #[tokio::test]
    async fn writes_queued_during_a_commit_go_in_the_next_batch_and_each_caller_gets_its_own_answer() {
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let commit = GroupCommit::spawn(doubling(batches.clone()), 100, 1);
        let first = tokio::spawn({
            let commit = commit.clone();
            async move { commit.submit(1).await.unwrap() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let rest = submit_all(&commit, 2..=10).await;
        assert_eq!(first.await.unwrap(), 2);
        assert_eq!(rest, (2..=10).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(*batches.lock().unwrap(), vec![1, 9], "the lone first write went alone, the rest together");
    }

    #[tokio::test]
    async fn a_batch_never_exceeds_its_limit() {
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let commit = GroupCommit::spawn(doubling(batches.clone()), 4, 1);
        submit_all(&commit, 0..10).await;
        let batches = batches.lock().unwrap();
        assert!(batches.iter().all(|&n| n <= 4), "{batches:?}");
        assert_eq!(batches.iter().sum::<usize>(), 10);
    }

    #[tokio::test]
    async fn several_writers_write_at_once() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let write: BatchWrite<u32, u32> = {
            let (running, most) = (running.clone(), most.clone());
            Arc::new(move |items: Vec<u32>| {
                let (running, most) = (running.clone(), most.clone());
                Box::pin(async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    items
                })
            })
        };
        let commit = GroupCommit::spawn(write, 1, 2);
        submit_all(&commit, 0..4).await;
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
