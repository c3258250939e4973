//! The commands of the golden scripts, each an input to the in-memory
//! cluster of `harness` followed by the `Ready`s it caused.
//!
//! | command | what it does |
//! |---|---|
//! | `cluster nodes=N [seed=S] [pre-vote=B] [check-quorum=B] [election-timeout=T] [heartbeat=T] [max-inflight=N] [max-append-bytes=N] [chunk-bytes=N]` | a new cluster of nodes 1..=N |
//! | `campaign ID` | the node's election timeout fires now |
//! | `tick [ID...] [n=K]` | K ticks of the nodes (default all), each followed by their `Ready`s |
//! | `run n=K` | K rounds of "tick every node, then `stabilize`" |
//! | `propose ID DATA...` | one proposal per word |
//! | `read-index ID CTX` | a read-index request with token CTX |
//! | `transfer ID TO` | leadership transfer from ID to TO |
//! | `compact ID` | the node snapshots its state machine at its applied index |
//! | `deliver [from=ID] [to=ID] [type=KIND]` | delivers the matching messages on the wire, in order, each followed by the receiver's `Ready`s |
//! | `drop [from=ID] [to=ID] [type=KIND]` | loses the matching messages on the wire |
//! | `stabilize` | processes `Ready`s and delivers messages until nothing is left |
//! | `step ID from=ID term=T KIND` | hands the node a made-up Heartbeat, RequestVote or TimeoutNow |
//! | `partition ID...` | cuts the given nodes off from the others (both ways) |
//! | `heal` | restores every link |
//! | `crash ID` / `restart ID` | loses the node's memory / starts it from what it persisted |
//! | `add-node ID` | starts a new machine with an empty disk, knowing no configuration |
//! | `add-learner ID NEW`, `promote ID NEW`, `remove ID OLD` | node ID proposes the configuration change |
//! | `config [ID...]` | each node's configuration (pending change, and on a leader each learner's lag) |
//! | `status [ID...]`, `log ID`, `progress ID` | shows roles and indexes, a log, a leader's view of its followers |
//!
//! Any command may end with `quiet`: it runs, and prints nothing.

use std::collections::BTreeMap;

use cairn_raft::{ConfChange, Heartbeat, Message, MessageBody, NodeId, ProgressState, RequestVote};

use super::render;
use crate::harness::Cluster;

/// The state of one running script.
#[derive(Default)]
pub(crate) struct Script {
    cluster: Option<Cluster>,
}

/// A command's words: positional ones and `key=value` ones.
struct Args {
    words: Vec<String>,
    options: BTreeMap<String, String>,
    location: String,
}

impl Args {
    fn parse(words: &[&str], location: &str) -> Self {
        let mut args = Self {
            words: Vec::new(),
            options: BTreeMap::new(),
            location: location.to_string(),
        };
        for word in words {
            match word.split_once('=') {
                Some((key, value)) => {
                    args.options.insert(key.to_string(), value.to_string());
                }
                None => args.words.push(word.to_string()),
            }
        }
        args
    }

    fn number<T: std::str::FromStr>(&self, text: &str) -> T {
        text.parse()
            .unwrap_or_else(|_| panic!("{}: `{text}` is not a number", self.location))
    }

    /// The positional word at `position`, as a number.
    fn nth(&self, position: usize) -> u64 {
        let word = self
            .words
            .get(position)
            .unwrap_or_else(|| panic!("{}: argument {} is missing", self.location, position + 1));
        self.number(word)
    }

    /// Every positional word, as node ids.
    fn ids(&self) -> Vec<NodeId> {
        self.words.iter().map(|w| self.number(w)).collect()
    }

    fn option<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.options.get(key).map(|value| self.number(value))
    }

    fn flag(&self, key: &str, default: bool) -> bool {
        match self.options.get(key).map(String::as_str) {
            None => default,
            Some("true") => true,
            Some("false") => false,
            Some(other) => panic!("{}: {key}={other} is not true or false", self.location),
        }
    }

    /// Whether a message matches the `from=`, `to=` and `type=` filters.
    fn matches(&self, message: &Message) -> bool {
        self.option("from")
            .is_none_or(|from: u64| message.from == from)
            && self.option("to").is_none_or(|to: u64| message.to == to)
            && self
                .options
                .get("type")
                .is_none_or(|kind| render::kind(message) == kind)
    }
}

impl Script {
    /// Runs one command line; returns its output lines.
    pub(crate) fn execute(&mut self, line: &str, location: &str) -> Vec<String> {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        let quiet = words.last() == Some(&"quiet");
        if quiet {
            words.pop();
        }
        let args = Args::parse(&words[1..], location);
        let mut out = Vec::new();
        if words[0] == "cluster" {
            self.cluster = Some(new_cluster(&args));
        } else {
            let cluster = self
                .cluster
                .as_mut()
                .unwrap_or_else(|| panic!("{location}: start with a `cluster` command"));
            run(cluster, words[0], &args, &mut out);
        }
        if quiet { Vec::new() } else { out }
    }
}

