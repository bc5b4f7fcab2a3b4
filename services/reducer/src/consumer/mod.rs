//! Getting events into the aggregator: a Kafka consumer group (feature
//! `kafka`) or the in-process bus feeds one bounded queue (a full queue stops
//! consumption: backpressure, never unbounded memory); the aggregator drains
//! it in batches of AGGREGATION_BATCH_SIZE or every AGGREGATION_WINDOW_SIZE_MS,
//! stores each batch in one transaction, and only then commits the Kafka
//! offsets it covered.
//!
//! At shutdown the batch in hand is stored at once, without waiting out its
//! window. Kafka's records beyond it stay uncommitted and are read again;
//! the bus's are not delivered again (the relay marks them published once
//! the bus has taken them), so from the bus the reducer takes everything
//! until the relay closes it, and stores it before it ends. After a crash,
//! what the reducer held from the bus is found in the outbox at the next
//! start (`recover`).

#[cfg(feature = "kafka")]
mod kafka;

use std::time::Duration;

use chrono::{DateTime, Utc};
use omninode_proto::events::v1::EventEnvelope;
use omninode_runtime::{
    ServiceError,
    events::{EventKind, InProcessBus, RecordPosition},
};
use prost::Message as _;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

#[cfg(feature = "kafka")]
pub use kafka::spawn_from_kafka;

use crate::{
    aggregator::Aggregator, config::ReducerConfig, convert::item_from, domain::aggregate::Item, error::ReducerError,
};

/// Commits the positions of a stored batch (Kafka offsets).
type Commit = Box<dyn Fn(&[RecordPosition]) + Send + Sync>;

/// Most events one transaction takes while a backlog waits.
const BACKLOG_BATCH: usize = 5000;

/// Tries of each batch of events recovered after a crash (a concurrent
/// update of the same namespace, a busy database) before the start goes on.
const RECOVERY_ATTEMPTS: u32 = 5;

/// The wait before the next try of a write that failed `failures` times:
/// 40 ms, doubling, at most about 5 s.
fn retry_pause(failures: u32) -> Duration {
    Duration::from_millis(20).saturating_mul(1 << Ord::min(failures, 8))
}

/// One queued event: what it contributes (if anything) and where it was read.
struct Queued {
    item: Option<Item>,
    /// Set for a record that is not an event: its dead letter, sent before its offset is committed.
    dead: Option<omninode_runtime::events::OutboxRecord>,
    position: Option<RecordPosition>,
    /// The `traceparent` the event was published with (its batch's span links to it).
    traceparent: Option<String>,
}

/// The topics the reducer consumes.
pub fn input_topics(prefix: &str) -> Vec<String> {
    vec![EventKind::StampCreated.topic(prefix), EventKind::WorkflowStateChanged.topic(prefix)]
}

fn decode(payload: &[u8]) -> Option<Item> {
    decode_or_why(payload).unwrap_or_else(|err| {
        metrics::counter!("aggregation_errors_total", "reason" => "undecodable").increment(1);
        tracing::warn!(%err, "skipping an event that is not an EventEnvelope");
        None
    })
}

/// What an event contributes, or why the record is not an event.
fn decode_or_why(payload: &[u8]) -> Result<Option<Item>, String> {
    let envelope =
        EventEnvelope::decode(payload).map_err(|e| format!("not an omninode.events.v1.EventEnvelope: {e}"))?;
    if envelope.payload.is_none() {
        return Err(format!("event {:?} has no payload", envelope.event_id));
    }
    Ok(item_from(envelope))
}

/// Starts aggregating what `bus` delivers; returns the aggregating task,
/// which ends once `stop` is cancelled and the bus closed, with everything
/// the bus delivered stored.
pub fn spawn_from_bus(
    bus: &InProcessBus,
    topic_prefix: &str,
    config: &ReducerConfig,
    aggregator: Aggregator,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let topics = input_topics(topic_prefix);
    let mut events = bus.subscribe(&topics, config.max_queue);
    // Every event the bus delivers from now on is marked published after
    // this instant (the relay marks an event once the bus has handed it
    // over, by this process's clock): recovery leaves those to the bus.
    let subscribed_at = Utc::now();
    let (tx, rx) = mpsc::channel(config.max_queue);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let queued =
                Queued { item: decode(&event.payload), dead: None, position: None, traceparent: event.traceparent };
            if tx.send(queued).await.is_err() {
                return;
            }
        }
    });
    let config = config.clone();
    tokio::spawn(async move {
        recover(&aggregator, &topics, subscribed_at, &config).await;
        aggregate_loop(rx, config, aggregator, None, stop).await
    })
}

/// Aggregates, before anything the bus sends now, the events a crash took
/// from the reducer: the relay marks an event published once the bus has
/// handed it over and never sends it again, so what the reducer held
/// unstored when its process died — its batch, its queue, the bus's channel
/// to it — is found in the outbox, published but not in `processed_events`.
/// Only events marked before `subscribed_at` are taken: later ones are on
/// their way through the bus, and counting them here too would count them
/// before the reducer has received them (still only once:
/// `processed_events` deduplicates). The outbox's last rows up to the
/// newest one marked before then hold them: the relay publishes in id
/// order, and the reducer holds at most two queues and a batch (twice that
/// many rows are read, for the other topics' events between them). Nothing
/// is found after a clean stop.
async fn recover(aggregator: &Aggregator, topics: &[String], subscribed_at: DateTime<Utc>, config: &ReducerConfig) {
    let started = Utc::now();
    let depth = 2 * (2 * config.max_queue + BACKLOG_BATCH.max(config.batch_size)) as u64;
    let payloads = match aggregator.published_not_processed(topics, depth, subscribed_at).await {
        Ok(payloads) => payloads,
        Err(err) => {
            tracing::warn!(%err, "cannot look for published events a crash left unaggregated");
            return;
        }
    };
    let items: Vec<Item> = payloads.iter().filter_map(|payload| decode(payload)).collect();
    if items.is_empty() {
        return;
    }
    for batch in items.chunks(BACKLOG_BATCH) {
        let mut attempts = 0u32;
        while let Err(err) = aggregator.apply(batch, (started, Utc::now())).await {
            attempts += 1;
            if attempts == RECOVERY_ATTEMPTS {
                // Still unprocessed: the next start finds them again.
                tracing::warn!(%err, "cannot aggregate published events a crash left unaggregated");
                return;
            }
            tokio::time::sleep(retry_pause(attempts)).await;
        }
    }
    metrics::counter!("aggregation_recovered_total").increment(items.len() as u64);
    tracing::info!(events = items.len(), "aggregated published events a crash had left unaggregated");
}

