//! The REST gateway: HTTP/JSON for every RPC from the contracts'
//! `google.api.http` annotations.
//!
//! Chosen: descriptor-driven transcoding at run time with prost-reflect. The
//! descriptor set the build already emits (for server reflection) is the one
//! source of truth: routes, request/response mapping and (later) OpenAPI all
//! come from it, so a new annotated RPC is served without touching this crate.

pub mod codec;
pub mod docs;
pub mod errors;
pub mod events;
pub mod guard;
pub mod openapi;
pub mod raw;
pub mod request_id;
pub mod rules;
pub mod subscribe;
pub mod template;
pub mod transcode;

use std::{collections::HashMap, str::FromStr, sync::Arc};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use omninode_runtime::server::MeshChannel;
use omninode_runtime::{ErrorCode, ServiceError, auth::Authenticator, names, reason};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MethodDescriptor};
use tonic::{Code, Status};

use crate::{codec::RawCodec, rules::Route};

/// Request headers forwarded to the upstream as gRPC metadata (the
/// credentials too: every service authorizes the caller itself).
const FORWARDED: [&str; 6] =
    ["x-correlation-id", "x-request-id", "traceparent", "tracestate", "x-api-key", "authorization"];

/// Routes and the channels to the services behind them.
#[derive(Clone)]
pub struct Gateway {
    routes: Arc<Vec<Route>>,
    upstreams: Arc<HashMap<String, MeshChannel>>,
    max_body_bytes: usize,
    auth: Arc<Authenticator>,
    cors: Option<Vec<String>>,
    max_message_bytes: usize,
    guard: guard::Guard,
    /// The live event fan-out, when an event stream is connected.
    hub: Option<events::EventHub>,
    unknown_fields: transcode::UnknownFields,
}

impl Gateway {
    /// A gateway for every annotated RPC of `upstreams`' services (by full name).
    /// Calls are authenticated with `auth` (the same credentials every gRPC
    /// server of the mesh checks; the gateway forwards them upstream).
    pub fn new(
        upstreams: HashMap<String, MeshChannel>,
        config: &GatewayConfig,
        auth: Arc<Authenticator>,
    ) -> Result<Self, template::TemplateError> {
        let pool = rules::descriptor_pool();
        let names: Vec<&str> = upstreams.keys().map(String::as_str).collect();
        let routes = rules::routes(&pool, &names)?;
        Ok(Self {
            routes: Arc::new(routes),
            upstreams: Arc::new(upstreams),
            max_body_bytes: config.max_body_bytes,
            auth,
            cors: config.cors_origins.clone(),
            max_message_bytes: config.max_message_bytes,
            guard: guard::Guard { allowed_hosts: config.allowed_hosts.clone() },
            hub: None,
            unknown_fields: config.unknown_fields,
        })
    }

    /// Serves `/v1/events:subscribe` from `hub`.
    pub fn with_events(mut self, hub: events::EventHub) -> Self {
        self.hub = Some(hub);
        self
    }

    /// The axum router serving every route, `/openapi.json` and `/docs`.
    pub fn router(self) -> Router {
        let limit = self.max_body_bytes;
        let guard = Arc::new(self.guard.clone());
        let spec = Arc::new(openapi::document(&self.routes));
        let cors = self.cors.clone();
        let router = Router::new()
            .route("/openapi.json", axum::routing::get(move || async move { axum::Json((*spec).clone()) }))
            .route("/docs", axum::routing::get(|| docs::asset("docs.html")))
            .route(
                "/docs/{asset}",
                axum::routing::get(|axum::extract::Path(name): axum::extract::Path<String>| docs::asset_named(name)),
            )
            .route("/v1/events:subscribe", axum::routing::get(subscribe::subscribe))
            // The console is a static page: it calls the API with the credentials its user enters.
            .route("/console", axum::routing::get(console))
            .route("/console/", axum::routing::get(console))
            .fallback(handle)
            .layer(DefaultBodyLimit::max(limit))
            .layer(axum::middleware::from_fn_with_state(guard, guard::check))
            .layer(axum::middleware::from_fn(request_id::assign))
            // Shared, not cloned per request: axum clones the state for every call.
            .with_state(Arc::new(self));
        match cors {
            None => router,
            Some(origins) => router.layer(omninode_runtime::server::cors_layer(&origins)),
        }
    }
}

