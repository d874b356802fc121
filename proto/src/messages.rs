//! Protobuf messages exchanged between gateway, persister and presence.
//!
//! Timestamps are milliseconds since the Unix epoch (UTC). Ids are the database's `i64` ids.

/// A conversation: between two users (`Direct`; `sender_id` created it with `receiver_id`), or
/// a group (`Group`; `sender_id` created it, `receiver_id` is 0, `members` lists who is in it).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Conversation {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub sender_id: i64,
    #[prost(int64, tag = "3")]
    pub receiver_id: i64,
    #[prost(int64, tag = "4")]
    pub created_at_ms: i64,
    /// A [`ConversationKind`]; persisters before groups leave it 0, `Direct`.
    #[prost(enumeration = "ConversationKind", tag = "5")]
    pub kind: i32,
    /// A group's name (empty for a direct conversation).
    #[prost(string, tag = "6")]
    pub name: String,
    /// A group's members, oldest first (empty for a direct conversation, and on a message's
    /// own copy of its conversation, which does not need them).
    #[prost(message, repeated, tag = "7")]
    pub members: Vec<GroupMember>,
}

/// Whether a conversation is between two users or a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ConversationKind {
    Direct = 0,
    Group = 1,
}

/// What a group member may do: owners and moderators manage members, only the owner grants
/// or takes `Moderator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MemberRole {
    Member = 0,
    Moderator = 1,
    Owner = 2,
}

impl MemberRole {
    /// The name clients see and send.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Member => "member",
            MemberRole::Moderator => "moderator",
            MemberRole::Owner => "owner",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [MemberRole::Member, MemberRole::Moderator, MemberRole::Owner].into_iter().find(|r| r.as_str() == name)
    }
}

/// One member of a group.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GroupMember {
    #[prost(int64, tag = "1")]
    pub user_id: i64,
    #[prost(enumeration = "MemberRole", tag = "2")]
    pub role: i32,
    #[prost(int64, tag = "3")]
    pub joined_at_ms: i64,
}

impl Conversation {
    pub fn is_group(&self) -> bool {
        self.kind() == ConversationKind::Group
    }

    pub fn has_participant(&self, user_id: i64) -> bool {
        if self.is_group() {
            self.members.iter().any(|m| m.user_id == user_id)
        } else {
            self.sender_id == user_id || self.receiver_id == user_id
        }
    }

    /// The conversation without its member list: what a message carries along.
    pub fn without_members(&self) -> Self {
        Self { members: Vec::new(), ..self.clone() }
    }
}

/// A `send-message` that passed the gateway's validation, on its way to the persister.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SendMessage {
    /// Unique per send attempt; the outcome carries it back.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// The gateway whose socket sent it: the outcome goes to that gateway's subject.
    #[prost(string, tag = "2")]
    pub gateway_id: String,
    #[prost(string, tag = "3")]
    pub socket_id: String,
    #[prost(int64, tag = "4")]
    pub sender_id: i64,
    #[prost(int64, tag = "5")]
    pub conversation_id: i64,
    #[prost(string, tag = "6")]
    pub message_type: String,
    #[prost(string, tag = "7")]
    pub content: String,
    /// The client's own id for this send (a UUID), if it gave one: a retry with the same id,
    /// through any gateway, yields the message stored the first time.
    #[prost(string, tag = "8")]
    pub client_msg_id: String,
    /// Trace context (W3C `traceparent`/`tracestate`) of the gateway's `enqueue` span.
    #[prost(map = "string, string", tag = "9")]
    pub trace: std::collections::HashMap<String, String>,
}

/// The send commands one gateway had waiting for one partition, in the order its sockets sent
/// them: one work-queue message carries them all (a group commit), so the queue's cost is paid
/// per batch rather than per message when the load is high.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SendBatch {
    /// Tag 16 is no tag of [`SendMessage`]: a lone `SendMessage`, as gateways published before
    /// batching, reads as a batch without commands (see [`SendBatch::from_payload`]).
    #[prost(message, repeated, tag = "16")]
    pub commands: Vec<SendMessage>,
    /// Receipts of the same gateway for the same partition: they travel, are stored and are
    /// answered like sends, in the same batches.
    #[prost(message, repeated, tag = "17")]
    pub receipts: Vec<MarkReceipt>,
    /// Changes to groups' members of the same gateway for the same partition: ordered with
    /// the groups' messages, stored after the batch's messages and receipts.
    #[prost(message, repeated, tag = "18")]
    pub member_changes: Vec<ChangeMember>,
    /// Edits, deletes and reactions of the same gateway for the same partition: ordered with
    /// the conversations' messages, stored after everything else of the batch.
    #[prost(message, repeated, tag = "19")]
    pub message_changes: Vec<crate::ChangeMessage>,
}

