//! Subject names on the bus. Every subject starts with a prefix (default `chat`), so that
//! several clusters, or several test runs, can share one NATS server without hearing each other.

/// Partitions of the inbound work queue when none are configured.
pub const DEFAULT_PARTITIONS: u32 = 32;

/// Builds the subject names of one cluster.
#[derive(Clone, Debug)]
pub struct Subjects {
    prefix: String,
    /// The inbound work queue is split into this many partitions by conversation; every
    /// gateway and persister of a cluster must agree on it.
    partitions: u32,
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new("chat")
    }
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into(), partitions: DEFAULT_PARTITIONS }
    }

    /// The same names with the inbound work queue split into `partitions` (at least 1).
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Send commands from gateways to persisters (durable work queue): one subject per
    /// partition, and every conversation in one partition, so that one consumer at a time
    /// handles a conversation's messages.
    pub fn inbound(&self, conversation_id: i64) -> String {
        self.inbound_partition(self.partition_of(conversation_id))
    }

    /// The partition of the inbound work queue that carries a conversation's sends.
    pub fn partition_of(&self, conversation_id: i64) -> u32 {
        conversation_id.rem_euclid(i64::from(self.partitions)) as u32
    }

    pub fn inbound_partition(&self, partition: u32) -> String {
        format!("{}.in.{partition}", self.prefix)
    }

    /// Filter matching every [`Self::inbound`] subject.
    pub fn inbound_all(&self) -> String {
        format!("{}.in.*", self.prefix)
    }

    /// A conversation's room subject ([`crate::RoomEvent`]: its stored messages and typing),
    /// heard by the gateways that have a member of the conversation, and by no other.
    pub fn room(&self, conversation_id: i64) -> String {
        format!("{}.room.{conversation_id}", self.prefix)
    }

    /// One gateway's own subject ([`crate::GatewayEvent`]: the outcomes of its sends, presence
    /// changes for its sockets). A gateway id is any string; characters that NATS gives a
    /// meaning in subjects (`.`, `*`, `>`, white space) become `_`.
    pub fn gateway(&self, gateway_id: &str) -> String {
        let token: String = gateway_id
            .chars()
            .map(|c| if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() { '_' } else { c })
            .collect();
        format!("{}.gw.{token}", self.prefix)
    }

    /// One user's subject ([`crate::UserEvent`]: the receipts the user moved), heard by the
    /// gateways that have a socket of the user.
    pub fn user(&self, user_id: i64) -> String {
        format!("{}.user.{user_id}", self.prefix)
    }

    /// Socket events and heartbeats, from gateways to presence.
    pub fn presence_reports(&self) -> String {
        format!("{}.presence.reports", self.prefix)
    }

    /// The key-value bucket where presence keeps the open sockets.
    pub fn presence_bucket(&self) -> String {
        format!("{}_presence", self.stream_safe_prefix())
    }

    /// The key-value bucket of the users presence last announced online: what a presence
    /// replica that takes over compares with what it knows.
    pub fn presence_announced_bucket(&self) -> String {
        format!("{}_presence_announced", self.stream_safe_prefix())
    }

    /// The key-value bucket holding the lease of the presence replica that announces.
    pub fn presence_lease_bucket(&self) -> String {
        format!("{}_presence_lease", self.stream_safe_prefix())
    }

    /// The JetStream stream of the inbound work queue.
    pub fn inbound_stream(&self) -> String {
        format!("{}_inbound", self.stream_safe_prefix())
    }

    /// The prefix with every character JetStream does not allow in names replaced by `_`.
    fn stream_safe_prefix(&self) -> String {
        self.prefix.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
    }

    /// Request-reply queries answered by the persister: `name` is one of the `RPC_*` constants.
    pub fn rpc(&self, name: &str) -> String {
        format!("{}.rpc.{name}", self.prefix)
    }
}

pub const RPC_GET_CONVERSATION: &str = "conversation.get";
pub const RPC_OPEN_CONVERSATION: &str = "conversation.open";
pub const RPC_CREATE_GROUP: &str = "group.create";
pub const RPC_LIST_CONVERSATIONS: &str = "conversation.list";
pub const RPC_LIST_MESSAGES: &str = "messages.list";
pub const RPC_LIST_CONTACTS: &str = "contacts.list";
pub const RPC_GET_POSITIONS: &str = "positions.get";
pub const RPC_LIST_MEMBER_EVENTS: &str = "members.events";
pub const RPC_LIST_MESSAGE_EVENTS: &str = "messages.events";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_map_to_stable_partitions() {
        let subjects = Subjects::new("chat").with_partitions(4);
        assert_eq!(subjects.inbound(1), "chat.in.1");
        assert_eq!(subjects.inbound(5), "chat.in.1");
        assert_eq!(subjects.inbound(8), "chat.in.0");
        assert_eq!(Subjects::new("x").with_partitions(0).inbound(7), "x.in.0", "at least one partition");
    }

    #[test]
    fn rooms_and_gateways_have_subjects_of_their_own() {
        let subjects = Subjects::new("chat");
        assert_eq!(subjects.room(42), "chat.room.42");
        assert_eq!(subjects.gateway("gw-1"), "chat.gw.gw-1");
        assert_eq!(subjects.user(5), "chat.user.5");
        assert_eq!(
            subjects.gateway("chat-gateway-7d9.pod a*b>c"),
            "chat.gw.chat-gateway-7d9_pod_a_b_c",
            "one token, no wildcard"
        );
    }

    #[test]
    fn stream_names_avoid_characters_jetstream_refuses() {
        let subjects = Subjects::new("acme.chat");
        assert_eq!(subjects.inbound_stream(), "acme_chat_inbound");
        assert_eq!(subjects.presence_bucket(), "acme_chat_presence");
        assert_eq!(subjects.presence_announced_bucket(), "acme_chat_presence_announced");
        assert_eq!(subjects.presence_lease_bucket(), "acme_chat_presence_lease");
        assert_eq!(subjects.inbound_all(), "acme.chat.in.*");
    }
}
