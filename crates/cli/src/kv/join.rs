//! `cairn kv serve --join URL,...`: a new, empty node asks a running
//! cluster to add it, then runs as the member it was made.
//!
//! The idea: the cluster, not the operator, picks the new node's id (the
//! leader's `Join` answers one never used in the group), so a wiped
//! machine can never come back under an old id. The answer (id, cluster
//! id, every member's URL) is stored in the data directory (the file
//! [`JOINED_FILE`], written atomically) before the node starts; every later
//! start of that data directory resumes from it, whatever `--join` says,
//! and never joins again. The node starts as a learner
//! (`NodeConfig::join`); a task reports how far behind the leader it is
//! and, with `--auto-promote`, asks to be promoted once it has caught up
//! (the leader has the last word: it refuses while the learner is behind,
//! and the task asks again).
//!
//! A crash between the cluster's answer and the file's write leaves a
//! learner that never runs: joining again at the same URL is answered
//! with that learner's id (the leader treats it as a retry), or
//! `cairn kv member remove ID` removes it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cairn_storage::{Disk, write_atomic};

use crate::member::{self, Group};

/// The file, in the data directory, that holds a joined node's identity.
pub(crate) const JOINED_FILE: &str = "joined";
const HEADER: &str = "cairn joined node v1";
/// How often the joining node reports its progress (and, with
/// `--auto-promote`, asks to be promoted).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Under this many entries behind, the node says it has caught up and,
/// with `--auto-promote`, asks to be promoted (the leader checks again
/// against its own threshold).
const CAUGHT_UP_ENTRIES: u64 = 100;

/// What the cluster made of a joined node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Joined {
    /// Its id, chosen by the leader.
    pub(crate) id: u64,
    /// The cluster it belongs to.
    pub(crate) cluster_id: String,
    /// Every member's URL when it joined, its own included.
    pub(crate) peers: BTreeMap<u64, String>,
}

impl Joined {
    fn encode(&self) -> String {
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|(id, u)| format!("{id}={u}"))
            .collect();
        format!(
            "{HEADER}\nnode {}\ncluster {}\npeers {}\n",
            self.id,
            self.cluster_id,
            peers.join(",")
        )
    }

    fn decode(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let id = lines.next()?.strip_prefix("node ")?.parse().ok()?;
        let cluster_id = lines.next()?.strip_prefix("cluster ")?.to_string();
        let peers = lines.next()?.strip_prefix("peers ")?;
        let peers =
            super::serve::parse_peers(&peers.split(',').map(String::from).collect::<Vec<_>>());
        Some(Self {
            id,
            cluster_id,
            peers: peers.ok()?,
        })
    }

    /// The identity stored in the data directory behind `disk`, if this
    /// node joined a cluster.
    pub(crate) fn load(disk: &dyn Disk, data_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = Path::new(JOINED_FILE);
        if !disk.exists(path) {
            return Ok(None);
        }
        let shown = data_dir.join(JOINED_FILE);
        let bytes = disk
            .read(path)
            .with_context(|| format!("reading {}", shown.display()))?;
        let joined = std::str::from_utf8(&bytes).ok().and_then(Self::decode);
        joined.map(Some).with_context(|| {
            format!(
                "{} is damaged; the node cannot tell which member it is. Remove the data \
                 directory and join again (then remove the old id: cairn kv member remove ID)",
                shown.display()
            )
        })
    }

    fn store(&self, disk: &dyn Disk) -> anyhow::Result<()> {
        write_atomic(disk, Path::new(JOINED_FILE), self.encode().as_bytes())
            .context("storing the node's identity in the data directory")
    }
}

/// Asks the cluster at `endpoints` to add this node (reached at `url`)
/// and stores what it answers; the caller starts the node with it.
pub(crate) async fn join(
    disk: &dyn Disk,
    endpoints: &[String],
    url: &str,
) -> anyhow::Result<Joined> {
    if disk.exists(Path::new("raft")) {
        bail!(
            "this data directory already holds a node that did not join with --join (one started \
             with --peers); start it with its --id and --peers, or pass an empty --data-dir to \
             join as a new node"
        );
    }
    let group = Group {
        endpoints: endpoints.to_vec(),
        timeout: Duration::from_secs(30),
        json: false,
        command: ("cairn kv", String::new()),
    };
    tracing::info!(
        "asking the cluster at {} to add this node at {url}",
        endpoints.join(",")
    );
    let reply = member::join(&group, url).await?;
    let mut peers: BTreeMap<u64, String> = reply
        .voters
        .iter()
        .chain(&reply.learners)
        .filter(|m| !m.url.is_empty())
        .map(|m| (m.id, m.url.clone()))
        .collect();
    peers.insert(reply.added, url.to_string());
    let joined = Joined {
        id: reply.added,
        cluster_id: reply.cluster_id,
        peers,
    };
    joined.store(disk)?;
    Ok(joined)
}

/// Reports, every [`PROGRESS_INTERVAL`], how far behind the leader node
/// `id` is, until it is a voter; with `auto_promote` asks for its
/// promotion once it has caught up.
pub(crate) async fn report_progress(id: u64, endpoints: Vec<String>, auto_promote: bool) {
    let group = Group {
        endpoints,
        timeout: Duration::from_secs(5),
        json: false,
        command: ("cairn kv", String::new()),
    };
    let mut said_caught_up = false;
    loop {
        tokio::time::sleep(PROGRESS_INTERVAL).await;
        let Ok(view) = member::leader_view(&group).await else {
            continue;
        };
        if view.voters.iter().any(|m| m.id == id) {
            tracing::info!("node {id} is a voter");
            return;
        }
        let Some(lag) = view
            .learners
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.lag)
        else {
            continue;
        };
        if lag > CAUGHT_UP_ENTRIES {
            tracing::info!("node {id}: catching up: {lag} entries behind");
            continue;
        }
        if auto_promote {
            promote(&group, id).await;
        } else if !said_caught_up {
            said_caught_up = true;
            tracing::info!(
                "node {id} has caught up ({lag} entries behind); promote it: cairn kv member promote {id}"
            );
        }
    }
}

async fn promote(group: &Group, id: u64) {
    use cairn_rpc::node::{ChangeMembersRequest, change_members_request::Change};
    let request = ChangeMembersRequest {
        change: Some(Change::Promote(id)),
    };
    let promoted = member::change(group, request, "promote").await;
    match promoted {
        Ok(_) => tracing::info!("node {id} promoted itself to voter"),
        Err(error) => tracing::info!("node {id}: {error}; asking again"),
    }
}