impl SendBatch {
    /// Reads a work-queue payload: a batch, or a lone command of an older gateway (during a
    /// rolling upgrade).
    pub fn from_payload(payload: &[u8]) -> Result<Self, crate::DecodeError> {
        let batch: SendBatch = crate::decode(payload)?;
        if !batch.commands.is_empty()
            || !batch.receipts.is_empty()
            || !batch.member_changes.is_empty()
            || !batch.message_changes.is_empty()
        {
            return Ok(batch);
        }
        let lone: SendMessage = crate::decode(payload)?;
        let commands = if lone.request_id.is_empty() { Vec::new() } else { vec![lone] };
        Ok(SendBatch { commands, ..Default::default() })
    }
}

impl SendMessage {
    /// What the send is deduplicated by: the client's id when it chose one, else this
    /// attempt's request id (so a command redelivered by the work queue is stored once).
    pub fn dedup_key(&self) -> String {
        if self.client_msg_id.is_empty() {
            format!("r:{}", self.request_id)
        } else {
            format!("c:{}", self.client_msg_id)
        }
    }
}

/// Which of a member's two positions in a conversation a receipt moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ReceiptKind {
    Delivered = 0,
    /// Reading implies delivered: it moves both positions.
    Read = 1,
}

/// A `mark-delivered` or `mark-read` that passed the gateway's validation, on its way to the
/// persister in its conversation's partition (so a conversation's receipts and messages are
/// stored in one order).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MarkReceipt {
    /// Unique per attempt; the outcome carries it back.
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(string, tag = "2")]
    pub gateway_id: String,
    #[prost(string, tag = "3")]
    pub socket_id: String,
    #[prost(int64, tag = "4")]
    pub user_id: i64,
    #[prost(int64, tag = "5")]
    pub conversation_id: i64,
    #[prost(int64, tag = "6")]
    pub message_id: i64,
    #[prost(enumeration = "ReceiptKind", tag = "7")]
    pub kind: i32,
    /// Trace context (W3C `traceparent`/`tracestate`) of the gateway's `enqueue` span.
    #[prost(map = "string, string", tag = "8")]
    pub trace: std::collections::HashMap<String, String>,
}

/// What a [`ChangeMember`] asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MemberChangeKind {
    /// `add-member`: owners and moderators; only the owner adds a moderator.
    Add = 0,
    /// `remove-member`: owners and moderators; only the owner removes a moderator; nobody
    /// removes the owner.
    Remove = 1,
    /// `leave-group`: any member; an owner leaving hands ownership to the oldest moderator,
    /// else the oldest member.
    Leave = 2,
    /// `set-role`: the owner only, to `member` or `moderator`.
    SetRole = 3,
}

/// An `add-member`, `remove-member`, `leave-group` or `set-role` that passed the gateway's
/// validation, on its way to the persister in the group's partition (so that membership
/// changes are ordered with the group's messages).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChangeMember {
    /// Unique per attempt; the outcome carries it back, and a redelivered command finds the
    /// events it stored the first time by it.
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(string, tag = "2")]
    pub gateway_id: String,
    #[prost(string, tag = "3")]
    pub socket_id: String,
    /// Who asks: the socket's user.
    #[prost(int64, tag = "4")]
    pub actor_id: i64,
    #[prost(int64, tag = "5")]
    pub conversation_id: i64,
    #[prost(enumeration = "MemberChangeKind", tag = "6")]
    pub kind: i32,
    /// The member added, removed or given a role (the actor, for `Leave`).
    #[prost(int64, tag = "7")]
    pub user_id: i64,
    /// The role given (`Add`, `SetRole`).
    #[prost(enumeration = "MemberRole", tag = "8")]
    pub role: i32,
    /// The gateway's `--max-group-members`: an `Add` past it is refused.
    #[prost(uint32, tag = "9")]
    pub max_members: u32,
    #[prost(map = "string, string", tag = "10")]
    pub trace: std::collections::HashMap<String, String>,
}