async fn aggregate_loop(
    mut rx: mpsc::Receiver<Queued>,
    config: ReducerConfig,
    aggregator: Aggregator,
    commit: Option<Commit>,
    stop: CancellationToken,
) {
    tokio::spawn(prune_loop(aggregator.clone(), config.clone(), stop.clone()));
    // Records that are read again after a restart (uncommitted offsets) may
    // be left at shutdown; the bus's must all be stored (see the module docs).
    let drain = commit.is_none();
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.cancelled(), if !drain => return,
            first = rx.recv() => match first { Some(first) => first, None => return },
        };
        let started = Utc::now();
        let deadline = tokio::time::Instant::now() + config.window;
        let mut batch = vec![first];
        while batch.len() < config.batch_size {
            tokio::select! {
                next = rx.recv() => match next { Some(next) => batch.push(next), None => break },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.cancelled() => break,
            }
        }
        // Behind (events already waiting): take them into this transaction
        // too. Per-transaction costs dominate small batches, so a backlog
        // drains several times faster this way; a trickle is unaffected.
        while batch.len() < BACKLOG_BATCH.max(config.batch_size) {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        metrics::gauge!("aggregation_queue_size").set(rx.len() as f64);
        let items: Vec<Item> = batch.iter().filter_map(|q| q.item.clone()).collect();
        let span = batch_span(&batch);
        let clock = std::time::Instant::now();
        // The batch is retried until stored: its offsets are not committed
        // before, so a crash here only means redelivery, which is deduplicated.
        let mut failures = 0u32;
        loop {
            let applied = {
                use tracing::Instrument;
                aggregator.apply(&items, (started, Utc::now())).instrument(span.clone()).await
            };
            match applied {
                Ok(()) => break,
                Err(err) => {
                    failures += 1;
                    metrics::counter!("aggregation_errors_total", "reason" => err.reason()).increment(1);
                    if !matches!(err, ReducerError::Conflict(_)) {
                        tracing::warn!(%err, failures, "aggregation batch failed; retrying");
                    }
                    let pause = retry_pause(failures);
                    tokio::select! {
                        _ = stop.cancelled() => {
                            tracing::warn!(events = items.len(), "stopping with an aggregation batch not stored");
                            return;
                        }
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        drop(span);
        metrics::histogram!("aggregation_duration_ms").record(clock.elapsed().as_secs_f64() * 1000.0);
        metrics::counter!("aggregation_items_total").increment(items.len() as u64);
        // Records that are not events go to their dead-letter topic before their offsets are committed.
        let dead: Vec<_> = batch.iter_mut().filter_map(|q| q.dead.take()).collect();
        if !dead.is_empty() {
            let count = dead.len() as u64;
            let mut failures = 0u32;
            while let Err(err) = aggregator.dead_letter(dead.clone()).await {
                failures += 1;
                tracing::warn!(%err, failures, "cannot store dead letters; retrying");
                let pause = retry_pause(failures);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            metrics::counter!("reducer_events_dead_lettered_total").increment(count);
        }
        if let Some(commit) = &commit {
            let positions: Vec<RecordPosition> = batch.into_iter().filter_map(|q| q.position).collect();
            commit(&positions);
        }
    }
}

/// Forgets processed event ids older than the retention, every prune
/// interval: the table holds a bounded window however long the reducer runs.
async fn prune_loop(aggregator: Aggregator, config: ReducerConfig, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(config.prune_interval) => {}
        }
        let retention = chrono::Duration::from_std(config.processed_retention).unwrap_or(chrono::Duration::MAX);
        match aggregator.prune_processed(Utc::now() - retention).await {
            Ok(pruned) => metrics::counter!("processed_events_pruned_total").increment(pruned),
            Err(err) => tracing::warn!(%err, "cannot prune processed event ids"),
        }
    }
}

/// The span of one stored batch (messaging "process" conventions), linked to
/// the publication span of every traced event it folds in; none when no
/// event of it was traced.
fn batch_span(batch: &[Queued]) -> tracing::Span {
    let traced: Vec<&str> = batch.iter().filter_map(|q| q.traceparent.as_deref()).collect();
    if traced.is_empty() || !omninode_runtime::trace::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: omninode_runtime::trace::TARGET,
        "reducer.batch",
        otel.name = "process reducer batch",
        otel.kind = "consumer",
        messaging.operation.type = "process",
        messaging.batch.message_count = batch.len() as i64,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    // The batch continues the trace of its first traced event; all are links.
    omninode_runtime::trace::continue_from_stored(&span, traced.first().copied());
    for traceparent in traced {
        omninode_runtime::trace::link(&span, traceparent);
    }
    span
}
