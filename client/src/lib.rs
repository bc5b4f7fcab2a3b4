//! Client of the OmniNode Bridge mesh: one [`Mesh`] for stamping, the
//! orchestrator and the reducer, with an API key or bearer token on every
//! call, TLS, a deadline per call, retries of UNAVAILABLE (exponential
//! backoff with jitter), errors that carry the gRPC code and the mesh's
//! reason ([`Error`]), and streams for paging and watching. The generated
//! clients are public too ([`Mesh::stamping`] …) for anything else.
//!
//! ```no_run
//! # async fn example() -> Result<(), omninode_client::Error> {
//! use futures::StreamExt;
//! use omninode_client::{Endpoints, Mesh, Options};
//!
//! let mesh = Mesh::connect(Endpoints::default(), Options::default().api_key("k1"))?;
//! let stamped = mesh.stamp("docs.team", "# Title\n", "title.md").await?;
//! let workflow = mesh.run_workflow("docs.team", "# Title\n", "").await?;
//! let mut updates = mesh.watch_workflow(&workflow.workflow_id);
//! while let Some(update) = updates.next().await {
//!     println!("{:?}", update?.state);
//! }
//! # let _ = stamped; Ok(()) }
//! ```

use std::{future::Future, time::Duration};

use futures::{Stream, StreamExt, stream};
use omninode_proto::{
    orchestrator::v1::{self as opb, orchestrator_service_client::OrchestratorServiceClient},
    reducer::v1::{self as rpb, reducer_service_client::ReducerServiceClient},
    stamping::v1::{self as spb, stamping_service_client::StampingServiceClient},
};
use tonic::{
    Code, Request, Status,
    metadata::{AsciiMetadataValue, MetadataKey},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

/// The trailer that carries the mesh's machine-readable error reason.
pub const REASON_METADATA_KEY: &str = "omninode-error-reason";
/// Largest message sent or accepted (a stamped file of the default 16 MiB limit, and then some).
const MAX_MESSAGE_BYTES: usize = 80 * 1024 * 1024;

/// A failed call: the gRPC code, the mesh's reason (empty when the failure
/// came from the transport), the message, and the status details: the
/// `google.rpc.ErrorInfo` metadata (what the error is about: `namespace`,
/// `workflow_id`, …) and the `google.rpc.BadRequest` field violations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?} {reason}: {message}")]
pub struct Error {
    pub code: Code,
    pub reason: String,
    pub message: String,
    /// `ErrorInfo.metadata`.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// `BadRequest.field_violations`: (field, description).
    pub field_violations: Vec<(String, String)>,
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        use tonic_types::StatusExt;
        let details = status.get_error_details();
        let trailer = || status.metadata().get(REASON_METADATA_KEY).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (reason, metadata) = match details.error_info() {
            Some(info) => (info.reason.clone(), info.metadata.clone().into_iter().collect()),
            None => (trailer().unwrap_or_default(), Default::default()),
        };
        let field_violations = details
            .bad_request()
            .map(|bad| bad.field_violations.iter().map(|v| (v.field.clone(), v.description.clone())).collect())
            .unwrap_or_default();
        Self { code: status.code(), reason, message: status.message().to_owned(), metadata, field_violations }
    }
}

impl Error {
    fn setup(message: String) -> Self {
        Self {
            code: Code::InvalidArgument,
            reason: "CLIENT_SETUP".into(),
            message,
            metadata: Default::default(),
            field_violations: Vec::new(),
        }
    }
}

/// Where the services are; `omninode up`'s defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub stamping: String,
    pub orchestrator: String,
    pub reducer: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            stamping: "http://127.0.0.1:8053".into(),
            orchestrator: "http://127.0.0.1:8060".into(),
            reducer: "http://127.0.0.1:8061".into(),
        }
    }
}

/// TLS towards the services: the CA to trust, an optional client identity (mTLS) and the name to check.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_pem: Vec<u8>,
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    pub server_name: Option<String>,
}

/// How calls are made.
#[derive(Debug, Clone)]
pub struct Options {
    credential: Option<(MetadataKey<tonic::metadata::Ascii>, AsciiMetadataValue)>,
    pub tls: Option<Tls>,
    /// Each call's deadline (default 30 s).
    pub timeout: Duration,
    /// Retries of UNAVAILABLE after the first attempt (default 3).
    pub retries: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self { credential: None, tls: None, timeout: Duration::from_secs(30), retries: 3 }
    }
}