/// What changed in a group's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MemberEventKind {
    Added = 0,
    /// Removed by a moderator or the owner, or left (then `by` is the member).
    Removed = 1,
    RoleChanged = 2,
}

/// A stored change of a group's membership, in the group's order: it happened after message
/// `after_message_id` and before the next (events after the same message in `id` order).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MemberEvent {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub conversation_id: i64,
    #[prost(enumeration = "MemberEventKind", tag = "3")]
    pub kind: i32,
    #[prost(int64, tag = "4")]
    pub user_id: i64,
    /// The member's role after the change (for `Removed`, the role it had).
    #[prost(enumeration = "MemberRole", tag = "5")]
    pub role: i32,
    /// Who made the change.
    #[prost(int64, tag = "6")]
    pub by: i64,
    #[prost(int64, tag = "7")]
    pub after_message_id: i64,
    #[prost(int64, tag = "8")]
    pub at_ms: i64,
}

/// Membership changes of one group, in order: on its room subject (in a [`RoomEvent`]), on
/// each member's subject (in a [`UserEvent`]), and in a [`MemberOutcome`].
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MemberEvents {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<MemberEvent>,
}

/// The persister's answer to one [`ChangeMember`], for the socket that sent it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberOutcome {
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(string, tag = "2")]
    pub socket_id: String,
    #[prost(string, tag = "3")]
    pub gateway_id: String,
    #[prost(oneof = "member_outcome::Result", tags = "4, 5")]
    pub result: Option<member_outcome::Result>,
    #[prost(map = "string, string", tag = "6")]
    pub trace: std::collections::HashMap<String, String>,
    /// The command's own group and member, for the answer.
    #[prost(int64, tag = "7")]
    pub conversation_id: i64,
    #[prost(int64, tag = "8")]
    pub user_id: i64,
    #[prost(enumeration = "MemberChangeKind", tag = "9")]
    pub kind: i32,
    /// The role the command gave (`Add`, `SetRole`).
    #[prost(enumeration = "MemberRole", tag = "10")]
    pub role: i32,
}

pub mod member_outcome {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Result {
        /// Done: the events it stored (none when it changed nothing, as a role set to the
        /// member's own).
        #[prost(message, tag = "4")]
        Done(super::MemberEvents),
        /// Refused: `message` is one of [`super::member_refusal`]'s codes, or the reason
        /// storage gave up (`Internal`).
        #[prost(message, tag = "5")]
        Refused(super::QueryError),
    }
}

/// Why a [`ChangeMember`] was refused: the `message` of its [`QueryError`], which the gateway
/// words for the client.
pub mod member_refusal {
    /// No such conversation.
    pub const NO_CONVERSATION: &str = "no_conversation";
    /// The conversation is a direct one.
    pub const NOT_GROUP: &str = "not_group";
    /// The actor is not a member.
    pub const NOT_MEMBER: &str = "not_member";
    /// Only the owner and moderators change members.
    pub const NOT_ALLOWED: &str = "not_allowed";
    /// Only the owner grants, takes or removes `moderator`, or changes roles.
    pub const OWNER_ONLY: &str = "owner_only";
    /// The user to add is a member already.
    pub const ALREADY_MEMBER: &str = "already_member";
    /// The user to remove or give a role is not a member.
    pub const NO_SUCH_MEMBER: &str = "no_such_member";
    /// The owner is not removed, and its role changes only when it leaves.
    pub const OWNER_STAYS: &str = "owner_stays";
    /// The group has `max_members` members already.
    pub const GROUP_FULL: &str = "group_full";
}

/// Where a member of a conversation stands: the newest message it has had delivered, or
/// read, and since when. Positions only move forward.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ReceiptPosition {
    #[prost(int64, tag = "1")]
    pub conversation_id: i64,
    #[prost(int64, tag = "2")]
    pub user_id: i64,
    #[prost(enumeration = "ReceiptKind", tag = "3")]
    pub kind: i32,
    #[prost(int64, tag = "4")]
    pub message_id: i64,
    #[prost(int64, tag = "5")]
    pub at_ms: i64,
}

/// Positions that moved, in the order they were stored: on a conversation's room subject (in
/// a [`RoomEvent`]) and on the subject of the user who moved them (in a [`UserEvent`]).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ReceiptPositions {
    #[prost(message, repeated, tag = "1")]
    pub positions: Vec<ReceiptPosition>,
}

