//! # cairn-shardctrler: which replica group serves which shard
//!
//! The sharded key/value service splits its keys into a fixed number of
//! shards (10 by default, set when a cluster is created) and spreads them
//! over replica groups. The shard controller is the replicated service
//! that decides where each shard lives: it holds the numbered sequence of
//! [`Config`]urations, each assigning every shard to a group and naming
//! each group's servers. Each node is a [`CtrlerServer`], an `rsm::Node`
//! whose state machine is a [`Controller`]; clients use [`Client`].
//!
//! ## Operations
//!
//! - **Join** (groups with their servers), **Leave** (gids) and **Move**
//!   (a shard to a group) each make a new configuration, numbered one past
//!   the last. Join and Leave then [`rebalance`]: the shards are spread as
//!   evenly as possible (counts differ by at most one) while moving as few
//!   as possible, and the result depends only on the inputs, never on the
//!   iteration order of a hash map. With more groups than shards, some
//!   groups get none; with no groups, every shard is on gid 0. A Move is
//!   undone by a later Join or Leave if balance requires it.
//! - **Query** returns a configuration by number, or the latest (`-1`, or a
//!   number beyond it), through the leader's read index: the latest
//!   reflects every change completed before the query. Historical
//!   configurations come back exactly, server lists in their original
//!   order.
//! - Changes are exactly-once per clerk (client id and sequence number,
//!   a bounded duplicate table in the snapshot, as in `cairn-kv`; a clerk
//!   registers a session first, through the log).
//!   A change that cannot apply to the latest configuration (joining a gid
//!   that is present, leaving or moving to one that is not) is refused and
//!   changes nothing.
//! - **Register** opens a client session and answers its id: the log
//!   index of the registration, so ids are unique and increase with time.
//!   The sharded store's clerks take their ids here too, and its shards
//!   rely on that order to tell a forgotten client from a new one.
//!
//! ## Implementation caveats
//!
//! - Every configuration ever made is kept, in memory and in snapshots.
//! - Every registration opens a session here, the sharded store's clerks'
//!   included (they never send a change): many one-shot sharded clients
//!   push administrators' idle sessions out of the table sooner.
//! - The shard count is given to every node at start; nodes given
//!   different counts disagree until one restores the other's snapshot.

mod client;
mod config;
mod server;
mod state;

pub use client::{Client, CtrlerError};
pub use config::{Config, Gid, minimum_moves, rebalance};
pub use server::{CtrlerServer, MAX_ADDRESS_BYTES, MAX_GROUPS_PER_JOIN, MAX_SERVERS_PER_GROUP};
pub use state::{Controller, MAX_SESSIONS};

/// The shard count of a cluster created without one (the lab's `NShards`).
pub const DEFAULT_SHARDS: usize = 10;
