//! The delivery rules of one conversation room on this gateway, as a state machine without
//! I/O: each call says what happened (a message heard live, a replay begun or ended, the bus
//! connection lost, a resync read) and returns what to send. `rooms` does the reading and the
//! sending, under the lock that keeps this state, so that what is returned is sent before the
//! next event is taken.
//!
//! **Replay.** A socket that rejoins says which message it saw last; it must get every later
//! message, in id order, before any live one, with no gap:
//!
//! 1. [`RoomState::begin_replay`]: from now on the room's live messages are also kept for it;
//! 2. the caller reads history after the socket's last message and sends it; `R` is the last
//!    id sent;
//! 3. [`RoomState::end_replay`] gives the kept live messages above `R`; the caller sends them
//!    and puts the socket in the room, both under the lock.
//!
//! Every live message is therefore either kept during 1–3 or sent to the socket as a member
//! after 3. A message stored before 1 is in the history read of 2 (it was committed before it
//! was published).
//!
//! **Resync.** Core NATS messages published while the gateway was cut off from the bus are
//! gone. [`RoomState::connection_lost`] notes the last id the room delivered and holds live
//! messages; once the bus is back the caller reads what came after [`RoomState::resync_from`]
//! and hands it to [`RoomState::end_resync`], which delivers it and then what was held.
//!
//! **Duplicates.** The ids delivered lately are remembered: a message heard twice (a
//! redelivery, or read by a resync and heard live) is dropped, while one that arrives late
//! (stored before others but published after them, as when a persister retried a commit that
//! had in fact succeeded) is still delivered rather than lost.
//!
//! **Known positions.** What the room has heard tells where its members stand at least: a
//! member's own message counts as read (and delivered) by them when stored, and every moved
//! position is announced on the room subject. Positions only move forward, so these are lower
//! bounds of the stored ones; a receipt for a message the room delivered and at or below the
//! member's known position would move nothing, and the gateway answers it without the
//! persister ([`RoomState::superseded`]). A member removed from a group is forgotten.
//!
//! **Membership changes** of a group are kept for the sockets replaying, like receipts, and
//! sent after their replay ([`RoomState::live_members`], [`RoomState::end_replay_members`]).
//! So are the edits, deletes and reactions of the room's messages
//! ([`RoomState::live_message_changes`], [`RoomState::end_replay_message_changes`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

use chat_proto::{MemberEvent, MemberEventKind, MessageEvent, ReceiptKind, ReceiptPosition, StoredMessage};

/// How many delivered ids a room remembers to recognise duplicates.
pub const RECENT_IDS: usize = 4_096;

/// One room's delivery state; `S` names a socket.
#[derive(Debug)]
pub struct RoomState<S> {
    /// The ids of the messages delivered lately.
    recent: RecentIds,
    /// The ids of the messages' changes delivered lately: a change announced again (a client's
    /// retry, a redelivered batch) reaches the members once.
    recent_changes: RecentIds,
    /// The highest message id delivered to the room (0: none yet).
    last_delivered: i64,
    /// Sockets replaying missed messages, with the live messages delivered meanwhile.
    replaying: HashMap<S, Vec<StoredMessage>>,
    /// The same sockets, with the receipts delivered meanwhile.
    replaying_receipts: HashMap<S, Vec<ReceiptPosition>>,
    /// The same sockets, with the membership changes delivered meanwhile.
    replaying_members: HashMap<S, Vec<MemberEvent>>,
    /// The same sockets, with the messages' changes delivered meanwhile.
    replaying_message_changes: HashMap<S, Vec<MessageEvent>>,
    /// While the bus connection is lost or the room resynchronises: where the room stood,
    /// and the live messages heard meanwhile.
    resync: Option<Resync>,
    /// Each member's positions as far as the room has heard (lower bounds of the stored ones).
    known: HashMap<i64, KnownPosition>,
}

/// A member's read and delivered positions; reading implies delivered, so `delivered >= read`.
#[derive(Debug, Default, Clone, Copy)]
struct KnownPosition {
    read: i64,
    delivered: i64,
}

#[derive(Debug)]
struct Resync {
    since: i64,
    held: Vec<StoredMessage>,
}

