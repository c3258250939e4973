//! [`Controller`]: the replicated state — every configuration so far, and
//! the clients' sessions.

use std::collections::BTreeMap;

use bytes::Bytes;
use cairn_rpc::shardctrler::{self as proto, ChangeReply, ChangeRequest, change_request::Change};
use cairn_rsm::LogIndex;
use cairn_rsm::sessions::Session;
use cairn_rsm::{Seen, Sessions, StateMachine};
use prost::Message as _;

use crate::config::{Config, Gid, rebalance};

/// The most client sessions remembered (least recently active forgotten).
pub const MAX_SESSIONS: usize = 10_000;

/// The shard controller's state machine.
///
/// Invariant: `configs[i].num == i`, and every configuration has the same
/// shard count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    configs: Vec<Config>,
    sessions: Sessions<ChangeReply>,
    /// Refuse a Leave that would leave no group (a setting, the same on
    /// every node; not in snapshots).
    keep_last_group: bool,
}

impl Controller {
    /// A controller for a cluster of `shards` shards, holding only
    /// configuration 0.
    pub fn new(shards: usize) -> Self {
        Self {
            configs: vec![Config::initial(shards)],
            sessions: Sessions::new(MAX_SESSIONS),
            keep_last_group: false,
        }
    }

    /// Refuses (`true`) or allows a Leave of the last group. A sharded
    /// store sets it: with no group left, the shards' data would have no
    /// owner to hand it to, and the next group to join would start empty.
    /// The 6.824 controller tests leave every group, so the plain
    /// controller allows it.
    pub fn keep_last_group(mut self, keep: bool) -> Self {
        self.keep_last_group = keep;
        self
    }

    /// The shard count.
    pub fn shards(&self) -> usize {
        self.latest().shards.len()
    }

    /// The latest configuration.
    pub fn latest(&self) -> &Config {
        self.configs.last().expect("configuration 0 always exists")
    }

    /// Configuration `num`; `None`, or a number beyond the latest, means
    /// the latest.
    pub fn query(&self, num: Option<u64>) -> &Config {
        num.and_then(|n| usize::try_from(n).ok())
            .and_then(|n| self.configs.get(n))
            .unwrap_or_else(|| self.latest())
    }

    /// Applies one change to a copy of the latest configuration; an error
    /// leaves everything as it was.
    fn change(&mut self, change: &Change) -> Result<u64, String> {
        let mut next = self.latest().clone();
        next.num += 1;
        match change {
            Change::Join(join) => {
                for group in &join.groups {
                    if next.groups.contains_key(&group.gid) {
                        return Err(format!(
                            "group {} has already joined; leave it first",
                            group.gid
                        ));
                    }
                    next.groups.insert(group.gid, group.servers.clone());
                }
                rebalance(&mut next.shards, &next.groups);
            }
            Change::Leave(leave) => {
                for gid in &leave.gids {
                    if next.groups.remove(gid).is_none() {
                        return Err(format!("group {gid} is not in the configuration"));
                    }
                }
                if next.groups.is_empty() && self.keep_last_group {
                    return Err(
                        "this would remove the last group, and the data of every shard with it; join another group first"
                            .into(),
                    );
                }
                rebalance(&mut next.shards, &next.groups);
            }
            Change::Register(_) => {
                return Err("a registration is not a change".into());
            }
            Change::Move(moved) => {
                let shard = moved.shard as usize;
                if shard >= next.shards.len() {
                    return Err(format!(
                        "shard {shard} does not exist (shards are 0..{})",
                        next.shards.len()
                    ));
                }
                if !next.groups.contains_key(&moved.gid) {
                    return Err(format!("group {} is not in the configuration", moved.gid));
                }
                next.shards[shard] = moved.gid;
            }
        }
        let num = next.num;
        self.configs.push(next);
        Ok(num)
    }

    /// The groups of the latest configuration.
    pub fn groups(&self) -> &BTreeMap<Gid, Vec<String>> {
        &self.latest().groups
    }
}

