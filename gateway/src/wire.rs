//! The JSON shapes the clients see, built from the bus's protobuf messages, and the names of
//! the Socket.IO events that carry them: the only place the client-facing format is written.
//! The REST shapes' `ToSchema` derives (with examples) make the components of the OpenAPI
//! document (see `openapi`).

use std::collections::BTreeMap;

use chat_proto::{
    Conversation, MemberPositions, MessageEvent, MessageEventKind, ReceiptKind, ReceiptPosition, StoredMessage,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// The Socket.IO namespace of the chat API.
pub const NAMESPACE: &str = "/chat";

/// Events of the `/chat` namespace, by the spec's names.
pub mod event {
    // From clients.
    pub const SEND_MESSAGE: &str = "send-message";
    pub const JOIN_CONVERSATION: &str = "join-conversation";
    pub const LEAVE_CONVERSATION: &str = "leave-conversation";
    pub const TYPING: &str = "typing";
    pub const MARK_DELIVERED: &str = "mark-delivered";
    pub const MARK_READ: &str = "mark-read";
    pub const ADD_MEMBER: &str = "add-member";
    pub const REMOVE_MEMBER: &str = "remove-member";
    pub const LEAVE_GROUP: &str = "leave-group";
    pub const SET_ROLE: &str = "set-role";
    pub const EDIT_MESSAGE: &str = "edit-message";
    pub const DELETE_MESSAGE: &str = "delete-message";
    pub const REACT: &str = "react";
    // To clients.
    pub const RECEIVE_MESSAGE: &str = "receive-message";
    pub const MESSAGE_SENT: &str = "message-sent";
    pub const MESSAGE_ERROR: &str = "message-error";
    pub const USER_TYPING: &str = "user-typing";
    pub const USER_ONLINE: &str = "user:online";
    pub const USER_OFFLINE: &str = "user:offline";
    pub const JOINED_CONVERSATION: &str = "joined-conversation";
    pub const MESSAGE_DELIVERED: &str = "message-delivered";
    pub const MESSAGE_READ: &str = "message-read";
    pub const MEMBER_ADDED: &str = "member-added";
    pub const MEMBER_REMOVED: &str = "member-removed";
    pub const ROLE_CHANGED: &str = "role-changed";
    pub const MESSAGE_UPDATED: &str = "message-updated";
    pub const MESSAGE_DELETED: &str = "message-deleted";
    pub const REACTION_UPDATED: &str = "reaction-updated";
    pub const ERROR: &str = "error";
    /// An extension of the spec: the gateway is shutting down, reconnect.
    pub const SERVER_SHUTDOWN: &str = "server-shutdown";
}

/// `error`: a general error.
#[derive(Debug, Serialize)]
pub struct ErrorEvent {
    pub message: String,
}

/// `message-error`: a send failed.
#[derive(Debug, Serialize)]
pub struct MessageErrorEvent {
    pub error: String,
}

/// `joined-conversation`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinedEvent {
    pub conversation_id: i64,
    pub success: bool,
}

/// The acknowledgement of `join-conversation` and `leave-conversation` (an extension of the
/// spec): `conversationId` echoes what the client sent, whatever it was.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomAck {
    pub success: bool,
    pub conversation_id: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The acknowledgement of `mark-delivered` and `mark-read`: on success `messageId` is the
/// member's position after the call; on failure both ids echo what the client sent.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptAck {
    pub success: bool,
    pub conversation_id: Value,
    pub message_id: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The acknowledgement of `add-member`, `remove-member`, `leave-group` and `set-role`: on