impl<S: Eq + Hash> Default for RoomState<S> {
    fn default() -> Self {
        Self {
            recent: RecentIds::default(),
            recent_changes: RecentIds::default(),
            last_delivered: 0,
            replaying: HashMap::new(),
            replaying_receipts: HashMap::new(),
            replaying_members: HashMap::new(),
            replaying_message_changes: HashMap::new(),
            resync: None,
            known: HashMap::new(),
        }
    }
}

impl<S: Eq + Hash> RoomState<S> {
    /// A message heard on the room subject: what to send to the room's members now (nothing
    /// for a duplicate, or while the room is resynchronising).
    pub fn live(&mut self, message: StoredMessage) -> Option<StoredMessage> {
        match &mut self.resync {
            Some(resync) => {
                resync.held.push(message);
                None
            }
            None => self.accept(message),
        }
    }

    /// Whether the room knows where the conversation stood when it opened here (see
    /// [`RoomState::set_baseline`]).
    pub fn has_baseline(&self) -> bool {
        self.last_delivered > 0
    }

    /// A room new on this gateway starts from the conversation's newest message, so that a
    /// resync knows where the room stood even if nothing was delivered yet.
    pub fn set_baseline(&mut self, newest_id: i64) {
        self.last_delivered = self.last_delivered.max(newest_id);
    }

    /// Step 1 of a replay: keep live messages and receipts for `socket` from now on.
    pub fn begin_replay(&mut self, socket: S)
    where
        S: Clone,
    {
        self.replaying_receipts.insert(socket.clone(), Vec::new());
        self.replaying_members.insert(socket.clone(), Vec::new());
        self.replaying_message_changes.insert(socket.clone(), Vec::new());
        self.replaying.insert(socket, Vec::new());
    }

    /// A receipt heard on the room subject: the members get it now (positions only move
    /// forward, so it needs no ordering with messages), and the sockets replaying get it after
    /// the positions their replay reads.
    pub fn live_receipt(&mut self, position: &ReceiptPosition) {
        self.note_position(position);
        for kept in self.replaying_receipts.values_mut() {
            kept.push(position.clone());
        }
    }

    /// Membership changes heard on the room subject: the members get them now, the sockets
    /// replaying after their replay; a removed member's known positions are forgotten (its
    /// receipts must reach the persister, which refuses them).
    pub fn live_members(&mut self, events: &[MemberEvent]) {
        for event in events {
            if event.kind() == MemberEventKind::Removed {
                self.known.remove(&event.user_id);
            }
        }
        for kept in self.replaying_members.values_mut() {
            kept.extend(events.iter().cloned());
        }
    }

    /// With step 3 of a replay: the membership changes kept for `socket`, in order.
    pub fn end_replay_members(&mut self, socket: &S) -> Vec<MemberEvent> {
        self.replaying_members.remove(socket).unwrap_or_default()
    }

    /// Edits, deletes and reactions heard on the room subject (or read by a resync): those
    /// not delivered lately, which the members get now, the sockets replaying after their
    /// replay.
    pub fn live_message_changes(&mut self, events: &[MessageEvent]) -> Vec<MessageEvent> {
        let new: Vec<MessageEvent> = events.iter().filter(|e| self.recent_changes.first_time(e.id)).cloned().collect();
        for kept in self.replaying_message_changes.values_mut() {
            kept.extend(new.iter().cloned());
        }
        new
    }

    /// With step 3 of a replay: the messages' changes kept for `socket`, in order.
    pub fn end_replay_message_changes(&mut self, socket: &S) -> Vec<MessageEvent> {
        self.replaying_message_changes.remove(socket).unwrap_or_default()
    }

    /// A member's position as stored (a receipt's answer, or one heard): the known position
    /// moves up to it.
    pub fn note_position(&mut self, position: &ReceiptPosition) {
        let known = self.known.entry(position.user_id).or_default();
        if position.kind() == ReceiptKind::Read {
            known.read = known.read.max(position.message_id);
        }
        known.delivered = known.delivered.max(position.message_id).max(known.read);
    }

    /// If a receipt of `user_id` for `message_id` would move nothing, the member's known
    /// position of that kind, which answers it: the message must be one this room delivered
    /// (so it is stored, and of this conversation) and at or below that position. `None`
    /// means only the persister can tell.
    pub fn superseded(&self, user_id: i64, kind: ReceiptKind, message_id: i64) -> Option<i64> {
        if !self.recent.contains(message_id) {
            return None;
        }
        let known = self.known.get(&user_id)?;
        let position = match kind {
            ReceiptKind::Read => known.read,
            ReceiptKind::Delivered => known.delivered,
        };
        (position >= message_id).then_some(position)
    }

