//! `member list|add-learner|promote|remove` and `transfer-leader`: the
//! membership commands of any Raft group (`cairn kv`, `cairn shardctl`,
//! `cairn shardkv --gid G`), one implementation over the `Members` gRPC
//! service every node serves.
//!
//! The idea: the three commands differ only in how they find the group's
//! endpoints; each hands them to [`run`] or [`transfer_leader`], which
//! call the leader (following its hint, as every client of a group does)
//! and print the configuration it answers with, as text or as JSON with
//! stable field names (`cluster_id`, `answered_by`, `leader`, `voters`,
//! `learners` with `lag`, `removed`, `added`).

use std::time::Duration;

use anyhow::Context as _;
use cairn_rpc::node::members_client::MembersClient;
use cairn_rpc::node::{
    ChangeMembersRequest, JoinRequest, ListMembersRequest, MemberState, MembersReply,
    TransferLeaderRequest, change_members_request::Change,
};
use cairn_rpc::{ClientOptions, ReplicaError, Replicas, RpcClient};
use clap::{Args, Subcommand};

use crate::progress::print_stdout;

/// The deadline of one call to one node.
const CALL_TIMEOUT: Duration = Duration::from_secs(7);

/// What `member` does.
#[derive(Debug, Subcommand)]
pub(crate) enum MemberAction<T: Args> {
    /// Print the group's voters, learners (with how far behind each is,
    /// when the leader answers) and removed ids.
    List(ListArgs<T>),
    /// Add a new node, running at URL, as a learner: it gets the next id
    /// never used in the group and receives the log; promote it once it
    /// has caught up. Start the node with `serve --join` instead to have it
    /// ask for itself.
    AddLearner(AddLearnerArgs<T>),
    /// Make a learner a voter (refused, saying by how much, while it is
    /// behind the leader).
    Promote(IdArgs<T>),
    /// Remove a voter or a learner for good (its id is never reused; a
    /// wiped machine rejoins under a new id).
    Remove(IdArgs<T>),
}

/// `member list`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct ListArgs<T: Args> {
    /// Print the configuration as the first endpoint knows it, without
    /// asking the leader (to compare what the nodes know).
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    pub(crate) target: T,
}

/// `member add-learner`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct AddLearnerArgs<T: Args> {
    /// The new node's URL, http://HOST:PORT (no current member may have it).
    url: String,
    #[command(flatten)]
    pub(crate) target: T,
}

/// The arguments of the commands that name one node.
#[derive(Debug, Args)]
pub(crate) struct IdArgs<T: Args> {
    /// The node's id (see `member list`).
    id: u64,
    #[command(flatten)]
    pub(crate) target: T,
}

impl<T: Args> MemberAction<T> {
    /// The endpoint arguments of the group.
    pub(crate) fn target(&self) -> &T {
        match self {
            Self::List(args) => &args.target,
            Self::AddLearner(args) => &args.target,
            Self::Promote(args) | Self::Remove(args) => &args.target,
        }
    }
}

