//! Distributed tracing with OpenTelemetry: the OTLP exporter configured from
//! the standard `OTEL_*` variables, the W3C trace context (`traceparent`,
//! `tracestate`) in and out of gRPC metadata, HTTP headers, Kafka headers and
//! stored rows, and the spans every process records.
//!
//! Chosen: spans are `tracing` spans (target [`TARGET`]) turned into
//! OpenTelemetry spans by `tracing-opentelemetry`, so log lines written inside
//! one carry its `trace_id` and `span_id`. With no `OTEL_EXPORTER_OTLP_ENDPOINT`
//! nothing is installed and [`enabled`] is false: no span is created, nothing
//! is exported, and trace context passes through the gateway untouched.

use std::{
    collections::HashMap,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{ConfigError, Env};

/// The `tracing` target of every span meant for OpenTelemetry.
pub const TARGET: &str = "otel";

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are recorded and exported (an OTLP endpoint is configured).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// How spans are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// The standard OpenTelemetry variables this process reads.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended for HTTP); unset: off.
    pub endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`:
    /// `grpc` or `http/protobuf` (the specification's default).
    pub protocol: Protocol,
    /// `OTEL_SERVICE_NAME` (default: the process's role, e.g. `omninode-stamping`).
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`: `key=value,…`.
    pub resource_attributes: Vec<(String, String)>,
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`).
    pub sampler: SamplerChoice,
}

/// `OTEL_TRACES_SAMPLER`'s values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl TraceConfig {
    /// Reads the variables; `default_service` names the process when `OTEL_SERVICE_NAME` is unset.
    pub fn from_env(env: &Env, default_service: &str) -> Result<Self, ConfigError> {
        let invalid = |variable: &'static str, why: String| ConfigError::new(variable, why);
        let protocol_variable = match env.optional("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")? {
            Some(_) => "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            None => "OTEL_EXPORTER_OTLP_PROTOCOL",
        };
        let protocol = match env.optional(protocol_variable)?.as_deref() {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                return Err(invalid(protocol_variable, format!("{other:?} (use grpc or http/protobuf)")));
            }
        };
        let endpoint = match env.optional("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")? {
            Some(endpoint) => Some(checked_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)?),
            None => match env.optional("OTEL_EXPORTER_OTLP_ENDPOINT")? {
                Some(base) => {
                    let base = checked_url("OTEL_EXPORTER_OTLP_ENDPOINT", base)?;
                    Some(match protocol {
                        Protocol::Grpc => base,
                        Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
                    })
                }
                None => None,
            },
        };
        let arg = env.optional("OTEL_TRACES_SAMPLER_ARG")?;
        let ratio = || -> Result<f64, ConfigError> {
            match &arg {
                None => Ok(1.0),
                Some(arg) => arg
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| invalid("OTEL_TRACES_SAMPLER_ARG", format!("{arg:?} (a ratio from 0 to 1)"))),
            }
        };
        let sampler = match env.optional("OTEL_TRACES_SAMPLER")?.as_deref() {
            None | Some("parentbased_always_on") => SamplerChoice::ParentBasedAlwaysOn,
            Some("always_on") => SamplerChoice::AlwaysOn,
            Some("always_off") => SamplerChoice::AlwaysOff,
            Some("traceidratio") => SamplerChoice::Ratio(ratio()?),
            Some("parentbased_always_off") => SamplerChoice::ParentBasedAlwaysOff,
            Some("parentbased_traceidratio") => SamplerChoice::ParentBasedRatio(ratio()?),
            Some(other) => return Err(invalid("OTEL_TRACES_SAMPLER", format!("{other:?} is not a sampler"))),
        };
        let resource_attributes = env
            .optional("OTEL_RESOURCE_ATTRIBUTES")?
            .map(|text| {
                text.split(',')
                    .filter(|pair| !pair.trim().is_empty())
                    .map(|pair| {
                        let (key, value) = pair
                            .split_once('=')
                            .ok_or_else(|| invalid("OTEL_RESOURCE_ATTRIBUTES", format!("{pair:?} is not key=value")))?;
                        let decode =
                            |s: &str| percent_encoding::percent_decode_str(s.trim()).decode_utf8_lossy().into_owned();
                        Ok((decode(key), decode(value)))
                    })
                    .collect::<Result<Vec<_>, ConfigError>>()
            })
            .transpose()?
            .unwrap_or_default();
        let service_name = env.optional("OTEL_SERVICE_NAME")?.unwrap_or_else(|| default_service.to_owned());
        Ok(Self { endpoint, protocol, service_name, resource_attributes, sampler })
    }
}

fn checked_url(variable: &'static str, value: String) -> Result<String, ConfigError> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(value)
    } else {
        Err(ConfigError::new(variable, format!("{value:?} is not an http:// or https:// URL")))
    }
}

impl SamplerChoice {
    fn sampler(self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedRatio(r) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))),
        }
    }
}

/// The `tracing` layer that turns [`TARGET`] spans into exported
/// OpenTelemetry spans, when an endpoint is configured (call inside the
/// Tokio runtime: the exporter runs on it).
pub fn layer<S>(config: &TraceConfig, instance: &str) -> Result<Option<impl tracing_subscriber::Layer<S>>, String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _};
    let Some(endpoint) = &config.endpoint else { return Ok(None) };
    let exporter = match config.protocol {
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build(),
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_headers(HashMap::new())
            .with_endpoint(endpoint)
            .build(),
    }
    .map_err(|e| format!("cannot set up the OTLP exporter (OTEL_EXPORTER_OTLP_ENDPOINT): {e}"))?;
    let mut attributes = vec![KeyValue::new("service.instance.id", instance.to_owned())];
    attributes.extend(config.resource_attributes.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes(attributes)
        .build();
    let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(config.sampler.sampler())
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("omninode");
    let _ = PROVIDER.set(provider);
    ENABLED.store(true, Ordering::Relaxed);
    // No filter of its own: the process's one global filter decides (it
    // adds `otel=info` when tracing is on). A per-layer filter beside a global
    // one sometimes left a span disabled for this layer alone under load (a
    // published event then lost its traceparent); no library here makes
    // spans at info, so the spans exported are ours.
    Ok(Some(tracing_opentelemetry::layer().with_tracer(tracer).with_tracked_inactivity(false)))
}

/// Exports what is still buffered (at shutdown).
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}

/// Sets `span`'s parent from W3C headers (a `traceparent` it was sent), and
/// records its ids for the log lines written inside it.
pub fn continue_from(span: &Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    record_ids(span);
}

/// Sets `span`'s parent from a stored trace context (see [`stored_context`]).
pub fn continue_from_stored(span: &Span, stored: Option<&str>) {
    if let Some(parent) = stored.map(parse_stored).filter(|cx| cx.span().span_context().is_valid()) {
        let _ = span.set_parent(parent);
    }
    record_ids(span);
}

/// Renames a started span (e.g. after the route it serves is known).
pub fn rename(span: &Span, name: String) {
    span.context().span().update_name(name);
}

/// Records `span`'s `trace_id` and `span_id` fields (declared empty at creation).
pub fn record_ids(span: &Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
        span.record("span_id", span_context.span_id().to_string());
    }
}

/// W3C headers (`traceparent`, `tracestate`) of `span`, for a call it makes.
pub fn headers_of(span: &Span) -> Vec<(&'static str, String)> {
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut MapInjector(&mut fields));
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| fields.remove(name).filter(|v| !v.is_empty()).map(|v| (name, v)))
        .collect()
}

/// Puts `span`'s trace context into outgoing gRPC metadata (replacing any).
pub fn inject_metadata(span: &Span, metadata: &mut tonic::metadata::MetadataMap) {
    for (name, value) in headers_of(span) {
        if let Ok(value) = value.parse() {
            metadata.insert(name, value);
        }
    }
}

/// Puts `span`'s trace context into outgoing HTTP headers (replacing any).
pub fn inject_headers(span: &Span, headers: &mut http::HeaderMap) {
    for (name, value) in headers_of(span) {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// The current span's trace context as one string (`traceparent` or
/// `traceparent;tracestate`) to store with what it caused; `None` when tracing is off.
pub fn stored_context() -> Option<String> {
    if !enabled() {
        return None;
    }
    let headers = headers_of(&Span::current());
    let traceparent = headers.iter().find(|(n, _)| *n == "traceparent").map(|(_, v)| v.clone())?;
    Some(match headers.iter().find(|(n, _)| *n == "tracestate") {
        Some((_, state)) => format!("{traceparent};{state}"),
        None => traceparent,
    })
}

/// The `traceparent` of a stored context.
pub fn traceparent_of_stored(stored: &str) -> &str {
    stored.split(';').next().unwrap_or(stored)
}

fn parse_stored(stored: &str) -> Context {
    let mut fields = HashMap::new();
    let (traceparent, state) = stored.split_once(';').unwrap_or((stored, ""));
    fields.insert("traceparent".to_owned(), traceparent.to_owned());
    if !state.is_empty() {
        fields.insert("tracestate".to_owned(), state.to_owned());
    }
    TraceContextPropagator::new().extract(&fields)
}

/// The span context a stored context or `traceparent` names (for span links).
pub fn span_context_of(stored: &str) -> Option<SpanContext> {
    let context = parse_stored(stored);
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// Links `span` to the span a stored context or `traceparent` names.
pub fn link(span: &Span, stored: &str) {
    if let Some(span_context) = span_context_of(stored) {
        span.add_link(span_context);
    }
}

/// The trace id a `traceparent` header carries.
pub fn trace_id_of_header(headers: &http::HeaderMap) -> Option<String> {
    let traceparent = headers.get("traceparent")?.to_str().ok()?;
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32)).then(|| id.to_owned())
}

/// The trace id of `span`, when tracing is on and it has one.
pub fn trace_id(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let span_context = span.context().span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Runs one gRPC call as a client span (`rpc.*` conventions) when tracing is
/// on; the channel's [`crate::auth::Credential`] sends the span's context.
pub async fn grpc_client<T>(
    service: &'static str,
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    use tracing::Instrument;
    if !enabled() {
        return call.await;
    }
    let span = tracing::info_span!(
        target: TARGET,
        "grpc.client",
        otel.name = format!("{service}/{method}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let result = call.instrument(span.clone()).await;
    let code = result.as_ref().map_or_else(|status| status.code(), |_| tonic::Code::Ok);
    span.record("rpc.grpc.status_code", code as i64);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
    result
}

/// A span around one database transaction (`db.*` conventions).
pub fn db_span(operation: &'static str, collection: &'static str, backend: sea_orm::DbBackend) -> Span {
    if !enabled() {
        return Span::none();
    }
    let system = match backend {
        sea_orm::DbBackend::Postgres => "postgresql",
        sea_orm::DbBackend::Sqlite => "sqlite",
        _ => "other_sql",
    };
    tracing::info_span!(
        target: TARGET,
        "db",
        otel.name = format!("{operation} {collection}"),
        otel.kind = "client",
        db.system.name = system,
        db.operation.name = operation,
        db.collection.name = collection,
    )
}

/// The semantic-convention status of a span for a gRPC code seen by a server:
/// errors are the server's own failures, not the client's mistakes.
pub fn server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn reads_the_standard_variables() {
        let off = TraceConfig::from_env(&env(&[]), "omninode").unwrap();
        assert_eq!((off.endpoint, off.sampler), (None, SamplerChoice::ParentBasedAlwaysOn));
        let http =
            TraceConfig::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]), "x").unwrap();
        assert_eq!(http.endpoint.as_deref(), Some("http://collector:4318/v1/traces"));
        let grpc = TraceConfig::from_env(
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_SERVICE_NAME", "edge"),
                ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=a%2Cb"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ]),
            "x",
        )
        .unwrap();
        assert_eq!((grpc.endpoint.as_deref(), grpc.protocol), (Some("http://collector:4317"), Protocol::Grpc));
        assert_eq!(grpc.service_name, "edge");
        assert_eq!(grpc.resource_attributes[1], ("team".to_owned(), "a,b".to_owned()));
        assert_eq!(grpc.sampler, SamplerChoice::ParentBasedRatio(0.25));
        for (variable, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ] {
            let err = TraceConfig::from_env(&env(&[(variable, value)]), "x").unwrap_err();
            assert!(err.to_string().contains(variable), "{err}");
        }
        let err = TraceConfig::from_env(
            &env(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "2")]),
            "x",
        )
        .unwrap_err();
        assert!(err.to_string().contains("OTEL_TRACES_SAMPLER_ARG"), "{err}");
    }

    #[test]
    fn stored_contexts_round_trip() {
        let stored = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01;vendor=x";
        assert_eq!(traceparent_of_stored(stored), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let span_context = span_context_of(stored).expect("valid");
        assert_eq!(span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(span_context_of("garbage").is_none());
        let headers: http::HeaderMap = [(
            http::header::HeaderName::from_static("traceparent"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
        )]
        .into_iter()
        .collect();
        assert_eq!(trace_id_of_header(&headers).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    }
}
