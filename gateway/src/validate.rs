//! Validation of client payloads, with error texts in the style of the spec (class-validator's:
//! `sender_id should not be empty, sender_id must be an integer number`). Pure functions over
//! JSON values (or, for the events every message brings, the `payload` objects they decode
//! to), so every rule is unit-tested without a socket.

use chat_proto::{MemberRole, MessageChangeKind};
use serde_json::Value;

use crate::payload::PayloadFields;

/// The message types of the spec.
pub const MESSAGE_TYPES: [&str; 3] = ["text", "image", "file"];

/// A `send-message` payload that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendPayload {
    pub sender_id: i64,
    pub conversation_id: i64,
    pub message_type: &'static str,
    pub content: String,
    /// The client's id for the send (a UUID, normalised to lower-case hyphenated form).
    pub client_msg_id: Option<String>,
}

/// Validates a `send-message` payload; on failure every problem, joined by `, `, in field order.
/// `max_content_chars` counts Unicode characters.
pub fn send_message(payload: &impl PayloadFields, max_content_chars: usize) -> Result<SendPayload, String> {
    if !payload.is_object() {
        return Err("payload must be an object".into());
    }
    let mut errors = Vec::new();
    let sender_id = positive_id(payload.field("sender_id"), "sender_id", &mut errors);
    let conversation_id = positive_id(payload.field("conversation_id"), "conversation_id", &mut errors);
    let message_type = payload
        .field("message_type")
        .and_then(Value::as_str)
        .and_then(|given| MESSAGE_TYPES.into_iter().find(|known| *known == given));
    if message_type.is_none() {
        errors.push(format!("message_type must be one of the following values: {}", MESSAGE_TYPES.join(", ")));
    }
    let content = content(payload.field("content"), max_content_chars, &mut errors);
    // Images and files are references, never inline data: a URL or an attachment id.
    if let (Some(kind @ ("image" | "file")), Some(reference)) = (message_type, content.as_deref()) {
        if !is_attachment_reference(reference) {
            let article = if kind == "image" { "an" } else { "a" };
            errors.push(format!("content of {article} {kind} message must be an http(s) URL or attachment:<id>"));
        }
    }
    // An extension of the spec's payload: optional, for idempotent retries.
    let client_msg_id = optional_uuid(payload.field("client_msg_id"), "client_msg_id", &mut errors);
    match (sender_id, conversation_id, message_type, content) {
        (Some(sender_id), Some(conversation_id), Some(message_type), Some(content)) if errors.is_empty() => {
            Ok(SendPayload { sender_id, conversation_id, message_type, content, client_msg_id })
        }
        _ => Err(errors.join(", ")),
    }
}

/// A message's `content`: a non-empty string of at most `max_chars` characters without
/// control characters (but line breaks and tabs).
fn content(value: Option<&Value>, max_chars: usize, errors: &mut Vec<String>) -> Option<String> {
    match value {
        None | Some(Value::Null) => {
            errors.push("content should not be empty".into());
            None
        }
        Some(Value::String(text)) if text.is_empty() => {
            errors.push("content should not be empty".into());
            None
        }
        Some(Value::String(text)) if text.chars().count() > max_chars => {
            errors.push(format!("content must be shorter than or equal to {max_chars} characters"));
            None
        }
        Some(Value::String(text)) if text.chars().any(is_forbidden_control) => {
            errors.push("content must not contain control characters".into());
            None
        }
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => {
            errors.push("content must be a string".into());
            None
        }
    }
}

/// An optional UUID field (a client's id for a retry), normalised to lower-case hyphenated
/// form.
fn optional_uuid(value: Option<&Value>, field: &str, errors: &mut Vec<String>) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_str().map(uuid::Uuid::try_parse) {
            Some(Ok(id)) => Some(id.hyphenated().to_string()),
            _ => {
                errors.push(format!("{field} must be a UUID"));
                None
            }
        },
    }
}

