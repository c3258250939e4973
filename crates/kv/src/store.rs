//! [`KvStore`]: the replicated state — the keys and the clients' sessions.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cairn_rpc::kv::{Op, WriteReply, WriteRequest};
use cairn_rsm::LogIndex;
use cairn_rsm::sessions::Session;
use cairn_rsm::{Seen, Sessions, StateMachine};
use prost::Message as _;

use crate::server::MAX_VALUE_BYTES;

/// The most client sessions remembered. Beyond it, the least recently active
/// session is forgotten; that client's next write fails with
/// `session_expired` instead of risking a second application.
pub const MAX_SESSIONS: usize = 100_000;

/// A write's answer, small enough to keep per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Reply {
    ok: bool,
    previous_found: bool,
    /// An append refused: the value would have passed the limit.
    too_large: bool,
}

impl Reply {
    fn encode(self) -> Bytes {
        WriteReply {
            ok: self.ok,
            previous_found: self.previous_found,
            value_too_large: self.too_large,
            ..WriteReply::default()
        }
        .encode_to_vec()
        .into()
    }

    fn flags(self) -> u8 {
        u8::from(self.ok) | (u8::from(self.previous_found) << 1) | (u8::from(self.too_large) << 2)
    }

    fn from_flags(flags: u8) -> Self {
        Self {
            ok: flags & 1 != 0,
            previous_found: flags & 2 != 0,
            too_large: flags & 4 != 0,
        }
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
        let mut too_large = false;
        let ok = match Op::try_from(request.op) {
            Ok(Op::Put) => {
                self.data.insert(key, value);
                true
            }
            Ok(Op::Append) => {
                let current = self.data.get(&key).map_or(0, Bytes::len);
                // Decided from the applied state alone: the same on every
                // replica. A refused append changes nothing.
                too_large = current + value.len() > MAX_VALUE_BYTES;
                if !too_large {
                    let entry = self.data.entry(key).or_default();
                    let mut joined = BytesMut::with_capacity(entry.len() + value.len());
                    joined.extend_from_slice(entry);
                    joined.extend_from_slice(&value);
                    *entry = joined.freeze();
                }
                !too_large
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
            // Validated before proposing (and registrations are applied
            // before this): an unknown op in the log changes nothing.
            Ok(Op::Unspecified | Op::Register) | Err(_) => false,
        };
        Reply {
            ok,
            previous_found,
            too_large,
        }
    }
}

impl StateMachine for KvStore {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        let Ok(request) = WriteRequest::decode(command) else {
            tracing::error!(index, "an undecodable write in the log; applied as nothing");
            return WriteReply::default().encode_to_vec().into();
        };
        if request.op == Op::Register as i32 {
            // The client's id is this entry's index: unique, and larger
            // than every id given before.
            self.sessions.register(index, Reply::default(), index);
            let registered = WriteReply {
                ok: true,
                client_id: index,
                ..WriteReply::default()
            };
            return registered.encode_to_vec().into();
        }
        match self.sessions.check(request.client_id, request.seq) {
            // A retry: answer as the first time, apply nothing.
            Seen::Duplicate(reply) => return reply.encode(),
            Seen::Expired => {
                let expired = WriteReply {
                    session_expired: true,
                    ..WriteReply::default()
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
            out.put_u8(session.reply.flags());
        }
        out.freeze()
    }

    fn session_count(&self) -> Option<usize> {
        Some(self.sessions.len())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), cairn_rsm::RestoreError> {
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
        let reply = Reply::from_flags(take(&mut data, 1)?[0]);
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
mod tests;
