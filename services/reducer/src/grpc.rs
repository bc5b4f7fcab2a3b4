//! The gRPC adapter: `omninode.reducer.v1.ReducerService` over the aggregate store.

use std::{pin::Pin, time::Duration};

use futures::Stream;
use omninode_mesh::paging;
use omninode_proto::reducer::v1::{
    self as pb,
    reducer_service_server::{ReducerService, ReducerServiceServer},
};
use omninode_stamping::domain::namespace::resolve_namespace;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{domain::aggregate::Aggregate, error::ReducerError, store::AggregateStore};

const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;
/// How often a watcher re-reads the store, for updates made by other instances.
const WATCH_POLL: Duration = Duration::from_millis(500);

/// The reducer's gRPC service.
#[derive(Clone)]
pub struct ReducerGrpc {
    store: AggregateStore,
    updates: broadcast::Sender<Aggregate>,
}

impl ReducerGrpc {
    pub fn new(store: AggregateStore, updates: broadcast::Sender<Aggregate>) -> Self {
        Self { store, updates }
    }

    pub fn into_server(self) -> ReducerServiceServer<Self> {
        ReducerServiceServer::new(self)
    }

    async fn stats(&self, namespace: &str) -> Result<Aggregate, ReducerError> {
        self.store.get(namespace).await?.ok_or_else(|| ReducerError::NotFound(namespace.to_owned()))
    }
}

fn namespace(raw: &str) -> Result<String, ReducerError> {
    resolve_namespace(raw).map_err(ReducerError::NamespaceInvalid)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchNamespaceStatsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ReducerService for ReducerGrpc {
    async fn get_namespace_stats(
        &self,
        request: Request<pb::GetNamespaceStatsRequest>,
    ) -> Result<Response<pb::GetNamespaceStatsResponse>, Status> {
        let ns = namespace(&request.into_inner().namespace)?;
        Ok(Response::new(pb::GetNamespaceStatsResponse { stats: Some(to_proto(self.stats(&ns).await?)) }))
    }

    async fn list_namespaces(
        &self,
        request: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let r = request.into_inner();
        let size = paging::page_size(r.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
        let after = paging::decode_token(&r.page_token, |ns| resolve_namespace(ns).is_ok())
            .map_err(|e| ReducerError::Validation(e.into()))?;
        let mut page = self.store.list(after.as_deref(), u64::from(size) + 1).await?;
        let next_page_token = if page.len() > size as usize {
            page.truncate(size as usize);
            paging::encode_token(&page.last().expect("a full page").namespace)
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces: page.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    type WatchNamespaceStatsStream = WatchStream;

    async fn watch_namespace_stats(
        &self,
        request: Request<pb::WatchNamespaceStatsRequest>,
    ) -> Result<Response<Self::WatchNamespaceStatsStream>, Status> {
        let ns = namespace(&request.into_inner().namespace)?;
        let (tx, rx) = mpsc::channel(16);
        let mut updates = self.updates.subscribe();
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut last_version = -1;
            let mut current = store.get(&ns).await;
            loop {
                match current {
                    Ok(Some(stats)) if stats.version > last_version => {
                        last_version = stats.version;
                        let message = pb::WatchNamespaceStatsResponse { stats: Some(to_proto(stats)) };
                        if tx.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        let _ = tx.send(Err(Status::from(err))).await;
                        return;
                    }
                }
                let poll = tokio::time::sleep(WATCH_POLL);
                tokio::pin!(poll);
                current = loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        update = updates.recv() => match update {
                            Ok(stats) if stats.namespace == ns => break Ok(Some(stats)),
                            Ok(_) => continue,
                            Err(_) => break store.get(&ns).await,
                        },
                        _ = &mut poll => break store.get(&ns).await,
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn rebuild(&self, request: Request<pb::RebuildRequest>) -> Result<Response<pb::RebuildResponse>, Status> {
        let ns = namespace(&request.into_inner().namespace)?;
        let stats = self.store.rebuild(&ns).await?;
        let _ = self.updates.send(stats.clone());
        Ok(Response::new(pb::RebuildResponse { stats: Some(to_proto(stats)) }))
    }
}

use omninode_mesh::time::to_timestamp as timestamp;

/// The proto form of an aggregate.
pub fn to_proto(a: Aggregate) -> pb::NamespaceStats {
    pb::NamespaceStats {
        namespace: a.namespace,
        total_stamps: a.total_stamps,
        total_size_bytes: a.total_size_bytes,
        file_type_counts: a.file_type_counts.into_iter().collect(),
        unique_workflows: a.unique_workflows,
        workflow_state_counts: a.workflow_state_counts.into_iter().collect(),
        window_start: a.window_start.map(timestamp),
        window_end: a.window_end.map(timestamp),
        items_per_second: a.items_per_second,
        last_updated: Some(timestamp(a.last_aggregation_at)),
        version: a.version.max(0) as u64,
    }
}
