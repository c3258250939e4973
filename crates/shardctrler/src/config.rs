//! [`Config`]: one numbered assignment of shards to replica groups, and
//! [`rebalance`], the deterministic, minimal-move spreading of shards.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use cairn_rpc::shardctrler as proto;

/// A replica group's id. 0 means "no group".
pub type Gid = u64;

/// One configuration.
///
/// Invariants: `shards.len()` is the cluster's shard count, fixed at
/// creation; every shard is on a gid of `groups`, or on 0 exactly when
/// `groups` is empty or a shard was freed with no group to take it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// The configuration's number; 0 is the initial one.
    pub num: u64,
    /// The group serving each shard.
    pub shards: Vec<Gid>,
    /// The groups and their servers' addresses, in the order given.
    pub groups: BTreeMap<Gid, Vec<String>>,
}

impl Config {
    /// Configuration 0: `shards` shards, no groups.
    pub fn initial(shards: usize) -> Self {
        Self {
            num: 0,
            shards: vec![0; shards],
            groups: BTreeMap::new(),
        }
    }

    /// The shards `gid` serves, in increasing order.
    pub fn shards_of(&self, gid: Gid) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|&s| self.shards[s] == gid)
            .collect()
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::Config {
        proto::Config {
            num: self.num,
            shards: self.shards.clone(),
            groups: self
                .groups
                .iter()
                .map(|(&gid, servers)| proto::Group {
                    gid,
                    servers: servers.clone(),
                })
                .collect(),
        }
    }

    /// Reads the wire form.
    pub fn from_proto(config: proto::Config) -> Self {
        Self {
            num: config.num,
            shards: config.shards,
            groups: config
                .groups
                .into_iter()
                .map(|g| (g.gid, g.servers))
                .collect(),
        }
    }
}

/// Spreads `shards` over `groups` as evenly as possible (the counts differ
/// by at most one), moving as few shards as possible, and the same way on
/// every node (no dependence on hash order).
///
/// Shards on a gid that is not in `groups` are free; every group keeps its
/// shards up to its target. The targets are `n / g`, plus one for the
/// `n % g` groups that hold the most shards already (ties: lower gid), which
/// is what maximizes the shards that stay. A group over its target gives up
/// its highest shards; free shards go, lowest first, to the groups under
/// their target, lowest gid first. With more groups than shards, some
/// groups get none. With no groups, every shard goes to gid 0.
pub fn rebalance(shards: &mut [Gid], groups: &BTreeMap<Gid, Vec<String>>) {
    if groups.is_empty() {
        shards.fill(0);
        return;
    }
    let mut held: BTreeMap<Gid, Vec<usize>> = groups.keys().map(|&gid| (gid, Vec::new())).collect();
    let mut free = Vec::new();
    for (shard, gid) in shards.iter().enumerate() {
        match held.get_mut(gid) {
            Some(list) => list.push(shard),
            None => free.push(shard),
        }
    }
    let (base, extra) = (shards.len() / held.len(), shards.len() % held.len());
    let mut by_holdings: Vec<Gid> = held.keys().copied().collect();
    by_holdings.sort_by_key(|gid| (Reverse(held[gid].len()), *gid));
    let target: BTreeMap<Gid, usize> = by_holdings
        .iter()
        .enumerate()
        .map(|(rank, &gid)| (gid, base + usize::from(rank < extra)))
        .collect();
    for (gid, list) in &mut held {
        while list.len() > target[gid] {
            free.extend(list.pop());
        }
    }
    free.sort_unstable();
    let mut free = free.into_iter();
    for (gid, list) in &mut held {
        while list.len() < target[gid] {
            // The targets add up to the shard count, so the free shards
            // are exactly enough.
            let Some(shard) = free.next() else { return };
            shards[shard] = *gid;
            list.push(shard);
        }
    }
}

