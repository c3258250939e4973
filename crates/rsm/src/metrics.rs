//! [`Metrics`]: what a node counts and measures, in Prometheus form.
//!
//! Each node owns one registry (no global one: a test or a benchmark runs
//! several nodes in one process, each with its own numbers), with the
//! constant label `node="ID"`. Two kinds of series live in it:
//!
//! - **sampled at scrape time** from the node's [`NodeStatus`]: term, role,
//!   commit, applied and last index, snapshot index, Raft state and
//!   snapshot sizes. Nothing on the node's loop pays for these;
//!   [`Metrics::render`] copies the status in just before encoding.
//! - **counted where they happen**: proposals, entries per persisted
//!   batch, fsync latency, read-index rounds, snapshots taken (size and
//!   duration), the round trip of each message batch per peer, and the
//!   services' own request latencies per operation ([`RequestMetrics`]).
//!   Every one of these is an atomic add (a histogram's bucket and sum are
//!   atomics too): no lock on the hot path.
//!
//! Durations are taken with `tokio::time::Instant`, the simulator's virtual
//! clock in the simulation build, so instrumented code stays deterministic.
//! Serving the text over HTTP is the binary's job (`cairn ... serve
//! --metrics-listen`), not this crate's.

use std::time::Duration;

use cairn_raft::Role;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::node::NodeStatus;

/// Latency buckets in seconds: 50 µs to 10 s, for fsyncs, round trips and
/// requests alike.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// Entries-per-batch buckets: 1 to 4096.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Snapshot size buckets in bytes: 1 KiB to 1 GiB.
const SIZE_BUCKETS: &[f64] = &[
    1024.0,
    16_384.0,
    262_144.0,
    1_048_576.0,
    16_777_216.0,
    268_435_456.0,
    1_073_741_824.0,
];

/// A node's metrics. Cheap to clone (the series are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    status: StatusGauges,
    pub(crate) proposals: IntCounter,
    pub(crate) batch_entries: Histogram,
    pub(crate) fsync_seconds: Histogram,
    pub(crate) read_index_rounds: IntCounter,
    pub(crate) snapshot_bytes: Histogram,
    pub(crate) snapshot_seconds: Histogram,
    peer_round_trip_seconds: HistogramVec,
}

/// The series copied from [`NodeStatus`] at scrape time.
#[derive(Clone)]
struct StatusGauges {
    term: IntGauge,
    role: IntGaugeVec,
    commit: IntGauge,
    applied: IntGauge,
    last_index: IntGauge,
    snapshot_index: IntGauge,
    raft_state_bytes: IntGauge,
    snapshot_bytes: IntGauge,
    sessions: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The series of node `id`, in a registry of their own.
    pub fn new(id: u64) -> Self {
        let labels = [("node".to_string(), id.to_string())].into();
        let registry =
            Registry::new_custom(Some("cairn".into()), Some(labels)).expect("a valid prefix");
        let status = StatusGauges {
            term: gauge(&registry, "raft_term", "The node's current Raft term."),
            role: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "raft_role",
                        "1 for the node's current role, 0 for the others.",
                    ),
                    &["role"],
                )
                .expect("valid"),
            ),
            commit: gauge(&registry, "raft_commit_index", "The node's commit index."),
            applied: gauge(
                &registry,
                "raft_applied_index",
                "The last index applied to the state machine.",
            ),
            last_index: gauge(&registry, "raft_last_index", "The node's last log index."),
            snapshot_index: gauge(
                &registry,
                "raft_snapshot_index",
                "The index the latest snapshot covers.",
            ),
            raft_state_bytes: gauge(
                &registry,
                "raft_state_bytes",
                "The size of the persisted Raft state (log and hard state).",
            ),
            snapshot_bytes: gauge(
                &registry,
                "raft_snapshot_bytes",
                "The size of the latest snapshot of the state machine.",
            ),
            sessions: gauge(
                &registry,
                "sessions",
                "Client sessions the state machine holds (0 for a service without sessions).",
            ),
        };
        Self {
            status,
            proposals: counter(
                &registry,
                "raft_proposals_total",
                "Commands this node proposed as leader.",
            ),
            batch_entries: histogram(
                &registry,
                "raft_persisted_entries_per_batch",
                "Log entries written per persisted Ready (one fsync each: the group commit).",
                BATCH_BUCKETS,
            ),
            fsync_seconds: histogram(
                &registry,
                "raft_fsync_seconds",
                "Time to write and fsync one Ready's entries and hard state.",
                LATENCY_BUCKETS,
            ),
            read_index_rounds: counter(
                &registry,
                "raft_read_index_rounds_total",
                "Read-index rounds started (each serves every read queued meanwhile).",
            ),
            snapshot_bytes: histogram(
                &registry,
                "raft_snapshot_taken_bytes",
                "The size of each snapshot this node took.",
                SIZE_BUCKETS,
            ),
            snapshot_seconds: histogram(
                &registry,
                "raft_snapshot_taken_seconds",
                "Time to take and save each snapshot.",
                LATENCY_BUCKETS,
            ),
            peer_round_trip_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "raft_peer_round_trip_seconds",
                        "Round trip of one message batch (appends, heartbeats) to a peer and its answer.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["peer"],
                )
                .expect("valid"),
            ),
            registry,
        }
    }

    /// The registry, for a service's own series (which then appear in
    /// [`render`](Self::render)).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The round-trip histogram of batches to `peer`, resolved once per
    /// peer so that each observation is only atomics.
    pub(crate) fn peer_round_trip(&self, peer: u64) -> Histogram {
        self.peer_round_trip_seconds
            .with_label_values(&[&peer.to_string()])
    }

    /// Every series in the Prometheus text format (version 0.0.4), with
    /// the Raft state taken from `status` and the state machine's number
    /// of `sessions`.
    pub fn render(&self, status: &NodeStatus, sessions: Option<usize>) -> String {
        self.status.sample(status);
        self.status
            .sessions
            .set(sessions.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)));
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("encoding into memory does not fail");
        String::from_utf8(text).expect("the text format is UTF-8")
    }
}