impl Options {
    /// Sends `x-api-key: key` with every call.
    pub fn api_key(mut self, key: &str) -> Self {
        self.credential = AsciiMetadataValue::try_from(key).ok().map(|v| (MetadataKey::from_static("x-api-key"), v));
        self
    }

    /// Sends `authorization: Bearer token` with every call.
    pub fn bearer(mut self, token: &str) -> Self {
        self.credential = AsciiMetadataValue::try_from(format!("Bearer {token}"))
            .ok()
            .map(|v| (MetadataKey::from_static("authorization"), v));
        self
    }

    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
}

/// Adds the credential to every request.
#[derive(Debug, Clone)]
pub struct Credentials(Option<(MetadataKey<tonic::metadata::Ascii>, AsciiMetadataValue)>);

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some((key, value)) = &self.0 {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Credentials>;

/// One unary call, `unary!(self, service.method, request)`, through
/// [`Mesh::call`] (deadline and retries) on a clone of that service's client.
macro_rules! unary {
    ($mesh:expr, $service:ident . $method:ident, $request:expr) => {
        $mesh.call($request, |r| {
            let mut client = $mesh.$service.clone();
            async move { client.$method(r).await }
        })
    };
}

/// The whole mesh. Cheap to clone; channels connect lazily and reconnect by themselves.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub stamping: StampingServiceClient<Authed>,
    pub orchestrator: OrchestratorServiceClient<Authed>,
    pub reducer: ReducerServiceClient<Authed>,
    timeout: Duration,
    retries: u32,
}

impl Mesh {
    /// A client of the services at `endpoints` (nothing is dialled until the first call).
    pub fn connect(endpoints: Endpoints, options: Options) -> Result<Self, Error> {
        let channel = |url: &str| channel(url, &options);
        let (stamping, orchestrator, reducer) =
            (channel(&endpoints.stamping)?, channel(&endpoints.orchestrator)?, channel(&endpoints.reducer)?);
        Ok(Self::from_channels(stamping, orchestrator, reducer, options))
    }

