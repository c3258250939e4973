//! The leader's loop of a replica group: follow the controller one
//! configuration at a time, pull the shards gained, tell old owners to
//! drop what arrived, tell new owners where to find shards taken back, and
//! say what the group is waiting for (in its status, and in a warning
//! every [`WARN_INTERVAL`] while a hand-over is stuck).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_rpc::kv::StatusRequest;
use cairn_rpc::shardkv::shard_kv_client::ShardKvClient;
use cairn_rpc::shardkv::{
    Command, DeleteRequest, InstallShards, OfferRequest, PullRequest, command,
};
use cairn_rpc::{ReplicaError, Replicas};
use cairn_rsm::{Node, SubmitError};
use cairn_shardctrler::Gid;
use prost::Message as _;
use tokio::time::Instant;

use crate::server::{MAX_HANDOVER_BYTES, PEER_DEADLINE, REQUEST_DEADLINE};
#[cfg(test)]
use crate::store::ShardsByGroup;
use crate::store::{Plan, ShardStore};
use crate::{HandoverConfig, POLL_INTERVAL};

/// How long a hand-over may be stuck before the leader warns, and how often
/// it warns again (and asks a group it waits on for its status).
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// How often a leader whose shards wait for their new owner asks the
/// controller whether that owner has left (and the shards can be taken
/// back).
const TAKE_BACK_INTERVAL: Duration = Duration::from_secs(1);

/// What the leader last learned about each group it waits on ("unreachable:
/// ...", "at configuration 4"), shown beside the waits in the status.
#[derive(Debug, Default)]
pub(crate) struct Notes(Mutex<BTreeMap<Gid, String>>);

impl Notes {
    fn set(&self, gid: Gid, note: String) {
        self.lock().insert(gid, note);
    }