/// success the member's role after the change (none when removed); on failure the ids echo
/// what the client sent.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberAck {
    pub success: bool,
    pub conversation_id: Value,
    pub user_id: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The acknowledgement of `edit-message` (with the edited message), `delete-message` (with
/// when) and `react` (with the message's counts after it); on failure the ids echo what the
/// client sent.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageChangeAck {
    pub success: bool,
    pub conversation_id: Value,
    pub message_id: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageJson>,
    #[serde(rename = "deleted_at", skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<BTreeMap<String, u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MessageChangeAck {
    /// The acknowledgement of a change the persister did (or, for a reaction, found done).
    pub fn done(event: &MessageEvent) -> Self {
        let mut ack = Self {
            success: true,
            conversation_id: event.conversation_id.into(),
            message_id: event.message_id.into(),
            ..Default::default()
        };
        match event.kind() {
            MessageEventKind::Edited => ack.message = event.message.clone().map(MessageJson::with_state),
            MessageEventKind::Deleted => ack.deleted_at = Some(iso_timestamp(event.at_ms)),
            MessageEventKind::Reaction => {
                ack.emoji = Some(event.emoji.clone());
                ack.on = Some(event.on);
                ack.counts = Some(sorted(&event.counts));
            }
        }
        ack
    }
}

/// `message-deleted`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageDeletedEvent {
    pub conversation_id: i64,
    pub message_id: i64,
    #[serde(rename = "deleted_at")]
    pub deleted_at: String,
}

/// `reaction-updated`: who added or took back which emoji, and the message's counts after it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionEvent {
    pub conversation_id: i64,
    pub message_id: i64,
    pub user_id: i64,
    pub emoji: String,
    pub on: bool,
    pub counts: BTreeMap<String, u32>,
}

/// A change of a message as the event that tells it: `message-updated` (the stored message),
/// `message-deleted` or `reaction-updated`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum MessageChangeJson {
    Updated(MessageJson),
    Deleted(MessageDeletedEvent),
    Reaction(ReactionEvent),
}

impl MessageChangeJson {
    /// The event's name and payload (`None`: an edit that lost its message, sent by nobody).
    pub fn of(change: &MessageEvent) -> Option<(&'static str, Self)> {
        let (conversation_id, message_id) = (change.conversation_id, change.message_id);
        match change.kind() {
            MessageEventKind::Edited => {
                let message = change.message.clone()?;
                Some((event::MESSAGE_UPDATED, Self::Updated(MessageJson::with_state(message))))
            }
            MessageEventKind::Deleted => Some((
                event::MESSAGE_DELETED,
                Self::Deleted(MessageDeletedEvent {
                    conversation_id,
                    message_id,
                    deleted_at: iso_timestamp(change.at_ms),
                }),
            )),
            MessageEventKind::Reaction => Some((
                event::REACTION_UPDATED,
                Self::Reaction(ReactionEvent {
                    conversation_id,
                    message_id,
                    user_id: change.user_id,
                    emoji: change.emoji.clone(),
                    on: change.on,
                    counts: sorted(&change.counts),
                }),
            )),
        }
    }
}

/// Reaction counts in a stable order.
fn sorted(counts: &std::collections::HashMap<String, u32>) -> BTreeMap<String, u32> {
    counts.iter().map(|(emoji, n)| (emoji.clone(), *n)).collect()
}

/// `member-added`, `member-removed` and `role-changed`: the group, the member, its role (for a
/// removal the one it had), and who made the change.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberEventJson {
    pub conversation_id: i64,
    pub user_id: i64,
    pub role: &'static str,
    pub by: i64,
}

impl MemberEventJson {
    /// The event's name and payload.
    pub fn of(member_event: &chat_proto::MemberEvent) -> (&'static str, Self) {
        let name = match member_event.kind() {
            chat_proto::MemberEventKind::Added => event::MEMBER_ADDED,
            chat_proto::MemberEventKind::Removed => event::MEMBER_REMOVED,
            chat_proto::MemberEventKind::RoleChanged => event::ROLE_CHANGED,
        };
        let payload = Self {
            conversation_id: member_event.conversation_id,
            user_id: member_event.user_id,
            role: member_event.role().as_str(),
            by: member_event.by,
        };
        (name, payload)
    }
}

/// `message-delivered`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveredEvent {
    pub conversation_id: i64,
    pub user_id: i64,
    pub message_id: i64,
    pub delivered_at: String,
}

