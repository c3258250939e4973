//! Membership change on a running node: [`Node::propose_conf_change`]
//! (add a learner, promote it, remove a member — one server at a time, as
//! the Raft core rules), [`Node::membership`], [`Node::transfer_leader`],
//! and how every node learns its peers' addresses as members come and go.
//!
//! The idea: the configuration lives in the log, and so does the address
//! of each member added after bootstrap — the configuration entry that
//! adds a learner carries its URL (the entry's `context` bytes, UTF-8).
//! Every node starts talking to the newcomer when it appends that entry
//! (the leader before it sends its first append), and stops talking to a
//! removed member when the removal commits (until then the removed node
//! must still hear of its removal). A restarted node relearns the
//! addresses from the entries it recovers.
//!
//! Compaction drops those entries, so a snapshot carries the URL of every
//! member of its configuration (voters and learners, bootstrap peers
//! included): the node that takes it stores them with it, a leader puts
//! the URLs it knows into every snapshot it sends, and a node reaches the
//! members a snapshot names when it restarts from it or installs it.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use cairn_raft::{ClusterConfig, ConfChange, InitialState, NodeId, SnapshotMeta};
use tokio::sync::oneshot;

use crate::driver::conf_changes;
use crate::error::MembershipError;
use crate::node::{Command, Node};
use crate::state_machine::StateMachine;
use crate::transport::Outbox;

/// The longest URL a member may have (a new member's, one a snapshot
/// names).
pub(crate) const MAX_URL_BYTES: usize = 256;

/// The group's configuration as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Voters, learners and removed ids (the latest configuration entry,
    /// committed or not).
    pub config: ClusterConfig,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// On the leader: how many of its entries each learner lacks (the
    /// learner can be promoted when this is at most the core's
    /// `promote_max_lag_entries`). Empty on other nodes.
    pub learner_lag: BTreeMap<NodeId, u64>,
    /// The URL of every member this node can reach (itself included):
    /// the bootstrap peers and the members added since, as their
    /// configuration entries carry them.
    pub urls: BTreeMap<NodeId, String>,
}

impl Membership {
    /// The member (voter or learner) already reached at `url`, if any
    /// (a trailing `/` does not count).
    pub fn member_at(&self, url: &str) -> Option<NodeId> {
        member_at(&self.config, &self.urls, url)
    }

    /// The id a new member gets: one above every id this group ever used
    /// (voters, learners, removed), so that no id is ever reused.
    pub fn fresh_id(&self) -> NodeId {
        let config = &self.config;
        let used = config
            .voters
            .iter()
            .chain(&config.learners)
            .chain(&config.removed);
        used.max().map_or(1, |&id| id + 1)
    }
}

impl<S: StateMachine> Node<S> {
    /// Proposes one configuration change on the leader and answers with
    /// the configuration it made once its entry is applied here. Adding a
    /// learner needs its `url`, which no current member may have
    /// ([`MembershipError::AddressInUse`]). Fails with
    /// [`SubmitError::NotLeader`](crate::SubmitError::NotLeader) (ask the
    /// hinted leader), a refusal that says what to do
    /// ([`MembershipError::Refused`]: a change pending, a learner behind by
    /// N entries, a removed id, ...), or a timeout after `deadline` (the
    /// change may still be made: look at [`membership`](Self::membership)).
    pub async fn propose_conf_change(
        &self,
        change: ConfChange,
        url: Option<&str>,
        deadline: Duration,
    ) -> Result<ClusterConfig, MembershipError> {
        let context = match (change, url) {
            (ConfChange::AddLearner(id), None) => return Err(MembershipError::NoUrl { id }),
            (ConfChange::AddLearner(_), Some(url)) => {
                // This node's own address; the node task checks its peers'.
                let own = self.status().id;
                let own_url = self.peers.iter().filter(|(id, _)| **id == own);
                if let Some(id) = member_at(&ClusterConfig::new([own]), own_url, url) {
                    return Err(address_in_use(id, url));
                }
                Bytes::copy_from_slice(url.as_bytes())
            }
            _ => Bytes::new(),
        };
        let (reply, answer) = oneshot::channel();
        self.offer(Command::ConfChange {
            change,
            context,
            reply,
        })?;
        match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.gone().into()),
            Err(_) => Err(crate::SubmitError::Timeout.into()),
        }
    }

    /// The configuration this node knows, with each learner's lag when it
    /// is the leader.
    pub async fn membership(&self) -> Result<Membership, MembershipError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Membership { reply }).await?;
        let mut membership = answer.await.map_err(|_| self.gone())?;
        // The bootstrap peers' URLs (this node's own among them) where the
        // transport knows none.
        for (id, url) in self.peers.iter() {
            membership.urls.entry(*id).or_insert_with(|| url.clone());
        }
        Ok(membership)
    }

    /// Asks the leader to hand leadership to voter `to`; a node that is
    /// not a voter is refused ([`MembershipError::NotVoter`]).
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), MembershipError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Transfer { to, reply }).await?;
        answer.await.unwrap_or_else(|_| Err(self.gone().into()))
    }

    /// The id of this node's cluster, which a node joining the group is
    /// started with (`NodeConfig::join`).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }
}