    fn clear(&self, gid: Gid) {
        self.lock().remove(&gid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Gid, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the notes of the groups in `plan` only.
    fn retain(&self, plan: &Plan) {
        self.lock().retain(|gid, _| {
            [&plan.pull, &plan.collect, &plan.offer, &plan.handed]
                .iter()
                .any(|waits| waits.contains_key(gid))
        });
    }

    /// The waits of `plan`, one line each, with the notes.
    pub(crate) fn describe(&self, plan: &Plan) -> Vec<String> {
        let notes = self.lock().clone();
        describe(plan, &notes)
    }
}

/// "config 5: waiting for shards 3,7 from group 9 (unreachable: ...)", one
/// line per group waited on.
pub(crate) fn describe(plan: &Plan, notes: &BTreeMap<Gid, String>) -> Vec<String> {
    let list = |shards: &[u32]| {
        let names: Vec<String> = shards.iter().map(u32::to_string).collect();
        names.join(",")
    };
    let note = |gid: &Gid| notes.get(gid).map_or(String::new(), |n| format!(" ({n})"));
    let n = plan.config_num;
    let mut lines = Vec::new();
    for (gid, (_, shards)) in &plan.pull {
        lines.push(format!(
            "config {n}: waiting for shards {} from group {gid}{}",
            list(shards),
            note(gid)
        ));
    }
    for (gid, (_, shards)) in &plan.offer {
        lines.push(format!(
            "config {n}: waiting for group {gid} to take shards {}{}; if it is not coming back, \
             `cairn shardctl leave {gid}` returns them",
            list(shards),
            note(gid)
        ));
    }
    for (gid, (_, shards)) in &plan.handed {
        lines.push(format!(
            "config {n}: waiting for group {gid} to install shards {}{}",
            list(shards),
            note(gid)
        ));
    }
    for (gid, (_, shards)) in &plan.collect {
        lines.push(format!(
            "config {n}: waiting for group {gid} to drop its copy of shards {}{}",
            list(shards),
            note(gid)
        ));
    }
    lines
}

/// A peer call's failure, as a note.
fn unreachable(error: &ReplicaError) -> String {
    match error {
        ReplicaError::Timeout { last, .. } => format!("unreachable: {last}"),
        other => other.to_string(),
    }
}

/// The clients of other groups, by their servers, made once each.
#[derive(Default)]
struct Groups(Mutex<BTreeMap<Vec<String>, Arc<Replicas>>>);

impl Groups {
    fn get(&self, servers: &Vec<String>) -> Option<Arc<Replicas>> {
        let mut groups = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = groups.get(servers) {
            return Some(r.clone());
        }
        let r = Arc::new(Replicas::new(servers, Duration::from_millis(500), PEER_DEADLINE).ok()?);
        groups.insert(servers.clone(), r.clone());
        Some(r)
    }
}

/// Everything the leader's loop works with.
pub(crate) struct Follower {
    pub(crate) node: Node<ShardStore>,
    pub(crate) gid: Gid,
    pub(crate) shards: usize,
    pub(crate) controller: cairn_shardctrler::Client,
    pub(crate) handover: HandoverConfig,
    /// This group's servers, named to a group told to pull from here.
    pub(crate) own_servers: Vec<String>,
    pub(crate) notes: Arc<Notes>,
}

/// When the current hand-over started, when the leader last warned, and
/// when it last asked whether the groups it offers shards to have left.
#[derive(Default)]
struct Stuck {
    since: Option<(u64, Instant)>,
    warned: Option<Instant>,
    asked: Option<Instant>,
}

impl Follower {
    /// The leader's loop: every [`POLL_INTERVAL`], read the group's plan;
    /// when the group may move on, put the controller's next configuration
    /// in the log; fetch the shards being pulled and tell old owners to
    /// drop the shards that arrived, each source group on its own, so that
    /// a dead group holds up only its own shards.
    pub(crate) async fn run(self) {
        let mut mismatch_reported = None;
        let groups = Arc::new(Groups::default());
        let mut stuck = Stuck::default();
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            if !self.node.status().is_leader() {
                stuck = Stuck::default();
                continue;
            }
            let Ok(plan) = self
                .node
                .read(|store: &ShardStore| store.plan(), REQUEST_DEADLINE)
                .await
            else {
                continue;
            };
            self.notes.retain(&plan);
            self.warn_if_stuck(&plan, &mut stuck, &groups).await;
            if plan.stable {
                self.next_config(&plan, &mut mismatch_reported).await;
                continue;
            }
            if !plan.offer.is_empty()
                && stuck
                    .asked
                    .is_none_or(|asked| asked.elapsed() >= TAKE_BACK_INTERVAL)
            {
                stuck.asked = Some(Instant::now());
                self.take_back_from_departed(&plan).await;
            }
            self.move_shards(plan, &groups).await;
        }
    }

    /// Puts the controller's next configuration in the log.
    async fn next_config(&self, plan: &Plan, mismatch_reported: &mut Option<u64>) {
        let Ok(next) = self.controller.query(Some(plan.config_num + 1)).await else {
            return;
        };
        if next.num != plan.config_num + 1 {
            return;
        }
        if next.shards.len() != self.shards {
            if *mismatch_reported != Some(next.num) {
                tracing::error!(
                    gid = self.gid,
                    "the controllers have {} shards but this server was started with {}; restart it with --shards {}",
                    next.shards.len(),
                    self.shards,
                    next.shards.len()
                );
                *mismatch_reported = Some(next.num);
            }
            return;
        }
        let _ = submit(&self.node, command::Command::Config(next.to_proto())).await;
    }

    /// Takes back the shards offered to groups that are not in the
    /// controller's latest configuration (they left before taking them).
    async fn take_back_from_departed(&self, plan: &Plan) {
        let Ok(latest) = self.controller.query(None).await else {
            return;
        };
        let shards: Vec<u32> = plan
            .offer
            .iter()
            .filter(|(gid, _)| !latest.groups.contains_key(gid))
            .flat_map(|(_, (_, shards))| shards.iter().copied())
            .collect();
        if shards.is_empty() || latest.num <= plan.config_num {
            return;
        }
        let request = DeleteRequest {
            config_num: plan.config_num,
            shards,
        };
        let _ = submit(&self.node, command::Command::TakeBack(request)).await;
    }

    /// One round of pulls, deletes and offers, each group on its own task.
    async fn move_shards(&self, plan: Plan, groups: &Arc<Groups>) {
        let Plan {
            config_num,
            pull,
            collect,
            announce,
            ..
        } = plan;
        let mut calls = Vec::new();
        for (from, (servers, shards)) in pull {
            let Some(group) = groups.get(&servers) else {
                continue;
            };
            let (node, handover, notes, gid) = (
                self.node.clone(),
                self.handover.clone(),
                self.notes.clone(),
                self.gid,
            );
            calls.push(tokio::spawn(async move {
                let source = Source {
                    gid,
                    from,
                    group: &group,
                    config_num,
                };
                let mut revoked = Vec::new();
                for shard in shards {
                    match pull_shard(&node, source, shard, &handover).await {
                        Ok(Pulled::Installed) => notes.clear(from),
                        Ok(Pulled::Revoked) => revoked.push(shard),
                        Err(PullStopped(note)) => {
                            notes.set(from, note);
                            break;
                        }
                    }
                }
                if !revoked.is_empty() {
                    let abandon = DeleteRequest {
                        config_num,
                        shards: revoked,
                    };
                    let _ = submit(&node, command::Command::Abandon(abandon)).await;
                }
            }));
        }
        for (from, (servers, shards)) in collect {
            let Some(group) = groups.get(&servers) else {
                continue;
            };
            let (node, notes, gid) = (self.node.clone(), self.notes.clone(), self.gid);
            calls.push(tokio::spawn(async move {
                let request = DeleteRequest { config_num, shards };
                if let Err(note) = collect_shards(&node, gid, from, &group, request).await {
                    notes.set(from, note);
                }
            }));
        }
        for (to, (servers, shards)) in announce {
            let Some(group) = groups.get(&servers) else {
                continue;
            };
            let offer = OfferRequest {
                config_num,
                shards,
                gid: self.gid,
                servers: self.own_servers.clone(),
            };
            let notes = self.notes.clone();
            calls.push(tokio::spawn(async move {
                let reply = group
                    .request(offer, |c, r| async move {
                        ShardKvClient::new(c).offer_shards(r).await
                    })
                    .await;
                if let Err(error) = reply {
                    notes.set(to, unreachable(&error));
                }
            }));
        }
        for call in calls {
            let _ = call.await;
        }
    }

    /// Warns every [`WARN_INTERVAL`] while a hand-over has lasted longer
    /// than that, after asking the groups that are to take shards from
    /// here where they are.
    async fn warn_if_stuck(&self, plan: &Plan, stuck: &mut Stuck, groups: &Groups) {
        if plan.stable {
            *stuck = Stuck::default();
            return;
        }
        let now = Instant::now();
        let since = match stuck.since {
            Some((num, since)) if num == plan.config_num => since,
            _ => {
                *stuck = Stuck {
                    since: Some((plan.config_num, now)),
                    warned: None,
                    asked: Some(now),
                };
                return;
            }
        };
        let due = stuck.warned.map_or(since, |warned| warned) + WARN_INTERVAL;
        if now < due {
            return;
        }
        stuck.warned = Some(now);
        for (to, (servers, _)) in plan.offer.iter().chain(&plan.handed) {
            let Some(group) = groups.get(servers) else {
                continue;
            };
            let status = group
                .request(StatusRequest {}, |c, r| async move {
                    ShardKvClient::new(c).status(r).await
                })
                .await;
            let note = match status {
                Ok(status) => format!("it is at configuration {}", status.config_num),
                Err(error) => unreachable(&error),
            };
            self.notes.set(*to, note);
        }
        for line in self.notes.describe(plan) {
            tracing::warn!(
                gid = self.gid,
                "{line} (for {:.0?})",
                now.duration_since(since)
            );
        }
    }
}

/// The group a shard is pulled from, in which configuration.
#[derive(Clone, Copy)]
struct Source<'a> {
    /// This group.
    gid: Gid,
    /// The old owner.
    from: Gid,
    group: &'a Replicas,
    config_num: u64,
}

