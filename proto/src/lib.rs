//! The wire contract between the chat services.
//!
//! Everything that crosses the bus is defined here, in one place: the protobuf messages
//! ([`messages`]) and the subject names ([`Subjects`]). The messages are declared with prost's
//! derive macros rather than generated from a `.proto` file, so the build needs no `protoc` and
//! the contract reads as plain Rust. Field tags are part of the contract: never reuse one.

pub mod messages;
mod subjects;

pub use messages::*;
pub use subjects::*;

/// Encodes a message to the bytes that travel on the bus.
pub fn encode<M: prost::Message>(message: &M) -> bytes::Bytes {
    bytes::Bytes::from(message.encode_to_vec())
}

/// Decodes bytes from the bus, naming the expected message in the error.
pub fn decode<M: prost::Message + Default>(payload: &[u8]) -> Result<M, DecodeError> {
    M::decode(payload).map_err(|source| DecodeError { message: std::any::type_name::<M>(), source })
}

/// A payload on the bus that is not the message its subject promises.
#[derive(Debug)]
pub struct DecodeError {
    pub message: &'static str,
    pub source: prost::DecodeError,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "payload is not a valid {}: {}", self.message, self.source)
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
