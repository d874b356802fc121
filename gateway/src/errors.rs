//! Why a client's request failed, as one type: what the client is told (its `Display`, with the
//! spec's exact texts) and what the metrics count (its [`Failure`] kind). Every `error` and
//! `message-error` the gateway sends is rendered from a [`ClientError`] (see `emit`), so the
//! texts live here and nowhere else.
//!
//! A send the persister refuses crosses the bus as a typed [`QueryError`] (the same vocabulary
//! as the answers to queries) and becomes a [`ClientError`] in [`ClientError::from_refusal`].

use chat_proto::{ErrorKind, QueryError};

use crate::auth::AuthError;
use crate::limits::{Action, ConnectionLimit};
use crate::metrics::Failure;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A payload that breaks the rules: every problem, as `validate` words them.
    #[error("{0}")]
    Invalid(String),
    /// An event the namespace does not know (its name cut to 64 characters).
    #[error("Unknown event: {0}")]
    UnknownEvent(String),
    #[error("{0}")]
    Unauthenticated(#[from] AuthError),
    #[error("{0}")]
    TooManyConnections(#[from] ConnectionLimit),
    /// A socket that reached its handler without going through admission (a bug).
    #[error("Connection refused")]
    ConnectionRefused,
    #[error("Unauthorized to send as another user")]
    SendAsAnotherUser,
    #[error("Unauthorized to join this conversation")]
    NotAllowedToJoin,
    #[error("Unauthorized to send to this conversation")]
    NotAllowedToSend,
    #[error("Conversation not found")]
    ConversationNotFound,
    #[error("Rate limit exceeded: too many {}, slow down", rate_limited_events(*.0))]
    RateLimited(Action),
    #[error("Too many messages waiting to be sent; slow down")]
    TooManyPendingSends,
    #[error("Too many conversations joined on this connection (at most {0}); leave one first")]
    TooManyRooms(usize),
    #[error("Join the conversation before typing in it")]
    TypingOutsideRoom,
    /// The conversation could not be read or its room not opened (bus or persister trouble).
    #[error("Failed to join conversation")]
    JoinFailed,
    /// The send could not be put on the bus, or its outcome came back empty.
    #[error("Failed to send message")]
    SendFailed,
    /// The persister gave up storing the send; the persister's words say for how long it tried.
    #[error("Failed to send message: {0}")]
    StorageUnavailable(String),
    #[error("Message not found in this conversation")]
    MessageNotFound,
    /// The receipt could not be put on the bus, or its outcome came back empty.
    #[error("Failed to update the receipt")]
    ReceiptFailed,
    /// The persister gave up storing the receipt; its words say for how long it tried.
    #[error("Failed to update the receipt: {0}")]
    ReceiptStorageUnavailable(String),
    /// A membership change the persister refused, by its reason.
    #[error("{}", member_refusal_text(.0))]
    MemberChangeRefused(&'static str),
    /// The membership change could not be put on the bus, or its outcome came back empty.
    #[error("Failed to change the group's members")]
    MemberChangeFailed,
    /// The persister gave up storing the change; its words say for how long it tried.
    #[error("Failed to change the group's members: {0}")]
    MemberStorageUnavailable(String),
    /// An edit, delete or reaction the persister refused, by its reason.
    #[error("{}", message_refusal_text(.0))]
    MessageChangeRefused(&'static str),
    /// The edit, delete or reaction could not be put on the bus, or its outcome came back empty.
    #[error("Failed to change the message")]
    MessageChangeFailed,
    /// The persister gave up storing the change; its words say for how long it tried.
    #[error("Failed to change the message: {0}")]
    MessageStorageUnavailable(String),
    #[error(
        "Could not replay missed messages; fetch them with GET /api/chats/conversations/{conversation_id}/messages?after={after}"
    )]
    ReplayFailed { conversation_id: i64, after: i64 },
    #[error(
        "Too many missed messages to replay; fetch the rest with GET /api/chats/conversations/{conversation_id}/messages?after={after}"
    )]
    ReplayTruncated { conversation_id: i64, after: i64 },
}

/// The client's words for a [`chat_proto::member_refusal`] code.
fn member_refusal_text(code: &str) -> &'static str {
    use chat_proto::member_refusal as why;
    match code {
        why::NO_CONVERSATION => "Conversation not found",
        why::NOT_GROUP => "This conversation is not a group",
        why::NOT_MEMBER => "Unauthorized to join this conversation",
        why::NOT_ALLOWED => "Only the group's owner and moderators can change its members",
        why::OWNER_ONLY => "Only the group's owner can grant, take or remove the moderator role",
        why::ALREADY_MEMBER => "The user is already a member of this group",
        why::NO_SUCH_MEMBER => "The user is not a member of this group",
        why::OWNER_STAYS => "The group's owner cannot be removed or given another role; the owner may leave",
        why::GROUP_FULL => "The group has the most members it may have",
        _ => "The group's members could not be changed",
    }
}