/// `message-read`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadEvent {
    pub conversation_id: i64,
    pub user_id: i64,
    pub message_id: i64,
    pub read_at: String,
}

/// A member's position as the event that announces it: its name and its payload.
pub enum ReceiptEvent {
    Delivered(DeliveredEvent),
    Read(ReadEvent),
}

impl ReceiptEvent {
    pub fn name(&self) -> &'static str {
        match self {
            ReceiptEvent::Delivered(_) => event::MESSAGE_DELIVERED,
            ReceiptEvent::Read(_) => event::MESSAGE_READ,
        }
    }

    pub fn of(position: &ReceiptPosition) -> Self {
        let (conversation_id, user_id, message_id) = (position.conversation_id, position.user_id, position.message_id);
        let at = iso_timestamp(position.at_ms);
        match position.kind() {
            ReceiptKind::Read => ReceiptEvent::Read(ReadEvent { conversation_id, user_id, message_id, read_at: at }),
            ReceiptKind::Delivered => {
                ReceiptEvent::Delivered(DeliveredEvent { conversation_id, user_id, message_id, delivered_at: at })
            }
        }
    }

    /// The events that tell a member's current positions (none for a position not yet set),
    /// delivered first.
    pub fn current(conversation_id: i64, member: &MemberPositions) -> Vec<Self> {
        let position = |kind: ReceiptKind, message_id: i64, at_ms: i64| {
            (message_id > 0).then_some(ReceiptPosition {
                conversation_id,
                user_id: member.user_id,
                kind: kind as i32,
                message_id,
                at_ms,
            })
        };
        let delivered = position(ReceiptKind::Delivered, member.last_delivered_message_id, member.delivered_at_ms);
        let read = position(ReceiptKind::Read, member.last_read_message_id, member.read_at_ms);
        delivered.into_iter().chain(read).map(|position| Self::of(&position)).collect()
    }
}

impl Serialize for ReceiptEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ReceiptEvent::Delivered(event) => event.serialize(serializer),
            ReceiptEvent::Read(event) => event.serialize(serializer),
        }
    }
}

/// `user-typing`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypingEvent {
    pub conversation_id: i64,
    pub user_id: i64,
    pub is_typing: bool,
}

/// `user:online` and `user:offline`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEvent {
    pub user_id: i64,
}

/// `server-shutdown`.
#[derive(Debug, Serialize)]
pub struct ShutdownEvent {
    pub reconnect: bool,
}

/// A message as `message-sent`, `receive-message` and the history API show it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": 42, "sender_id": 1, "conversation_id": 7, "timestamp": "2026-11-25T19:51:58.530Z",
    "message_type": "text", "content": "Hello!", "conversation": {"id": 7, "sender_id": 1, "receiver_id": 2}
}))]
pub struct MessageJson {
    #[schema(minimum = 1)]
    pub id: i64,
    #[schema(minimum = 1)]
    pub sender_id: i64,
    #[schema(minimum = 1)]
    pub conversation_id: i64,
    /// ISO 8601 in UTC with milliseconds.
    #[schema(format = DateTime)]
    pub timestamp: String,
    #[schema(pattern = "^(text|image|file)$")]
    pub message_type: String,
    /// As sent (or last edited), not HTML-escaped: escape it when rendering. Null once the
    /// message is deleted.
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationRef>,
    // What happened to the message since it was sent: in the history, a replay and
    // `message-updated`. A new message (`message-sent`, `receive-message`) has none of these
    // fields, as in the spec.
    /// When it was last edited; null if never.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub edited_at: Option<Option<String>>,
    /// When it was deleted; null if it was not (a deleted message's `content` is null).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deleted_at: Option<Option<String>>,
    /// Reactions: emoji → how many users added it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reactions: Option<BTreeMap<String, u32>>,
    /// The requester's own emojis (the history and a replay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub my_reactions: Option<Vec<String>>,
}

