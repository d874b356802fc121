//! The W3C trace context on the bus: a producer writes its span's context into [`Headers`],
//! which travel inside the message's payload (its `trace` map: a batch carries many messages
//! of many traces); a consumer makes the span that handles the message a child of it (or links
//! to it). Without span export installed, spans carry no context: nothing is written and
//! nothing read, so the headers stay empty.

use chat_bus::Headers;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderWriter<'a>(&'a mut Headers);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value);
    }
}

struct HeaderReader<'a>(&'a Headers);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.names().collect()
    }
}

/// Headers holding `span`'s trace context; empty when the span has none (no export).
pub fn inject_context(span: &tracing::Span) -> Headers {
    let mut headers = Headers::new();
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderWriter(&mut headers));
    }
    headers
}

fn remote_context(headers: &Headers) -> Option<opentelemetry::Context> {
    let context = TraceContextPropagator::new().extract(&HeaderReader(headers));
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` a child of the span whose context `headers` carry, if they carry one. Call
/// before the span is first entered.
pub fn set_remote_parent(span: &tracing::Span, headers: &Headers) {
    if let Some(context) = remote_context(headers) {
        if let Err(e) = span.set_parent(context) {
            tracing::debug!(error = %e, "cannot set a span's remote parent");
        }
    }
}

/// Links `span` to the span whose context `headers` carry, if they carry one: for a span that
/// works for several traces at once (a batch).
pub fn link_to_remote(span: &tracing::Span, headers: &Headers) {
    if let Some(context) = remote_context(headers) {
        span.add_link(context.span().span_context().clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    fn trace_id(span: &tracing::Span) -> opentelemetry::trace::TraceId {
        span.context().span().span_context().trace_id()
    }

    #[test]
    fn a_consumer_span_joins_the_trace_of_the_producer_through_the_headers() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let producer = tracing::info_span!("enqueue");
            let headers = inject_context(&producer);
            let traceparent = headers.get("traceparent").expect("a traceparent header");
            let producer_id = producer.context().span().span_context().span_id();
            assert!(traceparent.contains(&trace_id(&producer).to_string()), "{traceparent}");
            assert!(traceparent.contains(&producer_id.to_string()), "{traceparent}");

            let consumer = tracing::info_span!("store-message");
            set_remote_parent(&consumer, &headers);
            assert_eq!(trace_id(&consumer), trace_id(&producer));

            let unrelated = tracing::info_span!("other");
            set_remote_parent(&unrelated, &Headers::new());
            assert_ne!(trace_id(&unrelated), trace_id(&producer), "no headers: a trace of its own");
        });
    }

    #[test]
    fn without_span_export_nothing_is_written() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("enqueue");
            assert!(inject_context(&span).is_empty());
        });
    }
}