impl StatusGauges {
    fn sample(&self, status: &NodeStatus) {
        let set =
            |gauge: &IntGauge, value: u64| gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        set(&self.term, status.term);
        set(&self.commit, status.commit);
        set(&self.applied, status.applied);
        set(&self.last_index, status.last_index);
        set(&self.snapshot_index, status.snapshot_index);
        set(&self.raft_state_bytes, status.raft_state_bytes);
        set(&self.snapshot_bytes, status.snapshot_bytes);
        for (role, name) in [
            (Role::Leader, "leader"),
            (Role::Follower, "follower"),
            (Role::Candidate, "candidate"),
            (Role::PreCandidate, "pre-candidate"),
        ] {
            let current = status.running && status.role == role;
            self.role.with_label_values(&[name]).set(i64::from(current));
        }
    }
}

/// Request latency per operation of one service, each operation's
/// histogram resolved at start so that timing a request takes no lock.
#[derive(Clone)]
pub struct RequestMetrics {
    operations: Vec<(&'static str, Histogram)>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}

impl RequestMetrics {
    /// The histograms `cairn_<service>_request_seconds{op=...}` for each
    /// of `operations`, registered in `metrics`.
    pub fn new(metrics: &Metrics, service: &str, operations: &[&'static str]) -> Self {
        let family = register(
            metrics.registry(),
            HistogramVec::new(
                HistogramOpts::new(
                    format!("{service}_request_seconds"),
                    format!(
                        "Time to answer one {service} request, by operation (errors included)."
                    ),
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["op"],
            )
            .expect("valid"),
        );
        let operations = operations
            .iter()
            .map(|&op| (op, family.with_label_values(&[op])))
            .collect();
        Self { operations }
    }

    /// Starts timing a request of `operation` (one of those given to
    /// [`new`](Self::new)); the time is recorded when the guard drops.
    pub fn time(&self, operation: &str) -> RequestTimer {
        let histogram = self
            .operations
            .iter()
            .find(|(op, _)| *op == operation)
            .map(|(_, histogram)| histogram.clone());
        RequestTimer {
            histogram,
            started: tokio::time::Instant::now(),
        }
    }
}

/// Records a request's duration when dropped.
#[must_use = "the request is timed until this guard drops"]
pub struct RequestTimer {
    histogram: Option<Histogram>,
    started: tokio::time::Instant,
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        if let Some(histogram) = &self.histogram {
            observe(histogram, self.started.elapsed());
        }
    }
}

/// Records `duration` in seconds.
pub(crate) fn observe(histogram: &Histogram, duration: Duration) {
    histogram.observe(duration.as_secs_f64());
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("each series is registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("valid"))
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid"))
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(registry, Histogram::with_opts(opts).expect("valid"))
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    fn status() -> NodeStatus {
        NodeStatus {
            id: 7,
            term: 3,
            role: Role::Leader,
            leader: Some(7),
            commit: 12,
            applied: 11,
            last_index: 12,
            snapshot_index: 0,
            raft_state_bytes: 100,
            snapshot_bytes: 0,
            running: true,
            stopped: None,
        }
    }

    #[test]
    fn the_text_carries_the_status_and_each_timed_request() {
        let metrics = Metrics::new(7);
        let requests = RequestMetrics::new(&metrics, "kv", &["get", "put"]);
        drop(requests.time("get"));
        drop(requests.time("get"));
        drop(requests.time("no such operation")); // ignored, not a panic
        metrics.proposals.inc_by(5);
        let text = metrics.render(&status(), Some(2));
        for line in [
            r#"cairn_raft_term{node="7"} 3"#,
            r#"cairn_raft_role{role="leader",node="7"} 1"#,
            r#"cairn_raft_role{role="follower",node="7"} 0"#,
            r#"cairn_raft_applied_index{node="7"} 11"#,
            r#"cairn_raft_proposals_total{node="7"} 5"#,
            r#"cairn_sessions{node="7"} 2"#,
            r#"cairn_kv_request_seconds_count{op="get",node="7"} 2"#,
            r#"cairn_kv_request_seconds_count{op="put",node="7"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