impl StateMachine for Controller {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        let Ok(request) = ChangeRequest::decode(command) else {
            tracing::error!(
                index,
                "an undecodable change in the log; applied as nothing"
            );
            return ChangeReply::default().encode_to_vec().into();
        };
        if let Some(Change::Register(_)) = request.change {
            // The client's id is this entry's index: unique, and larger
            // than every id given before (the sharded store's clerks rely
            // on that).
            self.sessions.register(index, ChangeReply::default(), index);
            let registered = ChangeReply {
                client_id: index,
                ..ChangeReply::default()
            };
            return registered.encode_to_vec().into();
        }
        match self.sessions.check(request.client_id, request.seq) {
            Seen::Duplicate(reply) => return reply.encode_to_vec().into(),
            Seen::Expired => {
                let expired = ChangeReply {
                    session_expired: true,
                    ..ChangeReply::default()
                };
                return expired.encode_to_vec().into();
            }
            Seen::New => {}
        }
        let reply = match request.change.as_ref().map(|change| self.change(change)) {
            Some(Ok(num)) => ChangeReply {
                num,
                ..ChangeReply::default()
            },
            Some(Err(error)) => ChangeReply {
                error,
                ..ChangeReply::default()
            },
            None => ChangeReply {
                error: "no change given".into(),
                ..ChangeReply::default()
            },
        };
        self.sessions
            .remember(request.client_id, request.seq, reply.clone(), index);
        reply.encode_to_vec().into()
    }

    fn snapshot(&self) -> Bytes {
        proto::Snapshot {
            configs: self.configs.iter().map(Config::to_proto).collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(client_id, session)| proto::SessionRecord {
                    client_id,
                    seq: session.seq,
                    last_index: session.last_index,
                    reply: Some(session.reply.clone()),
                })
                .collect(),
        }
        .encode_to_vec()
        .into()
    }

    fn session_count(&self) -> Option<usize> {
        Some(self.sessions.len())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), cairn_rsm::RestoreError> {
        let snapshot = proto::Snapshot::decode(snapshot)
            .map_err(|e| format!("the shard controller's snapshot is damaged: {e}"))?;
        let configs: Vec<Config> = snapshot
            .configs
            .into_iter()
            .map(Config::from_proto)
            .collect();
        let numbered = configs.iter().enumerate().all(|(i, c)| c.num == i as u64);
        if configs.is_empty() || !numbered {
            return Err(
                "the shard controller's snapshot has no or misnumbered configurations".into(),
            );
        }
        let mut sessions = Sessions::new(MAX_SESSIONS);
        for record in snapshot.sessions {
            let session = Session {
                seq: record.seq,
                reply: record.reply.unwrap_or_default(),
                last_index: record.last_index,
            };
            sessions.restore(record.client_id, session);
        }
        *self = Self {
            configs,
            sessions,
            keep_last_group: self.keep_last_group,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_rpc::shardctrler::{Group, Join, Leave, Move};

    fn change(client: u64, seq: u64, change: Change) -> Vec<u8> {
        ChangeRequest {
            client_id: client,
            seq,
            change: Some(change),
        }
        .encode_to_vec()
    }

    fn join(gids: &[Gid]) -> Change {
        Change::Join(Join {
            groups: gids
                .iter()
                .map(|&gid| Group {
                    gid,
                    servers: vec![format!("a{gid}"), format!("b{gid}")],
                })
                .collect(),
        })
    }

    fn reply(bytes: Bytes) -> ChangeReply {
        ChangeReply::decode(bytes).unwrap()
    }

    fn register(c: &mut Controller, index: LogIndex) -> u64 {
        let registration = ChangeRequest {
            change: Some(Change::Register(proto::Register {})),
            ..ChangeRequest::default()
        };
        reply(c.apply(index, &registration.encode_to_vec())).client_id
    }

    /// `controller` with clients 1 and 2 registered (at indexes 1 and 2).
    fn registered(controller: Controller) -> Controller {
        let mut c = controller;
        assert_eq!(register(&mut c, 1), 1);
        assert_eq!(register(&mut c, 2), 2);
        c
    }

    #[test]
    fn every_change_makes_a_configuration_and_history_stays() {
        let mut c = registered(Controller::new(10));
        assert_eq!(reply(c.apply(1, &change(1, 1, join(&[1])))).num, 1);
        assert_eq!(reply(c.apply(2, &change(1, 2, join(&[2])))).num, 2);
        let r = reply(c.apply(3, &change(1, 3, Change::Move(Move { shard: 0, gid: 2 }))));
        assert_eq!(r.num, 3);
        assert_eq!(c.latest().shards[0], 2);
        assert_eq!(c.query(Some(1)).shards, vec![1; 10]);
        assert_eq!(c.query(Some(0)), &Config::initial(10));
        assert_eq!(c.query(Some(99)).num, 3);
        assert_eq!(c.query(None).num, 3);
        assert_eq!(c.groups()[&2], vec!["a2".to_string(), "b2".to_string()]);
    }

    #[test]
    fn a_retried_change_applies_once_and_a_bad_one_changes_nothing() {
        let mut c = registered(Controller::new(10));
        c.apply(1, &change(1, 1, join(&[1])));
        assert_eq!(reply(c.apply(2, &change(1, 1, join(&[1])))).num, 1);
        assert_eq!(c.latest().num, 1);
        let refused = reply(c.apply(3, &change(2, 1, join(&[1]))));
        assert_eq!(refused.num, 0);
        assert!(refused.error.contains("already joined"), "{refused:?}");
        let refused = reply(c.apply(4, &change(2, 2, Change::Leave(Leave { gids: vec![9] }))));
        assert!(refused.error.contains("not in the configuration"));
        let refused = reply(c.apply(5, &change(2, 3, Change::Move(Move { shard: 10, gid: 1 }))));
        assert!(refused.error.contains("does not exist"));
        assert_eq!(c.latest().num, 1);
    }

    #[test]
    fn the_last_group_stays_when_asked_to() {
        let mut c = registered(Controller::new(10).keep_last_group(true));
        c.apply(1, &change(1, 1, join(&[1, 2])));
        let left = reply(c.apply(2, &change(1, 2, Change::Leave(Leave { gids: vec![1] }))));
        assert_eq!(left.num, 2);
        let refused = reply(c.apply(3, &change(1, 3, Change::Leave(Leave { gids: vec![2] }))));
        assert!(refused.error.contains("last group"), "{refused:?}");
        assert_eq!(c.latest().shards, vec![2; 10]);
        let mut lab = registered(Controller::new(10));
        lab.apply(1, &change(1, 1, join(&[1])));
        let left = reply(lab.apply(2, &change(1, 2, Change::Leave(Leave { gids: vec![1] }))));
        assert_eq!(left.num, 2);
        assert_eq!(lab.latest().shards, vec![0; 10]);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut c = registered(Controller::new(10));
        c.apply(1, &change(1, 1, join(&[1, 2, 3])));
        c.apply(2, &change(1, 2, Change::Leave(Leave { gids: vec![2] })));
        let mut restored = Controller::new(10);
        restored.restore(&c.snapshot()).unwrap();
        assert_eq!(restored, c);
        assert_eq!(reply(restored.apply(3, &change(1, 2, join(&[7])))).num, 2);
        assert!(restored.restore(b"\xff\xff garbage").is_err());
    }

    #[test]
    fn a_first_change_retried_after_its_session_was_evicted_applies_once() {
        let mut c = Controller::new(10);
        let client = register(&mut c, 1);
        c.apply(2, &change(client, 1, join(&[1]))); // the reply is lost
        for index in 3..(MAX_SESSIONS as u64 + 3) {
            register(&mut c, index);
        }
        let retry = reply(c.apply(1 << 40, &change(client, 1, join(&[1]))));
        assert!(retry.session_expired, "{retry:?}");
        assert_eq!(c.latest().num, 1);
        // Unregistered clients are told too.
        assert!(reply(c.apply(1 << 41, &change(1 << 50, 1, join(&[2])))).session_expired);
    }
}