/// The conversation attached to a message event: a direct conversation's pair, as the spec
/// has it, or a group's kind and name.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationRef {
    #[schema(minimum = 1)]
    pub id: i64,
    /// `group` (absent for a direct conversation, whose shape the spec fixes).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^group$")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub sender_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub receiver_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A conversation as the REST API shows it: a direct conversation has its two users
/// (`sender_id` opened it), a group its name and members.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": 7, "type": "direct", "sender_id": 1, "receiver_id": 2,
                          "created_at": "2026-11-25T19:51:58.530Z"}))]
pub struct ConversationJson {
    #[serde(flatten)]
    pub fields: ConversationFields,
    /// A group's members, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<GroupMemberJson>>,
}

/// What every conversation shows, also as an inbox entry (whose `members` say more).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationFields {
    #[schema(minimum = 1)]
    pub id: i64,
    /// `direct` or `group`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(direct|group)$")]
    pub kind: &'static str,
    /// A direct conversation's user who opened it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub sender_id: Option<i64>,
    /// A direct conversation's other user.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub receiver_id: Option<i64>,
    /// A group's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// ISO 8601 in UTC with milliseconds.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A member of a group.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"user_id": 1, "role": "owner", "joined_at": "2026-11-25T19:51:58.530Z"}))]
pub struct GroupMemberJson {
    #[schema(minimum = 1)]
    pub user_id: i64,
    /// `owner`, `moderator` or `member`.
    #[schema(pattern = "^(owner|moderator|member)$")]
    pub role: &'static str,
    #[schema(format = DateTime)]
    pub joined_at: String,
}

impl From<&chat_proto::GroupMember> for GroupMemberJson {
    fn from(member: &chat_proto::GroupMember) -> Self {
        Self { user_id: member.user_id, role: member.role().as_str(), joined_at: iso_timestamp(member.joined_at_ms) }
    }
}

/// The body of `POST /api/chats/groups`. (The handler reads the fields itself, to report every
/// problem in the API's words.)
#[derive(Debug, serde::Deserialize, ToSchema)]
#[schema(example = json!({"creator_id": 1, "name": "Team", "member_ids": [2, 3]}))]
pub struct CreateGroupJson {
    #[schema(minimum = 1)]
    pub creator_id: i64,
    /// 1 to 100 characters (surrounding white space is dropped).
    pub name: String,
    /// The other members (the creator may be listed too; duplicates count once).
    pub member_ids: Vec<i64>,
}

/// The body of `POST /api/chats/conversations`: two different users, in either order. (The
/// handler reads the fields itself, to report every problem in the API's words.)
#[derive(Debug, serde::Deserialize, ToSchema)]
#[schema(example = json!({"sender_id": 1, "receiver_id": 2}))]
pub struct OpenConversationJson {
    #[schema(minimum = 1)]
    pub sender_id: i64,
    #[schema(minimum = 1)]
    pub receiver_id: i64,
}

/// A page of a conversation's history, oldest first. `page` is there for page requests,
/// `after` or `before` for cursor requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePageJson {
    pub data: Vec<MessageJson>,
    /// The page size used (the request's, capped at 100).
    #[schema(minimum = 1, maximum = 100)]
    pub limit: u32,
    /// Messages in the whole conversation.
    pub total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub page: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub after: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub before: Option<i64>,
}

/// A page of a user's inbox: conversations, newest activity first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationListJson {
    pub data: Vec<InboxEntryJson>,
    /// Unread messages over all the user's conversations (not only this page).
    #[schema(minimum = 0)]
    pub total_unread: i64,
    /// The page size used (the request's, capped at 100).
    #[schema(minimum = 1, maximum = 100)]
    pub limit: u32,
    /// Pass as `before` for the next page; null on the last page.
    pub next_before: Option<String>,
}

