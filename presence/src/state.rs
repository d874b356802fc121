//! The socket counts behind presence, without any I/O: easy to test, easy to reason about.

use std::collections::HashMap;

/// Identifies a socket cluster-wide: socket ids are unique only within their gateway.
type SocketKey = (String, String);

#[derive(Debug, Default)]
pub struct PresenceState {
    /// Open sockets and whose they are.
    sockets: HashMap<SocketKey, i64>,
    /// Open sockets of each online user, counted per gateway; a user with no open socket has
    /// no entry. Tells which gateways to send a user's notifications to.
    open_per_user: HashMap<i64, Vec<(String, u32)>>,
}

impl PresenceState {
    /// How many users have at least one open socket.
    pub fn online_users(&self) -> usize {
        self.open_per_user.len()
    }

    /// How many sockets are open, on every gateway.
    pub fn open_sockets(&self) -> usize {
        self.sockets.len()
    }

    /// Records an open socket; `true` when it is the user's first, i.e. the user came online.
    /// A socket reported twice counts once.
    pub fn socket_opened(&mut self, gateway_id: &str, socket_id: &str, user_id: i64) -> bool {
        let key = (gateway_id.to_owned(), socket_id.to_owned());
        if self.sockets.insert(key, user_id).is_some() {
            return false;
        }
        let per_gateway = self.open_per_user.entry(user_id).or_default();
        let came_online = per_gateway.is_empty();
        match per_gateway.iter_mut().find(|(gw, _)| gw == gateway_id) {
            Some((_, open)) => *open += 1,
            None => per_gateway.push((gateway_id.to_owned(), 1)),
        }
        came_online
    }

    /// Records a closed socket; the user when it was their last, i.e. they went offline.
    /// A socket never reported open is ignored.
    pub fn socket_closed(&mut self, gateway_id: &str, socket_id: &str) -> Option<i64> {
        let user_id = self.sockets.remove(&(gateway_id.to_owned(), socket_id.to_owned()))?;
        self.release(user_id, gateway_id).then_some(user_id)
    }

    /// Closes every socket of a gateway that is gone; the users who went offline with it.
    pub fn gateway_lost(&mut self, gateway_id: &str) -> Vec<i64> {
        let lost: Vec<SocketKey> = self.sockets.keys().filter(|(gw, _)| gw == gateway_id).cloned().collect();
        let mut offline = Vec::new();
        for key in lost {
            if let Some(user_id) = self.sockets.remove(&key) {
                if self.release(user_id, gateway_id) {
                    offline.push(user_id);
                }
            }
        }
        offline
    }

    /// Replaces what is known of a gateway's sockets with `open` (its heartbeat); the users
    /// who came online and those who went offline by it.
    pub fn reconcile(&mut self, gateway_id: &str, open: &[(String, i64)]) -> (Vec<i64>, Vec<i64>) {
        let reported: HashMap<&str, i64> = open.iter().map(|(socket, user)| (socket.as_str(), *user)).collect();
        let stale: Vec<String> = self
            .sockets
            .iter()
            .filter(|((gw, socket), user)| gw == gateway_id && reported.get(socket.as_str()) != Some(*user))
            .map(|((_, socket), _)| socket.clone())
            .collect();
        let offline = stale.iter().filter_map(|socket| self.socket_closed(gateway_id, socket)).collect();
        // `socket_opened` ignores the sockets already known, so only new ones count.
        let online = reported
            .iter()
            .filter(|(socket, user_id)| self.socket_opened(gateway_id, socket, **user_id))
            .map(|(_, user_id)| *user_id)
            .collect();
        (online, offline)
    }

    /// The ids of a gateway's open sockets.
    pub fn sockets_of(&self, gateway_id: &str) -> Vec<String> {
        self.sockets.keys().filter(|(gw, _)| gw == gateway_id).map(|(_, socket)| socket.clone()).collect()
    }

    /// The gateways that have open sockets.
    pub fn gateways(&self) -> Vec<String> {
        let mut gateways: Vec<String> = self.sockets.keys().map(|(gw, _)| gw.clone()).collect();
        gateways.sort();
        gateways.dedup();
        gateways
    }

    /// Every open socket: gateway, socket id, user.
    pub fn sockets(&self) -> impl Iterator<Item = (&str, &str, i64)> {
        self.sockets.iter().map(|((gateway, socket), user_id)| (gateway.as_str(), socket.as_str(), *user_id))
    }

