//! What the membership simulation tests share: proposing a change at
//! whichever server leads (retrying while no leader is ready), a writer
//! that submits numbered commands under the change, the final check that
//! the members hold every acknowledged command and agree on the
//! configuration, and a [`Monitor`] that watches every server's status for
//! two leaders in one term and for a removed server leading again.
//!
//! The history check is the lab state machine's: two servers that apply
//! different commands at one index fail the test as it happens, and every
//! acknowledged command must be applied by every member at the end.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_rsm::{
    ClusterConfig, ConfChange, ConfChangeError, MembershipError, Node, SubmitError, Term,
};

use crate::lab::{LabMachine, Tester, command, node_id, url};

/// How long a change may take to be accepted and applied.
pub const CHANGE_DEADLINE: Duration = Duration::from_secs(10);

/// The running leader among `servers`, waiting up to 10 s for one.
pub async fn leader(t: &Tester, servers: &[usize]) -> usize {
    let begin = tokio::time::Instant::now();
    while begin.elapsed() < Duration::from_secs(10) {
        if let Some(&server) = servers
            .iter()
            .find(|&&s| t.node(s).is_some_and(|n| n.status().is_leader()))
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.fail(format!("no leader among servers {servers:?}"))
}

/// The URL a change needs: a new learner's.
pub fn url_of(change: ConfChange) -> Option<String> {
    match change {
        ConfChange::AddLearner(id) => Some(url(id as usize - 1)),
        _ => None,
    }
}

/// Proposes `change` at the leader among `servers`, retrying while no
/// leader is known or the leader is not ready yet; a refusal for any other
/// reason is returned.
pub async fn change(
    t: &Tester,
    servers: &[usize],
    change: ConfChange,
) -> Result<ClusterConfig, MembershipError> {
    let url = url_of(change);
    let begin = tokio::time::Instant::now();
    loop {
        let server = leader(t, servers).await;
        let node = t.node(server).expect("a leader runs");
        let result = node
            .propose_conf_change(change, url.as_deref(), CHANGE_DEADLINE)
            .await;
        let retry = matches!(
            result,
            Err(MembershipError::Submit(SubmitError::NotLeader { .. }))
                | Err(MembershipError::Refused(
                    ConfChangeError::LeaderNotReady { .. } | ConfChangeError::ChangePending { .. }
                ))
        );
        if !retry || begin.elapsed() > CHANGE_DEADLINE {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Proposes `change` and fails the test unless it is made.
pub async fn must_change(t: &Tester, servers: &[usize], step: ConfChange) -> ClusterConfig {
    change(t, servers, step)
        .await
        .unwrap_or_else(|e| t.fail(format!("{step:?} failed: {e}")))
}

/// Promotes the learner on `server`, retrying while it is behind.
pub async fn promote(t: &Tester, servers: &[usize], server: usize) -> ClusterConfig {
    let begin = tokio::time::Instant::now();
    loop {
        match change(t, servers, ConfChange::Promote(node_id(server))).await {
            Ok(config) => return config,
            Err(MembershipError::Refused(ConfChangeError::LearnerBehind { .. }))
                if begin.elapsed() < CHANGE_DEADLINE =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => t.fail(format!("promoting server {server} failed: {error}")),
        }
    }
}

/// Hands leadership among `servers` to voter `to`, asking whoever leads
/// until `to` does.
pub async fn transfer(t: &Tester, servers: &[usize], to: usize) {
    let begin = tokio::time::Instant::now();
    loop {
        let lead = leader(t, servers).await;
        if lead == to {
            return;
        }
        if let Some(node) = t.node(lead) {
            let _ = node.transfer_leader(node_id(to)).await;
        }
        if begin.elapsed() > CHANGE_DEADLINE {
            t.fail(format!("leadership never moved to server {to}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client that submits numbered commands to the leader among
/// `servers` until stopped, and remembers those acknowledged.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub fn start(t: &Arc<Tester>, servers: Arc<Mutex<Vec<usize>>>, first: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let (t, stop2, acked) = (t.clone(), stop.clone(), acknowledged.clone());
        let task = tokio::spawn(async move {
            let mut value = first;
            while !stop2.load(Ordering::SeqCst) {
                let candidates = servers.lock().unwrap().clone();
                let leader = candidates
                    .iter()
                    .filter_map(|&s| t.node(s))
                    .find(|n| n.status().is_leader());
                match leader {
                    Some(node) => {
                        if node
                            .submit(command(value), Duration::from_secs(1))
                            .await
                            .is_ok()
                        {
                            acked.lock().unwrap().push(value);
                        }
                        value += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
        Self {
            stop,
            acknowledged,
            task,
        }
    }

    /// How many commands were acknowledged so far.
    pub fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Waits until `more` further commands are acknowledged; fails after
    /// 10 s (the group stopped committing).
    pub async fn goes_on(&self, t: &Tester, more: usize) {
        let wanted = self.count() + more;
        let begin = tokio::time::Instant::now();
        while self.count() < wanted {
            if begin.elapsed() > Duration::from_secs(10) {
                t.fail(format!(
                    "writes stopped: {} acknowledged, {wanted} wanted",
                    self.count()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops and returns the commands acknowledged.
    pub async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the writer ends");
        self.acknowledged.lock().unwrap().clone()
    }
}

/// Waits until every one of `servers` applied every command in
/// `acknowledged` and they agree on the configuration; fails otherwise.
/// Any two servers applying different commands at one index fails the
/// test as it happens (the lab's state machine checks it).
pub async fn check_members_agree(
    t: &Tester,
    servers: &[usize],
    acknowledged: &[u64],
) -> ClusterConfig {
    let wanted: BTreeSet<bytes::Bytes> = acknowledged.iter().map(|&v| command(v)).collect();
    let begin = tokio::time::Instant::now();
    loop {
        t.n_committed(0); // fails on any apply conflict so far
        let mut configs = Vec::new();
        for &server in servers {
            // A server just restarted may not run yet.
            let config = match t.node(server) {
                Some(node) => node.membership().await.ok().map(|m| m.config),
                None => None,
            };
            configs.push(config);
        }
        let missing = servers
            .iter()
            .map(|&s| {
                let shared = t.shared.lock().unwrap();
                let applied: BTreeSet<&bytes::Bytes> = shared.logs[s].values().collect();
                wanted.iter().filter(|c| !applied.contains(c)).count()
            })
            .collect::<Vec<_>>();
        let agree = configs.windows(2).all(|w| w[0] == w[1]);
        if agree
            && missing.iter().all(|&m| m == 0)
            && let Some(config) = configs.remove(0)
        {
            return config;
        }
        if begin.elapsed() > Duration::from_secs(10) {
            t.fail(format!(
                "servers {servers:?}: configurations {configs:?}, acknowledged commands missing {missing:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node of `server`, waiting up to a second for a server just
/// (re)started to run.
pub async fn running(t: &Tester, server: usize) -> Node<LabMachine> {
    let begin = tokio::time::Instant::now();
    loop {
        match t.node(server) {
            Some(node) => return node,
            None if begin.elapsed() < Duration::from_secs(1) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None => t.fail(format!("server {server} does not run")),
        }
    }
}

/// Starts spare `server` to join the group `via` (a member) belongs to.
pub async fn join(t: &Tester, server: usize, via: usize) {
    running(t, via).await;
    t.join(server, via);
}

/// The configuration `server` knows now.
pub async fn config_of(t: &Tester, server: usize) -> ClusterConfig {
    let node = running(t, server).await;
    match node.membership().await {
        Ok(membership) => membership.config,
        Err(error) => t.fail(format!("server {server} shows no membership: {error}")),
    }
}

pub fn voters(ids: &[usize]) -> BTreeSet<u64> {
    ids.iter().map(|&s| node_id(s)).collect()
}

/// How often the monitor looks at every server's status.
const MONITOR_INTERVAL: Duration = Duration::from_millis(2);

/// What the monitor saw.
#[derive(Default)]
struct Seen {
    /// The server seen leading each term.
    leaders: BTreeMap<Term, usize>,
    /// The highest term seen anywhere.
    max_term: Term,
    /// Removed servers, with the highest term seen when their removal was
    /// applied: leading in a later term means a quorum counted them.
    removed: BTreeMap<usize, Term>,
    /// The first broken promise.
    violation: Option<String>,
}

/// Watches every server's status while a test runs (sampling every
/// [`MONITOR_INTERVAL`] of simulated time): at most one leader per term,
/// and a removed server never leads again.
pub struct Monitor {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    pub fn start(t: &Arc<Tester>) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (t, seen2) = (t.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                for server in 0..t.n {
                    if let Some(status) = t.node(server).map(|n| n.status()) {
                        seen2
                            .lock()
                            .unwrap()
                            .look(server, status.term, status.is_leader());
                    }
                }
                tokio::time::sleep(MONITOR_INTERVAL).await;
            }
        });
        Self { seen, task }
    }

    /// Records that `server`'s removal was applied.
    pub fn removed(&self, server: usize) {
        let mut seen = self.seen.lock().unwrap();
        let term = seen.max_term;
        seen.removed.insert(server, term);
    }

    /// How many terms had a leader the monitor saw.
    pub fn leader_terms(&self) -> usize {
        self.seen.lock().unwrap().leaders.len()
    }

    /// Stops watching; fails the test if a promise was broken.
    pub fn finish(self, t: &Tester) {
        self.task.abort();
        if let Some(violation) = self.seen.lock().unwrap().violation.take() {
            t.fail(violation);
        }
    }
}

impl Seen {
    fn look(&mut self, server: usize, term: Term, leads: bool) {
        self.max_term = self.max_term.max(term);
        if !leads {
            return;
        }
        let first = *self.leaders.entry(term).or_insert(server);
        if first != server {
            self.violation.get_or_insert(format!(
                "two leaders in term {term}: servers {first} and {server}"
            ));
        }
        if let Some(&removed_at) = self.removed.get(&server)
            && term > removed_at
        {
            self.violation.get_or_insert(format!(
                "server {server}, removed by term {removed_at}, leads term {term}"
            ));
        }
    }
}
