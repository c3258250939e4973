//! [`ShardStore`]: one replica group's replicated state — its view of the
//! configuration, and the shards it holds, each with its keys, its
//! duplicate table and where it stands in a hand-over.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use cairn_rpc::shardkv::{
    self as proto, Command, DeleteReply, DeleteRequest, GetReply, Op, ShardData, WriteReply,
    WriteRequest, command,
};
use cairn_rsm::LogIndex;
use cairn_rsm::sessions::Session;
use cairn_rsm::{Seen, Sessions, StateMachine};
use cairn_shardctrler::{Config, Gid};
use prost::Message as _;

use crate::ShardOf;
use crate::server::MAX_VALUE_BYTES;

/// The most clients a shard's duplicate table remembers. Beyond it, the
/// least recently active is forgotten and the table's session floor rises
/// to its id.
pub const MAX_SESSIONS_PER_SHARD: usize = 100_000;

/// Where a shard this group holds stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardState {
    /// Owned in the current configuration, data here: served.
    Serving = 1,
    /// Owned in the current configuration; its data is still with the
    /// previous owner. Not served until it arrives.
    Pulling = 2,
    /// Owned in the previous configuration, not the current: kept, frozen,
    /// until the new owner has it. Not served.
    Offering = 3,
    /// Arrived from the previous owner and served; that owner has not yet
    /// confirmed that it dropped its copy.
    Collecting = 4,
    /// Offered to a group that left (it is not in the controller's latest
    /// configuration) before it took the shard: taken back and kept here,
    /// not served, as this group's own in the next configuration.
    Held = 5,
}

impl ShardState {
    fn from_number(n: u32) -> Option<Self> {
        Some(match n {
            1 => Self::Serving,
            2 => Self::Pulling,
            3 => Self::Offering,
            4 => Self::Collecting,
            5 => Self::Held,
            _ => return None,
        })
    }

    /// Whether requests for the shard are answered here.
    pub fn serves(self) -> bool {
        matches!(self, Self::Serving | Self::Collecting)
    }
}

/// A write's answer, as kept in a shard's duplicate table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Reply {
    previous_found: bool,
    /// An append refused: the value would have passed the limit.
    too_large: bool,
}

impl Reply {
    fn to_proto(self) -> WriteReply {
        WriteReply {
            previous_found: self.previous_found,
            value_too_large: self.too_large,
            ..WriteReply::default()
        }
    }
}