/// Control characters other than tab, line feed and carriage return (C0, DEL and C1): they
/// have no business in a chat message and can corrupt terminals and logs downstream.
fn is_forbidden_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// An `http`/`https` URL with a host, or `attachment:<id>` (letters, digits, `.`, `_`, `-`, `/`;
/// up to 200 characters) naming a file stored elsewhere.
fn is_attachment_reference(reference: &str) -> bool {
    if let Some(id) = reference.strip_prefix("attachment:") {
        return !id.is_empty()
            && id.len() <= 200
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    }
    match url::Url::parse(reference) {
        Ok(url) => matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty()),
        Err(_) => false,
    }
}

/// An id field: present, an integer, and positive.
fn positive_id(value: Option<&Value>, field: &str, errors: &mut Vec<String>) -> Option<i64> {
    match value {
        None | Some(Value::Null) => {
            errors.push(format!("{field} should not be empty"));
            errors.push(format!("{field} must be an integer number"));
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            errors.push(format!("{field} should not be empty"));
            errors.push(format!("{field} must be an integer number"));
            None
        }
        Some(value) => match value.as_i64() {
            Some(id) if id > 0 => Some(id),
            Some(_) => {
                errors.push(format!("{field} must be a positive number"));
                None
            }
            None => {
                errors.push(format!("{field} must be an integer number"));
                None
            }
        },
    }
}

/// The `conversationId` of a join, leave or typing payload.
pub fn conversation_id(payload: &Value) -> Result<i64, String> {
    payload
        .get("conversationId")
        .and_then(Value::as_i64)
        .filter(|id| *id > 0)
        .ok_or_else(|| "conversationId must be an integer number".to_owned())
}

/// A `mark-delivered` or `mark-read` payload: the conversation and the message.
pub fn receipt(payload: &impl PayloadFields) -> Result<(i64, i64), String> {
    if !payload.is_object() {
        return Err("payload must be an object".into());
    }
    let mut errors = Vec::new();
    let conversation_id = positive_id(payload.field("conversationId"), "conversationId", &mut errors);
    let message_id = positive_id(payload.field("messageId"), "messageId", &mut errors);
    match (conversation_id, message_id) {
        (Some(conversation_id), Some(message_id)) if errors.is_empty() => Ok((conversation_id, message_id)),
        _ => Err(errors.join(", ")),
    }
}

/// An `edit-message`, `delete-message` or `react` payload that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageChangePayload {
    pub conversation_id: i64,
    pub message_id: i64,
    /// An edit's new content.
    pub content: String,
    /// A reaction's emoji, and whether it is added.
    pub emoji: String,
    pub on: bool,
    /// The client's id for the change (a UUID), for a safe retry.
    pub change_id: Option<String>,
}

/// Validates an `edit-message`, `delete-message` or `react` payload: the conversation and the
/// message, then an edit's `content` (the rules of `send-message`) or a reaction's `emoji`
/// and `on`, then the optional `changeId`.
pub fn message_change(
    payload: &Value,
    kind: MessageChangeKind,
    max_content_chars: usize,
) -> Result<MessageChangePayload, String> {
    let Some(object) = payload.as_object() else {
        return Err("payload must be an object".into());
    };
    let mut errors = Vec::new();
    let conversation_id = positive_id(object.get("conversationId"), "conversationId", &mut errors);
    let message_id = positive_id(object.get("messageId"), "messageId", &mut errors);
    let mut change = MessageChangePayload {
        conversation_id: conversation_id.unwrap_or_default(),
        message_id: message_id.unwrap_or_default(),
        content: String::new(),
        emoji: String::new(),
        on: false,
        change_id: None,
    };
    match kind {
        MessageChangeKind::Edit => {
            change.content = content(object.get("content"), max_content_chars, &mut errors).unwrap_or_default()
        }
        MessageChangeKind::Delete => {}
        MessageChangeKind::React => {
            match object.get("emoji").and_then(Value::as_str) {
                Some(emoji) if is_emoji_like(emoji) => change.emoji = emoji.to_owned(),
                _ => errors.push(format!(
                    "emoji must be a string of 1 to {} bytes without white space",
                    chat_proto::MAX_EMOJI_BYTES
                )),
            }
            match object.get("on").and_then(Value::as_bool) {
                Some(on) => change.on = on,
                None => errors.push("on must be a boolean value".into()),
            }
        }
    }
    change.change_id = optional_uuid(object.get("changeId"), "changeId", &mut errors);
    if errors.is_empty() {
        Ok(change)
    } else {
        Err(errors.join(", "))
    }
}

