//! Observability shared by every role of the chat service.
//!
//! - [`tracing_setup`]: the process's `tracing` subscriber: logs to stderr (text or JSON),
//!   and, when an OTLP endpoint is configured through the standard `OTEL_*` variables, span
//!   export over OTLP/HTTP;
//! - [`propagation`]: the W3C trace context (`traceparent`, `tracestate`) carried in the
//!   messages on the bus (inside their payloads), so that one chat message's journey through
//!   gateways and persisters is one trace;
//! - [`prometheus`]: the Prometheus recorder behind every role's `GET /metrics`, with process
//!   metrics.
//!
//! The metrics themselves are named and described by the crates that record them (see each
//! crate's `metrics` module, and `describe_metrics` functions), so each crate owns its part of
//! the contract with the dashboards.

pub mod prometheus;
pub mod propagation;
pub mod tracing_setup;

pub use propagation::{inject_context, link_to_remote, set_remote_parent};
pub use tracing_setup::{init, Service, TracingGuard};
