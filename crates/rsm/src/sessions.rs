//! [`Sessions`]: the duplicate table that makes a service's writes
//! exactly-once (the dissertation's client sessions, §6.3).
//!
//! A client first **registers**: a registration goes through the log like
//! any command, and the id the client gets is chosen by the cluster (the
//! services use the log index of the registration entry, so ids are unique
//! and increase with time). The client then numbers its writes 1, 2, 3,
//! ... and has at most one outstanding; the state machine remembers, per
//! client, the last sequence number it applied and the answer it gave. A
//! write whose number is not above the remembered one is a retry: it gets
//! the remembered answer and changes nothing. The table lives in the state
//! machine, so it is in every snapshot and survives restarts.
//!
//! Growth is bounded: beyond [`Sessions::new`]'s limit, the least recently
//! active client is forgotten. Any later write of a client the table does
//! not know, its first write included, is answered [`Seen::Expired`] and
//! not applied, because the table can no longer tell a retry from a new
//! write; the client must register again (§6.3: "session expired").
//!
//! A table that starts empty for clients who registered elsewhere (a
//! shard's table in a sharded store, which only sees that shard's writes)
//! cannot use that rule: a client's first write to the shard is unknown
//! there too. It uses [`Sessions::check_above_floor`] instead: the table
//! remembers the highest client id it ever forgot (its **floor**), and
//! because ids increase with registration time, an unknown client above
//! the floor was never forgotten here, so its write is new; one at or below
//! it may have been forgotten and is answered [`Seen::Expired`]. The floor
//! must travel with the table (hand-over, snapshot).

use std::collections::{BTreeMap, BTreeSet};

use cairn_raft::LogIndex;

/// What the table says about an incoming write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen<R> {
    /// A new write: apply it, then [`Sessions::remember`] its answer.
    New,
    /// A retry of the last write: answer this, apply nothing.
    Duplicate(R),
    /// The client is unknown (never registered, or forgotten): answer that
    /// its session expired, apply nothing.
    Expired,
}

/// One client's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session<R> {
    /// The last sequence number applied (0: none yet, just registered).
    pub seq: u64,
    /// The answer it got (meaningless while `seq` is 0).
    pub reply: R,
    /// The log index it was applied at (its last activity).
    pub last_index: LogIndex,
}

/// The per-client duplicate table, bounded by least recent activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sessions<R> {
    limit: usize,
    sessions: BTreeMap<u64, Session<R>>,
    /// (last index, client): the eviction order.
    activity: BTreeSet<(LogIndex, u64)>,
    /// The highest client id ever forgotten (0: none).
    floor: u64,
}