/// A group and its servers' URLs.
type GroupAddress = (Gid, Vec<String>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Shard {
    state: ShardState,
    data: BTreeMap<Bytes, Bytes>,
    sessions: Sessions<Reply>,
    /// Offering: the last chunk was given out, so the new owner may serve
    /// the shard; it can no longer be taken back.
    handed: bool,
    /// Pulling or Collecting: the group the data comes from, when it is
    /// not the previous owner in the configuration (which left before it
    /// took the shard, so another group took it back and offers it).
    source: Option<GroupAddress>,
}

impl Shard {
    fn new(state: ShardState) -> Self {
        Self {
            state,
            data: BTreeMap::new(),
            sessions: Sessions::new(MAX_SESSIONS_PER_SHARD),
            handed: false,
            source: None,
        }
    }

    /// Applies a new write to the shard's keys.
    fn execute(&mut self, request: &WriteRequest) -> Reply {
        let previous_found = self.data.contains_key(&request.key[..]);
        let mut too_large = false;
        match Op::try_from(request.op) {
            Ok(Op::Put) => {
                self.data.insert(request.key.clone(), request.value.clone());
            }
            Ok(Op::Append) => {
                let current = self.data.get(&request.key[..]).map_or(0, Bytes::len);
                // Decided from the applied state alone: the same on every
                // replica. A refused append changes nothing.
                too_large = current + request.value.len() > MAX_VALUE_BYTES;
                if !too_large {
                    let entry = self.data.entry(request.key.clone()).or_default();
                    let mut joined = BytesMut::with_capacity(entry.len() + request.value.len());
                    joined.extend_from_slice(entry);
                    joined.extend_from_slice(&request.value);
                    *entry = joined.freeze();
                }
            }
            Ok(Op::Delete) => {
                self.data.remove(&request.key[..]);
            }
            Ok(Op::Unspecified) | Err(_) => {}
        }
        Reply {
            previous_found,
            too_large,
        }
    }

    fn to_proto(&self, shard: u32) -> ShardData {
        ShardData {
            shard,
            data: self
                .data
                .iter()
                .map(|(key, value)| proto::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            sessions: self.sessions_to_proto(),
            session_floor: self.sessions.floor(),
        }
    }

    /// The duplicate table, as it travels and is snapshotted.
    fn sessions_to_proto(&self) -> Vec<proto::ShardSession> {
        self.sessions
            .iter()
            .map(|(client_id, session)| proto::ShardSession {
                client_id,
                seq: session.seq,
                reply: Some(session.reply.to_proto()),
                last_index: session.last_index,
            })
            .collect()
    }

    /// Takes the keys, duplicate table and session floor of `data`.
    /// Sessions from another group's log get `restamp`, this group's index
    /// of the install, as their last activity (their own indexes mean
    /// nothing here).
    fn load(&mut self, mut data: ShardData, restamp: Option<LogIndex>) {
        self.data = std::mem::take(&mut data.data)
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        self.load_sessions(data, restamp);
    }

    /// Takes the duplicate table and session floor of `data` (its keys are
    /// left alone).
    fn load_sessions(&mut self, data: ShardData, restamp: Option<LogIndex>) {
        let mut sessions = Sessions::new(MAX_SESSIONS_PER_SHARD);
        sessions.raise_floor(data.session_floor);
        for s in data.sessions {
            let reply = s.reply.map_or_else(Reply::default, |r| Reply {
                previous_found: r.previous_found,
                too_large: r.value_too_large,
            });
            sessions.restore(
                s.client_id,
                Session {
                    seq: s.seq,
                    reply,
                    last_index: restamp.unwrap_or(s.last_index),
                },
            );
        }
        self.sessions = sessions;
    }
}

/// Shards by the group they are waiting on, with that group's servers.
pub type ShardsByGroup = BTreeMap<Gid, (Vec<String>, Vec<u32>)>;

/// What the group's leader has to do to move the shards along.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The current configuration's number.
    pub config_num: u64,
    /// No hand-over is under way: the next configuration may be applied.
    pub stable: bool,
    /// Shards to fetch, by the group that has them, with its servers.
    pub pull: ShardsByGroup,
    /// Shards whose old owner must be told to drop them.
    pub collect: ShardsByGroup,
    /// Shards frozen here whose new owner has not taken them yet, by new
    /// owner. Those whose owner is not in the controller's latest
    /// configuration (it left before taking them) may be taken back.
    pub offer: ShardsByGroup,
    /// Shards frozen here whose new owner has their last chunk and has not
    /// yet said it has them installed, by new owner.
    pub handed: ShardsByGroup,
    /// Shards offered here that the new owner would look for at another
    /// group (this group took them back from one that left): the new owner
    /// must be told to pull them here.
    pub announce: ShardsByGroup,
}

/// One replica group's state machine.
///
/// Invariants: a shard is in `shards` iff the group owns it in `config`
/// (state Serving, Pulling or Collecting), or held it when `config` was
/// applied and the new owner has not yet confirmed it (Offering), or took
/// it back from a new owner that left without taking it (Held).
/// Configurations are applied one at a time, in order, and only when
/// every shard is Serving or Held.
#[derive(Debug, Clone)]
pub struct ShardStore {
    gid: Gid,
    shard_of: ShardOf,
    config: Config,
    previous: Config,
    shards: BTreeMap<u32, Shard>,
    /// Shards taken back, by (configuration in which they were handed
    /// over, shard), with the group they were handed to: a pull from that
    /// group is answered `revoked`. At most [`MAX_REVOKED`], the oldest
    /// forgotten first.
    revoked: BTreeMap<(u64, u32), Gid>,
}

/// The most shards taken back that a group remembers (to tell their
/// would-be owner, if it ever asks, to drop them). Beyond it the oldest
/// record is forgotten; a group that asks about it later waits.
pub const MAX_REVOKED: usize = 1024;

impl PartialEq for ShardStore {
    fn eq(&self, other: &Self) -> bool {
        self.gid == other.gid
            && self.config == other.config
            && self.previous == other.previous
            && self.shards == other.shards
            && self.revoked == other.revoked
    }
}

impl ShardStore {
    /// The empty state of group `gid` in a cluster of `shards` shards.
    pub fn new(gid: Gid, shards: usize, shard_of: ShardOf) -> Self {
        Self {
            gid,
            shard_of,
            config: Config::initial(shards),
            previous: Config::initial(shards),
            shards: BTreeMap::new(),
            revoked: BTreeMap::new(),
        }
    }

    /// This group's id.
    pub fn gid(&self) -> Gid {
        self.gid
    }

    /// The configuration this group has reached.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The shards served now, in increasing order.
    pub fn serving(&self) -> Vec<u32> {
        self.shards
            .iter()
            .filter(|(_, s)| s.state.serves())
            .map(|(&shard, _)| shard)
            .collect()
    }

    /// The state of `shard` here, if the group holds it.
    pub fn shard_state(&self, shard: u32) -> Option<ShardState> {
        self.shards.get(&shard).map(|s| s.state)
    }

    fn shard_of_key(&self, key: &[u8]) -> u32 {
        (self.shard_of)(key, self.config.shards.len()) as u32
    }

    /// A Get: the value, or `wrong_group` if the key's shard is not served
    /// here now.
    pub fn get(&self, key: &[u8]) -> GetReply {
        match self.shards.get(&self.shard_of_key(key)) {
            Some(shard) if shard.state.serves() => {
                let value = shard.data.get(key).cloned();
                GetReply {
                    found: value.is_some(),
                    value: value.unwrap_or_default(),
                    wrong_group: false,
                }
            }
            _ => GetReply {
                wrong_group: true,
                ..GetReply::default()
            },
        }
    }

    /// No hand-over is under way: every shard held is Serving (or Held).
    fn stable(&self) -> bool {
        self.shards
            .values()
            .all(|s| matches!(s.state, ShardState::Serving | ShardState::Held))
    }

    /// What the leader should do next.
    pub fn plan(&self) -> Plan {
        let mut plan = Plan {
            config_num: self.config.num,
            stable: self.stable(),
            ..Plan::default()
        };
        for (&shard, held) in &self.shards {
            let (target, (gid, servers)) = match held.state {
                ShardState::Serving | ShardState::Held => continue,
                ShardState::Pulling => (&mut plan.pull, self.source_of(shard, held)),
                ShardState::Collecting => (&mut plan.collect, self.source_of(shard, held)),
                ShardState::Offering => {
                    let to = self.owner(&self.config, shard);
                    if held.handed {
                        (&mut plan.handed, to)
                    } else {
                        if self.previous.shards[shard as usize] != self.gid {
                            let entry = plan.announce.entry(to.0).or_insert((to.1.clone(), vec![]));
                            entry.1.push(shard);
                        }
                        (&mut plan.offer, to)
                    }
                }
            };
            target.entry(gid).or_insert((servers, vec![])).1.push(shard);
        }
        plan
    }

    /// The owner of `shard` in `config`, with its servers.
    fn owner(&self, config: &Config, shard: u32) -> GroupAddress {
        let gid = config.shards[shard as usize];
        (gid, config.groups.get(&gid).cloned().unwrap_or_default())
    }

    /// Where a shard being pulled comes from: the group that offered it
    /// here, or else its previous owner.
    fn source_of(&self, shard: u32, held: &Shard) -> GroupAddress {
        held.source
            .clone()
            .unwrap_or_else(|| self.owner(&self.previous, shard))
    }

    fn write(&mut self, index: LogIndex, request: &WriteRequest) -> WriteReply {
        let shard = self.shard_of_key(&request.key);
        let Some(shard) = self.shards.get_mut(&shard).filter(|s| s.state.serves()) else {
            return WriteReply {
                wrong_group: true,
                ..WriteReply::default()
            };
        };
        match shard
            .sessions
            .check_above_floor(request.client_id, request.seq)
        {
            Seen::Duplicate(reply) => return reply.to_proto(),
            Seen::Expired => {
                return WriteReply {
                    session_expired: true,
                    ..WriteReply::default()
                };
            }
            Seen::New => {}
        }
        let reply = shard.execute(request);
        shard
            .sessions
            .remember(request.client_id, request.seq, reply, index);
        reply.to_proto()
    }

    fn reconfigure(&mut self, next: Config) {
        if next.num != self.config.num + 1
            || !self.stable()
            || next.shards.len() != self.config.shards.len()
        {
            return;
        }
        for shard in 0..next.shards.len() {
            let key = shard as u32;
            // A shard taken back is this group's: it held it all along.
            let was = if self.shard_state(key) == Some(ShardState::Held) {
                self.gid
            } else {
                self.config.shards[shard]
            };
            let is = next.shards[shard];
            if was != self.gid && is == self.gid {
                let state = if was == 0 {
                    ShardState::Serving
                } else {
                    ShardState::Pulling
                };
                self.shards.insert(key, Shard::new(state));
            } else if was == self.gid
                && let Some(s) = self.shards.get_mut(&key)
            {
                s.state = if is == self.gid {
                    ShardState::Serving
                } else {
                    ShardState::Offering
                };
                s.handed = false;
            }
        }
        self.previous = std::mem::replace(&mut self.config, next);
    }

    fn delete(&mut self, request: &DeleteRequest) -> DeleteReply {
        if request.config_num == self.config.num {
            for shard in &request.shards {
                if self
                    .shards
                    .get(shard)
                    .is_some_and(|s| s.state == ShardState::Offering)
                {
                    self.shards.remove(shard);
                }
            }
        }
        DeleteReply {
            done: request.config_num <= self.config.num,
        }
    }

    fn deleted(&mut self, request: &DeleteRequest) {
        if request.config_num != self.config.num {
            return;
        }
        for shard in &request.shards {
            if let Some(s) = self
                .shards
                .get_mut(shard)
                .filter(|s| s.state == ShardState::Collecting)
            {
                s.state = ShardState::Serving;
            }
        }
    }
}

impl StateMachine for ShardStore {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        let Ok(Command {
            command: Some(command),
        }) = Command::decode(command)
        else {
            tracing::error!(
                index,
                "an undecodable command in the log; applied as nothing"
            );
            return Bytes::new();
        };
        match command {
            command::Command::Write(request) => self.write(index, &request).encode_to_vec().into(),
            command::Command::Config(config) => {
                self.reconfigure(Config::from_proto(config));
                Bytes::new()
            }
            command::Command::Install(install) => {
                self.install(index, install);
                Bytes::new()
            }
            command::Command::Delete(request) => self.delete(&request).encode_to_vec().into(),
            command::Command::Deleted(request) => {
                self.deleted(&request);
                Bytes::new()
            }
            command::Command::Handing(request) => self.handing(&request).encode_to_vec().into(),
            command::Command::Abandon(request) => {
                self.abandon(&request);
                Bytes::new()
            }
            command::Command::Source(offer) => {
                self.set_source(offer);
                Bytes::new()
            }
            command::Command::TakeBack(request) => {
                self.take_back(&request);
                Bytes::new()
            }
        }
    }

    fn snapshot(&self) -> Bytes {
        proto::Snapshot {
            config: Some(self.config.to_proto()),
            previous: Some(self.previous.to_proto()),
            shards: self
                .shards
                .iter()
                .map(|(&shard, s)| {
                    let (source_gid, source_servers) = s.source.clone().unwrap_or_default();
                    proto::ShardSnapshot {
                        data: Some(s.to_proto(shard)),
                        state: s.state as u32,
                        handed: s.handed,
                        source_gid,
                        source_servers,
                    }
                })
                .collect(),
            revoked: self
                .revoked
                .iter()
                .map(|(&(config_num, shard), &gid)| proto::Revoked {
                    config_num,
                    shard,
                    gid,
                })
                .collect(),
        }
        .encode_to_vec()
        .into()
    }

    fn session_count(&self) -> Option<usize> {
        Some(self.shards.values().map(|shard| shard.sessions.len()).sum())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), cairn_rsm::RestoreError> {
        let damaged = |what: &str| format!("the shard group's snapshot is damaged: {what}");
        let snapshot = proto::Snapshot::decode(snapshot).map_err(|e| damaged(&e.to_string()))?;
        let config = Config::from_proto(snapshot.config.ok_or_else(|| damaged("no config"))?);
        let previous = Config::from_proto(
            snapshot
                .previous
                .ok_or_else(|| damaged("no previous config"))?,
        );
        let mut shards = BTreeMap::new();
        for s in snapshot.shards {
            let state = ShardState::from_number(s.state).ok_or_else(|| damaged("shard state"))?;
            let data = s.data.ok_or_else(|| damaged("shard data"))?;
            let mut shard = Shard::new(state);
            let number = data.shard;
            shard.load(data, None);
            shard.handed = s.handed;
            shard.source = (s.source_gid != 0).then_some((s.source_gid, s.source_servers));
            shards.insert(number, shard);
        }
        self.config = config;
        self.previous = previous;
        self.shards = shards;
        self.revoked = snapshot
            .revoked
            .into_iter()
            .map(|r| ((r.config_num, r.shard), r.gid))
            .collect();
        Ok(())
    }
}

mod handover;
mod takeback;
#[cfg(test)]
mod takeback_tests;
#[cfg(test)]
mod tests;

pub use handover::{PullPosition, Unhanded};