/// The web console: one self-contained page (no CDN; it works offline).
async fn console() -> Response {
    let mut response = axum::response::Html(include_str!("console.html")).into_response();
    let policy = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'";
    response.headers_mut().insert(http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    response.headers_mut().insert(http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

async fn handle(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    // The request taken apart, not its method, URI and headers copied by extractors.
    let (http::request::Parts { method, uri, headers, .. }, body) = request.into_parts();
    if let Err(denied) = gateway.auth.authenticate(&headers) {
        return error_response(&denied.into_status(), None);
    }
    let path = uri.path();
    let mut allowed: Vec<&str> = Vec::new();
    let split = template::SplitPath::new(path);
    let found = gateway.routes.iter().find_map(|route| {
        let bindings = route.template.matches_split(split.as_ref()?)?;
        allowed.push(route.http_method.as_str());
        (route.http_method == method).then_some((route, bindings))
    });
    if let Some((route, _)) = &found {
        request_id::record_route(&method, &route.template.openapi_path());
    }
    let Some((route, bindings)) = found else {
        return if !allowed.is_empty() {
            let message = format!("method {method} is not allowed on {path}");
            let status = errors::refusal(ErrorCode::InvalidArgument, reason::METHOD_NOT_ALLOWED, message);
            let mut response =
                error_response(&with_code(status, Code::Unimplemented), Some(StatusCode::METHOD_NOT_ALLOWED));
            allowed.sort_unstable();
            allowed.dedup();
            let allow = HeaderValue::from_str(&allowed.join(", ")).expect("method names are header-safe");
            response.headers_mut().insert(http::header::ALLOW, allow);
            response
        } else {
            let status = errors::refusal(ErrorCode::NotFound, reason::ROUTE_NOT_FOUND, format!("no route for {path}"));
            error_response(&status, None)
        };
    };
    let media = raw::media(&headers);
    let sends_body = matches!(method, Method::POST | Method::PUT | Method::PATCH);
    match (&media, &route.raw) {
        (raw::Media::Json, _) => {}
        (raw::Media::Raw(_) | raw::Media::Multipart(_), Some(_)) => {
            // A form or text/plain post needs no CORS preflight: a cross-site
            // page could send one, so files come only from pages allowed to.
            if let Some(origin) = raw::cross_site_origin(&headers, gateway.cors.as_deref()) {
                let message = format!(
                    "a file upload from origin {:?} is refused: not this site, not in GATEWAY_CORS_ORIGINS",
                    omninode_core::limits::prefix(&origin, 100)
                );
                let status = errors::refusal(ErrorCode::PermissionDenied, reason::HOST_NOT_ALLOWED, message);
                return error_response(&status, None);
            }
        }
        (raw::Media::Raw(essence) | raw::Media::Multipart(essence) | raw::Media::Other(essence), raw) if sends_body => {
            let takes = match raw {
                Some(_) => "JSON (application/json), a file (application/octet-stream, text/*) or multipart/form-data",
                None => "JSON (Content-Type: application/json)",
            };
            let shown = match &media {
                raw::Media::Multipart(_) => "multipart/form-data",
                _ => essence.as_str(),
            };
            let message = format!("the body must be {takes}, not {:?}", omninode_core::limits::prefix(shown, 100));
            let status = errors::refusal(ErrorCode::InvalidArgument, reason::UNSUPPORTED_MEDIA_TYPE, message);
            return error_response(&status, Some(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        _ => {}
    }
    let service = route.method.parent_service();
    let Some(channel) = gateway.upstreams.get(service.full_name()).cloned() else {
        let status = errors::refusal(
            ErrorCode::Unavailable,
            reason::DEPENDENCY_UNAVAILABLE,
            format!("no upstream for {}", service.full_name()),
        );
        return error_response(&status, None);
    };
    let upstream = (channel, gateway.max_message_bytes);
    if route.method.is_client_streaming() {
        return match (&media, &route.raw) {
            (raw::Media::Raw(_), Some(raw)) => match upload(upstream, route, raw, body, &headers).await {
                Ok(response) => response,
                Err(status) => error_response(&status, None),
            },
            _ => {
                let message = "stream the content as the body (Content-Type: application/octet-stream)";
                let status = errors::refusal(ErrorCode::InvalidArgument, reason::UNSUPPORTED_MEDIA_TYPE, message);
                error_response(&status, Some(StatusCode::UNSUPPORTED_MEDIA_TYPE))
            }
        };
    }
    let limit = gateway.max_body_bytes;
    let too_large = || {
        let message = format!("the body is over the {limit}-byte limit (GATEWAY_MAX_BODY_BYTES)");
        let status = errors::refusal(ErrorCode::ResourceExhausted, reason::PAYLOAD_TOO_LARGE, message);
        error_response(&status, Some(StatusCode::PAYLOAD_TOO_LARGE))
    };
    let declared = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return too_large();
    }
    let Ok(body) = axum::body::to_bytes(body, limit).await else { return too_large() };
    let prepared = match (&media, &route.raw) {
        (raw::Media::Raw(essence), Some(raw)) => {
            raw::single(route, raw, &bindings, uri.query(), &headers, essence, body).map(|m| (route.method.clone(), m))
        }
        (raw::Media::Multipart(boundary), Some(raw)) => {
            raw::multipart(route, raw, &bindings, uri.query(), &headers, boundary.clone(), body).await
        }
        _ => transcode::request_message(route, &bindings, uri.query(), &body, gateway.unknown_fields)
            .map(|m| (route.method.clone(), m)),
    };
    let (rpc, request) = match prepared {
        Ok(prepared) => prepared,
        Err(bad) => return error_response(&errors::bad_request(bad.0), None),
    };
    if rpc.is_server_streaming() {
        return match stream(upstream, route, request, &headers).await {
            Ok(response) => response,
            Err(status) => error_response(&status, None),
        };
    }
    match call(upstream, &rpc, request, &headers).await {
        Ok((metadata, message)) => {
            // A create answers 201, unless it says it created nothing (an idempotent repeat).
            let created =
                !matches!(message.get_field_by_name("created").as_deref(), Some(prost_reflect::Value::Bool(false)));
            let code = match route.success_status {
                _ if rpc != route.method => StatusCode::OK,
                201 if !created => StatusCode::OK,
                status => StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            };
            let file = route.raw.as_ref().and_then(|r| r.response_field.as_ref()).filter(|_| rpc == route.method);
            let mut response = match file {
                Some(field) if raw::wants_raw(&headers) => {
                    let file_type = match &media {
                        raw::Media::Raw(essence) if essence.starts_with("text/") => essence.as_str(),
                        _ => "text/plain",
                    };
                    raw::response(code, &message, field, file_type)
                }
                _ => json_response(code, transcode::response_json_bytes(&message, &route.response_body)),
            };
            copy_metadata(&metadata, response.headers_mut());
            response
        }
        Err(status) => error_response(&status, None),
    }
}

/// A JSON body already written.
fn json_response(code: StatusCode, body: Vec<u8>) -> Response {
    (code, [(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// `status` with another code, its message and details kept.
fn with_code(status: Status, code: Code) -> Status {
    Status::with_details_and_metadata(
        code,
        status.message(),
        status.details().to_vec().into(),
        status.metadata().clone(),
    )
}

/// A client-streaming RPC from a raw body of any length: each piece of the
/// body as it arrives (at most [`UPLOAD_CHUNK`] bytes) is one request
/// message, so the gateway holds no more than a few pieces at a time.
async fn upload(
    upstream: Upstream,
    route: &Route,
    raw: &rules::RawContent,
    body: Body,
    headers: &HeaderMap,
) -> Result<Response, Status> {
    use futures_util::StreamExt;
    let (input, field) = (route.method.input(), raw.request_field.clone());
    let pieces = body.into_data_stream().take_while(|piece| std::future::ready(piece.is_ok())).flat_map(move |piece| {
        let mut piece = piece.unwrap_or_default();
        let mut messages = Vec::new();
        while !piece.is_empty() {
            let chunk = piece.split_to(piece.len().min(UPLOAD_CHUNK));
            let mut message = DynamicMessage::new(input.clone());
            message.set_field(&field, prost_reflect::Value::Bytes(chunk));
            messages.push(Bytes::from(message.encode_to_vec()));
        }
        futures_util::stream::iter(messages)
    });
    let (mut grpc, path, call) = prepare(upstream, &route.method, (), headers).await?;
    let (metadata, extensions, ()) = call.into_parts();
    let request = tonic::Request::from_parts(metadata, extensions, pieces);
    let response = grpc.client_streaming(request, path, RawCodec).await?;
    let (metadata, bytes, _) = response.into_parts();
    let message = DynamicMessage::decode(route.method.output(), bytes)
        .map_err(|e| Status::internal(format!("undecodable upstream answer: {e}")))?;
    let file = raw.response_field.as_ref().filter(|_| raw::wants_raw(headers));
    let mut response = match file {
        Some(field) => raw::response(StatusCode::OK, &message, field, "text/plain"),
        None => json_response(StatusCode::OK, transcode::response_json_bytes(&message, &route.response_body)),
    };
    copy_metadata(&metadata, response.headers_mut());
    Ok(response)
}

/// The largest request message of a streamed upload.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// A server stream as Server-Sent Events: one `data:` JSON message per
/// response, and an `error` event carrying a google.rpc.Status if it fails.
async fn stream(
    channel: Upstream,
    route: &Route,
    request: DynamicMessage,
    headers: &HeaderMap,
) -> Result<Response, Status> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    let (mut grpc, path, call) = prepare(channel, &route.method, Bytes::from(request.encode_to_vec()), headers).await?;
    let stream = grpc.server_streaming(call, path, RawCodec).await?.into_inner();
    let (output, response_body) = (route.method.output(), route.response_body.clone());
    let events = stream.map(move |item| {
        Ok::<_, std::convert::Infallible>(match item {
            Ok(bytes) => match DynamicMessage::decode(output.clone(), bytes) {
                Ok(message) => Event::default().data(transcode::response_json(&message, &response_body).to_string()),
                Err(e) => error_event(&Status::internal(format!("undecodable upstream answer: {e}"))),
            },
            Err(status) => error_event(&status),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

fn error_event(status: &Status) -> axum::response::sse::Event {
    axum::response::sse::Event::default().event("error").data(errors::status_json(status).to_string())
}

async fn call(
    channel: Upstream,
    rpc: &MethodDescriptor,
    request: DynamicMessage,
    headers: &HeaderMap,
) -> Result<(tonic::metadata::MetadataMap, DynamicMessage), Status> {
    let (mut grpc, path, call) = prepare(channel, rpc, Bytes::from(request.encode_to_vec()), headers).await?;
    let deadline = omninode_runtime::server::grpc_timeout(headers);
    let response = match deadline {
        Some(limit) => {
            let missed = || Status::deadline_exceeded(format!("no answer within the {limit:?} deadline"));
            tokio::time::timeout(limit, grpc.unary(call, path, RawCodec))
                .await
                .map_err(|_| missed())?
                // tonic servers answer an expired grpc-timeout with CANCELLED
                // ("Timeout expired"); to a REST caller it is a missed deadline.
                .map_err(|status| if status.code() == Code::Cancelled { missed() } else { status })?
        }
        None => grpc.unary(call, path, RawCodec).await?,
    };
    let (metadata, bytes, _) = response.into_parts();
    let message = DynamicMessage::decode(rpc.output(), bytes)
        .map_err(|e| Status::internal(format!("undecodable upstream answer: {e}")))?;
    Ok((metadata, message))
}

/// An upstream channel and the largest message it sends or takes.
type Upstream = (MeshChannel, usize);

type Prepared<T> = (tonic::client::Grpc<MeshChannel>, http::uri::PathAndQuery, tonic::Request<T>);

/// A ready client, the RPC path, and the request with forwarded metadata and deadline.
async fn prepare<T>(
    (channel, max_message_bytes): Upstream,
    rpc: &MethodDescriptor,
    request: T,
    headers: &HeaderMap,
) -> Result<Prepared<T>, Status> {
    // The services' own limits: a large Stamp or RunWorkflow answer must not fail here after it committed.
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    grpc.ready().await.map_err(|e| Status::unavailable(format!("upstream unavailable: {e}")))?;
    let path = format!("/{}/{}", rpc.parent_service().full_name(), rpc.name());
    let path = http::uri::PathAndQuery::from_str(&path).map_err(|e| Status::internal(e.to_string()))?;
    let mut call = tonic::Request::new(request);
    for name in FORWARDED {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
            call.metadata_mut().insert(name, value);
        }
    }
    // The service's span is a child of this request's (the client's traceparent otherwise passes as is).
    if omninode_runtime::trace::enabled() {
        omninode_runtime::trace::inject_metadata(&tracing::Span::current(), call.metadata_mut());
    }
    // A client deadline (grpc-gateway's Grpc-Timeout header) travels on as grpc-timeout.
    if let Some(limit) = omninode_runtime::server::grpc_timeout(headers) {
        let value = format!("{}m", limit.as_millis().max(1));
        call.metadata_mut().insert("grpc-timeout", value.parse().expect("ASCII digits"));
    }
    Ok((grpc, path, call))
}

/// gRPC response metadata out as `Grpc-Metadata-*` headers: the service's
/// own, not the protocol's (`content-type`, `grpc-status` and the rest of the
/// `grpc-` names the gRPC spec reserves), as grpc-gateway does.
fn copy_metadata(metadata: &tonic::metadata::MetadataMap, headers: &mut HeaderMap) {
    for entry in metadata.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry
            && !is_protocol_header(key.as_str())
        {
            let name = format!("grpc-metadata-{}", key.as_str());
            if let (Ok(name), Ok(value)) =
                (http::HeaderName::from_str(&name), HeaderValue::from_str(value.to_str().unwrap_or_default()))
            {
                headers.insert(name, value);
            }
        }
    }
}

fn is_protocol_header(name: &str) -> bool {
    name.starts_with("grpc-") || matches!(name, "content-type" | "content-length" | "te" | "user-agent")
}

/// A `google.rpc.Status` JSON body with grpc-gateway's HTTP status.
pub(crate) fn error_response(status: &Status, http: Option<StatusCode>) -> Response {
    let code = http.unwrap_or_else(|| errors::http_status(status));
    let body = errors::status_json(status);
    let mut response = (code, axum::Json(body)).into_response();
    copy_metadata(status.metadata(), response.headers_mut());
    response
}

/// Gateway settings, read once from the environment.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `GATEWAY_PORT` (default 8080).
    pub port: u16,
    /// `GATEWAY_MAX_BODY_BYTES`: larger request bodies get 413 (default 32 MiB).
    pub max_body_bytes: usize,
    /// `STAMPING_SERVICE_URL`, `ORCHESTRATOR_SERVICE_URL`, `REDUCER_SERVICE_URL`:
    /// upstreams when they are neither in this process nor discovered.
    pub upstream_urls: HashMap<String, String>,
    /// `GATEWAY_CORS_ORIGINS`: allowed origins (comma-separated, or `*`); unset: no CORS headers.
    pub cors_origins: Option<Vec<String>>,
    /// `GATEWAY_ALLOWED_HOSTS`: the `Host` values served (comma-separated, with or without port); unset: any.
    pub allowed_hosts: Option<Vec<String>>,
    /// The largest gRPC message exchanged with the services: their own limit
    /// (four times `STAMPING_MAX_CONTENT_BYTES`, as stamping's BatchStamp).
    pub max_message_bytes: usize,
    /// `GATEWAY_WS_BUFFER`, `GATEWAY_WS_HISTORY`: the live event fan-out.
    pub fanout: events::FanoutConfig,
    /// `GATEWAY_SEND_BUFFER_BYTES`: the kernel send buffer of each connection
    /// (unset: the kernel's autotuning, up to `net.ipv4.tcp_wmem`'s maximum).
    /// Bounds what a subscriber that stopped reading holds beside its queue.
    pub send_buffer_bytes: Option<usize>,
    /// `GATEWAY_REJECT_UNKNOWN_FIELDS`: refuse JSON fields a request message
    /// does not have (default false: they are ignored).
    pub unknown_fields: transcode::UnknownFields,
}

impl GatewayConfig {
    pub fn from_env(env: &omninode_runtime::Env) -> Result<Self, omninode_runtime::ConfigError> {
        let mut upstream_urls = HashMap::new();
        for service in names::ALL {
            upstream_urls.insert(service.grpc_name.to_owned(), env.string(service.url_variable, service.default_url)?);
        }
        Ok(Self {
            port: env.port("GATEWAY_PORT", names::DEFAULT_GATEWAY_PORT)?,
            max_body_bytes: env.parse_in("GATEWAY_MAX_BODY_BYTES", 32 << 20, 1, 1 << 30)?,
            upstream_urls,
            max_message_bytes: omninode_runtime::config::max_content_bytes(env)?
                .saturating_mul(4)
                .saturating_add(64 * 1024),
            allowed_hosts: env
                .optional("GATEWAY_ALLOWED_HOSTS")?
                .map(|list| list.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect()),
            cors_origins: omninode_runtime::config::cors_origins(env)?,
            fanout: events::FanoutConfig {
                buffer: env.parse_in("GATEWAY_WS_BUFFER", 256, 1, 100_000)?,
                history: env.parse_in("GATEWAY_WS_HISTORY", 10_000, 0, 1_000_000)?,
            },
            unknown_fields: match env.flag("GATEWAY_REJECT_UNKNOWN_FIELDS", false)? {
                true => transcode::UnknownFields::Reject,
                false => transcode::UnknownFields::Ignore,
            },
            send_buffer_bytes: match env.optional("GATEWAY_SEND_BUFFER_BYTES")? {
                None => None,
                Some(_) => Some(env.parse_in("GATEWAY_SEND_BUFFER_BYTES", 0, 4096, 64 << 20)?),
            },
        })
    }
}
