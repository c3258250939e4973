//! How the golden scripts print what the core does: one line per item of a
//! `Ready`, prefixed by the node, in the order the caller performs the
//! steps (`Ready`'s documentation numbers them).
//!
//! - An entry is `index@term` and its data (`noop` for a leader's no-op).
//! - A message is `from->to Kind term=T` and its fields; a message sent on
//!   a cut link is marked `(cut)`: the network loses it.

use bytes::Bytes;
use cairn_raft::{
    ClusterConfig, ConfChange, ConfigEntry, Entry, EntryKind, Message, MessageBody, NodeId, Ready,
    Reject, Role, Status,
};

/// An entry: `2@1 "x"` is index 2, term 1, data `x`.
pub(super) fn entry(entry: &Entry) -> String {
    match entry.kind {
        EntryKind::Noop => format!("{}@{} noop", entry.index, entry.term),
        EntryKind::Normal => format!("{}@{} {}", entry.index, entry.term, data(&entry.data)),
        EntryKind::Config => {
            let decoded = ConfigEntry::decode(entry.data.clone()).expect("a valid config entry");
            let change = match decoded.change {
                ConfChange::AddLearner(id) => format!("add-learner {id}"),
                ConfChange::Promote(id) => format!("promote {id}"),
                ConfChange::Remove(id) => format!("remove {id}"),
            };
            format!(
                "{}@{} conf {change}: {}",
                entry.index,
                entry.term,
                config(&decoded.config)
            )
        }
    }
}

/// A configuration: `voters=[1,2,3] learners=[4] removed=[5]` (empty
/// learner and removed lists are left out).
pub(super) fn config(config: &ClusterConfig) -> String {
    let list = |ids: &std::collections::BTreeSet<NodeId>| {
        let shown: Vec<String> = ids.iter().map(u64::to_string).collect();
        format!("[{}]", shown.join(","))
    };
    let mut out = format!("voters={}", list(&config.voters));
    if !config.learners.is_empty() {
        out.push_str(&format!(" learners={}", list(&config.learners)));
    }
    if !config.removed.is_empty() {
        out.push_str(&format!(" removed={}", list(&config.removed)));
    }
    out
}

fn data(data: &Bytes) -> String {
    match std::str::from_utf8(data) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("<{} bytes>", data.len()),
    }
}

fn entries(list: &[Entry]) -> String {
    let shown: Vec<String> = list.iter().map(entry).collect();
    format!("[{}]", shown.join(", "))
}

/// The name of a message's kind, as scripts filter on it.
pub(super) fn kind(message: &Message) -> &'static str {
    match message.body {
        MessageBody::AppendEntries(_) => "AppendEntries",
        MessageBody::AppendEntriesResponse(_) => "AppendEntriesResponse",
        MessageBody::Heartbeat(_) => "Heartbeat",
        MessageBody::HeartbeatResponse(_) => "HeartbeatResponse",
        MessageBody::RequestVote(_) => "RequestVote",
        MessageBody::RequestVoteResponse(_) => "RequestVoteResponse",
        MessageBody::InstallSnapshot(_) => "InstallSnapshot",
        MessageBody::InstallSnapshotResponse(_) => "InstallSnapshotResponse",
        MessageBody::TimeoutNow => "TimeoutNow",
    }
}

/// A message: `1->2 AppendEntries term=1 prev=0@0 commit=0 [1@1 noop]`.
pub(super) fn message(message: &Message) -> String {
    let head = format!(
        "{}->{} {} term={}",
        message.from,
        message.to,
        kind(message),
        message.term
    );
    let fields = match &message.body {
        MessageBody::AppendEntries(request) => format!(
            " prev={}@{} commit={} {}",
            request.prev_index,
            request.prev_term,
            request.commit,
            entries(&request.entries)
        ),
        MessageBody::AppendEntriesResponse(response) => {
            let reject = response.reject.as_ref().map_or(String::new(), reject);
            format!(" match={}{reject}", response.match_index)
        }
        MessageBody::Heartbeat(request) => {
            format!(
                " commit={} read-round={}",
                request.commit, request.read_round
            )
        }
        MessageBody::HeartbeatResponse(response) => {
            let lacking = response
                .lacking
                .map_or(String::new(), |last| format!(" lacking={last}"));
            format!(" read-round={}{lacking}", response.read_round)
        }
        MessageBody::RequestVote(request) => format!(
            "{}{} last={}@{}",
            flag(request.pre_vote, " pre-vote"),
            flag(request.transfer, " transfer"),
            request.last_index,
            request.last_term
        ),
        MessageBody::RequestVoteResponse(response) => format!(
            "{} {}",
            flag(response.pre_vote, " pre-vote"),
            if response.granted {
                "granted"
            } else {
                "refused"
            }
        ),
        MessageBody::InstallSnapshot(request) => format!(
            " snapshot={}@{} offset={} chunk={}/{} bytes",
            request.meta.index,
            request.meta.term,
            request.offset,
            request.data.len(),
            request.total_bytes
        ),
        MessageBody::InstallSnapshotResponse(response) => format!(
            " snapshot={} next-offset={}{}",
            response.snapshot_index,
            response.next_offset,
            flag(response.done, " done")
        ),
        MessageBody::TimeoutNow => String::new(),
    };
    head + &fields
}

fn reject(reject: &Reject) -> String {
    let term = reject
        .conflict_term
        .map_or("none".to_string(), |t| t.to_string());
    format!(
        " reject prev={} conflict-term={term} conflict-index={}",
        reject.rejected_index, reject.conflict_index
    )
}

fn flag(on: bool, text: &str) -> &str {
    if on { text } else { "" }
}

/// The lines of one node's `Ready`, in the order its caller works through
/// them. `linked` says whether a message's link is up.
pub(super) fn ready(id: NodeId, ready: &Ready, linked: impl Fn(&Message) -> bool) -> Vec<String> {
    let mut lines = Vec::new();
    let send = |lines: &mut Vec<String>, step: &str, m: &Message| {
        let cut = if linked(m) { "" } else { " (cut)" };
        lines.push(format!("{id}: {step} {}{cut}", message(m)));
    };
    for m in &ready.early_messages {
        send(&mut lines, "send-early", m);
    }
    if let Some(hard_state) = ready.hard_state {
        let vote = hard_state
            .vote
            .map_or("none".to_string(), |v| v.to_string());
        lines.push(format!(
            "{id}: hard-state term={} vote={vote} commit={}",
            hard_state.term, hard_state.commit
        ));
    }
    if let Some(snapshot) = &ready.snapshot {
        lines.push(format!(
            "{id}: snapshot {}@{} ({} bytes)",
            snapshot.meta.index,
            snapshot.meta.term,
            snapshot.data.len()
        ));
    }
    for e in &ready.entries {
        lines.push(format!("{id}: persist {}", entry(e)));
    }
    for m in &ready.messages {
        send(&mut lines, "send", m);
    }
    for e in &ready.committed_entries {
        lines.push(format!("{id}: apply {}", entry(e)));
    }
    for read in &ready.read_states {
        lines.push(format!("{id}: read ctx={} index={}", read.ctx, read.index));
    }
    lines
}

/// A node's status line.
pub(super) fn status(status: &Status) -> String {
    let role = match status.role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    };
    let leader = status.leader.map_or("none".to_string(), |l| l.to_string());
    format!(
        "{}: {role} term={} leader={leader} commit={} applied={} last={} snapshot={}",
        status.id,
        status.term,
        status.commit,
        status.applied,
        status.last_index,
        status.snapshot_index
    )
}