/// A reaction: a short string (an emoji, or a short code such as `:+1:`) without white space
/// or control characters.
fn is_emoji_like(emoji: &str) -> bool {
    !emoji.is_empty()
        && emoji.len() <= chat_proto::MAX_EMOJI_BYTES
        && !emoji.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// An `add-member`, `remove-member` or `set-role` payload: the group, the member, and the role
/// (`add-member`: optional, `member` when absent; `set-role`: required; `remove-member`: none).
pub fn member_change(payload: &Value, role: RoleField) -> Result<(i64, i64, MemberRole), String> {
    if !payload.is_object() {
        return Err("payload must be an object".into());
    }
    let mut errors = Vec::new();
    let conversation_id = positive_id(payload.get("conversationId"), "conversationId", &mut errors);
    let user_id = positive_id(payload.get("userId"), "userId", &mut errors);
    let given = payload.get("role").filter(|value| !value.is_null());
    let role = match (role, given) {
        (RoleField::None, _) | (RoleField::Optional, None) => Some(MemberRole::Member),
        (RoleField::Required, None) => {
            errors.push(ROLE_VALUES.into());
            None
        }
        (_, Some(value)) => {
            let role = value.as_str().and_then(MemberRole::parse).filter(|r| *r != MemberRole::Owner);
            if role.is_none() {
                errors.push(ROLE_VALUES.into());
            }
            role
        }
    };
    match (conversation_id, user_id, role) {
        (Some(conversation_id), Some(user_id), Some(role)) if errors.is_empty() => Ok((conversation_id, user_id, role)),
        _ => Err(errors.join(", ")),
    }
}

/// Whether a membership payload carries a role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleField {
    None,
    Optional,
    Required,
}

const ROLE_VALUES: &str = "role must be one of the following values: member, moderator";

/// The optional `lastMessageId` of a join: the last message the client saw, to replay the
/// ones after it (an extension of the spec's payload).
pub fn last_message_id(payload: &Value) -> Result<Option<i64>, String> {
    match payload.get("lastMessageId") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_i64() {
            Some(id) if id >= 0 => Ok(Some(id)),
            _ => Err("lastMessageId must be a non-negative integer".into()),
        },
    }
}

/// The optional `userId` of a join or typing payload: when given it must be the socket's user.
pub fn claimed_user_matches(payload: &Value, user_id: i64) -> bool {
    match payload.get("userId") {
        None | Some(Value::Null) => true,
        Some(claimed) => claimed.as_i64() == Some(user_id),
    }
}

/// A `typing` payload: the conversation and whether the user is typing.
pub fn typing(payload: &Value) -> Result<(i64, bool), String> {
    let conversation_id = conversation_id(payload)?;
    let is_typing = payload
        .get("isTyping")
        .and_then(Value::as_bool)
        .ok_or_else(|| "isTyping must be a boolean value".to_owned())?;
    Ok((conversation_id, is_typing))
}

/// A parameter of a query string (percent-decoded), if present.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or("")).ok()?;
    pairs.into_iter().find(|(key, _)| key == name).map(|(_, value)| value)
}

/// A user id as text: a positive decimal integer, nothing else ("1.5", "+1", " 1" and "0x1"
/// are not user ids).
pub fn user_id(raw: &str) -> Option<i64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<i64>().ok().filter(|id| *id > 0)
}

