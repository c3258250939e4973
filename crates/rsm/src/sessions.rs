//! [`Sessions`]: the duplicate table that makes a service's writes
//! exactly-once (the dissertation's client sessions, §6.3).
//!
//! A clerk numbers its writes 1, 2, 3, ... and has at most one outstanding;
//! the state machine remembers, per client, the last sequence number it
//! applied and the answer it gave. A write whose number is not above the
//! remembered one is a retry: it gets the remembered answer and changes
//! nothing. The table lives in the state machine, so it is in every
//! snapshot and survives restarts.
//!
//! Growth is bounded: beyond [`Sessions::new`]'s limit, the least recently
//! active client is forgotten. Its next write (sequence number above 1 with
//! no session) is answered [`Seen::Expired`] and not applied, because
//! applying it could apply a retry twice; the clerk must start over with a
//! new id.

use std::collections::{BTreeMap, BTreeSet};

use cairn_raft::LogIndex;

/// What the table says about an incoming write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen<R> {
    /// A new write: apply it, then [`Sessions::remember`] its answer.
    New,
    /// A retry of the last write: answer this, apply nothing.
    Duplicate(R),
    /// The client was forgotten: answer that its session expired.
    Expired,
}

/// One client's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session<R> {
    /// The last sequence number applied.
    pub seq: u64,
    /// The answer it got.
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
}

impl<R: Clone> Sessions<R> {
    /// An empty table remembering at most `limit` clients (at least 1).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            sessions: BTreeMap::new(),
            activity: BTreeSet::new(),
        }
    }

    /// Classifies write `seq` of `client`.
    pub fn check(&self, client: u64, seq: u64) -> Seen<R> {
        match self.sessions.get(&client) {
            Some(session) if seq <= session.seq => Seen::Duplicate(session.reply.clone()),
            None if seq > 1 => Seen::Expired,
            _ => Seen::New,
        }
    }

    /// The remembered answer if write `seq` of `client` is a retry, without
    /// the expiry rule of [`check`](Self::check): for tables that start
    /// empty for clients that already made writes elsewhere (a shard's
    /// table in a sharded store, which only sees that shard's writes).
    pub fn duplicate(&self, client: u64, seq: u64) -> Option<R> {
        self.sessions
            .get(&client)
            .filter(|session| seq <= session.seq)
            .map(|session| session.reply.clone())
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
        }
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
        assert_eq!(sessions.check(7, 1), Seen::New);
        sessions.remember(7, 1, "first", 1);
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
    }
}