/// How a pull ended.
enum Pulled {
    /// The last chunk is in.
    Installed,
    /// The source took the shard back: this group is to drop it.
    Revoked,
}

/// Why a pull stopped before the shard was complete (a note on the
/// source, for the status); the next round of the leader's loop tries
/// again.
#[derive(Debug)]
struct PullStopped(String);

/// Pulls `shard` chunk by chunk, each chunk its own log entry, starting
/// after the last key installed, until the last chunk is installed.
/// Stops (for a later round) when a call or a submit fails, or when a
/// chunk makes no progress.
async fn pull_shard(
    node: &Node<ShardStore>,
    source: Source<'_>,
    shard: u32,
    handover: &HandoverConfig,
) -> Result<Pulled, PullStopped> {
    let Source {
        gid,
        from,
        group,
        config_num,
    } = source;
    let mut previous = None;
    loop {
        let position = node
            .read(
                move |s: &ShardStore| s.pull_position(config_num, shard),
                REQUEST_DEADLINE,
            )
            .await
            .map_err(|e| PullStopped(format!("this group: {e}")))?;
        let Some(position) = position else {
            return Ok(Pulled::Installed);
        };
        if previous.as_ref() == Some(&position) {
            tracing::warn!(
                gid,
                from,
                shard,
                "a chunk of shard {shard} changed nothing; the pull is retried later"
            );
            return Err(PullStopped("a chunk changed nothing; retrying".into()));
        }
        let request = PullRequest {
            config_num,
            shard,
            after_key: position.after_key.clone(),
            max_bytes: handover.chunk_bytes as u64,
        };
        let reply = group
            .request(request, |c, r| async move {
                ShardKvClient::new(c)
                    .max_decoding_message_size(MAX_HANDOVER_BYTES)
                    .pull_shards(r)
                    .await
            })
            .await;
        let chunk = match reply {
            Ok(reply) if reply.revoked => return Ok(Pulled::Revoked),
            Ok(reply) if reply.ready => reply.chunk,
            Ok(_) => {
                tracing::debug!(gid, from, config_num, "shard not ready yet");
                return Err(PullStopped(format!(
                    "it does not offer them yet: it has not reached configuration {config_num}"
                )));
            }
            Err(error) => {
                tracing::debug!(gid, from, %error, "cannot pull a shard");
                return Err(PullStopped(unreachable(&error)));
            }
        };
        let install = InstallShards {
            config_num,
            chunk,
            ..InstallShards::default()
        };
        if let Err(error) = submit(node, command::Command::Install(install)).await {
            if let SubmitError::TooLarge { .. } = error {
                tracing::error!(
                    gid,
                    shard,
                    %error,
                    "a chunk of shard {shard} from group {from} is too large for one log entry; the chunk limits disagree (a bug): report it"
                );
            }
            return Err(PullStopped(format!("this group: {error}")));
        }
        previous = Some(position);
    }
}