/// The persister's answer to one [`MarkReceipt`], for the socket that sent it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReceiptOutcome {
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(string, tag = "2")]
    pub socket_id: String,
    #[prost(string, tag = "3")]
    pub gateway_id: String,
    #[prost(oneof = "receipt_outcome::Result", tags = "4, 5")]
    pub result: Option<receipt_outcome::Result>,
    /// Whether this receipt moved the position (and so was announced).
    #[prost(bool, tag = "6")]
    pub moved: bool,
    #[prost(map = "string, string", tag = "7")]
    pub trace: std::collections::HashMap<String, String>,
    /// The receipt's own conversation and message, for the answer to a refusal.
    #[prost(int64, tag = "8")]
    pub conversation_id: i64,
    #[prost(int64, tag = "9")]
    pub message_id: i64,
}

pub mod receipt_outcome {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Result {
        /// The member's position after the receipt (its own, or a newer one it already had).
        #[prost(message, tag = "4")]
        Position(super::ReceiptPosition),
        /// `NotFound` with message "message": the message is not a stored message of the
        /// conversation; `NotFound` otherwise: no such conversation; `Forbidden`: not a
        /// member; `Internal`: storage gave up.
        #[prost(message, tag = "5")]
        Refused(super::QueryError),
    }
}

/// The reason text of a receipt refused because its message is not one of the conversation's.
pub const UNKNOWN_MESSAGE: &str = "message";

/// A message as stored: what `message-sent` and `receive-message` carry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredMessage {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub sender_id: i64,
    #[prost(int64, tag = "3")]
    pub conversation_id: i64,
    #[prost(int64, tag = "4")]
    pub timestamp_ms: i64,
    #[prost(string, tag = "5")]
    pub message_type: String,
    #[prost(string, tag = "6")]
    pub content: String,
    #[prost(message, optional, tag = "7")]
    pub conversation: Option<Conversation>,
    /// When it was last edited, or deleted (0: never). A deleted message's content is empty.
    #[prost(int64, tag = "8")]
    pub edited_at_ms: i64,
    #[prost(int64, tag = "9")]
    pub deleted_at_ms: i64,
    /// Its reactions, `emoji → count` (read with the history; empty on a new message).
    #[prost(map = "string, uint32", tag = "10")]
    pub reactions: std::collections::HashMap<String, u32>,
    /// The emojis of the viewer a history page was read for (`ListMessages::viewer_id`).
    #[prost(string, repeated, tag = "11")]
    pub my_reactions: Vec<String>,
}

/// The persister's answer to one [`SendMessage`], for the socket that sent it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SendOutcome {
    #[prost(string, tag = "1")]
    pub request_id: String,
    #[prost(string, tag = "2")]
    pub socket_id: String,
    #[prost(oneof = "send_outcome::Result", tags = "3, 4, 7")]
    pub result: Option<send_outcome::Result>,
    /// The gateway of the socket: the only one that acts on the outcome.
    #[prost(string, tag = "5")]
    pub gateway_id: String,
    /// Trace context (W3C `traceparent`/`tracestate`) of the outcome's publication.
    #[prost(map = "string, string", tag = "6")]
    pub trace: std::collections::HashMap<String, String>,
}

pub mod send_outcome {
    // An outcome lives for one publication; boxing its common variant would cost an allocation
    // per command to save a few hundred bytes on the rare refusal.
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Result {
        /// Stored: the sender gets `message-sent`.
        #[prost(message, tag = "3")]
        Stored(super::StoredMessage),
        /// Refused, as persisters before typed refusals worded it for the client; read only
        /// for mixed-version clusters during a rolling upgrade.
        #[prost(string, tag = "4")]
        Error(String),
        /// Refused: the sender gets `message-error`, worded by its gateway from the kind
        /// (`NotFound`: no such conversation, `Forbidden`: not a participant, `Internal`:
        /// storage gave up, with the persister's reason in `message`).
        #[prost(message, tag = "7")]
        Refused(super::QueryError),
    }
}