fn new_cluster(args: &Args) -> Cluster {
    let nodes = args.option("nodes").unwrap_or(3);
    let mut cluster = Cluster::with_config(nodes, args.option("seed").unwrap_or(1), |config| {
        config.pre_vote = args.flag("pre-vote", config.pre_vote);
        config.check_quorum = args.flag("check-quorum", config.check_quorum);
        let defaults = config.clone();
        config.election_timeout_ticks = args
            .option("election-timeout")
            .unwrap_or(defaults.election_timeout_ticks);
        config.heartbeat_ticks = args.option("heartbeat").unwrap_or(defaults.heartbeat_ticks);
        config.max_inflight_appends = args
            .option("max-inflight")
            .unwrap_or(defaults.max_inflight_appends);
        config.max_append_bytes = args
            .option("max-append-bytes")
            .unwrap_or(defaults.max_append_bytes);
        config.snapshot_chunk_bytes = args
            .option("chunk-bytes")
            .unwrap_or(defaults.snapshot_chunk_bytes);
    });
    cluster.trace = Some(Vec::new());
    cluster
}

fn run(cluster: &mut Cluster, command: &str, args: &Args, out: &mut Vec<String>) {
    match command {
        "campaign" => {
            let id = args.nth(0);
            cluster.raft_mut(id).campaign();
            process(cluster, &[id], "", out);
        }
        "unreachable" => {
            let id = args.nth(0);
            cluster.raft_mut(id).report_unreachable(args.nth(1));
            process(cluster, &[id], "", out);
        }
        "reachable" => {
            let id = args.nth(0);
            cluster.raft_mut(id).report_reachable(args.nth(1));
            process(cluster, &[id], "", out);
        }
        "tick" => tick(cluster, args, out),
        "run" => {
            for _ in 0..args.option("n").unwrap_or(1) {
                cluster.tick_all();
                stabilize(cluster, out);
            }
        }
        "propose" => propose(cluster, args, out),
        "read-index" => {
            let id = args.nth(0);
            if let Err(error) = cluster.raft_mut(id).read_index(args.nth(1)) {
                out.push(format!("{id}: error: {error}"));
            }
            process(cluster, &[id], "", out);
        }
        "transfer" => {
            let id = args.nth(0);
            if let Err(error) = cluster.raft_mut(id).transfer_leader(args.nth(1)) {
                out.push(format!("{id}: error: {error}"));
            }
            process(cluster, &[id], "", out);
        }
        "compact" => {
            let id = args.nth(0);
            cluster.compact(id);
            let index = cluster.raft(id).status().snapshot_index;
            out.push(format!("{id}: snapshot at {index}"));
        }
        "deliver" => deliver(cluster, args, out),
        "drop" => {
            let (dropped, kept) = cluster.pool.drain(..).partition(|m| args.matches(m));
            cluster.pool = kept;
            for message in dropped {
                out.push(format!("dropped {}", render::message(&message)));
            }
        }
        "stabilize" => stabilize(cluster, out),
        "step" => step(cluster, args, out),
        "partition" => cluster.partition(&args.ids()),
        "heal" => cluster.heal(),
        "crash" => cluster.crash(args.nth(0)),
        "restart" => {
            let id = args.nth(0);
            cluster.start(id);
            out.push(render::status(&cluster.raft(id).status()));
            process(cluster, &[id], "", out);
        }
        "status" => status(cluster, args, out),
        "add-node" => {
            let id = args.nth(0);
            cluster.add_node(id);
            process(cluster, &[id], "", out);
        }
        "add-learner" => conf_change(cluster, args, ConfChange::AddLearner(args.nth(1)), out),
        "promote" => conf_change(cluster, args, ConfChange::Promote(args.nth(1)), out),
        "remove" => conf_change(cluster, args, ConfChange::Remove(args.nth(1)), out),
        "config" => config(cluster, args, out),
        "log" => {
            let raft = cluster.raft(args.nth(0));
            let status = raft.status();
            for index in status.snapshot_index + 1..=status.last_index {
                out.push(render::entry(raft.entry(index).expect("in the log")));
            }
        }
        "progress" => progress(cluster, args.nth(0), out),
        other => panic!("{}: unknown command `{other}`", args.location),
    }
}

/// Processes the `Ready`s of `ids`, printing each line after `indent`.
fn process(cluster: &mut Cluster, ids: &[NodeId], indent: &str, out: &mut Vec<String>) {
    for &id in ids {
        cluster.process_ready(id);
        let trace = std::mem::take(cluster.trace.as_mut().expect("tracing"));
        for (node, ready) in trace {
            let lines = render::ready(node, &ready, |m| cluster.linked(m.from, m.to));
            out.extend(lines.into_iter().map(|line| format!("{indent}{line}")));
        }
    }
}

fn tick(cluster: &mut Cluster, args: &Args, out: &mut Vec<String>) {
    let ids = chosen_ids(cluster, args);
    for _ in 0..args.option("n").unwrap_or(1) {
        for &id in &ids {
            cluster.tick(id);
        }
        process(cluster, &ids, "", out);
    }
}