/// The `userId` of the handshake query: a positive integer, or nothing.
pub fn user_id_from_query(query: Option<&str>) -> Option<i64> {
    user_id(&query_param(query, "userId")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn receipts_name_a_conversation_and_a_message() {
        assert_eq!(receipt(&json!({"conversationId": 3, "messageId": 9})), Ok((3, 9)));
        assert_eq!(
            receipt(&json!({"conversationId": 0, "messageId": "x"})),
            Err("conversationId must be a positive number, messageId must be an integer number".into())
        );
        assert_eq!(
            receipt(&json!({"conversationId": 3})),
            Err("messageId should not be empty, messageId must be an integer number".into())
        );
        assert_eq!(receipt(&json!([1, 2])), Err("payload must be an object".into()));
    }

    #[test]
    fn membership_payloads_name_a_group_a_member_and_a_role_below_owner() {
        use RoleField::{None as NoRole, Optional, Required};
        let member = MemberRole::Member;
        assert_eq!(member_change(&json!({"conversationId": 3, "userId": 9}), Optional), Ok((3, 9, member)));
        assert_eq!(
            member_change(&json!({"conversationId": 3, "userId": 9, "role": "moderator"}), Optional),
            Ok((3, 9, MemberRole::Moderator))
        );
        assert_eq!(member_change(&json!({"conversationId": 3, "userId": 9, "role": "x"}), NoRole), Ok((3, 9, member)));
        let role_error = "role must be one of the following values: member, moderator";
        assert_eq!(member_change(&json!({"conversationId": 3, "userId": 9}), Required), Err(role_error.into()));
        assert_eq!(
            member_change(&json!({"conversationId": 3, "userId": 9, "role": "owner"}), Required),
            Err(role_error.into())
        );
        assert_eq!(
            member_change(&json!({"conversationId": "a", "role": 5}), Optional),
            Err(format!("conversationId must be an integer number, userId should not be empty, userId must be an integer number, {role_error}"))
        );
        assert_eq!(member_change(&json!(7), Optional), Err("payload must be an object".into()));
    }

    #[test]
    fn message_changes_name_a_message_and_what_changes() {
        let edit = |payload: Value| message_change(&payload, MessageChangeKind::Edit, 10);
        let ok = edit(json!({"conversationId": 1, "messageId": 2, "content": "fixed"})).expect("valid edit");
        assert_eq!((ok.conversation_id, ok.message_id, ok.content.as_str()), (1, 2, "fixed"));
        assert_eq!(
            edit(json!({"conversationId": 1, "messageId": 0, "content": ""})).expect_err("bad"),
            "messageId must be a positive number, content should not be empty"
        );
        assert_eq!(
            edit(json!({"conversationId": 1, "messageId": 2, "content": "12345678901"})).expect_err("long"),
            "content must be shorter than or equal to 10 characters"
        );
        let delete = message_change(&json!({"conversationId": 1, "messageId": 2}), MessageChangeKind::Delete, 10);
        assert!(delete.is_ok(), "a delete needs no content");
        let react = |payload: Value| message_change(&payload, MessageChangeKind::React, 10);
        let ok = react(json!({"conversationId": 1, "messageId": 2, "emoji": "👍", "on": true})).expect("valid");
        assert_eq!((ok.emoji.as_str(), ok.on), ("👍", true));
        for emoji in [json!(""), json!("a b"), json!("x".repeat(33)), json!(5), Value::Null] {
            let error = react(json!({"conversationId": 1, "messageId": 2, "emoji": emoji, "on": false}));
            assert_eq!(
                error.expect_err("bad emoji"),
                "emoji must be a string of 1 to 32 bytes without white space",
                "emoji {emoji}"
            );
        }
        assert_eq!(
            react(json!({"conversationId": 1, "messageId": 2, "emoji": "👍", "on": "yes"})).expect_err("bad on"),
            "on must be a boolean value"
        );
        let retry = message_change(
            &json!({"conversationId": 1, "messageId": 2, "changeId": "A1A2A3A4-B1B2-C1C2-D1D2-D3D4D5D6D7D8"}),
            MessageChangeKind::Delete,
            10,
        );
        assert_eq!(retry.expect("uuid").change_id.as_deref(), Some("a1a2a3a4-b1b2-c1c2-d1d2-d3d4d5d6d7d8"));
        let bad = message_change(
            &json!({"conversationId": 1, "messageId": 2, "changeId": "x"}),
            MessageChangeKind::Delete,
            10,
        );
        assert_eq!(bad.expect_err("not a uuid"), "changeId must be a UUID");
        assert_eq!(
            message_change(&json!([1]), MessageChangeKind::Delete, 10).expect_err("array"),
            "payload must be an object"
        );
    }

    fn send_error(payload: Value) -> String {
        send_message(&payload, 10).expect_err("invalid")
    }

    #[test]
    fn a_valid_send_passes() {
        let payload = json!({"sender_id": 1, "conversation_id": 2, "message_type": "image", "content": "https://x.example/a.png"});
        let expected = SendPayload {
            sender_id: 1,
            conversation_id: 2,
            message_type: "image",
            content: "https://x.example/a.png".into(),
            client_msg_id: None,
        };
        assert_eq!(send_message(&payload, 100), Ok(expected));
    }

    #[test]
    fn client_msg_id_is_an_optional_uuid() {
        let base = json!({"sender_id": 1, "conversation_id": 2, "message_type": "text", "content": "x"});
        let mut with_id = base.clone();
        with_id["client_msg_id"] = json!("0190F1A2-7B3C-7D4E-8F50-123456789ABC");
        assert_eq!(
            send_message(&with_id, 10).unwrap().client_msg_id.as_deref(),
            Some("0190f1a2-7b3c-7d4e-8f50-123456789abc"),
            "normalised, so two spellings of one id are one id"
        );
        for bad in [json!("not-a-uuid"), json!(42), json!({"id": 1}), json!("")] {
            let mut payload = base.clone();
            payload["client_msg_id"] = bad.clone();
            assert_eq!(send_error(payload), "client_msg_id must be a UUID", "{bad}");
        }
    }

    #[test]
    fn an_empty_object_lists_every_problem_in_field_order() {
        assert_eq!(
            send_error(json!({})),
            "sender_id should not be empty, sender_id must be an integer number, \
             conversation_id should not be empty, conversation_id must be an integer number, \
             message_type must be one of the following values: text, image, file, \
             content should not be empty"
        );
    }

    #[test]
    fn ids_must_be_positive_integers_not_strings() {
        let base = json!({"conversation_id": 2, "message_type": "text", "content": "x"});
        for (sender, expected) in [
            (json!("1"), "sender_id must be an integer number"),
            (json!(1.5), "sender_id must be an integer number"),
            (json!(""), "sender_id should not be empty, sender_id must be an integer number"),
            (json!(0), "sender_id must be a positive number"),
            (json!(-3), "sender_id must be a positive number"),
            (json!([1]), "sender_id must be an integer number"),
        ] {
            let mut payload = base.clone();
            payload["sender_id"] = sender.clone();
            assert_eq!(send_error(payload), expected, "sender_id = {sender}");
        }
    }

    #[test]
    fn content_must_be_a_non_empty_string_within_the_limit() {
        let base = json!({"sender_id": 1, "conversation_id": 2, "message_type": "text"});
        for (content, expected) in [
            (json!(""), "content should not be empty"),
            (json!(null), "content should not be empty"),
            (json!(5), "content must be a string"),
            (json!({"a": 1}), "content must be a string"),
            (json!("12345678901"), "content must be shorter than or equal to 10 characters"),
        ] {
            let mut payload = base.clone();
            payload["content"] = content.clone();
            assert_eq!(send_error(payload), expected, "content = {content}");
        }
        let mut exactly_at_limit = base.clone();
        exactly_at_limit["content"] = json!("éééééééééé"); // 10 characters, 20 bytes
        assert!(send_message(&exactly_at_limit, 10).is_ok());
    }

    #[test]
    fn control_characters_are_refused_but_line_breaks_and_tabs_pass() {
        let base = json!({"sender_id": 1, "conversation_id": 2, "message_type": "text"});
        for bad in ["nul\u{0}", "bell\u{7}", "esc\u{1b}[31m", "del\u{7f}", "c1\u{85}"] {
            let mut payload = base.clone();
            payload["content"] = json!(bad);
            assert_eq!(
                send_message(&payload, 100),
                Err("content must not contain control characters".into()),
                "{bad:?}"
            );
        }
        let mut fine = base.clone();
        fine["content"] = json!("line one\nline two\ttab\r\n<b>kept as sent</b> \u{202e}");
        assert!(send_message(&fine, 100).is_ok());
    }

    #[test]
    fn images_and_files_are_urls_or_attachment_references() {
        let base = json!({"sender_id": 1, "conversation_id": 2});
        for (kind, content) in [
            ("image", "https://cdn.example.com/a.png"),
            ("file", "http://files.example.com/report.pdf?v=2"),
            ("file", "attachment:2026/11/abc-123.pdf"),
        ] {
            let mut payload = base.clone();
            payload["message_type"] = json!(kind);
            payload["content"] = json!(content);
            assert!(send_message(&payload, 200).is_ok(), "{kind}: {content}");
        }
        for (kind, content) in [
            ("image", "a cat"),
            ("image", "javascript:alert(1)"),
            ("file", "file:///etc/passwd"),
            ("file", "attachment:"),
            ("file", "attachment:../../etc passwd"),
            ("image", "data:image/png;base64,AAAA"),
        ] {
            let mut payload = base.clone();
            payload["message_type"] = json!(kind);
            payload["content"] = json!(content);
            assert_eq!(
                send_message(&payload, 200),
                Err(format!(
                    "content of {} {kind} message must be an http(s) URL or attachment:<id>",
                    if kind == "image" { "an" } else { "a" }
                )),
                "{kind}: {content}"
            );
        }
    }

    #[test]
    fn non_objects_are_refused_as_such() {
        for payload in [json!("text"), json!(5), json!([1, 2]), json!(null), json!(true)] {
            assert_eq!(send_error(payload.clone()), "payload must be an object", "{payload}");
        }
    }

    #[test]
    fn unknown_message_types_are_refused() {
        let payload = json!({"sender_id": 1, "conversation_id": 2, "message_type": "video", "content": "x"});
        assert_eq!(send_error(payload), "message_type must be one of the following values: text, image, file");
    }

    #[test]
    fn typing_needs_an_id_and_a_real_boolean() {
        assert_eq!(typing(&json!({"conversationId": 3, "isTyping": true})), Ok((3, true)));
        assert_eq!(
            typing(&json!({"conversationId": 3, "isTyping": "true"})),
            Err("isTyping must be a boolean value".into())
        );
        assert_eq!(
            typing(&json!({"conversationId": "3", "isTyping": true})),
            Err("conversationId must be an integer number".into())
        );
        assert_eq!(conversation_id(&json!("3")), Err("conversationId must be an integer number".into()));
    }

    #[test]
    fn last_message_id_is_optional_and_non_negative() {
        assert_eq!(last_message_id(&json!({"conversationId": 1})), Ok(None));
        assert_eq!(last_message_id(&json!({"lastMessageId": 0})), Ok(Some(0)));
        assert_eq!(last_message_id(&json!({"lastMessageId": 42})), Ok(Some(42)));
        for bad in [json!(-1), json!("42"), json!(1.5)] {
            assert_eq!(
                last_message_id(&json!({"lastMessageId": bad})),
                Err("lastMessageId must be a non-negative integer".into())
            );
        }
    }

    #[test]
    fn claimed_user_must_be_the_socket_user_when_given() {
        assert!(claimed_user_matches(&json!({"conversationId": 1}), 4));
        assert!(claimed_user_matches(&json!({"userId": 4}), 4));
        assert!(!claimed_user_matches(&json!({"userId": 5}), 4));
        assert!(!claimed_user_matches(&json!({"userId": "4"}), 4));
    }

    #[test]
    fn handshake_user_ids_are_positive_decimal_integers() {
        assert_eq!(user_id_from_query(Some("userId=42&EIO=4&transport=websocket")), Some(42));
        for bad in [
            None,
            Some(""),
            Some("EIO=4"),
            Some("userId="),
            Some("userId=abc"),
            Some("userId=0"),
            Some("userId=-1"),
            Some("userId=1.5"),
            Some("userId=%2B1"),
            Some("userId=99999999999999999999"),
        ] {
            assert_eq!(user_id_from_query(bad), None, "{bad:?}");
        }
    }
}