/// What a persister batch confirmed, sorted by who needs it: the stored messages of one
/// conversation (on the conversation's room subject, inside a [`RoomEvent`]), or the outcomes
/// of one gateway's sends (on the gateway's subject, inside a [`GatewayEvent`]). Several of
/// these may carry one batch's share (each stays well under the bus's largest payload).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Delivery {
    /// In the order they were stored; a conversation's in id order.
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<DeliveredMessage>,
    #[prost(message, repeated, tag = "2")]
    pub outcomes: Vec<SendOutcome>,
    /// On a gateway's subject: the outcomes of its receipts.
    #[prost(message, repeated, tag = "3")]
    pub receipt_outcomes: Vec<ReceiptOutcome>,
    /// On a gateway's subject: the outcomes of its membership changes.
    #[prost(message, repeated, tag = "4")]
    pub member_outcomes: Vec<MemberOutcome>,
    /// On a gateway's subject: the outcomes of its edits, deletes and reactions.
    #[prost(message, repeated, tag = "5")]
    pub message_outcomes: Vec<crate::MessageChangeOutcome>,
}

/// A stored message on its way to the conversation's rooms.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeliveredMessage {
    #[prost(message, optional, tag = "1")]
    pub message: Option<StoredMessage>,
    /// Trace context (W3C `traceparent`/`tracestate`) of the message's publication.
    #[prost(map = "string, string", tag = "2")]
    pub trace: std::collections::HashMap<String, String>,
}

/// A typing indicator, relayed to the other members of a conversation room.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Typing {
    #[prost(int64, tag = "1")]
    pub conversation_id: i64,
    #[prost(int64, tag = "2")]
    pub user_id: i64,
    #[prost(bool, tag = "3")]
    pub is_typing: bool,
    /// The gateway that already delivered it to its own sockets.
    #[prost(string, tag = "4")]
    pub origin_gateway_id: String,
}

/// What travels on a conversation's room subject, heard by the gateways that have a member of
/// the conversation: its stored messages, or a typing indicator.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RoomEvent {
    #[prost(oneof = "room_event::Event", tags = "1, 2, 3, 4, 5")]
    pub event: Option<room_event::Event>,
}

pub mod room_event {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Event {
        /// Stored messages of the conversation, in id order (no outcomes).
        #[prost(message, tag = "1")]
        Messages(super::Delivery),
        #[prost(message, tag = "2")]
        Typing(super::Typing),
        /// Members' positions that moved.
        #[prost(message, tag = "3")]
        Receipts(super::ReceiptPositions),
        /// A group's membership changes.
        #[prost(message, tag = "4")]
        Members(super::MemberEvents),
        /// Edits, deletes and reactions of the conversation's messages.
        #[prost(message, tag = "5")]
        MessageChanges(crate::MessageEvents),
    }
}

/// What travels on one user's subject, heard by the gateways that have a socket of the user:
/// the positions the user moved, for the user's sockets outside the conversation's room.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserEvent {
    #[prost(oneof = "user_event::Event", tags = "1, 2")]
    pub event: Option<user_event::Event>,
}

pub mod user_event {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Event {
        #[prost(message, tag = "1")]
        Receipts(super::ReceiptPositions),
        /// Membership changes of a group the user is (or was, when removed) a member of.
        #[prost(message, tag = "2")]
        Members(super::MemberEvents),
    }
}

/// What travels on one gateway's own subject: the outcomes of its sends, or a presence change
/// for users who have sockets there.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GatewayEvent {
    #[prost(oneof = "gateway_event::Event", tags = "1, 2")]
    pub event: Option<gateway_event::Event>,
}

pub mod gateway_event {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Event {
        /// Outcomes of this gateway's sends (no messages).
        #[prost(message, tag = "1")]
        Outcomes(super::Delivery),
        #[prost(message, tag = "2")]
        Presence(super::PresenceChange),
    }
}

/// A socket of a user opened or closed on a gateway.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SocketEvent {
    #[prost(string, tag = "1")]
    pub gateway_id: String,
    #[prost(string, tag = "2")]
    pub socket_id: String,
    #[prost(int64, tag = "3")]
    pub user_id: i64,
    #[prost(bool, tag = "4")]
    pub connected: bool,
}

/// A gateway's open sockets, sent periodically: presence replaces what it knows of the
/// gateway with this, and takes a gateway that stops sending it for dead.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GatewayHeartbeat {
    #[prost(string, tag = "1")]
    pub gateway_id: String,
    #[prost(message, repeated, tag = "2")]
    pub sockets: Vec<OpenSocket>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct OpenSocket {
    #[prost(string, tag = "1")]
    pub socket_id: String,
    #[prost(int64, tag = "2")]
    pub user_id: i64,
}

/// What gateways tell presence. Socket events and heartbeats share one subject so that
/// presence receives them in the order a gateway sent them.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PresenceReport {
    #[prost(oneof = "presence_report::Report", tags = "1, 2")]
    pub report: Option<presence_report::Report>,
}

