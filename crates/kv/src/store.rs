//! [`KvStore`]: the replicated state — the keys and the clients' sessions.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cairn_raft::LogIndex;
use cairn_rpc::kv::{Op, WriteReply, WriteRequest};
use cairn_rsm::sessions::Session;
use cairn_rsm::{Seen, Sessions, StateMachine};
use prost::Message as _;

/// The most client sessions remembered. Beyond it, the least recently active
/// session is forgotten; that client's next write fails with
/// `session_expired` instead of risking a second application.
pub const MAX_SESSIONS: usize = 100_000;

/// A write's answer, small enough to keep per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reply {
    ok: bool,
    previous_found: bool,
}

impl Reply {
    fn encode(self) -> Bytes {
        WriteReply {
            ok: self.ok,
            previous_found: self.previous_found,
            session_expired: false,
        }
        .encode_to_vec()
        .into()
    }
}

/// The key/value state machine: every write is applied at most once per
/// (client, sequence number), even when the clerk retries it at another
/// server in another term (the dissertation's client sessions, §6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvStore {
    data: BTreeMap<Bytes, Bytes>,
    sessions: Sessions<Reply>,
}

impl Default for KvStore {
    fn default() -> Self {
        Self {
            data: BTreeMap::new(),
            sessions: Sessions::new(MAX_SESSIONS),
        }
    }
}

impl KvStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.data.get(key).cloned()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// How many client sessions are remembered.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn execute(&mut self, request: &WriteRequest) -> Reply {
        let key = Bytes::copy_from_slice(&request.key);
        let value = Bytes::copy_from_slice(&request.value);
        let previous_found = self.data.contains_key(&key);
        let ok = match Op::try_from(request.op) {
            Ok(Op::Put) => {
                self.data.insert(key, value);
                true
            }
            Ok(Op::Append) => {
                let entry = self.data.entry(key).or_default();
                let mut joined = BytesMut::with_capacity(entry.len() + value.len());
                joined.extend_from_slice(entry);
                joined.extend_from_slice(&value);
                *entry = joined.freeze();
                true
            }
            Ok(Op::Delete) => {
                self.data.remove(&key);
                true
            }
            Ok(Op::Cas) => {
                let matches = match self.data.get(&key) {
                    None => request.expect_missing,
                    Some(current) => !request.expect_missing && current[..] == request.expected[..],
                };
                if matches {
                    self.data.insert(key, value);
                }
                matches
            }
            // Validated before proposing; an unknown op in the log changes
            // nothing.
            Ok(Op::Unspecified) | Err(_) => false,
        };
        Reply { ok, previous_found }
    }
}

impl StateMachine for KvStore {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        let Ok(request) = WriteRequest::decode(command) else {
            tracing::error!(index, "an undecodable write in the log; applied as nothing");
            return WriteReply::default().encode_to_vec().into();
        };
        match self.sessions.check(request.client_id, request.seq) {
            // A retry: answer as the first time, apply nothing.
            Seen::Duplicate(reply) => return reply.encode(),
            Seen::Expired => {
                let expired = WriteReply {
                    ok: false,
                    previous_found: false,
                    session_expired: true,
                };
                return expired.encode_to_vec().into();
            }
            Seen::New => {}
        }
        let reply = self.execute(&request);
        self.sessions
            .remember(request.client_id, request.seq, reply, index);
        reply.encode()
    }

    fn snapshot(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u64_le(self.data.len() as u64);
        for (key, value) in &self.data {
            out.put_u32_le(key.len() as u32);
            out.extend_from_slice(key);
            out.put_u32_le(value.len() as u32);
            out.extend_from_slice(value);
        }
        out.put_u64_le(self.sessions.len() as u64);
        for (client, session) in self.sessions.iter() {
            out.put_u64_le(client);
            out.put_u64_le(session.seq);
            out.put_u64_le(session.last_index);
            out.put_u8(u8::from(session.reply.ok) | (u8::from(session.reply.previous_found) << 1));
        }
        out.freeze()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        *self =
            decode_snapshot(snapshot).ok_or("the key/value snapshot is truncated or damaged")?;
        Ok(())
    }
}

