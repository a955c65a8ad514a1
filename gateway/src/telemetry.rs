//! Logs and traces: the process's `tracing` subscriber (text or JSON lines
//! on stderr) and, when an OTLP endpoint is configured, an OpenTelemetry
//! layer exporting spans over OTLP/gRPC with a batch processor.
//!
//! Traces are off by default. Off, no request span is made and nothing is
//! exported: the doors check one flag (`enabled`). On, each gRPC call and
//! HTTP request is a server span, a child of the caller's span when its
//! `traceparent` header (W3C Trace Context) names one; the trace then
//! follows the work through the event actor's batch (a span linked to every
//! request it decided), the saga's steps, the render, the email (its
//! `Traceparent` header) and node-to-node forwards (`traceparent` metadata).

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, filter::LevelFilter};

use crate::config::{Config, LogFormat};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP endpoint is configured).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// What must outlive the server: the span exporter, flushed on `shutdown`.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered (up to the exporter's timeout) and stops.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("usher: flushing traces: {e}");
        }
    }
}

/// Installs the process's subscriber: logs filtered by `config.log`, and
/// spans at INFO and above to `config.otlp_endpoint` when it is set (the
/// log filter does not thin traces). Must run inside the tokio runtime (the
/// OTLP client's connection lives on it). Errors: a malformed endpoint.
pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: Box<dyn Layer<_> + Send + Sync> = match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_filter(filter).boxed(),
        // The innermost span's fields (event, order, trace and span ids)
        // but not the whole stack: one line stays one record a shipper can
        // index.
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(false).with_filter(filter).boxed(),
    };
    let (traces, provider) = if config.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .build()
            .map_err(|e| anyhow::anyhow!("--otlp-endpoint {}: {e}", config.otlp_endpoint))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("usher")
            .with_attribute(opentelemetry::KeyValue::new("service.instance.id", config.node_name()))
            .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        // ractor's own spans (one per actor, as long as its life) are not
        // the work of a request: left out.
        let only = tracing_subscriber::filter::Targets::new().with_default(LevelFilter::INFO).with_target("ractor", LevelFilter::OFF);
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("usher")).with_filter(only);
        ENABLED.store(true, Ordering::Relaxed);
        usher_actors::trace::set_exporting(true);
        (Some(layer), Some(provider))
    };
    tracing_subscriber::registry().with(logs).with(traces).try_init().map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    Ok(Telemetry { provider })
}

/// A server span for one call at a door, a child of the caller's span when
/// `headers` carry a valid `traceparent`; `Span::none()` when traces are
/// off. `name` is the span's name in the trace (`/pkg.Service/Method`, or
/// `GET /api/events/{id}`).
pub fn server_span(door: &'static str, name: &str, headers: &http::HeaderMap) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        door,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    if opentelemetry::trace::TraceContextExt::span(&parent).span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    usher_actors::trace::stamp(&span);
    span
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
