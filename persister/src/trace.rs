//! Spans of the send commands a batch holds.
//!
//! A batch stores commands of several traces at once, so each command gets a span of its own,
//! `store-message`, a child of the gateway's `enqueue` span (its context travels in the
//! command); the messages' publications are its children, and carry its trace on. The batch
//! itself is a span of its own trace, `persist-batch`, linked to each command's trace, with
//! the database transaction (`insert-messages`) as its child.

use chat_bus::Headers;
use chat_proto::SendMessage;
use tracing::Span;

/// The trace context a command carries from the gateway's `enqueue` span.
fn context_of(command: &SendMessage) -> Headers {
    command.trace.iter().map(|(name, value)| (name.clone(), value.clone())).collect()
}

/// The span of a batch, linked to the trace of each of its commands.
pub(crate) fn batch_span(commands: &[&SendMessage]) -> Span {
    let span = tracing::info_span!(parent: None, "persist-batch", messages = commands.len());
    for command in commands {
        chat_telemetry::link_to_remote(&span, &context_of(command));
    }
    span
}

/// The `store-message` span of each command of a batch, found by the command's request id.
#[derive(Default)]
pub(crate) struct CommandSpans(Vec<(String, Span)>);

impl CommandSpans {
    /// Opens the span of `command`, which came on `subject`.
    pub(crate) fn open(&mut self, subject: &str, command: &SendMessage) {
        let span = tracing::info_span!(
            "store-message",
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.destination.name = %subject,
            conversation_id = command.conversation_id,
            request_id = %command.request_id,
        );
        chat_telemetry::set_remote_parent(&span, &context_of(command));
        self.0.push((command.request_id.clone(), span));
    }

    /// The span of `command` (a disabled one if it has none).
    pub(crate) fn of(&self, command: &SendMessage) -> Span {
        self.0.iter().find(|(id, _)| *id == command.request_id).map_or_else(Span::none, |(_, span)| span.clone())
    }
}
