//! What a run verifies without a shared map: every message carries its sender, sequence number
//! and send time in its content (a [`Stamp`]); a sender records which sequence numbers were
//! acknowledged, its partner which ones arrived, and the two sets are compared at the end.

use std::fmt::Write;

/// What a message's `content` says about it: `<run>:<sender index>:<seq>:<send time ns>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub run: u64,
    pub sender: usize,
    pub seq: u64,
    /// Nanoseconds since the load generator's epoch: the scheduled send time in open-loop
    /// runs (so a late send counts as latency), the actual one in closed-loop runs.
    pub at_ns: u64,
}

impl Stamp {
    pub fn encode(&self, out: &mut String) {
        out.clear();
        // Writing to a String cannot fail.
        let _ = write!(out, "{}:{}:{}:{}", self.run, self.sender, self.seq, self.at_ns);
    }

    pub fn decode(content: &str) -> Option<Self> {
        let mut fields = content.split(':');
        let stamp = Self {
            run: fields.next()?.parse().ok()?,
            sender: fields.next()?.parse().ok()?,
            seq: fields.next()?.parse().ok()?,
            at_ns: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(stamp)
    }
}

/// A set of sequence numbers (dense, from 0), as a bitmap.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; false when it was already there.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        self.len += u64::from(fresh);
        fresh
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// How many members of `self` are not in `other`.
    pub fn missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, word)| (word & !other.words.get(i).copied().unwrap_or(0)).count_ones() as u64)
            .sum()
    }
}

/// The receiving side of one sender's stream: duplicates and order.
#[derive(Debug, Default)]
pub struct Inbox {
    pub received: SeqSet,
    pub duplicates: u64,
    pub out_of_order: u64,
    highest_seq: Option<u64>,
    highest_id: Option<i64>,
}

/// What the arrival of one message meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    Duplicate,
    OutOfOrder,
}

impl Inbox {
    /// Records a message with sequence number `seq` and server id `id`. In order means both the
    /// sequence number and the id are above every earlier one of this sender.
    pub fn record(&mut self, seq: u64, id: i64) -> Arrival {
        if !self.received.insert(seq) {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        let in_order = self.highest_seq.is_none_or(|h| seq > h) && self.highest_id.is_none_or(|h| id > h);
        self.highest_seq = Some(self.highest_seq.map_or(seq, |h| h.max(seq)));
        self.highest_id = Some(self.highest_id.map_or(id, |h| h.max(id)));
        if in_order {
            Arrival::InOrder
        } else {
            self.out_of_order += 1;
            Arrival::OutOfOrder
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_refuse_foreign_content() {
        let stamp = Stamp { run: 42, sender: 7, seq: 1001, at_ns: 123_456_789 };
        let mut content = String::from("left over");
        stamp.encode(&mut content);
        assert_eq!(content, "42:7:1001:123456789");
        assert_eq!(Stamp::decode(&content), Some(stamp));
        for foreign in ["", "Hello!", "1:2:3", "1:2:3:4:5", "1:x:3:4", "-1:2:3:4"] {
            assert_eq!(Stamp::decode(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn seq_sets_count_members_and_differences() {
        let mut acked = SeqSet::default();
        let mut received = SeqSet::default();
        for seq in [0, 1, 2, 63, 64, 200] {
            assert!(acked.insert(seq));
        }
        assert!(!acked.insert(64));
        assert_eq!(acked.len(), 6);
        for seq in [0, 2, 64] {
            received.insert(seq);
        }
        assert_eq!(acked.missing_from(&received), 3); // 1, 63, 200
        assert_eq!(received.missing_from(&acked), 0);
        assert_eq!(acked.missing_from(&SeqSet::default()), 6);
    }

    #[test]
    fn inbox_tells_duplicates_from_reordering() {
        let mut inbox = Inbox::default();
        assert_eq!(inbox.record(0, 10), Arrival::InOrder);
        assert_eq!(inbox.record(2, 12), Arrival::InOrder);
        assert_eq!(inbox.record(2, 12), Arrival::Duplicate);
        assert_eq!(inbox.record(1, 11), Arrival::OutOfOrder);
        // the next sequence number with a smaller id than an earlier message: the server reordered
        assert_eq!(inbox.record(3, 9), Arrival::OutOfOrder);
        assert_eq!(inbox.record(4, 13), Arrival::InOrder);
        assert_eq!((inbox.duplicates, inbox.out_of_order, inbox.received.len()), (1, 2, 5));
    }
}
