//! The payloads of the two events every message brings (`send-message`, and the receipts its
//! receivers answer with), decoded straight from the packet into the fields validation reads.
//!
//! Decoded as a `serde_json::Value`, each such payload became a map: an allocation for the
//! map, one per key and a hash of each key, some 6 % of the gateway's CPU in a closed loop
//! with receipts. A [`PayloadObject`] keeps the values of its known keys in place, compares
//! keys without copying them, and skips every other key unread. Validation sees the same
//! fields either way ([`PayloadFields`]), so the rules and their error texts stay in one
//! place (`validate`), and a payload that is not a JSON object is refused as before.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// What validation reads of a payload: whether it is a JSON object, and its fields by name.
pub trait PayloadFields {
    fn is_object(&self) -> bool;
    /// The field's value; `None` when absent (or, for [`PayloadObject`], not a known key).
    fn field(&self, name: &str) -> Option<&Value>;
}

impl PayloadFields for Value {
    fn is_object(&self) -> bool {
        Value::is_object(self)
    }

    fn field(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

/// The keys a [`PayloadObject`] keeps: those of `send-message` and of the receipts.
const KEYS: [&str; 7] =
    ["sender_id", "conversation_id", "message_type", "content", "client_msg_id", "conversationId", "messageId"];

/// A payload decoded as a JSON object of which only the [`KEYS`] are kept. The default value
/// is no object at all: what a handler validates when the payload did not decode as one.
#[derive(Debug, Default)]
pub struct PayloadObject {
    object: bool,
    values: [Option<Value>; KEYS.len()],
}

impl PayloadFields for PayloadObject {
    fn is_object(&self) -> bool {
        self.object
    }

    fn field(&self, name: &str) -> Option<&Value> {
        debug_assert!(KEYS.contains(&name), "{name} is not a key a PayloadObject keeps");
        let index = KEYS.iter().position(|key| *key == name)?;
        self.values[index].as_ref()
    }
}

impl<'de> Deserialize<'de> for PayloadObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = PayloadObject;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PayloadObject, A::Error> {
        let mut payload = PayloadObject { object: true, ..PayloadObject::default() };
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                // A repeated key keeps its last value, as a JSON map would.
                Some(index) => payload.values[index] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(payload)
    }
}

/// A key, as its index in [`KEYS`] (`None`: not kept), read without copying it.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(KEYS.iter().position(|known| *known == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate;
    use serde_json::json;

    fn decoded(text: &str) -> PayloadObject {
        serde_json::from_str(text).unwrap_or_default()
    }

    #[test]
    fn known_keys_are_kept_and_others_skipped() {
        let payload = decoded(r#"{"messageId": 9, "extra": {"deep": [1, "x"]}, "conversationId": null}"#);
        assert!(payload.is_object());
        assert_eq!(payload.field("messageId"), Some(&json!(9)));
        assert_eq!(payload.field("conversationId"), Some(&Value::Null), "null is present, as in a map");
        assert_eq!(payload.field("content"), None);
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_and_escaped_keys_match() {
        let payload = decoded(r#"{"messageId": 1, "message\u0049d": 2}"#);
        assert_eq!(payload.field("messageId"), Some(&json!(2)));
    }

    #[test]
    fn anything_but_an_object_is_no_object() {
        for text in [r#""text""#, "5", "[1, 2]", "null", "true", "{", ""] {
            assert!(!decoded(text).is_object(), "{text}");
        }
    }

    /// Validation of the decoded payload answers exactly as validation of the JSON value.
    #[test]
    fn validation_answers_as_for_the_json_value() {
        let payloads = [
            json!({"sender_id": 1, "conversation_id": 2, "message_type": "text", "content": "hi"}),
            json!({"sender_id": 1, "conversation_id": 2, "message_type": "image", "content": "https://x.example/a.png",
                   "client_msg_id": "0190F1A2-7B3C-7D4E-8F50-123456789ABC", "unknown": [1, {"a": 2}]}),
            json!({"sender_id": "1", "conversation_id": -2, "message_type": "video", "content": "", "client_msg_id": 4}),
            json!({"sender_id": null, "content": "\u{0007}"}),
            json!({}),
            json!({"conversationId": 3, "messageId": 9}),
            json!({"conversationId": 0, "messageId": "x"}),
            json!({"conversationId": 3}),
            json!([1, 2]),
            json!("text"),
            json!(null),
        ];
        for value in payloads {
            let object = decoded(&value.to_string());
            assert_eq!(validate::send_message(&object, 10), validate::send_message(&value, 10), "{value}");
            assert_eq!(validate::receipt(&object), validate::receipt(&value), "{value}");
        }
    }
}
