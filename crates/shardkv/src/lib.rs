//! # cairn-shardkv: a key/value store spread over many Raft groups
//!
//! Keys fall into a fixed number of shards ([`shard_of`]: FNV-1a of the
//! key, modulo the shard count); the shard controller
//! (`cairn-shardctrler`) assigns each shard to a replica group; each group
//! is a Raft group of [`ShardKvServer`]s whose state machine is a
//! [`ShardStore`]. Clients use [`Client`], which routes each key by the
//! latest configuration it knows and asks the controller again when a group
//! answers "wrong group".
//!
//! ## Moving shards
//!
//! Each group's leader polls the controller (every 100 ms) for the
//! configuration after its own and puts it in the group's log, so every
//! replica changes configuration at the same point of its history, one
//! configuration at a time, in order. On that entry:
//!
//! - a shard the group gains from no one (gid 0) is served at once, empty;
//! - a shard it gains from another group is **Pulling**: not served until
//!   the leader has fetched its keys *and its duplicate table* from the old
//!   owner (`PullShards`) and put them in the log;
//! - a shard it loses is **Offering**: frozen (no longer served) and kept
//!   until the new owner has it.
//!
//! A shard moves in chunks, so that a shard of any size fits bounded
//! messages and log entries: each pull asks for the keys after a cursor
//! and gets, in key order, at most [`MAX_CHUNK_BYTES`] of them (or
//! [`HandoverConfig::chunk_bytes`], if smaller; always at least one key),
//! and the new owner logs each chunk as its own entry. The cursor is the
//! last key installed, so it is part of the state machine and of its
//! snapshots ([`PullPosition`]): a new leader, or a group restarted in the
//! middle, resumes where the installed keys end. A chunk is installed only
//! if it starts exactly there, so a chunk logged twice, or a stale one,
//! changes nothing. The last chunk carries the duplicate table and the
//! session floor (alone, if they do not fit beside the last keys); only
//! when it is applied is the shard served. The old owner's copy is frozen,
//! so the chunks are consistent with each other and with the table, and it
//! answers pulls until the new owner, holding the last chunk, tells it to
//! drop the shard.
//!
//! A group moves to the next configuration only when no shard is in
//! hand-over, so an old owner answers a pull for configuration `n` exactly
//! when it has reached `n` itself, and at most one group serves a shard at
//! any moment. The old owner logs `handing` before it gives out a shard's
//! last chunk: only from then on may the new owner serve it. Once the data is installed the new owner serves it
//! (**Collecting**) and tells the old owner to drop its copy
//! (`DeleteShards`, through the old owner's log); when that is confirmed,
//! the shard is **Serving**. Shards not involved in a change are served
//! throughout it, and each gained shard is served as soon as its own data
//! has arrived, whatever the other shards do.
//!
//! ## Taking shards back
//!
//! A group joined with a wrong address never pulls its shards; their old
//! owners would wait for it forever, even after it leaves. When the new
//! owner of a shard not yet handed is missing from the controller's latest
//! configuration, the old owner's leader logs `take_back`: the shard is
//! **Held** (kept, not served, not in hand-over) and is the old owner's own
//! in its next configuration — it held it all along and nobody else ever
//! served it. `handing` and `take_back` are ordered by the old owner's log,
//! so one of them wins. A group that left and comes back is answered
//! `revoked` and drops the shard; a third group that gets a Held shard in a
//! later configuration is told by the holder to pull it there (see
//! `store/takeback.rs`). Every group's `Status` lists what it waits for,
//! and its leader warns in its log every [`WARN_INTERVAL`] while a
//! hand-over is stuck.
//!
//! ## Exactly-once writes
//!
//! Writes are exactly-once per clerk (client id and sequence number); the
//! duplicate table is kept per shard and travels with it, so a write
//! retried at the new owner after the old one applied it is recognized.
//! A clerk's id comes from the shard controller's `Register`: the index of
//! the registration in the controller's log, so ids are unique and
//! increase with time. A shard never sees registrations, so a client it
//! does not know may be new to it or forgotten by it. Each shard's table
//! keeps its [`MAX_SESSIONS_PER_SHARD`] most recently active clients and
//! remembers the highest id it ever forgot (its *session floor*): an
//! unknown client above the floor registered after every forgotten one and
//! is new here; one at or below it is answered `session_expired` and
//! nothing is applied, because its write may be a retry of one the shard
//! applied and forgot (the Raft dissertation's §6.3 rule, adapted to a
//! table that starts empty). The clerk registers again, with a larger id.
//! The floor moves with the shard on hand-over and is in snapshots.
//!
//! An append that would grow a value past [`MAX_VALUE_BYTES`] is refused
//! when it is applied and changes nothing ([`ShardKvError::ValueTooLarge`]).
//!
//! ## Implementation caveats
//!
//! - A client unknown to a shard whose floor is above its id is told its
//!   session expired although it may never have written there; it
//!   registers again (safe, one more controller round trip).
//! - Every clerk's registration is a session in the controller's table
//!   too, though a sharded-store clerk never sends a change.
//! - A group whose old owner is down waits for it (the data exists nowhere
//!   else); shards from live groups keep moving meanwhile.
//! - A shard that went from no group (gid 0) to a group that never ran
//!   (the first join named a wrong address) cannot be taken back: no group
//!   holds it, and whether that group served writes is unknowable. Its new
//!   owners wait for it.
//! - A group that left remembers the last [`MAX_REVOKED`] shards it took
//!   back; one that comes back after more than that many waits for a shard
//!   it was offered long ago.
//! - A group that was offered a shard taken back from another one that
//!   left, and that was itself down until it left too, pulls from the
//!   configuration's previous owner when it comes back (the holder's offer
//!   was lost with it) and waits.
//! - A shard in hand-over is stored whole by both groups, and the new
//!   owner's log grows by the shard's size (one entry per chunk) until a
//!   snapshot compacts it; moving a large shard costs disk and bandwidth
//!   on both sides for that time.
//! - Chunks are pulled one at a time, each behind a read index at the old
//!   owner and a commit at the new one: a large shard moves at the speed
//!   of that round trip times its chunk count, not of the link.
//! - The controllers of a sharded store refuse to let the last group leave
//!   (its data would have no one to go to).