/// The fewest shards that any balanced assignment over `gids` must move
/// away from `before`: the shards on gids not in `gids`, plus what the
/// groups hold beyond the best choice of targets. [`rebalance`] meets this
/// bound; tests hold it to that.
pub fn minimum_moves(before: &[Gid], gids: &[Gid]) -> usize {
    let n = before.len();
    if gids.is_empty() {
        return before.iter().filter(|&&g| g != 0).count();
    }
    let mut held: Vec<usize> = gids
        .iter()
        .map(|g| before.iter().filter(|s| *s == g).count())
        .collect();
    held.sort_unstable_by(|a, b| b.cmp(a));
    let (base, extra) = (n / gids.len(), n % gids.len());
    let kept: usize = held
        .iter()
        .enumerate()
        .map(|(rank, &h)| h.min(base + usize::from(rank < extra)))
        .sum();
    n - kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(gids: &[Gid]) -> BTreeMap<Gid, Vec<String>> {
        gids.iter().map(|&g| (g, vec![format!("s{g}")])).collect()
    }

    fn counts(shards: &[Gid], gids: &[Gid]) -> Vec<usize> {
        gids.iter()
            .map(|g| shards.iter().filter(|s| *s == g).count())
            .collect()
    }

    fn moved(a: &[Gid], b: &[Gid]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x != y).count()
    }

    #[test]
    fn joins_spread_evenly_and_move_only_what_they_must() {
        let mut shards = vec![0; 10];
        rebalance(&mut shards, &groups(&[1]));
        assert_eq!(shards, vec![1; 10]);
        let before = shards.clone();
        rebalance(&mut shards, &groups(&[1, 2]));
        assert_eq!(counts(&shards, &[1, 2]), vec![5, 5]);
        assert_eq!(moved(&before, &shards), 5);
        let before = shards.clone();
        rebalance(&mut shards, &groups(&[1, 2, 3]));
        let c = counts(&shards, &[1, 2, 3]);
        assert!(
            c.iter().max().unwrap() - c.iter().min().unwrap() <= 1,
            "{c:?}"
        );
        assert_eq!(moved(&before, &shards), 3);
    }

    #[test]
    fn a_leave_moves_only_the_leavers_shards() {
        let mut shards = vec![0; 10];
        rebalance(&mut shards, &groups(&[1, 2, 3]));
        let before = shards.clone();
        rebalance(&mut shards, &groups(&[1, 3]));
        for (s, (&b, &a)) in before.iter().zip(&shards).enumerate() {
            if b != 2 {
                assert_eq!(a, b, "shard {s} moved between staying groups");
            }
        }
        assert_eq!(counts(&shards, &[1, 3]), vec![5, 5]);
    }

    #[test]
    fn more_groups_than_shards() {
        let mut shards = vec![0; 10];
        let gids: Vec<Gid> = (1..=15).collect();
        rebalance(&mut shards, &groups(&gids));
        let c = counts(&shards, &gids);
        assert_eq!(c.iter().sum::<usize>(), 10);
        assert!(c.iter().all(|&n| n <= 1));
        // Groups that hold a shard keep it when another joins.
        let before = shards.clone();
        let mut gids2 = gids.clone();
        gids2.push(16);
        rebalance(&mut shards, &groups(&gids2));
        assert_eq!(before, shards);
    }

    #[test]
    fn no_groups_means_no_owner() {
        let mut shards = vec![3; 10];
        rebalance(&mut shards, &BTreeMap::new());
        assert_eq!(shards, vec![0; 10]);
    }

    #[test]
    fn a_random_sequence_stays_balanced_with_minimal_moves() {
        // A small deterministic generator: no dependency on the order of
        // anything but the inputs.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for nshards in [1, 10, 64] {
            let mut live: Vec<Gid> = Vec::new();
            let mut shards = vec![0; nshards];
            for _ in 0..300 {
                if live.is_empty() || (next(3) > 0 && live.len() < 80) {
                    let gid = 1 + next(100);
                    if !live.contains(&gid) {
                        live.push(gid);
                    }
                } else {
                    let at = next(live.len() as u64) as usize;
                    live.remove(at);
                }
                let before = shards.clone();
                rebalance(&mut shards, &groups(&live));
                if live.is_empty() {
                    assert!(shards.iter().all(|&g| g == 0));
                    continue;
                }
                let c = counts(&shards, &live);
                let (max, min) = (*c.iter().max().unwrap(), *c.iter().min().unwrap());
                assert!(max - min <= 1, "{c:?}");
                assert_eq!(c.iter().sum::<usize>(), nshards);
                assert_eq!(moved(&before, &shards), minimum_moves(&before, &live));
            }
        }
    }
}