pub mod presence_report {
    #[derive(Clone, PartialEq, Eq, prost::Oneof)]
    pub enum Report {
        #[prost(message, tag = "1")]
        Socket(super::SocketEvent),
        #[prost(message, tag = "2")]
        Heartbeat(super::GatewayHeartbeat),
    }
}

/// A user came online or went offline: published to each gateway that has sockets of the
/// user's contacts, naming in `notify` the contacts to tell there.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PresenceChange {
    #[prost(int64, tag = "1")]
    pub user_id: i64,
    #[prost(bool, tag = "2")]
    pub online: bool,
    #[prost(int64, repeated, tag = "3")]
    pub notify: Vec<i64>,
}

// ---- request-reply queries, answered by the persister ----

/// Why a query failed; gateways map it to an HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorKind {
    Internal = 0,
    NotFound = 1,
    Invalid = 2,
    Forbidden = 3,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct QueryError {
    /// An [`ErrorKind`]; prost's `kind()` reads it (unknown values read as `Internal`).
    #[prost(enumeration = "ErrorKind", tag = "1")]
    pub kind: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GetConversation {
    #[prost(int64, tag = "1")]
    pub conversation_id: i64,
}

/// Returns the conversation of the pair, creating it when the pair has none. Answered with a
/// [`ConversationReply`], like [`GetConversation`] and [`CreateGroup`].
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct OpenConversation {
    #[prost(int64, tag = "1")]
    pub sender_id: i64,
    #[prost(int64, tag = "2")]
    pub receiver_id: i64,
}

/// Longest group name, in characters.
pub const MAX_GROUP_NAME_CHARS: usize = 100;

/// Creates a group: `creator_id` is its owner, `member_ids` (the creator may be among them)
/// its members. The gateway has checked the request's shape; the persister checks it again.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct CreateGroup {
    #[prost(int64, tag = "1")]
    pub creator_id: i64,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(int64, repeated, tag = "3")]
    pub member_ids: Vec<i64>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ConversationReply {
    #[prost(oneof = "conversation_reply::Result", tags = "1, 2")]
    pub result: Option<conversation_reply::Result>,
    /// For [`OpenConversation`]: whether this request created it.
    #[prost(bool, tag = "3")]
    pub created: bool,
}

pub mod conversation_reply {
    #[derive(Clone, PartialEq, Eq, prost::Oneof)]
    pub enum Result {
        #[prost(message, tag = "1")]
        Conversation(super::Conversation),
        #[prost(message, tag = "2")]
        Error(super::QueryError),
    }
}

/// A user's conversations. With `limit` 0 (gateways before the inbox): all of them, newest
/// first, in `conversations`. Otherwise one inbox page, in `entries`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ListConversations {
    #[prost(int64, tag = "1")]
    pub user_id: i64,
    /// Conversations per page, at most [`MAX_PAGE_SIZE`].
    #[prost(uint32, tag = "2")]
    pub limit: u32,
    /// Cursor: the conversations after this one in inbox order (its activity time in
    /// microseconds and its id, as the previous page's `next_before` gave them).
    #[prost(message, optional, tag = "3")]
    pub before: Option<InboxCursor>,
}

/// A place in a user's inbox order: newest activity first, then highest id.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct InboxCursor {
    #[prost(int64, tag = "1")]
    pub activity_us: i64,
    #[prost(int64, tag = "2")]
    pub conversation_id: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConversationList {
    #[prost(message, repeated, tag = "1")]
    pub conversations: Vec<Conversation>,
    #[prost(message, optional, tag = "2")]
    pub error: Option<QueryError>,
    /// An inbox page, newest activity first.
    #[prost(message, repeated, tag = "3")]
    pub entries: Vec<InboxEntry>,
    /// Unread messages over all the user's conversations.
    #[prost(int64, tag = "4")]
    pub total_unread: i64,
    /// Where the next page starts; none after the last page.
    #[prost(message, optional, tag = "5")]
    pub next_before: Option<InboxCursor>,
}

/// One conversation of a user's inbox.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InboxEntry {
    #[prost(message, optional, tag = "1")]
    pub conversation: Option<Conversation>,
    #[prost(message, optional, tag = "2")]
    pub last_message: Option<StoredMessage>,
    #[prost(int64, tag = "3")]
    pub unread_count: i64,
    #[prost(int64, tag = "4")]
    pub last_activity_ms: i64,
    #[prost(message, repeated, tag = "5")]
    pub members: Vec<MemberPositions>,
}

