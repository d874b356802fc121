//! The wire contract of a message's life after it is sent: edits, deletes and reactions.
//!
//! They travel like sends: a gateway puts a [`ChangeMessage`] in the conversation's partition
//! (in a `SendBatch`), the persister applies it in the conversation's order, stores a
//! [`MessageEvent`] and publishes it on the room subject; the sender's gateway gets a
//! [`MessageChangeOutcome`].

use crate::{QueryError, StoredMessage};

/// What a [`ChangeMessage`] asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageChangeKind {
    /// `edit-message`: the sender, a text message not deleted.
    Edit = 0,
    /// `delete-message`: the sender, or a group's owner and moderators.
    Delete = 1,
    /// `react`: any member, a message not deleted.
    React = 2,
}

/// An `edit-message`, `delete-message` or `react` that passed the gateway's validation, on its
/// way to the persister in its conversation's partition.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChangeMessage {
    /// Unique per attempt; the outcome carries it back.
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(string, tag = "2")]
    pub gateway_id: String,
    #[prost(string, tag = "3")]
    pub socket_id: String,
    /// Who asks: the socket's user.
    #[prost(int64, tag = "4")]
    pub user_id: i64,
    #[prost(int64, tag = "5")]
    pub conversation_id: i64,
    #[prost(int64, tag = "6")]
    pub message_id: i64,
    #[prost(enumeration = "MessageChangeKind", tag = "7")]
    pub kind: i32,
    /// An edit's new content.
    #[prost(string, tag = "8")]
    pub content: String,
    /// A reaction's emoji, and whether the user adds it (or takes it back).
    #[prost(string, tag = "9")]
    pub emoji: String,
    #[prost(bool, tag = "10")]
    pub on: bool,
    /// The client's id for the change (a UUID), if it gave one: a retry with the same id
    /// yields what the first attempt stored.
    #[prost(string, tag = "11")]
    pub change_id: String,
    #[prost(map = "string, string", tag = "12")]
    pub trace: std::collections::HashMap<String, String>,
}

impl ChangeMessage {
    /// What the change is deduplicated by, per user: the client's id when it chose one, else
    /// this attempt's request id (so a command redelivered by the work queue is stored once).
    pub fn dedup_key(&self) -> String {
        if self.change_id.is_empty() {
            format!("r:{}", self.request_id)
        } else {
            format!("c:{}", self.change_id)
        }
    }
}

/// What happened to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageEventKind {
    Edited = 0,
    Deleted = 1,
    /// A user added or took back an emoji.
    Reaction = 2,
}

/// A stored change of a message, in its conversation's order: made after message
/// `after_message_id` and before the next (changes after the same message in `id` order).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MessageEvent {
    /// 0 for the answer to a reaction that changed nothing (it was not stored).
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub conversation_id: i64,
    #[prost(int64, tag = "3")]
    pub message_id: i64,
    #[prost(enumeration = "MessageEventKind", tag = "4")]
    pub kind: i32,
    /// Who made the change.
    #[prost(int64, tag = "5")]
    pub user_id: i64,
    /// `Edited`: the message after the edit.
    #[prost(message, optional, tag = "6")]
    pub message: Option<StoredMessage>,
    #[prost(int64, tag = "7")]
    pub at_ms: i64,
    /// `Reaction`: the emoji, whether it was added, and the message's counts after it.
    #[prost(string, tag = "8")]
    pub emoji: String,
    #[prost(bool, tag = "9")]
    pub on: bool,
    #[prost(map = "string, uint32", tag = "10")]
    pub counts: std::collections::HashMap<String, u32>,
    #[prost(int64, tag = "11")]
    pub after_message_id: i64,
}

/// Changes of one conversation's messages, in order: on its room subject (in a `RoomEvent`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MessageEvents {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<MessageEvent>,
}

/// The persister's answer to one [`ChangeMessage`], for the socket that sent it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MessageChangeOutcome {
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(string, tag = "2")]
    pub socket_id: String,
    #[prost(string, tag = "3")]
    pub gateway_id: String,
    #[prost(oneof = "message_change_outcome::Result", tags = "4, 5")]
    pub result: Option<message_change_outcome::Result>,
    #[prost(map = "string, string", tag = "6")]
    pub trace: std::collections::HashMap<String, String>,
    /// The command's own conversation and message, for the answer to a refusal.
    #[prost(int64, tag = "7")]
    pub conversation_id: i64,
    #[prost(int64, tag = "8")]
    pub message_id: i64,
}

pub mod message_change_outcome {
    // An outcome lives for one publication; boxing its common variant would cost an allocation
    // per command to save a few hundred bytes on the rare refusal.
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Result {
        /// Done: the change (stored, or for a reaction that changed nothing, the counts as
        /// they stand with `id` 0).
        #[prost(message, tag = "4")]
        Done(super::MessageEvent),
        /// Refused: `message` is one of [`super::message_refusal`]'s codes, or the reason
        /// storage gave up (`Internal`).
        #[prost(message, tag = "5")]
        Refused(super::QueryError),
    }
}

/// Why a [`ChangeMessage`] was refused: the `message` of its [`QueryError`], which the
/// gateway words for the client.
pub mod message_refusal {
    /// No such conversation.
    pub const NO_CONVERSATION: &str = "no_conversation";
    /// The user is not a member of the conversation.
    pub const NOT_MEMBER: &str = "not_member";
    /// The message is not a stored message of the conversation.
    pub const NO_MESSAGE: &str = "no_message";
    /// Only the sender edits.
    pub const NOT_SENDER: &str = "not_sender";
    /// Only text messages are edited.
    pub const NOT_TEXT: &str = "not_text";
    /// Only the sender, or a group's owner and moderators, delete.
    pub const NOT_ALLOWED: &str = "not_allowed";
    /// The message is deleted: nothing more may change it.
    pub const DELETED: &str = "deleted";
}

/// A conversation's message changes after message `after_message_id` (made after it) to
/// messages up to `up_to_message_id`, oldest first, at most [`MAX_MESSAGE_EVENTS`]: what a
/// replaying join and a room's resync send.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ListMessageEvents {
    #[prost(int64, tag = "1")]
    pub conversation_id: i64,
    #[prost(int64, tag = "2")]
    pub after_message_id: i64,
    #[prost(int64, tag = "3")]
    pub up_to_message_id: i64,
}

/// Most message changes one [`ListMessageEvents`] answers.
pub const MAX_MESSAGE_EVENTS: u64 = 1_000;

#[derive(Clone, PartialEq, prost::Message)]
pub struct MessageEventList {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<MessageEvent>,
    #[prost(message, optional, tag = "2")]
    pub error: Option<QueryError>,
}

/// Longest emoji, in bytes.
pub const MAX_EMOJI_BYTES: usize = 32;
