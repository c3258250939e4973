//! Shards handed over in chunks: the old owner answers a pull with the
//! keys after a cursor, at most a chunk's worth; the new owner logs each
//! chunk as its own entry and installs it only if it continues exactly
//! where its installed keys end. The cursor is the last installed key, so
//! it is part of the state machine (and of its snapshots): a new leader,
//! or a group restarted in the middle of a hand-over, resumes from it, and
//! a chunk logged twice changes nothing the second time.

use std::ops::Bound;

use bytes::Bytes;
use cairn_rpc::shardkv::{self as proto, InstallShards, PullReply, ShardChunk, ShardData};
use cairn_rsm::LogIndex;
use prost::Message as _;

use super::{ShardState, ShardStore};
use crate::server::MAX_CHUNK_BYTES;

/// Where a shard this group is pulling stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullPosition {
    /// The last key installed: the next chunk starts after it. `None`:
    /// nothing installed yet.
    pub after_key: Option<Bytes>,
    /// How many keys are installed so far.
    pub keys: usize,
}

/// A pull reached a shard's last chunk, which is given out only once the
/// old owner has logged that it hands the shard over (`handing`): from then
/// on the shard cannot be taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unhanded;

/// The bytes `message` adds to a repeated field it is an element of.
fn element_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

impl ShardStore {
    /// The next chunk of `shard`, handed over in configuration `num`, for
    /// its new owner: the keys after `after_key` (all, if `None`) in key
    /// order, as many as fit in `max_bytes` (capped at
    /// [`MAX_CHUNK_BYTES`]; 0 means that cap) but at least one. The chunk
    /// holding the last key also carries the duplicate table and the
    /// session floor, if they fit beside its keys; otherwise they follow
    /// alone in one more chunk (the table is bounded by
    /// `MAX_SESSIONS_PER_SHARD`). Not ready before this group reached
    /// `num`.
    ///
    /// A shard taken back from the caller is answered `revoked`. The last
    /// chunk is given out only once the shard is marked handed (the
    /// `handing` command): until then the answer is [`Unhanded`], and the
    /// server logs `handing` and asks again.
    pub fn pull_chunk(
        &self,
        num: u64,
        shard: u32,
        after_key: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<PullReply, Unhanded> {
        if self.was_revoked(num, shard) {
            return Ok(PullReply {
                revoked: true,
                ..PullReply::default()
            });
        }
        if self.config.num != num {
            return Ok(PullReply::default());
        }
        let Some(held) = self
            .shards
            .get(&shard)
            .filter(|s| s.state == ShardState::Offering)
        else {
            tracing::debug!(
                gid = self.gid,
                shard,
                num,
                "asked for a shard this group is not handing over"
            );
            return Ok(PullReply::default());
        };
        let budget = match max_bytes {
            0 => MAX_CHUNK_BYTES,
            n => n.min(MAX_CHUNK_BYTES),
        };
        let start = after_key.map_or(Bound::Unbounded, Bound::Excluded);
        let mut data = Vec::new();
        let mut bytes = 0;
        let mut rest = held.data.range::<[u8], _>((start, Bound::Unbounded));
        let mut more = false;
        for (key, value) in rest.by_ref() {
            let kv = proto::KeyValue {
                key: key.clone(),
                value: value.clone(),
            };
            let len = element_len(kv.encoded_len());
            if !data.is_empty() && bytes + len > budget {
                more = true;
                break;
            }
            bytes += len;
            data.push(kv);
        }
        let mut chunk = ShardData {
            shard,
            data,
            ..ShardData::default()
        };
        let sessions = held.sessions_to_proto();
        let sessions_len: usize = sessions.iter().map(|s| element_len(s.encoded_len())).sum();
        // The last chunk carries the duplicate table; if it does not fit
        // beside the last keys, it goes alone in one more chunk.
        let done = !more && (chunk.data.is_empty() || bytes + sessions_len <= budget);
        if done {
            if !held.handed {
                return Err(Unhanded);
            }
            chunk.sessions = sessions;
            chunk.session_floor = held.sessions.floor();
        }
        Ok(PullReply {
            ready: true,
            chunk: Some(ShardChunk {
                data: Some(chunk),
                after_key: after_key.map(Bytes::copy_from_slice),
                done,
            }),
            revoked: false,
        })
    }

    /// Where the pull of `shard`, gained in configuration `num`, stands;
    /// `None` if the shard is not being pulled (any more).
    pub fn pull_position(&self, num: u64, shard: u32) -> Option<PullPosition> {
        if self.config.num != num {
            return None;
        }
        let held = self
            .shards
            .get(&shard)
            .filter(|s| s.state == ShardState::Pulling)?;
        Some(PullPosition {
            after_key: held.data.keys().next_back().cloned(),
            keys: held.data.len(),
        })
    }

    pub(super) fn install(&mut self, index: LogIndex, install: InstallShards) {
        if install.config_num != self.config.num {
            return;
        }
        // Entries logged before shards moved in chunks: whole shards.
        for data in install.shards {
            let whole = ShardChunk {
                data: Some(data),
                after_key: None,
                done: true,
            };
            self.install_chunk(index, whole);
        }
        if let Some(chunk) = install.chunk {
            self.install_chunk(index, chunk);
        }
    }

    /// Installs `chunk` if its shard is being pulled and the chunk starts
    /// right after the last key installed; a repeated or stale chunk is
    /// ignored. The last chunk also brings the duplicate table, and the
    /// shard is served from then on (Collecting).
    fn install_chunk(&mut self, index: LogIndex, chunk: ShardChunk) {
        let Some(mut data) = chunk.data else {
            return;
        };
        let gid = self.gid;
        let Some(shard) = self
            .shards
            .get_mut(&data.shard)
            .filter(|s| s.state == ShardState::Pulling)
        else {
            return;
        };
        if shard.data.keys().next_back() != chunk.after_key.as_ref() {
            return;
        }
        // The keys must follow the cursor in order, or the cursor (the last
        // key) would skip some. Decided from the entry alone: the same on
        // every replica.
        let mut last = chunk.after_key.as_ref();
        for kv in &data.data {
            if last.is_some_and(|last| kv.key <= *last) {
                tracing::error!(
                    gid,
                    shard = data.shard,
                    "a chunk from the old owner is out of key order; ignored (the pull is retried)"
                );
                return;
            }
            last = Some(&kv.key);
        }
        for kv in std::mem::take(&mut data.data) {
            shard.data.insert(kv.key, kv.value);
        }
        if chunk.done {
            shard.load_sessions(data, Some(index));
            shard.state = ShardState::Collecting;
        }
    }
}