/// A member's read and delivered positions (0: none yet), with when they last moved (0: never).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MemberPositions {
    #[prost(int64, tag = "1")]
    pub user_id: i64,
    #[prost(int64, tag = "2")]
    pub last_read_message_id: i64,
    #[prost(int64, tag = "3")]
    pub last_delivered_message_id: i64,
    #[prost(int64, tag = "4")]
    pub read_at_ms: i64,
    #[prost(int64, tag = "5")]
    pub delivered_at_ms: i64,
}

/// The read and delivered positions of a conversation's members: what a replaying join sends.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GetPositions {
    #[prost(int64, tag = "1")]
    pub conversation_id: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PositionList {
    #[prost(message, repeated, tag = "1")]
    pub members: Vec<MemberPositions>,
    #[prost(message, optional, tag = "2")]
    pub error: Option<QueryError>,
}

/// A group's membership changes after message `after_message_id` (those made after it, at
/// most [`MAX_MEMBER_EVENTS`], oldest first): what a replaying join and a room's resync send.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ListMemberEvents {
    #[prost(int64, tag = "1")]
    pub conversation_id: i64,
    #[prost(int64, tag = "2")]
    pub after_message_id: i64,
}

/// Most membership changes one [`ListMemberEvents`] answers.
pub const MAX_MEMBER_EVENTS: u64 = 1_000;

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MemberEventList {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<MemberEvent>,
    #[prost(message, optional, tag = "2")]
    pub error: Option<QueryError>,
}

/// Most messages one history page holds, whatever a request asks: the gateway caps a client's
/// `limit` to it, and the persister serves no more.
pub const MAX_PAGE_SIZE: u32 = 100;

/// One page of a conversation's history, oldest first: by page number, or by cursor.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ListMessages {
    #[prost(int64, tag = "1")]
    pub conversation_id: i64,
    /// Page number from 1; ignored when a cursor is given.
    #[prost(uint32, tag = "2")]
    pub page: u32,
    /// Messages per page, at most [`MAX_PAGE_SIZE`].
    #[prost(uint32, tag = "3")]
    pub limit: u32,
    /// Cursor: the first `limit` messages with a larger id.
    #[prost(int64, optional, tag = "4")]
    pub after_id: Option<i64>,
    /// Cursor: the last `limit` messages with a smaller id.
    #[prost(int64, optional, tag = "5")]
    pub before_id: Option<i64>,
    /// Whose reactions the page's `my_reactions` are (0: nobody's).
    #[prost(int64, tag = "6")]
    pub viewer_id: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MessagePage {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<StoredMessage>,
    #[prost(uint64, tag = "2")]
    pub total: u64,
    #[prost(message, optional, tag = "3")]
    pub error: Option<QueryError>,
}

/// The users who share a conversation with `user_id`: who hears that user's presence.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ListContacts {
    #[prost(int64, tag = "1")]
    pub user_id: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ContactList {
    #[prost(int64, repeated, tag = "1")]
    pub user_ids: Vec<i64>,
    #[prost(message, optional, tag = "2")]
    pub error: Option<QueryError>,
}

/// A query's answer that can also say why it failed: lets one responder loop answer every
/// query with the right message type.
pub trait QueryReply: prost::Message + Default {
    fn failed(error: QueryError) -> Self;
    fn error(&self) -> Option<&QueryError>;
}

impl QueryError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind: kind as i32, message: message.into() }
    }
}

impl QueryReply for ConversationReply {
    fn failed(error: QueryError) -> Self {
        Self { result: Some(conversation_reply::Result::Error(error)), created: false }
    }
    fn error(&self) -> Option<&QueryError> {
        match &self.result {
            Some(conversation_reply::Result::Error(e)) => Some(e),
            _ => None,
        }
    }
}