    /// The users with at least one open socket.
    pub fn online_user_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.open_per_user.keys().copied()
    }

    pub fn is_online(&self, user_id: i64) -> bool {
        self.open_per_user.contains_key(&user_id)
    }

    /// The users among `users` who have open sockets, grouped by gateway (a user with sockets
    /// on two gateways is in both groups): where to send them a notification. Gateways in
    /// order of first appearance.
    pub fn by_gateway(&self, users: &[i64]) -> Vec<(String, Vec<i64>)> {
        let mut groups: Vec<(String, Vec<i64>)> = Vec::new();
        for user_id in users {
            for (gateway, _) in self.open_per_user.get(user_id).into_iter().flatten() {
                match groups.iter_mut().find(|(known, _)| known == gateway) {
                    Some((_, members)) => members.push(*user_id),
                    None => groups.push((gateway.clone(), vec![*user_id])),
                }
            }
        }
        groups
    }

    /// Drops one of the user's sockets on `gateway_id` from the counts; `true` when that was
    /// the user's last socket anywhere.
    fn release(&mut self, user_id: i64, gateway_id: &str) -> bool {
        let Some(per_gateway) = self.open_per_user.get_mut(&user_id) else { return false };
        if let Some(index) = per_gateway.iter().position(|(gw, _)| gw == gateway_id) {
            per_gateway[index].1 -= 1;
            if per_gateway[index].1 == 0 {
                per_gateway.swap_remove(index);
            }
        }
        if per_gateway.is_empty() {
            self.open_per_user.remove(&user_id);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::PresenceState;

    #[test]
    fn a_user_with_two_tabs_stays_online_until_both_close() {
        let mut state = PresenceState::default();
        assert!(state.socket_opened("gw-a", "s1", 7));
        assert!(!state.socket_opened("gw-b", "s1", 7), "second tab, other gateway: no new transition");
        assert_eq!(state.socket_closed("gw-a", "s1"), None);
        assert!(state.is_online(7));
        assert_eq!(state.socket_closed("gw-b", "s1"), Some(7));
        assert!(!state.is_online(7));
    }

    #[test]
    fn counts_users_and_sockets_for_the_gauges() {
        let mut state = PresenceState::default();
        state.socket_opened("gw-a", "s1", 7);
        state.socket_opened("gw-b", "s1", 7);
        state.socket_opened("gw-a", "s2", 8);
        assert_eq!((state.online_users(), state.open_sockets()), (2, 3));
        state.gateway_lost("gw-a");
        assert_eq!((state.online_users(), state.open_sockets()), (1, 1));
    }

    #[test]
    fn repeated_and_unknown_reports_do_not_skew_counts() {
        let mut state = PresenceState::default();
        assert!(state.socket_opened("gw", "s1", 1));
        assert!(!state.socket_opened("gw", "s1", 1));
        assert_eq!(state.socket_closed("gw", "unknown"), None);
        assert_eq!(state.socket_closed("gw", "s1"), Some(1));
        assert_eq!(state.socket_closed("gw", "s1"), None);
    }

    #[test]
    fn a_heartbeat_replaces_what_was_known_of_its_gateway() {
        let mut state = PresenceState::default();
        state.socket_opened("gw-a", "s1", 1); // closed while presence was not listening
        state.socket_opened("gw-a", "s2", 2); // still open
        state.socket_opened("gw-b", "s3", 1); // other gateway: untouched
        let heartbeat = [("s2".to_owned(), 2), ("s4".to_owned(), 4)];
        let (online, offline) = state.reconcile("gw-a", &heartbeat);
        assert_eq!(online, vec![4]);
        assert!(offline.is_empty(), "user 1 still has a socket on gw-b");
        assert!(state.is_online(1) && state.is_online(2) && state.is_online(4));
        let (online, offline) = state.reconcile("gw-b", &[]);
        assert!(online.is_empty());
        assert_eq!(offline, vec![1]);
        assert_eq!(state.gateways(), vec!["gw-a".to_owned()]);
    }

    #[test]
    fn notifications_go_to_the_gateways_where_the_users_are() {
        let mut state = PresenceState::default();
        state.socket_opened("gw-a", "s1", 1);
        state.socket_opened("gw-a", "s2", 2);
        state.socket_opened("gw-b", "s3", 2); // user 2 on both gateways
        state.socket_opened("gw-b", "s4", 3);
        let groups = state.by_gateway(&[1, 2, 3, 4]);
        assert_eq!(groups, vec![("gw-a".to_owned(), vec![1, 2]), ("gw-b".to_owned(), vec![2, 3])], "4 is offline");
        state.socket_closed("gw-b", "s3");
        state.gateway_lost("gw-a");
        assert_eq!(state.by_gateway(&[1, 2, 3]), vec![("gw-b".to_owned(), vec![3])]);
        assert!(state.by_gateway(&[]).is_empty());
    }

    #[test]
    fn a_lost_gateway_takes_only_its_own_users_offline() {
        let mut state = PresenceState::default();
        state.socket_opened("gw-a", "s1", 1);
        state.socket_opened("gw-a", "s2", 2);
        state.socket_opened("gw-b", "s3", 2);
        state.socket_opened("gw-b", "s4", 3);
        let mut offline = state.gateway_lost("gw-a");
        offline.sort();
        assert_eq!(offline, vec![1]);
        assert!(state.is_online(2) && state.is_online(3));
    }
}
