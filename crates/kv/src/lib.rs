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
//!   **compare-and-swap** go through the log. Each carries the clerk's id
//!   and a sequence number; the store keeps, per clerk, the last number it
//!   applied and that write's answer, so a write the clerk retries (at
//!   another server, in another term, after a lost reply) is applied once
//!   and answered as the first time. The table is part of the snapshot.
//! - Keys are 1 byte to 4 KiB, values up to 1 MiB; anything else is refused
//!   with `InvalidArgument` before it reaches the log.
//!
//! ## Bounding the duplicate table
//!
//! The store remembers at most [`MAX_SESSIONS`] clerks. Beyond that, it
//! forgets the least recently active one (by the log index of its last
//! write: deterministic on every node). A forgotten clerk's next write is
//! refused with `session_expired` rather than applied, because the store
//! can no longer tell a retry from a new write; the clerk reports
//! [`KvError::SessionExpired`].
//!
//! ## Implementation caveats
//!
//! - A clerk's first write (sequence number 1) retried after its session
//!   was evicted would apply again; eviction needs 100,000 more recently
//!   active clerks in between.
//! - Every node keeps the whole data set in memory (a `BTreeMap`), and a
//!   snapshot serializes all of it.

mod client;
mod server;
mod store;

pub use client::{Client, ClientConfig, KvError, WriteOutcome};
pub use server::{
    KvServer, LEADER_ID_KEY, LEADER_URL_KEY, MAX_KEY_BYTES, MAX_VALUE_BYTES, validate,
};
pub use store::{KvStore, MAX_SESSIONS};