fn propose(cluster: &mut Cluster, args: &Args, out: &mut Vec<String>) {
    let id = args.nth(0);
    for word in &args.words[1..] {
        let data = bytes::Bytes::copy_from_slice(word.as_bytes());
        if let Err(error) = cluster.raft_mut(id).propose(data) {
            out.push(format!("{id}: error: {error}"));
        }
    }
    process(cluster, &[id], "", out);
}

/// Delivers the matching messages now on the wire (not those their
/// delivery causes), each followed by its receiver's `Ready`s.
fn deliver(cluster: &mut Cluster, args: &Args, out: &mut Vec<String>) {
    let (batch, kept): (Vec<Message>, Vec<Message>) =
        cluster.pool.drain(..).partition(|m| args.matches(m));
    cluster.pool = kept;
    for message in batch {
        let (from, to) = (message.from, message.to);
        let line = render::message(&message);
        if !cluster.linked(from, to) {
            out.push(format!("{line} (cut: lost)"));
            continue;
        }
        if !cluster.is_up(to) {
            out.push(format!("{line} (node {to} is down: lost)"));
            continue;
        }
        out.push(line);
        cluster.pool.insert(0, message);
        cluster.deliver(0);
        process(cluster, &[to], "  ", out);
    }
}

/// Processes every `Ready` and delivers every message until nothing is
/// left to do.
fn stabilize(cluster: &mut Cluster, out: &mut Vec<String>) {
    let everything = Args::parse(&[], "");
    for _ in 0..1_000 {
        process(cluster, &cluster.ids(), "", out);
        if cluster.pool.is_empty() {
            return;
        }
        deliver(cluster, &everything, out);
    }
    panic!("the cluster did not stabilize in 1000 rounds");
}

/// Hands a node a message no node sent (to show what it does with one).
fn step(cluster: &mut Cluster, args: &Args, out: &mut Vec<String>) {
    let to = args.nth(0);
    let last = cluster.raft(to).status().last_index;
    let body = match args.words.get(1).map(String::as_str) {
        Some("Heartbeat") => MessageBody::Heartbeat(Heartbeat {
            commit: 0,
            read_round: 0,
        }),
        Some("RequestVote") => MessageBody::RequestVote(RequestVote {
            pre_vote: false,
            transfer: false,
            last_index: last,
            last_term: cluster.raft(to).term(),
        }),
        Some("TimeoutNow") => MessageBody::TimeoutNow,
        other => panic!("{}: cannot make up a {other:?} message", args.location),
    };
    let message = Message {
        from: args.option("from").expect("from="),
        to,
        term: args.option("term").expect("term="),
        body,
    };
    out.push(render::message(&message));
    cluster.raft_mut(to).step(message);
    process(cluster, &[to], "  ", out);
}

fn status(cluster: &Cluster, args: &Args, out: &mut Vec<String>) {
    let ids = chosen_ids(cluster, args);
    for id in ids {
        if cluster.is_up(id) {
            out.push(render::status(&cluster.raft(id).status()));
        } else {
            out.push(format!("{id}: down"));
        }
    }
}

fn progress(cluster: &Cluster, id: NodeId, out: &mut Vec<String>) {
    for (follower, progress) in cluster.raft(id).progress() {
        let state = match progress.state() {
            ProgressState::Probe => "probe".to_string(),
            ProgressState::Replicate => "replicate".to_string(),
            ProgressState::Snapshot { index, offset } => {
                format!("snapshot index={index} offset={offset}")
            }
        };
        let inflight: Vec<String> = progress.inflight().iter().map(u64::to_string).collect();
        out.push(format!(
            "{follower}: {state} match={} next={} paused={} inflight=[{}] active={}",
            progress.match_index(),
            progress.next_index(),
            progress.is_paused(),
            inflight.join(","),
            progress.is_recently_active()
        ));
    }
}

fn conf_change(cluster: &mut Cluster, args: &Args, change: ConfChange, out: &mut Vec<String>) {
    let id = args.nth(0);
    if let Err(error) = cluster
        .raft_mut(id)
        .propose_conf_change(change, bytes::Bytes::new())
    {
        out.push(format!("{id}: error: {error}"));
    }
    process(cluster, &[id], "", out);
}

fn config(cluster: &Cluster, args: &Args, out: &mut Vec<String>) {
    let ids = chosen_ids(cluster, args);
    for id in ids {
        if !cluster.is_up(id) {
            out.push(format!("{id}: down"));
            continue;
        }
        let raft = cluster.raft(id);
        let mut line = format!("{id}: {}", render::config(raft.cluster()));
        if let Some(index) = raft.pending_conf_change() {
            line.push_str(&format!(" pending={index}"));
        }
        for &learner in &raft.cluster().learners {
            if let Some(lag) = raft.learner_lag(learner) {
                line.push_str(&format!(" lag({learner})={lag}"));
            }
        }
        out.push(line);
    }
}

/// The nodes a command names, or every node when it names none.
fn chosen_ids(cluster: &Cluster, args: &Args) -> Vec<NodeId> {
    if args.words.is_empty() {
        cluster.ids()
    } else {
        args.ids()
    }
}