/// Where a group's nodes are and how to talk to them.
pub(crate) struct Group {
    /// The nodes given (the leader is found among them and their hints).
    pub(crate) endpoints: Vec<String>,
    /// Give up after this long.
    pub(crate) timeout: Duration,
    /// Print JSON.
    pub(crate) json: bool,
    /// How the operator's commands name the group, in advice printed: the
    /// command (`cairn kv`) and the flags after it (` --gid 2`).
    pub(crate) command: (&'static str, String),
}

impl Group {
    fn replicas(&self) -> anyhow::Result<Replicas> {
        Replicas::new(&self.endpoints, CALL_TIMEOUT, self.timeout)
            .map_err(|e| anyhow::anyhow!("{e}; pass --endpoints http://HOST:PORT,..."))
    }
}

/// Runs `member ACTION` on `group`.
pub(crate) async fn run<T: Args>(action: MemberAction<T>, group: &Group) -> anyhow::Result<()> {
    let (change, what) = match action {
        MemberAction::List(args) => return list(group, args.local).await,
        MemberAction::AddLearner(args) => (Change::AddLearner(args.url.clone()), "add-learner"),
        MemberAction::Promote(args) => (Change::Promote(args.id), "promote"),
        MemberAction::Remove(args) => (Change::Remove(args.id), "remove"),
    };
    let request = ChangeMembersRequest {
        change: Some(change.clone()),
    };
    let reply = match self::change(group, request, what).await {
        Ok(reply) => reply,
        Err(error) => return already_made(group, &change, error).await,
    };
    let done = match change {
        Change::AddLearner(url) => format!(
            "node {} added as a learner at {url}; once it has caught up: {} member promote {}{}",
            reply.added, group.command.0, reply.added, group.command.1
        ),
        Change::Promote(id) => format!("node {id} is a voter"),
        Change::Remove(id) => format!("node {id} removed (its id is never reused)"),
    };
    print_reply(group.json, &reply, &done);
    Ok(())
}

/// A promotion or removal refused because it was already made (a retry
/// whose first reply was lost, or a second run) is a success: the
/// leader's view says so. Any other refusal is `error`.
async fn already_made(group: &Group, change: &Change, error: anyhow::Error) -> anyhow::Result<()> {
    let Ok(view) = leader_view(group).await else {
        return Err(error);
    };
    let done = match *change {
        Change::Promote(id) if view.voters.iter().any(|m| m.id == id) => {
            format!("node {id} is already a voter")
        }
        Change::Remove(id) if view.removed.contains(&id) => {
            format!("node {id} is already removed (its id is never reused)")
        }
        _ => return Err(error),
    };
    print_reply(group.json, &view, &done);
    Ok(())
}

/// Sends one change to the group's leader; `what` names the command in
/// errors.
pub(crate) async fn change(
    group: &Group,
    request: ChangeMembersRequest,
    what: &str,
) -> anyhow::Result<MembersReply> {
    group
        .replicas()?
        .request(request, |channel, request| async move {
            MembersClient::new(channel).change(request).await
        })
        .await
        .map_err(|e| refused(what, e))
}

/// `transfer-leader ID`: hands the group's leadership to voter `to`.
pub(crate) async fn transfer_leader(to: u64, group: &Group) -> anyhow::Result<()> {
    let reply =
        group
            .replicas()?
            .request(
                TransferLeaderRequest { to },
                |channel, request| async move {
                    MembersClient::new(channel).transfer_leader(request).await
                },
            )
            .await
            .map_err(|e| refused("transfer-leader", e))?;
    print_reply(group.json, &reply, &format!("node {to} leads"));
    Ok(())
}

/// Asks the group behind `endpoints` to add a new node at `url` as a
/// learner; answers with its id, the cluster id and the members.
pub(crate) async fn join(group: &Group, url: &str) -> anyhow::Result<MembersReply> {
    let request = JoinRequest { url: url.into() };
    group
        .replicas()?
        .request(request, |channel, request| async move {
            MembersClient::new(channel).join(request).await
        })
        .await
        .map_err(|e| refused("join", e))
}

/// The configuration as the leader knows it (or any node, if none leads).
pub(crate) async fn leader_view(group: &Group) -> anyhow::Result<MembersReply> {
    let reply = group
        .replicas()?
        .request(ListMembersRequest {}, |channel, request| async move {
            MembersClient::new(channel).list(request).await
        })
        .await
        .map_err(|e| refused("member list", e))?;
    if reply.leader == 0 || reply.leader == reply.answered_by {
        return Ok(reply);
    }
    // A follower answered: ask the leader it names, for the learners' lag.
    let leader_url = reply.voters.iter().find(|m| m.id == reply.leader);
    match leader_url {
        Some(leader) if !leader.url.is_empty() => {
            Ok(list_at(&leader.url, CALL_TIMEOUT).await.unwrap_or(reply))
        }
        _ => Ok(reply),
    }
}

/// The configuration as the node at `url` knows it.
pub(crate) async fn list_at(url: &str, timeout: Duration) -> anyhow::Result<MembersReply> {
    let options = ClientOptions {
        connect_timeout: timeout.min(Duration::from_secs(1)),
        call_timeout: timeout,
    };
    let client = RpcClient::new(url.to_string(), options)?;
    let reply = client
        .call(ListMembersRequest {}, |channel, request| async move {
            MembersClient::new(channel).list(request).await
        })
        .await
        .with_context(|| format!("asking {url} for its members"))?;
    Ok(reply)
}

async fn list(group: &Group, local: bool) -> anyhow::Result<()> {
    let reply = if local {
        let first = group.endpoints.first().context("pass --endpoints")?;
        list_at(first, group.timeout).await?
    } else {
        leader_view(group).await?
    };
    print_reply(group.json, &reply, "");
    Ok(())
}

/// The error to show for a refused call: the server's own words for a
/// refusal (they say what to do), the replica error otherwise.
fn refused(what: &str, error: ReplicaError) -> anyhow::Error {
    match error {
        ReplicaError::InvalidArgument(message) => anyhow::anyhow!("{what} refused: {message}"),
        ReplicaError::Refused {
            code: cairn_rpc::tonic::Code::Unimplemented,
            ..
        } => {
            anyhow::anyhow!(
                "{what}: the endpoints do not serve membership commands (a node of an older \
                 version, or not a Raft group's node); check --endpoints"
            )
        }
        error => anyhow::anyhow!("{what}: {error}"),
    }
}

/// The reply as JSON, with stable field names.
pub(crate) fn reply_json(reply: &MembersReply) -> serde_json::Value {
    let member = |m: &MemberState| {
        let mut value = serde_json::json!({ "id": m.id, "url": m.url });
        if let Some(lag) = m.lag {
            value["lag"] = lag.into();
        }
        value
    };
    serde_json::json!({
        "cluster_id": reply.cluster_id,
        "answered_by": reply.answered_by,
        "leader": (reply.leader != 0).then_some(reply.leader),
        "voters": reply.voters.iter().map(member).collect::<Vec<_>>(),
        "learners": reply.learners.iter().map(member).collect::<Vec<_>>(),
        "removed": reply.removed,
        "added": (reply.added != 0).then_some(reply.added),
    })
}

fn print_reply(json: bool, reply: &MembersReply, done: &str) {
    if json {
        print_stdout(&format!("{}\n", reply_json(reply)));
        return;
    }
    let mut text = String::new();
    if !done.is_empty() {
        text.push_str(&format!("{done}\n"));
    }
    let leader = match reply.leader {
        0 => "no leader known".to_string(),
        id => format!("leader {id}"),
    };
    text.push_str(&format!(
        "cluster {}: {leader} (as node {} knows it)\n",
        reply.cluster_id, reply.answered_by
    ));
    for (role, members) in [("voter", &reply.voters), ("learner", &reply.learners)] {
        for member in members {
            let lag = member
                .lag
                .map(|lag| format!("  {lag} entries behind"))
                .unwrap_or_default();
            text.push_str(&format!(
                "  node {:<3} {role:<8} {}{lag}\n",
                member.id, member.url
            ));
        }
    }
    if !reply.removed.is_empty() {
        let removed: Vec<String> = reply.removed.iter().map(u64::to_string).collect();
        text.push_str(&format!("  removed: {}\n", removed.join(", ")));
    }
    print_stdout(&text);
}

/// `transfer-leader`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct TransferArgs<T: Args> {
    /// The voter to hand leadership to.
    pub(crate) id: u64,
    #[command(flatten)]
    pub(crate) target: T,
}
