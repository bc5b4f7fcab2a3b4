//! Logs (tracing, JSON or pretty) and metrics (Prometheus exposition).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Latency buckets in milliseconds, from 50 µs to 10 s.
const LATENCY_BUCKETS_MS: &[f64] =
    &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];

/// Installs the global tracing subscriber: log lines (JSON or pretty, by
/// `filter`) and, when `trace` names an OTLP endpoint, exported spans. A
/// second call (tests, `up`) is a no-op.
pub fn init_tracing(
    format: LogFormat,
    filter: &str,
    trace: &crate::trace::TraceConfig,
    instance: &str,
) -> Result<(), String> {
    use tracing_subscriber::Layer as _;
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.set(()).is_err() {
        return Ok(());
    }
    // Log lines written inside a traced span name it (its trace_id and span_id).
    let filter = match trace.endpoint {
        Some(_) => format!("{filter},{}=info", crate::trace::TARGET),
        None => filter.to_owned(),
    };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // One global filter, for the log lines and the span exporter alike.
    let logs = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => fmt::layer().compact().with_writer(std::io::stderr).boxed(),
    };
    let spans = crate::trace::layer(trace, instance)?;
    let _ = tracing_subscriber::registry().with(filter).with(logs).with(spans).try_init();
    Ok(())
}

/// The process-wide Prometheus recorder, installed on first use.
///
/// Histograms whose names end in `_ms` are exported as real Prometheus
/// histograms with [`LATENCY_BUCKETS_MS`].
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_ms".into()), LATENCY_BUCKETS_MS)
            .expect("latency buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed by an embedding program;
        // the handle then renders only what this recorder would have seen.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a global metrics recorder was already installed");
        }
        handle
    })
}
