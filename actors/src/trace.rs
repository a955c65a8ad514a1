//! Trace context across the hops `tracing` cannot follow by itself: the
//! event actor's channel, a saga's later steps, the postman, the outbox.
//!
//! Carried as a W3C `traceparent` string (W3C Trace Context, level 1:
//! `00-{trace id, 32 hex}-{parent span id, 16 hex}-{flags, 2 hex}`), the
//! same form the outbox column, Kafka headers and email headers use. With
//! no OpenTelemetry layer installed (no OTLP endpoint), spans have no
//! context: `traceparent` is `None` and `adopt` does nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Says that spans are exported (the gateway sets it when an OTLP endpoint
/// is configured). Off, work that would start a span from a stored
/// `traceparent` (a webhook attempt) starts none.
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// Whether spans are exported (`set_exporting`).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The W3C `traceparent` of `span`, when it belongs to a sampled trace.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The current span's `traceparent` (see `traceparent`).
pub fn current() -> Option<String> {
    traceparent(&tracing::Span::current())
}

/// Makes `span` a child of the span `traceparent` names (a malformed or
/// absent one leaves `span` as it was).
pub fn adopt(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else { return };
    let carrier: std::collections::HashMap<String, String> = [("traceparent".to_owned(), tp.to_owned())].into();
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The span context of the current span, when it belongs to a trace: what
/// a request hands the event actor, whose batch span links to it.
pub fn current_context() -> Option<SpanContext> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// `sc` as a W3C `traceparent`.
pub fn format(sc: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
}

/// Links `span` to each of `links` (a batch to the requests it decided).
pub fn link_all<'a>(span: &tracing::Span, links: impl IntoIterator<Item = &'a SpanContext>) {
    for sc in links {
        span.add_link(sc.clone());
    }
}

/// Records `span`'s trace and span ids in its `trace_id` and `span_id`
/// fields (declared `Empty` where it was made), so JSON log lines inside
/// it carry them.
pub fn stamp(span: &tracing::Span) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}

/// The span `make` builds, as a child of the span `traceparent` names and
/// with its ids recorded (`stamp`), when spans are exported and there is a
/// `traceparent`; else `Span::none()` and `make` is not called. `make`
/// declares `trace_id` and `span_id` as `Empty` fields.
pub fn joined(traceparent: Option<&str>, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    match traceparent {
        Some(tp) if exporting() => {
            let span = make();
            adopt(&span, Some(tp));
            stamp(&span);
            span
        }
        _ => tracing::Span::none(),
    }
}