fn decode_snapshot(mut data: &[u8]) -> Option<KvStore> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if data.len() < n {
            return None;
        }
        let (head, tail) = data.split_at(n);
        *data = tail;
        Some(head)
    }
    let mut store = KvStore::new();
    if data.is_empty() {
        return Some(store);
    }
    let keys = take(&mut data, 8)?.get_u64_le();
    for _ in 0..keys {
        let len = take(&mut data, 4)?.get_u32_le() as usize;
        let key = Bytes::copy_from_slice(take(&mut data, len)?);
        let len = take(&mut data, 4)?.get_u32_le() as usize;
        let value = Bytes::copy_from_slice(take(&mut data, len)?);
        store.data.insert(key, value);
    }
    let sessions = take(&mut data, 8)?.get_u64_le();
    for _ in 0..sessions {
        let client = take(&mut data, 8)?.get_u64_le();
        let seq = take(&mut data, 8)?.get_u64_le();
        let last_index = take(&mut data, 8)?.get_u64_le();
        let flags = take(&mut data, 1)?[0];
        let reply = Reply {
            ok: flags & 1 != 0,
            previous_found: flags & 2 != 0,
        };
        store.sessions.restore(
            client,
            Session {
                seq,
                reply,
                last_index,
            },
        );
    }
    data.is_empty().then_some(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(client: u64, seq: u64, op: Op, key: &str, value: &str) -> Vec<u8> {
        WriteRequest {
            client_id: client,
            seq,
            op: op as i32,
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..WriteRequest::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn a_retried_append_applies_once() {
        let mut store = KvStore::new();
        store.apply(1, &write(7, 1, Op::Append, "k", "a"));
        store.apply(2, &write(7, 1, Op::Append, "k", "a"));
        store.apply(3, &write(7, 2, Op::Append, "k", "b"));
        store.apply(4, &write(7, 2, Op::Append, "k", "b"));
        assert_eq!(store.get(b"k").unwrap(), Bytes::from("ab"));
    }

    #[test]
    fn snapshot_round_trip_keeps_sessions() {
        let mut store = KvStore::new();
        store.apply(1, &write(1, 1, Op::Put, "a", "1"));
        store.apply(2, &write(2, 1, Op::Append, "b", "2"));
        let mut restored = KvStore::new();
        restored.restore(&store.snapshot()).unwrap();
        assert_eq!(restored, store);
        // The session survived: a retry is not applied again.
        restored.apply(3, &write(2, 1, Op::Append, "b", "2"));
        assert_eq!(restored.get(b"b").unwrap(), Bytes::from("2"));
        assert!(restored.restore(&store.snapshot()[..5]).is_err());
    }

    #[test]
    fn cas_and_delete() {
        let mut store = KvStore::new();
        let cas = |seq, expected: Option<&str>, value: &str| {
            WriteRequest {
                client_id: 3,
                seq,
                op: Op::Cas as i32,
                key: Bytes::from_static(b"k"),
                value: value.as_bytes().to_vec().into(),
                expected: expected.unwrap_or("").as_bytes().to_vec().into(),
                expect_missing: expected.is_none(),
            }
            .encode_to_vec()
        };
        let reply = |bytes: Bytes| WriteReply::decode(bytes).unwrap();
        assert!(reply(store.apply(1, &cas(1, None, "x"))).ok);
        assert!(!reply(store.apply(2, &cas(2, Some("y"), "z"))).ok);
        assert!(reply(store.apply(3, &cas(3, Some("x"), "z"))).ok);
        assert_eq!(store.get(b"k").unwrap(), Bytes::from("z"));
        store.apply(4, &write(3, 4, Op::Delete, "k", ""));
        assert_eq!(store.get(b"k"), None);
    }

    #[test]
    fn sessions_are_bounded_and_an_evicted_client_is_told() {
        let mut store = KvStore::new();
        for client in 0..(MAX_SESSIONS as u64 + 10) {
            store.apply(client + 1, &write(client + 100, 1, Op::Put, "k", "v"));
        }
        assert_eq!(store.sessions(), MAX_SESSIONS);
        // Client 100 was the least recently active: evicted.
        let reply =
            WriteReply::decode(store.apply(1 << 40, &write(100, 2, Op::Put, "k", "w"))).unwrap();
        assert!(reply.session_expired);
        assert_eq!(store.get(b"k").unwrap(), Bytes::from("v"));
    }
}
