//! # cairn-testkit: the simulated world Cairn is tested in
//!
//! Whole-system tests run real Cairn nodes (real async code, real tonic
//! services) inside [madsim](https://docs.rs/madsim), a deterministic
//! simulator: one seed decides task scheduling, time, randomness and every
//! network fault, so a failing run is replayed exactly with
//! `MADSIM_TEST_SEED=<seed>`, which the test prints when it fails.
//!
//! The pieces:
//!
//! - `World` (simulation builds only): named nodes with addresses, each
//!   running an async init closure; `World::kill` and `World::restart`
//!   (the restart re-runs init on the node's surviving disk); network control
//!   with the exact semantics of 6.824's `labrpc` (unreliable mode, long
//!   delays, long reordering, disconnect, partitions, per-link cuts); RPC and
//!   byte counters. The network rules themselves live in
//!   `cairn_rpc::sim_net`, because every RPC passes through the RPC client.
//! - A simulated disk per node: [`cairn_storage::MemDisk`], which loses
//!   unsynced writes at a crash and may tear the last one.
//! - [`history`]: a recorder of operations with virtual call and return
//!   times, and [`linearizability`]: a checker for key/value histories
//!   (Get/Put/Append, partitioned per key, with a search budget) that tells
//!   `Ok`, `Illegal` and `Unknown` apart and writes illegal histories out.
//! - [`pattern`]: deterministic test bytes for the file store's tests.
//!
//! Tests never sleep to make progress: they advance virtual time (a
//! `tokio::time::sleep` in simulation costs nothing) or wait for a condition
//! with `wait_until`.
//!
//! ## Implementation caveats
//!
//! - madsim's tonic does not encode messages or speak HTTP/2; the real
//!   stack is covered by the real-process tests.
//! - The linearizability checker's timeout is a budget of search steps, so
//!   that it is deterministic inside the simulation, where the clock only
//!   moves when tasks yield.

pub mod history;
pub mod linearizability;
mod pattern;
#[cfg(madsim)]
mod wait;
#[cfg(madsim)]
mod world;

pub use pattern::pattern;
#[cfg(madsim)]
pub use wait::wait_until;
#[cfg(madsim)]
pub use world::{NodeContext, World};

/// Installs a `tracing` subscriber controlled by `RUST_LOG` (default: warn)
/// that writes through the test harness's capture. Safe to call many times.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
