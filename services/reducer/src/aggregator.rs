//! `Aggregator`: the reducer's use cases. It folds batches of events into the
//! aggregates (through the store's exactly-once transaction) and announces
//! each stored aggregate to this process's watchers; it answers reads, pages,
//! watches and rebuilds. Transports call it; it knows nothing of gRPC.

use std::time::Duration;

use chrono::{DateTime, Utc};
use omninode_core::namespace::resolve_namespace;
use omninode_runtime::{
    paging::{Page, PageRequest},
    watch::{KeyedUpdates, Versioned, watch_versioned},
};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    domain::aggregate::{Aggregate, Item},
    error::ReducerError,
    store::AggregateStore,
};

/// ListNamespaces page sizes: (default, maximum).
const PAGE_SIZES: (u32, u32) = (100, 1000);
/// How often a watcher re-reads the store, for updates made by other instances.
const WATCH_POLL: Duration = Duration::from_millis(500);

/// The reducer's use cases. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Aggregator {
    store: AggregateStore,
    /// Every stored aggregate, for its namespace's watchers in this process.
    updates: KeyedUpdates<Aggregate>,
}

impl Aggregator {
    pub fn new(store: AggregateStore) -> Self {
        Self { store, updates: KeyedUpdates::default() }
    }

    /// Folds `items` (received over `window`) into the aggregates, once each.
    pub async fn apply(&self, items: &[Item], window: (DateTime<Utc>, DateTime<Utc>)) -> Result<(), ReducerError> {
        for aggregate in self.store.apply(items, window).await? {
            self.updates.publish(&aggregate.namespace, &aggregate);
        }
        Ok(())
    }

    /// Events on `topics` marked published before `before` but never
    /// aggregated, among the outbox's last `depth` such rows (see
    /// [`AggregateStore::published_not_processed`]).
    pub async fn published_not_processed(
        &self,
        topics: &[String],
        depth: u64,
        before: DateTime<Utc>,
    ) -> Result<Vec<Vec<u8>>, ReducerError> {
        Ok(self.store.published_not_processed(topics, depth, before).await?)
    }

    /// The aggregates of `namespace`.
    pub async fn get(&self, namespace: &str) -> Result<Aggregate, ReducerError> {
        let namespace = checked_namespace(namespace)?;
        self.store.get(&namespace).await?.ok_or(ReducerError::NotFound(namespace))
    }

    /// One page of every namespace's aggregates, by namespace.
    pub async fn list(&self, page_size: u32, page_token: &str) -> Result<Page<Aggregate>, ReducerError> {
        let request = PageRequest::parse(page_size, page_token, PAGE_SIZES, |ns| resolve_namespace(ns).is_ok())
            .map_err(|e| ReducerError::Validation(e.into()))?;
        let rows = self.store.list(request.after.as_deref(), request.fetch_limit()).await?;
        Ok(request.page(rows, |aggregate| &aggregate.namespace))
    }

    /// The aggregates of `namespace` now (once there are any), then after every update.
    pub fn watch(&self, namespace: &str) -> Result<ReceiverStream<Result<Aggregate, ReducerError>>, ReducerError> {
        let namespace = checked_namespace(namespace)?;
        let (store, updates) = (self.store.clone(), self.updates.subscribe(&namespace));
        let read = move || {
            let (store, namespace) = (store.clone(), namespace.clone());
            async move { store.get(&namespace).await }
        };
        Ok(watch_versioned(updates, read, WATCH_POLL))
    }

    /// Recomputes `namespace` from the stamp and workflow tables.
    pub async fn rebuild(&self, namespace: &str) -> Result<Aggregate, ReducerError> {
        let namespace = checked_namespace(namespace)?;
        let stats = self.store.rebuild(&namespace).await?;
        self.updates.publish(&namespace, &stats);
        Ok(stats)
    }

    /// Forgets processed event ids older than `before`.
    /// Stores dead letters (records that are not events) for the relay to publish.
    pub async fn dead_letter(&self, records: Vec<omninode_runtime::events::OutboxRecord>) -> Result<(), ReducerError> {
        Ok(self.store.dead_letter(records).await?)
    }

    pub async fn prune_processed(&self, before: DateTime<Utc>) -> Result<u64, ReducerError> {
        Ok(self.store.prune_processed(before).await?)
    }
}

fn checked_namespace(raw: &str) -> Result<String, ReducerError> {
    resolve_namespace(raw).map_err(ReducerError::NamespaceInvalid)
}

impl Versioned for Aggregate {
    fn version(&self) -> i64 {
        self.version
    }
}
