//! # cairn-rpc: the wire layer
//!
//! Every Cairn process talks gRPC (tonic over HTTP/2, messages in protobuf).
//! This crate owns four things:
//!
//! 1. **The protocol definitions.** `proto/*.proto` are compiled at build
//!    time by `protox`, a pure-Rust protobuf compiler, so no system `protoc`
//!    is needed. The generated modules are re-exported here ([`echo`],
//!    [`mapreduce`], [`raft`], [`kv`], [`etcd`], [`shardctrler`], [`shardkv`]).
//! 2. **The client every service uses**, [`RpcClient`]: connect with a
//!    timeout, reconnect after a failure, a deadline on every call, and one
//!    typed error, [`RpcError`], whose variants say whether a retry makes
//!    sense ([`RpcError::is_retryable`]; a refused connection,
//!    [`RpcError::ConnectionRefused`], is told apart from a server that
//!    does not answer); and on top of it [`Replicas`], which finds and
//!    follows the leader of a replicated group, and gives up early when
//!    nothing listens at any of its addresses.
//! 3. **The server side**: [`serve`] and `serve_routes_on` bind a port
//!    and serve within named bounds ([`ServeOptions`]): at most
//!    [`MAX_CONNECTIONS`] connections (the excess closed at once), a
//!    [`HANDSHAKE_TIMEOUT`] and an [`IDLE_TIMEOUT`] per connection, and, for
//!    `Routes`, at most [`MAX_CONCURRENT_REQUESTS`] requests in flight (the
//!    excess answered `RESOURCE_EXHAUSTED`, "overloaded: ...", at once).
//!    [`kv_limits`] holds the limits of the key/value messages, which the
//!    key/value service and the sharded one share.
//! 4. **The hook into the simulated network.** In a simulation build
//!    (`RUSTFLAGS="--cfg madsim"`) every call made through [`RpcClient`]
//!    passes through `sim_net`, which applies the 6.824 `labrpc` rules
//!    (loss, delay, reordering, partitions) and counts RPCs and bytes. The
//!    test kit (`cairn-testkit`) drives it. In a normal build that module does
//!    not exist and calls go straight to tonic.
//!
//! ## One codebase, two builds
//!
//! `tokio` and `tonic` are the `madsim-tokio` and `madsim-tonic` crates,
//! renamed in the workspace manifest. Without `cfg(madsim)` they re-export the
//! real crates; with it, time, randomness, tasks and the network are
//! deterministic and driven by one seed. Code in this workspace takes its
//! randomness from [`seeded_rng`] so that it stays reproducible.
//!
//! ## Implementation caveats
//!
//! - The simulated tonic does not encode messages, so byte counts in
//!   simulation are `prost::Message::encoded_len`, not bytes on a socket.
//! - Only unary calls go through [`RpcClient`]; streaming RPCs are not
//!   wrapped by the simulated network rules.
//! - The request bound holds a permit until a handler's response is ready,
//!   not until a streamed body ends; it applies only to servers started
//!   with `serve_routes_on` (a built tonic `Router` cannot take a layer).
//! - The idle timeout closes a connection abruptly (no GOAWAY): a request
//!   that races with it fails `UNAVAILABLE`, and clients retry. A connection
//!   refused for the connection limit is closed without an HTTP/2 message.
//! - In simulation no limit applies: the simulated network has no sockets.

mod client;
#[cfg(not(madsim))]
mod connection;
mod error;
pub mod kv_limits;
#[cfg(not(madsim))]
mod overload;
mod random;
mod replicas;
mod serve;
#[cfg(madsim)]
pub mod sim_net;

pub use client::{ClientOptions, RpcClient};
pub use error::RpcError;
pub use random::seeded_rng;
pub use replicas::{
    LEADER_ID_KEY, LEADER_URL_KEY, MAX_LEARNED_SERVERS, REFUSED_GIVE_UP, ReplicaError, Replicas,
    not_leader,
};
pub use serve::{
    HANDSHAKE_TIMEOUT, HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT, IDLE_TIMEOUT,
    MAX_CONCURRENT_PEER_REQUESTS, MAX_CONCURRENT_REQUESTS, MAX_CONNECTIONS,
    MAX_STREAMS_PER_CONNECTION, ServeOptions, ServerTask, serve,
};
#[cfg(not(madsim))]
pub use serve::{serve_on, serve_on_with, serve_routes, serve_routes_on};

/// Generated code for `proto/echo.proto`: a minimal service used to check
/// connectivity and by the simulated network's self-tests.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod echo {
    tonic::include_proto!("cairn.echo");
}

/// Generated code for `proto/mapreduce.proto`: the coordinator and shuffle
/// services of `cairn-mapreduce`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod mapreduce {
    tonic::include_proto!("cairn.mapreduce");
}

/// Generated code for `proto/raft.proto`: the messages between the nodes
/// of a Raft group (`cairn-rsm`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod raft {
    tonic::include_proto!("cairn.raft");
}

/// Generated code for `proto/node.proto`: what a node of any Raft group
/// says about itself (`cairn-rsm` builds it; every replicated service
/// answers `Status` with it).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod node {
    tonic::include_proto!("cairn.node");
}

/// Generated code for `proto/kv.proto`: the replicated key/value service
/// (`cairn-kv`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod kv {
    tonic::include_proto!("cairn.kv");
}

/// Generated code for `proto/etcd.proto`: the few calls of etcd's v3 API
/// that `cairn bench kv` makes to compare with etcd.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

/// Generated code for `proto/shardctrler.proto`: the shard controller
/// (`cairn-shardctrler`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod shardctrler {
    tonic::include_proto!("cairn.shardctrler");
}

/// Generated code for `proto/shardkv.proto`: the sharded key/value
/// service (`cairn-shardkv`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod shardkv {
    tonic::include_proto!("cairn.shardkv");
}

/// Generated code for `proto/fs.proto`: the GFS-style file store
/// (`cairn-fs`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod fs {
    tonic::include_proto!("cairn.fs");
}

/// Generated code for `proto/backup.proto`: a consistent snapshot of any
/// Raft group, streamed from its leader (`cairn-rsm`'s backup service).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod backup {
    tonic::include_proto!("cairn.backup");
}

/// Re-exported so that dependants name one tonic (the renamed one).
pub use tonic;