mod client;
mod follow;
mod server;
mod store;

pub use client::{Client, ClientConfig, ShardKvError};
pub use follow::WARN_INTERVAL;
pub use server::{
    HandoverConfig, MAX_CHUNK_BYTES, MAX_KEY_BYTES, MAX_MESSAGE_BYTES, MAX_VALUE_BYTES,
    POLL_INTERVAL, ShardKvServer,
};
pub use store::{
    MAX_REVOKED, MAX_SESSIONS_PER_SHARD, Plan, PullPosition, ShardState, ShardStore, ShardsByGroup,
    Unhanded,
};

/// Maps a key to its shard, given the shard count.
pub type ShardOf = fn(&[u8], usize) -> usize;

/// The shard of `key` among `shards`: the 64-bit FNV-1a hash of the key's
/// bytes, modulo the shard count. Stable: it never changes between
/// versions, because data on disk depends on it.
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

/// The 6.824 lab's `key2shard`: the first byte modulo the shard count (0
/// for the empty key). Only for the lab's tests, whose keys "0".."9" then
/// land in ten different shards.
pub fn lab_shard_of(key: &[u8], shards: usize) -> usize {
    key.first().map_or(0, |&b| usize::from(b) % shards.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_function_is_stable() {
        // Fixed values: changing the hash would strand data on disk.
        assert_eq!(shard_of(b"", 10), (0xcbf2_9ce4_8422_2325u64 % 10) as usize);
        assert_eq!(
            shard_of(b"a", 1 << 20),
            (0xaf63_dc4c_8601_ec8cu64 % (1 << 20)) as usize
        );
        assert_eq!(lab_shard_of(b"0", 10), 8);
        assert_eq!(lab_shard_of(b"", 10), 0);
    }
}