macro_rules! reply_with_error_field {
    ($($reply:ty),*) => {$(
        impl QueryReply for $reply {
            fn failed(error: QueryError) -> Self {
                Self { error: Some(error), ..Default::default() }
            }
            fn error(&self) -> Option<&QueryError> {
                self.error.as_ref()
            }
        }
    )*};
}
reply_with_error_field!(
    ConversationList,
    MessagePage,
    ContactList,
    PositionList,
    MemberEventList,
    crate::MessageEventList
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_round_trips_through_bytes() {
        let outcome = SendOutcome {
            request_id: "r1".into(),
            socket_id: "s1".into(),
            result: Some(send_outcome::Result::Stored(StoredMessage {
                id: 7,
                sender_id: 1,
                conversation_id: 3,
                timestamp_ms: 1_700_000_000_123,
                message_type: "text".into(),
                content: "héllo".into(),
                conversation: Some(Conversation {
                    id: 3,
                    sender_id: 1,
                    receiver_id: 2,
                    created_at_ms: 5,
                    ..Default::default()
                }),
                edited_at_ms: 1_700_000_000_150,
                reactions: [("👍".to_owned(), 2)].into(),
                ..Default::default()
            })),
            gateway_id: "gw-1".into(),
            trace: [("traceparent".to_owned(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned())]
                .into(),
        };
        let delivery = Delivery {
            messages: vec![DeliveredMessage {
                message: match &outcome.result {
                    Some(send_outcome::Result::Stored(stored)) => Some(stored.clone()),
                    _ => None,
                },
                trace: Default::default(),
            }],
            outcomes: vec![outcome],
            receipt_outcomes: vec![ReceiptOutcome {
                request_id: "r2".into(),
                result: Some(receipt_outcome::Result::Position(ReceiptPosition {
                    conversation_id: 3,
                    user_id: 2,
                    kind: ReceiptKind::Read as i32,
                    message_id: 7,
                    at_ms: 1_700_000_000_200,
                })),
                moved: true,
                ..Default::default()
            }],
            member_outcomes: vec![MemberOutcome {
                request_id: "r3".into(),
                result: Some(member_outcome::Result::Done(MemberEvents {
                    events: vec![MemberEvent { id: 1, conversation_id: 3, user_id: 4, by: 1, ..Default::default() }],
                })),
                ..Default::default()
            }],
            message_outcomes: vec![crate::MessageChangeOutcome {
                request_id: "r4".into(),
                result: Some(crate::message_change_outcome::Result::Done(crate::MessageEvent {
                    id: 2,
                    message_id: 7,
                    kind: crate::MessageEventKind::Reaction as i32,
                    emoji: "👍".into(),
                    on: true,
                    counts: [("👍".to_owned(), 2)].into(),
                    ..Default::default()
                })),
                ..Default::default()
            }],
        };
        let bytes = crate::encode(&delivery);
        let back: Delivery = crate::decode(&bytes).expect("decodes");
        assert_eq!(back, delivery);
    }

    #[test]
    fn a_batch_and_a_lone_command_both_read_as_batches() {
        let command = SendMessage {
            request_id: "r1".into(),
            conversation_id: 4,
            content: "hi".into(),
            trace: [("traceparent".to_owned(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned())]
                .into(),
            ..Default::default()
        };
        let second = SendMessage { request_id: "r2".into(), ..command.clone() };
        let batch = SendBatch { commands: vec![command.clone(), second], ..Default::default() };
        assert_eq!(SendBatch::from_payload(&crate::encode(&batch)).expect("decodes"), batch);
        let lone = SendBatch::from_payload(&crate::encode(&command)).expect("decodes");
        assert_eq!(lone.commands, vec![command]);
        let receipts_only = SendBatch {
            commands: Vec::new(),
            receipts: vec![MarkReceipt { request_id: "r3".into(), message_id: 9, ..Default::default() }],
            ..Default::default()
        };
        assert_eq!(SendBatch::from_payload(&crate::encode(&receipts_only)).expect("decodes"), receipts_only);
        let changes_only = SendBatch {
            member_changes: vec![ChangeMember { request_id: "r4".into(), user_id: 3, ..Default::default() }],
            ..Default::default()
        };
        assert_eq!(SendBatch::from_payload(&crate::encode(&changes_only)).expect("decodes"), changes_only);
        let edits_only = SendBatch {
            message_changes: vec![crate::ChangeMessage {
                request_id: "r5".into(),
                message_id: 9,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(SendBatch::from_payload(&crate::encode(&edits_only)).expect("decodes"), edits_only);
        assert!(SendBatch::from_payload(&[]).expect("empty is valid").commands.is_empty());
    }

    #[test]
    fn garbage_is_a_decode_error_naming_the_message() {
        let err = crate::decode::<StoredMessage>(&[0xff, 0xff, 0xff]).expect_err("garbage");
        assert!(err.to_string().contains("StoredMessage"), "{err}");
    }
}