    /// A client over channels the caller built (its own TLS settings or
    /// service discovery); `options` still give the credential, deadline and retries.
    pub fn from_channels(stamping: Channel, orchestrator: Channel, reducer: Channel, options: Options) -> Self {
        let credentials = Credentials(options.credential.clone());
        Self {
            stamping: StampingServiceClient::with_interceptor(stamping, credentials.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            orchestrator: OrchestratorServiceClient::with_interceptor(orchestrator, credentials.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            reducer: ReducerServiceClient::with_interceptor(reducer, credentials),
            timeout: options.timeout,
            retries: options.retries,
        }
    }

    /// Calls `call` with a deadline, retrying UNAVAILABLE with exponential backoff and jitter.
    async fn call<T, R, F, Fut>(&self, request: R, mut call: F) -> Result<T, Error>
    where
        R: Clone,
        F: FnMut(Request<R>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut attempt = 0;
        loop {
            let mut outgoing = Request::new(request.clone());
            outgoing.set_timeout(self.timeout);
            match call(outgoing).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == Code::Unavailable && attempt < self.retries => {
                    attempt += 1;
                    let cap = Duration::from_millis(50).saturating_mul(1 << attempt.min(6)).min(Duration::from_secs(2));
                    tokio::time::sleep(cap.mul_f64(fastrand::f64())).await;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }

    /// The normalised BLAKE3 hash a stamp of `content` records.
    pub async fn hash(&self, content: &[u8]) -> Result<String, Error> {
        let request = spb::HashRequest { content: content.to_vec().into(), normalize: true };
        Ok(unary!(self, stamping.hash, request).await?.hash)
    }

    /// Stamps `content` (lightweight format) in `namespace`.
    pub async fn stamp(&self, namespace: &str, content: &str, file_path: &str) -> Result<spb::StampResponse, Error> {
        let request = spb::StampRequest {
            namespace: namespace.into(),
            content: content.into(),
            file_path: file_path.into(),
            ..Default::default()
        };
        self.stamp_with(request).await
    }

    /// A Stamp with every field of the request.
    pub async fn stamp_with(&self, request: spb::StampRequest) -> Result<spb::StampResponse, Error> {
        unary!(self, stamping.stamp, request).await
    }

    /// Stamps `(content, file_path)` pairs in one call.
    pub async fn batch_stamp(
        &self,
        namespace: &str,
        items: impl IntoIterator<Item = (String, String)>,
    ) -> Result<spb::BatchStampResponse, Error> {
        let items = items
            .into_iter()
            .map(|(content, file_path)| spb::BatchStampItem { content, file_path, ..Default::default() })
            .collect();
        let request = spb::BatchStampRequest { namespace: namespace.into(), items, ..Default::default() };
        unary!(self, stamping.batch_stamp, request).await
    }

    pub async fn validate(&self, content: &str, expected_hash: &str) -> Result<spb::ValidateResponse, Error> {
        let request = spb::ValidateRequest { content: content.into(), expected_hash: expected_hash.into() };
        unary!(self, stamping.validate, request).await
    }

    pub async fn get_stamp(&self, namespace: &str, file_hash: &str) -> Result<spb::StampRecord, Error> {
        let request = spb::GetStampRequest { namespace: namespace.into(), file_hash: file_hash.into() };
        let response = unary!(self, stamping.get_stamp, request).await?;
        response.stamp.ok_or_else(|| Error::setup("GetStamp answered without a record".into()))
    }

    /// Every stamp of `namespace`, newest first, fetched a page at a time.
    pub fn stamps(&self, namespace: &str, page_size: u32) -> impl Stream<Item = Result<spb::StampRecord, Error>> + '_ {
        let namespace = namespace.to_owned();
        pages(move |page_token| {
            let request = spb::ListStampsRequest { namespace: namespace.clone(), page_size, page_token };
            async move {
                let page = unary!(self, stamping.list_stamps, request).await?;
                Ok((page.stamps, page.next_page_token))
            }
        })
    }

    /// Starts the built-in stamping workflow (`definition` empty) or a definition's.
    pub async fn start_workflow(
        &self,
        namespace: &str,
        content: &str,
        definition: &str,
    ) -> Result<opb::Workflow, Error> {
        let request = opb::StartWorkflowRequest {
            namespace: namespace.into(),
            input: Some(opb::WorkflowInput { content: content.into(), ..Default::default() }),
            definition: definition.into(),
            ..Default::default()
        };
        let response = unary!(self, orchestrator.start_workflow, request).await?;
        answered(response.workflow, "StartWorkflow")
    }

    /// Starts a workflow and returns it once it stops running (terminal, WAITING or PAUSED).
    pub async fn run_workflow(&self, namespace: &str, content: &str, definition: &str) -> Result<opb::Workflow, Error> {
        let request = opb::RunWorkflowRequest {
            namespace: namespace.into(),
            input: Some(opb::WorkflowInput { content: content.into(), ..Default::default() }),
            definition: definition.into(),
            ..Default::default()
        };
        let response = unary!(self, orchestrator.run_workflow, request).await?;
        answered(response.workflow, "RunWorkflow")
    }

    pub async fn get_workflow(&self, workflow_id: &str) -> Result<opb::Workflow, Error> {
        let request = opb::GetWorkflowRequest { workflow_id: workflow_id.into() };
        let response = unary!(self, orchestrator.get_workflow, request).await?;
        answered(response.workflow, "GetWorkflow")
    }

    pub async fn cancel_workflow(&self, workflow_id: &str, reason: &str) -> Result<opb::Workflow, Error> {
        let request = opb::CancelWorkflowRequest { workflow_id: workflow_id.into(), reason: reason.into() };
        let response = unary!(self, orchestrator.cancel_workflow, request).await?;
        answered(response.workflow, "CancelWorkflow")
    }

    /// The workflow now, then every change, ending after a terminal state.
    pub fn watch_workflow(&self, workflow_id: &str) -> impl Stream<Item = Result<opb::Workflow, Error>> + Unpin + '_ {
        let request = opb::WatchWorkflowRequest { workflow_id: workflow_id.into() };
        let opened = async move {
            match self.orchestrator.clone().watch_workflow(request).await {
                Ok(response) => response
                    .into_inner()
                    .map(|item| item.map_err(Error::from).map(|w| w.workflow.unwrap_or_default()))
                    .left_stream(),
                Err(status) => stream::once(async move { Err(Error::from(status)) }).right_stream(),
            }
        };
        Box::pin(stream::once(opened).flatten())
    }

    /// One page of the workflows of `namespace` after another, newest first.
    pub fn workflows(&self, namespace: &str, page_size: u32) -> impl Stream<Item = Result<opb::Workflow, Error>> + '_ {
        let namespace = namespace.to_owned();
        pages(move |page_token| {
            let request =
                opb::ListWorkflowsRequest { namespace: namespace.clone(), page_size, page_token, ..Default::default() };
            async move {
                let page = unary!(self, orchestrator.list_workflows, request).await?;
                Ok((page.workflows, page.next_page_token))
            }
        })
    }

    pub async fn namespace_stats(&self, namespace: &str) -> Result<rpb::NamespaceStats, Error> {
        let request = rpb::GetNamespaceStatsRequest { namespace: namespace.into() };
        let response = unary!(self, reducer.get_namespace_stats, request).await?;
        response.stats.ok_or_else(|| Error::setup("GetNamespaceStats answered without stats".into()))
    }
}

/// The workflow an orchestrator call answered with (`rpc` names the call when it did not).
fn answered(workflow: Option<opb::Workflow>, rpc: &str) -> Result<opb::Workflow, Error> {
    workflow.ok_or_else(|| Error::setup(format!("{rpc} answered without a workflow")))
}

/// Items of page after page, `fetch(token)` answering a page and the next token.
fn pages<T, F, Fut>(fetch: F) -> impl Stream<Item = Result<T, Error>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), Error>>,
{
    stream::unfold((Some(String::new()), fetch), |(token, mut fetch)| async move {
        let token = token?;
        match fetch(token).await {
            Ok((items, next)) => {
                let next = (!next.is_empty()).then_some(next);
                Some((stream::iter(items.into_iter().map(Ok)).left_stream(), (next, fetch)))
            }
            Err(error) => Some((stream::once(async move { Err(error) }).right_stream(), (None, fetch))),
        }
    })
    .flatten()
}