/// The member of `config` whose URL in `urls` is `url` (a trailing `/`
/// does not count), if any.
fn member_at<'a>(
    config: &ClusterConfig,
    urls: impl IntoIterator<Item = (&'a NodeId, &'a String)>,
    url: &str,
) -> Option<NodeId> {
    let wanted = url.trim_end_matches('/');
    urls.into_iter()
        .find(|(id, known)| config.is_member(**id) && known.trim_end_matches('/') == wanted)
        .map(|(&id, _)| id)
}

fn address_in_use(id: NodeId, url: &str) -> MembershipError {
    MembershipError::AddressInUse {
        id,
        url: url.to_string(),
    }
}

/// In the node task, before a change is proposed: a learner is not added
/// at the address of a member in `config` (`urls`: the peers' addresses).
pub(crate) fn check_address(
    change: ConfChange,
    context: &Bytes,
    config: &ClusterConfig,
    urls: &BTreeMap<NodeId, String>,
) -> Result<(), MembershipError> {
    let ConfChange::AddLearner(_) = change else {
        return Ok(());
    };
    let url = String::from_utf8_lossy(context);
    match member_at(config, urls, &url) {
        Some(id) => Err(address_in_use(id, &url)),
        None => Ok(()),
    }
}

/// The peers a node adds and drops beyond its flags: at restart, the
/// members its snapshot names (with their URLs) and those added in its
/// recovered log; when it installs a leader's snapshot, the members that
/// snapshot names. A removal in the recovered log drops nobody here: it
/// may be uncommitted and rolled back, and while it is not committed the
/// node must still answer the member it removes (its responses travel on
/// its own stream to that peer). The driver drops the peer when it applies
/// the removal again, as it does at run time.
pub(crate) struct AddressChanges {
    urls: BTreeMap<NodeId, String>,
    changes: Vec<(ConfChange, Bytes)>,
    removed: Vec<NodeId>,
}

impl AddressChanges {
    pub(crate) fn recovered(initial: &InitialState) -> Self {
        let mut changes = match &initial.snapshot {
            Some(snapshot) => Self::of_snapshot(&snapshot.meta),
            None => Self {
                urls: BTreeMap::new(),
                changes: Vec::new(),
                removed: Vec::new(),
            },
        };
        changes.changes = conf_changes(&initial.entries).collect();
        changes
    }

    /// The members a snapshot names, and the ids it says were removed.
    pub(crate) fn of_snapshot(meta: &SnapshotMeta) -> Self {
        Self {
            urls: meta.urls.clone(),
            changes: Vec::new(),
            removed: meta.config.removed.iter().copied().collect(),
        }
    }

    pub(crate) fn apply_to<S: StateMachine>(self, outbox: &mut Outbox<S>) {
        for id in self.removed {
            outbox.remove_peer(id);
        }
        for (id, url) in &self.urls {
            outbox.add_peer(*id, url);
        }
        for (change, context) in self.changes {
            match change {
                ConfChange::AddLearner(id) => {
                    if let Ok(url) = std::str::from_utf8(&context) {
                        outbox.add_peer(id, url);
                    }
                }
                ConfChange::Remove(_) | ConfChange::Promote(_) => {}
            }
        }
    }
}