/// The client's words for a [`chat_proto::message_refusal`] code.
fn message_refusal_text(code: &str) -> &'static str {
    use chat_proto::message_refusal as why;
    match code {
        why::NO_CONVERSATION => "Conversation not found",
        why::NOT_MEMBER => "Unauthorized to join this conversation",
        why::NO_MESSAGE => "Message not found in this conversation",
        why::NOT_SENDER => "Only the sender can edit this message",
        why::NOT_TEXT => "Only text messages can be edited",
        why::NOT_ALLOWED => "Only the sender or the group's owner and moderators can delete this message",
        why::DELETED => "The message has been deleted",
        _ => "The message could not be changed",
    }
}

fn rate_limited_events(action: Action) -> &'static str {
    match action {
        Action::Send => "messages",
        Action::Join => "joins",
        Action::Typing => "typing events",
    }
}

impl ClientError {
    /// The kind the error metric counts it as.
    pub fn kind(&self) -> Failure {
        match self {
            ClientError::Invalid(_)
            | ClientError::UnknownEvent(_)
            | ClientError::ConnectionRefused
            | ClientError::TypingOutsideRoom => Failure::Validation,
            ClientError::Unauthenticated(_)
            | ClientError::SendAsAnotherUser
            | ClientError::NotAllowedToJoin
            | ClientError::NotAllowedToSend => Failure::Unauthorized,
            ClientError::ConversationNotFound | ClientError::MessageNotFound => Failure::NotFound,
            ClientError::RateLimited(_) => Failure::RateLimited,
            ClientError::TooManyConnections(_) | ClientError::TooManyPendingSends | ClientError::TooManyRooms(_) => {
                Failure::Limit
            }
            ClientError::MemberChangeRefused(code) => match *code {
                chat_proto::member_refusal::NO_CONVERSATION => Failure::NotFound,
                chat_proto::member_refusal::NOT_GROUP
                | chat_proto::member_refusal::ALREADY_MEMBER
                | chat_proto::member_refusal::NO_SUCH_MEMBER => Failure::Validation,
                chat_proto::member_refusal::GROUP_FULL => Failure::Limit,
                _ => Failure::Unauthorized,
            },
            ClientError::MessageChangeRefused(code) => match *code {
                chat_proto::message_refusal::NO_CONVERSATION | chat_proto::message_refusal::NO_MESSAGE => {
                    Failure::NotFound
                }
                chat_proto::message_refusal::NOT_TEXT | chat_proto::message_refusal::DELETED => Failure::Validation,
                _ => Failure::Unauthorized,
            },
            ClientError::SendFailed
            | ClientError::ReceiptFailed
            | ClientError::MemberChangeFailed
            | ClientError::MessageChangeFailed => Failure::Bus,
            ClientError::MessageStorageUnavailable(_)
            | ClientError::MemberStorageUnavailable(_)
            | ClientError::JoinFailed
            | ClientError::StorageUnavailable(_)
            | ClientError::ReceiptStorageUnavailable(_)
            | ClientError::ReplayFailed { .. }
            | ClientError::ReplayTruncated { .. } => Failure::Storage,
        }
    }

    /// A send the persister refused.
    pub fn from_refusal(refusal: &QueryError) -> Self {
        match refusal.kind() {
            ErrorKind::NotFound => ClientError::ConversationNotFound,
            ErrorKind::Forbidden => ClientError::NotAllowedToSend,
            ErrorKind::Invalid => ClientError::Invalid(refusal.message.clone()),
            ErrorKind::Internal => ClientError::StorageUnavailable(refusal.message.clone()),
        }
    }

    /// A receipt the persister refused: non-members as for joins.
    pub fn from_receipt_refusal(refusal: &QueryError) -> Self {
        match refusal.kind() {
            ErrorKind::NotFound if refusal.message == chat_proto::UNKNOWN_MESSAGE => ClientError::MessageNotFound,
            ErrorKind::NotFound => ClientError::ConversationNotFound,
            ErrorKind::Forbidden => ClientError::NotAllowedToJoin,
            ErrorKind::Invalid => ClientError::Invalid(refusal.message.clone()),
            ErrorKind::Internal => ClientError::ReceiptStorageUnavailable(refusal.message.clone()),
        }
    }

    /// A membership change the persister refused.
    pub fn from_member_refusal(refusal: &QueryError) -> Self {
        use chat_proto::member_refusal as why;
        if refusal.kind() == ErrorKind::Internal {
            return ClientError::MemberStorageUnavailable(refusal.message.clone());
        }
        let known = [
            why::NO_CONVERSATION,
            why::NOT_GROUP,
            why::NOT_MEMBER,
            why::NOT_ALLOWED,
            why::OWNER_ONLY,
            why::ALREADY_MEMBER,
            why::NO_SUCH_MEMBER,
            why::OWNER_STAYS,
            why::GROUP_FULL,
        ];
        match known.into_iter().find(|code| *code == refusal.message) {
            Some(code) => ClientError::MemberChangeRefused(code),
            None => ClientError::MemberChangeFailed,
        }
    }

