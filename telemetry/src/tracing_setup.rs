//! The process's `tracing` subscriber: logs always, span export over OTLP when configured.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL; `/v1/traces` is appended) or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) is set, and off otherwise. The other
//! standard variables are honoured by the OpenTelemetry SDK: `OTEL_SERVICE_NAME` (default here:
//! `chat-<role>`), `OTEL_RESOURCE_ATTRIBUTES` (which may also set the two attributes added here,
//! `service.instance.id` and `service.version`, see [`Service`]), `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`,
//! the default, or `http/json`; gRPC is not built in), `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_BSP_SCHEDULE_DELAY` and the other batch settings.
//!
//! `RUST_LOG` filters the logs only. Exported spans are those of the chat crates (targets
//! `chat*`) at level `info` and above, whatever the log level: a cluster that logs at `warn`
//! still exports its traces.

use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{filter_fn, EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];
const PROTOCOL_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps span export running; [`TracingGuard::shutdown`] sends what is still buffered.
#[must_use = "spans buffered at exit are lost unless the guard is shut down"]
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl TracingGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes buffered spans and stops the exporter. Blocks until the export is done (or has
    /// timed out): call it outside async code, e.g. in `spawn_blocking`.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "flushing spans at exit failed");
            }
        }
    }
}

/// Who exports: on the OpenTelemetry resource, so every span of the process carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// `all`, `gateway`, `persister`, `presence` (the default service name is `chat-<role>`).
    pub role: &'static str,
    /// `service.instance.id`: this process among the role's replicas (a gateway's id, a pod's
    /// name).
    pub instance_id: String,
    /// `service.version`: the build's version.
    pub version: &'static str,
}

fn is_set(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.trim().is_empty())
}

/// Installs the subscriber of a process running `service`: logs to stderr (`json`: one JSON
/// object per line, else text), filtered by `RUST_LOG` (default `info`), and span export when
/// an OTLP endpoint is configured (see the module doc).
pub fn init(service: &Service, json: bool) -> Result<TracingGuard, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if json { logs.json().with_filter(filter).boxed() } else { logs.with_filter(filter).boxed() };
    let provider = if ENDPOINT_VARS.iter().any(|v| is_set(v)) { Some(tracer_provider(service)?) } else { None };
    let spans = provider.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        let ours = filter_fn(|meta| meta.target().starts_with("chat"));
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("chat"))
            .with_filter(LevelFilter::INFO)
            .with_filter(ours)
    });
    tracing_subscriber::registry().with(logs).with(spans).try_init()?;
    if provider.is_some() {
        tracing::info!(role = service.role, instance = %service.instance_id, "exporting spans over OTLP");
    }
    Ok(TracingGuard { provider })
}

fn tracer_provider(service: &Service) -> Result<SdkTracerProvider, TelemetryError> {
    let builder = SpanExporter::builder();
    // The SDK picks the protocol from the environment, and defaults to JSON when that is
    // built in; the OTLP default is protobuf, so protobuf it is unless asked otherwise.
    let exporter = if PROTOCOL_VARS.iter().any(|v| is_set(v)) {
        builder.build()?
    } else {
        builder.with_http().with_protocol(Protocol::HttpBinary).build()?
    };
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource(service)).build())
}

/// The resource: what the environment says (`Resource::builder` reads OTEL_SERVICE_NAME and
/// OTEL_RESOURCE_ATTRIBUTES), then the service name, instance and version where it says
/// nothing.
fn resource(service: &Service) -> Resource {
    let from_environment = Resource::builder().build();
    let mut resource = Resource::builder();
    if !is_set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name(format!("chat-{}", service.role));
    }
    resource.with_attributes(identity(service, &from_environment)).build()
}

/// `service.instance.id` and `service.version`, but those the environment already sets.
fn identity(service: &Service, from_environment: &Resource) -> Vec<KeyValue> {
    [("service.instance.id", service.instance_id.clone()), ("service.version", service.version.to_owned())]
        .into_iter()
        .filter(|(key, _)| from_environment.get(&Key::from_static_str(key)).is_none())
        .map(|(key, value)| KeyValue::new(key, value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Service {
        Service { role: "gateway", instance_id: "gw-7".into(), version: "1.2.3" }
    }

    #[test]
    fn spans_carry_the_instance_and_the_version() {
        let attributes = identity(&service(), &Resource::builder_empty().build());
        let expected = [KeyValue::new("service.instance.id", "gw-7"), KeyValue::new("service.version", "1.2.3")];
        assert_eq!(attributes, expected);
    }

    #[test]
    fn what_the_environment_sets_wins() {
        let from_environment =
            Resource::builder_empty().with_attribute(KeyValue::new("service.version", "operator's")).build();
        let attributes = identity(&service(), &from_environment);
        assert_eq!(attributes, [KeyValue::new("service.instance.id", "gw-7")]);
    }
}