/// One conversation of a user's inbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboxEntryJson {
    #[serde(flatten)]
    pub conversation: ConversationFields,
    /// The newest message's time, else the conversation's creation: the inbox order.
    #[schema(format = DateTime)]
    pub last_activity_at: String,
    /// The newest message, or null.
    pub last_message: Option<MessageJson>,
    /// Messages from others after the user's read position.
    #[schema(minimum = 0)]
    pub unread_count: i64,
    pub members: Vec<MemberJson>,
}

/// A member's read and delivered positions (null: none yet); in a group, also its role and
/// when it joined.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberJson {
    #[schema(minimum = 1)]
    pub user_id: i64,
    pub last_read_message_id: Option<i64>,
    pub last_delivered_message_id: Option<i64>,
    /// A group member's role.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(owner|moderator|member)$")]
    pub role: Option<&'static str>,
    /// When a group member joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub joined_at: Option<String>,
}

impl MemberJson {
    fn new(member: &MemberPositions, in_group: Option<&chat_proto::GroupMember>) -> Self {
        let set = |id: i64| (id > 0).then_some(id);
        Self {
            user_id: member.user_id,
            last_read_message_id: set(member.last_read_message_id),
            last_delivered_message_id: set(member.last_delivered_message_id),
            role: in_group.map(|m| m.role().as_str()),
            joined_at: in_group.map(|m| iso_timestamp(m.joined_at_ms)),
        }
    }
}

impl InboxEntryJson {
    /// `None` for an entry without its conversation (never sent by the persister).
    pub fn from_entry(entry: chat_proto::InboxEntry) -> Option<Self> {
        let conversation = entry.conversation?;
        let group_member = |user_id: i64| conversation.members.iter().find(|m| m.user_id == user_id);
        let members = entry.members.iter().map(|m| MemberJson::new(m, group_member(m.user_id))).collect();
        Some(Self {
            conversation: ConversationJson::from(conversation.without_members()).fields,
            last_activity_at: iso_timestamp(entry.last_activity_ms),
            last_message: entry.last_message.map(MessageJson::with_state),
            unread_count: entry.unread_count,
            members,
        })
    }
}

/// Every REST error: the HTTP status, its reason phrase, and what went wrong.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"statusCode": 404, "error": "Not Found", "message": "Conversation not found"}))]
pub struct ErrorJson {
    #[schema(minimum = 400, maximum = 599)]
    pub status_code: u16,
    pub error: String,
    pub message: ErrorMessage,
}

/// One reason, or every validation problem of the request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ErrorMessage {
    One(String),
    Problems(Vec<String>),
}

impl From<StoredMessage> for MessageJson {
    fn from(m: StoredMessage) -> Self {
        Self {
            id: m.id,
            sender_id: m.sender_id,
            conversation_id: m.conversation_id,
            timestamp: iso_timestamp(m.timestamp_ms),
            message_type: m.message_type,
            content: (m.deleted_at_ms == 0).then_some(m.content),
            edited_at: None,
            deleted_at: None,
            reactions: None,
            my_reactions: None,
            conversation: m.conversation.map(|c| {
                if c.is_group() {
                    ConversationRef {
                        id: c.id,
                        kind: Some("group"),
                        sender_id: None,
                        receiver_id: None,
                        name: Some(c.name),
                    }
                } else {
                    ConversationRef {
                        id: c.id,
                        kind: None,
                        sender_id: Some(c.sender_id),
                        receiver_id: Some(c.receiver_id),
                        name: None,
                    }
                }
            }),
        }
    }
}

impl MessageJson {
    /// The message with what happened to it since it was sent (edits, deletion, reactions).
    pub fn with_state(m: StoredMessage) -> Self {
        let edited_at = Some((m.edited_at_ms != 0).then(|| iso_timestamp(m.edited_at_ms)));
        let deleted_at = Some((m.deleted_at_ms != 0).then(|| iso_timestamp(m.deleted_at_ms)));
        let reactions = Some(sorted(&m.reactions));
        Self { edited_at, deleted_at, reactions, ..Self::from(m) }
    }