fn channel(url: &str, options: &Options) -> Result<Channel, Error> {
    let mut endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| Error::setup(format!("{url}: {e}")))?;
    if let Some(tls) = &options.tls {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
        if let Some((cert, key)) = &tls.identity_pem {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &tls.server_name {
            config = config.domain_name(name.clone());
        }
        endpoint = endpoint.tls_config(config).map_err(|e| Error::setup(format!("TLS for {url}: {e}")))?;
    }
    Ok(endpoint.connect_timeout(options.timeout).connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_becomes_an_error_with_its_reason() {
        let mut status = Status::invalid_argument("namespace \"Bad\" is invalid");
        status.metadata_mut().insert(REASON_METADATA_KEY, "NAMESPACE_INVALID".parse().unwrap());
        let error = Error::from(status);
        assert_eq!((error.code, error.reason.as_str()), (Code::InvalidArgument, "NAMESPACE_INVALID"));
        assert!(error.to_string().contains("NAMESPACE_INVALID"));
    }

    #[tokio::test]
    async fn pages_follow_the_token_until_it_is_empty() {
        let calls = std::sync::Mutex::new(Vec::new());
        let all: Vec<u32> = pages(|token: String| {
            calls.lock().unwrap().push(token.clone());
            async move {
                Ok(match token.as_str() {
                    "" => (vec![1, 2], "b".to_owned()),
                    "b" => (vec![3], String::new()),
                    _ => unreachable!(),
                })
            }
        })
        .map(Result::unwrap)
        .collect()
        .await;
        assert_eq!(all, [1, 2, 3]);
        assert_eq!(*calls.lock().unwrap(), ["", "b"]);
    }

    #[tokio::test]
    async fn unavailable_is_retried_then_reported() {
        let mesh = Mesh::connect(
            Endpoints {
                stamping: "http://127.0.0.1:9".into(),
                orchestrator: "http://127.0.0.1:9".into(),
                reducer: "http://127.0.0.1:9".into(),
            },
            Options::default().retries(2).timeout(Duration::from_secs(1)),
        )
        .unwrap();
        let error = mesh.hash(b"x").await.unwrap_err();
        assert_eq!(error.code, Code::Unavailable);
    }
}