    /// Whether this room delivered `message_id` lately (so it is stored, and of this
    /// conversation).
    pub fn delivered(&self, message_id: i64) -> bool {
        self.recent.contains(message_id)
    }

    /// With step 3 of a replay: the receipts kept for `socket`, in order; to send after the
    /// positions the replay read.
    pub fn end_replay_receipts(&mut self, socket: &S) -> Vec<ReceiptPosition> {
        self.replaying_receipts.remove(socket).unwrap_or_default()
    }

    /// Step 3 of a replay that sent history up to `replayed_up_to`: the live messages kept for
    /// `socket` that it has not had, in order. The caller puts the socket in the room before
    /// the next call on this state.
    pub fn end_replay(&mut self, socket: &S, replayed_up_to: i64) -> Vec<StoredMessage> {
        let kept = self.replaying.remove(socket).unwrap_or_default();
        kept.into_iter().filter(|message| message.id > replayed_up_to).collect()
    }

    /// The bus connection is lost: note where the room stands and hold live messages.
    pub fn connection_lost(&mut self) {
        if self.resync.is_none() {
            self.resync = Some(Resync { since: self.last_delivered, held: Vec::new() });
        }
    }

    /// Where a resync reads from: the last id delivered when the connection was lost.
    pub fn resync_from(&self) -> i64 {
        self.resync.as_ref().map_or(self.last_delivered, |resync| resync.since)
    }

    /// The resync read `missed` (oldest first): what to send to the room's members, in order,
    /// the messages held meanwhile included. Live delivery resumes.
    pub fn end_resync(&mut self, missed: Vec<StoredMessage>) -> Vec<StoredMessage> {
        let held = self.resync.take().map(|resync| resync.held).unwrap_or_default();
        missed.into_iter().chain(held).filter_map(|message| self.accept(message)).collect()
    }

    /// Delivers a message unless it was delivered lately: remembers it and keeps it for the
    /// sockets replaying.
    fn accept(&mut self, message: StoredMessage) -> Option<StoredMessage> {
        if !self.recent.first_time(message.id) {
            return None;
        }
        self.last_delivered = self.last_delivered.max(message.id);
        // The sender's own message counts as read (and delivered) by them.
        let sender = self.known.entry(message.sender_id).or_default();
        sender.read = sender.read.max(message.id);
        sender.delivered = sender.delivered.max(message.id);
        for kept in self.replaying.values_mut() {
            kept.push(message.clone());
        }
        Some(message)
    }
}

/// The last [`RECENT_IDS`] ids seen, oldest first, and the same as a set.
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<i64>,
    set: HashSet<i64>,
}

impl RecentIds {
    fn contains(&self, id: i64) -> bool {
        self.set.contains(&id)
    }