    /// As [`MessageJson::with_state`], with the requester's own emojis.
    pub fn for_viewer(m: StoredMessage) -> Self {
        let my_reactions = Some(m.my_reactions.clone());
        Self { my_reactions, ..Self::with_state(m) }
    }
}

impl From<Conversation> for ConversationJson {
    fn from(c: Conversation) -> Self {
        let created_at = iso_timestamp(c.created_at_ms);
        if c.is_group() {
            let members = c.members.iter().map(GroupMemberJson::from).collect();
            let fields = ConversationFields {
                id: c.id,
                kind: "group",
                sender_id: None,
                receiver_id: None,
                name: Some(c.name),
                created_at,
            };
            Self { fields, members: Some(members) }
        } else {
            let fields = ConversationFields {
                id: c.id,
                kind: "direct",
                sender_id: Some(c.sender_id),
                receiver_id: Some(c.receiver_id),
                name: None,
                created_at,
            };
            Self { fields, members: None }
        }
    }
}

/// Milliseconds since the epoch as JavaScript's `Date.toJSON()` writes them:
/// `2026-11-25T19:33:40.123Z`.
pub fn iso_timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_like_javascript_dates() {
        assert_eq!(iso_timestamp(1_764_099_220_123), "2025-11-25T19:33:40.123Z");
        assert_eq!(iso_timestamp(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn socket_events_have_the_spec_s_field_names() {
        fn json(event: &impl Serialize) -> Value {
            serde_json::to_value(event).expect("serializable")
        }
        assert_eq!(
            json(&TypingEvent { conversation_id: 1, user_id: 2, is_typing: true }),
            serde_json::json!({"conversationId": 1, "userId": 2, "isTyping": true})
        );
        assert_eq!(
            json(&JoinedEvent { conversation_id: 3, success: true }),
            serde_json::json!({"conversationId": 3, "success": true})
        );
        assert_eq!(
            json(&RoomAck { success: false, conversation_id: serde_json::json!("x"), error: Some("bad".into()) }),
            serde_json::json!({"success": false, "conversationId": "x", "error": "bad"})
        );
        assert_eq!(
            json(&RoomAck { success: true, conversation_id: serde_json::json!(3), error: None }),
            serde_json::json!({"success": true, "conversationId": 3})
        );
        assert_eq!(json(&PresenceEvent { user_id: 4 }), serde_json::json!({"userId": 4}));
        assert_eq!(json(&MessageErrorEvent { error: "e".into() }), serde_json::json!({"error": "e"}));
        assert_eq!(json(&ErrorEvent { message: "m".into() }), serde_json::json!({"message": "m"}));
    }

    #[test]
    fn message_events_carry_their_conversation() {
        let json = serde_json::to_value(MessageJson::from(StoredMessage {
            id: 5,
            sender_id: 1,
            conversation_id: 2,
            timestamp_ms: 0,
            message_type: "text".into(),
            content: "hi".into(),
            conversation: Some(Conversation { id: 2, sender_id: 1, receiver_id: 9, ..Default::default() }),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(json["conversation"], serde_json::json!({"id": 2, "sender_id": 1, "receiver_id": 9}));
        assert_eq!(json["timestamp"], "1970-01-01T00:00:00.000Z");
        assert!(json.get("edited_at").is_none() && json.get("reactions").is_none(), "the spec's shape: {json}");
    }

    #[test]
    fn a_message_s_state_shows_in_the_history_and_a_deleted_one_has_no_content() {
        let message = StoredMessage {
            id: 5,
            sender_id: 1,
            conversation_id: 2,
            message_type: "text".into(),
            content: "hi".into(),
            edited_at_ms: 1_000,
            reactions: [("👍".to_owned(), 2)].into(),
            my_reactions: vec!["👍".into()],
            ..Default::default()
        };
        let json = serde_json::to_value(MessageJson::for_viewer(message.clone())).unwrap();
        assert_eq!(json["content"], "hi");
        assert_eq!(json["edited_at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(json["deleted_at"], Value::Null);
        assert_eq!(json["reactions"], serde_json::json!({"👍": 2}));
        assert_eq!(json["my_reactions"], serde_json::json!(["👍"]));
        let deleted = StoredMessage { deleted_at_ms: 2_000, content: String::new(), ..message };
        let json = serde_json::to_value(MessageJson::with_state(deleted)).unwrap();
        assert_eq!(json["content"], Value::Null, "a tombstone");
        assert_eq!(json["deleted_at"], "1970-01-01T00:00:02.000Z");
        assert!(json.get("my_reactions").is_none(), "no viewer, no own reactions");
    }

    fn json(payload: &impl Serialize) -> Value {
        serde_json::to_value(payload).expect("serializes")
    }

    #[test]
    fn a_message_s_changes_are_told_by_their_own_events() {
        let reaction = MessageEvent {
            id: 3,
            conversation_id: 2,
            message_id: 5,
            kind: MessageEventKind::Reaction as i32,
            user_id: 7,
            emoji: "🎉".into(),
            on: true,
            counts: [("🎉".to_owned(), 1)].into(),
            ..Default::default()
        };
        let (name, payload) = MessageChangeJson::of(&reaction).expect("an event");
        assert_eq!(name, event::REACTION_UPDATED);
        assert_eq!(
            json(&payload),
            serde_json::json!({"conversationId": 2, "messageId": 5, "userId": 7, "emoji": "🎉", "on": true, "counts": {"🎉": 1}})
        );
        assert_eq!(
            json(&MessageChangeAck::done(&reaction)),
            serde_json::json!({"success": true, "conversationId": 2, "messageId": 5, "emoji": "🎉", "on": true, "counts": {"🎉": 1}})
        );
        let deleted = MessageEvent { kind: MessageEventKind::Deleted as i32, at_ms: 0, ..reaction };
        let (name, payload) = MessageChangeJson::of(&deleted).expect("an event");
        assert_eq!(name, event::MESSAGE_DELETED);
        assert_eq!(
            json(&payload),
            serde_json::json!({"conversationId": 2, "messageId": 5, "deleted_at": "1970-01-01T00:00:00.000Z"})
        );
        let lost = MessageEvent { kind: MessageEventKind::Edited as i32, message: None, ..deleted };
        assert!(MessageChangeJson::of(&lost).is_none(), "an edit without its message tells nothing");
    }

    #[test]
    fn a_group_shows_its_kind_name_and_members_and_a_message_of_it_no_pair() {
        let group = Conversation {
            id: 4,
            sender_id: 1,
            kind: chat_proto::ConversationKind::Group as i32,
            name: "Team".into(),
            members: vec![
                chat_proto::GroupMember { user_id: 1, role: chat_proto::MemberRole::Owner as i32, joined_at_ms: 0 },
                chat_proto::GroupMember { user_id: 3, role: chat_proto::MemberRole::Member as i32, joined_at_ms: 0 },
            ],
            ..Default::default()
        };
        let json = serde_json::to_value(ConversationJson::from(group.clone())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": 4, "type": "group", "name": "Team", "created_at": "1970-01-01T00:00:00.000Z",
                "members": [{"user_id": 1, "role": "owner", "joined_at": "1970-01-01T00:00:00.000Z"},
                            {"user_id": 3, "role": "member", "joined_at": "1970-01-01T00:00:00.000Z"}]})
        );
        let message = MessageJson::from(StoredMessage {
            id: 5,
            conversation_id: 4,
            conversation: Some(group.without_members()),
            ..Default::default()
        });
        let json = serde_json::to_value(message).unwrap();
        assert_eq!(json["conversation"], serde_json::json!({"id": 4, "type": "group", "name": "Team"}));
        let direct = serde_json::to_value(ConversationJson::from(Conversation {
            id: 2,
            sender_id: 1,
            receiver_id: 9,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(direct["type"], "direct");
        assert_eq!(direct.get("members"), None);
    }
}
