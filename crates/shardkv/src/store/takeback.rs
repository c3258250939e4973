//! Shards taken back from a group that left before it took them.
//!
//! A shard handed over in configuration `n` stays frozen at its old owner
//! until the new owner has pulled it, and the old owner moves to `n + 1`
//! only then. If the new owner never does (it was joined with a wrong
//! address, or is down) the old owner would wait forever, and so would
//! everyone who expects the shard from the group that left. Instead:
//!
//! - The old owner logs `handing` before it gives out a shard's last
//!   chunk; only from then on can the new owner serve the shard.
//! - When the new owner is not in the controller's latest configuration
//!   (it left, or is leaving), the old owner's leader logs `take_back` for
//!   the shards not handed: they become Held — kept, not served, and this
//!   group's own when it applies the next configuration (it held them all
//!   along, and nobody else ever served them). The log orders `handing`
//!   and `take_back`, so exactly one of the two takes effect.
//! - It remembers each shard taken back ([`MAX_REVOKED`] of them) and
//!   answers a pull for it `revoked`: a group that comes back after it
//!   left drops the shard (`abandon`) instead of waiting for it.
//! - A shard taken back that a later configuration gives to a third group
//!   is offered there; but that group would pull it from the shard's owner
//!   in the configuration before, which never had it. The holder tells it
//!   (`OfferShards`), and the new owner logs where the shard comes from
//!   (`source`), for the pull and for the delete that follows.
//!
//! Taking back is safe whatever the new owner does, since it never got the
//! last chunk; it is done only for a group that left because a group still
//! in the configuration would be left without a shard it owns.

use std::collections::BTreeMap;

use cairn_rpc::shardkv::{DeleteReply, DeleteRequest, OfferRequest};
use cairn_shardctrler::Gid;

use super::{MAX_REVOKED, ShardState, ShardStore};

impl ShardStore {
    /// `take_back`: shards offered in `config_num` to a group that left
    /// the latest configuration without taking them. Those still offered
    /// and not handed become Held here; a pull from the group they were
    /// offered to is answered `revoked` from now on.
    pub(super) fn take_back(&mut self, request: &DeleteRequest) {
        if request.config_num != self.config.num {
            return;
        }
        let mut by_group: BTreeMap<Gid, Vec<u32>> = BTreeMap::new();
        for shard in &request.shards {
            let Some(held) = self
                .shards
                .get_mut(shard)
                .filter(|s| s.state == ShardState::Offering && !s.handed)
            else {
                continue;
            };
            held.state = ShardState::Held;
            let to = self.config.shards[*shard as usize];
            self.revoked.insert((self.config.num, *shard), to);
            by_group.entry(to).or_default().push(*shard);
        }
        while self.revoked.len() > MAX_REVOKED {
            self.revoked.pop_first();
        }
        for (to, shards) in by_group {
            tracing::warn!(
                gid = self.gid,
                "group {to} is not in the controller's latest configuration and never took \
                 shards {shards:?} of configuration {}; this group held them all along and takes \
                 them back",
                self.config.num
            );
        }
    }

    /// Whether `shard`, handed over in configuration `num`, was taken
    /// back from the group it was handed to.
    pub fn was_revoked(&self, num: u64, shard: u32) -> bool {
        self.revoked.contains_key(&(num, shard))
    }

    /// `handing`: the last chunk of these shards is about to be given
    /// out; from now on they cannot be taken back. Answers `done` when
    /// every one of them is offered here and marked.
    pub(super) fn handing(&mut self, request: &DeleteRequest) -> DeleteReply {
        let mut done = request.config_num == self.config.num;
        for shard in &request.shards {
            match self.shards.get_mut(shard) {
                Some(held) if done && held.state == ShardState::Offering => held.handed = true,
                _ => done = false,
            }
        }
        DeleteReply { done }
    }

    /// `abandon`: shards gained in `config_num` that their holder took
    /// back (this group left before taking them). Dropped if still being
    /// pulled; they were never served here.
    pub(super) fn abandon(&mut self, request: &DeleteRequest) {
        if request.config_num != self.config.num {
            return;
        }
        for shard in &request.shards {
            if self
                .shards
                .get(shard)
                .is_some_and(|s| s.state == ShardState::Pulling)
            {
                self.shards.remove(shard);
                tracing::warn!(
                    gid = self.gid,
                    shard,
                    "shard {shard} of configuration {} was taken back by its holder (this group \
                     left before taking it); dropped",
                    request.config_num
                );
            }
        }
    }

    /// `source`: shards gained in `config_num` are to be pulled from the
    /// group that offers them. Ignored for a shard no longer being pulled,
    /// or one that already has keys from another group.
    pub(super) fn set_source(&mut self, offer: OfferRequest) {
        if offer.config_num != self.config.num || offer.gid == 0 {
            return;
        }
        for shard in &offer.shards {
            let Some(held) = self
                .shards
                .get_mut(shard)
                .filter(|s| s.state == ShardState::Pulling)
            else {
                continue;
            };
            let other = held
                .source
                .as_ref()
                .is_some_and(|(gid, _)| *gid != offer.gid);
            if other && !held.data.is_empty() {
                tracing::error!(
                    gid = self.gid,
                    shard,
                    "group {} offers shard {shard}, which is already arriving from another group; ignored",
                    offer.gid
                );
                continue;
            }
            held.source = Some((offer.gid, offer.servers.clone()));
        }
    }

    /// Whether the shards of `offer` are being pulled here from another
    /// group than the one offering them (the offer must be logged).
    pub fn needs_source(&self, offer: &OfferRequest) -> bool {
        offer.config_num == self.config.num
            && offer.shards.iter().any(|shard| {
                self.shards.get(shard).is_some_and(|held| {
                    held.state == ShardState::Pulling && self.source_of(*shard, held).0 != offer.gid
                })
            })
    }
}