    /// Whether `id` was not seen lately; remembers it, forgetting the oldest past the bound.
    fn first_time(&mut self, id: i64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT_IDS {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: i64) -> StoredMessage {
        StoredMessage { id, conversation_id: 1, sender_id: 1, content: format!("m{id}"), ..Default::default() }
    }

    fn ids(messages: &[StoredMessage]) -> Vec<i64> {
        messages.iter().map(|m| m.id).collect()
    }

    /// A history that holds messages 1..=last.
    fn history_after(after: i64, last: i64) -> Vec<StoredMessage> {
        (after + 1..=last).map(message).collect()
    }

    #[test]
    fn live_messages_reach_the_members_once_each() {
        let mut room = RoomState::<&str>::default();
        assert_eq!(room.live(message(1)).map(|m| m.id), Some(1));
        assert_eq!(room.live(message(2)).map(|m| m.id), Some(2));
        assert!(room.live(message(2)).is_none(), "a redelivery is dropped");
        assert!(room.live(message(1)).is_none());
    }

    #[test]
    fn receipts_heard_during_a_replay_are_kept_for_the_replaying_socket_only() {
        let mut room = RoomState::<&str>::default();
        let read = |message_id| ReceiptPosition { conversation_id: 1, user_id: 2, message_id, ..Default::default() };
        room.live_receipt(&read(1)); // before the replay: the member had it
        room.begin_replay("s");
        room.live_receipt(&read(2));
        room.live_receipt(&read(3));
        let kept: Vec<i64> = room.end_replay_receipts(&"s").iter().map(|p| p.message_id).collect();
        assert_eq!(kept, vec![2, 3]);
        assert!(room.end_replay_receipts(&"s").is_empty(), "taken once");
        room.live_receipt(&read(4));
        assert!(room.end_replay_receipts(&"s").is_empty(), "kept only while replaying");
    }

    #[test]
    fn a_receipt_at_or_below_a_known_position_is_superseded() {
        let mut room = RoomState::<&str>::default();
        let position = |user_id, kind: ReceiptKind, message_id| ReceiptPosition {
            conversation_id: 1,
            user_id,
            kind: kind as i32,
            message_id,
            ..Default::default()
        };
        room.live(message(3)); // from user 1
        room.live(StoredMessage { id: 4, sender_id: 2, ..message(4) });
        room.live(message(5));
        // User 1 sent 5: its read and delivered positions are at least 5.
        assert_eq!(room.superseded(1, ReceiptKind::Read, 4), Some(5));
        assert_eq!(room.superseded(1, ReceiptKind::Delivered, 5), Some(5));
        // User 2 sent only 4: marking 5 may move its position; only the persister knows.
        assert_eq!(room.superseded(2, ReceiptKind::Read, 5), None);
        assert_eq!(room.superseded(2, ReceiptKind::Read, 3), Some(4));
        // A message the room never delivered may be of another conversation, or not stored.
        assert_eq!(room.superseded(1, ReceiptKind::Read, 2), None);
        // A user the room has heard nothing of.
        assert_eq!(room.superseded(9, ReceiptKind::Read, 3), None);
        // A delivered position does not imply read; a read one implies delivered.
        room.note_position(&position(2, ReceiptKind::Delivered, 5));
        assert_eq!(room.superseded(2, ReceiptKind::Delivered, 5), Some(5));
        assert_eq!(room.superseded(2, ReceiptKind::Read, 5), None);
        room.live(StoredMessage { id: 6, sender_id: 1, ..message(6) });
        room.live_receipt(&position(2, ReceiptKind::Read, 6));
        assert_eq!(room.superseded(2, ReceiptKind::Delivered, 6), Some(6));
        assert_eq!(room.superseded(2, ReceiptKind::Read, 5), Some(6));
        // Positions never move back.
        room.note_position(&position(2, ReceiptKind::Read, 4));
        assert_eq!(room.superseded(2, ReceiptKind::Read, 6), Some(6));
    }

    #[test]
    fn membership_changes_are_kept_for_replaying_sockets_and_a_removed_member_is_forgotten() {
        let mut room = RoomState::<&str>::default();
        let change =
            |id, kind: MemberEventKind, user_id| MemberEvent { id, kind: kind as i32, user_id, ..Default::default() };
        room.live(StoredMessage { id: 4, sender_id: 2, ..message(4) });
        assert_eq!(room.superseded(2, ReceiptKind::Read, 4), Some(4));
        room.begin_replay("s");
        room.live_members(&[change(1, MemberEventKind::Added, 3), change(2, MemberEventKind::Removed, 2)]);
        // Removed: its receipts go to the persister, which refuses them.
        assert_eq!(room.superseded(2, ReceiptKind::Read, 4), None);
        let kept: Vec<i64> = room.end_replay_members(&"s").iter().map(|e| e.id).collect();
        assert_eq!(kept, vec![1, 2]);
        room.live_members(&[change(3, MemberEventKind::RoleChanged, 3)]);
        assert!(room.end_replay_members(&"s").is_empty(), "kept only while replaying");
    }

    #[test]
    fn message_changes_are_kept_for_replaying_sockets_only() {
        let mut room = RoomState::default();
        let change = |id| MessageEvent { id, message_id: 7, ..Default::default() };
        room.live_message_changes(&[change(1)]); // nobody replays: sent to the members only
        room.begin_replay("s");
        let sent: Vec<i64> =
            room.live_message_changes(&[change(2), change(1), change(3)]).iter().map(|e| e.id).collect();
        assert_eq!(sent, vec![2, 3], "a change heard again is dropped");
        let kept: Vec<i64> = room.end_replay_message_changes(&"s").iter().map(|e| e.id).collect();
        assert_eq!(kept, vec![2, 3], "in order, from the replay's start");
        room.live_message_changes(&[change(4)]);
        assert!(room.end_replay_message_changes(&"s").is_empty(), "kept only while replaying");
    }

    #[test]
    fn a_message_published_late_is_still_delivered() {
        let mut room = RoomState::<&str>::default();
        room.live(message(7));
        assert_eq!(room.live(message(6)).map(|m| m.id), Some(6), "late, not a duplicate");
    }

    #[test]
    fn a_replay_then_live_has_no_gap_and_no_regress() {
        // The socket saw up to 2. Messages 3 and 4 were stored before it rejoined; 5 and 6 are
        // published while its history read is under way, which returns up to 5.
        let mut room = RoomState::default();
        room.live(message(3));
        room.live(message(4));
        room.begin_replay("s");
        room.live(message(5));
        room.live(message(6));
        let history = history_after(2, 5);
        let replayed_up_to = history.last().map_or(2, |m| m.id);
        let rest = room.end_replay(&"s", replayed_up_to);
        let seen: Vec<i64> = ids(&history).into_iter().chain(ids(&rest)).collect();
        assert_eq!(seen, vec![3, 4, 5, 6]);
        assert!(room.end_replay(&"s", 0).is_empty(), "the replay's keeping ended with it");
    }

    #[test]
    fn a_join_racing_a_delivery_gets_the_message_once() {
        // The message is both in the history read and heard live during the replay.
        let mut room = RoomState::default();
        room.begin_replay("s");
        room.live(message(8));
        let history = history_after(7, 8);
        assert!(room.end_replay(&"s", 8).is_empty(), "already sent by the replay");
        assert_eq!(ids(&history), vec![8]);

        // Heard live during the replay but committed after the history was read.
        room.begin_replay("t");
        room.live(message(9));
        assert_eq!(ids(&room.end_replay(&"t", 8)), vec![9]);
    }

    #[test]
    fn replays_keep_live_messages_for_each_replaying_socket() {
        let mut room = RoomState::default();
        room.begin_replay("a");
        room.live(message(1));
        room.begin_replay("b");
        room.live(message(2));
        assert_eq!(ids(&room.end_replay(&"a", 0)), vec![1, 2]);
        assert_eq!(ids(&room.end_replay(&"b", 0)), vec![2]);
    }

    #[test]
    fn a_resync_delivers_what_was_missed_then_what_was_held_without_duplicates() {
        let mut room = RoomState::<&str>::default();
        room.live(message(4));
        room.connection_lost();
        room.connection_lost(); // a second loss before the resync keeps the first mark
                                // 5 and 6 were published while the gateway was cut off; 7 is heard after it is back.
        assert!(room.live(message(7)).is_none(), "held during the resync");
        assert_eq!(room.resync_from(), 4);
        let delivered = room.end_resync(history_after(4, 7));
        assert_eq!(ids(&delivered), vec![5, 6, 7], "7 once, though read and held");
        assert_eq!(room.live(message(8)).map(|m| m.id), Some(8), "live delivery resumes");
        assert_eq!(room.resync_from(), 8);
    }

    #[test]
    fn a_new_room_resyncs_from_its_baseline() {
        let mut room = RoomState::<&str>::default();
        assert!(!room.has_baseline());
        room.set_baseline(41);
        assert!(room.has_baseline());
        room.connection_lost();
        assert_eq!(room.resync_from(), 41);
        assert_eq!(ids(&room.end_resync(history_after(41, 42))), vec![42]);
        room.set_baseline(10);
        assert_eq!(room.resync_from(), 42, "a baseline never moves the room back");
    }

    #[test]
    fn a_socket_replaying_during_a_resync_gets_the_resynced_messages() {
        let mut room = RoomState::default();
        room.live(message(1));
        room.connection_lost();
        room.begin_replay("s");
        room.live(message(3));
        let delivered = room.end_resync(history_after(1, 3));
        assert_eq!(ids(&delivered), vec![2, 3]);
        assert_eq!(ids(&room.end_replay(&"s", 1)), vec![2, 3]);
    }

    #[test]
    fn the_memory_of_delivered_ids_is_bounded() {
        let mut room = RoomState::<&str>::default();
        for id in 1..=(RECENT_IDS as i64 + 1) {
            room.live(message(id));
        }
        assert_eq!(room.recent.order.len(), RECENT_IDS);
        assert_eq!(room.live(message(1)).map(|m| m.id), Some(1), "forgotten, so delivered again");
        assert!(room.live(message(RECENT_IDS as i64)).is_none(), "still remembered");
    }
}