impl<R: Clone> Sessions<R> {
    /// An empty table remembering at most `limit` clients (at least 1).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            sessions: BTreeMap::new(),
            activity: BTreeSet::new(),
            floor: 0,
        }
    }

    /// Classifies write `seq` of `client` in a table that sees every
    /// registration: an unknown client is [`Seen::Expired`].
    pub fn check(&self, client: u64, seq: u64) -> Seen<R> {
        match self.sessions.get(&client) {
            Some(session) if seq <= session.seq => Seen::Duplicate(session.reply.clone()),
            Some(_) => Seen::New,
            None => Seen::Expired,
        }
    }

    /// Classifies write `seq` of `client` in a table that does not see
    /// registrations (see the module documentation): an unknown client
    /// above the [`floor`](Self::floor) is new here, one at or below it
    /// [`Seen::Expired`].
    pub fn check_above_floor(&self, client: u64, seq: u64) -> Seen<R> {
        match self.check(client, seq) {
            Seen::Expired if client > self.floor => Seen::New,
            seen => seen,
        }
    }

    /// Opens a session for `client`, registered at `index`, with no write
    /// yet; forgets the least recently active client if the table is full.
    pub fn register(&mut self, client: u64, reply: R, index: LogIndex) {
        self.remember(client, 0, reply, index);
    }

    /// Records that write `seq` of `client` was applied at `index` with
    /// `reply`, forgetting the least recently active client if the table is
    /// full.
    pub fn remember(&mut self, client: u64, seq: u64, reply: R, index: LogIndex) {
        let session = Session {
            seq,
            reply,
            last_index: index,
        };
        if let Some(old) = self.sessions.insert(client, session) {
            self.activity.remove(&(old.last_index, client));
        }
        self.activity.insert((index, client));
        while self.sessions.len() > self.limit {
            let Some((_, oldest)) = self.activity.pop_first() else {
                break;
            };
            self.sessions.remove(&oldest);
            self.floor = self.floor.max(oldest);
        }
    }

    /// The highest client id this table ever forgot (0: none).
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Raises the floor to at least `floor` (from a snapshot, or the table
    /// a shard arrived with).
    pub fn raise_floor(&mut self, floor: u64) {
        self.floor = self.floor.max(floor);
    }

    /// How many clients are remembered.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Every session by client id, for a snapshot.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Session<R>)> {
        self.sessions
            .iter()
            .map(|(&client, session)| (client, session))
    }

    /// Puts back a session read from a snapshot.
    pub fn restore(&mut self, client: u64, session: Session<R>) {
        self.activity.insert((session.last_index, client));
        if let Some(old) = self.sessions.insert(client, session) {
            self.activity.remove(&(old.last_index, client));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_gets_the_first_answer() {
        let mut sessions = Sessions::new(10);
        sessions.register(7, "", 1);
        assert_eq!(sessions.check(7, 1), Seen::New);
        sessions.remember(7, 1, "first", 2);
        assert_eq!(sessions.check(7, 1), Seen::Duplicate("first"));
        assert_eq!(sessions.check(7, 2), Seen::New);
    }

    #[test]
    fn the_least_recently_active_client_is_forgotten_and_told() {
        let mut sessions = Sessions::new(2);
        sessions.remember(1, 1, (), 1);
        sessions.remember(2, 1, (), 2);
        sessions.remember(1, 2, (), 3); // client 1 active again
        sessions.remember(3, 1, (), 4); // evicts client 2
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions.check(2, 2), Seen::Expired);
        assert_eq!(sessions.check(1, 2), Seen::Duplicate(()));
        assert_eq!(sessions.floor(), 2);
    }

    /// The sequence: a client's first write is applied and its
    /// reply lost; the table fills with other clients; the retry must not
    /// apply again.
    #[test]
    fn a_first_write_retried_after_eviction_is_expired_not_new() {
        let limit = 1_000;
        let mut sessions = Sessions::new(limit);
        sessions.register(1, (), 1);
        assert_eq!(sessions.check(1, 1), Seen::New);
        sessions.remember(1, 1, (), 2); // applied; the reply is lost
        for client in 3..(limit as u64 + 3) {
            sessions.register(client, (), client);
        }
        assert_eq!(sessions.check(1, 1), Seen::Expired);
        // A client that never registered is not new either.
        assert_eq!(sessions.check(1 << 40, 1), Seen::Expired);
    }

    #[test]
    fn above_the_floor_an_unknown_client_is_new() {
        let mut sessions = Sessions::new(2);
        assert_eq!(sessions.check_above_floor(5, 1), Seen::New);
        sessions.remember(5, 1, (), 1);
        sessions.remember(6, 1, (), 2);
        sessions.remember(7, 1, (), 3); // forgets 5
        assert_eq!(sessions.check_above_floor(5, 1), Seen::Expired);
        assert_eq!(sessions.check_above_floor(4, 1), Seen::Expired);
        assert_eq!(sessions.check_above_floor(8, 1), Seen::New);
        assert_eq!(sessions.check_above_floor(6, 1), Seen::Duplicate(()));
        let mut moved = Sessions::<()>::new(2);
        moved.raise_floor(sessions.floor());
        assert_eq!(moved.check_above_floor(5, 1), Seen::Expired);
    }
}