    /// An edit, delete or reaction the persister refused.
    pub fn from_message_refusal(refusal: &QueryError) -> Self {
        use chat_proto::message_refusal as why;
        if refusal.kind() == ErrorKind::Internal {
            return ClientError::MessageStorageUnavailable(refusal.message.clone());
        }
        let known = [
            why::NO_CONVERSATION,
            why::NOT_MEMBER,
            why::NO_MESSAGE,
            why::NOT_SENDER,
            why::NOT_TEXT,
            why::NOT_ALLOWED,
            why::DELETED,
        ];
        match known.into_iter().find(|code| *code == refusal.message) {
            Some(code) => ClientError::MessageChangeRefused(code),
            None => ClientError::MessageChangeFailed,
        }
    }

    /// A refusal worded by a persister of an earlier version, which sent the client's text
    /// itself (only met during a rolling upgrade).
    pub fn from_refusal_text(text: &str) -> Self {
        match text {
            "Conversation not found" => ClientError::ConversationNotFound,
            "Unauthorized to send to this conversation" => ClientError::NotAllowedToSend,
            other => match other.strip_prefix("Failed to send message: ") {
                Some(reason) => ClientError::StorageUnavailable(reason.to_owned()),
                None => ClientError::Invalid(other.to_owned()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts the spec and the e2e suite expect, word for word.
    #[test]
    fn texts_are_the_spec_s() {
        let cases = [
            (ClientError::ConversationNotFound, "Conversation not found"),
            (ClientError::NotAllowedToJoin, "Unauthorized to join this conversation"),
            (ClientError::NotAllowedToSend, "Unauthorized to send to this conversation"),
            (ClientError::SendAsAnotherUser, "Unauthorized to send as another user"),
            (ClientError::RateLimited(Action::Send), "Rate limit exceeded: too many messages, slow down"),
            (ClientError::RateLimited(Action::Join), "Rate limit exceeded: too many joins, slow down"),
            (ClientError::RateLimited(Action::Typing), "Rate limit exceeded: too many typing events, slow down"),
            (
                ClientError::TooManyRooms(3),
                "Too many conversations joined on this connection (at most 3); leave one first",
            ),
            (ClientError::StorageUnavailable("storage unavailable for 30s".into()), "Failed to send message: storage unavailable for 30s"),
            (ClientError::UnknownEvent("foo".into()), "Unknown event: foo"),
            (
                ClientError::from_member_refusal(&QueryError::new(ErrorKind::Forbidden, "not_allowed")),
                "Only the group's owner and moderators can change its members",
            ),
            (
                ClientError::from_member_refusal(&QueryError::new(ErrorKind::Forbidden, "not_member")),
                "Unauthorized to join this conversation",
            ),
            (
                ClientError::ReplayTruncated { conversation_id: 7, after: 42 },
                "Too many missed messages to replay; fetch the rest with GET /api/chats/conversations/7/messages?after=42",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn each_error_counts_as_its_kind() {
        assert_eq!(ClientError::RateLimited(Action::Typing).kind(), Failure::RateLimited);
        assert_eq!(ClientError::Unauthenticated(AuthError::TokenRequired).kind(), Failure::Unauthorized);
        assert_eq!(ClientError::ConversationNotFound.kind(), Failure::NotFound);
        assert_eq!(ClientError::TooManyPendingSends.kind(), Failure::Limit);
        assert_eq!(ClientError::StorageUnavailable(String::new()).kind(), Failure::Storage);
        assert_eq!(ClientError::SendFailed.kind(), Failure::Bus);
        assert_eq!(ClientError::Invalid("content should not be empty".into()).kind(), Failure::Validation);
    }

    #[test]
    fn refusals_read_typed_and_as_an_earlier_persister_worded_them() {
        let typed = |kind, message: &str| ClientError::from_refusal(&QueryError::new(kind, message));
        assert_eq!(typed(ErrorKind::NotFound, "whatever"), ClientError::ConversationNotFound);
        assert_eq!(typed(ErrorKind::Forbidden, ""), ClientError::NotAllowedToSend);
        assert_eq!(
            typed(ErrorKind::Internal, "storage unavailable for 30s").to_string(),
            "Failed to send message: storage unavailable for 30s"
        );
        for text in [
            "Conversation not found",
            "Unauthorized to send to this conversation",
            "Failed to send message: storage unavailable for 30s",
        ] {
            assert_eq!(ClientError::from_refusal_text(text).to_string(), text, "passes through unchanged");
        }
        assert_eq!(ClientError::from_refusal_text("Conversation not found").kind(), Failure::NotFound);
    }
}