/// Tells the old owner `from` to drop the shards of `request`, which
/// arrived here, and logs that it did. Fails with a note on `from`.
async fn collect_shards(
    node: &Node<ShardStore>,
    gid: Gid,
    from: Gid,
    group: &Replicas,
    request: DeleteRequest,
) -> Result<(), String> {
    let reply = group
        .request(request.clone(), |c, r| async move {
            ShardKvClient::new(c).delete_shards(r).await
        })
        .await;
    match reply {
        Ok(reply) if reply.done => {
            let _ = submit(node, command::Command::Deleted(request)).await;
            Ok(())
        }
        Ok(_) => Err(format!(
            "it has not reached configuration {} yet",
            request.config_num
        )),
        Err(error) => {
            tracing::debug!(gid, from, %error, "cannot delete old shards");
            Err(unreachable(&error))
        }
    }
}

pub(crate) async fn submit(
    node: &Node<ShardStore>,
    command: command::Command,
) -> Result<Bytes, SubmitError> {
    let bytes = Command {
        command: Some(command),
    }
    .encode_to_vec();
    node.submit(Bytes::from(bytes), REQUEST_DEADLINE).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_name_the_configuration_the_shards_and_the_group() {
        let mut plan = Plan {
            config_num: 5,
            ..Plan::default()
        };
        let by = |gid: Gid, shards: Vec<u32>| -> ShardsByGroup {
            BTreeMap::from([(gid, (vec!["http://h:1".to_string()], shards))])
        };
        plan.pull = by(9, vec![3, 7]);
        plan.offer = by(8, vec![1]);
        let notes = BTreeMap::from([(9, "unreachable: connection refused".to_string())]);
        let lines = describe(&plan, &notes);
        assert_eq!(
            lines[0],
            "config 5: waiting for shards 3,7 from group 9 (unreachable: connection refused)"
        );
        assert!(
            lines[1].starts_with("config 5: waiting for group 8 to take shards 1;")
                && lines[1].contains("cairn shardctl leave 8"),
            "{}",
            lines[1]
        );
        assert!(describe(&Plan::default(), &notes).is_empty());
    }
}
