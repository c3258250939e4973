//! # cairn-kv: a linearizable, exactly-once key/value store on Raft
//!
//! Each node is a [`KvServer`]: an `rsm::Node` whose state machine is a
//! [`KvStore`], serving the `cairn.kv.Kv` gRPC service and Raft's on one
//! port. Clients use the clerk, [`Client`].
//!
//! ## Operations
//!
//! - **Get** reads through the leader's read index (no log write) and is
//!   linearizable: a Get sees every write acknowledged before it started.
//!   A missing key answers "not found".
//! - **Put**, **Append** (to a missing key: a Put), **Delete** and
//!   **compare-and-swap** go through the log. Each carries the clerk's
//!   session id and a sequence number; the store keeps, per session, the
//!   last number it applied and that write's answer, so a write the clerk
//!   retries (at another server, in another term, after a lost reply) is
//!   applied once and answered as the first time. The table is part of the
//!   snapshot.
//! - Keys are 1 byte to 4 KiB ([`MAX_KEY_BYTES`]), values up to 1 MiB
//!   ([`MAX_VALUE_BYTES`]); anything else is refused with
//!   `InvalidArgument` by the clerk before it is sent, and by the server
//!   before it reaches the log. An append that would grow a value past the limit is refused when
//!   it is applied (it depends on the value then, the same on every node)
//!   and changes nothing: [`KvError::ValueTooLarge`]. Servers and clerks
//!   encode and decode gRPC messages up to [`MAX_MESSAGE_BYTES`], so a
//!   value at the limit always reads back.
//!
//! ## Sessions (the Raft dissertation, §6.3)
//!
//! A clerk's first write opens a session: a `Register` call puts a
//! registration in the log, and the clerk's id is that entry's index, so
//! ids are unique and never reused. The store remembers at most
//! [`MAX_SESSIONS`] sessions; beyond that it forgets the least recently
//! active one (by the log index of its last registration or write:
//! deterministic on every node). A write for a session the store does not
//! know, a first write included, is answered `session_expired` and not
//! applied, because the store can no longer tell a retry from a new
//! write. The clerk then opens a new session; if the write's only attempt
//! got that answer it certainly was not applied and is sent again under
//! the new session, otherwise its outcome is unknown and the clerk reports
//! [`KvError::SessionExpired`] (see [`Client`]).
//!
//! A clerk retries a request across servers with bounded, jittered
//! exponential backoff, follows a follower's leader hint (also to a node
//! it was not given), and stops at once on an answer retrying cannot
//! change (invalid argument, value too large, a message over the size
//! limit, an expired session whose write's outcome is unknown). It checks
//! keys and values against the limits before sending, so an oversized
//! value is refused at once whatever its size. When every node refuses the
//! connection (nothing listens there) for [`cairn_rpc::REFUSED_GIVE_UP`],
//! it stops with [`ReplicaError::Unreachable`](cairn_rpc::ReplicaError::Unreachable)
//! (in [`KvError::Replica`]) instead of waiting out its
//! deadline.
//!
//! ## Implementation caveats
//!
//! - Every one-shot clerk (each `cairn kv put`) costs a registration entry
//!   in the log besides its write, and a session that lives until 100,000
//!   more recently active ones push it out.
//! - Every node keeps the whole data set in memory (a `BTreeMap`), and a
//!   snapshot serializes all of it.

mod client;
mod server;
mod store;

pub use client::{Client, ClientConfig, KvError, WriteOutcome};
pub use server::{
    BACKUP_KIND, KvServer, LEADER_ID_KEY, LEADER_URL_KEY, MAX_KEY_BYTES, MAX_MESSAGE_BYTES,
    MAX_VALUE_BYTES,
};
pub use store::{KvStore, MAX_SESSIONS};
