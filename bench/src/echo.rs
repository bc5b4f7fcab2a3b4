//! The gRPC ceiling: a minimal tonic server whose one unary method returns
//! its request, through the same server stack and codec generated services
//! use (tonic's `Grpc::unary` with prost), without routing or middleware.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::codegen::http;
use tonic::{
    Request, Response, Status,
    body::Body,
    client::Grpc as GrpcClient,
    codegen::http::uri::PathAndQuery,
    server::{Grpc, NamedService, UnaryService},
    transport::{Channel, Server},
};
use tonic_prost::ProstCodec;

const SERVICE: &str = "omninode.bench.Echo";
const METHOD: &str = "/omninode.bench.Echo/Echo";

#[derive(Debug, Clone, Copy)]
struct EchoServer;

impl NamedService for EchoServer {
    const NAME: &'static str = SERVICE;
}

struct EchoMethod;

impl UnaryService<Vec<u8>> for EchoMethod {
    type Response = Vec<u8>;
    type Future = Ready<Result<Response<Vec<u8>>, Status>>;

    fn call(&mut self, request: Request<Vec<u8>>) -> Self::Future {
        ready(Ok(Response::new(request.into_inner())))
    }
}

impl tonic::codegen::Service<http::Request<Body>> for EchoServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<Vec<u8>, Vec<u8>>::default());
            Ok(grpc.unary(EchoMethod, request).await)
        })
    }
}

/// Serves the echo method on `addr` until the process ends.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    Server::builder().add_service(EchoServer).serve(addr).await?;
    Ok(())
}

/// A client of the echo method.
#[derive(Clone)]
pub struct EchoClient(GrpcClient<Channel>);

impl EchoClient {
    pub fn new(channel: Channel) -> Self {
        Self(GrpcClient::new(channel))
    }

    /// Sends `payload` and checks it comes back unchanged.
    pub async fn echo(&mut self, payload: Vec<u8>) -> Result<(), Status> {
        self.0.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let sent = payload.len();
        let codec = ProstCodec::<Vec<u8>, Vec<u8>>::default();
        let answer = self.0.unary(Request::new(payload), PathAndQuery::from_static(METHOD), codec).await?;
        if answer.get_ref().len() == sent { Ok(()) } else { Err(Status::data_loss("the echo changed the payload")) }
    }
}
