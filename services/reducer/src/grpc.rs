//! The gRPC adapter: `omninode.reducer.v1.ReducerService` over an [`Aggregator`].

use std::pin::Pin;

use futures::{Stream, StreamExt};
use omninode_proto::reducer::v1::{
    self as pb,
    reducer_service_server::{ReducerService, ReducerServiceServer},
};
use omninode_runtime::auth::{Permission, caller_of};
use tonic::{Request, Response, Status};

use crate::{aggregator::Aggregator, convert::to_proto};

/// `omninode.reducer.v1.ReducerService` over an [`Aggregator`].
#[derive(Clone)]
pub struct ReducerGrpc {
    aggregator: Aggregator,
}

impl ReducerGrpc {
    pub fn new(aggregator: Aggregator) -> Self {
        Self { aggregator }
    }

    pub fn into_server(self) -> ReducerServiceServer<Self> {
        ReducerServiceServer::new(self)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchNamespaceStatsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ReducerService for ReducerGrpc {
    async fn get_namespace_stats(
        &self,
        request: Request<pb::GetNamespaceStatsRequest>,
    ) -> Result<Response<pb::GetNamespaceStatsResponse>, Status> {
        caller_of(&request).authorize_request(Permission::Read, &request.get_ref().namespace)?;
        let stats = self.aggregator.get(&request.into_inner().namespace).await?;
        Ok(Response::new(pb::GetNamespaceStatsResponse { stats: Some(to_proto(stats)) }))
    }

    async fn list_namespaces(
        &self,
        request: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let caller = caller_of(&request);
        caller.authorize_any(Permission::Read)?;
        let r = request.into_inner();
        let page = self.aggregator.list(r.page_size, &r.page_token).await?;
        // Namespaces outside the caller's grants are left out of the page.
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces: page.items.into_iter().filter(|a| caller.may_read(&a.namespace)).map(to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    type WatchNamespaceStatsStream = WatchStream;

    async fn watch_namespace_stats(
        &self,
        request: Request<pb::WatchNamespaceStatsRequest>,
    ) -> Result<Response<Self::WatchNamespaceStatsStream>, Status> {
        caller_of(&request).authorize_request(Permission::Read, &request.get_ref().namespace)?;
        let stream = self.aggregator.watch(&request.into_inner().namespace)?.map(|item| {
            item.map(|stats| pb::WatchNamespaceStatsResponse { stats: Some(to_proto(stats)) }).map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn rebuild(&self, request: Request<pb::RebuildRequest>) -> Result<Response<pb::RebuildResponse>, Status> {
        caller_of(&request).authorize_request(Permission::Admin, &request.get_ref().namespace)?;
        let stats = self.aggregator.rebuild(&request.into_inner().namespace).await?;
        Ok(Response::new(pb::RebuildResponse { stats: Some(to_proto(stats)) }))
    }
}
