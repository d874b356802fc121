//! The wire contract between the chat services.
//!
//! Everything that crosses the bus is defined here, in one place: the protobuf messages
//! ([`messages`]) and the subject names ([`Subjects`]). The messages are declared with prost's
//! derive macros rather than generated from a `.proto` file, so the build needs no `protoc` and
//! the contract reads as plain Rust. Field tags are part of the contract: never reuse one.

mod lifecycle;
pub mod messages;
mod subjects;

pub use lifecycle::*;
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

/// What a repeated field's entry costs beyond its own encoding: its tag and length prefix (at
/// most 1 + 10 bytes).
pub const ENTRY_OVERHEAD: usize = 11;

/// Splits `entries`, in order, into groups that each fit one payload of at most `max_bytes`
/// when encoded as a repeated field (`size_of` gives an entry's encoded length; each also costs
/// [`ENTRY_OVERHEAD`]). An entry too large for any payload goes alone: the bus's own limit,
/// well above `max_bytes`, is then the one that applies.
pub fn split_by_size<T>(
    entries: impl IntoIterator<Item = T>,
    max_bytes: usize,
    size_of: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let len = size_of(&entry) + ENTRY_OVERHEAD;
        match groups.last_mut() {
            Some(group) if bytes + len <= max_bytes => {
                group.push(entry);
                bytes += len;
            }
            _ => {
                groups.push(vec![entry]);
                bytes = len;
            }
        }
    }
    groups
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_fit_the_limit_in_order_and_an_oversized_entry_goes_alone() {
        let sizes = [40, 40, 40, 200, 10, 10];
        let groups = split_by_size(sizes, 120, |size| *size);
        assert_eq!(groups, vec![vec![40, 40], vec![40], vec![200], vec![10, 10]]);
        for group in &groups {
            let bytes: usize = group.iter().map(|size| size + ENTRY_OVERHEAD).sum();
            assert!(bytes <= 120 || group.len() == 1, "{group:?}");
        }
        assert!(split_by_size(Vec::<usize>::new(), 100, |size| *size).is_empty());
    }
}
